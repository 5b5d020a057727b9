"""What run.json says about a task's method, and the calibration file a dev run leaves behind.

`task_report` is merged into the task's entry of ``run.json`` by the runner. It names the
method (``icl``, ``icl+program``, ``icl+classifier``), whether the task stayed pure in-context
learning (``pure_icl``, ``side_models``), the settings as applied to the task, and, where they
apply: self-consistency statistics (agreement, ties, each variant's own accuracy on dev),
program verification counts, and label-score calibration (raw vs calibrated dev accuracy). On a
dev split with label scores it fits the calibrations and writes them to
``out_dir/calibration.json`` (one entry per task, merged with the file's other tasks).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from longicl.files import atomic_write_json
from longicl.methods import calibration as cal
from longicl.methods.scoring import best_label
from longicl.methods.voting import Vote, rule_for, vote
from longicl.metrics import score
from longicl.parse import normalise
from longicl.records import AnyRecord, MethodLabel, SampleRecord, as_record, task_method
from longicl.tasks import TaskSpec


class MethodSettings(Protocol):
    """What this module reads of the method settings (``longicl.annotators.MethodSettings``, the
    caller's type, is not imported: the dependency points from the annotator to here)."""

    calibration: str | None
    classical_voter: bool
    classical_weight: float
    logprobs: int | None
    self_consistency: int
    use_program: bool
    vote: str

    def for_task(self, spec: TaskSpec) -> MethodSettings: ...
    def method_label(self, spec: TaskSpec) -> MethodLabel: ...
    def side_models(self, spec: TaskSpec) -> list[str]: ...
    def summary(self, spec: TaskSpec) -> dict[str, Any]: ...


CALIBRATION_FILE = "calibration.json"
MIN_CALIBRATION_ROWS = 10


def task_report(
    spec: TaskSpec,
    records: Sequence[AnyRecord] | Mapping[str, AnyRecord],
    method_settings: MethodSettings,
    out_dir: str | Path,
    split: str,
) -> dict[str, Any]:
    """The method part of one task's run.json entry (see the module docstring): its answer label,
    its method settings and what the techniques that ran did."""
    lines = list(records.values()) if isinstance(records, Mapping) else list(records)
    rows = [as_record(r) for r in lines]
    settings = method_settings.for_task(spec)
    side_models = settings.side_models(spec)
    label = task_method([r.to_dict() for r in rows], settings.method_label(spec))
    report: dict[str, Any] = {
        "method": label.method,
        "pure_icl": label.pure_icl,
        "side_models": label.side_models,
        "method_settings": settings.summary(spec),
    }
    answered = [r for r in rows if r.vote is not None]
    if answered and (settings.self_consistency > 1 or side_models):
        report["self_consistency"] = _consistency(spec, answered, settings.self_consistency)
    if settings.use_program and spec.program:
        report["program"] = _program_counts(answered)
    if spec.is_closed and settings.logprobs:
        report["calibration"] = _calibration(spec, answered, settings, Path(out_dir), split)
    return report


def _consistency(spec: TaskSpec, rows: Sequence[SampleRecord], k: int) -> dict[str, Any]:
    votes = [r.vote or {} for r in rows]  # every row voted (task_report)
    agreement = [v["agreement"] for v in votes if v.get("agreement") is not None]
    out: dict[str, Any] = {
        "k": k,
        "mean_agreement": _mean(agreement),
        "unanimous": _mean([float(a >= 1.0) for a in agreement]),
        "ties_broken": sum(1 for v in votes if v.get("tie_break")),
        "unreadable_requests": sum(
            1 for r in rows for q in r.request_entries if not q.get("answer") and not q.get("error")
        ),
    }
    if any(r.correct is not None for r in rows):
        per_variant: dict[int, list[float]] = {}
        for r in rows:
            for q in r.request_entries:
                verdict = score(spec, q.get("parsed") or "", r.gold)
                if verdict is not None:
                    per_variant.setdefault(int(q.get("variant", 0)), []).append(verdict)
        out["variant_accuracy"] = {str(v): _mean(s) for v, s in sorted(per_variant.items())}
    return out


def _program_counts(rows: Sequence[SampleRecord]) -> dict[str, int]:
    verdicts = [r.program for r in rows if r.program]
    return {
        "checked": len(verdicts),
        "usable": sum(1 for v in verdicts if v.get("usable")),
        "agreed": sum(1 for v in verdicts if v.get("agreed")),
        "replaced": sum(1 for v in verdicts if v.get("replaced")),
    }


# ------------------------------------------------------------------------------------------------
# calibration
# ------------------------------------------------------------------------------------------------
def revote(
    spec: TaskSpec,
    settings: MethodSettings,
    line: AnyRecord,
    calibrated: Mapping[int, Mapping[str, float]] | None = None,
) -> str:
    """A record's prediction again, from its requests' raw or ``calibrated`` (by variant) scores."""
    record = as_record(line)
    votes = []
    for q in record.request_entries:
        variant = int(q.get("variant", 0))
        scores = (calibrated or {}).get(variant)
        if scores:
            votes.append(Vote(best_label(scores, list(scores)), variant, "icl", 1.0, scores))
        else:
            votes.append(Vote(q.get("parsed") or "", variant, "icl", 1.0, q.get("label_logprobs")))
    for side in (record.vote or {}).get("side", []):
        if side.get("answer"):
            votes.append(Vote(side["answer"], -1, side.get("source", "side"), settings.classical_weight))
    return vote(votes, rule_for(settings.vote, votes), key=lambda a: normalise(spec, a)).answer


def _calibration(
    spec: TaskSpec,
    rows: Sequence[SampleRecord],
    settings: MethodSettings,
    out_dir: Path,
    split: str,
) -> dict[str, Any]:
    labels = list(spec.labels or ())
    applied = sorted({r.calibration["mode"] for r in rows if r.calibration})
    out: dict[str, Any] = {
        "applied": applied[0] if len(applied) == 1 else (applied or None),
        "file": settings.calibration if applied else None,
        "scored_requests": sum(1 for r in rows for q in r.request_entries if q.get("label_logprobs")),
        "requests": sum(len(r.requests) for r in rows),
    }
    gold_rows = [r for r in rows if r.gold is not None and r.correct is not None]
    if split != "dev" or not gold_rows:
        return out
    data = [
        cal.Row(int(r.index), int(q.get("variant", 0)), q["label_logprobs"], normalise(spec, r.gold))
        for r in gold_rows
        for q in r.request_entries
        if q.get("label_logprobs")
    ]
    if len(data) < MIN_CALIBRATION_ROWS:
        out["note"] = f"too few scored requests ({len(data)}) to fit a calibration"
        return out

    def accuracy(scores: Mapping[tuple[int, int], Mapping[str, float]] | None) -> float:
        hits = []
        for r in gold_rows:
            by_variant = None
            if scores is not None:
                by_variant = {
                    int(q.get("variant", 0)): scores[(int(r.index), int(q.get("variant", 0)))]
                    for q in r.request_entries
                    if (int(r.index), int(q.get("variant", 0))) in scores
                }
            hits.append(score(spec, revote(spec, settings, r, by_variant), r.gold) or 0.0)
        return sum(hits) / len(hits)

    batch = cal.fit(labels, "batch", data)
    in_sample = {(row.sample, row.variant): batch.apply(row.logprobs, row.variant) for row in data}
    accuracies = {
        "none": accuracy(None),
        "batch": accuracy(in_sample),
        "bias": accuracy(cal.cross_fitted(labels, "bias", data)),
    }
    simplicity = {"none": 2, "batch": 1, "bias": 0}
    use = max(accuracies, key=lambda mode: (round(accuracies[mode], 12), simplicity[mode]))
    bias = cal.fit(labels, "bias", data)
    entry = {
        "labels": labels,
        "use": use,
        "modes": {"batch": batch.to_dict(), "bias": bias.to_dict()},
        "dev": {
            "samples": len(gold_rows),
            "scored_requests": len(data),
            "raw_accuracy": accuracies["none"],
            "batch_accuracy": accuracies["batch"],
            "bias_accuracy_cv": accuracies["bias"],
            "vote": settings.vote,
            "self_consistency": settings.self_consistency,
        },
    }
    _merge_file(out_dir / CALIBRATION_FILE, spec.name, entry)
    out.update(
        {
            "raw_accuracy": accuracies["none"],
            "batch_accuracy": accuracies["batch"],
            "bias_accuracy_cv": accuracies["bias"],
            "best": use,
            "written": CALIBRATION_FILE,
        }
    )
    return out


def _merge_file(path: Path, task: str, entry: dict[str, Any]) -> None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc = doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        doc = {}
    previous = doc.get(task) if isinstance(doc.get(task), dict) else {}
    # keep the confidence map longicl.quality fits into the same entry
    doc[task] = {**{k: v for k, v in previous.items() if k == "confidence"}, **entry}
    atomic_write_json(path, dict(sorted(doc.items())))


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None

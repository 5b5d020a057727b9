"""What run.json says about a task's method, and the calibration file a dev run leaves behind.

`task_report` is merged into the task's entry of ``run.json`` by the runner. It names the
method (``icl``, ``icl+program``, ``icl+classifier``), whether the task stayed pure in-context
learning (``pure_icl``, ``side_models``), the settings as applied to the task, and, where they
apply: self-consistency statistics (agreement, ties, each variant's own accuracy on dev),
program verification counts, and label-score calibration (raw vs calibrated dev accuracy). On a
dev split with label scores it fits the calibrations and writes them to
``out_dir/calibration.json`` (one entry per task, merged with the file's other tasks).

`MethodTally` computes the same in one pass over the records with memory bounded in the rows
(``add`` each, then ``result``); `task_report` feeds it a list.
"""

from __future__ import annotations

import json
from collections import Counter
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
from longicl.reservoir import CURVE_SAMPLE, Reservoir
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
#: dev samples whose label scores a calibration keeps to fit on (all of them up to this many)
CALIBRATION_SAMPLE = CURVE_SAMPLE // 5


def task_report(
    spec: TaskSpec,
    records: Sequence[AnyRecord] | Mapping[str, AnyRecord],
    method_settings: MethodSettings,
    out_dir: str | Path,
    split: str,
) -> dict[str, Any]:
    """The method part of one task's run.json entry (see the module docstring): its answer label,
    its method settings and what the techniques that ran did."""
    tally = MethodTally(spec, method_settings, out_dir, split)
    for record in records.values() if isinstance(records, Mapping) else records:
        tally.add(record)
    return tally.result()


class MethodTally:
    """`task_report` in one pass: ``add`` every record, then ``result`` (which writes
    ``out_dir/calibration.json`` as `task_report` does). It keeps counts, running sums, the
    distinct method labels and, for the label-score calibration of a dev run, the first
    `CALIBRATION_SAMPLE` scored dev samples (their label scores and side votes only), then a
    seeded sample of them; past it the calibration's numbers say ``sampled``."""

    def __init__(
        self, spec: TaskSpec, method_settings: MethodSettings, out_dir: str | Path, split: str
    ) -> None:
        self.spec = spec
        self.settings = method_settings.for_task(spec)
        self.out_dir = Path(out_dir)
        self.split = split
        self.methods: dict[str, bool] = {}  # each record's ``method`` as JSON text -> some answered
        self.answered = 0
        # self-consistency
        self.agreement_total: float = 0  # as sum() adds them, in order
        self.agreements = 0
        self.unanimous = 0.0
        self.ties_broken = 0
        self.unreadable = 0
        self.judged = False  # some record has ``correct``
        self.per_variant: dict[int, list[float]] = {}  # variant -> [right, judged]
        # programs
        self.programs: Counter[str] = Counter()
        # label-score calibration
        self.calibrating = bool(spec.is_closed and self.settings.logprobs)
        self.modes: set[Any] = set()
        self.scored_requests = 0
        self.requests = 0
        self.gold_rows = 0
        self.gold_data = 0  # scored requests of the gold rows
        self.kept: Reservoir[SampleRecord] = Reservoir(CALIBRATION_SAMPLE)

    def add(self, record: AnyRecord) -> None:
        r = as_record(record)
        method = _method_json(r)
        if method:
            text = str(method)
            self.methods[text] = self.methods.get(text, False) or r.vote is not None
        if r.vote is None:
            return
        self.answered += 1
        self._add_consistency(r)
        if r.program:
            self.programs["checked"] += 1
            for name in ("usable", "agreed", "replaced"):
                self.programs[name] += bool(r.program.get(name))
        if self.calibrating:
            self._add_calibration(r)

    def _add_consistency(self, r: SampleRecord) -> None:
        vote = r.vote or {}
        agreement = vote.get("agreement")
        if agreement is not None:
            self.agreement_total += agreement
            self.agreements += 1
            self.unanimous += float(agreement >= 1.0)
        self.ties_broken += bool(vote.get("tie_break"))
        entries = r.request_entries
        self.unreadable += sum(1 for q in entries if not q.get("answer") and not q.get("error"))
        self.judged = self.judged or r.correct is not None
        for q in entries:
            verdict = score(self.spec, q.get("parsed") or "", r.gold)
            if verdict is not None:
                right_judged = self.per_variant.setdefault(int(q.get("variant", 0)), [0.0, 0])
                right_judged[0] += verdict
                right_judged[1] += 1

    def _add_calibration(self, r: SampleRecord) -> None:
        if r.calibration:
            self.modes.add(r.calibration["mode"])
        entries = r.request_entries
        scored = sum(1 for q in entries if q.get("label_logprobs"))
        self.scored_requests += scored
        self.requests += len(r.requests)
        if self.split != "dev" or r.gold is None or r.correct is None:
            return
        self.gold_rows += 1
        self.gold_data += scored
        self.kept.add(_calibration_view(r, entries))

    def result(self) -> dict[str, Any]:
        settings, spec = self.settings, self.spec
        side_models = settings.side_models(spec)
        # one line per distinct method text stands for the records (task_method reads no more)
        lines = [
            {"method": text, "vote": {} if answered else None} for text, answered in self.methods.items()
        ]
        label = task_method(lines, settings.method_label(spec))
        report: dict[str, Any] = {
            "method": label.method,
            "pure_icl": label.pure_icl,
            "side_models": label.side_models,
            "method_settings": settings.summary(spec),
        }
        if self.answered and (settings.self_consistency > 1 or side_models):
            report["self_consistency"] = self._consistency(settings.self_consistency)
        if settings.use_program and spec.program:
            report["program"] = {
                name: self.programs[name] for name in ("checked", "usable", "agreed", "replaced")
            }
        if self.calibrating:
            report["calibration"] = self._calibration()
        return report

    def _consistency(self, k: int) -> dict[str, Any]:
        n = self.agreements
        out: dict[str, Any] = {
            "k": k,
            "mean_agreement": round(self.agreement_total / n, 6) if n else None,
            "unanimous": round(self.unanimous / n, 6) if n else None,
            "ties_broken": self.ties_broken,
            "unreadable_requests": self.unreadable,
        }
        if self.judged:
            out["variant_accuracy"] = {
                str(v): round(right / judged, 6) for v, (right, judged) in sorted(self.per_variant.items())
            }
        return out

    def _calibration(self) -> dict[str, Any]:
        applied = sorted(self.modes)
        out: dict[str, Any] = {
            "applied": applied[0] if len(applied) == 1 else (applied or None),
            "file": self.settings.calibration if applied else None,
            "scored_requests": self.scored_requests,
            "requests": self.requests,
        }
        if self.split != "dev" or not self.gold_rows:
            return out
        counts = {"samples": self.gold_rows, "scored_requests": self.gold_data}
        sampled = {"sampled": len(self.kept)} if self.kept.sampled else {}
        out.update(
            _fit_calibration(self.spec, self.kept.items(), self.settings, self.out_dir, counts, sampled)
        )
        return out


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


def _calibration_view(record: SampleRecord, entries: Sequence[Mapping[str, Any]]) -> SampleRecord:
    """What the calibration reads of a dev record (`_fit_calibration`, `revote`): its index and
    gold, each request's variant, parsed answer and label scores, and its side votes."""
    vote = record.vote or {}
    return SampleRecord.from_dict(
        {
            "index": record.index,
            "gold": record.gold,
            "requests": [
                {key: q[key] for key in ("variant", "parsed", "label_logprobs") if key in q} for q in entries
            ],
            "vote": {"side": vote["side"]} if "side" in vote else {},
        }
    )


def _fit_calibration(
    spec: TaskSpec,
    gold_rows: Sequence[SampleRecord],
    settings: MethodSettings,
    out_dir: Path,
    counts: Mapping[str, int],
    sampled: Mapping[str, int],
) -> dict[str, Any]:
    """Fit the label-score calibrations on the dev ``gold_rows`` (all of them, or a sample:
    ``sampled``; ``counts`` are the true ones) and write them to ``out_dir/calibration.json``."""
    labels = list(spec.labels or ())
    data = [
        cal.Row(int(r.index), int(q.get("variant", 0)), q["label_logprobs"], normalise(spec, r.gold))
        for r in gold_rows
        for q in r.request_entries
        if q.get("label_logprobs")
    ]
    if len(data) < MIN_CALIBRATION_ROWS:
        return {"note": f"too few scored requests ({len(data)}) to fit a calibration"}

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
            "samples": counts["samples"],
            "scored_requests": counts["scored_requests"],
            "raw_accuracy": accuracies["none"],
            "batch_accuracy": accuracies["batch"],
            "bias_accuracy_cv": accuracies["bias"],
            "vote": settings.vote,
            "self_consistency": settings.self_consistency,
            **sampled,
        },
    }
    _merge_file(out_dir / CALIBRATION_FILE, spec.name, entry)
    return {
        "raw_accuracy": accuracies["none"],
        "batch_accuracy": accuracies["batch"],
        "bias_accuracy_cv": accuracies["bias"],
        "best": use,
        "written": CALIBRATION_FILE,
        **sampled,
    }


def _method_json(record: SampleRecord) -> Any:
    """The record's ``method`` as its JSON line has it (``to_dict()["method"]``; None when a line
    read back had none)."""
    if (
        record.source_keys is not None
        and "method" not in record.source_keys
        and "method" not in record.__dict__.get("_assigned", ())
    ):
        return None
    return record.method_json


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

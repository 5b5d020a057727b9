"""Annotation quality of a run, per task: confidence, calibration, agreement, the pool audit.

The numbers are run.json's ``quality`` entry when the run wrote one, else computed now from the
records by the same code (`longicl.quality.task_quality`, nothing written), so older runs show
them too. Figures: the confidence histogram, the reliability diagram (raw and calibrated) and
the coverage-accuracy curve, one panel per task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from longicl.analysis.figures import _grid, fitted
from longicl.analysis.runs import RunData, task_spec
from longicl.analysis.tables import COUNT, NUMBER, TEXT, frame
from longicl.metrics import score
from longicl.parse import normalise
from longicl.quality import confidence_metrics as qm
from longicl.quality import task_quality
from longicl.quality.confidence import model_prediction, of_record
from longicl.records import as_record


def quality_of(run: RunData) -> dict[str, dict[str, Any]]:
    """Task name -> its quality entry (tasks without answered records are left out)."""
    out = {}
    for name, records in run.records.items():
        stored = (run.tasks.get(name) or {}).get("quality")
        entry = stored if stored else task_quality(task_spec(name), records, run.split, None)
        if entry:
            out[name] = entry
    return out


#: Columns of `quality_rows` and their dtypes (a Cohen κ column per side voter follows).
QUALITY_COLUMNS = {
    "task": TEXT,
    "samples": COUNT,
    "with confidence": COUNT,
    "source": TEXT,
    "accuracy": NUMBER,
    "AUROC": NUMBER,
    "ECE raw": NUMBER,
    "ECE calibrated (cv)": NUMBER,
    "accuracy at 80%": NUMBER,
    "threshold at 80%": NUMBER,
    "Fleiss κ (variants)": NUMBER,
    "Cohen κ vs gold": NUMBER,
}

#: Columns of `audit_rows` and their dtypes.
AUDIT_COLUMNS = {
    "task": TEXT,
    "sample_id": TEXT,
    "gold": TEXT,
    "model_answer": TEXT,
    "confidence": NUMBER,
    "confidence_source": TEXT,
}


def quality_rows(run: RunData) -> pd.DataFrame:
    """One row per task: how many samples have a confidence, its AUROC, ECE raw and calibrated,
    the accuracy of the 80% most confident answers, and the agreement statistics."""
    rows = []
    for name, q in quality_of(run).items():
        conf, agree = q.get("confidence") or {}, q.get("agreement") or {}
        at80 = next((p for p in conf.get("coverage_accuracy") or [] if p["coverage"] == 0.8), None)
        rows.append(
            {
                "task": name,
                "samples": conf.get("samples"),
                "with confidence": conf.get("with_confidence"),
                "source": ", ".join(conf.get("sources") or {}) or "none",
                "accuracy": conf.get("accuracy"),
                "AUROC": conf.get("auroc"),
                "ECE raw": conf.get("ece_raw"),
                "ECE calibrated (cv)": conf.get("ece_calibrated_cv"),
                "accuracy at 80%": None if at80 is None else at80["accuracy"],
                "threshold at 80%": None if at80 is None else at80["threshold"],
                "Fleiss κ (variants)": (agree.get("variants") or {}).get("fleiss_kappa"),
                "Cohen κ vs gold": (agree.get("vs_gold") or {}).get("cohen_kappa"),
                **{
                    f"Cohen κ vs {k.removeprefix('vs_')}": v.get("cohen_kappa")
                    for k, v in agree.items()
                    if k.startswith("vs_") and k != "vs_gold"
                },
            }
        )
    voters = {column: NUMBER for row in rows for column in row if column not in QUALITY_COLUMNS}
    return frame(rows, {**QUALITY_COLUMNS, **voters})


def audit_rows(run: RunData) -> pd.DataFrame:
    """The pool audit: labelled examples the model contradicts with confidence (likely label errors)."""
    suspects = [s for q in quality_of(run).values() for s in (q.get("audit") or {}).get("suspects") or []]
    extra = {key: "object" for s in suspects for key in s if key not in AUDIT_COLUMNS}
    return frame(suspects, {**AUDIT_COLUMNS, **extra})


def _scored(run: RunData, name: str) -> tuple[list[float], list[float]]:
    spec = task_spec(name)
    conf, hits = [], []
    for record in map(as_record, run.records[name]):
        value = of_record(record, lambda a: normalise(spec, a)).value
        if value is None or record.gold is None or record.vote is None:
            continue
        conf.append(value)
        hits.append(score(spec, model_prediction(record), record.gold) or 0.0)
    return conf, hits


def _panels(run: RunData) -> list[str]:
    return [n for n, q in quality_of(run).items() if (q.get("confidence") or {}).get("with_confidence")]


@fitted
def figure_confidence_histogram(run: RunData):
    names = _panels(run) or ["(none)"]
    fig, axes = _grid(len(names), columns=4, size=(3.2, 2.4))
    quality = quality_of(run)
    for ax, name in zip(axes, names, strict=True):
        hist = ((quality.get(name) or {}).get("confidence") or {}).get("histogram")
        if not hist:
            ax.text(0.5, 0.5, "no confidences", ha="center", va="center")
            ax.set_axis_off()
            continue
        edges = hist["edges"]
        ax.bar(edges[:-1], hist["counts"], width=edges[1] - edges[0], align="edge", color="#4c72b0")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("confidence", fontsize=8)
    fig.suptitle(f"Confidence per sample ({run.label})", fontsize=10)
    return fig


@fitted
def figure_reliability(run: RunData):
    """Accuracy against confidence per bin, raw and cross-fitted isotonic-calibrated (dev runs)."""
    quality = quality_of(run)
    names = [n for n in _panels(run) if (quality[n].get("confidence") or {}).get("reliability_raw")] or [
        "(none)"
    ]
    fig, axes = _grid(len(names), columns=4, size=(3.2, 3.0))
    for ax, name in zip(axes, names, strict=True):
        conf = (quality.get(name) or {}).get("confidence") or {}
        if not conf.get("reliability_raw"):
            ax.text(0.5, 0.5, "no dev confidences", ha="center", va="center")
            ax.set_axis_off()
            continue
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
        for key, label in (("reliability_raw", "raw"), ("reliability_calibrated_cv", "calibrated (cv)")):
            bins = [b for b in conf.get(key) or [] if b["n"]]
            if bins:
                ax.plot(
                    [b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=label
                )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name} (ECE {conf.get('ece_raw', 0):.3f})", fontsize=9)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(f"Reliability diagrams ({run.label})", fontsize=10)
    return fig


@fitted
def figure_coverage_accuracy(run: RunData):
    """Accuracy of the most confident share of answers against that share (dev runs)."""
    fig = _grid(1, columns=1, size=(5.0, 3.4))[0]
    ax = fig.axes[0]
    drawn = False
    for name in _panels(run):
        conf, hits = _scored(run, name)
        points = qm.curve(conf, hits)
        if points:
            ax.plot([p["coverage"] for p in points], [p["accuracy"] for p in points], label=name)
            drawn = True
    if drawn:
        ax.set_xlabel("coverage (most confident share accepted)", fontsize=8)
        ax.set_ylabel("accuracy of the accepted", fontsize=8)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no dev confidences", ha="center", va="center")
        ax.set_axis_off()
    fig.suptitle(f"Coverage-accuracy ({run.label})", fontsize=10)
    return fig


def no_confidence_note(run: RunData) -> str:
    """Why a run has no confidence figures (shown instead of empty panels)."""
    return (
        f"No confidences in `{run.name}` ({run.engine}): its answers carry no label scores. A language "
        "model gives them, from the log-probabilities of the answer label or the agreement of "
        "self-consistency variants (docs/quality.md); run with `engine=local` (SmolLM2 on this CPU) or "
        "a served model for these figures."
    )


def has_quality(run: RunData) -> bool:
    return any((q.get("confidence") or {}).get("with_confidence") for q in quality_of(run).values())


def quality_values(run: RunData) -> Mapping[str, Any]:
    """What notebook 03 keeps for the report."""
    return {"rows": quality_rows(run), "audit": audit_rows(run)}

"""Quality: per task confidence, calibration, agreement, and the demo-pool audit (longicl.quality)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from longicl import analysis as an
from longicl.records import as_record
from longicl.report import formatting as f
from longicl.report.document import Report


def _floor(report: Report, name: str, run: an.RunData) -> tuple[float, str] | None:
    """The accuracy a model must beat on task ``name`` for its confident contradictions of gold to
    mean anything: the classical annotators' dev accuracy (a classical dev run of the report), else
    always answering the most frequent gold label of the run's samples (closed-label tasks)."""
    for other in report.dev_runs:
        accuracy = other.tasks.get(name, {}).get("accuracy")
        if other is not run and not other.language_model and other.answers and accuracy is not None:
            return float(accuracy), f"the classical annotators' {accuracy:.1%} (`{other.name}`)"
    golds = [r.gold for r in map(as_record, run.records.get(name) or []) if r.gold is not None]
    if golds and an.task_spec(name).is_closed:
        label, count = Counter(golds).most_common(1)[0]
        return count / len(golds), f"always answering {label!r}: {count / len(golds):.1%}"
    return None


def weak_tasks(report: Report, run: an.RunData) -> list[dict[str, str]]:
    """Tasks of a dev run whose model is too weak for the pool audit to mean anything: its dev
    accuracy is not above the floor (`_floor`), so what it contradicts with confidence is mostly its
    own error, not a label error."""
    weak = []
    for name, task in run.tasks.items():
        accuracy = task.get("accuracy")
        floor = _floor(report, name, run)
        if accuracy is not None and floor is not None and accuracy <= floor[0]:
            weak.append({"task": name, "accuracy": f"{accuracy:.1%}", "floor": floor[1]})
    return weak


def build(report: Report) -> dict[str, Any] | None:
    runs = [r for r in report.runs if r.answers and an.quality_of(r)]
    if not runs:
        return None
    sections = []
    for number, run in enumerate(runs, 1):
        figures = []
        if an.has_quality(run):
            figures.append(
                report.figure(
                    f"confidence_{number}",
                    an.figure_confidence_histogram(run),
                    f.md("confidence per sample, per task ({}).", run.label),
                )
            )
            if run.split == "dev":
                figures.append(
                    report.figure(
                        f"reliability_{number}",
                        an.figure_reliability(run),
                        f.md(
                            "reliability diagrams: accuracy per confidence bin, raw and calibrated ({}).",
                            run.label,
                        ),
                    )
                )
                figures.append(
                    report.figure(
                        f"coverage_{number}",
                        an.figure_coverage_accuracy(run),
                        f.md("accuracy of the most confident answers against their share ({}).", run.label),
                    )
                )
        sections.append(
            {
                "label": run.label,
                "split": run.split,
                "rows": an.quality_rows(run),
                "audit": an.audit_rows(run),
                # samples with a confidence: none (classical, dry run) leaves the audit nothing to judge
                "with_confidence": sum(
                    int(((t.get("quality") or {}).get("confidence") or {}).get("with_confidence") or 0)
                    for t in run.tasks.values()
                ),
                "weak": weak_tasks(report, run) if run.split == "dev" else [],
                "figures": figures,
            }
        )
    return {"runs": sections}

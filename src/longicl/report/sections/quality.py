"""Quality: per task confidence, calibration, agreement, and the demo-pool audit (longicl.quality)."""

from __future__ import annotations

from typing import Any

from longicl import analysis as an
from longicl.report import formatting as f
from longicl.report.document import Report


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
                "figures": figures,
            }
        )
    return {"runs": sections}

"""Tasks and data: sizes, demonstration lengths, how many fit in the first budget, labels."""

from __future__ import annotations

from typing import Any

from longicl import analysis as an
from longicl.report.document import Report
from longicl.tasks import get_task


def build(report: Report) -> dict[str, Any]:
    rows = []
    for o in report.overviews:
        first = o.fits[0] if o.fits else None
        row = {
            "task": o.name,
            "title": o.title,
            "answer": o.answer_kind,
            "metric": get_task(o.name).metric.replace("_", " "),
            "examples": o.examples,
            "test samples": o.test_samples,
            "demo tokens (median)": an.percentile(o.demo_tokens, 0.5),
            "pool tokens": o.pool_tokens,
            "ICL floor": report.floors.get(o.task, o.min_icl_tokens),
        }
        if first is not None:
            row[f"demos in {first.budget // 1000}K"] = first.demos
        rows.append(row)
    figures = [
        report.figure(
            "token_lengths",
            an.figure_token_lengths(report.overviews),
            "demonstration lengths per task (Qwen tokens as rendered in the prompt; red: median).",
        )
    ]
    if any(o.label_counts for o in report.overviews):
        figures.append(
            report.figure(
                "label_distributions",
                an.figure_label_distributions(report.overviews),
                "label distributions of the labelled examples (closed-label tasks).",
            )
        )
    return {"rows": rows, "figures": figures}

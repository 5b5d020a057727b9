"""Tasks and data: sizes, demonstration lengths, how many fit in the first budget, labels."""

from __future__ import annotations

from typing import Any

from longicl import analysis as an
from longicl.report import formatting as f
from longicl.report.document import Report
from longicl.tasks import TASKS, get_task


def dev_sizes(report: Report) -> dict[int, int]:
    """Labelled examples held out per challenge task id on the dev split: as the dev runs recorded
    it (``dev_size`` in run.json, else their config's ``dev_size``), else the task's default."""
    sizes = {}
    for spec in (get_task(o.name) for o in report.overviews):
        if spec.is_challenge:
            sizes[spec.id] = spec.default_dev_size
    for run in report.dev_runs:
        configured = run.config.get("dev_size")
        for name, task in run.tasks.items():
            spec = get_task(name)
            if spec.is_challenge:
                recorded = task.get("dev_size", configured)
                sizes[spec.id] = spec.default_dev_size if recorded is None else int(recorded)
    return sizes


def per_task_phrase(values: dict[int, int], unit: str) -> str:
    """``200 per task, 40 for task 8`` from the value of each task id."""
    common = f.common_value(values)
    if common is None:
        return "a set per task"
    others = [f"{value:,} for {f.task_list(ids)}" for value, ids in f.exceptions(values)]
    return ", ".join([f"{common:,} {unit}", *others])


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
    specs = [get_task(o.name) for o in report.overviews]
    challenge = [s for s in specs if s.is_challenge]
    return {
        "rows": rows,
        "figures": figures,
        "dev_sizes": per_task_phrase(dev_sizes(report), "per task"),
        "challenge": len(challenge),
        "all_challenge": len(challenge) == len(TASKS),
        "declared": [s.name for s in specs if not s.is_challenge],
    }

"""Results: the per-task table of every run, the comparison with baselines, three figures."""

from __future__ import annotations

import math
from typing import Any

from longicl import analysis as an
from longicl.report import formatting as f
from longicl.report.document import Report
from longicl.tasks import TASKS


def _per_task(run: an.RunData) -> list[dict[str, Any]]:
    # answers a human decided (review import): the accuracy scores the model's answers to them
    human = any(t.get("human_decided") for t in run.tasks.values())
    return [
        {
            "task": name,
            "title": an.task_spec(name).title,
            "n": task.get("n"),
            "accuracy": f.pct(task.get("accuracy")),
            "95% CI": f.ci95(task.get("accuracy"), task.get("n")),
            "parse failures": task.get("parse_failures"),
            "failed requests": task.get("failed_requests"),
            "prompt tokens (median)": f.median_of(task, "prompt_tokens"),
            "uncached prefill (median)": f.median_of(task, "uncached_prompt_tokens"),
            "wall time (s)": task.get("seconds"),
            "program vs ICL": an.task_method(run, name),
            **({"human answers (not scored)": task.get("human_decided") or 0} if human else {}),
        }
        for name, task in run.tasks.items()
    ]


def _system(run: an.RunData) -> f.Markdown:
    """The run's row name in the comparison (`RunData.system`, its directory as code)."""
    return f.md("{}: {}", an.engine_words(run.engine).system.format(model=run.model), f.code(run.name))


def _comparison(report: Report) -> list[dict[str, Any]]:
    ids = sorted(TASKS)
    comparable = sorted(an.BEST_PUBLIC_ACCURACY)
    mean_column = f"mean of {', '.join(map(str, comparable))}"
    rows = []
    for run in report.dev_runs:
        values = {i: run.tasks.get(TASKS[i].name, {}).get("accuracy") for i in ids}
        if all(v is None for v in values.values()):
            continue
        row: dict[str, Any] = {"system": _system(run)}
        row.update({f"task {i}": f.pct(values[i]) for i in ids})
        kept = [values[i] for i in comparable if values[i] is not None]
        row[mean_column] = f.pct(sum(kept) / len(kept) if len(kept) == len(comparable) else None)
        rows.append(row)
    best: dict[str, Any] = {"system": an.BEST_PUBLIC_SOURCE}
    best.update({f"task {i}": f.pct(an.BEST_PUBLIC_ACCURACY.get(i)) for i in ids})
    best[mean_column] = f.pct(sum(an.BEST_PUBLIC_ACCURACY.values()) / len(an.BEST_PUBLIC_ACCURACY))
    rows.append(best)
    return rows


def build(report: Report) -> dict[str, Any]:
    sizes = [
        int(t.get("n") or 0)
        for r in report.dev_runs
        for t in r.tasks.values()
        if t.get("accuracy") is not None
    ]
    fewest = min((n for n in sizes if n > 0), default=0)
    figures = []
    scored = [r for r in report.runs if any(t.get("accuracy") is not None for t in r.tasks.values())]
    if scored:
        figures.append(
            report.figure(
                "accuracy",
                an.figure_accuracy(scored),
                f.md("dev accuracy per task; black marks: {}.", an.BEST_PUBLIC_SOURCE),
            )
        )
    if report.runs:
        run = report.runs[0]
        figures.append(
            report.figure(
                "tokens",
                an.figure_tokens(run),
                f.md(
                    "prompt tokens and uncached prefill per request, median per task ({}).", f.code(run.name)
                ),
            )
        )
        figures.append(
            report.figure(
                "icl_floor",
                an.figure_icl_floor(run),
                f.md(
                    "demonstration tokens of every request against the rule's minimum ({}).", f.code(run.name)
                ),
            )
        )
    return {
        "runs": [{"run": r, "rows": _per_task(r)} for r in report.runs],
        "methods": an.METHOD_DESCRIPTIONS,
        "comparison": _comparison(report),
        "best_source": an.BEST_PUBLIC_SOURCE,
        "width": f"{100 * 1.96 * math.sqrt(0.2 * 0.8 / fewest):.0f}" if fewest else None,
        "fewest": fewest,
        "figures": figures,
    }

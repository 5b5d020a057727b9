"""The summary: mean dev accuracy per run, and whether every request met the rule."""

from __future__ import annotations

from typing import Any

from longicl import analysis as an
from longicl.report.document import Report

METRIC_WORDS = {"macro_f1": "macro F1"}


def _short_name(name: str) -> str:
    """A challenge task by its id (``5``), a declared task by its name (``tweet-mood``)."""
    spec = an.task_spec(name)
    return str(spec.id) if spec.is_challenge and spec.id is not None else name


def _own_metric(task: dict[str, Any]) -> str | None:
    """``macro F1 0.612`` for a task scored by a metric other than exact match (None otherwise)."""
    metric, score = task.get("metric"), task.get("score")
    if metric in (None, "exact_match") or score is None:
        return None
    return f"{METRIC_WORDS.get(metric, str(metric).replace('_', ' '))} {score:.3f}"


def build(report: Report) -> dict[str, Any]:
    accuracy = []
    for run in report.dev_runs:
        scored = {n: t["accuracy"] for n, t in run.tasks.items() if t.get("accuracy") is not None}
        if scored:
            accuracy.append(
                {
                    "run": run,
                    "mean": sum(scored.values()) / len(scored),
                    "tasks": len(scored),
                    "per_task": [(_short_name(n), a, _own_metric(run.tasks[n])) for n, a in scored.items()],
                    # every task scored by exact match: the mean is of that metric alone
                    "exact_match": all(run.tasks[n].get("metric") in (None, "exact_match") for n in scored),
                    # answers a human decided (review import): in the prediction files, not scored here
                    "human": sum(int(t.get("human_decided") or 0) for t in run.tasks.values()),
                }
            )
    compliance = []
    for run in report.runs:
        tasks = run.tasks.values()
        compliance.append(
            {
                "run": run,
                "meets_floor": all(run.meets_floor(n) for n in run.tasks),
                "prompt": an.median([t["prompt_tokens"]["median"] for t in tasks if t.get("prompt_tokens")]),
                "uncached": an.median(
                    [t["uncached_prompt_tokens"]["median"] for t in tasks if t.get("uncached_prompt_tokens")]
                ),
            }
        )
    return {"accuracy": accuracy, "compliance": compliance}

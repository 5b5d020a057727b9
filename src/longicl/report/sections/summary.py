"""The summary: mean dev accuracy per run, and whether every request met the rule."""

from __future__ import annotations

from typing import Any

from longicl import analysis as an
from longicl.report.document import Report


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
                    "per_task": [(an.task_spec(n).id, a) for n, a in scored.items()],
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

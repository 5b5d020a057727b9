"""Compliance with the rules: per run and task, the fewest demonstration tokens of any request
against the rule's minimum, and what else shaped the answers."""

from __future__ import annotations

from typing import Any

from longicl import analysis as an
from longicl.records import MethodLabel
from longicl.report import formatting as f
from longicl.report.document import Report


def _uses_model(run: an.RunData, name: str) -> bool:
    return run.language_model and MethodLabel.parse(an.task_method(run, name)).involves_language_model


def _below_floor(run: an.RunData) -> list[str]:
    """Floors below the rule's, from run.json's numbers: run.json (before the runner listed every
    reason) names only the server-token count when both hold."""
    out = []
    for task in run.tasks.values():
        floor, rule = task.get("min_icl_tokens"), task.get("min_icl_tokens_rule")
        if isinstance(floor, int) and isinstance(rule, int) and floor < rule:
            said = any("below the rule" in str(why) for why in task.get("not_compliant_because") or ())
            if not said:
                out.append(f"min_icl_tokens={floor} is below the rule's {rule}")
    return out


def build(report: Report) -> dict[str, Any]:
    tables = []
    for run in report.runs:
        rows = []
        for name, task in run.tasks.items():
            rows.append(
                {
                    "task": name,
                    "model": run.model,
                    "sent to the model": "yes" if _uses_model(run, name) else "no",
                    "ICL tokens (min)": (task.get("icl_tokens") or {}).get("min"),
                    "rule": run.icl_floor(name),
                    "meets rule": "yes" if run.meets_floor(name) else "NO",
                    # the floor in Qwen tokens, pure ICL and a served language model (run.json)
                    "compliant": "NO" if task.get("compliant") is False else "yes",
                    "programs / side models": f.backticked(an.side_models(run, name)),
                    "thinking": "on" if an.task_thinking(run, name) else "off",
                }
            )
        reasons = sorted(
            {why for task in run.tasks.values() for why in task.get("not_compliant_because") or ()}
            | set(_below_floor(run))
        )
        tables.append({"run": run, "rows": rows, "reasons": reasons})
    return {
        "floor": f.floor_phrase(report.floors, "in-context demonstrations"),
        "tables": tables,
        "entries": bool(report.model_runs),
    }

"""Context strategies: cost and accuracy, from the values notebook 02 recorded (left out without)."""

from __future__ import annotations

from typing import Any

from longicl import analysis as an
from longicl.report import formatting as f
from longicl.report.document import Report


def build(report: Report) -> dict[str, Any] | None:
    values = report.values.get("02_context_strategies") or {}
    cost = values.get("cost") or []
    if not cost:
        return None
    engine = values.get("engine")
    prompt_reading = an.engine_traits(str(engine)).language_model
    points = [an.SweepPoint(**p) for p in values.get("points") or []]
    figures = []
    if points:
        figures.append(
            report.figure(
                "strategy_cost",
                an.figure_sweep_cost(points),
                f.md(
                    "prompt tokens and prefill per sample by strategy and budget (engine {}).", f.code(engine)
                ),
            )
        )
        if prompt_reading and any(p.accuracy is not None for p in points):
            figures.append(
                report.figure(
                    "strategy_accuracy",
                    an.figure_sweep_accuracy(points),
                    f.md(
                        "dev accuracy against demonstration tokens per strategy (engine {}).", f.code(engine)
                    ),
                )
            )
    return {
        "engine": engine,
        "split": values.get("split"),
        "limit": values.get("limit"),
        "answers": an.engine_answers(str(engine)),
        "cost": cost,
        "figures": figures,
    }

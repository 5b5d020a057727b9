"""Limitations: what the numbers of this report cannot say."""

from __future__ import annotations

from typing import Any

from longicl import analysis as an
from longicl.report.document import Report


def build(report: Report) -> dict[str, Any]:
    sweep = report.values.get("02_context_strategies") or {}
    sweep_engine = sweep.get("engine")
    sizes = sorted(
        {
            int(t.get("n") or 0)
            for r in report.dev_runs
            for t in r.tasks.values()
            if t.get("accuracy") is not None
        }
    )
    span = None
    if sizes:
        span = f"{sizes[0]:,}" if sizes[0] == sizes[-1] else f"{sizes[0]:,}–{sizes[-1]:,}"
    unsandboxed = sum(  # task-8 checks run with kernels.sandbox=none (model-written code unisolated)
        1
        for r in report.runs
        if (r.config.get("kernels") or {}).get("sandbox") == "none"
        and any("kernels" in t for t in r.tasks.values())
    )
    return {
        "unsandboxed": unsandboxed,
        "qwen": bool(report.qwen_runs),
        "answered_by": report.answered_by,
        "sweep_engine": sweep_engine
        if sweep_engine and not an.engine_traits(str(sweep_engine)).language_model
        else None,
        "span": span,
    }

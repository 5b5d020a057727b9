"""Which run produced which number: engine, model, split, size of every run."""

from __future__ import annotations

from typing import Any

from longicl.report import formatting as f
from longicl.report.document import Report


def build(report: Report) -> dict[str, Any]:
    rows = [
        {
            "run": run.name,
            "engine": run.engine,
            "model that answered": run.model,
            "split": run.split,
            "tasks": len(run.tasks),
            "samples": sum(int(t.get("n") or 0) for t in run.tasks.values()),
            "thinking": "on" if run.thinking else "off",
            "created": str(run.run_summary.created or "—"),
        }
        for run in report.runs
    ]
    engines: dict[str, list[f.Markdown]] = {}
    for run in report.runs:
        if not run.language_model:
            engines.setdefault(run.engine, []).append(f.code(run.name))
    model_runs = [
        {
            "name": run.name,
            "model": run.model,
            "base_url": (run.run_summary.engine or {}).get("base_url"),
            "thinking": run.thinking,
        }
        for run in report.model_runs
    ]
    return {
        "rows": rows,
        "model_runs": model_runs,
        "other_engines": {e: f.Markdown(", ").join(names) for e, names in engines.items()},
        "qwen": bool(report.qwen_runs),
        # runs whose demonstrations were counted in the served model's tokens, not Qwen's
        "server_counted": [
            f.code(run.name)
            for run in report.runs
            if str((run.config.get("model") or {}).get("tokenizer")) == "server"
        ],
        "answered_by": report.answered_by,
    }

"""Method: context construction and its prefill cost, selection strategies, the prompt layout,
answer parsing, engines and decoding."""

from __future__ import annotations

from typing import Any

from longicl import analysis as an
from longicl.report import formatting as f
from longicl.report.document import Report


def _hybrid_sizes(report: Report) -> dict[str, Any] | None:
    """Median static-block tokens, uncached prefill and prompt tokens over the tasks that share the
    common ICL floor, in the first run that used ``hybrid`` (None when no run did)."""
    common = f.common_floor(report.floors)
    for run in report.runs:
        tasks = {
            an.task_spec(n).id: t
            for n, t in run.tasks.items()
            if run.icl_floor(n) == common and (t.get("selection") or {}).get("name") == "hybrid"
        }
        if tasks:
            sizes = {
                "static": an.median(
                    [(t.get("static_block") or {}).get("tokens") or 0 for t in tasks.values()]
                ),
                "uncached": an.median(
                    [(t.get("uncached_prompt_tokens") or {}).get("median") or 0 for t in tasks.values()]
                ),
                "prompt": an.median(
                    [(t.get("prompt_tokens") or {}).get("median") or 0 for t in tasks.values()]
                ),
            }
            if all(sizes.values()):
                return {**sizes, "tasks": f.task_list(tasks), "run": run.name}
    return None


def _context_rows(run: an.RunData) -> list[dict[str, Any]]:
    rows = []
    for name, task in run.tasks.items():
        static = task.get("static_block") or {}
        selection = task.get("selection") or {}
        rows.append(
            {
                "task": name,
                "strategy": selection.get("name"),
                "static demos": static.get("demos"),
                "static tokens": static.get("tokens"),
                "per-sample budget": selection.get("dynamic_tokens"),
                "ICL tokens (median)": f.median_of(task, "icl_tokens"),
                "prompt tokens (median)": f.median_of(task, "prompt_tokens"),
                "uncached prefill (median)": f.median_of(task, "uncached_prompt_tokens"),
            }
        )
    return rows


def _prompt_layout(prompt: dict[str, Any]) -> str:
    lines = [
        f"system:  {prompt.get('system', '')!r}",
        f"user:    {prompt.get('header', '')!r}",
        f"         static demonstrations, each {prompt.get('demo', '')!r} + {prompt.get('separator', '')!r}",
        "         per-sample demonstrations (same template), most similar last",
        f"         {prompt.get('query', '')!r}",
        "",
        "format_instruction per answer kind:",
    ]
    kinds = prompt.get("kinds") or {}
    lines += [f"  {kind:<9} {(cfg or {}).get('format_instruction', '')!r}" for kind, cfg in kinds.items()]
    return "\n".join(lines)


def build(report: Report) -> dict[str, Any]:
    first = report.runs[0] if report.runs else None
    prompt = (first.config.get("prompt") if first else None) or an.prompt_config()
    method = (first.config.get("method") if first else None) or {}
    decoded = (report.model_runs or report.runs or [None])[0]
    return {
        "sizes": _hybrid_sizes(report),
        "first": first,
        "context_rows": _context_rows(first) if first else [],
        "used": sorted({str((r.config.get("selection") or {}).get("name")) for r in report.runs}),
        "layout": _prompt_layout(prompt),
        "method": method,
        "sampling": method.get("sampling") or {},
        "decoded": decoded,
        "method_rows": an.method_rows(decoded) if decoded else [],
    }

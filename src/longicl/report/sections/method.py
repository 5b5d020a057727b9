"""Method: context construction and its prefill cost, selection strategies, the prompt layout,
answer parsing, engines and decoding."""

from __future__ import annotations

from typing import Any

from longicl import analysis as an
from longicl.report import formatting as f
from longicl.report.document import Report
from longicl.tasks import get_task


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


def per_sample_budgets(report: Report, strategy: str = "hybrid") -> dict[int, int]:
    """Per challenge task id: the per-sample block's budget under ``strategy``, as the first run
    that used it recorded it (run.json ``selection.dynamic_tokens``), else as ``conf/selection``
    sets it."""
    specs = [spec for spec in (get_task(o.name) for o in report.overviews) if spec.is_challenge]
    budgets = {
        spec.id: tokens for spec, tokens in zip(specs, an.dynamic_tokens(strategy, specs), strict=True)
    }
    recorded: dict[int, int] = {}
    for run in report.runs:
        for name, task in run.tasks.items():
            spec, selection = get_task(name), task.get("selection") or {}
            if (
                spec.is_challenge
                and selection.get("name") == strategy
                and selection.get("dynamic_tokens") is not None
            ):
                recorded.setdefault(spec.id, int(selection["dynamic_tokens"]))
    return {**budgets, **recorded}


def per_sample_phrase(report: Report, budgets: dict[int, int]) -> str:
    """``1,200 tokens (4,000 for task 8, whose demonstrations are ~1,600 tokens each)``."""
    demo_tokens = {get_task(o.name).id: an.percentile(o.demo_tokens, 0.5) for o in report.overviews}
    others = []
    for budget, ids in f.exceptions(budgets):
        typical = an.median([demo_tokens[i] for i in ids if demo_tokens.get(i) is not None])
        why = "" if typical is None else f", whose demonstrations are ~{round(typical, -2):,.0f} tokens each"
        others.append(f"{budget:,} for {f.task_list(ids)}{why}")
    common = f.common_value(budgets) or 0
    return f"{common:,} tokens" + (f" ({'; '.join(others)})" if others else "")


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
        "per_sample": f.Markdown(per_sample_phrase(report, per_sample_budgets(report))),  # numbers
        "first": first,
        "context_rows": _context_rows(first) if first else [],
        "used": sorted({str((r.config.get("selection") or {}).get("name")) for r in report.runs}),
        "layout": _prompt_layout(prompt),
        "method": method,
        "sampling": method.get("sampling") or {},
        "decoded": decoded,
        "method_rows": an.method_rows(decoded) if decoded else [],
    }

"""Context strategies: a strategy x budget sweep and its cost per sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from longicl.analysis.configs import run_main, run_overrides
from longicl.analysis.engines import engine_answers, engine_traits, resolve_engine
from longicl.analysis.paths import CONF_DIR, project_path
from longicl.analysis.runs import _spread
from longicl.analysis.stats import mean, rounded
from longicl.analysis.tables import COUNT, NUMBER, TEXT, frame
from longicl.run_json import as_run_summary
from longicl.tasks import TaskSpec, per_task_entry


@dataclass(frozen=True)
class SweepPoint:
    """One task of one (strategy, budget) run."""

    strategy: str
    budget: int
    task: str
    n: int
    accuracy: float | None
    prompt_tokens: float | None  # median per request
    icl_tokens: float | None  # median per request
    icl_tokens_min: int | None
    uncached_tokens: float | None  # median per request: new prefill with a warm prefix cache
    shared_tokens: float | None  # prompt - uncached: the prefix shared by the task's requests
    seconds: float
    out_dir: str


@dataclass
class SweepResult:
    engine: str
    split: str
    points: list[SweepPoint]
    skipped: list[dict[str, Any]]  # (strategy, budget, reason) of configurations that cannot run

    @property
    def has_accuracy(self) -> bool:
        return any(p.accuracy is not None for p in self.points)


def _dynamic_tokens(strategy: str, spec: TaskSpec | None = None) -> int:
    """``conf/selection/<strategy>.yaml``'s per-sample budget (of task ``spec``: its ``per_task``
    entry wins); 0 without one."""
    from omegaconf import OmegaConf

    path = CONF_DIR / "selection" / f"{strategy}.yaml"
    if not path.is_file():
        return 0
    conf = OmegaConf.to_container(OmegaConf.load(path))
    entry = (per_task_entry(conf.get("per_task"), spec) or {}) if spec is not None else {}
    return int(entry.get("dynamic_tokens", conf.get("dynamic_tokens")) or 0)


def dynamic_tokens(strategy: str, specs: Sequence[TaskSpec]) -> list[int]:
    """The per-sample demonstration budget ``conf/selection/<strategy>.yaml`` gives each task."""
    return [_dynamic_tokens(strategy, spec) for spec in specs]


def budget_overrides(strategy: str, budget: int) -> list[str]:
    """Overrides that give ``strategy`` about ``budget`` tokens of demonstrations per request.

    A strategy's budget is ``static_tokens + dynamic_tokens`` (its per-sample part); the static
    part is set so that the sum is ``budget``. Per-task settings in ``conf/selection`` still apply.
    """
    static = max(0, int(budget) - _dynamic_tokens(strategy))
    return [f"selection={strategy}", f"selection.static_tokens={static}"]


def sweep(
    strategies: Sequence[str],
    budgets: Sequence[int],
    *,
    engine: str,
    tasks: Any = "all",
    split: str = "dev",
    limit: int | None = None,
    out_dir: str | Path = "outputs/sweep",
    base_url: str | None = None,
    extra: Sequence[str] = (),
    quiet: bool = True,
) -> SweepResult:
    """Run every (strategy, budget) on ``tasks``; configurations the rules forbid are skipped."""
    from longicl.errors import UsageError

    engine = resolve_engine(engine)
    root = project_path(out_dir) / engine
    points, skipped = [], []
    for strategy in strategies:
        for budget in budgets:
            overrides = run_overrides(
                engine=engine,
                tasks=tasks,
                split=split,
                limit=limit,
                out_dir=root / f"{strategy}-{int(budget)}",
                base_url=base_url,
                extra=[*budget_overrides(strategy, budget), *extra],
            )
            try:
                result = run_main(overrides, quiet=quiet)
            except UsageError as exc:
                skipped.append({"strategy": strategy, "budget": int(budget), "reason": str(exc)})
                continue
            for name, task in as_run_summary(result.summary).tasks.items():
                prompt = _spread(task, "prompt_tokens", "median")
                uncached = _spread(task, "uncached_prompt_tokens", "median")
                points.append(
                    SweepPoint(
                        strategy=strategy,
                        budget=int(budget),
                        task=name,
                        n=int(task.get("n") or 0),
                        accuracy=task.get("accuracy"),
                        prompt_tokens=prompt,
                        icl_tokens=_spread(task, "icl_tokens", "median"),
                        icl_tokens_min=_spread(task, "icl_tokens", "min"),
                        uncached_tokens=uncached,
                        shared_tokens=None if prompt is None or uncached is None else prompt - uncached,
                        seconds=float(task.get("seconds") or 0.0),
                        out_dir=str(result.out_dir),
                    )
                )
    return SweepResult(engine, split, points, skipped)


#: Columns of `cost_rows` and their dtypes.
COST_COLUMNS = {
    "strategy": TEXT,
    "budget": COUNT,
    "tasks": COUNT,
    "accuracy (mean)": NUMBER,
    "prompt tokens / sample": COUNT,
    "uncached prefill / sample": COUNT,
    "prefill / sample (amortised)": COUNT,
    "ICL tokens (min)": COUNT,
}

#: Columns of `sweep_rows` and their dtypes.
SWEEP_COLUMNS = {
    "strategy": TEXT,
    "budget": COUNT,
    "task": TEXT,
    "n": COUNT,
    "accuracy": NUMBER,
    "ICL tokens (median)": COUNT,
    "prompt tokens (median)": COUNT,
    "uncached prefill (median)": COUNT,
    "seconds": NUMBER,
}


def cost_rows(points: Sequence[SweepPoint], *, samples_per_task: int = 500) -> pd.DataFrame:
    """Per (strategy, budget): mean over tasks of the per-request token medians.

    ``prefill per sample`` amortises the shared prefix over ``samples_per_task`` requests (a test
    split of 500 samples): it is what a server with automatic prefix caching computes per sample.
    """
    groups: dict[tuple[str, int], list[SweepPoint]] = {}
    for point in points:
        groups.setdefault((point.strategy, point.budget), []).append(point)
    rows = []
    for (strategy, budget), group in groups.items():
        prompt = mean(p.prompt_tokens for p in group)
        uncached = mean(p.uncached_tokens for p in group)
        shared = mean(p.shared_tokens for p in group)
        accuracy = [p.accuracy for p in group if p.accuracy is not None]
        rows.append(
            {
                "strategy": strategy,
                "budget": budget,
                "tasks": len(group),
                "accuracy (mean)": sum(accuracy) / len(accuracy) if accuracy else None,
                "prompt tokens / sample": rounded(prompt),
                "uncached prefill / sample": rounded(uncached),
                "prefill / sample (amortised)": None
                if uncached is None
                else rounded(uncached + (shared or 0.0) / max(1, samples_per_task)),
                "ICL tokens (min)": min((p.icl_tokens_min for p in group if p.icl_tokens_min), default=None),
            }
        )
    return frame(rows, COST_COLUMNS)


def sweep_rows(result: SweepResult) -> pd.DataFrame:
    """One row per task of each (strategy, budget) run."""
    rows = [
        {
            "strategy": p.strategy,
            "budget": p.budget,
            "task": p.task,
            "n": p.n,
            "accuracy": p.accuracy,
            "ICL tokens (median)": rounded(p.icl_tokens),
            "prompt tokens (median)": rounded(p.prompt_tokens),
            "uncached prefill (median)": rounded(p.uncached_tokens),
            "seconds": p.seconds,
        }
        for p in result.points
    ]
    return frame(rows, SWEEP_COLUMNS)


def sweep_summary(result: SweepResult) -> str:
    runs = len({(p.strategy, p.budget) for p in result.points})
    lines = [
        f"{runs} runs with engine `{result.engine}` on the {result.split} split, "
        f"{len({p.task for p in result.points})} tasks."
    ]
    if not engine_answers(result.engine):
        lines.append(
            "The dry run answers nothing: token and prefill figures are exact (the requests that would "
            "be sent), accuracy is not measured."
        )
    elif not engine_traits(result.engine).reads_prompts:
        lines.append(
            f"The {result.engine} engine does not read the prompt: its accuracy cannot depend on the strategy. "
            "Use `engine=openai` against a served Qwen3-4B for the accuracy study."
        )
    for skip in result.skipped:
        lines.append(f"- skipped {skip['strategy']} at {skip['budget']:,} tokens: {skip['reason']}")
    return "\n\n".join(lines)

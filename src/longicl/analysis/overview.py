"""The task files: sizes, label distributions, token lengths and how many demonstrations fit
in a budget."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from longicl.analysis.paths import CONF_DIR, DATA_DIR, project_path
from longicl.analysis.stats import percentile, rounded
from longicl.analysis.tables import COUNT, NUMBER, TEXT, frame
from longicl.config_values import plain
from longicl.data import load_task
from longicl.tasks import resolve_tasks


@dataclass(frozen=True)
class Fit:
    """How much of a pool fits in a budget of demonstration tokens."""

    budget: int
    demos: int  # demonstrations taken in a seeded random order until the next does not fit
    fraction: float  # demos / pool size
    whole_pool: bool  # the entire pool fits


@dataclass
class TaskOverview:
    task: int
    name: str
    title: str
    answer_kind: str
    examples: int
    test_samples: int
    min_icl_tokens: int
    label_counts: dict[str, int] | None  # closed label sets: gold labels over the examples
    demo_tokens: list[int]  # each example rendered as a demonstration, in Qwen tokens
    query_tokens: list[int]  # each test sample's input, in Qwen tokens
    fits: list[Fit] = field(default_factory=list)

    @property
    def pool_tokens(self) -> int:
        return sum(self.demo_tokens)


def fit(costs: Sequence[int], budget: int, seed: int = 0) -> Fit:
    """Demonstrations of ``costs`` that fit in ``budget``, taken in a seeded random order."""
    order = list(range(len(costs)))
    random.Random(f"fit:{seed}").shuffle(order)
    total = taken = 0
    for index in order:
        if total + costs[index] > budget:
            break
        total += costs[index]
        taken += 1
    size = len(costs)
    return Fit(int(budget), taken, taken / size if size else 0.0, taken == size)


def prompt_config(name: str = "default") -> dict[str, Any]:
    from omegaconf import OmegaConf

    return plain(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "prompt" / f"{name}.yaml")))


def data_overview(
    tasks: Any = "all",
    *,
    data_dir: str | Path | None = None,
    budgets: Sequence[int] = (30_000, 64_000, 120_000),
    seed: int = 0,
    counter: Any = None,
    prompt: str = "default",
) -> list[TaskOverview]:
    """Sizes, labels, token lengths and fits per task (demonstrations rendered by ``conf/prompt``)."""
    from longicl.prompt import PromptTemplate
    from longicl.tokens import TokenCounter

    counter = counter or TokenCounter()
    prompt_cfg = prompt_config(prompt)
    directory = project_path(data_dir) if data_dir else DATA_DIR
    out = []
    for spec in resolve_tasks(tasks):
        data = load_task(spec, directory)
        template = PromptTemplate.from_config(prompt_cfg, spec)
        costs = counter.count_many([template.render_demo(ex) for ex in data.examples])
        queries = counter.count_many([ex.input for ex in data.test_samples])
        labels = None
        if spec.is_closed:
            tally = Counter(ex.output for ex in data.examples)
            labels = {label: tally.get(label, 0) for label in spec.labels or ()}
            labels.update({k: v for k, v in tally.items() if k not in labels and k is not None})
        out.append(
            TaskOverview(
                task=spec.id,
                name=spec.name,
                title=spec.title,
                answer_kind=spec.answer_kind.value,
                examples=len(data.examples),
                test_samples=len(data.test_samples),
                min_icl_tokens=spec.min_icl_tokens,
                label_counts=labels,
                demo_tokens=list(costs),
                query_tokens=list(queries),
                fits=[fit(costs, b, seed) for b in budgets],
            )
        )
    return out


#: Columns of `overview_rows` and their dtypes.
OVERVIEW_COLUMNS = {
    "task": TEXT,
    "title": TEXT,
    "answer": TEXT,
    "examples": COUNT,
    "test samples": COUNT,
    "labels": COUNT,
    "demo tokens (median)": COUNT,
    "demo tokens (p95)": COUNT,
    "demo tokens (max)": COUNT,
    "pool tokens": COUNT,
    "ICL floor": COUNT,
}

#: Columns of `label_rows` and their dtypes.
LABEL_COLUMNS = {"task": TEXT, "label": TEXT, "examples": COUNT, "share": NUMBER}


def overview_rows(overviews: Sequence[TaskOverview]) -> pd.DataFrame:
    """Sizes and demonstration token lengths per task."""
    rows = [
        {
            "task": o.name,
            "title": o.title,
            "answer": o.answer_kind,
            "examples": o.examples,
            "test samples": o.test_samples,
            "labels": len(o.label_counts) if o.label_counts else None,
            "demo tokens (median)": rounded(percentile(o.demo_tokens, 0.5)),
            "demo tokens (p95)": rounded(percentile(o.demo_tokens, 0.95)),
            "demo tokens (max)": max(o.demo_tokens, default=None),
            "pool tokens": o.pool_tokens,
            "ICL floor": o.min_icl_tokens,
        }
        for o in overviews
    ]
    return frame(rows, OVERVIEW_COLUMNS)


def fit_rows(overviews: Sequence[TaskOverview]) -> pd.DataFrame:
    """Per task and budget: demonstrations that fit and their share of the pool."""
    rows = []
    dtypes = {"task": TEXT, "pool": COUNT}
    for o in overviews:
        row: dict[str, Any] = {"task": o.name, "pool": o.examples}
        for f in o.fits:
            k = f"{f.budget // 1000}K"
            row[f"demos in {k}"] = f.demos
            row[f"pool share in {k}"] = f"{100 * f.fraction:.1f}%"
            dtypes.update({f"demos in {k}": COUNT, f"pool share in {k}": TEXT})
        rows.append(row)
    return frame(rows, dtypes)


def label_rows(overviews: Sequence[TaskOverview]) -> pd.DataFrame:
    """Per closed-label task and label: examples and their share of the pool."""
    rows = []
    for o in overviews:
        if not o.label_counts:
            continue
        total = sum(o.label_counts.values()) or 1
        for label, count in o.label_counts.items():
            rows.append({"task": o.name, "label": label, "examples": count, "share": count / total})
    return frame(rows, LABEL_COLUMNS)


def overview_findings(overviews: Sequence[TaskOverview]) -> str:
    """A few computed observations about the data (Markdown bullets)."""
    lines = []
    for o in overviews:
        first = o.fits[0] if o.fits else None
        median_tokens = percentile(o.demo_tokens, 0.5) or 0
        text = f"- **{o.name}** ({o.title}): {o.examples:,} examples of ~{median_tokens:,.0f} tokens"
        if first is not None:
            text += (
                f"; {first.budget // 1000}K tokens carry {first.demos:,} of them "
                f"({100 * first.fraction:.1f}% of the pool)"
            )
        whole = next((f for f in o.fits if f.whole_pool), None)
        if whole is not None:
            text += f"; the whole pool fits in {whole.budget // 1000}K"
        if o.label_counts:
            top, count = max(o.label_counts.items(), key=lambda kv: kv[1])
            text += f"; majority label `{top}` = {count / max(1, o.examples):.1%}"
        lines.append(text + ".")
    return "\n".join(lines)

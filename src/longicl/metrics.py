"""Sample-level scores and task-level aggregates, kept apart.

``score`` judges one prediction against its gold answer; ``aggregate`` summarises a task's
records into the numbers that go into ``run.json`` and the report.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from longicl.parse import normalise
from longicl.tasks import TaskSpec


def score(spec: TaskSpec, prediction: str, gold: str | None) -> float | None:
    """1.0 for an exact match after normalisation, 0.0 otherwise; None when it cannot be judged.

    Task 8 (code) is judged by execution (``longicl.kernels``), never by string match.
    """
    if gold is None or spec.metric != "exact_match":
        return None
    if not prediction:
        return 0.0
    return float(normalise(spec, prediction) == normalise(spec, gold))


@dataclass(frozen=True)
class Spread:
    min: int
    median: float
    max: int

    @classmethod
    def of(cls, values: Sequence[int]) -> Spread | None:
        if not values:
            return None
        return cls(min(values), float(statistics.median(values)), max(values))


@dataclass(frozen=True)
class TaskMetrics:
    n: int
    accuracy: float | None
    parse_failures: int
    failed_requests: int
    prompt_tokens: Spread | None
    icl_tokens: Spread | None
    uncached_prompt_tokens: Spread | None
    requests: int
    seconds: float
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def aggregate(records: Iterable[dict], seconds: float) -> TaskMetrics:
    """Summarise one task's sample records (the dicts written to ``records/*.jsonl``)."""
    rows = list(records)
    scored = [r["correct"] for r in rows if r.get("correct") is not None]
    requests = [q for r in rows for q in r.get("requests", [])]
    methods = sorted({r.get("method", "icl") for r in rows})
    return TaskMetrics(
        n=len(rows),
        accuracy=(sum(scored) / len(scored)) if scored and len(scored) == len(rows) else None,
        parse_failures=sum(1 for r in rows if not r.get("error") and r.get("parsed_ok") is False),
        failed_requests=sum(1 for r in rows if r.get("error")),
        prompt_tokens=Spread.of([q["prompt_tokens"] for q in requests if q.get("prompt_tokens")]),
        icl_tokens=Spread.of([q["icl_tokens"] for q in requests if q.get("icl_tokens") is not None]),
        uncached_prompt_tokens=Spread.of(
            [q["uncached_tokens"] for q in requests if q.get("uncached_tokens") is not None]
        ),
        requests=len(requests),
        seconds=round(seconds, 3),
        method="+".join(methods) if methods else "icl",
    )

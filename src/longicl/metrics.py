"""Sample-level scores and task-level aggregates, kept apart.

``score`` judges one prediction against its gold answer; ``aggregate`` summarises a task's
records into the numbers that go into ``run.json`` and the report, including the task's own
metric (``TASK_METRICS``, named by the task file's ``metric``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sklearn.metrics import f1_score

from longicl.errors import DataError
from longicl.kernels.execution_metrics import kernel_metrics
from longicl.parse import normalise
from longicl.records import as_model_answered, human_decided
from longicl.registry import Registry
from longicl.tasks import AnswerKind, TaskSpec


def accuracy_of(rows: Sequence[dict]) -> float | None:
    """Share of correct samples; None unless every sample was judged."""
    scored = [r["correct"] for r in rows if r.get("correct") is not None]
    return (sum(scored) / len(scored)) if scored and len(scored) == len(rows) else None


def _macro_f1(spec: TaskSpec, rows: Sequence[dict]) -> float | None:
    """F1 per label, averaged with equal weight (a parse failure counts against its gold label)."""
    if not rows or any(r.get("gold") is None for r in rows):
        return None
    gold = [normalise(spec, r["gold"]) for r in rows]
    predicted = [normalise(spec, r.get("prediction") or "") if r.get("prediction") else "" for r in rows]
    labels = [normalise(spec, label) for label in spec.labels or ()] or sorted(set(gold))
    return float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0))


@dataclass(frozen=True)
class TaskMetric:
    """How a task is scored: per sample by string match or not, and the task-level number."""

    string_match: bool  # each sample is correct or not after normalisation
    summarise: Callable[[TaskSpec, Sequence[dict]], float | None]
    answer_kinds: tuple[AnswerKind, ...] | None = None  # None: any
    # What run.json adds to the task's entry from its records (task 8: ``kernels``).
    task_summary: Callable[[Iterable[Mapping[str, Any]]], dict[str, Any]] = lambda records: {}


#: metric name (a task file's ``metric``) -> how it is computed
TASK_METRICS: Registry[TaskMetric] = Registry(
    "metric",
    {
        "exact_match": TaskMetric(string_match=True, summarise=lambda spec, rows: accuracy_of(rows)),
        "macro_f1": TaskMetric(string_match=True, summarise=_macro_f1, answer_kinds=(AnswerKind.LABEL,)),
        # task 8: judged by running the code (longicl.kernels.execution_metrics), never by string match
        "kernel_check": TaskMetric(
            string_match=False,
            summarise=lambda spec, rows: None,
            task_summary=lambda records: {"kernels": kernel_metrics(records)},
        ),
    },
    error=DataError,
)


def check_metric(spec: TaskSpec) -> TaskMetric:
    """The task's metric, or one `DataError` line naming the task file's ``metric`` key."""
    metric = TASK_METRICS.get(spec.metric, where=f"{spec.source}: metric")
    if metric.answer_kinds is not None and spec.answer_kind not in metric.answer_kinds:
        kinds = ", ".join(k.value for k in metric.answer_kinds)
        raise DataError(f"{spec.source}: metric: {spec.metric} needs answer: {kinds}")
    return metric


def metric_for(spec: TaskSpec) -> TaskMetric:
    """The task's metric (``TaskSpec.metric``), looked up in `TASK_METRICS`."""
    return check_metric(spec)


def score(spec: TaskSpec, prediction: str, gold: str | None) -> float | None:
    """1.0 for an exact match after normalisation, 0.0 otherwise; None when it cannot be judged.

    Task 8 (code) is judged by execution (``longicl.kernels``), never by string match.
    """
    metric = TASK_METRICS.get(spec.metric) if spec.metric in TASK_METRICS else None
    if gold is None or metric is None or not metric.string_match:
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
    score: float | None = None  # the task's own metric (``metric``: accuracy, macro F1, ...)
    # samples whose prediction a human decided (``longicl review import``); the numbers above
    # score the model's own answers to them, the prediction files carry the human's
    human_decided: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def aggregate(records: Iterable[dict], seconds: float, spec: TaskSpec | None = None) -> TaskMetrics:
    """Summarise one task's sample records (the dicts written to ``records/*.jsonl``).

    The numbers score what the model answered: a human-decided record counts with the model's
    answer (`model_answers`), and how many there are is ``human_decided``."""
    given = list(records)
    rows = model_answers(given, spec)
    metric = TASK_METRICS.get(spec.metric) if spec is not None and spec.metric in TASK_METRICS else None
    requests = [q for r in rows for q in r.get("requests", [])]
    methods = sorted({r.get("method", "icl") for r in rows})
    return TaskMetrics(
        n=len(rows),
        accuracy=accuracy_of(rows),
        parse_failures=sum(
            1 for r in rows if not r.get("error") and not r.get("unanswered") and r.get("parsed_ok") is False
        ),
        failed_requests=sum(1 for r in rows if r.get("error")),
        prompt_tokens=Spread.of([q["prompt_tokens"] for q in requests if q.get("prompt_tokens")]),
        icl_tokens=Spread.of([q["icl_tokens"] for q in requests if q.get("icl_tokens") is not None]),
        uncached_prompt_tokens=Spread.of(
            [q["uncached_tokens"] for q in requests if q.get("uncached_tokens") is not None]
        ),
        requests=len(requests),
        seconds=round(seconds, 3),
        method="+".join(methods) if methods else "icl",
        score=metric.summarise(spec, rows) if metric is not None and spec is not None else None,
        human_decided=sum(1 for r in given if human_decided(r)),
    )


def model_answers(records: Iterable[dict], spec: TaskSpec | None = None) -> list[dict]:
    """The records as the model answered them (`as_model_answered`); a human-decided record
    from before ``model_correct`` was kept is scored again here when ``spec`` is given."""
    out = []
    for record in records:
        model = as_model_answered(record)
        if model is not record and "model_correct" not in record and spec is not None:
            model["correct"] = score(spec, model["prediction"], record.get("gold"))
        out.append(model)
    return out

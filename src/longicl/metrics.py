"""Sample-level scores and task-level aggregates, kept apart.

``score`` judges one prediction against its gold answer; `MetricsTally` summarises a task's
records, one at a time, into the numbers that go into ``run.json`` and the report, including the
task's own metric (``TASK_METRICS``, named by the task file's ``metric``). What it keeps does not
grow with the rows: counts, a `Counter` per token spread (one entry per distinct value) and, for
macro F1, a `Counter` of (gold, prediction) pairs (one entry per pair of labels). ``aggregate`` is
the same over a list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from sklearn.metrics import f1_score

from longicl.errors import DataError
from longicl.kernels.execution_metrics import KernelTally
from longicl.parse import normalise
from longicl.records import AnyRecord, SampleRecord, as_record
from longicl.registry import Registry
from longicl.tasks import AnswerKind, TaskSpec


class Tally(Protocol):
    """A summary built one record at a time: `add` each record, then `result` once."""

    def add(self, record: SampleRecord) -> None: ...
    def result(self) -> dict[str, Any]: ...


class Keyed:
    """A tally whose result is put under ``key`` (``{key: tally.result()}``)."""

    def __init__(self, key: str, tally: Tally) -> None:
        self.key, self.tally = key, tally

    def add(self, record: SampleRecord) -> None:
        self.tally.add(record)

    def result(self) -> dict[str, Any]:
        return {self.key: self.tally.result()}


class _Nothing:
    """A metric that adds nothing to the task's entry."""

    def add(self, record: SampleRecord) -> None:
        pass

    def result(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class ModelAnswer:
    """What scores the model in one record: a human-decided record's prediction, correctness and
    error are the model's (``model_prediction``, ``model_correct``, ``model_error``), so that a
    human's answer is never counted; a record from before ``model_correct`` was kept is scored
    again from the model's prediction (when the task is known)."""

    prediction: str | None
    correct: float | None
    error: str | None
    gold: str | None

    @classmethod
    def of(cls, record: SampleRecord, spec: TaskSpec | None = None) -> ModelAnswer:
        if not record.human_decided:
            return cls(record.prediction, record.correct, record.error, record.gold)
        prediction = record.model_prediction or ""
        correct = record.model_correct
        kept = correct is not None or "model_correct" in (record.source_keys or ())
        if not kept and spec is not None:
            correct = score(spec, prediction, record.gold)
        return cls(prediction, correct, record.model_error, record.gold)


class ScoreTally(Protocol):
    """A task metric's number, one model answer at a time."""

    def add(self, answer: ModelAnswer) -> None: ...
    def result(self) -> float | None: ...


class Accuracy:
    """Share of correct samples; None unless every sample was judged."""

    def __init__(self, spec: TaskSpec | None = None) -> None:
        self.n = self.judged = 0
        self.correct: float = 0

    def add(self, answer: ModelAnswer) -> None:
        self.n += 1
        if answer.correct is not None:
            self.judged += 1
            self.correct += answer.correct

    def result(self) -> float | None:
        return (self.correct / self.judged) if self.judged and self.judged == self.n else None


class MacroF1:
    """F1 per label, averaged with equal weight (a parse failure counts against its gold label);
    None without samples or when one has no gold. Kept: a count per (gold, prediction) pair."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.n = 0
        self.without_gold = False

    def add(self, answer: ModelAnswer) -> None:
        self.n += 1
        if answer.gold is None:
            self.without_gold = True
            return
        predicted = normalise(self.spec, answer.prediction) if answer.prediction else ""
        self.pairs[(normalise(self.spec, answer.gold), predicted)] += 1

    def result(self) -> float | None:
        if not self.n or self.without_gold:
            return None
        pairs = list(self.pairs.items())
        gold = [g for (g, _), _ in pairs]
        predicted = [p for (_, p), _ in pairs]
        labels = [normalise(self.spec, label) for label in self.spec.labels or ()] or sorted(set(gold))
        weights = [count for _, count in pairs]
        return float(
            f1_score(gold, predicted, labels=labels, average="macro", zero_division=0, sample_weight=weights)
        )


class _NoScore:
    def __init__(self, spec: TaskSpec | None = None) -> None:
        pass

    def add(self, answer: ModelAnswer) -> None:
        pass

    def result(self) -> float | None:
        return None


def _kernel_summary() -> Tally:
    return Keyed("kernels", KernelTally())


@dataclass(frozen=True)
class TaskMetric:
    """How a task is scored: per sample by string match or not, and the task-level number."""

    string_match: bool  # each sample is correct or not after normalisation
    # the task-level number, one model answer at a time (`ScoreTally`)
    score_tally: Callable[[TaskSpec], ScoreTally]
    answer_kinds: tuple[AnswerKind, ...] | None = None  # None: any
    # What run.json adds to the task's entry from its records (task 8: ``kernels``): a new
    # `Tally` per task, fed the task's records of the run in sample order.
    task_summary: Callable[[], Tally] = _Nothing


#: metric name (a task file's ``metric``) -> how it is computed
TASK_METRICS: Registry[TaskMetric] = Registry(
    "metric",
    {
        "exact_match": TaskMetric(string_match=True, score_tally=Accuracy),
        "macro_f1": TaskMetric(string_match=True, score_tally=MacroF1, answer_kinds=(AnswerKind.LABEL,)),
        # task 8: judged by running the code (longicl.kernels.execution_metrics), never by string match
        "kernel_check": TaskMetric(string_match=False, score_tally=_NoScore, task_summary=_kernel_summary),
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
    def of(cls, values: Sequence[int] | Mapping[int, int]) -> Spread | None:
        """The spread of ``values``: a list, or a count per value (`Counter`); the median as
        `statistics.median` gives it (the middle value, or the mean of the two middle ones)."""
        counts = values if isinstance(values, Mapping) else Counter(values)
        n = sum(counts.values())
        if not n:
            return None
        ordered = sorted(counts.items())
        middle = _nth(ordered, n // 2)
        median = middle if n % 2 else (_nth(ordered, n // 2 - 1) + middle) / 2
        return cls(ordered[0][0], float(median), ordered[-1][0])


def _nth(ordered: Sequence[tuple[int, int]], position: int) -> int:
    """The value at ``position`` (from 0) of the sorted values that ``ordered`` counts."""
    seen = 0
    for value, count in ordered:
        seen += count
        if position < seen:
            return value
    raise IndexError(position)


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


class MetricsTally:
    """A task's `TaskMetrics`, one record at a time (`add`), in memory that does not grow with the
    rows. The numbers score what the model answered (`ModelAnswer`: a human-decided record counts
    with the model's answer); how many a human decided is ``human_decided``."""

    def __init__(self, spec: TaskSpec | None = None) -> None:
        self.spec = spec
        metric = TASK_METRICS.get(spec.metric) if spec is not None and spec.metric in TASK_METRICS else None
        self.score = metric.score_tally(spec) if metric is not None and spec is not None else None
        self.accuracy = Accuracy()
        self.n = self.parse_failures = self.failed = self.requests = self.human_decided = 0
        self.prompt_tokens: Counter[int] = Counter()
        self.icl_tokens: Counter[int] = Counter()
        self.uncached_tokens: Counter[int] = Counter()
        self.methods: set[str] = set()

    def add(self, record: AnyRecord) -> None:
        typed = as_record(record)
        answer = ModelAnswer.of(typed, self.spec)
        self.n += 1
        self.accuracy.add(answer)
        if self.score is not None:
            self.score.add(answer)
        if answer.error:
            self.failed += 1
        elif not typed.unanswered and typed.parsed_ok is False:
            self.parse_failures += 1
        self.human_decided += typed.human_decided
        self.methods.add(typed.method_json)
        for q in typed.request_entries:
            self.requests += 1
            if q.get("prompt_tokens"):
                self.prompt_tokens[q["prompt_tokens"]] += 1
            if q.get("icl_tokens") is not None:
                self.icl_tokens[q["icl_tokens"]] += 1
            if q.get("uncached_tokens") is not None:
                self.uncached_tokens[q["uncached_tokens"]] += 1

    def result(self, seconds: float) -> TaskMetrics:
        methods = sorted(self.methods)
        return TaskMetrics(
            n=self.n,
            accuracy=self.accuracy.result(),
            parse_failures=self.parse_failures,
            failed_requests=self.failed,
            prompt_tokens=Spread.of(self.prompt_tokens),
            icl_tokens=Spread.of(self.icl_tokens),
            uncached_prompt_tokens=Spread.of(self.uncached_tokens),
            requests=self.requests,
            seconds=round(seconds, 3),
            method="+".join(methods) if methods else "icl",
            score=self.score.result() if self.score is not None else None,
            human_decided=self.human_decided,
        )


def aggregate(records: Iterable[AnyRecord], seconds: float, spec: TaskSpec | None = None) -> TaskMetrics:
    """Summarise one task's sample records (typed, or the dicts written to ``records/*.jsonl``):
    `MetricsTally` over ``records``."""
    tally = MetricsTally(spec)
    for record in records:
        tally.add(record)
    return tally.result(seconds)

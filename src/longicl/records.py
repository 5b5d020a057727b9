"""What one annotated sample leaves behind: typed records, written to ``records/*.jsonl`` in one place.

`SampleRecord` is the line kept per sample and `RequestLog` the entry kept per request; their
``to_dict()`` is the only code that decides the JSON's fields and their order (resume, metrics,
the report and the notebooks read these lines back, so the layout is part of the output format:
see README, "Outputs").

`MethodLabel` is the record's ``method`` string (``icl``, ``icl+program``, ``icl+classifier``,
``icl+kernel_check``, or what answered for an engine that is not a language model: ``program``,
``classifier``, ``retrieval``): built here, parsed back here, and the one place that says which
model answered (`answered_by`) and whether the answer was pure in-context learning (`pure_icl`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from longicl.engines.base import Completion
    from longicl.prompt import PromptPlan

#: ``answered_by`` of a language model that read the prompt (in-context learning)
ICL = "icl"
#: ``answered_by`` of a record whose prediction a human decided (``longicl review import``)
HUMAN = "human"
#: the confidence fields of a record nothing answered (dry run) or nothing scored (task 8)
NO_CONFIDENCE = {"confidence": None, "confidence_source": None}
#: what may follow ``icl`` in a label and is not pure ICL: a side model changed or voted on the answer
SIDE_MODELS = ("classifier", "program")


@dataclass(frozen=True)
class MethodLabel:
    """``answered_by`` plus the stages that followed it, e.g. ``icl+classifier+program``."""

    answered_by: str  # "icl" (the language model), or what answered: "program", "classifier", …
    stages: tuple[str, ...] = ()  # side models ("classifier", "program") or pipeline stages ("kernel_check")

    @classmethod
    def parse(cls, text: str | None) -> MethodLabel:
        parts = [p for p in str(text or ICL).split("+") if p]
        return cls(parts[0] if parts else ICL, tuple(parts[1:]))

    def __str__(self) -> str:
        return "+".join((self.answered_by, *self.stages))

    @property
    def by_language_model(self) -> bool:
        return self.answered_by == ICL

    @property
    def involves_language_model(self) -> bool:
        """The language model answered or voted (a run.json label may join several answerers)."""
        return ICL in (self.answered_by, *self.stages)

    @property
    def side_models(self) -> tuple[str, ...]:
        """The models other than the language model that shaped the answer."""
        own = () if self.by_language_model else (self.answered_by,)
        return (*own, *(s for s in self.stages if s in SIDE_MODELS))

    @property
    def pure_icl(self) -> bool:
        """Every answer came from the language model reading its prompt (no side model)."""
        return not self.side_models


@dataclass(frozen=True)
class TaskMethod:
    """What run.json says of a task's method: its label, whether it stayed pure ICL, and why not."""

    method: str
    pure_icl: bool
    side_models: list[str]


def task_method(records: Iterable[Mapping[str, Any]], configured: MethodLabel) -> TaskMethod:
    """A task's method from its records and the label its settings give a language model's answers.

    Answered records of an engine that is not a language model (``engine=classical``) name what
    answered; otherwise the configured label stands, or an annotator's own ICL pipeline (task 8:
    ``icl+kernel_check``) when the settings add no side model."""
    rows = list(records)
    labels = {str(r["method"]): MethodLabel.parse(r["method"]) for r in rows if r.get("method")}
    answered_by = sorted({str(r["method"]) for r in rows if r.get("method") and r.get("vote") is not None})
    engine_models = [m for m in answered_by if not labels[m].by_language_model]
    label = configured
    own = {text for text, parsed in labels.items() if parsed.by_language_model and parsed.stages}
    if not configured.stages and len(own) == 1:
        label = labels[own.pop()]
    side_models = sorted(set(configured.side_models) | set(engine_models))
    return TaskMethod(
        method="+".join(answered_by) if engine_models else str(label),
        pure_icl=not side_models,
        side_models=side_models,
    )


@dataclass
class RequestLog:
    """One request of a sample: the prompt's shape, the reply, and what was read from it."""

    variant: int
    static_block: str
    static_demos: int
    dynamic_demo_ids: list[str]
    prompt_tokens: int
    static_tokens: int
    icl_tokens: int
    uncached_tokens: int
    raw_response: str | None
    reasoning: str | None
    parsed: str
    answer: str
    label_logprobs: dict[str, float] | None
    calibrated_logprobs: dict[str, float] | None
    finish_reason: str | None
    usage: dict[str, Any] | None
    latency_s: float
    attempts: int
    server: str | None
    error: str | None
    notes: list[str]
    role: str | None = None  # task 8: "kernel", "reference", "repair_1", …
    # The dry run of task 8 wrote ``role`` after the other fields, answered runs before them;
    # kept so that records stay byte-identical to earlier runs.
    role_last: bool = False

    @classmethod
    def of(
        cls,
        plan: PromptPlan,
        completion: Completion,
        *,
        parsed: str,
        answer: str,
        label_logprobs: dict[str, float] | None = None,
        calibrated_logprobs: dict[str, float] | None = None,
        role: str | None = None,
        role_last: bool = False,
    ) -> RequestLog:
        """The log of one request sent with ``plan`` and answered with ``completion``."""
        return cls(
            variant=plan.static.variant,
            static_block=plan.static.sha256,
            static_demos=len(plan.static.demo_ids),
            dynamic_demo_ids=list(plan.dynamic_ids),
            prompt_tokens=plan.prompt_tokens,
            static_tokens=plan.shared_prefix_tokens,
            icl_tokens=plan.icl_tokens,
            uncached_tokens=plan.uncached_tokens,
            raw_response=completion.text,
            reasoning=completion.reasoning,
            parsed=parsed,
            answer=answer,
            label_logprobs=label_logprobs,
            calibrated_logprobs=calibrated_logprobs,
            finish_reason=completion.finish_reason,
            usage=completion.usage,
            latency_s=completion.latency_s,
            attempts=completion.attempts,
            server=completion.server,
            error=completion.error,
            notes=completion.notes,
            role=role,
            role_last=role_last,
        )

    def to_dict(self) -> dict[str, Any]:
        body = {
            "variant": self.variant,
            "static_block": self.static_block,
            "static_demos": self.static_demos,
            "dynamic_demo_ids": list(self.dynamic_demo_ids),
            "prompt_tokens": self.prompt_tokens,
            "static_tokens": self.static_tokens,
            "icl_tokens": self.icl_tokens,
            "uncached_tokens": self.uncached_tokens,
            "raw_response": self.raw_response,
            "reasoning": self.reasoning,
            "parsed": self.parsed,
            "answer": self.answer,
            "label_logprobs": _rounded(self.label_logprobs),
            "calibrated_logprobs": _rounded(self.calibrated_logprobs),
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "latency_s": round(self.latency_s, 4),
            "attempts": self.attempts,
            "server": self.server,
            "error": self.error,
            "notes": self.notes,
        }
        if self.role is None:
            return body
        return {**body, "role": self.role} if self.role_last else {"role": self.role, **body}


@dataclass
class SampleRecord:
    """The JSON line kept for one sample (README, "Outputs"; docs/methods.md)."""

    task: str
    sample_id: str
    index: int
    prediction: str
    parsed_ok: bool | None  # None: nothing was answered (dry run)
    parse_error: str | None
    gold: str | None
    correct: float | None  # None: not judged by string match (test split, dry run, task 8)
    method: MethodLabel
    error: str | None
    requests: Sequence[RequestLog]
    vote: dict[str, Any] | None = None  # the vote's tally and side votes (None: nothing voted)
    # ``confidence`` and ``confidence_source`` (longicl.quality.confidence); None: not recorded
    # (a sample whose annotation raised)
    confidence: Mapping[str, Any] | None = None
    decided_by: str | None = None  # "text", "label_scores" or "program" (None: nothing answered)
    # Task 8's records never had ``decided_by`` (the kernel's tier says it); kept out of them.
    has_decision: bool = True
    calibration: dict[str, Any] | None = None  # written only when a calibration was applied
    program: dict[str, Any] | None = None  # program verification's verdict, when a program checked
    kernel: dict[str, Any] | None = None  # task 8: what was generated, checked, repaired, chosen
    extra: Mapping[str, Any] = field(default_factory=dict)  # an annotator's own fields, last

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "sample_id": self.sample_id,
            "index": self.index,
            "prediction": self.prediction,
            "parsed_ok": self.parsed_ok,
            "parse_error": self.parse_error,
            "gold": self.gold,
            "correct": self.correct,
            "method": str(self.method),
            "error": self.error,
            "requests": [q.to_dict() for q in self.requests],
            "vote": self.vote,
        }
        if self.confidence is not None:
            out.update(self.confidence)
        if self.has_decision:
            out["decided_by"] = self.decided_by
        for key in ("calibration", "program", "kernel"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out.update(self.extra)
        return out


def _rounded(scores: Mapping[str, float] | None) -> dict[str, float] | None:
    return None if scores is None else {label: round(value, 6) for label, value in scores.items()}


#: fields of a request's entry that no summary of a run reads (metrics, calibration, quality, the
#: method report): the raw reply and its reasoning, the dynamic demonstrations, usage, timing.
#: They are most of a record's size; the report's error pages read them from the file.
UNSUMMARISED_REQUEST_FIELDS = frozenset(
    {"raw_response", "reasoning", "dynamic_demo_ids", "static_demos", "static_block", "usage", "latency_s"}
)


def summary_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without what a run's summaries never read (`UNSUMMARISED_REQUEST_FIELDS`): what a
    run keeps per sample for its metrics, about a tenth of the record as read."""
    requests = record.get("requests")
    if not isinstance(requests, list):
        return record
    slim = [
        {k: v for k, v in q.items() if k not in UNSUMMARISED_REQUEST_FIELDS} if isinstance(q, dict) else q
        for q in requests
    ]
    return {**record, "requests": slim}


def human_decided(record: Mapping[str, Any]) -> bool:
    """A human decided the record's prediction (``longicl review import``)."""
    return record.get("answered_by") == HUMAN


def as_model_answered(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as the model left it: a human-decided record's ``prediction``, ``correct`` and
    ``error`` are the model's (``model_prediction``, ``model_correct``, ``model_error``), so that
    what scores the model never counts a human's answer. Other records are returned unchanged.
    ``correct`` is None when the record predates ``model_correct`` (the caller may score it)."""
    if not human_decided(record):
        return record
    return {
        **record,
        "prediction": record.get("model_prediction") or "",
        "correct": record.get("model_correct"),
        "error": record.get("model_error"),
    }

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


def task_method(records: Iterable[AnyRecord], configured: MethodLabel) -> TaskMethod:
    """A task's method from its records and the label its settings give a language model's answers.

    Answered records of an engine that is not a language model (``engine=classical``) name what
    answered; otherwise the configured label stands, or an annotator's own ICL pipeline (task 8:
    ``icl+kernel_check``) when the settings add no side model."""
    rows = [r for r in map(as_record, records) if r.has_key("method") and r.method_json]
    labels = {str(r.method_json): MethodLabel.parse(r.method_json) for r in rows}
    answered_by = sorted({str(r.method_json) for r in rows if r.vote is not None})
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
    # Set by the runner after the annotator (written only when set):
    compliant: bool | None = None  # the run's settings keep to the competition's rules for this sample
    unanswered: str | None = None  # why the model gave no answer (asked again on resume), see annotators.base
    # Set by a review's import (longicl.review.apply; written only when set):
    model_prediction: str | None = None  # the model's answer the human's replaced
    model_correct: bool | None = None  # whether the model's answer was right (dev), before the human
    model_error: str | None = None  # the model's error, before the human answered
    # JSON key ``answered_by``: "human" once a person's decision is the prediction. Not
    # ``method.answered_by`` (which model answered, part of ``method``): two meanings of one JSON
    # key, so the typed view names this one `overridden_by` (see `human_decided`).
    overridden_by: str | None = None
    human: dict[str, Any] | None = None  # the human's decision: answer, annotator, tool
    # What `from_dict` read: the source's keys in order (None: built by an annotator), so that a
    # record read back is written back byte for byte; its method text when not canonical.
    source_keys: tuple[str, ...] | None = field(default=None, repr=False, compare=False)
    method_text: str | None = field(default=None, repr=False, compare=False)

    @property
    def human_decided(self) -> bool:
        """A person's decision replaced the model's prediction (``answered_by: human``)."""
        return self.overridden_by == "human"

    @property
    def request_entries(self) -> list[Mapping[str, Any]]:
        """The record's requests as their JSON entries (as read, or as written)."""
        return [q.to_dict() if isinstance(q, RequestLog) else q for q in self.requests]

    @property
    def last_request(self) -> Mapping[str, Any]:
        """The entry of the record's last request ({} when it has none)."""
        if not self.requests:
            return {}
        last = self.requests[-1]
        return last.to_dict() if isinstance(last, RequestLog) else last

    @property
    def method_json(self) -> Any:
        """``method`` as the record's JSON has it (as read, when read back)."""
        return self._method_json()

    def has_key(self, key: str) -> bool:
        """The record's JSON has ``key``: the line it was read from had it, or (built) ``to_dict()``
        writes it. A field a line lacks reads as None, as does one written as null."""
        return key in (self.source_keys if self.source_keys is not None else self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampleRecord:
        """The typed view of a record line as written (also by older versions): a missing field is
        None (or its default), an unknown one is kept in `extra`, and ``to_dict()`` gives ``data``
        back with its keys in the same order. Request entries stay mappings (their fields vary by
        version, and `summary_record` slims them)."""
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            name = _FIELD_OF_KEY.get(key)
            if name is None:
                extra[key] = value
            elif name != "confidence":
                values[name] = value
        method = data.get("method")
        label = MethodLabel.parse(method if isinstance(method, str) else None)
        requests = data.get("requests")
        confidence = {k: data[k] for k in NO_CONFIDENCE if k in data}
        return cls(
            **{name: values.get(name) for name in _CORE},
            method=label,
            requests=list(requests) if isinstance(requests, list) else [],
            vote=values.get("vote"),
            confidence=confidence or None,
            decided_by=values.get("decided_by"),
            has_decision="decided_by" in data,
            calibration=values.get("calibration"),
            program=values.get("program"),
            kernel=values.get("kernel"),
            extra=extra,
            **{name: values.get(name) for name in _LATE},
            source_keys=tuple(data),
            method_text=None if isinstance(method, str) and str(label) == method else method,
        )

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
            "method": self._method_json(),
            "error": self.error,
            "requests": [q.to_dict() if isinstance(q, RequestLog) else q for q in self.requests],
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
        for name in _LATE:  # in the order their writers add them
            if getattr(self, name) is not None:
                out[_KEY_OF_FIELD[name]] = getattr(self, name)
        if self.source_keys is None:
            return out
        # Read back: as a dict would be, the source's keys in their order (a key it lacked stays
        # out), then each field assigned since, in the order of assignment (None included).
        late = {key: getattr(self, name) for name, key in _KEY_OF_FIELD.items()}  # None included
        ordered = {
            key: out[key] if key in out else late[key]
            for key in self.source_keys
            if key in out or key in late
        }
        for name in self.__dict__.get("_assigned", ()):
            keys = list(self.confidence or ()) if name == "confidence" else [_KEY_OF_FIELD.get(name, name)]
            for key in keys:
                ordered[key] = out[key] if key in out else getattr(self, name)
        return ordered

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if self.__dict__.get("source_keys") is not None and name in _FIELD_OF_KEY.values():
            assigned = self.__dict__.setdefault("_assigned", [])
            if name not in assigned:
                assigned.append(name)

    def _method_json(self) -> Any:
        if self.method_text is not None and (
            not isinstance(self.method_text, str) or MethodLabel.parse(self.method_text) == self.method
        ):
            return self.method_text  # as read (a label written in a form parse() would tidy)
        return str(self.method)


_TEXT, _INT, _NUMBER, _FLAG, _OBJECT, _LIST = (
    "a string",
    "a whole number",
    "a number",
    "true or false",
    "an object",
    "a list",
)
_TYPES: dict[str, tuple[type, ...]] = {
    _TEXT: (str,), _INT: (int,), _NUMBER: (int, float), _FLAG: (bool,), _OBJECT: (dict,), _LIST: (list,)
}  # fmt: skip
#: the type of each field of a record line (and of its request entries) as written; null or missing
#: is always allowed (older records lack fields)
_RECORD_FIELD_TYPES = {
    **dict.fromkeys(
        ("task", "prediction", "parse_error", "gold", "method", "error", "confidence_source", "decided_by"),
        _TEXT,
    ),
    **dict.fromkeys(("unanswered", "model_prediction", "model_error", "answered_by"), _TEXT),
    "index": _INT,
    "parsed_ok": _FLAG,
    "compliant": _FLAG,
    "correct": _NUMBER,
    "model_correct": _NUMBER,
    "confidence": _NUMBER,
    **dict.fromkeys(("vote", "calibration", "program", "kernel", "human"), _OBJECT),
    "requests": _LIST,
}
_REQUEST_FIELD_TYPES = {
    **dict.fromkeys(
        ("variant", "static_demos", "prompt_tokens", "static_tokens", "icl_tokens", "uncached_tokens"), _INT
    ),
    "attempts": _INT,
    "latency_s": _NUMBER,
    **dict.fromkeys(
        ("static_block", "raw_response", "reasoning", "parsed", "answer", "finish_reason", "server", "error"),
        _TEXT,
    ),
    "role": _TEXT,
    **dict.fromkeys(("label_logprobs", "calibrated_logprobs", "usage"), _OBJECT),
    **dict.fromkeys(("dynamic_demo_ids", "notes"), _LIST),
}


def record_type_problem(data: Mapping[str, Any]) -> str | None:
    """What is wrongly typed in a record line as read (``"requests[0].server must be a string,
    not list"``), or None. Records in an out_dir may come from elsewhere: every reader of the
    latest records checks them here once, so that no summary meets a field of the wrong type."""
    problem = _type_problem(data, _RECORD_FIELD_TYPES, "")
    if problem is not None:
        return problem
    for number, entry in enumerate(data.get("requests") or ()):
        if not isinstance(entry, dict):
            return f"requests[{number}] must be an object, not {type(entry).__name__}"
        problem = _type_problem(entry, _REQUEST_FIELD_TYPES, f"requests[{number}].")
        if problem is not None:
            return problem
    return None


def _type_problem(data: Mapping[str, Any], types: Mapping[str, str], prefix: str) -> str | None:
    for key, kind in types.items():
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, _TYPES[kind]) or (kind == _INT and isinstance(value, bool)):
            return f"{prefix}{key} must be {kind}, not {type(value).__name__}"
    return None


#: a record as its readers take it: typed, or a line as read (`SampleRecord.from_dict` types it)
AnyRecord = SampleRecord | Mapping[str, Any]


def as_record(record: AnyRecord) -> SampleRecord:
    """``record`` typed (itself when it already is)."""
    return record if isinstance(record, SampleRecord) else SampleRecord.from_dict(record)


#: SampleRecord's fields every record has, written first, under their own names
_CORE = ("task", "sample_id", "index", "prediction", "parsed_ok", "parse_error", "gold", "correct", "error")
#: fields added after the annotator (by the runner, then a review's import), written last, in this order
_LATE = (
    "compliant",
    "unanswered",
    "model_prediction",
    "model_correct",
    "model_error",
    "overridden_by",
    "human",
)
_KEY_OF_FIELD = {name: name for name in _LATE} | {"overridden_by": "answered_by"}
#: JSON key -> SampleRecord field ("confidence" for both confidence keys)
_FIELD_OF_KEY = (
    {
        key: key
        for key in (*_CORE, "method", "requests", "vote", "decided_by", "calibration", "program", "kernel")
    }
    | dict.fromkeys(NO_CONFIDENCE, "confidence")
    | {key: name for name, key in _KEY_OF_FIELD.items()}
)


def _rounded(scores: Mapping[str, float] | None) -> dict[str, float] | None:
    return None if scores is None else {label: round(value, 6) for label, value in scores.items()}


#: fields of a request's entry that no summary of a run reads (metrics, calibration, quality, the
#: method report): the raw reply and its reasoning, the dynamic demonstrations, usage, timing.
#: They are most of a record's size; the report's error pages keep two of them of a record's last
#: request (`longicl.analysis.runs.report_record`).
UNSUMMARISED_REQUEST_FIELDS = frozenset(
    {"raw_response", "reasoning", "dynamic_demo_ids", "static_demos", "static_block", "usage", "latency_s"}
)


def summary_record(record: dict[str, Any], *, keep_last: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``record`` without what a run's summaries never read (`UNSUMMARISED_REQUEST_FIELDS`): what a
    run keeps per sample for its metrics, about a tenth of the record as read. The last request
    keeps those of its fields named in ``keep_last``."""
    requests = record.get("requests")
    if not isinstance(requests, list):
        return record
    dropped = [UNSUMMARISED_REQUEST_FIELDS] * len(requests)
    if dropped:
        dropped[-1] = UNSUMMARISED_REQUEST_FIELDS - keep_last
    slim = [
        {k: v for k, v in q.items() if k not in drop} if isinstance(q, dict) else q
        for q, drop in zip(requests, dropped, strict=True)
    ]
    return {**record, "requests": slim}

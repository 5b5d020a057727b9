"""What one OpenAI-compatible server supports, and how a request is shaped to fit it.

One client talks to every server (vLLM, SGLang, llama.cpp's ``llama-server``, llama-cpp-python);
what differs is a small table, not a code path. At start the engine reads ``/v1/models`` (its
``owned_by`` names the server kind; vLLM reports ``max_model_len``) and, for llama.cpp, ``/props``
(its context size): read-only GETs, so the chat requests a server receives stay as they were.
What the table cannot know is learnt from the server's own refusal: an HTTP 4xx/5xx whose message
names an unsupported parameter switches that capability off (`Capabilities.learn`), once, with a
warning; the request is then sent again without it (never retried as is).

Unknown kinds (and the test suite's fake server) are treated like vLLM, the challenge's server.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from longicl.engines.probe import Probe

# How constrained decoding is asked for.
STRUCTURED_OUTPUTS = "structured_outputs"  # vLLM: {"structured_outputs": {"choice": [...]}} in the body
RESPONSE_FORMAT = "response_format"  # llama-cpp-python: {"type": "json_object", "schema": …}
JSON_SCHEMA = "json_schema"  # llama.cpp llama-server, SGLang: {"type": "json_schema", "json_schema": …}
NO_CONSTRAINT = "none"


@dataclass(frozen=True)
class CapabilityRow:
    """One line of the capability table."""

    name: str
    supported: bool | None  # None: not known yet (cached tokens before the first answer)
    detail: str  # what is used when supported; else the degradation: what the run does instead


@dataclass
class Capabilities:
    """One server's capabilities; `describe()` goes into run.json under ``engine.capabilities``."""

    kind: str  # "vllm", "llama.cpp", "llama-cpp-python", "sglang" or "unknown (vLLM-like)"
    logprobs: bool
    constrained: str  # STRUCTURED_OUTPUTS, RESPONSE_FORMAT, JSON_SCHEMA or NO_CONSTRAINT
    chat_template_kwargs: bool
    stop: bool
    tokenize_path: str | None  # below the server root, e.g. "/tokenize"; None: no endpoint known
    context_length: int | None
    cached_tokens: bool | None = (
        None  # whether usage reports prompt_tokens_details.cached_tokens; None: not seen yet
    )
    notes: list[str] = field(default_factory=list)  # one line per degradation, for run.json and the report

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[CapabilityRow]:
        """The capability table: per capability, what is used, or what the run does instead.

        Read from the record the run shapes its requests with; ``api_test.py`` prints it."""
        context = self.context_length
        used = {
            "logprobs": "top_logprobs" if self.logprobs else None,
            "constrained": MECHANISMS.get(self.constrained),
            "chat_template_kwargs": "enable_thinking" if self.chat_template_kwargs else None,
            "stop": "stop" if self.stop else None,
            "tokenize_path": self.tokenize_path,
            "context_length": f"{context:,} tokens" if context else None,
            "cached_tokens": "usage.prompt_tokens_details.cached_tokens" if self.cached_tokens else None,
        }
        rows = []
        for attribute, label in _LABELS.items():
            if attribute == "cached_tokens" and self.cached_tokens is None:
                rows.append(CapabilityRow(label, None, "not known before a first answer"))
            else:
                value = used[attribute]
                rows.append(CapabilityRow(label, value is not None, value or DEGRADED[attribute]))
        return rows

    # -- degradation ---------------------------------------------------------------------------
    def learn(self, message: str) -> str | None:
        """Switch off the capability an error ``message`` says is unsupported.

        Returns the note (one line), ``""`` when that capability was already off, or None when the
        message names no unsupported parameter (then it is an ordinary error)."""
        lowered = message.lower()
        if self.constrained == JSON_SCHEMA and "json_object" in lowered and "response_format" in lowered:
            self.constrained = RESPONSE_FORMAT  # llama-cpp-python: json_object with a schema, not json_schema
            note = "response_format json_schema refused: constrained through json_object with a schema"
            self.notes.append(note)
            return note
        if not any(word in lowered for word in _UNSUPPORTED_WORDS):
            return None
        for name, off in _PARAMETERS:
            if name not in lowered:
                continue
            if getattr(self, off[0]) == off[1]:
                return ""  # already learnt (a request sent before it was): send again, say nothing
            setattr(self, off[0], off[1])
            self.notes.append(DEGRADED[off[0]])
            return DEGRADED[off[0]]
        return None

    def saw_usage(self, usage: dict[str, Any] | None) -> str | None:
        """Record whether usage carries cached tokens (first answer only); the note when it does not."""
        if self.cached_tokens is not None or not usage:
            return None
        self.cached_tokens = "cached_tokens" in (usage.get("prompt_tokens_details") or {})
        if self.cached_tokens:
            return None
        note = DEGRADED["cached_tokens"]
        self.notes.append(note)
        return note

    # -- shaping a request ---------------------------------------------------------------------
    def shape(self, body: dict[str, Any], extra_body: dict[str, Any]) -> None:
        """Drop or translate, in place, what this server does not support."""
        if not self.logprobs:
            body.pop("logprobs", None)
            body.pop("top_logprobs", None)
        if not self.stop:
            body.pop("stop", None)
        if not self.chat_template_kwargs:
            extra_body.pop("chat_template_kwargs", None)
        if self.constrained == STRUCTURED_OUTPUTS:
            return  # the body as built (vLLM): nothing moves, so requests stay byte for byte
        constraint = extra_body.pop(STRUCTURED_OUTPUTS, None)
        schema = json_schema_of(constraint)
        if schema is None or self.constrained == NO_CONSTRAINT:
            return
        if self.constrained == RESPONSE_FORMAT:
            extra_body["response_format"] = {"type": "json_object", "schema": schema}
        else:
            extra_body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }

    def unwrap(self, text: str | None, constrained: bool) -> str | None:
        """A reply constrained through a JSON schema is a JSON value: the plain answer inside."""
        if not constrained or self.constrained in (STRUCTURED_OUTPUTS, NO_CONSTRAINT) or not text:
            return text
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, str) else text


_UNSUPPORTED_WORDS = (
    "not supported",
    "unsupported",
    "extra inputs are not permitted",
    "extra_forbidden",
    "unrecognized",
    "unknown field",
    "not permitted",
    "input should be",
)
# parameter named in an error -> (attribute, value that switches it off); the first match wins
_PARAMETERS: tuple[tuple[str, tuple[str, Any]], ...] = (
    ("logprobs", ("logprobs", False)),
    ("structured_outputs", ("constrained", NO_CONSTRAINT)),
    ("response_format", ("constrained", NO_CONSTRAINT)),
    ("json_schema", ("constrained", NO_CONSTRAINT)),
    ("chat_template_kwargs", ("chat_template_kwargs", False)),
    ("'stop'", ("stop", False)),
)
# capability -> what a run does without it (the note in run.json, the report and api_test.py)
DEGRADED = {
    "logprobs": "logprobs unavailable: label scores off",
    "constrained": "constrained decoding unavailable: answers are free text (parsed)",
    "chat_template_kwargs": "chat_template_kwargs unavailable: thinking switch ignored",
    "stop": "stop sequences unavailable: replies run to max_tokens",
    "tokenize_path": "no tokenize endpoint known: model.tokenizer=server unavailable",
    "context_length": "context length not reported: a prompt too long is shrunk when the server refuses it",
    "cached_tokens": "cached_tokens unavailable: prefix-cache hits not reported",
}
_LABELS = {  # capability -> its row's name in the table
    "logprobs": "logprobs",
    "constrained": "constrained decoding",
    "chat_template_kwargs": "chat_template_kwargs",
    "stop": "stop sequences",
    "tokenize_path": "tokenize endpoint",
    "context_length": "context length",
    "cached_tokens": "cached tokens",
}
MECHANISMS = {  # how constrained decoding is asked for, by mechanism (none: NO_CONSTRAINT)
    STRUCTURED_OUTPUTS: "structured_outputs",
    RESPONSE_FORMAT: "response_format json_object with a schema",
    JSON_SCHEMA: "response_format json_schema",
}


def json_schema_of(constraint: Any) -> dict[str, Any] | None:
    """vLLM's ``structured_outputs`` as a JSON schema: ``choice`` -> an enum of strings; ``json`` as is."""
    if not isinstance(constraint, dict):
        return None
    if isinstance(constraint.get("choice"), list):
        return {"type": "string", "enum": [str(c) for c in constraint["choice"]]}
    if isinstance(constraint.get("json"), dict):
        return constraint["json"]
    return None  # regex, grammar: no portable form


# ------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------
_VLLM = Capabilities(
    kind="vllm",
    logprobs=True,
    constrained=STRUCTURED_OUTPUTS,
    chat_template_kwargs=True,
    stop=True,
    tokenize_path="/tokenize",
    context_length=None,
)
KNOWN: dict[str, Capabilities] = {
    "vllm": _VLLM,
    "sglang": replace(_VLLM, kind="sglang", constrained=JSON_SCHEMA, tokenize_path=None),
    "llamacpp": replace(_VLLM, kind="llama.cpp", constrained=JSON_SCHEMA),
    # llama-cpp-python lists its models as owned by "me"; no chat_template_kwargs, /extras/tokenize
    "me": replace(
        _VLLM,
        kind="llama-cpp-python",
        constrained=RESPONSE_FORMAT,
        chat_template_kwargs=False,
        tokenize_path="/extras/tokenize",
    ),
}


def from_models(entry: dict[str, Any], context_length: int | None) -> Capabilities:
    """The capability record for a server whose ``/v1/models`` entry is ``entry``."""
    known = KNOWN.get(str(entry.get("owned_by") or "").lower())
    caps = replace(known or _VLLM, kind=known.kind if known else "unknown (vLLM-like)", notes=[])
    caps.context_length = context_length
    return caps


def from_probe(found: Probe, model: str) -> Capabilities:
    """The capability record of the server ``found`` describes, serving ``model``: the one way
    the engine and ``api_test.py`` start their record (then both learn from refusals)."""
    return from_models(found.entry(model), found.context_length)


_OVERFLOW = re.compile(
    r"maximum context length|context length|too long|max_model_len|prompt is too long"
    r"|exceeds the available context size|exceed context window|context window",
    re.I,
)


def is_context_overflow(message: str) -> bool:
    """Whether an error message says the prompt does not fit (vLLM, OpenAI, llama.cpp wordings)."""
    return bool(_OVERFLOW.search(message))

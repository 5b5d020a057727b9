"""One async interface for every way of getting an answer.

An engine turns a `ChatRequest` into a `Completion`. It never raises for a failed request: a
request that keeps failing comes back with ``error`` set, so one bad sample never stops a run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from longicl.data import Example
from longicl.tasks import TaskSpec

#: how an engine's ``Completion.error`` starts when the server found the prompt too long for its
#: context window (the annotator then shrinks the prompt and asks again)
CONTEXT_LENGTH_ERROR = "context_length"


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completions call, plus what the engine may need to know about it."""

    task: TaskSpec
    sample: Example
    messages: list[dict[str, str]]
    max_tokens: int
    sampling: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, top_k, min_p, seed, …
    extra_body: dict[str, Any] = field(default_factory=dict)  # vLLM fields: chat_template_kwargs, …
    logprobs: int | None = None  # top_logprobs per generated token, when wanted
    prompt_tokens: int = 0  # our own count, for logs and budgets
    affinity: str = ""  # requests sharing a static prefix share this key (same server)


@dataclass
class Completion:
    text: str | None
    finish_reason: str | None = None
    reasoning: str | None = None  # separate reasoning field of servers with a reasoning parser
    usage: dict[str, Any] | None = None
    latency_s: float = 0.0
    attempts: int = 1
    error: str | None = None
    server: str | None = None
    logprobs: list[dict[str, Any]] | None = None  # per generated token: {"token", "logprob", "top": {...}}
    method: str = "icl"  # "icl", or "program" / "classifier" / "retrieval" for classical annotators
    notes: list[str] = field(default_factory=list)  # what the engine had to do (retries, shrinks, …)

    @property
    def context_too_long(self) -> bool:
        return (self.error or "").startswith(CONTEXT_LENGTH_ERROR)


class Engine(ABC):
    """Base of all engines. ``concurrency`` bounds the requests a runner keeps in flight."""

    name = "base"
    concurrency = 1
    #: whether replies are real answers (False for the dry run, which only builds requests)
    answers = True
    #: whether replies come from a model that reads the prompt, so that follow-up requests
    #: (task 8's reference and repair turns) can change them (False for classical annotators)
    reads_prompts = True

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Engine:
        """The engine of an ``engine.*`` section (without ``name``): each key one argument."""
        return cls(**settings)

    def launch(self) -> None:
        """Start what the engine runs itself (``engine=local``: its llama.cpp server), before the
        run needs it; `shutdown` is called afterwards whatever happens."""

    def shutdown(self) -> None:
        """Stop what `launch` started."""

    def served_tokenizer(self) -> Any:
        """The served model's token counter (``model.tokenizer=server``; see `longicl.tokens`),
        None for an engine without a served model. Called after `launch`."""
        return None

    async def start(self) -> None:
        """Check that the engine can work (e.g. the server answers); raise a UsageError if not."""

    async def prepare(self, spec: TaskSpec, pool: Sequence[Example]) -> None:
        """Called once per task before its requests (classical annotators train here)."""

    @abstractmethod
    async def complete(self, request: ChatRequest) -> Completion: ...

    async def aclose(self) -> None:
        """Release connections and processes."""

    def describe(self) -> dict[str, Any]:
        """What goes into run.json about this engine."""
        return {"name": self.name}

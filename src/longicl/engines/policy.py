"""The one request policy of every engine that asks OpenAI-compatible servers (or vLLM replicas).

Written once, in the shape of lm-evaluation-harness's ``TemplateAPI``: the engine prepares one
request, a *transport* sends it and returns one `Outcome`, and this policy decides what happens
next. Transports: the official OpenAI client (``openai``, ``local``), Ray Data HTTP rows and
Ray Data vLLM rows (``ray``). What the policy owns:

- retries with exponential backoff and jitter, honouring a 429's ``Retry-After`` (bounded by
  ``retry_after_max``), on 5xx, 408/409, timeouts, dropped connections, malformed or empty replies;
  any other 4xx is final;
- the length retry: ``finish_reason == "length"`` is asked once more with ``max_tokens`` times
  ``length_retry_factor``; cut short again, it is returned as is (the annotator's cut-answer rule);
- the empty-reply rule: an empty reply is asked again once; empty twice, it is the model's answer;
- a prompt the server finds too long: a ``context_length`` error, for the annotator to shrink it;
- capability learning: a refusal naming an unsupported parameter switches it off
  (`Capabilities.learn`) and the request goes again without it, not counted as an attempt;
- failover: a `ServerPool` routes each task to one server; connection errors and timeouts make it
  probe the server (`longicl.engines.probe.healthy`) and take a dead one out, the task moves;
- the key: ``engine.api_key``, else ``$OPENAI_API_KEY`` (`longicl.credentials.resolve_api_key`),
  for the requests and the probes alike; start-up probes through `longicl.engines.probe`;
- the record of each attempt (``Completion.notes``, ``attempts``, ``error``), the same whatever
  the transport, so that the record layer decides from the same facts.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from omegaconf import OmegaConf

from longicl.credentials import resolve_api_key
from longicl.engines import capabilities as caps_table
from longicl.engines.base import CONTEXT_LENGTH_ERROR, ChatRequest, Completion, Engine
from longicl.engines.capabilities import Capabilities, is_context_overflow
from longicl.engines.policy_settings import PolicySettings
from longicl.engines.probe import HTTP_STATUS, MALFORMED, UNREACHABLE, healthy, probe_async
from longicl.engines.servers import Server, ServerPool
from longicl.engines.shaping import (
    request_parts,
    retry_after_seconds,
    setting,
    status_message,
    validate_base_url,
    validate_base_urls,
)
from longicl.errors import ServerUnreachable, UsageError
from longicl.paths import CONF_DIR

__all__ = [
    "Outcome",
    "PolicyEngine",
    "PolicySettings",
    "Prepared",
    "Transport",
    "request_parts",
    "retry_after_seconds",
    "setting",
    "status_message",
    "validate_base_url",
    "validate_base_urls",
]

SERVING_HELP = "see README.md, section 'Serving the model'"

# What one send gave (``Outcome.kind``).
ANSWER = "answer"  # a chat completion (maybe empty, maybe cut short)
STATUS = "status"  # an HTTP error status (``status``, ``message``, ``retry_after``)
TIMEOUT = "timeout"  # no answer within engine.timeout
CONNECTION = "connection"  # refused, reset, dropped
MALFORMED_REPLY = "malformed"  # a 200 whose body is not a chat completion
LOST = "lost"  # the transport lost the request (a Ray row that never came back)


@dataclass
class Outcome:
    """One send of one prepared request, as a transport reports it (facts, no decision)."""

    kind: str
    completion: Completion | None = None
    status: int | None = None
    message: str = ""
    retry_after: float | None = None


@dataclass
class Prepared:
    """One request as it goes out: the OpenAI-schema arguments and the extra body fields, already
    shaped for the server's capabilities."""

    request: ChatRequest
    target: str  # the server's base URL, or the transport's own target name (vLLM replicas)
    kwargs: dict[str, Any]
    extra_body: dict[str, Any]
    max_tokens: int

    def body(self) -> dict[str, Any]:
        """The JSON body the OpenAI client sends for these arguments (same keys, same values)."""
        return {**self.kwargs, **self.extra_body}


class Transport:
    """Sends one prepared request and returns one `Outcome`; never raises for a failed request."""

    @abstractmethod
    async def send(self, prepared: Prepared) -> Outcome: ...

    async def aclose(self) -> None:
        """Release what the transport holds."""


@dataclass
class _Attempts:
    """One request's progress through the policy."""

    max_tokens: int
    started: float = field(default_factory=time.monotonic)
    notes: list[str] = field(default_factory=list)
    attempt: int = 0
    length_retried: bool = False
    empty_replies: int = 0
    last_error: str = "no attempt made"
    target: str = ""


class PolicyEngine(Engine):
    """An engine whose requests follow the one policy; a subclass supplies its `Transport`.

    ``servers`` is False for a transport without HTTP servers (Ray's vLLM replicas): then there is
    no pool, no probe and no capability record, and the target is the transport's name."""

    #: policy settings the engine sets itself (``engine=local``: the server it starts, its model)
    set_by_engine: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Self:
        """The engine of an ``engine.*`` section: the policy's keys make its `PolicySettings`, the
        rest are the transport's (a key the constructor does not take is a TypeError, one
        `UsageError` line through `longicl.engines.build_engine`)."""
        policy, transport = PolicySettings.from_section(settings, cls.name, set_by_engine=cls.set_by_engine)
        return cls(policy, **transport)

    @classmethod
    def from_config(cls, **overrides: Any) -> Self:
        """An engine with the settings of ``conf/engine/<name>.yaml``, ``overrides`` replacing some
        (merged key by key): for library use and tests."""
        merged = OmegaConf.merge(OmegaConf.load(CONF_DIR / "engine" / f"{cls.name}.yaml"), overrides)
        settings = OmegaConf.to_container(merged)
        assert isinstance(settings, dict)
        settings.pop("name", None)
        return cls.from_settings(settings)

    def _init_policy(self, policy: PolicySettings, *, servers: bool = True, slots: int | None = None) -> None:
        """``policy``: the settings of ``conf/engine/<name>.yaml`` (the only home of their defaults).
        ``slots``: what ``failures_per_slot`` counts (concurrency, or Ray's HTTP actors)."""
        self.policy = policy
        self.model = policy.model
        self.api_key = resolve_api_key(policy.api_key)  # engine.api_key, else $OPENAI_API_KEY, else EMPTY
        self.concurrency = policy.concurrency
        self.timeout = policy.timeout
        self.connect_timeout = policy.connect_timeout
        in_row = policy.failures_in_row(slots if slots is not None else self.concurrency)
        self.base_urls: list[str] = []
        self.pool: ServerPool | None = None
        if servers:
            if policy.base_url is None:
                raise UsageError(f"engine.base_url is not set: engine={self.name} sends to servers")
            self.base_urls = validate_base_urls(policy.base_url)
            self.pool = ServerPool(
                self.base_urls, concurrency=self.concurrency, max_failures_in_row=in_row, probe=self._healthy
            )
        self._jitter = random.Random()
        self.server_info: dict[str, Any] = {}
        self.capabilities: dict[str, Capabilities] = {}

    @property
    @abstractmethod
    def transport(self) -> Transport: ...

    #: the target of requests when there are no servers
    target_name = "local"

    # -- servers ---------------------------------------------------------------------------------
    async def check_servers(self) -> None:
        """Probe every server (`longicl.engines.probe`); one that does not answer is taken out, and
        it is an error if none does."""
        if self.pool is None:
            return
        unreachable: dict[Server, ServerUnreachable] = {}
        for server in self.pool.servers:
            try:
                await self._check_server(server.url)
            except ServerUnreachable as exc:
                unreachable[server] = exc
        if len(unreachable) == len(self.pool.servers):
            errors = list(unreachable.values())
            if len(errors) == 1:
                raise errors[0]
            raise ServerUnreachable("no server answers: " + "; ".join(str(e) for e in errors))
        for server, exc in unreachable.items():
            self.pool.take_out(server, f"did not answer at start: {exc}")

    async def _healthy(self, url: str) -> bool:
        """The health check of a server that just failed a request (`longicl.engines.probe.healthy`)."""
        return await healthy(
            url,
            api_key=self.api_key,
            timeout=self.connect_timeout,
            tries=self.policy.health_checks,
            backoff_initial=self.policy.backoff_initial,
            backoff_max=self.policy.backoff_max,
        )

    async def _check_server(self, url: str) -> None:
        found = await probe_async(url, timeout=self.connect_timeout, api_key=self.api_key)
        if found.failure == UNREACHABLE:
            raise ServerUnreachable(
                f"no OpenAI-compatible server answers at {url} ({found.error}); {SERVING_HELP}"
            )
        if found.failure == HTTP_STATUS:
            raise ServerUnreachable(
                f"{url}/models answered HTTP {found.status_code}; is this an OpenAI-compatible server? {SERVING_HELP}"
            )
        if found.failure == MALFORMED:
            raise ServerUnreachable(
                f"{url}/models did not answer a model list; is this an OpenAI-compatible server? {SERVING_HELP}"
            )
        models = list(found.models)
        if not models:
            raise ServerUnreachable(f"the server at {url} lists no models; {SERVING_HELP}")
        if self.model in (None, "", "auto"):
            self.model = models[0]
        elif self.model not in models:
            raise UsageError(
                f"engine.model={self.model!r} is not served at {url}; it serves: {', '.join(models)}"
            )
        self.server_info[url] = {"models": models, "max_model_len": found.max_model_len}
        self.capabilities[url] = caps_table.from_probe(found, self.model)

    def capability(self, url: str) -> Capabilities:
        """The capability record of the server at ``url`` (vLLM-like until probed)."""
        if url not in self.capabilities:
            self.capabilities[url] = caps_table.from_models({}, None)
        return self.capabilities[url]

    def _degrade(self, url: str, note: str, notes: list[str]) -> None:
        notes.append(f"{url}: {note}")
        if note == caps_table.DEGRADED["cached_tokens"]:  # changes no answer: a fact, not a fault
            line = f"note: {url} does not report cached_tokens, so prefix-cache hits go unmeasured (answers are unaffected)"
        else:
            line = f"warning: {url}: {note}"
        print(line, file=sys.stderr, flush=True)

    def pick_server(self, request: ChatRequest) -> Server | None:
        """The server of the request's task: all requests sharing a task's prefixes go to one server."""
        return self.pool.route(request.task.name) if self.pool is not None else None

    def describe_policy(self) -> dict[str, Any]:
        """The policy's part of run.json."""
        described: dict[str, Any] = {
            "model": self.model,
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            "max_retries": self.policy.max_retries,
        }
        if self.pool is not None:
            described.update(
                {
                    "base_url": self.base_urls if len(self.base_urls) > 1 else self.base_urls[0],
                    "servers": self.server_info,
                    "capabilities": {url: c.describe() for url, c in self.capabilities.items()},
                    "notes": [f"{url}: {n}" for url, c in self.capabilities.items() for n in c.notes],
                    "pool": self.pool.describe(),
                }
            )
        return described

    # -- requests ------------------------------------------------------------------------------
    def prepare_request(self, request: ChatRequest, target: str, max_tokens: int) -> Prepared:
        kwargs, extra_body = request_parts(request, self.model, max_tokens)
        if self.pool is not None:
            self.capability(target).shape(kwargs, extra_body)
        return Prepared(request, target, kwargs, extra_body, max_tokens)

    async def complete(self, request: ChatRequest) -> Completion:
        """One answer, after as many retries as it takes; raises only `NoServerLeft`."""
        state = _Attempts(request.max_tokens)
        while state.attempt <= self.policy.max_retries:
            state.attempt += 1
            server = self.pick_server(request)
            state.target = server.url if server is not None else self.target_name
            prepared = self.prepare_request(request, state.target, state.max_tokens)
            if server is not None:
                async with server.slots:
                    outcome = await self.transport.send(prepared)
            else:
                outcome = await self.transport.send(prepared)
            decided = self._decide(request, outcome, server, state)
            if isinstance(decided, Completion):
                return decided
            if decided == "again":  # not a fault: sent again at once, not counted
                state.attempt -= 1
                continue
            state.notes.append(f"attempt {state.attempt}: {state.last_error} ({state.target})")
            # A row lost inside Ray is the transport's fault, not the server's: it does not count.
            if outcome.kind in (TIMEOUT, CONNECTION) and server is not None and self.pool is not None:
                await self.pool.unreachable(server, state.last_error)
                if not server.up:  # not this request's fault: go to the task's new server now
                    state.attempt -= 1
                    continue
            if state.attempt <= self.policy.max_retries:
                delay = outcome.retry_after if outcome.kind == STATUS and outcome.status == 429 else None
                await asyncio.sleep(self._backoff(state.attempt, delay))
        return self._failed(state, state.last_error)

    def _decide(
        self, request: ChatRequest, outcome: Outcome, server: Server | None, state: _Attempts
    ) -> Completion | str:
        """The policy's verdict on one outcome: a final `Completion`, ``"again"`` (send again now,
        uncounted) or ``"retry"`` (a fault: back off and retry)."""
        if server is not None and outcome.kind in (ANSWER, STATUS, MALFORMED_REPLY) and self.pool is not None:
            self.pool.answered(server)  # an HTTP answer, whatever its status: the server is alive
        if outcome.kind == ANSWER and outcome.completion is not None:
            return self._answer(request, outcome.completion, state)
        if outcome.kind == STATUS:
            message = outcome.message
            if outcome.status == 429:
                state.last_error = f"HTTP 429: {message}"
                return "retry"
            if server is not None:
                learnt = self.capability(state.target).learn(message)
                if learnt is not None:  # an unsupported parameter: send again without it, not a fault
                    if learnt:  # "" when a concurrent request already learnt it
                        self._degrade(state.target, learnt, state.notes)
                    return "again"
            if is_context_overflow(message):
                return self._failed(state, f"{CONTEXT_LENGTH_ERROR}: {message}")
            state.last_error = f"HTTP {outcome.status}: {message}"
            status = outcome.status or 0
            if status < 500 and status not in (408, 409):
                return self._failed(state, state.last_error)
            return "retry"
        state.last_error = {
            TIMEOUT: f"timeout after {self.timeout:g}s",
            CONNECTION: f"connection error: {outcome.message}",
            LOST: f"no answer: {outcome.message}",
        }.get(outcome.kind, f"malformed response: {outcome.message}")
        return "retry"

    def _answer(self, request: ChatRequest, completion: Completion, state: _Attempts) -> Completion | str:
        if self.pool is not None:
            caps = self.capability(state.target)
            completion.text = caps.unwrap(completion.text, "structured_outputs" in request.extra_body)
            usage_note = caps.saw_usage(completion.usage)
            if usage_note:
                self._degrade(state.target, usage_note, state.notes)
        if completion.finish_reason == "length":
            if not state.length_retried:
                state.length_retried = True
                state.max_tokens = int(state.max_tokens * self.policy.length_retry_factor)
                state.notes.append(f"finish_reason=length; retried with max_tokens={state.max_tokens}")
                return "again"  # a longer answer is not a fault of the server
            # Cut short twice: the annotator treats the answer as unreadable (a parse failure),
            # or, for unfinished thinking, may ask for the answer.
            state.notes.append(f"finish_reason=length again at max_tokens={state.max_tokens}")
            return self._answered(completion, state)
        if (completion.text or "").strip() or completion.reasoning:
            return self._answered(completion, state)
        state.empty_replies += 1
        if state.empty_replies > 1:  # the model's answer, not a fault: a parse failure of this sample
            state.notes.append("empty reply twice: returned as an empty answer")
            return self._answered(completion, state)
        state.last_error = "empty answer"
        return "retry"

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # The server said how long to wait: honour it (bounded against a nonsense header),
            # plus a little jitter so that clients told the same thing do not return together.
            return min(retry_after, self.policy.retry_after_max) + self._jitter.uniform(0, 0.25)
        base = min(self.policy.backoff_max, self.policy.backoff_initial * 2 ** (attempt - 1))
        return self._jitter.uniform(base / 2, base)  # "equal jitter"

    @staticmethod
    def _answered(completion: Completion, state: _Attempts) -> Completion:
        completion.latency_s = time.monotonic() - state.started
        completion.attempts = state.attempt
        completion.server = state.target
        completion.notes = state.notes + completion.notes
        return completion

    @staticmethod
    def _failed(state: _Attempts, error: str) -> Completion:
        return Completion(
            text=None,
            error=error,
            latency_s=time.monotonic() - state.started,
            attempts=state.attempt,
            server=state.target,
            notes=state.notes,
        )

    async def aclose(self) -> None:
        await self.transport.aclose()

"""``openai``: any OpenAI-compatible chat-completions server (vLLM, FlagScale, SGLang, llama.cpp).

Uses the official async ``openai`` client with its own retries switched off: retries here back
off exponentially with jitter, honour ``Retry-After`` on 429, and cover 5xx, timeouts, dropped
connections, malformed bodies and empty answers. ``finish_reason == "length"`` is retried once
with more ``max_tokens``; cut short again, it is returned as is (``finish_reason`` still
``"length"``) and the annotator counts the answer as unreadable (a parse failure). A
prompt the server rejects as too long comes back as a ``context_length`` error, for the annotator
to shrink the prompt and try again.

``engine.base_url`` may list several servers: a `ServerPool` (``longicl.engines.servers``) sends
each task's requests to one server, takes out servers that stop answering, and moves their tasks.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any
from urllib.parse import urlparse

import httpx
import openai
from omegaconf import OmegaConf
from openai import AsyncOpenAI

from longicl.credentials import resolve_api_key
from longicl.engines import capabilities as caps_table
from longicl.engines.base import CONTEXT_LENGTH_ERROR, ChatRequest, Completion, Engine
from longicl.engines.capabilities import Capabilities, is_context_overflow
from longicl.engines.probe import HTTP_STATUS, MALFORMED, UNREACHABLE, healthy, probe_async
from longicl.engines.servers import Server, ServerPool
from longicl.errors import ServerUnreachable, UsageError, one_line
from longicl.paths import CONF_DIR
from longicl.reasoning import reasoning_field
from longicl.tokens import ServerTokenizer

SERVING_HELP = "see README.md, section 'Serving the model'"


def validate_base_url(url: object) -> str:
    text = str(url).strip() if url is not None else ""
    try:
        parsed = urlparse(text)
        ok = parsed.scheme in ("http", "https") and bool(parsed.netloc) and parsed.port != 0
    except ValueError:  # e.g. a port that is not a number
        ok = False
    if not ok:
        raise UsageError(f"engine.base_url={text!r} is not an http(s) URL such as http://127.0.0.1:2026/v1")
    return text.rstrip("/")


def validate_base_urls(value: object) -> list[str]:
    """One URL or a list of them; each must be an http(s) URL, none twice."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items:
        raise UsageError("engine.base_url is empty: give a URL or a list of URLs")
    urls = [validate_base_url(item) for item in items]
    for url in urls:
        if urls.count(url) > 1:
            raise UsageError(f"engine.base_url lists {url} twice")
    return urls


def _setting(value: object, name: str, *, minimum: float, integer: bool = False, strict: bool = False):
    """A numeric engine setting, or a `UsageError` naming it."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or value is None:
        raise UsageError(f"engine.{name}={value!r} is not {kind}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"engine.{name}={value!r} is not {kind}") from None
    if number != number or number in (float("inf"), float("-inf")) or (integer and number != int(number)):
        raise UsageError(f"engine.{name}={value!r} is not {kind}")
    if number < minimum or (strict and number == minimum):
        bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
        raise UsageError(f"engine.{name}={value} must be {bound}")
    return int(number) if integer else number


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(
        self,
        *,
        base_url: str | list[str],
        model: str,
        api_key: str,
        concurrency: int,
        timeout: float,
        max_retries: int,
        backoff_initial: float,
        backoff_max: float,
        retry_after_max: float,
        length_retry_factor: float,
        connect_timeout: float,
        max_failures_in_row: int | None,
        health_checks: int,
        **_: Any,
    ) -> None:
        """Every setting is required: their defaults live in ``conf/engine/openai.yaml`` only
        (`from_config` reads them from there for library use and tests)."""
        self.base_urls = validate_base_urls(base_url)
        self.model = model
        self.api_key = resolve_api_key(api_key)  # engine.api_key, else $OPENAI_API_KEY, else EMPTY
        self.concurrency = _setting(concurrency, "concurrency", minimum=1, integer=True)
        self.timeout = _setting(timeout, "timeout", minimum=0, strict=True)
        self.connect_timeout = _setting(connect_timeout, "connect_timeout", minimum=0, strict=True)
        self.max_retries = _setting(max_retries, "max_retries", minimum=0, integer=True)
        self.backoff_initial = _setting(backoff_initial, "backoff_initial", minimum=0)
        self.backoff_max = _setting(backoff_max, "backoff_max", minimum=0)
        self.retry_after_max = _setting(retry_after_max, "retry_after_max", minimum=0)
        self.length_retry_factor = _setting(
            length_retry_factor, "length_retry_factor", minimum=1, strict=True
        )
        self.health_checks = _setting(health_checks, "health_checks", minimum=1, integer=True)
        self.pool = ServerPool(
            self.base_urls,
            concurrency=self.concurrency,
            max_failures_in_row=max(8, 2 * self.concurrency)
            if max_failures_in_row is None
            else _setting(max_failures_in_row, "max_failures_in_row", minimum=1, integer=True),
            probe=self._healthy,
        )
        self._clients: dict[str, AsyncOpenAI] = {}
        self._jitter = random.Random()
        self.server_info: dict[str, Any] = {}
        self.capabilities: dict[str, Capabilities] = {}

    @classmethod
    def from_config(cls, **overrides: Any) -> OpenAIEngine:
        """An engine with the settings of ``conf/engine/openai.yaml``, ``overrides`` replacing some."""
        settings = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "engine" / f"{cls.name}.yaml"))
        assert isinstance(settings, dict)
        settings.pop("name", None)
        return cls(**{**settings, **overrides})

    # -- setup ---------------------------------------------------------------------------------
    def client(self, base_url: str) -> AsyncOpenAI:
        if base_url not in self._clients:
            self._clients[base_url] = AsyncOpenAI(
                base_url=base_url,
                api_key=self.api_key,
                max_retries=0,
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                http_client=openai.DefaultAsyncHttpxClient(
                    limits=httpx.Limits(max_connections=max(self.concurrency * 2, 16)),
                ),
            )
        return self._clients[base_url]

    async def start(self) -> None:
        """Check every server; one that does not answer is taken out, and it is an error if none does."""
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
            tries=self.health_checks,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
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

    def served_tokenizer(self) -> ServerTokenizer:
        """Counts through the first server's tokenize route (``model.tokenizer=server``)."""
        return ServerTokenizer(self.base_urls[0], self.model, self.api_key)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base_url": self.base_urls if len(self.base_urls) > 1 else self.base_urls[0],
            "model": self.model,
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "servers": self.server_info,
            "capabilities": {url: c.describe() for url, c in self.capabilities.items()},
            "notes": [f"{url}: {n}" for url, c in self.capabilities.items() for n in c.notes],
            "pool": self.pool.describe(),
        }

    def pick_server(self, request: ChatRequest) -> Server:
        """The server of the request's task: all requests sharing a task's prefixes go to one server."""
        return self.pool.route(request.task.name)

    # -- requests ------------------------------------------------------------------------------
    async def complete(self, request: ChatRequest) -> Completion:
        """One answer, after as many retries as it takes; raises only `NoServerLeft`."""
        max_tokens = request.max_tokens
        notes: list[str] = []
        length_retried = False
        started = time.monotonic()
        last_error = "no attempt made"
        attempt = 0
        url = ""
        empty_replies = 0
        while attempt <= self.max_retries:
            attempt += 1
            server = self.pick_server(request)
            url = server.url
            delay: float | None = None
            unreachable = False
            try:
                async with server.slots:
                    response = await self._call(url, request, max_tokens)
                self.pool.answered(server)
                completion = _to_completion(response)
                completion.text = self.capability(url).unwrap(
                    completion.text, "structured_outputs" in request.extra_body
                )
                usage_note = self.capability(url).saw_usage(completion.usage)
                if usage_note:
                    self._degrade(url, usage_note, notes)
            except openai.RateLimitError as exc:
                self.pool.answered(server)
                last_error = f"HTTP 429: {one_line(exc, 300)}"
                delay = _retry_after(exc.response)
            except openai.APIStatusError as exc:
                self.pool.answered(server)
                message = one_line(exc, 300)
                learnt = self.capability(url).learn(message)
                if learnt is not None:  # an unsupported parameter: send again without it, not a fault
                    if learnt:  # "" when a concurrent request already learnt it
                        self._degrade(url, learnt, notes)
                    attempt -= 1
                    continue
                if is_context_overflow(message):
                    return self._failed(f"{CONTEXT_LENGTH_ERROR}: {message}", started, attempt, url, notes)
                last_error = f"HTTP {exc.status_code}: {message}"
                if exc.status_code < 500 and exc.status_code not in (408, 409):
                    return self._failed(last_error, started, attempt, url, notes)
            except openai.APITimeoutError:
                last_error, unreachable = f"timeout after {self.timeout:g}s", True
            except openai.APIConnectionError as exc:
                last_error, unreachable = f"connection error: {one_line(exc.__cause__ or exc, 300)}", True
            except (
                openai.APIResponseValidationError,
                json.JSONDecodeError,
                ValueError,
                KeyError,
                TypeError,
            ) as exc:
                last_error = f"malformed response: {type(exc).__name__}: {one_line(exc, 300)}"
            else:
                if completion.finish_reason == "length":
                    if not length_retried:
                        length_retried = True
                        max_tokens = int(max_tokens * self.length_retry_factor)
                        notes.append(f"finish_reason=length; retried with max_tokens={max_tokens}")
                        attempt -= 1  # a longer answer is not a fault of the server
                        continue
                    # Cut short twice: the annotator treats the answer as unreadable (a parse
                    # failure), or, for unfinished thinking, may ask for the answer.
                    notes.append(f"finish_reason=length again at max_tokens={max_tokens}")
                    return self._answered(completion, started, attempt, url, notes)
                if (completion.text or "").strip() or completion.reasoning:
                    return self._answered(completion, started, attempt, url, notes)
                empty_replies += 1
                if empty_replies > 1:  # the model's answer, not a fault: a parse failure of this sample
                    notes.append("empty reply twice: returned as an empty answer")
                    return self._answered(completion, started, attempt, url, notes)
                last_error = "empty answer"
            notes.append(f"attempt {attempt}: {last_error} ({url})")
            if unreachable:
                await self.pool.unreachable(server, last_error)
                if not server.up:  # not this request's fault: go to the task's new server now
                    attempt -= 1
                    continue
            if attempt <= self.max_retries:
                await asyncio.sleep(self._backoff(attempt, delay))
        return self._failed(last_error, started, attempt, url, notes)

    async def _call(self, url: str, request: ChatRequest, max_tokens: int):
        kwargs, extra_body = request_parts(request, self.model, max_tokens)
        self.capability(url).shape(kwargs, extra_body)
        return await self.client(url).chat.completions.create(extra_body=extra_body or None, **kwargs)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # The server said how long to wait: honour it (bounded against a nonsense header),
            # plus a little jitter so that clients told the same thing do not return together.
            return min(retry_after, self.retry_after_max) + self._jitter.uniform(0, 0.25)
        base = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return self._jitter.uniform(base / 2, base)  # "equal jitter"

    @staticmethod
    def _answered(
        completion: Completion, started: float, attempts: int, url: str, notes: list[str]
    ) -> Completion:
        completion.latency_s = time.monotonic() - started
        completion.attempts = attempts
        completion.server = url
        completion.notes = notes + completion.notes
        return completion

    def _failed(self, error: str, started: float, attempts: int, url: str, notes: list[str]) -> Completion:
        return Completion(
            text=None,
            error=error,
            latency_s=time.monotonic() - started,
            attempts=attempts,
            server=url,
            notes=notes,
        )


#: sampling fields outside OpenAI's schema: they travel in the body for vLLM
VLLM_SAMPLING_KEYS = ("top_k", "min_p", "repetition_penalty")


def request_parts(request: ChatRequest, model: str, max_tokens: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chat-completions call for ``request``: the OpenAI-schema arguments and the extra body
    fields (vLLM's sampling keys, chat_template_kwargs, constraints), as every engine sends them."""
    sampling = dict(request.sampling)
    extra_body = dict(request.extra_body)
    for key in VLLM_SAMPLING_KEYS:
        if key in sampling:
            extra_body[key] = sampling.pop(key)
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": request.messages,
        "max_tokens": max_tokens,
        **{k: v for k, v in sampling.items() if v is not None},
    }
    if request.logprobs:
        kwargs["logprobs"] = True
        kwargs["top_logprobs"] = request.logprobs
    return kwargs, extra_body


def _to_completion(response: Any) -> Completion:
    if isinstance(response, str | bytes) or not getattr(response, "choices", None):
        raise ValueError("no choices in the response")
    choice = response.choices[0]
    message = choice.message
    reasoning = reasoning_field(message)
    usage = response.usage.model_dump(exclude_none=True) if getattr(response, "usage", None) else None
    logprobs = None
    if getattr(choice, "logprobs", None) and choice.logprobs.content:
        logprobs = [
            {
                "token": item.token,
                "logprob": item.logprob,
                "top": {top.token: top.logprob for top in (item.top_logprobs or [])},
            }
            for item in choice.logprobs.content
        ]
    return Completion(
        text=message.content,
        finish_reason=choice.finish_reason,
        reasoning=reasoning,
        usage=usage,
        logprobs=logprobs,
    )


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None

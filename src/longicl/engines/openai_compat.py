"""``openai``: any OpenAI-compatible chat-completions server (vLLM, FlagScale, SGLang, llama.cpp).

Uses the official async ``openai`` client with its own retries switched off: retries here back
off exponentially with jitter, honour ``Retry-After`` on 429, and cover 5xx, timeouts, dropped
connections, malformed bodies and empty answers. A prompt the server rejects as too long comes
back as a ``context_length`` error, for the annotator to shrink the prompt and try again.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import zlib
from typing import Any
from urllib.parse import urlparse

import httpx
import openai
from openai import AsyncOpenAI

from longicl.engines.base import ChatRequest, Completion, Engine
from longicl.errors import ServerUnreachable, UsageError

SERVING_HELP = "see README.md, section 'Serving the model'"
_CONTEXT_LENGTH = re.compile(
    r"maximum context length|context length|too long|max_model_len|prompt is too long", re.I
)
CONTEXT_LENGTH_ERROR = "context_length"


def validate_base_url(url: object) -> str:
    text = str(url).strip() if url is not None else ""
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"engine.base_url={text!r} is not an http(s) URL such as http://127.0.0.1:2026/v1")
    return text.rstrip("/")


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(
        self,
        base_url: str | list[str],
        model: str = "auto",
        api_key: str = "EMPTY",
        concurrency: int = 8,
        timeout: float = 600.0,
        max_retries: int = 6,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        length_retry_factor: float = 2.0,
        connect_timeout: float = 10.0,
        **_: Any,
    ) -> None:
        urls = base_url if isinstance(base_url, list | tuple) else [base_url]
        if not urls:
            raise UsageError("engine.base_url is empty")
        self.base_urls = [validate_base_url(u) for u in urls]
        self.model = model
        self.api_key = api_key or "EMPTY"
        self.concurrency = int(concurrency)
        if self.concurrency < 1:
            raise UsageError(f"engine.concurrency={concurrency} must be at least 1")
        self.timeout = float(timeout)
        if self.timeout <= 0:
            raise UsageError(f"engine.timeout={timeout} must be positive")
        self.max_retries = int(max_retries)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.length_retry_factor = float(length_retry_factor)
        self.connect_timeout = float(connect_timeout)
        self._clients: dict[str, AsyncOpenAI] = {}
        self._jitter = random.Random()
        self.server_info: dict[str, Any] = {}

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
        for url in self.base_urls:
            await self._check_server(url)

    async def _check_server(self, url: str) -> None:
        try:
            listing = await self.client(url).models.list(timeout=self.connect_timeout)
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise ServerUnreachable(
                f"no OpenAI-compatible server answers at {url} ({type(exc).__name__}); {SERVING_HELP}"
            ) from None
        except openai.APIStatusError as exc:
            raise ServerUnreachable(
                f"{url}/models answered HTTP {exc.status_code}; is this an OpenAI-compatible server? {SERVING_HELP}"
            ) from None
        models = [m.id for m in listing.data]
        if not models:
            raise ServerUnreachable(f"the server at {url} lists no models; {SERVING_HELP}")
        if self.model in (None, "", "auto"):
            self.model = models[0]
        elif self.model not in models:
            raise UsageError(
                f"engine.model={self.model!r} is not served at {url}; it serves: {', '.join(models)}"
            )
        extra = listing.data[0].model_extra or {}
        self.server_info[url] = {"models": models, "max_model_len": extra.get("max_model_len")}

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
        }

    def pick_server(self, request: ChatRequest) -> str:
        """Requests with the same affinity key (same static prefix) go to the same server."""
        if len(self.base_urls) == 1:
            return self.base_urls[0]
        return self.base_urls[_stable_hash(request.affinity) % len(self.base_urls)]

    # -- requests ------------------------------------------------------------------------------
    async def complete(self, request: ChatRequest) -> Completion:
        url = self.pick_server(request)
        max_tokens = request.max_tokens
        notes: list[str] = []
        length_retried = False
        started = time.monotonic()
        last_error = "no attempt made"
        attempt = 0
        while attempt <= self.max_retries:
            attempt += 1
            delay: float | None = None
            try:
                response = await self._call(url, request, max_tokens)
                completion = _to_completion(response)
            except openai.RateLimitError as exc:
                last_error = f"HTTP 429: {_short(exc)}"
                delay = _retry_after(exc.response)
            except openai.BadRequestError as exc:
                message = _short(exc)
                if _CONTEXT_LENGTH.search(message):
                    return self._failed(f"{CONTEXT_LENGTH_ERROR}: {message}", started, attempt, url, notes)
                return self._failed(f"HTTP 400: {message}", started, attempt, url, notes)
            except openai.APIStatusError as exc:
                last_error = f"HTTP {exc.status_code}: {_short(exc)}"
                if exc.status_code < 500 and exc.status_code not in (408, 409):
                    return self._failed(last_error, started, attempt, url, notes)
            except openai.APITimeoutError:
                last_error = f"timeout after {self.timeout:g}s"
            except openai.APIConnectionError as exc:
                last_error = f"connection error: {_short(exc)}"
            except (
                openai.APIResponseValidationError,
                json.JSONDecodeError,
                ValueError,
                KeyError,
                TypeError,
            ) as exc:
                last_error = f"malformed response: {type(exc).__name__}: {_short(exc)}"
            else:
                if completion.finish_reason == "length" and not length_retried:
                    length_retried = True
                    max_tokens = int(max_tokens * self.length_retry_factor)
                    notes.append(f"finish_reason=length; retried with max_tokens={max_tokens}")
                    attempt -= 1  # a longer answer is not a fault of the server
                    continue
                if not (completion.text or "").strip() and not completion.reasoning:
                    last_error = "empty answer"
                else:
                    completion.latency_s = time.monotonic() - started
                    completion.attempts = attempt
                    completion.server = url
                    completion.notes = notes + completion.notes
                    return completion
            notes.append(f"attempt {attempt}: {last_error}")
            if attempt <= self.max_retries:
                await asyncio.sleep(self._backoff(attempt, delay))
        return self._failed(last_error, started, attempt, url, notes)

    async def _call(self, url: str, request: ChatRequest, max_tokens: int):
        sampling = dict(request.sampling)
        extra_body = dict(request.extra_body)
        # Fields outside OpenAI's schema (top_k, min_p, …) travel in the body for vLLM.
        for key in ("top_k", "min_p", "repetition_penalty"):
            if key in sampling:
                extra_body[key] = sampling.pop(key)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": max_tokens,
            **{k: v for k, v in sampling.items() if v is not None},
        }
        if request.logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = request.logprobs
        return await self.client(url).chat.completions.create(extra_body=extra_body or None, **kwargs)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_max) + self._jitter.uniform(0, 0.25)
        base = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return self._jitter.uniform(base / 2, base)  # "equal jitter"

    def _failed(self, error: str, started: float, attempts: int, url: str, notes: list[str]) -> Completion:
        return Completion(
            text=None,
            error=error,
            latency_s=time.monotonic() - started,
            attempts=attempts,
            server=url,
            notes=notes,
        )


def _to_completion(response: Any) -> Completion:
    if isinstance(response, str | bytes) or not getattr(response, "choices", None):
        raise ValueError("no choices in the response")
    choice = response.choices[0]
    message = choice.message
    extra = getattr(message, "model_extra", None) or {}
    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
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


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _stable_hash(key: str) -> int:
    return zlib.crc32(key.encode())

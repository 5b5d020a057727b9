"""Start, stop and inspect the local Qwen3-4B server described by ``llm_config.yaml``.

    python -m longicl.serve command [--profile native32k]   # print the exact `vllm serve ...` line
    python -m longicl.serve start   [--timeout 900]         # FlagScale if installed, else vLLM
    python -m longicl.serve status                          # recorded process alive? URL answers?
    python -m longicl.serve stop                            # end the server this tool started

Reads top to bottom: `spec` (``llm_config.yaml`` → `ServeSpec`), `command` (``vllm serve`` flags,
FlagScale config), `preflight` (port, GPU, model), `process` (handle, marker, state file),
`lifecycle` (start, wait, stop, status), `autostart` (``main.py serve.autostart=true``), `cli`.
Whether a server answers is asked through the one probe, `longicl.engines.probe`.

Library use (``main.py serve.autostart=true``): ``ensure_server(cfg)`` starts a server when none
answers at ``engine.base_url`` and returns a handle to ``stop()`` afterwards, or ``None``.
"""

from __future__ import annotations

from longicl.engines.probe import Probe, probe
from longicl.errors import ExitCode
from longicl.serve.autostart import ensure_server
from longicl.serve.cli import build_parser, main
from longicl.serve.command import (
    FLAGSCALE_MODEL_NAME,
    engine_flags,
    shell_command,
    vllm_argv,
    write_flagscale_config,
)
from longicl.serve.lifecycle import DEFAULT_TIMEOUT, resolve_launcher, start_server, status_lines, stop_server
from longicl.serve.preflight import check_model, detect_gpu
from longicl.serve.process import (
    DEFAULT_GRACE,
    DEFAULT_OUT_DIR,
    LOG_FILE,
    MARKER_ENV,
    PID_FILE,
    STATE_FILE,
    ServerHandle,
    handle_from_state,
    marked_pids,
    read_state,
)
from longicl.serve.spec import DEFAULT_CONFIG, DEFAULT_PROFILE, ServeError, ServeSpec, load_spec

EXIT_FAILED = ExitCode.FAILED
EXIT_NOT_ANSWERING = ExitCode.NOT_ANSWERING

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_GRACE",
    "DEFAULT_OUT_DIR",
    "DEFAULT_PROFILE",
    "DEFAULT_TIMEOUT",
    "EXIT_FAILED",
    "EXIT_NOT_ANSWERING",
    "FLAGSCALE_MODEL_NAME",
    "LOG_FILE",
    "MARKER_ENV",
    "PID_FILE",
    "STATE_FILE",
    "Probe",
    "ServeError",
    "ServeSpec",
    "ServerHandle",
    "build_parser",
    "check_model",
    "detect_gpu",
    "engine_flags",
    "ensure_server",
    "handle_from_state",
    "load_spec",
    "main",
    "marked_pids",
    "probe",
    "read_state",
    "resolve_launcher",
    "shell_command",
    "start_server",
    "status_lines",
    "stop_server",
    "vllm_argv",
    "write_flagscale_config",
]

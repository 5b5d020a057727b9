"""Start, stop and inspect the local Qwen3-4B server described by ``llm_config.yaml``.

    python -m longicl.serve command [--profile native32k]   # print the exact `vllm serve ...` line
    python -m longicl.serve start   [--timeout 900]         # FlagScale if installed, else vLLM
    python -m longicl.serve status                          # recorded process alive? URL answers?
    python -m longicl.serve stop                            # end the server this tool started

``llm_config.yaml`` is a FlagScale serve config (hydra): ``serve[0].engine_args`` become ``vllm serve``
flags the way FlagScale builds them (underscores to dashes, ``true`` to a bare flag); an extra
top-level ``profiles:`` mapping is merged over those arguments (``null`` removes a key).

``start`` launches the server in its own process group with a random marker in its environment,
and records pid, marker and log under ``--out-dir``. ``stop`` signals only processes that carry
that marker (SIGTERM, then SIGKILL after a grace period): never anything this tool did not start.

Library use (``main.py serve.autostart=true``): ``ensure_server(cfg)`` starts a server when none
answers at ``engine.base_url`` and returns a handle to ``stop()`` afterwards, or ``None``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from longicl.errors import EXIT_USAGE, UsageError, one_line

DEFAULT_CONFIG = "llm_config.yaml"
DEFAULT_OUT_DIR = "outputs/serve"
DEFAULT_PROFILE = "default"
DEFAULT_TIMEOUT = 900.0  # seconds: weights load + torch.compile + CUDA graph capture
DEFAULT_GRACE = 30.0
MARKER_ENV = "LONGICL_SERVE_MARKER"
STATE_FILE = "server.json"
PID_FILE = "server.pid"
LOG_FILE = "server.log"
FLAGSCALE_MODEL_NAME = "qwen3"  # `flagscale serve MODEL_NAME YAML`: the name only picks a default yaml
EXIT_FAILED = 1
EXIT_NOT_ANSWERING = 3
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0", "::1", "::", ""}
_REPO_ROOT = Path(__file__).resolve().parents[2]  # src/longicl/serve.py -> the checkout


class ServeError(UsageError):
    """The server could not be started or stopped (exit code 1 from the ``serve`` command)."""


# ------------------------------------------------------------------------------------------------
# the serve config
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServeSpec:
    """One profile of ``llm_config.yaml``, resolved: the vLLM engine arguments and the environment."""

    config_path: Path
    profile: str
    engine_args: dict[str, Any]
    envs: dict[str, str]
    document: dict[str, Any] = field(repr=False)  # the whole resolved file (for FlagScale)

    @property
    def model(self) -> str:
        return str(self.engine_args["model"])

    @property
    def port(self) -> int:
        return int(self.engine_args.get("port") or 8000)

    @property
    def host(self) -> str:
        return str(self.engine_args.get("host") or "")

    @property
    def served_model_name(self) -> str:
        name = self.engine_args.get("served_model_name")
        if isinstance(name, list | tuple):
            name = name[0] if name else None
        return str(name) if name else self.model

    @property
    def max_model_len(self) -> int | None:
        value = self.engine_args.get("max_model_len")
        return int(value) if value is not None else None

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    def yarn(self) -> dict[str, Any] | None:
        """The YaRN ``rope_parameters`` (or legacy ``rope_scaling``) of ``hf_overrides``, if any."""
        overrides = self.engine_args.get("hf_overrides")
        if isinstance(overrides, str):
            overrides = json.loads(overrides)
        if not isinstance(overrides, dict):
            return None
        rope = overrides.get("rope_parameters") or overrides.get("rope_scaling")
        if isinstance(rope, dict) and (rope.get("rope_type") or rope.get("type")) == "yarn":
            return rope
        return None


def load_spec(config: str | Path = DEFAULT_CONFIG, profile: str = DEFAULT_PROFILE) -> ServeSpec:
    """Read ``config``, merge ``profiles[profile]`` over the vLLM entry's engine args, resolve ``${…}``."""
    path = Path(config)
    if not path.is_file() and not path.is_absolute() and (_REPO_ROOT / path).is_file():
        path = _REPO_ROOT / path  # run from another directory of an editable checkout
    if not path.is_file():
        raise UsageError(f"{path}: no such serve config (see docs/serving.md)")
    try:
        document = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OmegaConfBaseException, OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the serve config ({' '.join(str(exc).split())})") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path}: not a mapping")
    entry = _vllm_entry(document, path)
    args = dict((entry.get("engine_args_specific") or {}).get("vllm") or {})
    args.update(entry.get("engine_args") or {})  # FlagScale: common engine_args win over specific ones
    profiles = document.get("profiles") or {}
    if profile != DEFAULT_PROFILE and profile not in profiles:
        names = ", ".join(sorted({DEFAULT_PROFILE, *profiles})) or DEFAULT_PROFILE
        raise UsageError(f"profile {profile!r} is not in {path}; profiles: {names}")
    for key, value in (profiles.get(profile) or {}).items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = value
    if not args.get("model"):
        raise UsageError(f"{path}: serve[].engine_args.model is empty")
    envs = {
        str(k): str(v)
        for k, v in ((document.get("experiment") or {}).get("envs") or {}).items()
        if v is not None
    }
    spec = ServeSpec(path, profile, args, envs, document)
    _validate(spec)
    return spec


def _vllm_entry(document: dict[str, Any], path: Path) -> dict[str, Any]:
    entries = document.get("serve")
    if isinstance(entries, dict):
        entries = [entries]
    for entry in entries or []:
        if isinstance(entry, dict) and (
            entry.get("engine") == "vllm" or entry.get("serve_id") == "vllm_model"
        ):
            return entry
    raise UsageError(f"{path}: no `serve:` entry with `engine: vllm`")


def _validate(spec: ServeSpec) -> None:
    where = f"{spec.config_path} (profile {spec.profile})"
    try:
        int(spec.engine_args.get("port") or 8000)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: port={spec.engine_args.get('port')!r} is not a number") from None
    for key, value in spec.engine_args.items():
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{where}: {key} is not valid JSON ({exc.msg})") from None
    rope = spec.yarn()
    if rope and spec.max_model_len:
        try:
            reach = float(rope["factor"]) * int(rope["original_max_position_embeddings"])
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{where}: YaRN needs factor and original_max_position_embeddings") from None
        if spec.max_model_len > reach:
            raise UsageError(
                f"{where}: max_model_len={spec.max_model_len} exceeds YaRN's reach "
                f"(factor x original_max_position_embeddings = {reach:.0f})"
            )


# ------------------------------------------------------------------------------------------------
# command lines
# ------------------------------------------------------------------------------------------------
def engine_flags(args: dict[str, Any]) -> list[str]:
    """``vllm serve`` flags for engine args (``model`` excluded): FlagScale's mapping, with JSON kept whole."""
    flags: list[str] = []
    for key, value in args.items():
        if key == "model" or value is None:
            continue
        name = key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, dict):
            flags += [f"--{name}", json.dumps(value)]
        elif isinstance(value, list | tuple):
            flags.append(f"--{name}")
            flags += [str(v) for v in value]
        elif isinstance(value, str) and value.lstrip().startswith("{"):
            flags += [f"--{name}", json.dumps(json.loads(value))]  # normalised spacing
        else:
            flags += [f"--{name}", str(value)]
    return flags


def vllm_argv(spec: ServeSpec, executable: str = "vllm") -> list[str]:
    return [executable, "serve", spec.model, *engine_flags(spec.engine_args)]


def shell_command(argv: Iterable[str], envs: dict[str, str] | None = None) -> str:
    """One shell-quoted line, with ``NAME=value`` assignments in front for the environment."""
    prefix = [f"{k}={shlex.quote(v)}" for k, v in (envs or {}).items()]
    return " ".join([*prefix, shlex.join(list(argv))])


def write_flagscale_config(spec: ServeSpec, out_dir: str | Path) -> Path:
    """A FlagScale-loadable copy of the config with this profile merged in and everything resolved."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    document = json.loads(json.dumps(spec.document))  # deep copy of plain data
    document.pop("profiles", None)
    entry = _vllm_entry(document, spec.config_path)
    entry.pop("engine_args_specific", None)
    entry["engine_args"] = {
        key: json.dumps(value) if isinstance(value, dict) else value
        for key, value in spec.engine_args.items()
        if value is not None
    }
    experiment = document.setdefault("experiment", {})
    experiment["exp_dir"] = str(out / "flagscale")
    document.setdefault("hydra", {}).setdefault("run", {})["dir"] = str(out / "flagscale" / "hydra")
    path = out / f"flagscale_{spec.profile}.yaml"
    OmegaConf.save(OmegaConf.create(document), path)
    return path


# ------------------------------------------------------------------------------------------------
# probing
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    answers: bool
    detail: str
    models: tuple[str, ...] = ()
    max_model_len: int | None = None


def probe(base_url: str, timeout: float = 3.0) -> Probe:
    """Does an OpenAI-compatible server answer ``GET /health`` and ``GET /v1/models`` at ``base_url``?"""
    root = _root_url(base_url)
    try:
        with httpx.Client(timeout=timeout) as client:
            health = client.get(f"{root}/health")
            listing = client.get(f"{base_url.rstrip('/')}/models")
    except httpx.HTTPError as exc:
        return Probe(False, f"no answer ({type(exc).__name__})")
    if listing.status_code != 200:
        return Probe(False, f"/v1/models answered HTTP {listing.status_code}")
    try:
        data = listing.json().get("data") or []
        models = tuple(str(m.get("id")) for m in data)
        max_len = data[0].get("max_model_len") if data else None
    except (ValueError, AttributeError):
        return Probe(False, "/v1/models did not answer JSON")
    if not models:
        return Probe(False, "/v1/models lists no model")
    health_note = "" if health.status_code == 200 else f", /health HTTP {health.status_code}"
    length = f", max_model_len {max_len:,}" if isinstance(max_len, int) else ""
    return Probe(True, f"answers (models: {', '.join(models)}{length}{health_note})", models, max_len)


def _root_url(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def detect_gpu() -> str | None:
    """A short description of the first visible NVIDIA GPU (``nvidia-smi -L``, else torch.cuda), or None."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            out = None
        if out is not None and out.returncode == 0:
            lines = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
            if lines:
                return lines[0].strip()
    try:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return None
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:  # noqa: BLE001 - a broken torch install means no usable GPU
        return None
    return None


def check_model(spec: ServeSpec) -> None:
    """The model must be a directory with ``config.json``, or look like a hub id (``org/name``)."""
    model = spec.model
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"model directory {path} has no config.json")
        return
    looks_like_path = model.startswith(("/", ".", "~")) or model.count("/") != 1
    if looks_like_path:
        raise UsageError(
            f"model path {model} does not exist; set QWEN3_4B_PATH or engine_args.model in {spec.config_path}"
        )


# ------------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------------
@dataclass
class ServerHandle:
    """A server started by this module; ``stop()`` ends it and its children, nothing else."""

    base_url: str
    out_dir: Path
    pid: int
    marker: str
    log_path: Path
    launcher: str
    argv: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.process is not None and self.process.poll() is None:
            return True
        marked = _marked_pids(self.marker)
        if marked is not None:
            return bool(marked)
        return _pid_alive(self.pid)

    def stop(self, grace: float = DEFAULT_GRACE) -> list[int]:
        """SIGTERM every process carrying this handle's marker, SIGKILL what is left after ``grace``."""
        signalled = _terminate(self.marker, self.pid, grace, self.process)
        _clear_state(self.out_dir, self.marker)
        return signalled


def _marked_pids(marker: str) -> list[int] | None:
    """Pids whose environment carries ``MARKER_ENV=marker``; None where /proc is not available."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    needle = f"{MARKER_ENV}={marker}".encode()
    found: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ours(marker: str, pid: int) -> list[int]:
    marked = _marked_pids(marker)
    if marked is not None:
        return marked
    # No /proc (not Linux): only the recorded pid, and only while it is alive.
    return [pid] if _pid_alive(pid) else []


def _terminate(marker: str, pid: int, grace: float, process: subprocess.Popen | None = None) -> list[int]:
    targets = _ours(marker, pid)
    for target in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGTERM)
    deadline = time.monotonic() + max(0.0, grace)
    while time.monotonic() < deadline:
        if process is not None:
            process.poll()  # reap our own child so it does not linger as a zombie
        if not [p for p in _ours(marker, pid) if p in targets]:
            break
        time.sleep(0.2)
    for target in [p for p in _ours(marker, pid) if p in targets]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    return targets


def _state_path(out_dir: Path) -> Path:
    return out_dir / STATE_FILE


def read_state(out_dir: str | Path) -> dict[str, Any] | None:
    path = _state_path(Path(out_dir))
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("marker") and state.get("pid") else None


def _write_state(out_dir: Path, state: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    tmp.replace(_state_path(out_dir))
    (out_dir / PID_FILE).write_text(f"{state['pid']}\n", encoding="utf-8")


def _clear_state(out_dir: Path, marker: str) -> None:
    state = read_state(out_dir)
    if state is None or state.get("marker") == marker:
        for name in (STATE_FILE, PID_FILE):
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name).unlink()


def handle_from_state(out_dir: str | Path) -> ServerHandle | None:
    state = read_state(out_dir)
    if state is None:
        return None
    return ServerHandle(
        base_url=str(state.get("base_url", "")),
        out_dir=Path(out_dir),
        pid=int(state["pid"]),
        marker=str(state["marker"]),
        log_path=Path(str(state.get("log", Path(out_dir) / LOG_FILE))),
        launcher=str(state.get("launcher", "vllm")),
        argv=list(state.get("argv") or []),
    )


def _log_tail(path: Path, limit: int = 200) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4096))
            lines = [ln.strip() for ln in handle.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    last = lines[-1]
    return last if len(last) <= limit else last[: limit - 1] + "…"


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
    if _port_in_use(connect_host, spec.port):
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
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shell_command(argv)}\n".encode())
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
    handle = ServerHandle(spec.base_url, out, process.pid, marker, log_path, kind, argv, process)
    _write_state(
        out,
        {
            "pid": process.pid,
            "marker": marker,
            "launcher": kind,
            "argv": argv,
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
            tail = _log_tail(handle.log_path)
            _clear_state(handle.out_dir, handle.marker)
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
    if not _ours(handle.marker, handle.pid):
        _clear_state(handle.out_dir, handle.marker)
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
        pids = _ours(handle.marker, handle.pid)
        state = "alive" if pids else "not running"
        lines.append(f"process: pid {handle.pid} ({handle.launcher}) {state}; log {handle.log_path}")
    return result.answers, lines


# ------------------------------------------------------------------------------------------------
# main.py hook
# ------------------------------------------------------------------------------------------------
def ensure_server(cfg: Any, progress: Callable[[str], None] | None = None) -> ServerHandle | None:
    """Start the configured server when ``serve.autostart`` is true and nothing answers yet.

    Returns the handle of a server started here (call ``stop()`` when the run ends), or None when
    autostart is off, the engine is not ``openai``, or a server already answers. Raises ``UsageError``
    (one line) when a server is needed but cannot be started: no vllm, no GPU, no model, URL mismatch.
    """
    serve_cfg = _get(cfg, "serve") or {}
    if not _get(serve_cfg, "autostart"):
        return None
    engine = _get(cfg, "engine") or {}
    if _get(engine, "name") != "openai":
        return None
    base_url = _get(engine, "base_url")
    if isinstance(base_url, list | tuple) or (base_url is not None and not isinstance(base_url, str)):
        urls = list(base_url)
        if len(urls) != 1:
            raise UsageError("serve.autostart=true starts one local server; engine.base_url lists several")
        base_url = urls[0]
    spec = load_spec(
        _get(serve_cfg, "config") or DEFAULT_CONFIG, _get(serve_cfg, "profile") or DEFAULT_PROFILE
    )
    url = str(base_url or spec.base_url).rstrip("/")
    if probe(url).answers:
        return None
    parsed = urlparse(url)
    if (parsed.hostname or "") not in _LOCAL_HOSTS or (parsed.port or 80) != spec.port:
        raise UsageError(
            f"serve.autostart=true, but engine.base_url={url} is not the local server {spec.base_url} "
            f"described by {spec.config_path}"
        )
    say = progress or (lambda msg: print(f"serve.autostart: {msg}", file=sys.stderr, flush=True))
    try:
        return start_server(
            spec,
            _get(serve_cfg, "out_dir") or DEFAULT_OUT_DIR,
            timeout=float(_get(serve_cfg, "timeout") or DEFAULT_TIMEOUT),
            progress=say,
        )
    except UsageError as exc:  # ServeError included: the same class, with where it came from
        raise type(exc)(f"serve.autostart: {exc}") from None


def _get(node: Any, key: str) -> Any:
    if node is None:
        return None
    getter = getattr(node, "get", None)
    return getter(key) if callable(getter) else getattr(node, key, None)


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m longicl.serve",
        description="Start, stop and inspect the local vLLM server described by llm_config.yaml.",
    )
    parser.add_argument("action", choices=("start", "stop", "status", "command"))
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="serve config (default: %(default)s)")
    parser.add_argument(
        "--profile", default=DEFAULT_PROFILE, help="a key of `profiles:` (default: %(default)s)"
    )
    parser.add_argument(
        "--out-dir", default=DEFAULT_OUT_DIR, help="pid, state and log (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="start: seconds to wait for /health"
    )
    parser.add_argument(
        "--grace", type=float, default=DEFAULT_GRACE, help="stop: seconds between SIGTERM and SIGKILL"
    )
    parser.add_argument("--launcher", default="auto", choices=("auto", "vllm", "flagscale"))
    parser.add_argument("--skip-gpu-check", action="store_true", help="start even when no GPU is detected")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.action == "stop":
            print(stop_server(args.out_dir, args.grace))
            return 0
        spec = load_spec(args.config, args.profile)
        if args.action == "command":
            print(shell_command(vllm_argv(spec), spec.envs))
            return 0
        if args.action == "status":
            answers, lines = status_lines(spec, args.out_dir)
            print("\n".join(lines))
            return 0 if answers else EXIT_NOT_ANSWERING
        already = probe(spec.base_url)
        if already.answers:
            print(f"a server already answers at {spec.base_url}; nothing started")
            return 0
        handle = start_server(
            spec,
            args.out_dir,
            timeout=args.timeout,
            launcher=args.launcher,
            check_gpu=not args.skip_gpu_check,
            progress=print,
        )
        print(f"ready: {spec.base_url} (pid {handle.pid}); stop with `python -m longicl.serve stop`")
        return 0
    except ServeError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except UsageError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

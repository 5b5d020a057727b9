"""Processes this tool started: a handle, the marker in their environment, the state file.

``start`` launches the server in its own process group with a random marker in its environment,
and records pid, marker and log under ``--out-dir``. ``stop`` signals only processes that carry
that marker (SIGTERM, then SIGKILL after a grace period): never anything this tool did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longicl.config_values import load_main_defaults

DEFAULT_OUT_DIR = str(load_main_defaults()["serve"]["out_dir"])  # conf/config.yaml serve.out_dir
DEFAULT_GRACE = 30.0
MARKER_ENV = "LONGICL_SERVE_MARKER"
STATE_FILE = "server.json"
PID_FILE = "server.pid"
LOG_FILE = "server.log"


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
        marked = marked_pids(self.marker)
        if marked is not None:
            return bool(marked)
        return _pid_alive(self.pid)

    def stop(self, grace: float = DEFAULT_GRACE) -> list[int]:
        """SIGTERM every process carrying this handle's marker, SIGKILL what is left after ``grace``."""
        signalled = _terminate(self.marker, self.pid, grace, self.process)
        clear_state(self.out_dir, self.marker)
        return signalled


def marked_pids(marker: str) -> list[int] | None:
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


def ours(marker: str, pid: int) -> list[int]:
    marked = marked_pids(marker)
    if marked is not None:
        return marked
    # No /proc (not Linux): only the recorded pid, and only while it is alive.
    return [pid] if _pid_alive(pid) else []


def _terminate(marker: str, pid: int, grace: float, process: subprocess.Popen | None = None) -> list[int]:
    targets = ours(marker, pid)
    for target in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGTERM)
    deadline = time.monotonic() + max(0.0, grace)
    while time.monotonic() < deadline:
        if process is not None:
            process.poll()  # reap our own child so it does not linger as a zombie
        if not [p for p in ours(marker, pid) if p in targets]:
            break
        time.sleep(0.2)
    for target in [p for p in ours(marker, pid) if p in targets]:
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


def write_state(out_dir: Path, state: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    tmp.replace(_state_path(out_dir))
    (out_dir / PID_FILE).write_text(f"{state['pid']}\n", encoding="utf-8")


def clear_state(out_dir: Path, marker: str) -> None:
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


def log_tail(path: Path, limit: int = 200) -> str:
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

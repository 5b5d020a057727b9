"""Run one checker job in a separate, limited process (the parent side of ``_runner.py``).

The child is ``sys.executable -I -B _runner.py`` in its own session (so its whole process group can
be killed) and in a fresh temporary directory that is also its ``HOME``, ``TMPDIR`` and Triton cache.
Limits enforced here:

* wall clock: ``timeout_s`` for the whole child, torch/triton import included; on expiry the
  process group gets SIGKILL;
* memory: the child sets ``RLIMIT_AS`` to ``memory_mb`` on a CPU; in addition this side samples the
  resident memory of the process group every 0.2 s and kills it above ``memory_mb`` (the only
  memory guard on a GPU, where CUDA needs a large address space);
* output: at most ``max_log_chars`` of the child's stderr are kept.

The guards for network, file writes and program starts live in the child (see ``_runner.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RUNNER", "ChildOutcome", "SandboxLimits", "run_job"]

RUNNER = Path(__file__).with_name("_runner.py")

# Variables that would let the child reach the network through a proxy, or change what it imports.
_DROP_ENV = {
    "http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "FTP_PROXY", "NO_PROXY",
    "TRITON_INTERPRET", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME",
}  # fmt: skip


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 60.0
    memory_mb: int = 4096
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    max_file_mb: int = 256
    max_log_chars: int = 4000


@dataclass
class ChildOutcome:
    """What came back from the child, whatever happened to it."""

    result: dict[str, Any] | None  # the runner's final report, None when it never wrote one
    last_stage: str | None  # the last stage the child announced
    returncode: int | None
    timed_out: bool = False
    memory_killed: bool = False
    peak_rss_mb: float = 0.0
    seconds: float = 0.0
    log: str = ""  # tail of the child's stderr (the candidate's prints go there too)
    events: list[dict[str, Any]] = field(default_factory=list)


def _child_env(work: Path, device: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    env.update(
        HOME=str(work),
        TMPDIR=str(work),
        TEMP=str(work),
        TMP=str(work),
        XDG_CACHE_HOME=str(work / ".cache"),
        TRITON_HOME=str(work),
        TRITON_CACHE_DIR=str(work / ".triton" / "cache"),
        TORCHINDUCTOR_CACHE_DIR=str(work / ".cache" / "inductor"),
        MPLCONFIGDIR=str(work / ".cache" / "matplotlib"),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONHASHSEED="0",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in the group, in MiB (Linux /proc; 0 elsewhere)."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read().rsplit(b")", 1)[1].split()
            if int(stat[2]) != pgid:  # fields after "comm": state, ppid, pgrp, …
                continue
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total / (1024 * 1024)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_job(job: dict[str, Any], files: dict[str, str], limits: SandboxLimits) -> ChildOutcome:
    """Write ``files`` into a fresh directory, run the runner on ``job`` there, collect the outcome.

    ``job`` gets ``work_dir``, ``device``, ``memory_mb``, ``max_file_mb`` and ``<name>_path`` for
    each file (``files`` maps a role such as ``"candidate"`` to source text).
    """
    work = Path(tempfile.mkdtemp(prefix="longicl-kernel-")).resolve()
    try:
        for role, text in files.items():
            path = work / f"{role}.py"
            path.write_text(text, encoding="utf-8")
            job[f"{role}_path"] = str(path)
        job.update(
            work_dir=str(work),
            device=limits.device,
            memory_mb=limits.memory_mb,
            max_file_mb=limits.max_file_mb,
        )
        return _supervise(job, work, limits)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _supervise(job: dict[str, Any], work: Path, limits: SandboxLimits) -> ChildOutcome:
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-B", str(RUNNER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(work),
        env=_child_env(work, limits.device),
        start_new_session=True,
    )
    pgid = proc.pid
    state = {"peak": 0.0, "memory_killed": False}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            rss = _group_rss_mb(pgid)
            state["peak"] = max(state["peak"], rss)
            if limits.memory_mb and rss > limits.memory_mb:
                state["memory_killed"] = True
                _kill_group(pgid)
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    timed_out = False
    try:
        stdout, stderr = proc.communicate(json.dumps(job).encode(), timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(pgid)
        try:
            stdout, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a grandchild escaped the group and holds the pipes
            proc.kill()
            stdout, stderr = b"", b""
    finally:
        done.set()
        _kill_group(pgid)  # leftovers (daemonised grandchildren of the candidate)
    watcher.join(timeout=1)
    events: list[dict[str, Any]] = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            events.append(obj)
    result = next((e for e in reversed(events) if e.get("event") == "result"), None)
    stages = [e["stage"] for e in events if e.get("event") == "stage"]
    log = stderr.decode("utf-8", "replace")
    if len(log) > limits.max_log_chars:
        log = "…" + log[-limits.max_log_chars :]
    return ChildOutcome(
        result=result,
        last_stage=stages[-1] if stages else None,
        returncode=proc.returncode,
        timed_out=timed_out,
        memory_killed=bool(state["memory_killed"]),
        peak_rss_mb=round(float(state["peak"]), 1),
        seconds=round(time.monotonic() - start, 3),
        log=log,
        events=events,
    )

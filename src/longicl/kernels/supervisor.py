"""Runs the sandboxed child and bounds it: the parent's watch over one check.

`supervise` starts the command line `isolation.command_line` builds, feeds the job to the child's
stdin from a thread (a child that never reads cannot block the parent), and kills the whole
process tree at the deadline, past ``memory_mb`` of memory or ``max_processes`` tasks, or when
stdout passes ``max_result_bytes``. Memory and tasks are bounded twice: by the kernel, in a child
cgroup (`cgroup.Cgroup`: its memory limit charges memfd, shared memory and tmpfs too, its pids
limit counts threads) when one can be made, and by a watcher polling ``/proc`` (resident memory
plus the memfd and System V segments the tree holds open or mapped; threads, not processes). It keeps the last
``max_log_chars`` of stderr and reads the child's stdout as JSON lines, nothing else: the
`ChildOutcome` says what came back, whatever happened to the child.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from longicl.kernels.cgroup import Cgroup
from longicl.kernels.isolation import SandboxLimits, command_line

CGROUPS = True  # put each sandbox in its own cgroup when this machine allows it


@dataclass
class ChildOutcome:
    """What came back from the child, whatever happened to it."""

    result: dict[str, Any] | None  # the last {"event": "result"} line, None when there was none
    last_stage: str | None  # the last stage the child announced
    returncode: int | None
    timed_out: bool = False
    memory_killed: bool = False
    processes_killed: bool = False  # more processes than max_processes (the watchdog's count)
    oversize: bool = False  # stdout went past max_result_bytes: nothing of it was parsed
    error: str | None = None  # why there is no result, when the sandbox knows
    isolation: str = ""
    peak_rss_mb: float = 0.0
    seconds: float = 0.0
    log: str = ""  # tail of the child's stderr (the candidate's prints go there too)
    events: list[dict[str, Any]] = field(default_factory=list)


class _Reader(threading.Thread):
    """Drains a pipe, keeping at most ``limit`` bytes (the head, or the tail)."""

    def __init__(self, pipe: IO[bytes], limit: int, *, tail: bool) -> None:
        super().__init__(daemon=True)
        self.pipe, self.limit, self.tail = pipe, limit, tail
        self.data = bytearray()
        self.overflow = False

    def run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := self.pipe.read1(65536):
                self.data += chunk
                if len(self.data) > self.limit:
                    self.overflow = True
                    if self.tail:
                        del self.data[: len(self.data) - self.limit]
                    else:
                        del self.data[self.limit :]


def _shared_bytes(pid: int, seen: set[tuple[int, int]]) -> int:
    """Bytes of memfd files and System V segments ``pid`` holds open or mapped (each counted once
    in ``seen``): memory no process has resident until it touches it."""
    total = 0
    for sub in ("fd", "map_files"):
        try:
            names = os.listdir(f"/proc/{pid}/{sub}")
        except OSError:
            continue
        for name in names:
            path = f"/proc/{pid}/{sub}/{name}"
            try:
                target = os.readlink(path)
                if not target.startswith(("/memfd:", "/SYSV")):
                    continue
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += max(st.st_blocks * 512, 0)
    return total


def _tree_usage(root: int) -> tuple[float, int]:
    """Memory (MiB: resident, plus memfd and System V shared memory held) and number of tasks
    (threads) of ``root`` and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    threads: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0.0, 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read().rsplit(b")", 1)[1].split()
            parents[pid] = int(stat[1])
            threads[pid] = int(stat[17])
            rss[pid] = int(stat[21]) * page
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    while frontier:
        for kid in children.get(frontier.pop(), []):
            if kid not in tree:
                tree.add(kid)
                frontier.append(kid)
    seen: set[tuple[int, int]] = set()
    memory = sum(rss.get(pid, 0) + _shared_bytes(pid, seen) for pid in tree)
    return memory / (1024 * 1024), sum(threads.get(pid, 1) for pid in tree)


def _kill(proc: subprocess.Popen, group: Cgroup | None) -> None:
    if group is not None:
        group.kill()  # every process of the sandbox, whatever session or group it moved to
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the outer bwrap/unshare; the namespace dies with it
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def supervise(
    isolation: str, work: str, inputs: Sequence[str], script: str, stdin: bytes, limits: SandboxLimits
) -> ChildOutcome:
    """Run ``script`` (one of ``inputs``, files in the host's ``work``) under ``isolation`` with
    ``stdin`` as its input, within ``limits``."""
    start = time.monotonic()
    argv, env, pipe = command_line(isolation, work, inputs, script, limits)
    keep = () if pipe is None else (pipe[0],)
    group = Cgroup.create(limits.memory_mb, limits.max_processes + 3) if CGROUPS else None
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=work,
            env=env,
            start_new_session=True,
            pass_fds=keep,
            preexec_fn=None if group is None else group.join,
        )
    except (OSError, subprocess.SubprocessError):
        if pipe is not None:
            os.close(pipe[1])
        if group is not None:
            group.remove()
        raise
    finally:
        for fd in keep:
            os.close(fd)
    out = _Reader(proc.stdout, limits.max_result_bytes, tail=False)  # type: ignore[arg-type]
    err = _Reader(proc.stderr, limits.max_log_chars * 4, tail=True)  # type: ignore[arg-type]
    out.start()
    err.start()
    state = {"peak": 0.0, "memory_killed": False, "oversize": False, "processes_killed": False}

    def feed() -> None:  # in a thread: a child that never reads its stdin cannot block the parent
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.write(stdin)  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]

    threading.Thread(target=feed, daemon=True).start()
    deadline = start + limits.timeout_s
    timed_out = False
    while proc.poll() is None:
        if time.monotonic() > deadline:
            timed_out = True
            break
        if out.overflow:
            state["oversize"] = True
            break
        rss, count = _tree_usage(proc.pid)
        state["peak"] = max(state["peak"], rss)
        if limits.memory_mb and rss > limits.memory_mb:
            state["memory_killed"] = True
            break
        if count > limits.max_processes + 3:  # RLIMIT_NPROC does not bind uid 0; this does
            state["processes_killed"] = True
            break
        if group is not None and group.processes_refused():
            state["processes_killed"] = True
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.1)
    _kill(proc, group)
    proc.wait()
    if group is not None:
        state["memory_killed"] = state["memory_killed"] or group.memory_killed()
        state["processes_killed"] = state["processes_killed"] or group.processes_refused()
        group.remove()
    if pipe is not None:
        os.close(pipe[1])
    out.join(5)
    err.join(5)
    oversize = state["oversize"] or out.overflow
    log = err.data.decode("utf-8", "replace")
    if len(log) > limits.max_log_chars:
        log = "…" + log[-limits.max_log_chars :]
    events: list[dict[str, Any]] = []
    error = None
    if oversize:
        error = f"the child wrote more than {limits.max_result_bytes} bytes of results (larger than allowed)"
    else:
        for line in out.data.decode("utf-8", "replace").splitlines():
            with contextlib.suppress(ValueError, RecursionError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    events.append(obj)
    if proc.returncode == 125 and "sandbox setup failed" in log:
        error = log.strip().splitlines()[-1]
    result = next((e for e in reversed(events) if e.get("event") == "result"), None)
    stages = [e["stage"] for e in events if e.get("event") == "stage" and isinstance(e.get("stage"), str)]
    return ChildOutcome(
        result=result,
        last_stage=stages[-1] if stages else None,
        returncode=proc.returncode,
        timed_out=timed_out,
        memory_killed=bool(state["memory_killed"]),
        processes_killed=bool(state["processes_killed"]),
        oversize=oversize,
        error=error,
        isolation=isolation,
        peak_rss_mb=round(float(state["peak"]), 1),
        seconds=round(time.monotonic() - start, 3),
        log=log,
        events=events,
    )


def cgroup_support() -> str | None:
    """None when each sandbox gets its own cgroup here, else why not (the watcher alone bounds)."""
    if not CGROUPS:
        return "cgroups are switched off"
    group = Cgroup.create(64, 8)
    if group is None:
        return "no writable cgroup with memory and pids controllers"
    group.remove()
    return None

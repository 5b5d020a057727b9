"""The kernel's own bound on the sandbox: a child cgroup with a memory and a process limit.

`Cgroup.create` makes a fresh cgroup below the supervisor's own one, with ``memory_mb`` as its
memory limit (memory charged there includes what no process holds resident: ``memfd`` files,
shared memory, tmpfs pages, page cache) and ``max_processes`` as its ``pids`` limit (which counts
threads and binds uid 0, unlike ``RLIMIT_NPROC``). cgroup v2 when the supervisor's cgroup is
delegated with the ``memory`` and ``pids`` controllers, else the v1 ``memory`` and ``pids``
hierarchies. The child joins it between fork and exec (`Cgroup.join_fds` in ``preexec_fn``), so
nothing it starts runs outside. When no cgroup can be made (no permission, no controller),
`Cgroup.create` returns None and the supervisor's ``/proc`` watcher is the only bound.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PREFIX = "longicl-sandbox-"


def _own_paths() -> dict[str, str]:
    """Controller (``""`` for v2) → this process's cgroup path, from ``/proc/self/cgroup``."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                out[name] = path
    return out


def _v2_base(own: dict[str, str]) -> Path | None:
    """The supervisor's v2 cgroup when it is delegated with memory and pids, else None."""
    for mount in (ROOT / "unified", ROOT):
        if "" not in own or not (mount / "cgroup.controllers").exists():
            continue
        base = mount / own[""].lstrip("/")
        with contextlib.suppress(OSError):
            enabled = (base / "cgroup.subtree_control").read_text().split()
            if {"memory", "pids"} <= set(enabled) and os.access(base, os.W_OK):
                return base
    return None


def _sweep(parent: Path) -> None:
    """Remove the empty cgroups of supervisors that died before removing theirs (killed with -9)."""
    with contextlib.suppress(OSError):
        for d in parent.glob(f"{PREFIX}*"):
            owner = d.name.removeprefix(PREFIX).split("-")[0]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                with contextlib.suppress(OSError):
                    d.rmdir()  # fails while a process is still in it


@dataclass
class Cgroup:
    """One sandbox's cgroup(s): a v2 directory, or a v1 ``memory`` and a v1 ``pids`` directory."""

    dirs: list[Path] = field(default_factory=list)
    memory: Path | None = None
    pids: Path | None = None
    version: int = 1
    join_fds: list[int] = field(default_factory=list)  # cgroup.procs, open for writing

    @classmethod
    def create(cls, memory_mb: int, max_processes: int) -> Cgroup | None:
        """A fresh cgroup bounding memory to ``memory_mb`` (0: unbounded) and tasks (processes and
        threads) to ``max_processes``; None when this machine or user cannot make one."""
        own = _own_paths()
        name = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        group = cls()
        try:
            base = _v2_base(own)
            if base is not None:
                group.version = 2
                group.memory = group.pids = group._mkdir(base / name)
                if memory_mb:
                    group._write(group.memory / "memory.max", memory_mb << 20)
                    with contextlib.suppress(OSError):
                        group._write(group.memory / "memory.swap.max", 0)
                group._write(group.pids / "pids.max", max_processes)
            else:
                if "memory" not in own or "pids" not in own:
                    return None
                group.memory = group._mkdir(ROOT / "memory" / own["memory"].lstrip("/") / name)
                group.pids = group._mkdir(ROOT / "pids" / own["pids"].lstrip("/") / name)
                if memory_mb:
                    group._write(group.memory / "memory.limit_in_bytes", memory_mb << 20)
                    if (group.memory / "memory.memsw.limit_in_bytes").exists():  # no escape to swap
                        group._write(group.memory / "memory.memsw.limit_in_bytes", memory_mb << 20)
                group._write(group.pids / "pids.max", max_processes)
            for d in group.dirs:
                group.join_fds.append(os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        except (OSError, ValueError):
            group.remove()
            return None
        return group

    def _mkdir(self, path: Path) -> Path:
        _sweep(path.parent)
        path.mkdir()
        self.dirs.append(path)
        return path

    @staticmethod
    def _write(path: Path, value: int) -> None:
        path.write_text(str(value))

    def join(self) -> None:
        """Move the calling process here (for ``preexec_fn``: between fork and exec)."""
        for fd in self.join_fds:
            os.write(fd, b"0")

    def _count(self, path: Path | None, file: str, key: str) -> int:
        with contextlib.suppress(OSError, ValueError):
            for line in (path / file).read_text().splitlines():  # type: ignore[operator]
                words = line.split()
                if len(words) == 2 and words[0] == key:
                    return int(words[1])
        return 0

    def memory_killed(self) -> bool:
        """Whether the kernel killed a process here for memory."""
        if self.version == 2:
            return self._count(self.memory, "memory.events", "oom_kill") > 0
        return self._count(self.memory, "memory.oom_control", "oom_kill") > 0

    def processes_refused(self) -> bool:
        """Whether a fork or a thread was refused at the tasks limit."""
        return self._count(self.pids, "pids.events", "max") > 0

    def peak_mb(self) -> float:
        """The most memory charged here (page cache included), MiB."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError, TypeError):
            return int((self.memory / name).read_text()) / (1024 * 1024)  # type: ignore[operator]
        return 0.0

    def _members(self) -> set[int]:
        pids: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return pids

    def kill(self) -> None:
        """SIGKILL every process here (those that left the process group included)."""
        for _ in range(50):
            members = self._members()
            if not members:
                return
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if not self._members():
                return
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left and remove the directories (a busy one after a few tries is left)."""
        for fd in self.join_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.join_fds = []
        self.kill()
        for d in reversed(self.dirs):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    self.kill()
        self.dirs = []

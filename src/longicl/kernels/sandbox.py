"""Run model-written code in an OS sandbox (the parent side of ``_boot.py`` and ``_child.py``).

Isolation comes from the kernel, not from Python: ``bwrap`` (bubblewrap) where installed, else
util-linux ``unshare`` plus the mount setup in ``_boot.py``. Either way the child gets

* new user, mount, PID, network, IPC and UTS namespaces: no network at all (the host's loopback
  included), a fresh ``/proc`` showing only the sandbox's own processes, no capability;
* a filesystem of read-only binds (``/usr`` and the other system directories, a few ``/etc``
  files, the Python installation and venv) with private, size-limited tmpfs for ``/tmp``,
  ``/dev/shm`` and the work dir; the job's input files are bound read-only into the work dir, so
  nothing the child writes ever lands on the host's disk; home, project and other folders are absent;
* an environment built from `CHILD_ENV_NAMES` (no keys, no tokens, no proxies), ``HOME`` = work dir;
* rlimits: CPU seconds, address space (on a CPU), processes, file size, open files, no core;
* death with the parent (``--die-with-parent``; ``_boot.py`` watches a pipe under ``unshare``).

The parent reads at most ``max_result_bytes`` of the child's stdout (JSON lines; oversize is a failed
run with a reason) and keeps the last ``max_log_chars`` of its stderr; it parses, imports and
unpickles nothing else the child wrote. On a GPU the NVIDIA device nodes and the driver's library
directories are added (`gpu_binds`), nothing more.

``isolation``: ``auto`` (bwrap, else unshare; refused when neither works), ``bwrap``, ``unshare``,
or ``none`` (an explicit opt-out: the child runs unisolated, with the same environment and rlimits).

Here: which isolation works on this machine (`probe`, `resolve_isolation`) and the two ways to run
code (`run_python`, `run_job`). What the child sees and the command line that sets it up live in
``isolation.py``; running the child within its limits in ``supervisor.py``. Their public names are
importable from here.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from longicl.errors import UsageError
from longicl.kernels.isolation import (
    BOOT,
    CHILD_ENV_NAMES,
    DEFAULT_MAX_PROCESSES,
    GpuBinds,
    SandboxLimits,
    bwrap_argv,
    child_env,
    command_line,
    gpu_binds,
)
from longicl.kernels.supervisor import ChildOutcome, supervise

__all__ = [
    "BOOT",
    "CHILD_ENV_NAMES",
    "CHILD_SCRIPT",
    "DEFAULT_MAX_PROCESSES",
    "ISOLATIONS",
    "ChildOutcome",
    "GpuBinds",
    "SandboxLimits",
    "bwrap_argv",
    "child_env",
    "command_line",
    "gpu_binds",
    "probe",
    "resolve_isolation",
    "run_job",
    "run_python",
]

CHILD_SCRIPT = Path(__file__).with_name("_child.py")  # the checker's child: stdlib only
ISOLATIONS = ("auto", "bwrap", "unshare", "none")
INSTALL_HINT = "install bubblewrap (apt-get install bubblewrap) or util-linux unshare with user namespaces"


# ------------------------------------------------------------------------------------------------
# which isolation


@functools.cache
def probe(isolation: str) -> str | None:
    """None when ``isolation`` works on this machine, else why not (tried once per process)."""
    if isolation == "none":
        return None
    tool = {"bwrap": "bwrap", "unshare": "unshare"}.get(isolation)
    if tool is None:
        return f"unknown isolation {isolation!r}"
    if shutil.which(tool) is None:
        return f"{tool} is not installed"
    try:
        outcome = run_python(
            "import os, sys\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]), file=sys.stderr)\n",
            SandboxLimits(timeout_s=30, memory_mb=1024, device="cpu", isolation=isolation),
            _probing=True,
        )
    except OSError as exc:
        return f"{tool} cannot start: {exc}"
    tail = outcome.log.strip().splitlines()[-1:] or [f"exit {outcome.returncode}"]
    if outcome.returncode != 0:
        return f"{tool} cannot isolate here: {tail[0][:200]}"
    if not (tail[0].isdigit() and int(tail[0]) <= 5):  # a fresh PID namespace shows only itself
        return f"{tool} ran but did not isolate (it saw {tail[0][:20]} processes)"
    return None


def resolve_isolation(setting: str) -> str:
    """The isolation a check will use for ``kernels.sandbox=<setting>``; `UsageError` (one line)
    when it is unavailable."""
    if setting not in ISOLATIONS:
        raise UsageError(f"kernels.sandbox={setting!r} is not one of: {', '.join(ISOLATIONS)}")
    if setting == "none":
        return "none"
    candidates = ("bwrap", "unshare") if setting == "auto" else (setting,)
    reasons = []
    for name in candidates:
        why = probe(name)
        if why is None:
            return name
        reasons.append(why)
    raise UsageError(
        f"task-8 checks need an OS sandbox and {'; '.join(reasons)}: {INSTALL_HINT}, "
        "or set kernels.sandbox=none to run model-written code unisolated"
    )


# ------------------------------------------------------------------------------------------------
# running


def run_python(
    source: str,
    limits: SandboxLimits,
    *,
    files: dict[str, str] | None = None,
    stdin: bytes = b"",
    _probing: bool = False,
) -> ChildOutcome:
    """Run ``source`` as a Python script in the sandbox; ``files`` (name → text) sit beside it."""
    isolation = limits.isolation if _probing else resolve_isolation(limits.isolation)
    host = Path(tempfile.mkdtemp(prefix="longicl-sandbox-")).resolve()
    try:
        names = ["main.py", *(files or {})]
        (host / "main.py").write_text(source, encoding="utf-8")
        for name, text in (files or {}).items():
            (host / name).write_text(text, encoding="utf-8")
        if isolation == "unshare":
            (host / ".root").mkdir()
        return supervise(isolation, str(host), names, "main.py", stdin, limits)
    finally:
        shutil.rmtree(host, ignore_errors=True)


def run_job(
    job: dict[str, Any], files: dict[str, str], limits: SandboxLimits, *, python_guards: bool = True
) -> ChildOutcome:
    """Run ``_child.py`` on ``job`` with ``files`` (role → source text) in the sandbox.

    ``job`` gets ``work_dir``, ``device``, ``memory_mb``, ``guards`` and ``<role>_path`` for each file."""
    isolation = resolve_isolation(limits.isolation)
    host = Path(tempfile.mkdtemp(prefix="longicl-kernel-")).resolve()
    try:
        names = ["_child.py"]
        shutil.copyfile(CHILD_SCRIPT, host / "_child.py")
        for role, text in files.items():
            (host / f"{role}.py").write_text(text, encoding="utf-8")
            job[f"{role}_path"] = str(host / f"{role}.py")
            names.append(f"{role}.py")
        if isolation == "unshare":
            (host / ".root").mkdir()
        job.update(work_dir=str(host), device=limits.device, memory_mb=limits.memory_mb, guards=python_guards)
        stdin = json.dumps(job).encode()
        return supervise(isolation, str(host), names, "_child.py", stdin, limits)
    finally:
        shutil.rmtree(host, ignore_errors=True)

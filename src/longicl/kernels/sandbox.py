"""Run model-written code in an OS sandbox (the parent side of ``_boot.py`` and ``_runner.py``).

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
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from longicl.errors import UsageError

__all__ = [
    "CHILD_ENV_NAMES",
    "DEFAULT_MAX_PROCESSES",
    "ISOLATIONS",
    "RUNNER",
    "ChildOutcome",
    "GpuBinds",
    "SandboxLimits",
    "bwrap_argv",
    "gpu_binds",
    "probe",
    "resolve_isolation",
    "run_job",
    "run_python",
]

RUNNER = Path(__file__).with_name("_runner.py")
BOOT = Path(__file__).with_name("_boot.py").read_text(encoding="utf-8")
ISOLATIONS = ("auto", "bwrap", "unshare", "none")
INSTALL_HINT = "install bubblewrap (apt-get install bubblewrap) or util-linux unshare with user namespaces"
DEFAULT_MAX_PROCESSES = 256  # processes and threads of the sandbox's user (torch starts a few threads)
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
)
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_GPU_LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib", "/usr/lib/wsl/lib",
)  # fmt: skip

# The child's whole environment: these names, with values set here (never copied from the parent
# except CUDA_VISIBLE_DEVICES and the locale).
CHILD_ENV_NAMES = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "TEMP", "TMP", "XDG_CACHE_HOME",
    "TRITON_HOME", "TRITON_CACHE_DIR", "TRITON_INTERPRET", "TRITON_LIBCUDA_PATH", "TORCHINDUCTOR_CACHE_DIR",
    "MPLCONFIGDIR", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM", "CUDA_VISIBLE_DEVICES",
)  # fmt: skip


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 60.0
    memory_mb: int = 4096  # CPU: address space of each process; GPU: resident memory of the sandbox
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    max_file_mb: int = 256
    max_log_chars: int = 4000
    max_result_bytes: int = 1 << 20  # the child's stdout (its JSON result) beyond this is a failure
    max_processes: int = DEFAULT_MAX_PROCESSES
    max_open_files: int = 1024
    scratch_mb: int = 512  # each of the tmpfs /tmp and work dir
    isolation: str = "auto"  # ISOLATIONS


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


# ------------------------------------------------------------------------------------------------
# what the child sees


def _gpu_wanted(device: str) -> bool:
    return device != "cpu" and Path("/dev/nvidiactl").exists()


@dataclass(frozen=True)
class GpuBinds:
    devices: tuple[str, ...]  # device nodes, bound with device access
    libraries: tuple[str, ...]  # directories holding the driver's libraries, bound read-only
    libcuda: str | None  # TRITON_LIBCUDA_PATH


def gpu_binds(dev_root: str | Path = "/dev", lib_dirs: Iterable[str | Path] = _GPU_LIB_DIRS) -> GpuBinds:
    """The NVIDIA device nodes (``nvidia0``…, ``nvidiactl``, ``nvidia-uvm*``, ``nvidia-modeset``,
    ``nvidia-caps/``) and the directories that hold ``libcuda.so*`` (the driver's user-space
    libraries sit beside it), as the NVIDIA container toolkit exposes them."""
    root = Path(dev_root)
    devices = tuple(str(p) for p in sorted(root.glob("nvidia*")) if p.name.startswith("nvidia"))
    libraries = tuple(
        str(d) for d in map(Path, lib_dirs) if d.is_dir() and any(d.glob("libcuda.so*"))
    )  # fmt: skip
    return GpuBinds(devices, libraries, libraries[0] if libraries else None)


def _python_dirs() -> list[str]:
    """Where the interpreter, its standard library and the venv's site-packages live."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    dirs.add(str(Path(os.path.realpath(sys.executable)).parent.parent))
    home = os.path.realpath(Path.home())
    out = []
    for d in sorted(os.path.realpath(p) for p in dirs):
        if d == "/" or home == d or home.startswith(d.rstrip("/") + "/"):
            continue  # never the whole disk or the whole home folder
        out.append(d)
    return out


def _ro_paths() -> tuple[list[tuple[str, str]], list[str]]:
    """``(symlinks, directories and files)`` to show read-only, each at its own path."""
    symlinks: list[tuple[str, str]] = []
    binds: list[str] = []
    for path in (*_SYSTEM_DIRS, *_ETC_FILES, *_python_dirs()):
        if os.path.islink(path) and path in _SYSTEM_DIRS:
            symlinks.append((path, os.readlink(path)))
        elif os.path.exists(path) and not any(path.startswith(b.rstrip("/") + "/") for b in binds):
            binds.append(path)
    return symlinks, binds


def child_env(work: str, device: str, gpu: GpuBinds | None) -> dict[str, str]:
    """The whole environment of the child (names from `CHILD_ENV_NAMES`)."""
    bins = dict.fromkeys(
        [str(Path(sys.executable).parent), str(Path(os.path.realpath(sys.executable)).parent)]
    )
    env = {
        "PATH": os.pathsep.join([*bins, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": work,
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": work,
        "TEMP": work,
        "TMP": work,
        "XDG_CACHE_HOME": f"{work}/.cache",
        "TRITON_HOME": work,
        "TRITON_CACHE_DIR": f"{work}/.triton/cache",
        "TORCHINDUCTOR_CACHE_DIR": f"{work}/.cache/inductor",
        "MPLCONFIGDIR": f"{work}/.cache/matplotlib",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if device == "cpu" or gpu is None:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    if gpu is not None and gpu.libcuda:
        env["TRITON_LIBCUDA_PATH"] = gpu.libcuda
    return env


def bwrap_argv(
    work: str | Path,
    command: Sequence[str],
    *,
    inputs: Sequence[str] = (),
    gpu: GpuBinds | None = None,
    scratch_mb: int = 512,
    shm_mb: int = 64,
) -> list[str]:
    """The ``bwrap`` command line running ``command`` with ``work`` as its private work dir.

    ``inputs``: file names in the host's ``work`` directory, shown read-only at the same place."""
    work = str(work)
    argv = [
        "bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--hostname", "sandbox", "--proc", "/proc", "--dev", "/dev",
        "--size", str(shm_mb << 20), "--tmpfs", "/dev/shm",
        "--size", str(scratch_mb << 20), "--tmpfs", "/tmp",
    ]  # fmt: skip
    symlinks, binds = _ro_paths()
    for path, target in symlinks:
        argv += ["--symlink", target, path]
    for path in binds:
        argv += ["--ro-bind", path, path]
    if gpu is not None:
        for node in gpu.devices:
            argv += ["--dev-bind", node, node]
        for lib in gpu.libraries:
            if not any(lib.startswith(b.rstrip("/") + "/") or lib == b for b in binds):
                argv += ["--ro-bind", lib, lib]
    # /proc read-only: the sandbox's uid 0 is the host's when root runs the checker, and the
    # kernel lets that uid write sysctls (/proc/sys) by file mode alone, capabilities or not.
    argv += [
        "--remount-ro",
        "/proc",
        "--remount-ro",
        "/dev",
        "--size",
        str(scratch_mb << 20),
        "--tmpfs",
        work,
    ]
    for name in inputs:
        argv += ["--ro-bind", f"{work}/{name}", f"{work}/{name}"]
    argv += ["--remount-ro", "/", "--chdir", work, "--", *command]
    return argv


def _unshare_config(
    work: str, inputs: Sequence[str], gpu: GpuBinds | None, scratch_mb: int
) -> dict[str, Any]:
    symlinks, binds = _ro_paths()
    devices = [d for d in _DEVICES if os.path.exists(d)]
    if gpu is not None:
        devices += list(gpu.devices)
        binds += [lib for lib in gpu.libraries if not any(lib.startswith(b + "/") or lib == b for b in binds)]
    return {
        "new_root": f"{work}/.root",
        "symlinks": symlinks,
        "ro_binds": binds,
        "dev_binds": devices,
        "scratch_mb": scratch_mb,
        "shm_mb": 64,
        "inputs_dir": work,
        "inputs": list(inputs),
    }


def _rlimits(limits: SandboxLimits, gpu: bool) -> dict[str, int]:
    out = {
        "RLIMIT_CPU": int(limits.timeout_s) + 5,
        "RLIMIT_NPROC": limits.max_processes,
        "RLIMIT_FSIZE": limits.max_file_mb << 20,
        "RLIMIT_NOFILE": limits.max_open_files,
        "RLIMIT_CORE": 0,
    }
    if not gpu and limits.memory_mb:  # CUDA maps a huge address space: the RSS watchdog instead
        out["RLIMIT_AS"] = limits.memory_mb << 20
    return out


def command_line(
    isolation: str, work: str, inputs: Sequence[str], script: str, limits: SandboxLimits
) -> tuple[list[str], dict[str, str], tuple[int, int] | None]:
    """``(argv, environment, pipe)`` that run ``python script`` in ``work``; ``pipe``: the read end
    goes to the child, whose init ends when the write end (kept by the parent) closes."""
    gpu = gpu_binds() if _gpu_wanted(limits.device) else None
    env = child_env(work, limits.device, gpu)
    python = sys.executable
    boot: dict[str, Any] = {
        "argv": [python, "-I", "-B", f"{work}/{script}"],
        "env": env,
        "work": work,
        "rlimits": _rlimits(limits, gpu is not None),
        "drop_caps": isolation == "unshare",
        "setsid": isolation == "unshare",
    }
    pipe: tuple[int, int] | None = None
    if isolation == "unshare":
        boot.update(_unshare_config(work, inputs, gpu, limits.scratch_mb))
        pipe = os.pipe()  # the boot step (the namespace's init) ends when the write end closes
        boot["parent_fd"] = pipe[0]
    command = [python, "-I", "-S", "-c", BOOT, json.dumps(boot)]
    if isolation == "bwrap":
        argv = bwrap_argv(work, command, inputs=inputs, gpu=gpu, scratch_mb=limits.scratch_mb)
    elif isolation == "unshare":
        argv = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--mount", "--ipc"]
        argv += ["--uts", "--kill-child", "--", *command]
    else:
        argv = command
    return argv, env, pipe


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
        return _supervise(isolation, str(host), names, "main.py", stdin, limits)
    finally:
        shutil.rmtree(host, ignore_errors=True)


def run_job(
    job: dict[str, Any], files: dict[str, str], limits: SandboxLimits, *, python_guards: bool = True
) -> ChildOutcome:
    """Run ``_runner.py`` on ``job`` with ``files`` (role → source text) in the sandbox.

    ``job`` gets ``work_dir``, ``device``, ``memory_mb``, ``guards`` and ``<role>_path`` for each file."""
    isolation = resolve_isolation(limits.isolation)
    host = Path(tempfile.mkdtemp(prefix="longicl-kernel-")).resolve()
    try:
        names = ["_runner.py"]
        shutil.copyfile(RUNNER, host / "_runner.py")
        for role, text in files.items():
            (host / f"{role}.py").write_text(text, encoding="utf-8")
            job[f"{role}_path"] = str(host / f"{role}.py")
            names.append(f"{role}.py")
        if isolation == "unshare":
            (host / ".root").mkdir()
        job.update(work_dir=str(host), device=limits.device, memory_mb=limits.memory_mb, guards=python_guards)
        stdin = json.dumps(job).encode()
        return _supervise(isolation, str(host), names, "_runner.py", stdin, limits)
    finally:
        shutil.rmtree(host, ignore_errors=True)


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


def _tree_usage(root: int) -> tuple[float, int]:
    """Resident memory (MiB) and number of ``root`` and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
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
    return sum(rss.get(pid, 0) for pid in tree) / (1024 * 1024), len(tree)


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the outer bwrap/unshare; the namespace dies with it
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _supervise(
    isolation: str, work: str, inputs: Sequence[str], script: str, stdin: bytes, limits: SandboxLimits
) -> ChildOutcome:
    start = time.monotonic()
    argv, env, pipe = command_line(isolation, work, inputs, script, limits)
    keep = () if pipe is None else (pipe[0],)
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
        )
    except OSError:
        if pipe is not None:
            os.close(pipe[1])
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
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.1)
    _kill(proc)
    proc.wait()
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

"""What the sandboxed child sees, and the command line that sets it up (the parent's side of ``_boot.py``).

`command_line` turns an isolation (``bwrap``, ``unshare`` or ``none``) and `SandboxLimits` into
the argv, environment and pipe `supervisor.supervise` starts: the ``bwrap`` flags (`bwrap_argv`) or
the mount plan ``_boot.py`` carries out under ``unshare``; the read-only binds (system directories,
a few ``/etc`` files, the Python installation); the NVIDIA nodes and driver libraries on a GPU
(`gpu_binds`); the child's whole environment (`child_env`, names from `CHILD_ENV_NAMES`); its
rlimits. ``sandbox.py`` says what the sandbox guarantees; docs/security.md lists each guarantee
beside its test.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOOT = Path(__file__).with_name("_boot.py").read_text(encoding="utf-8")
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
    """The bounds of one sandboxed run (the checker sets them from ``kernels.*``)."""

    timeout_s: float = 60.0
    memory_mb: int = 4096  # CPU: address space of each process; GPU: resident memory of the sandbox
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    max_file_mb: int = 256
    max_log_chars: int = 4000
    max_result_bytes: int = 1 << 20  # the child's stdout (its JSON result) beyond this is a failure
    max_processes: int = DEFAULT_MAX_PROCESSES
    max_open_files: int = 1024
    scratch_mb: int = 512  # each of the tmpfs /tmp and work dir
    isolation: str = "auto"  # sandbox.ISOLATIONS


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

"""First code inside the sandbox: mounts (``unshare`` only), rlimits, no capabilities, then exec.

Run by the sandbox (``isolation.command_line``) as ``python -I -S -c <this source> <config JSON>``,
standard library only. With ``bwrap`` the namespaces and mounts are already in place and this only
sets the rlimits and execs the command. Under ``unshare -U -r -n -p -f -m -i -u`` it is PID 1 of
the new namespaces and root of the new user namespace, and it:

1. builds the new root on a size-limited tmpfs: read-only binds of the paths the command needs,
   a fresh ``/proc`` of the new PID namespace, a handful of device nodes, private tmpfs for
   ``/tmp``, ``/dev/shm`` and the work dir, the job's input files bound read-only into it;
2. ``pivot_root`` into it and detaches the old root (nothing of the host remains reachable);
3. forks the command and stays as its init: reaps, and exits (taking the namespace with it) when
   the command ends or when the parent's pipe closes (the parent died);
4. in the command: rlimits, drops every capability (bounding set, securebits ``noroot`` so an
   ``execve`` as uid 0 gains none), ``no_new_privs``, a new session, ``execve`` with the given
   environment.

Any failure before the exec prints one line on stderr and exits 125 (the parent reports it).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
import threading

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
_LOCKED_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}
PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 24, 28, 38, 47
# noroot, no_setuid_fixup, keep_caps (off), no_cap_ambient_raise: each set and locked
SECUREBITS = 0b11101111

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def _makedirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _bind(source: str, target: str, *, writable: bool = False, device: bool = False) -> None:
    """``source`` bound on ``target`` (created: a dir or an empty file), read-only unless asked."""
    if os.path.isdir(source):
        _makedirs(target)
    else:
        _makedirs(os.path.dirname(target))
        with open(target, "a"):
            pass
    _mount(source, target, None, MS_BIND)
    flags = os.statvfs(target).f_flag & _LOCKED_FLAGS  # the flags a user namespace may not clear
    if not device:
        flags |= MS_NODEV | MS_NOSUID
    if not writable:
        flags |= MS_RDONLY
    _mount(None, target, None, MS_BIND | MS_REMOUNT | flags)


def _tmpfs(target: str, size_mb: int, mode: str = "1777") -> None:
    _makedirs(target)
    _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_mb}m,mode={mode}")


def build_root(cfg: dict) -> None:
    """The new root (see the module docstring, step 1 and 2)."""
    new = cfg["new_root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
    for path, target in cfg["symlinks"]:
        _makedirs(os.path.dirname(new + path))
        os.symlink(target, new + path)
    for path in cfg["ro_binds"]:
        _bind(path, new + path)
    for path in cfg["dev_binds"]:
        _bind(path, new + path, writable=True, device=True)
    _makedirs(new + "/proc")
    # read-only: as the host's root (unshare -r run by root) the sandbox could write sysctls
    _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
    _tmpfs(new + "/tmp", cfg["scratch_mb"])
    _tmpfs(new + "/dev/shm", cfg["shm_mb"])
    work = cfg["work"]
    _tmpfs(new + work, cfg["scratch_mb"], mode="0700")
    for name in cfg["inputs"]:
        _bind(os.path.join(cfg["inputs_dir"], name), new + os.path.join(work, name))
    os.chdir(new)
    _check(_libc.syscall(SYS_PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    _mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def drop_capabilities() -> None:
    """No capability now, none after an ``execve`` as uid 0, and no way to gain any."""
    _check(_libc.prctl(PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0), "securebits")
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    _libc.prctl(PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    _check(_libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def exec_command(cfg: dict) -> None:
    for name, value in cfg["rlimits"].items():
        limit = int(value)
        resource.setrlimit(getattr(resource, name), (limit, limit))
    if cfg["drop_caps"]:
        drop_capabilities()
    if cfg["setsid"]:
        os.setsid()
    os.chdir(cfg["work"])
    os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])


def init(cfg: dict) -> None:
    """PID 1 of the namespace: run the command, reap, end with it or with the parent."""
    watch = int(cfg["parent_fd"])
    child = os.fork()
    if child == 0:
        os.close(watch)
        exec_command(cfg)
    drop_capabilities()

    def parent_gone() -> None:  # EOF: the parent's end closed (it finished, or it died)
        while os.read(watch, 1):
            pass
        os._exit(137)  # PID 1 exits and the kernel kills the rest of the namespace

    threading.Thread(target=parent_gone, daemon=True).start()
    while True:
        try:
            pid, code = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            status = os.waitstatus_to_exitcode(code)
            os._exit(status if status >= 0 else 128 - status)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    try:
        if cfg.get("new_root"):
            build_root(cfg)
            init(cfg)
        else:
            exec_command(cfg)
    except OSError as exc:
        print(f"sandbox setup failed: {exc}", file=sys.stderr)
        os._exit(125)


if __name__ == "__main__":
    main()

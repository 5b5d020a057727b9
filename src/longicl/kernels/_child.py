"""Child-process side of the kernel checker. Not a public API; run only by ``sandbox.py``.

Started as ``python -I -B _child.py`` inside the OS sandbox (``sandbox.py``, which also sets the
rlimits), in its private work dir, it reads one JSON job from
stdin and writes JSON lines to the file descriptor that was stdout when it started (the candidate's
own prints go to stderr): ``{"event": "stage", "stage": …}`` when a stage starts, and one
``{"event": "result", …}`` at the end. It imports only the standard library at module level so that
it runs under ``-I`` without the ``longicl`` package being installed.

Guards (``job["guards"]``, on unless a test turns them off): defence in depth and a name for what
a candidate tried; not the security boundary (``ctypes`` or a subprocess bypass them; the OS
sandbox is what holds):

* network: ``socket`` connect/resolve functions are replaced and an audit hook refuses
  ``socket.connect``/``socket.getaddrinfo``/… events;
* filesystem: after torch and triton are imported, an audit hook refuses opening files for
  writing and removing/renaming/creating paths outside the working directory;
* processes: the audit hook refuses spawning programs other than the toolchain Triton uses on a GPU;
* every guard that fires sets a flag, so a candidate that swallows the exception still fails.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import socket
import sys
import time
import traceback
from typing import Any

STAGES = ("parse", "import", "signature", "run", "output", "agree", "passed")

_FLAGS: dict[str, str] = {}  # kind -> first message
_STATE = {"fs_armed": False, "work_dir": "", "shim_used": False}
_ALLOWED_PROGRAMS = {"ptxas", "cc", "gcc", "clang", "cuobjdump", "nvdisasm", "ldconfig", "ld", "nvcc", "g++"}
_OUT_FD = -1


class SandboxViolation(PermissionError):
    """Raised inside the candidate when it touches something it must not."""


def _emit(obj: dict[str, Any]) -> None:
    data = (json.dumps(obj, default=str) + "\n").encode()
    os.write(_OUT_FD, data)


def _flag(kind: str, message: str) -> SandboxViolation:
    _FLAGS.setdefault(kind, message)
    return SandboxViolation(f"[sandbox] {message}")


# ------------------------------------------------------------------------------------------------
# Guards


def _blocked_network(*_args: Any, **_kwargs: Any) -> Any:
    raise _flag("network", "network access is blocked in the kernel checker")


def _install_network_guard() -> None:
    socket.socket.connect = _blocked_network  # type: ignore[method-assign]
    socket.socket.connect_ex = _blocked_network  # type: ignore[method-assign]
    socket.socket.sendto = _blocked_network  # type: ignore[method-assign,assignment]
    socket.create_connection = _blocked_network  # type: ignore[assignment]
    socket.getaddrinfo = _blocked_network  # type: ignore[assignment]
    socket.gethostbyname = _blocked_network  # type: ignore[assignment]
    socket.gethostbyname_ex = _blocked_network  # type: ignore[assignment]
    socket.gethostbyaddr = _blocked_network  # type: ignore[assignment]


_NET_EVENTS = {
    "socket.connect",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyaddr",
    "socket.sendto",
    "socket.sendmsg",
    "socket.getnameinfo",
}
_PATH_EVENTS = {
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.rename": (0, 1),
    "os.replace": (0, 1),
    "os.link": (0, 1),
    "os.symlink": (1,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.truncate": (0,),
    "os.utime": (0,),
    "shutil.rmtree": (0,),
    "shutil.copyfile": (1,),
    "shutil.move": (0, 1),
}
_SPAWN_EVENTS = {"os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _outside(path: Any) -> bool:
    if isinstance(path, int) or path is None:
        return False
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    path = os.fspath(path)
    if path in ("/dev/null", "/dev/shm") or path.startswith("/dev/shm/"):
        return False
    full = os.path.realpath(os.path.join(os.getcwd(), path))
    root = _STATE["work_dir"]
    return not (full == root or full.startswith(root + os.sep))


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in _NET_EVENTS:
        raise _flag("network", f"network access is blocked ({event})")
    if event in _SPAWN_EVENTS:
        program = ""
        if event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn") and len(args) > 1:
            argv = args[1]
            first = argv[0] if isinstance(argv, list | tuple) and argv else args[0]
            if isinstance(first, str | bytes | os.PathLike):
                program = os.path.basename(os.fsdecode(first))
        base = program  # os.system / pty.spawn always stay blocked (base "")
        if base in _ALLOWED_PROGRAMS or re.search(r"(^|-)(gcc|g\+\+|cc|clang)(-[\d.]+)?$|^ptxas", base):
            return  # Triton's own toolchain on a GPU (launcher build, ptxas, ldconfig)
        raise _flag("process", f"starting programs is blocked ({event} {program or args[0]!r:.100})")
    if not _STATE["fs_armed"]:
        return
    if event == "open" and len(args) >= 3:
        path, mode, flags = args[0], args[1], args[2]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writes and _outside(path):
            raise _flag("filesystem", f"writing outside the working directory is blocked ({path!s:.200})")
        return
    positions = _PATH_EVENTS.get(event)
    if positions:
        for i in positions:
            if i < len(args) and _outside(args[i]):
                raise _flag(
                    "filesystem", f"{event} outside the working directory is blocked ({args[i]!s:.200})"
                )


# ------------------------------------------------------------------------------------------------
# CUDA shim (CPU only): code written for a GPU ("device='cuda'", "assert x.is_cuda") runs on the CPU


def _install_cuda_shim(torch: Any) -> None:
    from torch.overrides import TorchFunctionMode

    is_cuda = torch.Tensor.is_cuda

    def cuda_like(dev: Any) -> bool:
        if isinstance(dev, str):
            return dev.startswith("cuda")
        return isinstance(dev, torch.device) and dev.type == "cuda"

    class CudaOnCpu(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
        ) -> Any:
            kwargs = dict(kwargs or {})
            if getattr(func, "__self__", None) is is_cuda:
                _STATE["shim_used"] = True
                return True
            name = getattr(func, "__name__", "")
            if name == "cuda" and args and isinstance(args[0], torch.Tensor):
                _STATE["shim_used"] = True
                return args[0]
            if cuda_like(kwargs.get("device")):
                kwargs["device"] = "cpu"
                _STATE["shim_used"] = True
            if name == "to" and any(cuda_like(a) for a in args):
                args = tuple("cpu" if cuda_like(a) else a for a in args)
                _STATE["shim_used"] = True
            return func(*args, **kwargs)

    class _Device:
        def __init__(self, *_a: Any, **_k: Any) -> None:
            _STATE["shim_used"] = True

        def __enter__(self) -> _Device:
            return self

        def __exit__(self, *_exc: Any) -> None:
            return None

    class _Props:
        name = "cpu-shim"
        multi_processor_count = 4
        total_memory = 1 << 32
        major, minor = 8, 0
        max_shared_memory_per_block_optin = 1 << 16
        warp_size = 32

    def used(value: Any) -> Any:
        def fn(*_a: Any, **_k: Any) -> Any:
            _STATE["shim_used"] = True
            return value

        return fn

    torch.cuda.current_device = used(0)
    torch.cuda.set_device = used(None)
    torch.cuda.synchronize = used(None)
    torch.cuda.device = _Device
    torch.cuda.get_device_capability = used((8, 0))
    torch.cuda.get_device_properties = used(_Props())
    torch.cuda.get_device_name = used("cpu-shim")
    torch.cuda.empty_cache = used(None)
    CudaOnCpu().__enter__()


# ------------------------------------------------------------------------------------------------
# Helpers


def _kind_of(exc: BaseException) -> str:
    for kind in ("network", "filesystem", "process"):
        if kind in _FLAGS:
            return kind
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or re.search(
        r"can't allocate memory|Cannot allocate memory|out of memory|bad_alloc|DefaultCPUAllocator", text
    ):
        return "memory"
    if re.search(
        r"not compiled with CUDA|no NVIDIA driver|CUDA driver|cuda.*not available|is_cuda|CUDA tensors only"
        r"|_cuda_getCurrentRawStream|active drivers \(\[\]\)",
        text,
        re.I,
    ):
        return "cuda"
    return "exception"


def _format_exc(exc: BaseException, limit: int = 2500) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    # Keep the frames in the candidate/reference and the message; drop this script's own frames.
    keep = [ln for ln in lines if "_child.py" not in ln]
    text = "".join(keep[-12:]).strip()
    return text[-limit:]


class StageFailure(Exception):
    def __init__(self, stage: str, kind: str, message: str) -> None:
        super().__init__(message)
        self.stage, self.kind, self.message = stage, kind, message


def _check_flags(stage: str) -> None:
    for kind in ("network", "filesystem", "process"):
        if kind in _FLAGS:
            raise StageFailure(stage, kind, _FLAGS[kind])


def _load_module(path: str, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _find_wrapper(module: Any, names: list[str], fallback: str | None) -> tuple[str, Any] | None:
    for name in names:
        obj = getattr(module, name, None)
        if obj is not None and callable(obj):
            return name, obj
    if not names and fallback:
        obj = getattr(module, fallback, None)
        if obj is not None and callable(obj):
            return fallback, obj
    return None


# ------------------------------------------------------------------------------------------------
# Inputs


def _make_tensor(torch: Any, spec: dict[str, Any], device: str, gen: Any) -> Any:
    shape = list(spec.get("shape") or [4, 8])
    domain = spec.get("domain", "normal")
    if spec["type"] == "mask":
        return torch.rand(shape, generator=gen) > 0.5
    if spec["type"] == "index":
        high = int(domain[5:]) if domain.startswith("index") and domain[5:].isdigit() else 2
        return torch.randint(0, high, shape, generator=gen, dtype=torch.int64).to(device)
    if domain == "positive":
        t = torch.rand(shape, generator=gen) + 0.1
    elif domain == "unit":
        t = (torch.rand(shape, generator=gen) * 2 - 1) * 0.9
    elif domain == "open01":
        t = torch.rand(shape, generator=gen) * 0.9 + 0.05
    else:
        t = torch.randn(shape, generator=gen)
        if domain in ("spd", "wellcond") and len(shape) >= 2 and shape[-1] == shape[-2]:
            eye = torch.eye(shape[-1])
            t = t @ t.transpose(-1, -2) + shape[-1] * eye if domain == "spd" else t + shape[-1] * eye
    return t.to(dtype=getattr(torch, spec.get("dtype") or "float32")).to(device)


def _build_args(torch: Any, plan: dict[str, Any], device: str, seed: int) -> tuple[list, dict]:
    gen = torch.Generator().manual_seed(seed)
    pos: list[Any] = []
    kw: dict[str, Any] = {}
    for spec in plan["args"]:
        if spec["type"] in ("tensor", "mask", "index", "any"):
            value = _make_tensor(torch, spec, device, gen)
        elif spec["type"] == "tensors":
            value = [_make_tensor(torch, {**spec, "type": "tensor"}, device, gen) for _ in range(2)]
        else:
            value = spec.get("value")
            if spec["type"] == "ints" and isinstance(value, list):
                value = tuple(value)
        if spec["how"] == "keyword":
            kw[spec["name"]] = value
        elif spec["how"] == "var_positional" and spec["type"] == "ints" and isinstance(value, tuple):
            pos.extend(value)
        else:
            pos.append(value)
    return pos, kw


def _clone(torch: Any, obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, list):
        return [_clone(torch, o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_clone(torch, o) for o in obj)
    if isinstance(obj, dict):
        return {k: _clone(torch, v) for k, v in obj.items()}
    return obj


def _accepted(fn: Any, pos: list, kw: dict, extra: dict) -> dict:
    """The subset of ``extra`` keyword arguments the callable accepts."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}
    out = {}
    for k, v in extra.items():
        try:
            sig.bind(*pos, **kw, **{k: v})
        except TypeError:
            continue
        out[k] = v
    return out


def _call(torch: Any, fn: Any, args: tuple[list, dict], extra: dict, seed: int) -> tuple[Any, list, dict]:
    pos, kw = _clone(torch, args[0]), _clone(torch, args[1])
    kw.update(_accepted(fn, pos, kw, extra))
    torch.manual_seed(seed)
    result = fn(*pos, **kw)
    return result, pos, kw


def _flatten(torch: Any, obj: Any, out: list) -> None:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, bool | int | float | complex):
        out.append(torch.tensor(obj))
    elif isinstance(obj, list | tuple):
        for o in obj:
            _flatten(torch, o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _flatten(torch, o, out)


def _outputs(torch: Any, result: Any, pos: list, kw: dict) -> list:
    out: list = []
    if result is None:  # in-place convention: the mutated inputs are the output
        _flatten(torch, [a for a in pos if isinstance(a, torch.Tensor)], out)
    else:
        _flatten(torch, result, out)
    return out


def _describe(tensors: list) -> list[dict[str, Any]]:
    return [{"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")} for t in tensors]


def _compare(torch: Any, got: Any, want: Any, rtol: float, atol: float) -> str | None:
    """None when equal within tolerance, else a short description of the difference."""
    g, w = got.detach().cpu(), want.detach().cpu()
    if g.shape != w.shape:
        if g.numel() == w.numel() and g.numel() <= 1:
            g = g.reshape(w.shape)
        else:
            return f"shape {list(g.shape)} != {list(w.shape)}"
    if g.is_complex() or w.is_complex():
        g, w = g.to(torch.complex128), w.to(torch.complex128)
    elif not g.is_floating_point() and not w.is_floating_point():
        if torch.equal(g.to(torch.int64), w.to(torch.int64)):
            return None
        bad = (g.to(torch.int64) != w.to(torch.int64)).sum().item()
        return f"{bad}/{g.numel()} integer/bool values differ"
    else:
        low = {torch.float16, torch.bfloat16}
        if g.dtype in low or w.dtype in low:
            rtol, atol = max(rtol, 1e-2), max(atol, 1e-2)
        g, w = g.to(torch.float64), w.to(torch.float64)
    if torch.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True):
        return None
    diff = (g - w).abs()
    finite = torch.isfinite(diff)
    worst = diff[finite].max().item() if finite.any() else math.inf
    bad = (~torch.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)).sum().item()
    return f"{bad}/{g.numel()} values differ, max abs diff {worst:.3g}"


# ------------------------------------------------------------------------------------------------
# Main


def _run(job: dict[str, Any], result: dict[str, Any]) -> None:
    """The stages in order; each records what it learnt in ``result`` or raises `StageFailure`."""
    torch, device = _setup(job, result)
    candidate = _import_stage(job)
    fn = _signature_stage(job, result, candidate)
    ref_fn = _load_reference(job, result)
    plan, out, ref_out = _run_stage(job, result, torch, device, fn, ref_fn)
    _output_stage(result, torch, device, plan, out, ref_out)
    if ref_out is not None:
        _agree_stage(job, result, torch, out, ref_out)
    result["stage"] = "passed"


def _setup(job: dict[str, Any], result: dict[str, Any]) -> tuple[Any, str]:
    """torch and triton imported, the device chosen, the CUDA shim and memory limit in place."""
    t0 = time.monotonic()
    try:
        import torch
    except BaseException as exc:  # noqa: BLE001 - anything from a broken install
        raise StageFailure("import", "environment", f"cannot import torch: {exc}") from None
    device = job.get("device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    result["device"] = device
    torch.set_num_threads(1)
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except BaseException as exc:  # noqa: BLE001
        raise StageFailure("import", "environment", f"cannot import triton: {exc}") from None
    if device == "cpu" and job.get("cuda_shim", True):
        _install_cuda_shim(torch)
    result["setup_seconds"] = round(time.monotonic() - t0, 3)
    _STATE["fs_armed"] = True
    return torch, device


def _import_stage(job: dict[str, Any]) -> Any:
    stage = "import"
    _emit({"event": "stage", "stage": stage})
    try:
        candidate = _load_module(job["candidate_path"], "candidate")
    except BaseException as exc:  # noqa: BLE001 - candidate code may raise anything, even SystemExit
        raise StageFailure(stage, _kind_of(exc), _format_exc(exc)) from None
    _check_flags(stage)
    return candidate


def _signature_stage(job: dict[str, Any], result: dict[str, Any], candidate: Any) -> Any:
    """The wrapper, found by name and checked to accept the first plan's arguments."""
    stage = "signature"
    _emit({"event": "stage", "stage": stage})
    names = list(job.get("names") or [])
    found = _find_wrapper(candidate, names, job.get("fallback_name"))
    if found is None:
        defined = sorted(
            n
            for n, v in vars(candidate).items()
            if callable(v) and getattr(v, "__module__", "") == "candidate"
        )
        wanted = " or ".join(names) if names else "entry function"
        raise StageFailure(
            stage, "signature", f"no {wanted} defined (module defines: {', '.join(defined)[:300]})"
        )
    result["wrapper"], fn = found
    plans = job.get("plans") or []
    if plans:
        _check_binding(job, result, fn, plans[0])
    _check_flags(stage)
    return fn


def _check_binding(job: dict[str, Any], result: dict[str, Any], fn: Any, plan: dict[str, Any]) -> None:
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        result["notes"].append("wrapper signature cannot be inspected; binding not checked")
        return
    pos = [a["name"] for a in plan["args"] if a["how"] != "keyword"]
    kw = {a["name"]: None for a in plan["args"] if a["how"] == "keyword"}
    try:
        sig.bind(*pos, **kw)
    except TypeError as exc:
        params = ", ".join(str(p) for p in sig.parameters.values())
        raise StageFailure("signature", "signature", f"{result['wrapper']}({params}): {exc}") from None
    have = set(sig.parameters)
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    missing = [n for n in job.get("all_params", []) if n not in have and not var_kw]
    if missing:
        result["notes"].append(f"optional parameters not accepted: {', '.join(missing)}")
    positional = [
        p.name
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if positional[: len(pos)] != pos:
        result["notes"].append(f"positional names {positional[: len(pos)]} differ from {pos}")


def _load_reference(job: dict[str, Any], result: dict[str, Any]) -> Any:
    """The reference's wrapper, or None; its failures are notes, never the candidate's."""
    if not job.get("reference_path"):
        return None
    ref_fn = None
    try:
        reference = _load_module(job["reference_path"], "reference")
        ref_found = _find_wrapper(reference, list(job.get("names") or []), job.get("reference_fallback_name"))
        if ref_found is None:
            result["notes"].append("reference defines no matching wrapper")
        else:
            ref_fn = ref_found[1]
    except BaseException as exc:  # noqa: BLE001
        result["notes"].append(f"reference failed to import: {_format_exc(exc, 400)}")
    _FLAGS.clear()  # the guards judge the candidate only
    return ref_fn


def _run_stage(
    job: dict[str, Any], result: dict[str, Any], torch: Any, device: str, fn: Any, ref_fn: Any
) -> tuple[dict[str, Any], Any, list | None]:
    """``(plan, outputs, reference outputs)``: the reference picks the plan, then the candidate runs."""
    stage = "run"
    _emit({"event": "stage", "stage": stage})
    seed = int(job.get("seed", 0))
    plans = job.get("plans") or []
    if not plans:
        plans = [{"name": "no-args", "args": [], "optional_kwargs": {}, "expected_shape": None}]
    chosen, ref_out = _reference_plan(result, torch, device, ref_fn, plans, seed)
    run_plans = [chosen] if chosen is not None else plans
    first_error: StageFailure | None = None
    plan_errors: list[str] = []
    out: Any = None
    t_run = time.monotonic()
    for plan in run_plans:
        try:
            args = _build_args(torch, plan, device, seed)
            r, cpos, ckw = _call(torch, fn, args, plan.get("optional_kwargs") or {}, seed)
            _check_flags(stage)
            out = _outputs(torch, r, cpos, ckw)
            chosen = plan
            first_error = None
            break
        except StageFailure:
            raise
        except BaseException as exc:  # noqa: BLE001
            if _FLAGS:
                _check_flags(stage)
            kind = _kind_of(exc)
            if first_error is None:
                first_error = StageFailure(stage, kind, _format_exc(exc))
            plan_errors.append(f"{plan['name']}: {type(exc).__name__}: {str(exc)[:160]}")
            if kind != "exception":
                break  # out of memory or CUDA-only: other shapes will not help
    result["run_seconds"] = round(time.monotonic() - t_run, 3)
    if first_error is not None and len(plan_errors) > 1:
        result["notes"].append("every input plan failed: " + " | ".join(plan_errors))
    if first_error is not None or chosen is None:
        raise first_error or StageFailure(stage, "exception", "no input plan")
    result["callable"] = True
    result["plan"] = chosen["name"]
    return chosen, out, ref_out


def _reference_plan(
    result: dict[str, Any], torch: Any, device: str, ref_fn: Any, plans: list[dict[str, Any]], seed: int
) -> tuple[dict[str, Any] | None, list | None]:
    """The first plan the reference accepts, and its outputs; ``(None, None)`` without one."""
    if ref_fn is None:
        return None, None
    errors = []
    for plan in plans:
        try:
            args = _build_args(torch, plan, device, seed)
            r, rpos, rkw = _call(torch, ref_fn, args, plan.get("optional_kwargs") or {}, seed)
            ref_out = _outputs(torch, r, rpos, rkw)
            _FLAGS.clear()
            return plan, ref_out
        except BaseException as exc:  # noqa: BLE001
            errors.append(f"{plan['name']}: {type(exc).__name__}: {str(exc)[:200]}")
    _FLAGS.clear()
    result["notes"].append("reference failed on every input plan: " + " | ".join(errors))
    return None, None


def _output_stage(
    result: dict[str, Any], torch: Any, device: str, plan: dict[str, Any], out: Any, ref_out: list | None
) -> None:
    """Tensors came back: as many and shaped as the reference's, or the expected shape and finite."""
    stage = "output"
    _emit({"event": "stage", "stage": stage})
    result["outputs"] = _describe(out)
    if device == "cuda":
        torch.cuda.synchronize()
    if not out:
        raise StageFailure(stage, "output", "the wrapper returned no tensor")
    if ref_out is not None:
        result["reference_outputs"] = _describe(ref_out)
        if len(out) != len(ref_out):
            raise StageFailure(
                stage, "output", f"returned {len(out)} tensor(s), reference returns {len(ref_out)}"
            )
        for i, (g, w) in enumerate(zip(out, ref_out, strict=True)):
            if g.shape != w.shape and not (g.numel() == w.numel() == 1):
                raise StageFailure(
                    stage, "output", f"output {i}: shape {list(g.shape)} != reference {list(w.shape)}"
                )
    else:
        expected = plan.get("expected_shape")
        if expected and list(out[0].shape) != list(expected):
            raise StageFailure(stage, "output", f"shape {list(out[0].shape)} != expected {expected}")
        for i, t in enumerate(out):
            if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
                raise StageFailure(stage, "output", f"output {i} has non-finite values")


def _agree_stage(job: dict[str, Any], result: dict[str, Any], torch: Any, out: Any, ref_out: list) -> None:
    stage = "agree"
    _emit({"event": "stage", "stage": stage})
    rtol, atol = float(job.get("rtol", 1e-3)), float(job.get("atol", 1e-3))
    for i, (g, w) in enumerate(zip(out, ref_out, strict=True)):
        problem = _compare(torch, g, w, rtol, atol)
        if problem:
            result["agrees"] = False
            raise StageFailure(stage, "mismatch", f"output {i}: {problem}")
    result["agrees"] = True


def main() -> None:
    global _OUT_FD
    _OUT_FD = os.dup(1)
    os.dup2(2, 1)  # the candidate's prints (Python and C level) go to stderr
    sys.stdout = sys.stderr
    job = json.loads(sys.stdin.read())
    _STATE["work_dir"] = os.path.realpath(job["work_dir"])
    os.chdir(_STATE["work_dir"])
    if job.get("guards", True):
        _install_network_guard()
        sys.addaudithook(_audit)
    result: dict[str, Any] = {
        "event": "result",
        "stage": "import",
        "kind": None,
        "callable": False,
        "agrees": None,
        "error": None,
        "notes": [],
    }
    try:
        _run(job, result)
    except StageFailure as failure:
        result.update(stage=failure.stage, kind=failure.kind, error=failure.message)
    except BaseException as exc:  # noqa: BLE001 - report, never crash
        result.update(kind=_kind_of(exc), error=_format_exc(exc))
    result["cuda_shim_used"] = bool(_STATE["shim_used"])
    if result["kind"] == "exception" and result.get("device") == "cpu" and _STATE["shim_used"]:
        result["notes"].append("the code targets CUDA; it ran through the CPU shim")
    _emit(result)
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: candidate atexit hooks and threads cannot hang us


if __name__ == "__main__":
    main()

"""Check a generated Triton module by running it: does it import, expose the wrapper, run, agree?

:func:`check_candidate` never raises for anything the candidate does; every outcome is a
:class:`CheckResult`. The candidate runs in an OS sandbox (``sandbox.py``: bubblewrap or unshare;
namespaces, read-only filesystem, no network, an allow-listed environment, rlimits) with a
wall-clock timeout and a memory limit, and (on a CPU) ``TRITON_INTERPRET=1`` so Triton kernels run in
Triton's interpreter. ``_child.py`` adds Python-level guards as defence in depth and to name what
a candidate tried (``network``, ``filesystem``, ``process``); the sandbox holds without them.

Stages, in order (``CheckResult.stage`` is the first one that failed, or ``passed``):

* ``parse``: the module parses (``ast.parse``; checked here, without starting a process);
* ``import``: executing the module raises nothing and trips no guard;
* ``signature``: it defines the wrapper named by the task (or, for inputs that name none, a
  top-level function) and that wrapper accepts the task's required parameters;
* ``run``: called on small random inputs (``signature.input_plans``), it returns without error;
* ``output``: it returned tensors; shapes match the reference's (or the hinted output shape) and,
  without a reference, values are finite;
* ``agree``: with a reference module, every output matches within ``rtol``/``atol`` (1e-3; 1e-2
  for half precision), NaNs at the same places count as equal, integers/bools exactly;
* ``passed``: all of the above that apply (``agree`` only applies with a reference).

CLI::

    python -m longicl.kernels.check CANDIDATE.py --task-input SAMPLE.txt [--reference REF.py]
        [--timeout S] [--memory-mb M] [--device auto|cpu|cuda] [--sandbox auto|bwrap|unshare|none]

prints one JSON object (the result) on stdout; exit 0 whenever the check ran, 2 on bad arguments
or when no OS sandbox is available (one line naming what to install).
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from longicl.config_values import load_defaults
from longicl.errors import ExitCode, UsageError, run_command
from longicl.kernels.extract import extract_code
from longicl.kernels.sandbox import ISOLATIONS, SandboxLimits, run_job
from longicl.kernels.signature import (
    WrapperSignature,
    input_plans,
    parse_signature,
    parse_wrapper_info,
    signature_from_source,
)

__all__ = [
    "DEFAULT_MEMORY_MB",
    "FAILURE_KINDS",
    "CheckResult",
    "GoldReport",
    "Stage",
    "check_answer",
    "check_candidate",
    "check_gold_examples",
    "main",
    "resolve_signature",
]

# The checker's defaults are conf/kernels/default.yaml's ``check`` (their only home). Address-space
# limit for the child on a CPU: `import torch, triton` plus a small interpreted kernel peaks at
# ~0.95 GB of address space (torch 2.13 CPU, triton 3.9, measured); 4 GB leaves the candidate ~3 GB.
_CHECK_DEFAULTS = load_defaults("kernels")["check"]
DEFAULT_MEMORY_MB = int(_CHECK_DEFAULTS["memory_mb"])
DEFAULT_TIMEOUT_S = float(_CHECK_DEFAULTS["timeout"])
DEFAULT_RTOL, DEFAULT_ATOL = float(_CHECK_DEFAULTS["rtol"]), float(_CHECK_DEFAULTS["atol"])


class Stage(StrEnum):
    """The stage a check reached: the first that failed, or PASSED."""

    PARSE = "parse"
    IMPORT = "import"
    SIGNATURE = "signature"
    RUN = "run"
    OUTPUT = "output"
    AGREE = "agree"
    PASSED = "passed"


# Why a stage failed (CheckResult.kind; None when passed):
FAILURE_KINDS = {
    "empty": "no code at all",
    "syntax": "the module does not parse",
    "exception": "the candidate raised",
    "timeout": "the wall-clock limit was hit; the process group was killed",
    "memory": "the memory limit was hit (allocation refused or the process killed)",
    "network": "the candidate tried to use the network",
    "filesystem": "the candidate tried to write/remove/rename outside its directory",
    "process": "the candidate tried to start another program",
    "cuda": "the code needs CUDA that the CPU shim could not stand in for",
    "signature": "the wrapper is missing or does not accept the task's parameters",
    "output": "no tensor returned, wrong shape/count, or non-finite values",
    "mismatch": "outputs differ from the reference",
    "crash": "the child process died without a report (signal, os._exit, interpreter crash, oversize result)",
    "environment": "torch/triton could not be imported in the child, or the sandbox could not be set up",
}


@dataclass
class CheckResult:
    """Outcome of one check. ``callable``: the wrapper ran and returned; ``agrees``: None without a
    usable reference."""

    stage: Stage
    callable: bool = False
    agrees: bool | None = None
    error: str | None = None
    seconds: float = 0.0
    kind: str | None = None
    wrapper: str | None = None  # the function that was called
    plan: str | None = None  # which input plan ran ("hinted", "square", "vector")
    device: str | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)  # shapes/dtypes of the outputs
    reference_outputs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cuda_shim_used: bool = False  # the code asked for CUDA on a CPU and got the CPU instead
    setup_seconds: float | None = None  # child start + torch/triton import
    run_seconds: float | None = None
    peak_rss_mb: float | None = None
    isolation: str | None = None  # the OS sandbox it ran in: bwrap, unshare, or none (opted out)
    log: str = ""  # tail of the candidate's stdout/stderr

    @property
    def passed(self) -> bool:
        return self.stage is Stage.PASSED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stage"] = self.stage.value
        data["passed"] = self.passed
        return data


def _entry_name(code: str | None) -> str | None:
    if not code:
        return None
    sig = signature_from_source(code)
    return sig.name if sig else None


def resolve_signature(task_input: str, code: str, reference: str | None = None) -> WrapperSignature | None:
    """The signature the check will use: the task's wrapper section, else read from the reference
    (example-style inputs), else from the candidate itself."""
    sig = parse_wrapper_info(task_input) if task_input else None
    if sig is None and reference:
        sig = parse_signature(task_input, reference)
    if sig is None:
        sig = parse_signature(task_input, code)
    return sig


def check_candidate(
    code: str | None,
    task_input: str,
    reference: str | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    device: str = "auto",
    signature: WrapperSignature | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    cuda_shim: bool = True,
    sandbox: str = "auto",
    python_guards: bool = True,
) -> CheckResult:
    """Run ``code`` (a full module) against the task described by ``task_input``.

    ``reference``: another module defining the same wrapper, run on the same inputs in the same
    child. ``signature`` overrides the one read from ``task_input``. ``device="cpu"`` hides GPUs;
    ``"auto"`` uses CUDA when torch sees it. ``cuda_shim`` (CPU only) maps ``device="cuda"``,
    ``.cuda()``, ``x.is_cuda`` and a few ``torch.cuda`` calls to the CPU so GPU-minded code can run.
    ``sandbox``: ``auto`` | ``bwrap`` | ``unshare`` | ``none`` (`sandbox.resolve_isolation`; a
    `UsageError` when no OS sandbox works and ``none`` was not chosen). ``python_guards=False``
    drops the runner's Python-level guards (the tests show the OS sandbox holds without them).
    """
    start = time.monotonic()

    def finish(result: CheckResult) -> CheckResult:
        result.seconds = round(time.monotonic() - start, 3)
        return result

    if code is None or not code.strip():
        return finish(CheckResult(Stage.PARSE, kind="empty", error="no code"))
    try:
        ast.parse(code)
    except Exception as exc:  # noqa: BLE001 - besides SyntaxError: RecursionError, MemoryError, SystemError
        line = getattr(exc, "lineno", None)
        return finish(
            CheckResult(Stage.PARSE, kind="syntax", error=f"{type(exc).__name__}: {exc} (line {line})")
        )

    sig = signature or resolve_signature(task_input, code, reference)
    job: dict[str, Any] = {"rtol": rtol, "atol": atol, "seed": seed, "cuda_shim": cuda_shim}
    if sig is not None:
        job["names"] = sig.aliases()
        job["plans"] = [p.to_dict() for p in input_plans(sig)]
        job["all_params"] = [p.name for p in sig.params if p.kind in ("positional", "keyword_only")]
    job["fallback_name"] = _entry_name(code)
    job["reference_fallback_name"] = _entry_name(reference)
    files = {"candidate": code}
    if reference:
        files["reference"] = reference
    limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb, device=device, isolation=sandbox)
    try:
        outcome = run_job(job, files, limits, python_guards=python_guards)
    except OSError as exc:  # could not even start the child
        return finish(CheckResult(Stage.IMPORT, kind="environment", error=f"cannot start the checker: {exc}"))

    raw = _child_result(outcome.result or {})
    last = _stage(outcome.last_stage, Stage.IMPORT)
    if outcome.timed_out:
        res = CheckResult(last, kind="timeout", error=f"timed out after {timeout_s:g} s in stage {last}")
    elif outcome.memory_killed:
        res = CheckResult(last, kind="memory", error=f"killed above {memory_mb} MB resident memory")
    elif outcome.processes_killed:
        res = CheckResult(last, kind="process", error="killed: it started too many processes")
    elif outcome.oversize or (outcome.error and not raw):
        res = CheckResult(last, kind="crash" if outcome.oversize else "environment", error=outcome.error)
    elif not raw:
        code_text = (
            f"signal {-outcome.returncode}" if (outcome.returncode or 0) < 0 else f"exit {outcome.returncode}"
        )
        tail = outcome.log.strip().splitlines()[-3:]
        kind = "memory" if any("memory" in t.lower() or "bad_alloc" in t for t in tail) else "crash"
        res = CheckResult(
            last, kind=kind, error=f"the checker process died ({code_text}): " + " | ".join(tail)
        )
    else:
        res = CheckResult(
            _stage(raw.get("stage"), last),
            agrees=raw.get("agrees"),
            error=raw.get("error"),
            kind=raw.get("kind"),
        )
    res.callable = bool(raw.get("callable"))
    res.wrapper = raw.get("wrapper")
    res.plan = raw.get("plan")
    res.device = raw.get("device")
    res.outputs = raw.get("outputs") or []
    res.reference_outputs = raw.get("reference_outputs") or []
    res.notes = raw.get("notes") or []
    res.cuda_shim_used = bool(raw.get("cuda_shim_used"))
    res.setup_seconds = raw.get("setup_seconds")
    res.run_seconds = raw.get("run_seconds")
    res.peak_rss_mb = outcome.peak_rss_mb
    res.isolation = outcome.isolation
    res.log = outcome.log
    if res.passed:
        res.kind = None
    return finish(res)


def _stage(value: Any, default: Stage) -> Stage:
    return Stage(value) if isinstance(value, str) and value in Stage._value2member_map_ else default


def _text(value: Any, limit: int = 4000) -> str | None:
    return value[-limit:] if isinstance(value, str) else None


def _child_result(raw: dict[str, Any]) -> dict[str, Any]:
    """The child's result with every field of the expected type and size; anything else dropped.

    The child runs model-written code in the same process, so its report is data from an
    untrusted source: a forged stage, kind or type becomes a failed check, never an exception."""
    if not raw:
        return {}
    stage = raw.get("stage")
    valid = isinstance(stage, str) and stage in Stage._value2member_map_
    out: dict[str, Any] = {"stage": stage if valid else None}
    if not valid:
        return {**out, "kind": "crash", "error": "the checker's child sent a malformed result"}
    kind = raw.get("kind")
    out["kind"] = kind if kind is None or (isinstance(kind, str) and kind in FAILURE_KINDS) else "crash"
    out["callable"] = raw.get("callable") is True
    out["agrees"] = raw.get("agrees") if isinstance(raw.get("agrees"), bool) else None
    out["error"] = _text(raw.get("error"))
    for key in ("wrapper", "plan", "device"):
        out[key] = _text(raw.get(key), 200)
    for key in ("outputs", "reference_outputs"):
        items = raw.get(key) if isinstance(raw.get(key), list) else []
        out[key] = [
            {
                "shape": [d for d in item.get("shape", []) if isinstance(d, int)][:16],
                "dtype": _text(item.get("dtype"), 40),
            }
            for item in items[:64]
            if isinstance(item, dict) and isinstance(item.get("shape", []), list)
        ]
    notes = raw.get("notes") if isinstance(raw.get("notes"), list) else []
    out["notes"] = [n[:1000] for n in notes[:20] if isinstance(n, str)]
    out["cuda_shim_used"] = raw.get("cuda_shim_used") is True
    for key in ("setup_seconds", "run_seconds"):
        value = raw.get(key)
        out[key] = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return out


def check_answer(answer: str, task_input: str, reference: str | None = None, **kwargs: Any) -> CheckResult:
    """:func:`extract_code` from a raw model answer, then :func:`check_candidate`."""
    sig = parse_wrapper_info(task_input) if task_input else None
    code = extract_code(answer, wrapper=sig.name if sig else None)
    return check_candidate(code, task_input, reference, **kwargs)


# ------------------------------------------------------------------------------------------------
# Gold examples (sanity ceiling)


@dataclass
class GoldReport:
    """Checker verdicts on the examples' gold sources."""

    total: int = 0
    stages: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    callable: int = 0
    passed: int = 0
    cuda_shim_used: int = 0
    seconds: float = 0.0
    results: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _examples(task_file: str | Path) -> list[dict[str, Any]]:
    data = json.loads(Path(task_file).read_text(encoding="utf-8"))
    return list(data.get("examples", []))


def check_gold_examples(
    task_file: str | Path,
    limit: int | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    device: str = "auto",
    workers: int = 1,
    ids: Iterable[str] | None = None,
) -> GoldReport:
    """Run each example's gold module through the checker, its signature read from the gold itself.

    A gold that passes is callable on our generated inputs and returns finite tensors; it is the
    ceiling of what the checker can confirm for a correct answer on this machine (on a CPU, many
    golds need features the Triton interpreter lacks).
    """
    examples = _examples(task_file)
    if ids is not None:
        wanted = set(ids)
        examples = [e for e in examples if str(e.get("id")) in wanted]
    if limit is not None:
        examples = examples[:limit]
    start = time.monotonic()

    def one(example: dict[str, Any]) -> CheckResult:
        gold = example["output"][0] if isinstance(example.get("output"), list) else example.get("output")
        task_input = str(example.get("input", ""))
        sig = parse_signature(task_input, gold or "")
        return check_candidate(
            gold, task_input, timeout_s=timeout_s, memory_mb=memory_mb, device=device, signature=sig
        )

    def row(example: dict[str, Any], res: CheckResult) -> dict[str, Any]:
        data = res.to_dict()
        data.pop("log", None)
        return {"id": example.get("id"), **data}

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, examples))
    report = GoldReport(
        total=len(results),
        results=[row(e, r) for e, r in zip(examples, results, strict=True)],
        seconds=round(time.monotonic() - start, 1),
    )
    report.stages = dict(Counter(r.stage.value for r in results))
    report.kinds = dict(Counter(r.kind or "none" for r in results))
    report.callable = sum(1 for r in results if r.callable)
    report.passed = sum(1 for r in results if r.passed)
    report.cuda_shim_used = sum(1 for r in results if r.cuda_shim_used)
    return report


# ------------------------------------------------------------------------------------------------
# CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line on stderr, exit 2, no usage dump (run_command)
        raise UsageError(message)


def _read(path: str, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} not found: {path}")
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = _Parser(prog="python -m longicl.kernels.check", description="Check a Triton candidate module.")
    parser.add_argument("candidate", help="the candidate module (.py)")
    parser.add_argument("--task-input", help="a text file with the task input (test or example style)")
    parser.add_argument("--reference", help="a module defining the same wrapper, to compare against")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds (default: %(default)g)"
    )
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--no-cuda-shim", action="store_true", help="on a CPU, do not map CUDA calls to CPU")
    parser.add_argument(
        "--sandbox", choices=ISOLATIONS, default="auto", help="OS isolation (none: run unisolated)"
    )
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.memory_mb <= 0:
        parser.error("--timeout and --memory-mb must be positive")
    code = _read(args.candidate, "candidate")
    task_input = _read(args.task_input, "task input") if args.task_input else ""
    reference = _read(args.reference, "reference") if args.reference else None
    result = check_candidate(
        code,
        task_input,
        reference,
        timeout_s=args.timeout,
        memory_mb=args.memory_mb,
        device=args.device,
        cuda_shim=not args.no_cuda_shim,
        sandbox=args.sandbox,
    )
    print(json.dumps(result.to_dict(), ensure_ascii=False))
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())

"""Task 8 per sample: generate a Triton module, check it by running it, repair it, pick the answer.

`KernelAnnotator` is the in-context-learning annotator (`longicl.annotators.icl`) for a task
whose answers are scored by execution; the base's `ask` (shrink, thinking follow-up) serves
every request it sends. Per sample:

1. two requests with the same prompt up to the query (system, static block, per-sample block), so
   both carry the same >= 15K tokens of demonstrations and share the prefix cache: the task's own
   query (a Triton module) and a *reference* query (a short plain-PyTorch version of the same
   function, ``prompt.kinds.code.followups.reference_query``);
2. the checker (``check.check_candidate``, sandboxed child process, run in a thread): the
   reference alone, then the Triton candidate against the reference when the reference passed
   (differential test), or alone when it did not;
3. up to ``kernels.repair_rounds`` repair turns while the candidate fails: the original messages,
   the candidate as the assistant's turn, and a user turn with the checker's stage, kind and error;
4. the answer, by ``kernels.fallback`` (first tier that has one; see `FALLBACK_TIERS`);
5. on dev (the sample has a gold module): the gold checked alone (cached per gold under
   ``kernels.cache_dir``: the checker's ceiling on this machine) and the answer checked against it.

What was used is recorded under ``record["kernel"]``; `longicl.kernels.metrics.kernel_metrics`
sums it up for run.json. docs/kernels.md describes the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from longicl.annotators.base import Asked, build_request, register
from longicl.annotators.icl import IclAnnotator
from longicl.code_extract import extract_code
from longicl.config_values import as_int, load_defaults
from longicl.data import Example
from longicl.engines.base import ChatRequest, Completion
from longicl.errors import UsageError
from longicl.kernels.candidates import Candidate, clip, static_signature_failure, uses_triton, wrapper_phrase
from longicl.kernels.check import FAILURE_KINDS, CheckResult, Stage, check_candidate
from longicl.kernels.sandbox import ISOLATIONS, resolve_isolation
from longicl.kernels.signature import WrapperSignature, parse_signature, parse_wrapper_info
from longicl.methods.thinking import unfinished_thinking
from longicl.paths import PROJECT_ROOT
from longicl.prompt import PromptPlan, PromptTemplate
from longicl.records import ICL, NO_CONFIDENCE, MethodLabel, RequestLog, SampleRecord
from longicl.rundir import atomic_write_json
from longicl.tasks import TaskSpec

__all__ = ["FALLBACK_TIERS", "KernelAnnotator", "KernelSettings"]

#: the record's method: in-context learning, answers checked by running them (still pure ICL)
KERNEL_LABEL = MethodLabel(ICL, ("kernel_check",))

#: The answer tiers ``kernels.fallback`` may list, best first by default:
FALLBACK_TIERS = {
    "triton": "a Triton candidate that passed (agrees with a passing reference, or runs alone)",
    "reference": "the PyTorch reference, when it passed on its own (runs, right wrapper, finite outputs)",
    "callable": "the Triton candidate that got furthest among those that ran (wrong shape or values)",
    "any_code": "the furthest-reaching Triton candidate with any code (it did not run)",
    "reference_code": "the reference's code, even though it did not pass",
}

#: task 8's further turns, from the prompt config (``prompt.kinds.code.followups``): each text and
#: the placeholders it must contain
FOLLOWUPS = {"reference_query": ("input",), "repair_query": ("error",), "repair_mismatch_note": ()}
_RENAMED = {"timeout": "timeout_s", "max_parallel": "max_parallel_checks"}  # kernels.check.<key>


@dataclass(frozen=True)
class KernelSettings:
    """Task-8 settings (hydra group ``kernels/``, ``conf/kernels/default.yaml``)."""

    reference: bool  # ask for a PyTorch reference and test the Triton module against it
    reference_max_tokens: int  # the reference's answer budget (thinking budget added on top)
    repair_rounds: int  # repair turns after a failed check (0: none)
    fallback: tuple[str, ...]  # answer tiers, best first (FALLBACK_TIERS)
    no_repair_kinds: tuple[str, ...]  # failures a new answer cannot fix here
    timeout_s: float  # checker wall clock per check (torch/triton import included)
    memory_mb: int
    device: str  # auto | cpu | cuda
    sandbox: str  # auto | bwrap | unshare | none (longicl.kernels.sandbox.ISOLATIONS)
    rtol: float
    atol: float
    max_parallel_checks: int  # checker processes at once, over all samples in flight
    feedback_chars: int  # checker error text kept in a repair turn
    dev_gold: bool  # dev split: check the gold module (cached) and the answer against it
    cache_dir: str  # relative paths are under the project root

    @classmethod
    def defaults(cls, **changes: Any) -> KernelSettings:
        """``conf/kernels/default.yaml`` (the only home of these defaults), with ``changes``."""
        return replace(cls.from_config(load_defaults("kernels")), **changes)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, *, fill_missing: bool = False) -> KernelSettings:
        """Validate the ``kernels`` config; every problem is one `UsageError` naming the setting.

        ``fill_missing`` takes keys an older config lacks from ``conf/kernels/default.yaml``."""
        raw = _flat(cfg)
        if fill_missing:
            raw = {**_flat(load_defaults("kernels")), **raw}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            hint = (
                " (task 8's prompt texts are prompt.kinds.code.followups.*)" if "query" in unknown[0] else ""
            )
            raise UsageError(
                f"kernels.{unknown[0]} is not a kernel setting; one of: {', '.join(sorted(known))}{hint}"
            )
        missing = sorted(known - set(raw))
        if missing:
            raise UsageError(f"kernels.{missing[0]} is not set (conf/kernels/default.yaml sets every key)")
        out: dict[str, Any] = {}
        for key in ("reference", "dev_gold"):
            if key in raw:
                if not isinstance(raw[key], bool):
                    raise UsageError(f"kernels.{key}={raw[key]!r} must be true or false")
                out[key] = raw[key]
        for key, minimum in (
            ("reference_max_tokens", 1),
            ("repair_rounds", 0),
            ("memory_mb", 256),
            ("max_parallel_checks", 1),
            ("feedback_chars", 100),
        ):
            if key in raw:
                out[key] = as_int(raw[key], f"kernels.{key}", minimum=minimum)
        for key in ("timeout_s", "rtol", "atol"):
            if key in raw:
                try:
                    out[key] = float(raw[key])
                except (TypeError, ValueError):
                    raise UsageError(f"kernels.{key}={raw[key]!r} is not a number") from None
                if out[key] < 0 or (key == "timeout_s" and out[key] == 0):
                    raise UsageError(f"kernels.{key}={raw[key]} must be positive")
        if "device" in raw:
            if raw["device"] not in ("auto", "cpu", "cuda"):
                raise UsageError(f"kernels.device={raw['device']!r} is not one of: auto, cpu, cuda")
            out["device"] = raw["device"]
        if "sandbox" in raw:
            if raw["sandbox"] not in ISOLATIONS:
                raise UsageError(f"kernels.sandbox={raw['sandbox']!r} is not one of: {', '.join(ISOLATIONS)}")
            out["sandbox"] = raw["sandbox"]
        if "fallback" in raw:
            tiers = _strings(raw["fallback"], "kernels.fallback")
            bad = [t for t in tiers if t not in FALLBACK_TIERS]
            if bad or not tiers:
                raise UsageError(
                    f"kernels.fallback={list(tiers)}: tiers are {', '.join(FALLBACK_TIERS)} (at least one)"
                )
            out["fallback"] = tuple(dict.fromkeys(tiers))
        if "no_repair_kinds" in raw:
            kinds = _strings(raw["no_repair_kinds"], "kernels.no_repair_kinds")
            bad = [k for k in kinds if k not in FAILURE_KINDS]
            if bad:
                raise UsageError(
                    f"kernels.no_repair_kinds: {bad[0]!r} is not one of: {', '.join(FAILURE_KINDS)}"
                )
            out["no_repair_kinds"] = tuple(kinds)
        if "cache_dir" in raw:
            out["cache_dir"] = str(raw["cache_dir"])
        return cls(**out)

    def cache_path(self) -> Path:
        path = Path(self.cache_dir).expanduser()
        return path if path.is_absolute() else PROJECT_ROOT / path

    def check_options(self) -> dict[str, Any]:
        """Keyword arguments of `check_candidate` (also part of the gold cache key)."""
        return {
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "device": self.device,
            "sandbox": self.sandbox,
            "rtol": self.rtol,
            "atol": self.atol,
        }


def _flat(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``kernels`` config with its ``check`` mapping flattened into setting names; nulls dropped."""
    raw = {k: v for k, v in dict(cfg or {}).items() if v is not None}
    raw.pop("name", None)
    check = raw.pop("check", None) or {}
    if not isinstance(check, Mapping):
        raise UsageError("kernels.check must be a mapping")
    for key, value in dict(check).items():
        if value is not None:
            raw[_RENAMED.get(key, key)] = value
    return raw


def followup_texts(template: PromptTemplate) -> dict[str, str]:
    """Task 8's further prompt texts from the template, checked (one `UsageError` naming the key)."""
    texts = dict(template.followups)
    for key, fields in FOLLOWUPS.items():
        text = texts.get(key)
        where = f"prompt.kinds.code.followups.{key}"
        if not isinstance(text, str):
            raise UsageError(f"{where} is not set (conf/prompt/default.yaml has the wording)")
        if any("{" + f + "}" not in text for f in fields):
            raise UsageError(f"{where} must contain {{{fields[0]}}}")
    return texts


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.strip("[]").split(",") if part.strip()]
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{name} must be a list of names")
    return tuple(value)


# ------------------------------------------------------------------------------------------------
# the annotator
# ------------------------------------------------------------------------------------------------
@register("kernel")
@dataclass
class KernelAnnotator(IclAnnotator):
    """In-context learning for execution-scored code tasks: generate, reference, check, repair, fall back."""

    kernels: KernelSettings = field(kw_only=True)
    _checks: ThreadPoolExecutor = field(init=False, repr=False)
    texts: dict[str, str] = field(init=False, repr=False)  # the reference and repair wording

    def __post_init__(self) -> None:
        super().__post_init__()
        self.texts = followup_texts(self.builder.template)
        # Checks block a thread for seconds: their own pool, so they neither stall the event loop
        # nor queue ahead of the loop's default executor (DNS lookups of the HTTP client use it).
        self._checks = ThreadPoolExecutor(self.kernels.max_parallel_checks, thread_name_prefix="kernel-check")

    @classmethod
    def check_config(cls, config: Mapping[str, Any], specs: Sequence[TaskSpec]) -> None:
        kernels = KernelSettings.from_config(config.get("kernels"))
        for spec in specs:
            followup_texts(PromptTemplate.from_config(config.get("prompt") or {}, spec))
        if specs and (config.get("engine") or {}).get("name") != "dryrun":
            resolve_isolation(kernels.sandbox)  # no OS sandbox: refused before any output, one line

    @classmethod
    def run_settings(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The kernel settings, from the run config's ``kernels`` key."""
        return {"kernels": KernelSettings.from_config(config.get("kernels"))}

    # -- requests --------------------------------------------------------------------------------
    def wrapper_signature(self, sample: Example) -> WrapperSignature | None:
        return parse_wrapper_info(sample.input)

    def reference_plan(self, plan: PromptPlan) -> PromptPlan:
        """``plan`` with the reference query in place of the task's query (same demonstrations)."""
        query = self.texts["reference_query"].format(
            input=plan.sample.input, wrapper=wrapper_phrase(self.wrapper_signature(plan.sample))
        )
        counter = self.builder.counter
        tokens = plan.prompt_tokens - counter.count(plan.query_text) + counter.count(query)
        return replace(plan, query_text=query, prompt_tokens=tokens)

    def _reference_max_tokens(self) -> int:
        thinking = self.settings.thinking_budget if self.settings.enable_thinking else 0
        return self.kernels.reference_max_tokens + thinking

    async def ask_reference(self, sample: Example) -> tuple[PromptPlan, Completion]:
        """The reference request. An answer cut at its budget is kept: the module may be whole."""
        return await self.ask(
            sample,
            0,
            edit=self.reference_plan,
            max_tokens=self._reference_max_tokens(),
            cut_is_unreadable=False,
        )

    async def ask_kernel(self, sample: Example) -> tuple[PromptPlan, Completion]:
        return await self.ask(sample, 0)

    def repair_messages(
        self, plan: PromptPlan, candidate: Candidate, answer: str | None, wrapper: str
    ) -> list[dict[str, str]]:
        """The original messages, the failed module as the assistant's turn, the checker's report."""
        result = candidate.result
        assistant = f"```python\n{candidate.code.rstrip()}\n```" if candidate.code else (answer or "").strip()
        error = result.error or "(no error text)"
        limit = self.kernels.feedback_chars
        if len(error) > limit:
            error = "…" + error[-limit:]  # tracebacks end with what matters
        notes = [n for n in result.notes if not n.startswith("found from the source")]
        notes_text = "".join(f"Note: {clip(n, 300)}\n" for n in notes[:3])
        if result.kind == "mismatch":
            notes_text += self.texts["repair_mismatch_note"]
        elif notes_text:
            notes_text += "\n"
        feedback = self.texts["repair_query"].format(
            stage=result.stage.value,
            kind=result.kind or "failed",
            meaning=FAILURE_KINDS.get(result.kind or "", "the check failed"),
            error=error,
            notes=notes_text,
            wrapper=wrapper,
        )
        return [
            *plan.messages(),
            {"role": "assistant", "content": assistant or "(no answer)"},
            {"role": "user", "content": feedback},
        ]

    async def ask_repair(
        self, plan: PromptPlan, messages: list[dict[str, str]]
    ) -> tuple[ChatRequest, Completion, int]:
        counter = self.builder.counter
        extra = sum(counter.message_overhead(m["role"]) + counter.count(m["content"]) for m in messages[2:])
        prompt_tokens = plan.prompt_tokens + extra
        request = build_request(
            self.spec,
            self.settings,
            messages,
            plan.sample,
            prompt_tokens=prompt_tokens,
            affinity=f"{self.spec.name}/{plan.static.sha256[:16]}",
        )
        completion = await self.engine.complete(request)
        if completion.finish_reason == "length" and not unfinished_thinking(completion):
            completion.notes.append("repair answer cut at max_tokens")
        return request, completion, prompt_tokens

    # -- checks ----------------------------------------------------------------------------------
    async def _run_check(
        self,
        code: str | None,
        task_input: str,
        reference: str | None,
        signature: WrapperSignature | None,
    ) -> CheckResult:
        call = partial(
            check_candidate, code, task_input, reference, signature=signature, **self.kernels.check_options()
        )
        return await asyncio.get_running_loop().run_in_executor(self._checks, call)

    async def check(
        self,
        code: str | None,
        sample: Example,
        reference: str | None = None,
        signature: WrapperSignature | None = None,
    ) -> CheckResult:
        """`check_candidate` in a worker thread; a module that cannot define the wrapper (told from
        its source) or does not parse fails without starting a process."""
        quick = static_signature_failure(code, signature or self.wrapper_signature(sample))
        if quick is not None:
            return quick
        return await self._run_check(code, sample.input, reference, signature)

    async def gold_check(self, sample: Example) -> dict[str, Any] | None:
        """The gold module checked alone (its signature read from the gold), cached per gold."""
        gold = sample.output
        if not gold:
            return None
        options = self.kernels.check_options()
        key = hashlib.sha256(json.dumps([gold, sample.input, options], sort_keys=True).encode()).hexdigest()
        path = self.kernels.cache_path() / "gold" / f"{key}.json"
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(cached, dict) and "stage" in cached:
                return {**cached, "cached": True}
        except (OSError, ValueError):
            pass
        sig = parse_signature(sample.input, gold)
        result = await self._run_check(gold, sample.input, None, sig)
        row = Candidate("gold", 0, gold, result).summary()
        row.pop("round", None)
        row["gold_sha256"] = hashlib.sha256(gold.encode()).hexdigest()
        if result.kind not in ("environment", "crash", "timeout"):  # a busy machine may do better later
            with contextlib.suppress(OSError):  # a read-only checkout: no cache, same verdict
                atomic_write_json(path, row)
        return {**row, "cached": False}

    # -- one sample ------------------------------------------------------------------------------
    async def dry_requests(self, sample: Example) -> list[Asked]:
        """The kernel request and, when asked for, the reference request (logged, not answered)."""
        plan, completion = await self.ask(sample, 0)
        asked = [Asked(plan, completion, "kernel")]
        if self.kernels.reference:
            asked.append(Asked(*await self.ask_reference(sample), "reference"))
        return asked

    async def answer(self, sample: Example, index: int) -> SampleRecord:
        if not self.engine.reads_prompts:
            # A classical placeholder (nearest example's code): references and repairs cannot
            # change it and checking it says nothing about ICL, so it is recorded as answered.
            return await super().answer(sample, index)
        sig = self.wrapper_signature(sample)
        wrapper = sig.name if sig is not None and sig.name else None
        logs: list[RequestLog] = []

        async def reference_flow() -> tuple[Candidate | None, RequestLog | None]:
            if not self.kernels.reference:
                return None, None
            plan, completion = await self.ask_reference(sample)
            code = extract_code(completion.text or "", wrapper=wrapper) if completion.error is None else None
            log = self._log(plan, completion, code, "reference")
            result = await self.check(code, sample)
            return Candidate("reference", 0, code, result), log

        (plan, completion), (reference, ref_log) = await asyncio.gather(
            self.ask_kernel(sample), reference_flow()
        )
        answer = completion.text if completion.error is None else None
        code = extract_code(answer or "", wrapper=wrapper) if answer else None
        logs.append(self._log(plan, completion, code, "kernel"))
        if ref_log is not None:
            logs.append(ref_log)
        oracle = reference.code if reference is not None and reference.result.passed else None

        candidates: list[Candidate] = []
        kernel_error = completion.error  # the task's own request failed (after the engine's retries)
        for round_ in range(self.kernels.repair_rounds + 1):
            result = await self.check(code, sample, oracle)
            candidate = Candidate("triton", round_, code, result, against_reference=oracle is not None)
            candidates.append(candidate)
            if (
                result.passed
                or completion.error is not None
                or round_ == self.kernels.repair_rounds
                or result.kind in self.kernels.no_repair_kinds
            ):
                break
            messages = self.repair_messages(plan, candidate, answer, wrapper_phrase(sig))
            _, completion, prompt_tokens = await self.ask_repair(plan, messages)
            answer = completion.text if completion.error is None else None
            code = extract_code(answer or "", wrapper=wrapper) if answer else None
            log = self._log(plan, completion, code, f"repair_{round_ + 1}")
            log.prompt_tokens = prompt_tokens
            log.uncached_tokens = prompt_tokens - plan.shared_prefix_tokens
            logs.append(log)
            if completion.error is not None:
                break

        chosen, tier = self.choose(candidates, reference)
        prediction = chosen.code if chosen is not None and chosen.code else ""
        kernel: dict[str, Any] = {
            "wrapper": wrapper,
            "final": chosen.label if chosen is not None else "none",
            "tier": tier,
            "uses_triton": uses_triton(prediction),
            "callable": bool(chosen and chosen.result.callable),
            "agrees": chosen.result.agrees if chosen is not None and chosen.source == "triton" else None,
            "stage": chosen.result.stage.value if chosen is not None else Stage.PARSE.value,
            "kind": (chosen.result.kind if chosen is not None else "empty"),
            "repair_rounds": len(candidates) - 1,
            "reference_passed": bool(reference and reference.result.passed),
            "candidates": [c.summary() for c in candidates],
            "reference": reference.summary() if reference is not None else None,
        }
        if self.kernels.dev_gold and sample.output:
            kernel.update(await self._against_gold(sample, prediction))
        # A failed kernel request makes the sample an error (retried on resume) unless an answer
        # that passed its check was found anyway.
        error = None
        if kernel_error is not None and not (chosen is not None and chosen.result.passed):
            error = kernel_error
        elif not prediction:
            error = next((q.error for q in logs if q.error), None)
        return self._record(sample, index, prediction, kernel, logs, error)

    def choose(
        self, candidates: Sequence[Candidate], reference: Candidate | None
    ) -> tuple[Candidate | None, str | None]:
        """The answer: the first tier of ``kernels.fallback`` that has a candidate.

        Within a Triton tier the candidate that got furthest wins, and among equals the latest
        (repairs see more feedback)."""
        triton = [c for c in candidates if c.code]

        def best(pool: Sequence[Candidate]) -> Candidate | None:
            return max(pool, key=lambda c: (c.rank, c.round), default=None)

        for tier in self.kernels.fallback:
            if tier == "triton":
                found = best([c for c in triton if c.result.passed])
            elif tier == "reference":
                found = (
                    reference
                    if reference is not None and reference.code and reference.result.passed
                    else None
                )
            elif tier == "callable":
                found = best([c for c in triton if c.result.callable])
            elif tier == "any_code":
                found = best(triton)
            else:  # reference_code
                found = reference if reference is not None and reference.code else None
            if found is not None:
                return found, tier
        return None, None

    async def _against_gold(self, sample: Example, prediction: str) -> dict[str, Any]:
        gold = await self.gold_check(sample)
        out: dict[str, Any] = {"gold": gold, "vs_gold": None}
        if gold is not None and gold.get("passed") and prediction:
            sig = parse_signature(sample.input, sample.output)
            result = await self.check(prediction, sample, sample.output, sig)
            out["vs_gold"] = Candidate("answer", 0, prediction, result, against_reference=True).summary()
        return out

    async def aclose(self) -> None:
        self._checks.shutdown(wait=False, cancel_futures=True)
        await super().aclose()

    # -- records ---------------------------------------------------------------------------------
    def _log(self, plan: PromptPlan, completion: Completion, code: str | None, role: str) -> RequestLog:
        return RequestLog.of(plan, completion, parsed=code or "", answer=code or "", role=role)

    def _record(
        self,
        sample: Example,
        index: int,
        prediction: str,
        kernel: dict[str, Any],
        logs: list[RequestLog],
        error: str | None,
    ) -> SampleRecord:
        reasons = [q.error or "no code found" for q in logs if not q.parsed]
        return SampleRecord(
            task=self.spec.name,
            sample_id=sample.id,
            index=index,
            prediction=prediction,
            parsed_ok=bool(prediction),
            parse_error=None if prediction else ("; ".join(dict.fromkeys(reasons)) or "no code"),
            gold=sample.output,
            correct=None,  # judged by execution: record["kernel"], kernel_metrics
            method=KERNEL_LABEL,
            error=error,
            requests=logs,
            vote=None,
            confidence=NO_CONFIDENCE,  # one unscored program per sample: no confidence, never a made-up one
            has_decision=False,
            kernel=kernel,
        )

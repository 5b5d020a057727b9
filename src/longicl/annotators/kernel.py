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

What was used is recorded under ``record["kernel"]``; `longicl.kernels.execution_metrics.kernel_metrics`
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
from typing import Any

from longicl.annotators.base import Asked, register
from longicl.annotators.icl import IclAnnotator
from longicl.annotators.settings import FALLBACK_TIERS, KernelSettings
from longicl.code_extract import extract_code
from longicl.data import Example
from longicl.engines.base import ChatRequest, Completion
from longicl.errors import UsageError
from longicl.files import atomic_write_json
from longicl.kernels.candidates import Candidate, clip, static_signature_failure, uses_triton, wrapper_phrase
from longicl.kernels.check import FAILURE_KINDS, CheckResult, Stage, check_candidate
from longicl.kernels.sandbox import resolve_isolation
from longicl.kernels.signature import WrapperSignature, parse_signature, parse_wrapper_info
from longicl.methods.thinking import unfinished_thinking
from longicl.prompt import PromptPlan, PromptTemplate
from longicl.records import ICL, NO_CONFIDENCE, MethodLabel, RequestLog, SampleRecord
from longicl.tasks import TaskSpec

__all__ = ["FALLBACK_TIERS", "KernelAnnotator", "KernelSettings"]

#: the record's method: in-context learning, answers checked by running them (still pure ICL)
KERNEL_LABEL = MethodLabel(ICL, ("kernel_check",))

#: task 8's further turns, from the prompt config (``prompt.kinds.code.followups``): each text and
#: the placeholders it must contain
FOLLOWUPS = {"reference_query": ("input",), "repair_query": ("error",), "repair_mismatch_note": ()}


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

    def repair_turns(self, candidate: Candidate, answer: str | None, wrapper: str) -> list[dict[str, str]]:
        """What follows the original messages: the failed module as the assistant's turn, the
        checker's report as the user's."""
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
            {"role": "assistant", "content": assistant or "(no answer)"},
            {"role": "user", "content": feedback},
        ]

    async def ask_repair(
        self, plan: PromptPlan, turns: list[dict[str, str]]
    ) -> tuple[ChatRequest, Completion]:
        """The repair request: ``plan``'s messages and then ``turns`` (`repair_turns`), sent
        through the base's `send_request` like every other request."""
        request = self.request(plan, turns=turns)
        completion = await self.send_request(request, plan)
        if completion.finish_reason == "length" and not unfinished_thinking(completion):
            completion.notes.append("repair answer cut at max_tokens")
        return request, completion

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
            turns = self.repair_turns(candidate, answer, wrapper_phrase(sig))
            request, completion = await self.ask_repair(plan, turns)
            prompt_tokens = request.prompt_tokens
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

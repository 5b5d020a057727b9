"""Annotating one sample: plan the prompt, ask the engine, read the answer, keep a record.

This is the per-sample "method" stage. It owns what happens between a sample and its final
prediction: building the request from a `PromptPlan`, shrinking the prompt when the server
says it is too long, parsing, and scoring on dev. Run-level concerns (concurrency, files,
progress) belong to `longicl.runner`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from longicl.data import Example
from longicl.engines.base import ChatRequest, Completion, Engine
from longicl.engines.openai_compat import CONTEXT_LENGTH_ERROR
from longicl.metrics import score
from longicl.parse import ParsedAnswer, parse_answer
from longicl.prompt import ContextBuilder, PromptPlan
from longicl.tasks import TaskSpec


@dataclass(frozen=True)
class MethodSettings:
    """How requests are made and answers decided (hydra group ``method/``)."""

    enable_thinking: bool = False
    sampling: Mapping[str, Any] = field(default_factory=dict)
    max_tokens: Mapping[str, int] = field(default_factory=dict)  # per answer kind
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    def max_tokens_for(self, spec: TaskSpec) -> int:
        return int(self.max_tokens.get(spec.answer_kind.value, 256))


RequestLogger = Callable[[ChatRequest, PromptPlan], None]


def build_request(
    spec: TaskSpec,
    method: MethodSettings,
    messages: list[dict[str, str]],
    sample: Example,
    *,
    prompt_tokens: int = 0,
    affinity: str = "",
) -> ChatRequest:
    """The chat request for ``messages`` under the method's sampling and thinking settings."""
    extra_body = dict(method.extra_body)
    extra_body["chat_template_kwargs"] = {
        **dict(extra_body.get("chat_template_kwargs") or {}),
        "enable_thinking": method.enable_thinking,
    }
    return ChatRequest(
        task=spec,
        sample=sample,
        messages=messages,
        max_tokens=method.max_tokens_for(spec),
        sampling=dict(method.sampling),
        extra_body=extra_body,
        prompt_tokens=prompt_tokens,
        affinity=affinity or spec.name,
    )


@dataclass
class Annotator:
    spec: TaskSpec
    builder: ContextBuilder
    engine: Engine
    method: MethodSettings
    request_logger: RequestLogger | None = None

    def request(self, plan: PromptPlan, *, variant: int = 0) -> ChatRequest:
        return build_request(
            self.spec,
            self.method,
            plan.messages(),
            plan.sample,
            prompt_tokens=plan.prompt_tokens,
            affinity=f"{self.spec.name}/{plan.static.sha256[:16]}",
        )

    async def ask(self, sample: Example, variant: int = 0) -> tuple[PromptPlan, Completion]:
        """One request for ``sample``; on a context-length rejection, shrink and retry."""
        plan = self.builder.plan(sample, variant)
        completion = await self._send(plan, variant)
        for dynamic_ceiling, static_ceiling in self._shrink_steps(plan):
            if not (completion.error or "").startswith(CONTEXT_LENGTH_ERROR):
                break
            previous_tokens = plan.prompt_tokens
            plan = self.builder.plan(
                sample, variant, dynamic_ceiling=dynamic_ceiling, static_ceiling=static_ceiling
            )
            retry = await self._send(plan, variant)
            retry.notes = [
                *completion.notes,
                f"context too long at {previous_tokens} tokens; shrunk to "
                f"{plan.prompt_tokens} (dynamic<={dynamic_ceiling}, static<={static_ceiling})",
                *retry.notes,
            ]
            completion = retry
        return plan, completion

    async def _send(self, plan: PromptPlan, variant: int) -> Completion:
        request = self.request(plan, variant=variant)
        if self.request_logger is not None:
            self.request_logger(request, plan)
        return await self.engine.complete(request)

    def _shrink_steps(self, plan: PromptPlan):
        """Per-sample block first, then the static block in steps down to the ICL floor."""
        yield 0, None
        floor = self.spec.min_icl_tokens
        ceiling = plan.static.demo_tokens
        while ceiling > floor:
            ceiling = max(floor, int(ceiling * 0.85))
            yield 0, ceiling

    async def annotate(self, sample: Example, index: int) -> dict[str, Any]:
        plan, completion = await self.ask(sample)
        parsed = (
            parse_answer(self.spec, completion.text)
            if completion.error is None and self.engine.answers
            else ParsedAnswer("", False, "", completion.error or "no answer (dry run)")
        )
        return self.record(sample, index, [(plan, completion, parsed)], parsed.value, parsed, completion)

    def record(
        self,
        sample: Example,
        index: int,
        attempts: list[tuple[PromptPlan, Completion, ParsedAnswer]],
        prediction: str,
        parsed: ParsedAnswer,
        final: Completion,
    ) -> dict[str, Any]:
        """The JSON line kept for one sample (see README, "Outputs")."""
        correct = score(self.spec, prediction, sample.output) if self.engine.answers else None
        return {
            "task": self.spec.name,
            "sample_id": sample.id,
            "index": index,
            "prediction": prediction,
            "parsed_ok": parsed.ok if self.engine.answers else None,
            "parse_error": parsed.reason if not parsed.ok and self.engine.answers else None,
            "gold": sample.output,
            "correct": correct,
            "method": final.method,
            "error": final.error,
            "requests": [request_log(plan, completion, answer) for plan, completion, answer in attempts],
        }


def request_log(plan: PromptPlan, completion: Completion, parsed: ParsedAnswer) -> dict[str, Any]:
    return {
        "variant": plan.static.variant,
        "static_block": plan.static.sha256,
        "static_demos": len(plan.static.demo_ids),
        "dynamic_demo_ids": list(plan.dynamic_ids),
        "prompt_tokens": plan.prompt_tokens,
        "static_tokens": plan.shared_prefix_tokens,
        "icl_tokens": plan.icl_tokens,
        "uncached_tokens": plan.uncached_tokens,
        "raw_response": completion.text,
        "reasoning": completion.reasoning,
        "parsed": parsed.value,
        "finish_reason": completion.finish_reason,
        "usage": completion.usage,
        "latency_s": round(completion.latency_s, 4),
        "attempts": completion.attempts,
        "server": completion.server,
        "error": completion.error,
        "notes": completion.notes,
    }

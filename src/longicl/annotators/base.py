"""The base of every annotator: from a sample to requests, with what each request needs written once.

An annotator turns one sample into one `SampleRecord`. The base owns the parts every kind of
annotator shares: the request under the method settings (`build_request`), the send path
(with the dry run's request log), `ask` (shrink the prompt when the server finds it too long,
treat an answer cut at ``max_tokens`` as unreadable, one thinking follow-up when the budget ran
out), and the dry run (build and log every request, answer none). Subclasses decide what to ask
and how to turn the replies into a prediction (`answer`), and are registered by name: a task's
``TaskSpec.annotator`` picks its class (`annotator_for`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

from longicl.annotators.settings import MethodSettings
from longicl.data import Example
from longicl.engines.base import CONTEXT_LENGTH_ERROR, ChatRequest, Completion, Engine
from longicl.methods.structured import structured_outputs_for
from longicl.methods.thinking import followup_request, merge, unfinished_thinking
from longicl.prompt import ContextBuilder, PromptPlan
from longicl.records import NO_CONFIDENCE, AnyRecord, RequestLog, SampleRecord, as_record
from longicl.registry import Registry
from longicl.tasks import TaskSpec

RequestLogger = Callable[[ChatRequest, PromptPlan], None]
#: rewrites a sample's plan before it is sent (task 8's reference query replaces the task's query)
PlanEdit = Callable[[PromptPlan], PromptPlan]
#: what the static block shrinks by per step when the server finds a prompt too long
SHRINK_FACTOR = 0.85

#: why a sample is unanswered (the record's ``unanswered``): its last reply was cut by the length
#: limit, empty, or never came (the engine gave up with an error). Such a sample is asked again when
#: the run is resumed; a reply the model completed but that does not parse is a parse failure (final).
CUT, EMPTY, NO_REPLY = "cut at max_tokens", "empty reply", "no reply"

#: TaskSpec.annotator -> the class that annotates one sample of such a task (see `register`)
ANNOTATORS: Registry[type[Annotator]] = Registry("annotator")

A = TypeVar("A", bound="type[Annotator]")


def register(name: str) -> Callable[[A], A]:
    """Class decorator: the annotator that tasks with ``TaskSpec.annotator == name`` use."""

    def add(cls: A) -> A:
        ANNOTATORS.add(name, cls)
        return cls

    return add


def annotator_for(spec: TaskSpec) -> type[Annotator]:
    return ANNOTATORS.get(spec.annotator, where=f"{spec.source}: annotator")


def build_request(
    spec: TaskSpec,
    settings: MethodSettings,
    messages: list[dict[str, str]],
    sample: Example,
    *,
    prompt_tokens: int = 0,
    affinity: str = "",
    variant: int = 0,
    stop: Sequence[str] = (),
) -> ChatRequest:
    """The chat request for ``messages`` under the method settings for ``spec``: sampling and
    thinking, the thinking budget, the answer constraint and the log-probabilities wanted; the
    template's ``stop`` sequences unless thinking is on (a stop string could cut the reasoning)."""
    settings = settings.for_task(spec)
    sampling = settings.sampling_for(variant)
    if stop and not settings.enable_thinking:
        sampling["stop"] = list(stop)
    extra_body = dict(settings.extra_body)
    extra_body["chat_template_kwargs"] = {
        **dict(extra_body.get("chat_template_kwargs") or {}),
        "enable_thinking": settings.enable_thinking,
    }
    if settings.structured_outputs:
        extra_body.update(structured_outputs_for(spec, settings.structured_outputs_style) or {})
    return ChatRequest(
        task=spec,
        sample=sample,
        messages=messages,
        max_tokens=settings.request_max_tokens(spec),
        sampling=sampling,
        extra_body=extra_body,
        logprobs=settings.logprobs if spec.is_closed else None,
        prompt_tokens=prompt_tokens,
        affinity=affinity or spec.name,
    )


def unanswered(record: AnyRecord) -> str | None:
    """Why the sample of ``record`` (as an annotator wrote it) got no answer from the model, or None
    when it did: it has no prediction and the last reply of each prompt variant was cut at
    ``max_tokens`` (``finish_reason=length``, also after the engine's retry with more), empty, or a
    transport failure the engine returned as an error. A prompt too long even at the floor is a
    failed sample, not an unanswered one (asking again cannot help)."""
    typed = as_record(record)
    if typed.prediction or not typed.requests:
        return None
    last: dict[Any, Mapping[str, Any]] = {}
    for request in typed.request_entries:
        last[request.get("variant")] = request  # a variant's follow-ups come after it
    reasons = [_no_answer(request) for request in last.values()]
    if not reasons or any(reason is None for reason in reasons):
        return None
    return reasons[0]


def _no_answer(request: Mapping[str, Any]) -> str | None:
    error = request.get("error")
    if error:
        return None if str(error).startswith(CONTEXT_LENGTH_ERROR) else NO_REPLY
    if request.get("finish_reason") == "length":
        return CUT
    if not str(request.get("raw_response") or "").strip():
        return EMPTY
    return None


@dataclass
class Asked:
    """One request a sample needed (after shrinking and any follow-up): its plan and reply."""

    plan: PromptPlan
    completion: Completion
    role: str | None = None  # what the request was for, when an annotator sends several kinds


@dataclass
class Annotator:
    """Annotates the samples of one task; subclasses implement `answer` (and `dry_requests`)."""

    spec: TaskSpec
    builder: ContextBuilder
    engine: Engine
    method: MethodSettings
    request_logger: RequestLogger | None = None
    settings: MethodSettings = field(init=False)  # ``method`` as it applies to this task
    name: ClassVar[str] = "base"

    def __post_init__(self) -> None:
        self.settings = self.method.for_task(self.spec)

    @classmethod
    def check_config(cls, config: Mapping[str, Any], specs: Sequence[TaskSpec]) -> None:
        """Validate this annotator's own part of a run config (``specs``: the run's tasks it
        annotates, maybe none) before anything is written."""

    @classmethod
    def for_run(
        cls,
        spec: TaskSpec,
        builder: ContextBuilder,
        engine: Engine,
        method: MethodSettings,
        *,
        request_logger: RequestLogger | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Annotator:
        """The annotator of a run, with its own settings from the run ``config`` (`run_settings`)."""
        own = cls.run_settings(config or {})
        return cls(spec, builder, engine, method, request_logger=request_logger, **own)

    @classmethod
    def run_settings(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """This annotator's own constructor arguments, read from the run config (none here)."""
        return {}

    # -- one sample ------------------------------------------------------------------------------
    async def annotate(self, sample: Example, index: int) -> dict[str, Any]:
        """All of one sample, as the JSON object kept in ``records/<task>.jsonl``."""
        if not self.engine.answers:
            return (await self.dry_run(sample, index)).to_dict()
        return (await self.answer(sample, index)).to_dict()

    async def answer(self, sample: Example, index: int) -> SampleRecord:
        raise NotImplementedError

    async def dry_requests(self, sample: Example) -> list[Asked]:
        """The requests a dry run builds (and logs) for ``sample``."""
        raise NotImplementedError

    async def dry_run(self, sample: Example, index: int) -> SampleRecord:
        """Build and log every request of ``sample``; the record says nothing was answered."""
        asked = await self.dry_requests(sample)
        return SampleRecord(
            task=self.spec.name,
            sample_id=sample.id,
            index=index,
            prediction="",
            parsed_ok=None,
            parse_error=None,
            gold=sample.output,
            correct=None,
            method=self.settings.method_label(self.spec),
            error=asked[0].completion.error,
            requests=[
                RequestLog.of(a.plan, a.completion, parsed="", answer="", role=a.role, role_last=True)
                for a in asked
            ],
            confidence=NO_CONFIDENCE,
        )

    async def aclose(self) -> None:
        """Release what the annotator started (the runner closes the run's engine)."""

    # -- requests --------------------------------------------------------------------------------
    def request(
        self,
        plan: PromptPlan,
        *,
        variant: int = 0,
        max_tokens: int | None = None,
        turns: Sequence[dict[str, str]] = (),
    ) -> ChatRequest:
        """The request for ``plan`` under this task's settings. ``turns`` are messages after the
        plan's own (task 8's repair: the failed module as the assistant's turn, the checker's
        report), counted into the request's prompt tokens; such a request carries none of the
        template's stop sequences (a repair never has)."""
        counter = self.builder.counter
        extra = sum(counter.message_overhead(m["role"]) + counter.count(m["content"]) for m in turns)
        request = build_request(
            self.spec,
            self.settings,
            [*plan.messages(), *turns],
            plan.sample,
            prompt_tokens=plan.prompt_tokens + extra,
            affinity=f"{self.spec.name}/{plan.static.sha256[:16]}",
            variant=variant,
            stop=() if turns else plan.stop,
        )
        if max_tokens is not None:
            request = replace(request, max_tokens=max_tokens)
        return request

    async def send(
        self,
        plan: PromptPlan,
        *,
        variant: int = 0,
        max_tokens: int | None = None,
        turns: Sequence[dict[str, str]] = (),
    ) -> Completion:
        """`request` sent (see `send_request`)."""
        return await self.send_request(
            self.request(plan, variant=variant, max_tokens=max_tokens, turns=turns), plan
        )

    async def send_request(self, request: ChatRequest, plan: PromptPlan) -> Completion:
        """The one way a request reaches the engine: the request logger sees it first."""
        if self.request_logger is not None:
            self.request_logger(request, plan)
        return await self.engine.complete(request)

    async def ask(
        self,
        sample: Example,
        variant: int = 0,
        *,
        edit: PlanEdit | None = None,
        max_tokens: int | None = None,
        cut_is_unreadable: bool = True,
    ) -> tuple[PromptPlan, Completion]:
        """One request for ``sample``: shrunk and retried while the server finds it too long; an
        answer cut at ``max_tokens`` dropped (``cut_is_unreadable``); thinking that ran out of
        budget followed up once (``method.thinking_followup``)."""

        def plan_for(**ceilings: int | None) -> PromptPlan:
            plan = self.builder.plan(sample, variant, **ceilings)
            return edit(plan) if edit is not None else plan

        plan = plan_for()
        completion = await self.send(plan, variant=variant, max_tokens=max_tokens)
        for dynamic_ceiling, static_ceiling in self._shrink_steps(plan):
            if not completion.context_too_long:
                break
            previous_tokens = plan.prompt_tokens
            plan = plan_for(dynamic_ceiling=dynamic_ceiling, static_ceiling=static_ceiling)
            retry = await self.send(plan, variant=variant, max_tokens=max_tokens)
            retry.notes = [
                *completion.notes,
                f"context too long at {previous_tokens} tokens; shrunk to "
                f"{plan.prompt_tokens} (dynamic<={dynamic_ceiling}, static<={static_ceiling})",
                *retry.notes,
            ]
            completion = retry
        if cut_is_unreadable and completion.finish_reason == "length" and not unfinished_thinking(completion):
            # Cut short even after the engine's retry with more max_tokens: not a whole answer.
            completion.notes.append(f"answer cut at max_tokens, treated as unreadable: {completion.text!r}")
            completion.text = None
        if (
            self.settings.enable_thinking
            and self.settings.thinking_followup
            and unfinished_thinking(completion)
        ):
            completion = await self._follow_up(plan, completion, variant)
        return plan, completion

    async def _follow_up(
        self, plan: PromptPlan, completion: Completion, variant: int | None = None
    ) -> Completion:
        """Ask once more for the answer after reasoning that the thinking budget cut."""
        request = followup_request(
            self.request(plan, variant=plan.static.variant if variant is None else variant),
            completion,
            self.settings.max_tokens_for(self.spec),
        )
        return merge(completion, await self.send_request(request, plan))

    def _shrink_steps(self, plan: PromptPlan) -> Iterator[tuple[int, int | None]]:
        """Per-sample block first, then the static block in steps down to the ICL floor."""
        yield 0, None
        floor = self.spec.min_icl_tokens
        ceiling = plan.static.demo_tokens
        while ceiling > floor:
            ceiling = max(floor, int(ceiling * SHRINK_FACTOR))
            yield 0, ceiling

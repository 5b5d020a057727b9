"""Annotating one sample: plan the prompt, ask the engine, read the answer, keep a record.

This is the per-sample "method" stage. It owns what happens between a sample and its final
prediction: building the requests from `PromptPlan`s (one per self-consistency variant, with the
configured answer constraint and log-probabilities), shrinking a prompt when the server says it
is too long, parsing, label scoring and calibration, voting, the optional program check, and
scoring on dev. The methods themselves live in `longicl.methods` (see docs/methods.md);
run-level concerns (concurrency, files, progress) belong to `longicl.runner`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from longicl.config_values import as_int
from longicl.data import Example
from longicl.engines.base import ChatRequest, Completion, Engine
from longicl.engines.openai_compat import CONTEXT_LENGTH_ERROR
from longicl.errors import UsageError
from longicl.methods.calibration import MODES as CALIBRATION_MODES
from longicl.methods.calibration import Calibration, ConfidenceMap, confidence_map, load_calibration
from longicl.methods.calibration import from_entry as calibration_from_entry
from longicl.methods.programs import SideAnswer, SideEngine, check_available, program_verdict
from longicl.methods.scoring import best_label, label_logprobs
from longicl.methods.structured import DEFAULT_STYLE, FIELD_STYLES, constraint_for, structured_outputs_for
from longicl.methods.thinking import followup_request, merge, unfinished_thinking
from longicl.methods.voting import RULES, Vote, rule_for, vote
from longicl.metrics import score
from longicl.parse import ParsedAnswer, ReplyShape, normalise, parse_answer
from longicl.prompt import ContextBuilder, PromptPlan
from longicl.quality.confidence import Support, record_fields
from longicl.tasks import TASKS, TaskSpec, per_task_entry

#: keys a ``method.per_task.<id>`` entry may override (null: take the task-independent value)
PER_TASK_KEYS = (
    "enable_thinking",
    "sampling",
    "thinking_sampling",
    "max_tokens",
    "thinking_budget",
    "thinking_followup",
    "structured_outputs",
    "logprobs",
    "self_consistency",
    "vote",
    "calibration",
    "calibration_mode",
    "use_program",
    "classical_voter",
    "classical_weight",
)
_MERGED_KEYS = ("sampling", "thinking_sampling", "max_tokens")  # per-task entries update these dicts
MAX_TOP_LOGPROBS = 20  # vLLM's default --max-logprobs


@dataclass(frozen=True)
class MethodSettings:
    """How requests are made and answers decided (hydra group ``method/``, see docs/methods.md)."""

    enable_thinking: bool = False
    sampling: Mapping[str, Any] = field(default_factory=dict)  # thinking off
    max_tokens: Mapping[str, int] = field(default_factory=dict)  # per answer kind
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    name: str = "default"
    thinking_sampling: Mapping[str, Any] = field(default_factory=dict)  # thinking on ({}: ``sampling``)
    thinking_budget: int = 0  # tokens of reasoning allowed on top of max_tokens when thinking
    thinking_followup: bool = False  # one follow-up request when the budget ends the reasoning
    structured_outputs: bool = False  # constrain answers (closed labels, integer formats)
    structured_outputs_style: str = DEFAULT_STYLE
    logprobs: int | None = None  # top_logprobs per token for closed-label tasks (label scoring)
    self_consistency: int = 1  # prompts per sample, one per static-block variant
    vote: str = "auto"  # majority | probability | auto (probability when every vote has logprobs)
    calibration: str | None = None  # calibration.json of a dev run, applied to label scores
    calibration_mode: str = "auto"  # auto (the file's choice) | bias | batch | none
    use_program: bool = False  # tasks with a program (1, 3, 4): the program checks/replaces answers
    classical_voter: bool = False  # closed-label tasks: the classical classifier votes too
    classical_weight: float = 1.0
    side_engine: Mapping[str, Any] = field(default_factory=lambda: {"name": "classical"})
    per_task: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any], *, check_environment: bool = True, tasks: Sequence[TaskSpec] = ()
    ) -> MethodSettings:
        """Validate the ``method`` config; every problem is one `UsageError` naming the setting.

        ``per_task`` keys are the challenge's task ids (or names) and the names of ``tasks`` (the
        run's declared tasks). ``check_environment`` also checks that the side engine can be
        imported and that the calibration file is readable (off when reading the config of an
        earlier run, whose declared tasks are not known here: any key is accepted then)."""
        raw = dict(cfg or {})
        per_task_raw = raw.pop("per_task", None) or {}
        if not isinstance(per_task_raw, Mapping):
            raise UsageError("method.per_task must map task ids to settings")
        per_task: dict[str, dict[str, Any]] = {}
        by_key = {key: spec for spec in (*TASKS.values(), *tasks) for key in spec.config_keys}
        for task_id, entry in per_task_raw.items():
            key = str(task_id)
            if key not in by_key and check_environment:
                raise UsageError(
                    f"method.per_task.{key}: not a task id (1..{max(TASKS)}) or the name of a task of this run"
                )
            entry = {k: v for k, v in dict(entry or {}).items() if v is not None}
            unknown = sorted(set(entry) - set(PER_TASK_KEYS))
            if unknown:
                raise UsageError(
                    f"method.per_task.{key}.{unknown[0]} cannot be set per task; one of: {', '.join(PER_TASK_KEYS)}"
                )
            if entry:
                per_task[key] = entry
        base = cls(**_coerce(raw, "method"), per_task=per_task)
        # for_task validates the merged values
        resolved = {key: base.for_task(by_key[key]) for key in per_task if key in by_key}
        if not check_environment:
            return base
        for key, settings in [("", base), *resolved.items()]:
            where = f"method.per_task.{key}" if key else "method"
            if settings.needs_side_engine:
                check_available(settings.side_engine, f"{where}.use_program/classical_voter")
            if settings.calibration:
                load_calibration(settings.calibration)
        return base

    def for_task(self, spec: TaskSpec) -> MethodSettings:
        """These settings with ``per_task[<id or name>]`` applied (and ``per_task`` emptied)."""
        entry = per_task_entry(self.per_task, spec)
        if not entry:
            return replace(self, per_task={}) if self.per_task else self
        merged: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k != "per_task"}
        for key, value in entry.items():
            if key in _MERGED_KEYS and isinstance(value, Mapping):
                merged[key] = {**dict(merged[key]), **dict(value)}
            else:
                merged[key] = value
        return MethodSettings(**_coerce(merged, f"method.per_task.{spec.config_keys[0]}"))

    @property
    def needs_side_engine(self) -> bool:
        return self.use_program or self.classical_voter

    def max_tokens_for(self, spec: TaskSpec) -> int:
        """The answer's own budget; `request_max_tokens` adds the thinking budget."""
        return int(self.max_tokens.get(spec.answer_kind.value, 256))

    def request_max_tokens(self, spec: TaskSpec) -> int:
        return self.max_tokens_for(spec) + (self.thinking_budget if self.enable_thinking else 0)

    def sampling_for(self, variant: int = 0) -> dict[str, Any]:
        """The thinking or non-thinking sampling; a ``seed`` is offset by the variant."""
        sampling = dict(
            self.thinking_sampling if self.enable_thinking and self.thinking_sampling else self.sampling
        )
        if variant and isinstance(sampling.get("seed"), int):
            sampling["seed"] += variant
        return sampling

    def longest_request(self, specs: Sequence[TaskSpec]) -> int:
        """The most tokens any request of ``specs`` may generate (for the context-length check)."""
        return max((self.for_task(spec).request_max_tokens(spec) for spec in specs), default=0)

    def label(self, spec: TaskSpec) -> str:
        """The method name for run.json: ``icl``, ``icl+program``, ``icl+classifier``, …"""
        parts = ["icl"]
        if self.classical_voter and spec.is_closed:
            parts.append("classifier")
        if self.use_program and spec.program:
            parts.append("program")
        return "+".join(parts)

    def summary(self, spec: TaskSpec) -> dict[str, Any]:
        """What run.json records of the method as applied to ``spec``."""
        constraint = constraint_for(spec) if self.structured_outputs else None
        return {
            "name": self.name,
            "enable_thinking": self.enable_thinking,
            "thinking_budget": self.thinking_budget if self.enable_thinking else None,
            "sampling": self.sampling_for(0),
            "max_tokens": self.request_max_tokens(spec),
            "structured_outputs": None if constraint is None else {constraint[0]: constraint[1]},
            "logprobs": self.logprobs if spec.is_closed else None,
            "self_consistency": self.self_consistency,
            "vote": self.vote,
            "calibration": self.calibration if spec.is_closed else None,
            "use_program": bool(self.use_program and spec.program),
            "classical_voter": bool(self.classical_voter and spec.is_closed),
        }


def _coerce(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Typed constructor arguments of `MethodSettings` from a config mapping."""
    known = {f for f in MethodSettings.__dataclass_fields__ if f != "per_task"}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise UsageError(f"{where}.{key} is not a method setting")
        if value is None and key not in ("logprobs", "calibration"):
            continue
        out[key] = value
    for key in (
        "enable_thinking",
        "thinking_followup",
        "structured_outputs",
        "use_program",
        "classical_voter",
    ):
        if key in out and not isinstance(out[key], bool):
            raise UsageError(f"{where}.{key}={out[key]!r} must be true or false")
    for key in ("sampling", "thinking_sampling", "extra_body", "side_engine"):
        if key in out:
            if not isinstance(out[key], Mapping):
                raise UsageError(f"{where}.{key} must be a mapping")
            out[key] = dict(out[key])
    if "max_tokens" in out:
        if not isinstance(out["max_tokens"], Mapping):
            raise UsageError(f"{where}.max_tokens must map answer kinds to token counts")
        out["max_tokens"] = {
            str(k): as_int(v, f"{where}.max_tokens.{k}", minimum=1) for k, v in out["max_tokens"].items()
        }
    if "thinking_budget" in out:
        out["thinking_budget"] = as_int(out["thinking_budget"], f"{where}.thinking_budget", minimum=0)
    if "self_consistency" in out:
        out["self_consistency"] = as_int(out["self_consistency"], f"{where}.self_consistency", minimum=1)
    if out.get("logprobs") is not None:
        out["logprobs"] = as_int(out["logprobs"], f"{where}.logprobs", minimum=0) or None
        if out["logprobs"] is not None and out["logprobs"] > MAX_TOP_LOGPROBS:
            raise UsageError(f"{where}.logprobs={out['logprobs']}: at most {MAX_TOP_LOGPROBS} (vLLM's limit)")
    if "vote" in out and out["vote"] not in ("auto", *RULES):
        raise UsageError(f"{where}.vote={out['vote']!r} is not one of: auto, {', '.join(RULES)}")
    if "calibration_mode" in out and out["calibration_mode"] not in ("auto", *CALIBRATION_MODES):
        raise UsageError(
            f"{where}.calibration_mode={out['calibration_mode']!r} is not one of: auto, {', '.join(CALIBRATION_MODES)}"
        )
    if "structured_outputs_style" in out:
        style = str(out["structured_outputs_style"])
        if style not in FIELD_STYLES:
            raise UsageError(
                f"{where}.structured_outputs_style={style!r} is not one of: {', '.join(FIELD_STYLES)}"
            )
    if "classical_weight" in out:
        try:
            out["classical_weight"] = float(out["classical_weight"])
        except (TypeError, ValueError):
            raise UsageError(
                f"{where}.classical_weight={out['classical_weight']!r} is not a number"
            ) from None
        if out["classical_weight"] < 0:
            raise UsageError(f"{where}.classical_weight must not be negative")
    if out.get("calibration") is not None:
        out["calibration"] = str(out["calibration"])
    if "name" in out:
        out["name"] = str(out["name"])
    return out


RequestLogger = Callable[[ChatRequest, PromptPlan], None]


def build_request(
    spec: TaskSpec,
    method: MethodSettings,
    messages: list[dict[str, str]],
    sample: Example,
    *,
    prompt_tokens: int = 0,
    affinity: str = "",
    variant: int = 0,
    stop: Sequence[str] = (),
) -> ChatRequest:
    """The chat request for ``messages`` under the method's settings for ``spec``: sampling and
    thinking, the thinking budget, the answer constraint and the log-probabilities wanted; the
    template's ``stop`` sequences unless thinking is on (a stop string could cut the reasoning)."""
    method = method.for_task(spec)
    sampling = method.sampling_for(variant)
    if stop and not method.enable_thinking:
        sampling["stop"] = list(stop)
    extra_body = dict(method.extra_body)
    extra_body["chat_template_kwargs"] = {
        **dict(extra_body.get("chat_template_kwargs") or {}),
        "enable_thinking": method.enable_thinking,
    }
    if method.structured_outputs:
        extra_body.update(structured_outputs_for(spec, method.structured_outputs_style) or {})
    return ChatRequest(
        task=spec,
        sample=sample,
        messages=messages,
        max_tokens=method.request_max_tokens(spec),
        sampling=sampling,
        extra_body=extra_body,
        logprobs=method.logprobs if spec.is_closed else None,
        prompt_tokens=prompt_tokens,
        affinity=affinity or spec.name,
    )


@dataclass
class Attempt:
    """One request of a sample (one prompt variant) and what was read from its reply."""

    plan: PromptPlan
    completion: Completion
    parsed: ParsedAnswer
    label_logprobs: dict[str, float] | None = None  # raw label scores (closed labels, logprobs on)
    calibrated: dict[str, float] | None = None  # the same after calibration, when applied

    @property
    def answer(self) -> str:
        """This request's vote: the calibrated best label when calibrated, else the parsed answer."""
        if self.calibrated:
            return best_label(self.calibrated, list(self.calibrated))
        return self.parsed.value if self.parsed.ok else ""

    def vote(self, *, calibrated: bool = True) -> Vote:
        scores = self.calibrated if calibrated and self.calibrated else self.label_logprobs
        answer = self.answer if calibrated else (self.parsed.value if self.parsed.ok else "")
        return Vote(answer, self.plan.static.variant, "icl", 1.0, scores)


@dataclass
class Annotator:
    spec: TaskSpec
    builder: ContextBuilder
    engine: Engine
    method: MethodSettings
    request_logger: RequestLogger | None = None
    settings: MethodSettings = field(init=False)  # ``method`` as it applies to this task
    calibration: Calibration | None = field(init=False, default=None)
    confidence_map: ConfidenceMap | None = field(init=False, default=None)  # applied to record confidences
    side: SideEngine | None = field(init=False, default=None)

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
        """The annotator of a run; subclasses read their own settings from the run ``config``."""
        return cls(spec, builder, engine, method, request_logger=request_logger)

    def __post_init__(self) -> None:
        self.settings = self.method.for_task(self.spec)
        self.calibration = task_calibration(self.settings, self.spec)
        self.confidence_map = (
            confidence_map(self.settings.calibration, self.spec.name) if self.settings.calibration else None
        )
        wants_side = (self.settings.use_program and self.spec.program) or (
            self.settings.classical_voter and self.spec.is_closed
        )
        if wants_side and self.engine.answers:
            self.side = SideEngine(self.settings.side_engine, self.spec, self.builder.pool)

    def request(self, plan: PromptPlan, *, variant: int = 0) -> ChatRequest:
        return build_request(
            self.spec,
            self.settings,
            plan.messages(),
            plan.sample,
            prompt_tokens=plan.prompt_tokens,
            affinity=f"{self.spec.name}/{plan.static.sha256[:16]}",
            variant=variant,
            stop=plan.stop,
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
        if completion.finish_reason == "length" and not unfinished_thinking(completion):
            # Cut short even after the engine's retry with more max_tokens: not a whole answer.
            completion.notes.append(f"answer cut at max_tokens, treated as unreadable: {completion.text!r}")
            completion.text = None
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
        """All of one sample: K prompt variants -> requests -> parse -> vote -> program -> record."""
        asked = await asyncio.gather(*(self.ask(sample, v) for v in range(self.settings.self_consistency)))
        if not self.engine.answers:
            nothing = ParsedAnswer("", False, "", "no answer (dry run)")
            return self.record(sample, index, [Attempt(plan, done, nothing) for plan, done in asked])
        attempts = []
        for plan, completion in asked:
            if (
                self.settings.enable_thinking
                and self.settings.thinking_followup
                and unfinished_thinking(completion)
            ):
                completion = await self._follow_up(plan, completion)
            attempts.append(self.read(plan, completion))
        side_votes: list[SideAnswer] = []
        if self.side is not None and self.settings.classical_voter and self.spec.is_closed:
            side_votes.append(await self.side.ask(self.request(attempts[0].plan)))
        program = None
        if self.side is not None and self.settings.use_program and self.spec.program:
            program = await self.side.ask(self.request(attempts[0].plan))
        return self.record(sample, index, attempts, side_votes, program)

    @property
    def reply_shape(self) -> ReplyShape:
        template = self.builder.template
        return ReplyShape(answer_prefix=template.answer_prefix, next_demo=template.input_prefix)

    def read(self, plan: PromptPlan, completion: Completion) -> Attempt:
        parsed = (
            parse_answer(self.spec, completion.text, self.reply_shape)
            if completion.error is None
            else ParsedAnswer("", False, "", completion.error)
        )
        scores = None
        if self.spec.is_closed and self.settings.logprobs and completion.error is None:
            scores = label_logprobs(
                self.spec, completion.logprobs, self.reply_shape.answer_prefix, answer=parsed.candidate
            )
        calibrated = None
        if scores is not None and self.calibration is not None:
            calibrated = self.calibration.apply(scores, plan.static.variant)
        return Attempt(plan, completion, parsed, scores, calibrated)

    async def _follow_up(self, plan: PromptPlan, completion: Completion) -> Completion:
        request = followup_request(
            self.request(plan, variant=plan.static.variant),
            completion,
            self.settings.max_tokens_for(self.spec),
        )
        return merge(completion, await self.engine.complete(request))

    def decide(self, attempts: list[Attempt], side_votes: list[SideAnswer], *, calibrated: bool = True):
        """The vote over ``attempts`` (and side voters), with or without calibration."""
        votes = [a.vote(calibrated=calibrated) for a in attempts]
        votes += [
            Vote(s.answer, -1, s.method, self.settings.classical_weight) for s in side_votes if s.answer
        ]
        rule = rule_for(self.settings.vote, votes)
        return vote(votes, rule, key=lambda answer: normalise(self.spec, answer))

    def record(
        self,
        sample: Example,
        index: int,
        attempts: list[Attempt],
        side_votes: list[SideAnswer] | None = None,
        program: SideAnswer | None = None,
    ) -> dict[str, Any]:
        """The JSON line kept for one sample (see README, "Outputs", and docs/methods.md)."""
        side_votes = side_votes or []
        answers = self.engine.answers
        result = self.decide(attempts, side_votes)
        prediction = result.answer
        extra: dict[str, Any] = {}
        if answers and self.calibration is not None and any(a.calibrated for a in attempts):
            raw = self.decide(attempts, side_votes, calibrated=False)
            extra["calibration"] = {"mode": self.calibration.mode, "raw_prediction": raw.answer}
        # What decided the prediction: the label scores (calibrated, or a probability vote),
        # the text of the reply, or the program that replaced it.
        decided_by = (
            "label_scores" if result.rule == "probability" or any(a.calibrated for a in attempts) else "text"
        )
        if program is not None:
            verdict = program_verdict(prediction, program, lambda a, b: score(self.spec, a, b) == 1.0)
            extra["program"] = verdict
            if verdict["replaced"]:
                prediction = program.answer
                decided_by = "program"
        errors = [a.completion.error for a in attempts if a.completion.error]
        error = errors[0] if answers and len(errors) == len(attempts) and not prediction else None
        if not answers:
            error = attempts[0].completion.error
        reasons = [a.parsed.reason for a in attempts if a.parsed.reason]
        ok = any(a.answer for a in attempts)  # the model's own answers, before side models
        return {
            "task": self.spec.name,
            "sample_id": sample.id,
            "index": index,
            "prediction": prediction,
            "parsed_ok": ok if answers else None,
            "parse_error": ("; ".join(dict.fromkeys(reasons)) or "no answer") if answers and not ok else None,
            "gold": sample.output,
            "correct": score(self.spec, prediction, sample.output) if answers else None,
            "method": self.method_label(attempts),
            "error": error,
            "requests": [request_log(a.plan, a.completion, a.parsed, a) for a in attempts],
            "vote": {**result.to_dict(), "side": [s.to_dict() for s in side_votes]} if answers else None,
            **self.confidence_fields(prediction, attempts, answers),
            "decided_by": decided_by if answers else None,
            **extra,
        }

    def confidence_fields(self, prediction: str, attempts: list[Attempt], answers: bool) -> dict[str, Any]:
        """``confidence`` and ``confidence_source`` of the final answer (longicl.quality.confidence)."""
        if not answers:
            return {"confidence": None, "confidence_source": None}
        supports = [Support(a.answer, a.calibrated or a.label_logprobs) for a in attempts]
        return record_fields(
            prediction, supports, lambda answer: normalise(self.spec, answer), self.confidence_map
        )

    def method_label(self, attempts: list[Attempt]) -> str:
        """``icl`` (+ side models) for a language model; what answered for other engines
        (``program``, ``classifier``, ``retrieval`` under ``engine=classical``)."""
        answered = [a.completion.method for a in attempts if a.completion.error is None]
        base = (answered or [attempts[0].completion.method])[0] if attempts else "icl"
        return self.settings.label(self.spec) if base == "icl" else base

    async def aclose(self) -> None:
        """Release the side engine (the runner's engine is closed by the runner)."""
        if self.side is not None:
            await self.side.aclose()


def request_log(
    plan: PromptPlan, completion: Completion, parsed: ParsedAnswer, attempt: Attempt | None = None
) -> dict[str, Any]:
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
        "answer": attempt.answer if attempt is not None else parsed.value,
        "label_logprobs": _rounded(attempt.label_logprobs) if attempt is not None else None,
        "calibrated_logprobs": _rounded(attempt.calibrated) if attempt is not None else None,
        "finish_reason": completion.finish_reason,
        "usage": completion.usage,
        "latency_s": round(completion.latency_s, 4),
        "attempts": completion.attempts,
        "server": completion.server,
        "error": completion.error,
        "notes": completion.notes,
    }


def _rounded(scores: Mapping[str, float] | None) -> dict[str, float] | None:
    return None if scores is None else {label: round(value, 6) for label, value in scores.items()}


def task_calibration(settings: MethodSettings, spec: TaskSpec) -> Calibration | None:
    """The calibration ``settings`` apply to ``spec`` (None: none, or not a closed-label task)."""
    if not (settings.calibration and spec.is_closed and settings.calibration_mode != "none"):
        return None
    entry = load_calibration(settings.calibration).get(spec.name)
    if entry is None:
        return None
    calibration = calibration_from_entry(entry, spec.labels or (), settings.calibration_mode)
    return None if calibration.mode == "none" else calibration

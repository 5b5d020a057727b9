"""In-context learning: K prompt variants, each parsed and scored, then a vote (and side models).

Per sample: one request per self-consistency variant (each with its own static block), every
reply parsed and, for closed labels with log-probabilities, scored and calibrated; the answers
vote (majority or probability); the side models, when switched on, add a vote or check the
winner (`longicl.annotators.side_models`). docs/methods.md describes each method.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from longicl.annotators.base import Annotator, Asked, register
from longicl.annotators.settings import MethodSettings
from longicl.annotators.side_models import SideModels
from longicl.data import Example
from longicl.engines.base import Completion
from longicl.methods.calibration import Calibration, ConfidenceMap, confidence_map, load_calibration
from longicl.methods.calibration import from_entry as calibration_from_entry
from longicl.methods.programs import SideAnswer
from longicl.methods.scoring import best_label, label_logprobs
from longicl.methods.voting import Vote, VoteResult, rule_for, vote
from longicl.metrics import score
from longicl.parse import ParsedAnswer, ReplyShape, normalise, parse_answer
from longicl.prompt import PromptPlan
from longicl.quality.confidence import Support, record_fields
from longicl.records import ICL, MethodLabel, RequestLog, SampleRecord
from longicl.tasks import TaskSpec


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
        return Vote(answer, self.plan.static.variant, ICL, 1.0, scores)

    def log(self) -> RequestLog:
        return RequestLog.of(
            self.plan,
            self.completion,
            parsed=self.parsed.value,
            answer=self.answer,
            label_logprobs=self.label_logprobs,
            calibrated_logprobs=self.calibrated,
        )


@register("default")
@dataclass
class IclAnnotator(Annotator):
    """Ask, parse, score, vote; the annotator of every task answered by a string."""

    calibration: Calibration | None = field(init=False, default=None)
    confidence_map: ConfidenceMap | None = field(init=False, default=None)  # applied to record confidences
    side: SideModels | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.calibration = task_calibration(self.settings, self.spec)
        self.confidence_map = (
            confidence_map(self.settings.calibration, self.spec.name) if self.settings.calibration else None
        )
        if self.engine.answers:
            self.side = SideModels.wanted(self.settings, self.spec, self.builder.pool)

    async def dry_requests(self, sample: Example) -> list[Asked]:
        asked = await asyncio.gather(*(self.ask(sample, v) for v in range(self.settings.self_consistency)))
        return [Asked(plan, completion) for plan, completion in asked]

    async def answer(self, sample: Example, index: int) -> SampleRecord:
        """K prompt variants -> requests -> parse -> vote -> side models -> record."""
        asked = await asyncio.gather(*(self.ask(sample, v) for v in range(self.settings.self_consistency)))
        attempts = [self.read(plan, completion) for plan, completion in asked]
        side_votes: list[SideAnswer] = []
        program = None
        if self.side is not None:
            side_votes = await self.side.votes(self.request(attempts[0].plan))
            program = await self.side.program(self.request(attempts[0].plan))
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

    def decide(
        self, attempts: Sequence[Attempt], side_votes: Sequence[SideAnswer], *, calibrated: bool = True
    ) -> VoteResult:
        """The vote over ``attempts`` (and side voters), with or without calibration."""
        votes = [a.vote(calibrated=calibrated) for a in attempts]
        votes += [
            Vote(s.answer, -1, s.source, self.settings.classical_weight) for s in side_votes if s.answer
        ]
        rule = rule_for(self.settings.vote, votes)
        return vote(votes, rule, key=lambda answer: normalise(self.spec, answer))

    def record(
        self,
        sample: Example,
        index: int,
        attempts: Sequence[Attempt],
        side_votes: Sequence[SideAnswer] = (),
        program: SideAnswer | None = None,
    ) -> SampleRecord:
        """The record of one answered sample (see README, "Outputs", and docs/methods.md)."""
        result = self.decide(attempts, side_votes)
        prediction = result.answer
        calibration = None
        if self.calibration is not None and any(a.calibrated for a in attempts):
            raw = self.decide(attempts, side_votes, calibrated=False)
            calibration = {"mode": self.calibration.mode, "raw_prediction": raw.answer}
        # What decided the prediction: the label scores (calibrated, or a probability vote),
        # the text of the reply, or the program that replaced it.
        decided_by = (
            "label_scores" if result.rule == "probability" or any(a.calibrated for a in attempts) else "text"
        )
        verdict = None
        if program is not None:
            prediction, verdict = SideModels.verify(
                prediction, program, lambda a, b: score(self.spec, a, b) == 1.0
            )
            if verdict["replaced"]:
                decided_by = "program"
        errors = [a.completion.error for a in attempts if a.completion.error]
        error = errors[0] if len(errors) == len(attempts) and not prediction else None
        reasons = [a.parsed.reason for a in attempts if a.parsed.reason]
        ok = any(a.answer for a in attempts)  # the model's own answers, before side models
        return SampleRecord(
            task=self.spec.name,
            sample_id=sample.id,
            index=index,
            prediction=prediction,
            parsed_ok=ok,
            parse_error=None if ok else ("; ".join(dict.fromkeys(reasons)) or "no answer"),
            gold=sample.output,
            correct=score(self.spec, prediction, sample.output),
            method=self.method_label(attempts),
            error=error,
            requests=[a.log() for a in attempts],
            vote={**result.to_dict(), "side": [s.to_dict() for s in side_votes]},
            confidence=self.confidence_fields(prediction, attempts),
            decided_by=decided_by,
            calibration=calibration,
            program=verdict,
        )

    def confidence_fields(self, prediction: str, attempts: Sequence[Attempt]) -> dict[str, Any]:
        """``confidence`` and ``confidence_source`` of the final answer (longicl.quality.confidence)."""
        supports = [Support(a.answer, a.calibrated or a.label_logprobs) for a in attempts]
        return record_fields(
            prediction, supports, lambda answer: normalise(self.spec, answer), self.confidence_map
        )

    def method_label(self, attempts: Sequence[Attempt]) -> MethodLabel:
        """``icl`` (+ side models) for a language model; what answered for other engines
        (``program``, ``classifier``, ``retrieval`` under ``engine=classical``)."""
        answered = [a.completion.method for a in attempts if a.completion.error is None]
        base = (answered or [attempts[0].completion.method])[0] if attempts else ICL
        return self.settings.method_label(self.spec) if base == ICL else MethodLabel(base)

    async def aclose(self) -> None:
        """Release the side engine (the runner's engine is closed by the runner)."""
        if self.side is not None:
            await self.side.aclose()


def task_calibration(settings: MethodSettings, spec: TaskSpec) -> Calibration | None:
    """The calibration ``settings`` apply to ``spec`` (None: none, or not a closed-label task)."""
    if not (settings.calibration and spec.is_closed and settings.calibration_mode != "none"):
        return None
    entry = load_calibration(settings.calibration).get(spec.name)
    if entry is None:
        return None
    calibration = calibration_from_entry(entry, spec.labels or (), settings.calibration_mode)
    return None if calibration.mode == "none" else calibration

"""Combining several answers to one sample into one prediction.

Each answer is a `Vote`: the normalised answer of one request (one prompt variant) or of a side
voter (the classical classifier), with optional label probabilities from `scoring`.

- ``majority``: every vote counts ``weight`` (1 by default) for its answer;
- ``probability``: every vote spreads ``weight`` over the labels by its label probabilities (soft
  voting); votes without probabilities count ``weight`` for their answer, as in ``majority``.

Unreadable answers ("") never win while any vote has a readable one. Ties are broken, in order,
by the summed log-probability of the tied answers over the votes that gave them (when known),
then by the answer of the lowest variant (variant 0 is the single-prompt method's answer), then
by the answer's text, so the same votes always give the same prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RULES = ("majority", "probability")
_EPS = 1e-9


@dataclass(frozen=True)
class Vote:
    answer: str  # normalised answer; "" when the reply could not be read
    variant: int = 0  # prompt variant (static block); side voters use -1
    source: str = "icl"  # "icl", or the side model's method ("classifier", ...)
    weight: float = 1.0
    label_logprobs: Mapping[str, float] | None = None  # over the task's labels, normalised

    def logprob_of(self, answer: str) -> float | None:
        if self.label_logprobs is None:
            return None
        return self.label_logprobs.get(answer)


@dataclass(frozen=True)
class VoteResult:
    answer: str
    rule: str  # "single", "majority" or "probability"
    tally: dict[str, float] = field(default_factory=dict)
    tie_break: str | None = None  # None, "logprob", "variant" or "text"
    agreement: float | None = None  # share of readable votes that agree with the answer

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "answer": self.answer,
            "tally": {k: round(v, 6) for k, v in self.tally.items()},
            "tie_break": self.tie_break,
            "agreement": None if self.agreement is None else round(self.agreement, 6),
        }


def vote(
    votes: Sequence[Vote],
    rule: str = "majority",
    *,
    key: Callable[[str], str] | None = None,
) -> VoteResult:
    """The winning answer of ``votes`` under ``rule`` (see the module docstring).

    ``key`` maps an answer to the form in which answers count as equal (e.g. the metric's
    normalisation); the winner is reported in the spelling of its first vote.
    """
    if rule not in RULES:
        raise ValueError(f"unknown voting rule {rule!r}: {', '.join(RULES)}")
    key = key or (lambda answer: answer)
    readable = [v for v in votes if v.answer]
    if not readable:
        return VoteResult("", "single" if len(votes) <= 1 else rule, {}, None, None)
    spelling: dict[str, str] = {}
    for v in readable:
        spelling.setdefault(key(v.answer), v.answer)
    tally: dict[str, float] = {}
    for v in readable:
        if rule == "probability" and v.label_logprobs:
            for label, logprob in v.label_logprobs.items():
                spelling.setdefault(key(label), label)
                tally[key(label)] = tally.get(key(label), 0.0) + v.weight * math.exp(logprob)
        else:
            tally[key(v.answer)] = tally.get(key(v.answer), 0.0) + v.weight
    best = max(tally.values())
    tied = sorted(k for k, value in tally.items() if best - value <= _EPS)
    winner, tie_break = tied[0], None
    if len(tied) > 1:
        winner, tie_break = _break_tie(tied, readable, key)
    agreement = sum(1 for v in readable if key(v.answer) == winner) / len(readable)
    return VoteResult(
        spelling[winner],
        "single" if len(votes) == 1 else rule,
        {spelling[k]: value for k, value in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))},
        tie_break,
        agreement,
    )


def _break_tie(tied: list[str], votes: Sequence[Vote], key: Callable[[str], str]) -> tuple[str, str]:
    # 1. the summed log-probability of each tied answer, over the votes that gave it
    sums: dict[str, float] = {}
    for answer in tied:
        values = [v.logprob_of(answer) for v in votes if key(v.answer) == answer]
        known = [lp for lp in values if lp is not None]
        if known and len(known) == len(values):
            sums[answer] = sum(known)
    if len(sums) == len(tied):
        best = max(sums.values())
        leaders = [a for a in tied if best - sums[a] <= _EPS]
        if len(leaders) == 1:
            return leaders[0], "logprob"
        tied = leaders
    # 2. the answer of the lowest variant among the votes for a tied answer (variant 0 first)
    ranked = sorted(
        (v for v in votes if key(v.answer) in tied), key=lambda v: (v.variant < 0, abs(v.variant))
    )
    if ranked:
        return key(ranked[0].answer), "variant"
    return tied[0], "text"  # unreachable with readable votes; kept for safety


def rule_for(requested: str, votes: Sequence[Vote]) -> str:
    """``auto``: probability voting when every model vote has label probabilities, else majority."""
    if requested != "auto":
        return requested
    model_votes = [v for v in votes if v.source == "icl" and v.answer]
    if model_votes and all(v.label_logprobs for v in model_votes):
        return "probability"
    return "majority"

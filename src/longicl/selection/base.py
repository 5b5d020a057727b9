"""The shared base of every demonstration-selection strategy.

A strategy answers two questions for one task's pool of labelled examples:
- ``static_demos(variant)``: which demonstrations form the block shared, byte for byte, by every
  sample of the task (so the server's prefix cache computes it once);
- ``dynamic_demos(query)``: which demonstrations are chosen for this sample alone, placed after
  the static block and just before the query.

Both work on indices into the pool and on each demonstration's token cost (its rendered size in
the prompt), and both stop at a token budget. Strategies never see the prompt text itself.
"""

from __future__ import annotations

import random
from abc import ABC
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from longicl.data import Example
from longicl.tasks import TaskSpec

# How many too-large neighbours in a row end the search for one that still fits.
_MAX_MISSES = 200


@dataclass(frozen=True)
class PromptBudget:
    """Token budgets for the demonstrations of one request."""

    static_tokens: int  # target size of the shared block (filled until reached)
    dynamic_tokens: int  # ceiling of the per-sample block (never exceeded)
    min_icl_tokens: int  # the competition's floor for static + dynamic demonstrations
    max_prompt_tokens: int  # hard ceiling of the whole prompt


class Selector(ABC):
    """Base strategy: no static block, no dynamic block. Subclasses override one or both."""

    name = "base"

    def __init__(self, spec: TaskSpec, pool: Sequence[Example], costs: Sequence[int], seed: int = 0) -> None:
        if len(pool) != len(costs):
            raise ValueError("pool and costs must have the same length")
        self.spec = spec
        self.pool = pool
        self.costs = costs
        self.seed = seed

    def rng(self, *salt: object) -> random.Random:
        """A generator seeded from the config seed, the task and a purpose, so choices are reproducible."""
        return random.Random(":".join(map(str, (self.spec.name, self.seed, *salt))))

    def observe(self, queries: Sequence[Example]) -> None:
        """The unlabelled samples of the run's split; strategies whose static block depends on
        them (``centroid``) override this."""

    def static_demos(self, budget: PromptBudget, variant: int = 0) -> list[int]:
        return []

    def dynamic_demos(self, query: Example, budget: PromptBudget, exclude: frozenset[int]) -> list[int]:
        return []

    def fill_static(self, order: Iterable[int], target: int) -> list[int]:
        """Take demonstrations in ``order`` until their cost reaches ``target`` (the last may overshoot)."""
        chosen, total = [], 0
        for index in order:
            if total >= target:
                break
            chosen.append(index)
            total += self.costs[index]
        return chosen

    def fill_dynamic(self, ranked: Iterable[int], ceiling: int, exclude: frozenset[int]) -> list[int]:
        """Take the best-ranked demonstrations that fit under ``ceiling``, most similar placed last."""
        chosen, total, misses = [], 0, 0
        smallest = min(self.costs, default=0)
        for index in ranked:
            if ceiling - total < smallest or misses >= _MAX_MISSES:
                break
            if index in exclude:
                continue
            cost = self.costs[index]
            if total + cost > ceiling:
                misses += 1
                continue  # a smaller, slightly less similar one may still fit
            chosen.append(index)
            total += cost
        chosen.reverse()
        return chosen

"""``random``: one seeded random block per task, shared by all its samples (OpenCompass: RandomRetriever)."""

from __future__ import annotations

from longicl.selection.base import PromptBudget, Selector


class RandomSelector(Selector):
    name = "random"

    def static_demos(self, budget: PromptBudget, variant: int = 0) -> list[int]:
        order = list(range(len(self.pool)))
        self.rng("random", variant).shuffle(order)
        return self.fill_static(order, budget.static_tokens + budget.dynamic_tokens)

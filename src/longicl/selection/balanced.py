"""``balanced``: a label-stratified static block with labels interleaved, never grouped.

Each label's examples are shuffled; rounds then take one example per label, in an order
reshuffled every round, so no label sits in a run at the end of the block (recency bias) and no
fixed A-B-A-B period can be learnt. ``proportions="uniform"`` gives every label the same share;
``"pool"`` keeps the pool's label shares (the true prior), interleaving by smooth weighted
round-robin. Tasks without a closed label set fall back to a seeded random order.
"""

from __future__ import annotations

from collections import defaultdict

from longicl.selection.base import PromptBudget, Selector


class BalancedSelector(Selector):
    name = "balanced"
    proportions = "uniform"

    def static_demos(self, budget: PromptBudget, variant: int = 0) -> list[int]:
        return self.fill_static(self.interleaved_order(variant), budget.static_tokens + budget.dynamic_tokens)

    def interleaved_order(self, variant: int) -> list[int]:
        rng = self.rng("balanced", self.proportions, variant)
        if not self.spec.is_closed:
            order = list(range(len(self.pool)))
            rng.shuffle(order)
            return order
        queues: dict[str, list[int]] = defaultdict(list)
        for index, example in enumerate(self.pool):
            queues[example.output or ""].append(index)
        for label in sorted(queues):
            rng.shuffle(queues[label])
        if self.proportions == "pool":
            return _weighted_round_robin(queues, rng)
        order: list[int] = []
        labels = sorted(queues)
        while any(queues.values()):
            rng.shuffle(labels)
            order.extend(queues[label].pop() for label in labels if queues[label])
        return order


def _weighted_round_robin(queues: dict[str, list[int]], rng) -> list[int]:
    """Interleave queues in proportion to their sizes (smooth weighted round-robin, random ties)."""
    weights = {label: len(items) for label, items in queues.items()}
    total = sum(weights.values())
    credit = {label: rng.random() * 1e-6 for label in queues}
    order: list[int] = []
    while len(order) < total:
        for label in credit:
            credit[label] += weights[label] if queues[label] else 0
        label = max((lab for lab in credit if queues[lab]), key=lambda lab: credit[lab])
        credit[label] -= total
        order.append(queues[label].pop())
    return order

"""``centroid``: ``hybrid`` with a static block chosen for the whole split instead of at random.

For tasks without a closed label set (kernel generation above all), the shared block is filled
with the pool examples most similar to the run's samples *as a whole*: each sample ranks the pool
by BM25 on its input, its scores are divided by its own best score (so every sample weighs the
same, whatever its length), and the pool is ordered by the mean of these normalised scores, per
token of demonstration to the power ``cost_power`` (0.5 by default: a short example that is
nearly as relevant beats a long one, so the block holds more, varied operations). Exact duplicate
demonstrations are taken once. The block is still byte-identical for every sample (the prefix
cache holds it once) and independent of ``limit`` (the runner passes the whole split). Its most
relevant demonstrations are placed last, nearest to the per-sample block and the query.

Closed-label tasks keep ``hybrid``'s label-stratified block: similarity to the split would skew
the label prior. The per-sample block is ``hybrid``'s (BM25 neighbours of the sample).

The samples arrive through `observe` (unlabelled inputs only). Before `observe`, or with no
samples, the pool's own inputs stand in for them (the pool's most typical examples).
Self-consistency variants above 0 jitter the scores with a seeded factor in [0.5, 1.5].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from longicl.data import Example
from longicl.selection.base import PromptBudget
from longicl.selection.hybrid import HybridSelector


class CentroidSelector(HybridSelector):
    name = "centroid"
    cost_power = 0.5  # relevance per (tokens ** cost_power); 0: relevance alone

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.queries: tuple[str, ...] = ()
        self._relevance: np.ndarray | None = None

    def observe(self, queries: Sequence[Example]) -> None:
        """The unlabelled samples of the run's split (all of them, not only ``limit``)."""
        texts = tuple(q.input for q in queries)
        if texts != self.queries:
            self.queries = texts
            self._relevance = None

    def relevance(self) -> np.ndarray:
        """Mean over the samples of each pool example's BM25 score, normalised per sample."""
        if self._relevance is None:
            texts = self.queries or tuple(ex.input for ex in self.pool)
            total = np.zeros(len(self.pool), dtype=np.float64)
            for text in texts:
                scores = self.index.scores(text).astype(np.float64)
                best = scores.max(initial=0.0)
                if best > 0:
                    total += scores / best
            self._relevance = total / max(1, len(texts))
        return self._relevance

    def centroid_order(self, variant: int = 0) -> list[int]:
        costs = np.maximum(np.asarray(self.costs, dtype=np.float64), 1.0)
        score = self.relevance() / costs**self.cost_power
        if variant:
            rng = self.rng("centroid", variant)
            score = score * np.asarray([rng.uniform(0.5, 1.5) for _ in range(len(score))])
        order = np.lexsort((np.arange(len(score)), -score)).tolist()
        seen: set[tuple[str, str | None]] = set()
        unique = []
        for index in order:
            key = (self.pool[index].input, self.pool[index].output)
            if key not in seen:
                seen.add(key)
                unique.append(index)
        return unique

    def static_demos(self, budget: PromptBudget, variant: int = 0) -> list[int]:
        if self.spec.is_closed:
            return super().static_demos(budget, variant)
        chosen = self.fill_static(self.centroid_order(variant), budget.static_tokens)
        chosen.reverse()  # most relevant last, nearest the query
        return chosen

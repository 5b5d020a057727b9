"""Demonstration selection: one strategy per module, all behind `Selector`."""

from __future__ import annotations

from collections.abc import Sequence

from longicl.data import Example
from longicl.errors import UsageError
from longicl.selection.balanced import BalancedSelector
from longicl.selection.base import PromptBudget, Selector
from longicl.selection.bm25 import BM25Index, BM25Selector
from longicl.selection.centroid import CentroidSelector
from longicl.selection.hybrid import HybridSelector
from longicl.selection.random import RandomSelector
from longicl.tasks import TaskSpec

STRATEGIES: dict[str, type[Selector]] = {
    cls.name: cls
    for cls in (RandomSelector, BalancedSelector, BM25Selector, HybridSelector, CentroidSelector)
}


def build_selector(
    name: str, spec: TaskSpec, pool: Sequence[Example], costs: Sequence[int], seed: int = 0
) -> Selector:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise UsageError(
            f"selection.name={name!r} is not a strategy: choose one of {', '.join(STRATEGIES)}"
        ) from None
    return cls(spec, pool, costs, seed)


__all__ = ["BM25Index", "PromptBudget", "Selector", "STRATEGIES", "build_selector"]

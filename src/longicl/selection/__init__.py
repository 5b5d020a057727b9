"""Demonstration selection: one strategy per module, all behind `Selector`."""

from __future__ import annotations

from collections.abc import Sequence

from longicl.data import Example
from longicl.registry import Registry
from longicl.selection.balanced import BalancedSelector
from longicl.selection.base import PromptBudget, Selector
from longicl.selection.bm25 import BM25Index, BM25Selector
from longicl.selection.centroid import CentroidSelector
from longicl.selection.hybrid import HybridSelector
from longicl.selection.random import RandomSelector
from longicl.selection.settings import SelectionSettings
from longicl.tasks import TaskSpec

STRATEGIES: Registry[type[Selector]] = Registry(
    "selection strategy",
    {
        cls.name: cls
        for cls in (RandomSelector, BalancedSelector, BM25Selector, HybridSelector, CentroidSelector)
    },
)


def build_selector(
    name: str, spec: TaskSpec, pool: Sequence[Example], costs: Sequence[int], seed: int = 0
) -> Selector:
    cls = STRATEGIES.get(name, where="selection.name")
    return cls(spec, pool, costs, seed)


__all__ = ["BM25Index", "PromptBudget", "STRATEGIES", "SelectionSettings", "Selector", "build_selector"]

"""What every classical annotator is: hyperparameters (a dataclass), ``fit`` on a pool, ``predict``.

A model's init fields are its settings; they and the pool's digest make its cache key. Fitted
state lives in attributes set by ``fit`` (never init fields), so a fitted model pickles whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from longicl.config_values import plain
from longicl.data import Example
from longicl.tasks import TaskSpec


@dataclass(frozen=True)
class Prediction:
    """One answer and what produced it (``Completion.method``: program, classifier, retrieval)."""

    answer: str
    method: str
    note: str | None = None  # e.g. why a program fell back to retrieval


class NotFittedError(RuntimeError):
    """``predict`` before ``fit``."""


@dataclass
class ClassicalModel(ABC):
    """Base of the classical annotators; subclasses are dataclasses of their hyperparameters."""

    kind: ClassVar[str] = "base"
    method: ClassVar[str] = "classifier"

    @abstractmethod
    def fit(self, spec: TaskSpec, pool: Sequence[Example]) -> ClassicalModel:
        """Learn from the labelled pool; returns ``self``."""

    @abstractmethod
    def predict(self, text: str) -> Prediction:
        """The answer for one input text."""

    def settings(self) -> dict[str, Any]:
        """The hyperparameters, as plain data (the cache key and run.json use them)."""
        return {
            "kind": self.kind,
            **{f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)},
        }


def labelled(pool: Sequence[Example]) -> list[Example]:
    """The pool's examples that have an output (a pool should have only these)."""
    return [ex for ex in pool if ex.output is not None]


def pool_digest(pool: Sequence[Example]) -> str:
    """sha256 over every example's id, input and output, in order."""
    digest = hashlib.sha256()
    for ex in pool:
        for part in (ex.id, ex.input, ex.output if ex.output is not None else "\x00none"):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()

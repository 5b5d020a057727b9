"""Nearest-neighbour answers: the output of the pool example most similar to the input (BM25).

Used for open answers without a better model (task 7's Jeopardy clues: an answer is right only
when the pool holds a near-duplicate clue; task 8's kernels: the nearest example's code as a
placeholder) and as the fallback of a program whose input it cannot read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from longicl.classical.base import ClassicalModel, NotFittedError, Prediction, labelled
from longicl.data import Example
from longicl.selection.bm25 import BM25Index
from longicl.tasks import TaskSpec


@dataclass
class NearestNeighbour(ClassicalModel):
    """Answers with the output of the BM25-nearest pool example (ties: the earlier example)."""

    kind: ClassVar[str] = "nearest"
    method: ClassVar[str] = "retrieval"

    k1: float = 1.2
    b: float = 0.75

    def fit(self, spec: TaskSpec, pool: Sequence[Example]) -> NearestNeighbour:
        examples = labelled(pool)
        if not examples:
            raise ValueError(f"{spec.name}: no labelled examples to retrieve from")
        self._outputs = [ex.output or "" for ex in examples]
        self._index = BM25Index([ex.input for ex in examples], k1=self.k1, b=self.b)
        return self

    def predict(self, text: str) -> Prediction:
        index = getattr(self, "_index", None)
        if index is None:
            raise NotFittedError("NearestNeighbour.predict before fit")
        best = int(index.ranked(text)[0])
        return Prediction(self._outputs[best], self.method)

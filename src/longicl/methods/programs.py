"""Side models next to in-context learning: the classical engine as program or as one more voter.

Both options go through the classical engine's public interface, the `Engine` protocol
(``engine=classical``, `longicl.engines.classical`): it is started, prepared once per task on
the demonstration pool, and asked with the same `ChatRequest` as the model. Its `Completion`
says what answered (``method``: ``"program"`` for the exact programs of tasks 1, 3 and 4,
``"classifier"`` for the text classifiers of tasks 2, 5 and 6).

- **program verification** (``method.use_program``): the program's answer is checked against the
  model's; where they differ the program's answer replaces it, and the record says so. Only an
  answer the engine marks ``"program"`` counts, so a fallback (e.g. a nearest-neighbour guess)
  never overrides the model;
- **classical voter** (``method.classical_voter``): the classifier's answer joins the
  self-consistency vote with ``method.classical_weight``.

Neither is pure in-context learning: runs that use them say so in ``run.json`` (``pure_icl:
false``, ``side_models``), since statistical side-models were treated as non-compliant.

This module holds what the side answers are and what program verification decides; the side
engine itself is built and asked by `longicl.annotators.side_models`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from longicl.engines.base import Completion

PROGRAM = "program"


@dataclass
class SideAnswer:
    answer: str  # normalised, "" when the side model gave nothing usable
    source: str  # what answered ("program", "classifier", ...), as `Vote.source`
    completion: Completion

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "source": self.source,
            "raw_response": self.completion.text,
            "error": self.completion.error,
        }


def program_verdict(model_answer: str, side: SideAnswer, same) -> dict[str, Any]:
    """What program verification decided for one sample (``same``: the metric's equality)."""
    usable = side.source == PROGRAM and bool(side.answer)
    agreed = usable and bool(model_answer) and same(model_answer, side.answer)
    return {
        **side.to_dict(),
        "model_answer": model_answer,
        "usable": usable,
        "agreed": agreed,
        "replaced": usable and not agreed,
    }

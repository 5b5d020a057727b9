"""Exact programs for the tasks whose answer is a function of the input (tasks 1, 3 and 4).

Each program reads the task's input text (a Python-style list literal) and returns the answer in
the gold answers' canonical form, or raises `ProgramInputError` when the input is not a list it
can read. `TaskSpec.program` names the program of a task.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from longicl.classical.base import ClassicalModel, NotFittedError, Prediction
from longicl.classical.retrieval import NearestNeighbour
from longicl.data import Example
from longicl.tasks import TaskSpec

_INTEGER = re.compile(r"[-−–]?\d+")


class ProgramInputError(ValueError):
    """The input is not the kind of list the program works on."""


def _literal_list(text: str) -> list:
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ProgramInputError(f"not a list literal: {exc}") from None
    if not isinstance(value, list | tuple):
        raise ProgramInputError(f"not a list: {type(value).__name__}")
    return list(value)


def read_int_list(text: str) -> list[int]:
    """``"[3, -1, 7]"`` -> ``[3, -1, 7]``; tolerates a missing bracket or unicode minus signs."""
    try:
        items = _literal_list(text)
    except ProgramInputError:
        found = _INTEGER.findall(text)
        if not found:
            raise
        return [int(item.replace("−", "-").replace("–", "-")) for item in found]
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        raise ProgramInputError("the list holds something other than integers")
    return items


def read_str_list(text: str) -> list[str]:
    """``"['a', 'b']"`` -> ``['a', 'b']``."""
    items = _literal_list(text)
    if not all(isinstance(item, str) for item in items):
        raise ProgramInputError("the list holds something other than strings")
    return items


def min_abs_difference(text: str) -> str:
    """Task 1: the smallest absolute difference between two elements of an integer list."""
    values = sorted(read_int_list(text))
    if len(values) < 2:
        raise ProgramInputError("fewer than two integers")
    return str(min(b - a for a, b in zip(values, values[1:], strict=False)))


def collatz_step(text: str) -> str:
    """Task 3: halve every even element, map every odd one to 3x + 1; answer ``"[a, b, c]"``."""
    values = read_int_list(text)
    return "[" + ", ".join(str(v // 2 if v % 2 == 0 else 3 * v + 1) for v in values) + "]"


def concatenate(text: str) -> str:
    """Task 4: the strings of the list joined with nothing between them."""
    return "".join(read_str_list(text))


PROGRAMS: dict[str, Callable[[str], str]] = {
    "min_abs_difference": min_abs_difference,
    "collatz_step": collatz_step,
    "concatenate": concatenate,
}


@dataclass
class ProgramModel(ClassicalModel):
    """A task's exact program; an input the program cannot read gets the nearest example's output.

    Only program answers say ``method="program"``; the fallback says ``"retrieval"``, so a
    caller that trusts programs (e.g. program verification) never trusts a guess.
    """

    kind: ClassVar[str] = "program"
    method: ClassVar[str] = "program"

    program: str = ""
    fallback: bool = True

    def __post_init__(self) -> None:
        if self.program not in PROGRAMS:
            raise ValueError(f"program={self.program!r} is not one of: {', '.join(PROGRAMS)}")

    def fit(self, spec: TaskSpec, pool: Sequence[Example]) -> ProgramModel:
        self._fallback = NearestNeighbour().fit(spec, pool) if self.fallback and pool else None
        self._fitted = True
        return self

    def predict(self, text: str) -> Prediction:
        if not getattr(self, "_fitted", False):
            raise NotFittedError("ProgramModel.predict before fit")
        try:
            return Prediction(PROGRAMS[self.program](text), self.method)
        except ProgramInputError as exc:
            if self._fallback is None:
                raise
            guess = self._fallback.predict(text)
            return Prediction(
                guess.answer, guess.method, f"program {self.program} could not read the input ({exc})"
            )

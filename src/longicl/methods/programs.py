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
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from longicl.data import Example
from longicl.engines import ENGINES, build_engine
from longicl.engines.base import ChatRequest, Completion, Engine
from longicl.errors import UsageError
from longicl.parse import parse_answer
from longicl.tasks import TaskSpec

PROGRAM = "program"


def check_available(settings: Mapping[str, Any], option: str) -> None:
    """Fail early, naming ``option``, when the side engine cannot be imported."""
    name = str(settings.get("name", ""))
    target = ENGINES.get(name)
    if target is None:
        raise UsageError(f"{option} needs method.side_engine.name to be one of: {', '.join(ENGINES)}")
    module = target.split(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise UsageError(f"{option} needs the {name!r} engine ({module}), which this install does not have")


@dataclass
class SideAnswer:
    answer: str  # normalised, "" when the side model gave nothing usable
    method: str  # what answered ("program", "classifier", ...)
    completion: Completion

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "source": self.method,
            "raw_response": self.completion.text,
            "error": self.completion.error,
        }


class SideEngine:
    """One engine instance per task, started and prepared on first use (safe under concurrency)."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        spec: TaskSpec,
        pool: Sequence[Example],
        engine: Engine | None = None,
    ) -> None:
        self.settings = dict(settings)
        self.spec = spec
        self.pool = pool
        self._unprepared = engine  # an engine instance to use instead of building one from settings
        self._engine: Engine | None = None
        self._lock = asyncio.Lock()

    async def engine(self) -> Engine:
        async with self._lock:
            if self._engine is None:
                engine = self._unprepared or build_engine(self.settings)
                await engine.start()
                await engine.prepare(self.spec, self.pool)
                self._engine = engine
        return self._engine

    async def ask(self, request: ChatRequest) -> SideAnswer:
        engine = await self.engine()
        completion = await engine.complete(request)
        if completion.error is not None:
            return SideAnswer("", completion.method, completion)
        parsed = parse_answer(self.spec, completion.text)
        return SideAnswer(parsed.value if parsed.ok else "", completion.method, completion)

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.aclose()
            self._engine = None


def program_verdict(model_answer: str, side: SideAnswer, same) -> dict[str, Any]:
    """What program verification decided for one sample (``same``: the metric's equality)."""
    usable = side.method == PROGRAM and bool(side.answer)
    agreed = usable and bool(model_answer) and same(model_answer, side.answer)
    return {
        **side.to_dict(),
        "model_answer": model_answer,
        "usable": usable,
        "agreed": agreed,
        "replaced": usable and not agreed,
    }

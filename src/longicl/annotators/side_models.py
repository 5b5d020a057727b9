"""Side models around the language model: the classical classifier as one more voter, the exact
program as a checker of the model's answer (``method.classical_voter``, ``method.use_program``).

Both ask the side engine (``method.side_engine``, the classical engine by default) the very
request the model got; `SideModels` builds that engine once per task, starts and prepares it on
the demonstration pool on first use, and closes it with the annotator. What the answers mean
(`SideAnswer`, `program_verdict`) lives in `longicl.methods.programs`; docs/methods.md explains
why neither is pure in-context learning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from longicl.annotators.settings import MethodSettings
from longicl.data import Example
from longicl.engines import build_engine
from longicl.engines.base import ChatRequest, Engine
from longicl.methods.programs import SideAnswer, program_verdict
from longicl.parse import parse_answer
from longicl.tasks import TaskSpec


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


class SideModels:
    """The side models ``settings`` switch on for one task, over one shared `SideEngine`."""

    def __init__(self, settings: MethodSettings, spec: TaskSpec, engine: SideEngine) -> None:
        self.spec = spec
        self.engine = engine
        self.voter = settings.classical_voter and spec.is_closed
        self.checker = settings.use_program and bool(spec.program)

    @classmethod
    def wanted(cls, settings: MethodSettings, spec: TaskSpec, pool: Sequence[Example]) -> SideModels | None:
        """The side models of ``spec`` under ``settings``; None when none applies."""
        if not settings.side_models(spec):
            return None
        return cls(settings, spec, SideEngine(settings.side_engine, spec, pool))

    async def votes(self, request: ChatRequest) -> list[SideAnswer]:
        """The classifier's vote, when it votes (it joins the self-consistency vote)."""
        return [await self.engine.ask(request)] if self.voter else []

    async def program(self, request: ChatRequest) -> SideAnswer | None:
        """The program's answer to ``request``, when a program checks this task."""
        return await self.engine.ask(request) if self.checker else None

    @staticmethod
    def verify(
        prediction: str, program: SideAnswer, same: Callable[[str, str], bool]
    ) -> tuple[str, dict[str, Any]]:
        """The prediction after program verification, and the verdict the record keeps."""
        verdict = program_verdict(prediction, program, same)
        return (program.answer if verdict["replaced"] else prediction), verdict

    async def aclose(self) -> None:
        await self.engine.aclose()

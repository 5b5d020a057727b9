"""Which engines exist here and what they are: traits read from the engine classes themselves
(`longicl.engines.ENGINES`), and the words the notebooks and the report use for each."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from longicl.errors import UsageError


@dataclass(frozen=True)
class EngineTraits:
    answers: bool  # replies are answers (False for the dry run, which only builds requests)
    reads_prompts: bool  # a language model reads the prompt (False for the classical annotators)

    @property
    def language_model(self) -> bool:
        """The answers come from a language model that read the prompt."""
        return self.answers and self.reads_prompts


@dataclass(frozen=True)
class EngineWords:
    """How a run of an engine is named: ``model`` is what answered when no language model did
    (None: the model run.json names), ``label`` the run's kind ({model} filled in), ``system``
    its row in the comparison with baselines."""

    model: str | None
    label: str
    system: str


#: Words per engine name; an engine missing here is named by its name.
ENGINE_WORDS: dict[str, EngineWords] = {
    "openai": EngineWords(None, "{model} via openai", "{model} (this work)"),
    "classical": EngineWords(
        "none (classical CPU annotators)", "classical (CPU)", "classical engine floor (CPU, no model)"
    ),
    "dryrun": EngineWords("none (dry run: requests built, not sent)", "dry run", "dryrun"),
    "local": EngineWords(
        None, "{model} via llama.cpp on the CPU", "{model} on the CPU (a check of the machinery)"
    ),
}


def engine_words(name: str) -> EngineWords:
    return ENGINE_WORDS.get(name) or EngineWords(f"none ({name})", name, name)


def engine_available(name: str) -> bool:
    """Whether engine ``name`` is registered and its module can be imported."""
    from longicl.engines import ENGINES

    return ENGINES.available(name)


@cache
def engine_traits(name: str) -> EngineTraits:
    """The class attributes ``answers`` and ``reads_prompts`` of engine ``name`` (an engine that
    is not registered or cannot be imported here counts as a language model)."""
    from longicl.engines import ENGINES

    try:
        cls = ENGINES.get(str(name))
    except (UsageError, ImportError, AttributeError):
        return EngineTraits(answers=True, reads_prompts=True)
    return EngineTraits(bool(cls.answers), bool(cls.reads_prompts))


def cpu_engine() -> str:
    """The engine CPU defaults use: ``classical`` when it is installed, else ``dryrun``."""
    return "classical" if engine_available("classical") else "dryrun"


def resolve_engine(name: str) -> str:
    """``auto`` is `cpu_engine()`; any other name is kept."""
    return cpu_engine() if str(name) == "auto" else str(name)


def engine_answers(name: str) -> bool:
    """Whether an engine returns answers (the dry run only builds requests)."""
    return engine_traits(name).answers

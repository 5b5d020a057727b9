"""Which engines exist here and what they do (read from the engine registry)."""

from __future__ import annotations

import importlib.util


def engine_available(name: str) -> bool:
    """Whether engine ``name`` is registered and its module can be imported."""
    from longicl.engines import ENGINES

    target = ENGINES.get(name)
    if target is None:
        return False
    try:
        return importlib.util.find_spec(target.split(":")[0]) is not None
    except ModuleNotFoundError:
        return False


def cpu_engine() -> str:
    """The engine CPU defaults use: ``classical`` when it is installed, else ``dryrun``."""
    return "classical" if engine_available("classical") else "dryrun"


def resolve_engine(name: str) -> str:
    """``auto`` is `cpu_engine()`; any other name is kept."""
    return cpu_engine() if str(name) == "auto" else str(name)


def engine_answers(name: str) -> bool:
    """Whether an engine returns answers (the dry run only builds requests)."""
    return name != "dryrun"

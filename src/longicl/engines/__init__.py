"""Engines behind one async interface (`Engine.complete`), chosen by ``engine.name``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from longicl.engines.base import CONTEXT_LENGTH_ERROR, ChatRequest, Completion, Engine
from longicl.errors import UsageError
from longicl.registry import Registry

# name -> "module:Class"; imported on demand so that optional dependencies stay optional.
ENGINES: Registry[type[Engine]] = Registry(
    "engine",
    lazy={
        "openai": "longicl.engines.openai_compat:OpenAIEngine",
        "dryrun": "longicl.engines.dryrun:DryRunEngine",
        "classical": "longicl.engines.classical:ClassicalEngine",
        "ray": "longicl.engines.ray_engine:RayEngine",
        "local": "longicl.engines.local:LocalEngine",  # llama.cpp on this CPU (the [local] extra)
    },
)


def build_engine(settings: Mapping[str, Any]) -> Engine:
    """Instantiate the engine named by ``settings["name"]`` with the other settings as arguments."""
    options = dict(settings)
    name = options.pop("name", None)
    cls = ENGINES.get(name, where="engine")
    try:
        return cls(**options)
    except TypeError as exc:  # a setting the engine does not have, or one it needs and lacks
        unknown = _UNKNOWN.search(str(exc))
        if unknown:
            raise UsageError(f"engine.{unknown.group(1)} is not a setting of engine={name}") from None
        missing = _MISSING.search(str(exc))
        if missing:
            raise UsageError(f"engine.{missing.group(1)} is not set (see conf/engine/{name}.yaml)") from None
        raise


_UNKNOWN = re.compile(r"unexpected keyword argument '(\w+)'")
_MISSING = re.compile(r"missing \d+ required keyword-only argument[s]?: '(\w+)'")


def check_available(settings: Mapping[str, Any], option: str) -> None:
    """Fail early, naming ``option``, when the engine ``settings`` name cannot be imported."""
    name = str(settings.get("name", ""))
    if name not in ENGINES:
        raise ENGINES.unknown(name, where=f"{option}: method.side_engine.name")
    if not ENGINES.available(name):
        module = str(ENGINES.target(name)).partition(":")[0]
        raise UsageError(f"{option} needs the {name!r} engine ({module}), which this install does not have")


__all__ = [
    "CONTEXT_LENGTH_ERROR",
    "ENGINES",
    "ChatRequest",
    "Completion",
    "Engine",
    "build_engine",
    "check_available",
]

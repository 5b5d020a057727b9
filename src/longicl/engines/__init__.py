"""Engines behind one async interface (`Engine.complete`), chosen by ``engine.name``."""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Mapping
from typing import Any

from longicl.engines.base import CONTEXT_LENGTH_ERROR, ChatRequest, Completion, Engine
from longicl.errors import UsageError

# name -> "module:Class"; imported on demand so that optional dependencies stay optional.
ENGINES = {
    "openai": "longicl.engines.openai_compat:OpenAIEngine",
    "dryrun": "longicl.engines.dryrun:DryRunEngine",
    "classical": "longicl.engines.classical:ClassicalEngine",
    "ray": "longicl.engines.ray_engine:RayEngine",
    "local": "longicl.engines.local:LocalEngine",  # llama.cpp on this CPU (the [local] extra)
}


def build_engine(settings: Mapping[str, Any]) -> Engine:
    """Instantiate the engine named by ``settings["name"]`` with the other settings as arguments."""
    options = dict(settings)
    name = options.pop("name", None)
    target = ENGINES.get(str(name))
    if target is None:
        raise UsageError(f"engine={name!r} is not an engine: choose one of {', '.join(ENGINES)}")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
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


__all__ = [
    "CONTEXT_LENGTH_ERROR",
    "ENGINES",
    "ChatRequest",
    "Completion",
    "Engine",
    "build_engine",
    "check_available",
]

"""Engines behind one async interface (`Engine.complete`), chosen by ``engine.name``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class EngineSettings:
    """A run's ``engine`` section: which engine, and its own settings (``options``), which the
    engine's class checks when `build_engine` builds it (each takes exactly the keys of
    ``conf/engine/<name>.yaml``; the request policy's as `PolicySettings`)."""

    name: str
    options: Mapping[str, Any]

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> EngineSettings:
        options = dict(section)
        name = options.pop("name", None)
        if not name:
            raise UsageError(f"engine is not set: use engine=<name>, one of {', '.join(ENGINES)}")
        return cls(str(name), options)

    @property
    def model(self) -> Any:
        """``engine.model`` as configured (None for an engine without one)."""
        return self.options.get("model")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


def build_engine(settings: EngineSettings | Mapping[str, Any]) -> Engine:
    """Instantiate the engine named by ``settings`` (its ``name``) from its other settings."""
    options = settings.as_dict() if isinstance(settings, EngineSettings) else dict(settings)
    name = options.pop("name", None)
    cls = ENGINES.get(name, where="engine")
    try:
        return cls.from_settings(options)
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
    "EngineSettings",
    "build_engine",
    "check_available",
]

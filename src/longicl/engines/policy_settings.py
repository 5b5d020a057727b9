"""The request policy's settings (`PolicySettings`): one typed object for every engine that asks
servers (``openai``, ``local``, ``ray``), read from the engine's section of the config.

The keys are the same in ``conf/engine/openai.yaml``, ``local.yaml`` and ``ray.yaml``, the only
home of their defaults: nothing here has a default, and a key the section lacks is one line naming
it and the file that sets it. What is left of the section is the transport's own settings (the
client's connections, ``ray.*``, llama.cpp's server), which the engine's constructor takes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from longicl.engines.shaping import setting
from longicl.errors import UsageError

#: name -> (minimum, integer, strict): how each numeric setting is checked (`shaping.setting`)
_NUMBERS: dict[str, tuple[float, bool, bool]] = {
    "concurrency": (1, True, False),
    "timeout": (0, False, True),
    "connect_timeout": (0, False, True),
    "max_retries": (0, True, False),
    "backoff_initial": (0, False, False),
    "backoff_max": (0, False, False),
    "retry_after_max": (0, False, False),
    "length_retry_factor": (1, False, True),
    "failures_floor": (1, True, False),
    "failures_per_slot": (1, True, False),
    "health_checks": (1, True, False),
}


@dataclass(frozen=True)
class PolicySettings:
    """What the one request policy (`longicl.engines.policy.PolicyEngine`) needs, checked on
    construction (a bad value is one `UsageError` line naming ``engine.<key>``)."""

    base_url: str | list[str] | None  # None: no HTTP servers (Ray's vLLM replicas; local sets its own)
    model: str  # "auto" (or empty): the first model the server lists
    api_key: str  # EMPTY: $OPENAI_API_KEY if set (resolved by the engine, never written)
    concurrency: int
    timeout: float
    connect_timeout: float
    max_retries: int
    backoff_initial: float
    backoff_max: float
    retry_after_max: float
    length_retry_factor: float
    max_failures_in_row: int | None  # None: max(failures_floor, failures_per_slot x slots)
    failures_floor: int
    failures_per_slot: int
    health_checks: int

    def __post_init__(self) -> None:
        for name, (minimum, integer, strict) in _NUMBERS.items():
            checked = setting(getattr(self, name), name, minimum=minimum, integer=integer, strict=strict)
            object.__setattr__(self, name, checked)
        if self.max_failures_in_row is not None:
            in_row = setting(self.max_failures_in_row, "max_failures_in_row", minimum=1, integer=True)
            object.__setattr__(self, "max_failures_in_row", in_row)
        object.__setattr__(self, "model", str(self.model or "auto"))

    @classmethod
    def from_section(
        cls, section: Mapping[str, Any], engine: str, *, set_by_engine: tuple[str, ...] = ()
    ) -> tuple[PolicySettings, dict[str, Any]]:
        """The policy's settings out of an ``engine.*`` section (without ``name``), and the rest of
        it: the transport's settings. ``set_by_engine``: policy keys the engine sets itself (they
        are None here, and a section giving one names a setting the engine does not have)."""
        for key in set_by_engine:
            if key in section:
                raise UsageError(f"engine.{key} is not a setting of engine={engine}")
        given = {**section, **dict.fromkeys(set_by_engine)}
        for key in POLICY_KEYS:
            if key not in given:
                raise UsageError(f"engine.{key} is not set (see conf/engine/{engine}.yaml)")
        policy = cls(**{key: given[key] for key in POLICY_KEYS})
        return policy, {key: value for key, value in section.items() if key not in POLICY_KEYS}

    def failures_in_row(self, slots: int) -> int:
        """Connection errors or timeouts in a row that take a server out (``slots``: what
        ``failures_per_slot`` counts, the concurrency or Ray's HTTP actors)."""
        if self.max_failures_in_row is not None:
            return self.max_failures_in_row
        return max(self.failures_floor, self.failures_per_slot * slots)


#: the policy's keys of an engine's section
POLICY_KEYS = tuple(f.name for f in fields(PolicySettings))

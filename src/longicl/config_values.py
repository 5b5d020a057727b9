"""Reading values out of composed configs: plain containers, checked integers, the YAML defaults.

Every config reader (runner settings, method settings, kernel settings, classical models) uses
these, so that a bad value always gives the same kind of one-line `UsageError`. Defaults live in
the YAML under ``conf/`` only; `load_defaults` reads a group's file for readers that must fill
keys an older run's config lacks (sweeps and analyses of earlier runs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from longicl.errors import UsageError
from longicl.paths import CONF_DIR


def plain(value: Any) -> Any:
    """Mappings, lists and tuples turned into plain dicts (string keys) and lists, recursively."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def as_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """``value`` as an integer (``"3"`` and ``3.0`` pass, ``3.5``, ``True`` and ``"x"`` do not)."""
    if isinstance(value, bool):
        raise UsageError(f"{name}={value} is not an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name}={value!r} is not an integer") from None
    if isinstance(value, float) and value != number:
        raise UsageError(f"{name}={value} is not an integer")
    if minimum is not None and number < minimum:
        raise UsageError(f"{name}={value} must be at least {minimum}")
    return number


def load_defaults(group: str, name: str = "default") -> dict[str, Any]:
    """``conf/<group>/<name>.yaml`` as plain values (a file without a hydra defaults list)."""
    return plain(OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"), resolve=True))


def load_main_defaults() -> dict[str, Any]:
    """``conf/config.yaml``'s own keys (the run's top-level settings, ``serve``, ``model``, ...);
    its hydra ``defaults`` list and ``hydra`` section left out."""
    doc = plain(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"), resolve=True))
    return {k: v for k, v in doc.items() if k not in ("defaults", "hydra")}


def setting(section: Mapping[str, Any], key: str, name: str, source: str) -> Any:
    """``section[key]``; a key the composed config lacks is a one-line `UsageError` naming it (as
    ``name``) and the YAML file that sets it (``source``): there is no code default to fall back on."""
    if key not in section:
        raise UsageError(f"{name} is not set ({source} sets it)")
    return section[key]

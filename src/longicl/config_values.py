"""Reading values out of composed configs: plain containers, checked integers, the YAML defaults.

Every config reader (runner settings, method settings, kernel settings, classical models) uses
these, so that a bad value always gives the same kind of one-line `UsageError`. Defaults live in
the YAML under ``conf/`` only; `load_defaults` reads a group's file for readers that must fill
keys an older run's config lacks (sweeps and analyses of earlier runs).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
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


def exact_keys(section: Mapping[str, Any], keys: Sequence[str], where: str, source: str) -> None:
    """``section`` has exactly ``keys``: else its first unknown key, or the first key it lacks, is
    one `UsageError` line naming ``<where>.<key>`` and the YAML that sets them (``source``)."""
    unknown = [key for key in section if key not in keys]
    if unknown:
        raise UsageError(f"{where}.{unknown[0]} is not a {where} setting ({source}: {', '.join(keys)})")
    missing = [key for key in keys if key not in section]
    if missing:
        raise UsageError(f"{where}.{missing[0]} is not set ({source} sets it)")


# ------------------------------------------------------------------------------------------------
# typed settings: the type of every key, as the YAML under conf/ writes it
# ------------------------------------------------------------------------------------------------
#: sections whose numbers their own reader checks with its own messages (the engine's from_config);
#: their booleans are checked here like every other
NUMBERS_CHECKED_BY_READER = ("engine",)


def _kind(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return None if "${" in value else "str"  # an interpolation says nothing of the type
    return "other"


def _leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def _general(path: str) -> str:
    """``method.per_task.5.enable_thinking`` -> ``method.enable_thinking``: a per-task entry has the
    type of the setting it overrides."""
    parts = path.split(".")
    while "per_task" in parts:
        at = parts.index("per_task")
        parts = parts[:at] + parts[at + 2 :]
    return ".".join(parts)


@functools.cache
def setting_kinds() -> dict[str, frozenset[str]]:
    """Every key the YAML under ``conf/`` sets (``config.yaml``, and ``<group>.<key>`` for each file
    of a group) -> the kinds of value it is given there (bool, int, float, str, null, other)."""
    found: dict[str, set[str]] = {}

    def add(doc: Any, prefix: str) -> None:
        for path, value in _leaves(doc, prefix):
            kind = _kind(value)
            if kind is not None:
                found.setdefault(_general(path), set()).add(kind)

    def document(path: Any) -> dict[str, Any]:
        doc = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        return {k: v for k, v in dict(doc or {}).items() if k not in ("defaults", "hydra")}

    add(document(CONF_DIR / "config.yaml"), "")
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        for path in sorted(group.glob("*.yaml")):
            add(document(path), group.name)
    return {path: frozenset(kinds) for path, kinds in found.items()}


def check_types(config: Mapping[str, Any]) -> None:
    """Each boolean and number of a composed config has the type its YAML default has: one
    `UsageError` line naming the first that does not (``overwrite=no`` is not read as true).
    Hydra's own ``true``/``false`` are booleans already; a key the YAML leaves null (``limit``)
    or never sets is its reader's to check."""
    kinds = setting_kinds()
    for path, value in _leaves(config):
        general = _general(path)
        allowed = kinds.get(general)
        if not allowed or (value is None and ("null" in allowed or general != path)):
            continue  # unknown, or null where a default or a per-task entry may be null
        typed = allowed - {"null"}
        if typed == {"bool"} and not isinstance(value, bool):
            raise UsageError(f"{path}={value!r} is not true or false")
        if not typed or not typed <= {"int", "float"}:
            continue
        if general.split(".")[0] in NUMBERS_CHECKED_BY_READER:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            what = "an integer" if typed == {"int"} else "a number"
            raise UsageError(f"{path}={value!r} is not {what}")
        if typed == {"int"} and isinstance(value, float) and not value.is_integer():
            raise UsageError(f"{path}={value!r} is not an integer")

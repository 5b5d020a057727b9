"""One registry of things chosen by name: engines, selection strategies, annotators, metrics, ...

An entry is either the object itself or a lazy ``"module:attr"`` string, imported on first
`Registry.get` (so an optional dependency stays optional until its entry is asked for). A name
that is not registered is one `UsageError` line: ``unknown <kind>: <name>; known: a, b, c``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from longicl.errors import UsageError

T = TypeVar("T")
V = TypeVar("V")


@dataclass(frozen=True)
class _Lazy:
    target: str  # "module:attr"


class Registry(Generic[T]):
    """Names of one ``kind`` to their objects; iterating yields the names in registration order."""

    def __init__(
        self,
        kind: str,
        entries: Mapping[str, T] | None = None,
        *,
        lazy: Mapping[str, str] | None = None,
        error: type[UsageError] = UsageError,
    ) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, T | _Lazy] = dict(entries or {})
        for name, target in (lazy or {}).items():
            self.add_lazy(name, target)

    # -- filling ------------------------------------------------------------------------------
    def add(self, name: str, value: T) -> T:
        self._entries[name] = value
        return value

    def add_lazy(self, name: str, target: str) -> None:
        """Register ``"module:attr"`` under ``name``; imported by the first `get`."""
        module, sep, attr = target.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"{self.kind} {name!r}: {target!r} is not 'module:attr'")
        self._entries[name] = _Lazy(target)

    def register(self, name: str) -> Callable[[V], V]:
        """Decorator: register the decorated object under ``name``."""

        def add(value: V) -> V:
            self.add(name, value)  # type: ignore[arg-type]
            return value

        return add

    # -- reading ------------------------------------------------------------------------------
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:  # unhashable
            return False

    def unknown(self, name: object, where: str = "") -> UsageError:
        """The one error for a name that is not registered (``where``: the file or setting named)."""
        prefix = f"{where}: " if where else ""
        return self.error(f"{prefix}unknown {self.kind}: {name!r}; known: {', '.join(self._entries)}")

    def get(self, name: object, where: str = "") -> T:
        """The object registered as ``name`` (a lazy entry is imported now), else `unknown`."""
        if name not in self:
            raise self.unknown(name, where)
        entry = self._entries[name]  # type: ignore[index]
        if isinstance(entry, _Lazy):
            module, _, attr = entry.target.partition(":")
            return getattr(importlib.import_module(module), attr)
        return entry

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self.get(name)

    def target(self, name: str) -> str | None:
        """The ``"module:attr"`` of a lazy entry (None for an object or an unknown name)."""
        entry = self._entries.get(name)
        return entry.target if isinstance(entry, _Lazy) else None

    def available(self, name: object) -> bool:
        """Whether ``name`` is registered and (for a lazy entry) its module can be found here."""
        if name not in self:
            return False
        target = self.target(name)  # type: ignore[arg-type]
        if target is None:
            return True
        try:
            return importlib.util.find_spec(target.partition(":")[0]) is not None
        except ModuleNotFoundError:
            return False

    def recognises(self, thing: Any) -> str | None:
        """The first entry whose ``recognises(thing)`` is true (formats that tell a file by its
        contents, such as review exports), or None."""
        for name, entry in self.items():
            check = getattr(entry, "recognises", None)
            if check is not None and check(thing):
                return name
        return None

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

"""Values a notebook records for the report, kept in a JSON file next to the executed notebook."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from longicl.analysis.paths import project_path
from longicl.analysis.tables import records
from longicl.files import atomic_write_json


class ValueStore:
    """Named values a notebook records for the report, kept in one JSON file (rewritten per value)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.values: dict[str, Any] = {}

    def use(self, path: str | Path | None, notebook: str = "") -> Path | None:
        """Start a fresh set of values, written to ``path`` (None: kept in memory only)."""
        self.path = project_path(path) if path else None
        self.values = {"notebook": notebook} if notebook else {}
        self._write()
        return self.path

    def record(self, name: str, value: Any) -> Any:
        self.values[name] = jsonable(value)
        self._write()
        return value

    def _write(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, self.values)


VALUES = ValueStore()


def set_values_file(path: str | Path | None, notebook: str = "") -> Path | None:
    """Where `record_value` writes (``python -m longicl.notebooks`` passes ``values_path``)."""
    return VALUES.use(path, notebook)


def record_value(name: str, value: Any) -> Any:
    """Keep ``value`` under ``name`` for the report; returns ``value`` unchanged."""
    return VALUES.record(name, value)


def read_values(path: str | Path) -> dict[str, Any]:
    """The values a notebook recorded ({} when the file is missing or unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def jsonable(value: Any) -> Any:
    """``value`` with dataclasses, DataFrames (a list of row dicts, None for missing cells), numpy
    scalars/arrays, paths and tuples made JSON-ready."""
    if isinstance(value, pd.DataFrame):
        return jsonable(records(value))
    if value is pd.NA:
        return None
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

"""Tables shown by notebooks and written by the report: DataFrames with explicit nullable
dtypes, their plain rows, cell text and Markdown."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import pandas as pd

from longicl.published import Markdown
from longicl.published import escape as markdown_text

#: Nullable dtypes of analysis tables, by what a column holds. Explicit rather than inferred
#: (``convert_dtypes`` would make an accuracy column of 1.0s integers and change its text).
TEXT, COUNT, NUMBER = "string", "Int64", "Float64"


def frame(rows: Iterable[Mapping[str, Any]], dtypes: Mapping[str, str]) -> pd.DataFrame:
    """``rows`` as a DataFrame with the columns of ``dtypes``, in its order and of its dtypes
    (a key missing from a row is a missing value)."""
    rows = list(rows)
    return pd.DataFrame(
        {column: pd.array([row.get(column) for row in rows], dtype=dtype) for column, dtype in dtypes.items()}
    )


def plain(value: Any) -> Any:
    """A cell as a plain Python value: missing values as None, numpy and pandas scalars unboxed."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        return plain(value.item())
    return value


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame's rows as dicts of plain values (None for missing ones)."""
    columns = [str(c) for c in table.columns]
    return [
        {column: plain(value) for column, value in zip(columns, row, strict=True)}
        for row in table.itertuples(index=False, name=None)
    ]


def fmt(value: Any) -> str:
    """A cell's text: None as an em dash, ints with separators, floats by magnitude."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        if value.is_integer() and abs(value) >= 10:
            return f"{int(value):,}"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


@dataclass
class Table:
    """Rows of dicts with a column order; renders as HTML and Markdown (the report's tables)."""

    columns: list[str]
    rows: list[dict[str, Any]]
    title: str = ""

    @classmethod
    def of(
        cls,
        rows: pd.DataFrame | Sequence[Mapping[str, Any]],
        columns: Sequence[str] | None = None,
        title: str = "",
    ) -> Table:
        """A table of ``rows`` (dicts, or a DataFrame whose columns come in its order)."""
        if isinstance(rows, pd.DataFrame):
            if columns is None:
                columns = [str(c) for c in rows.columns]
            rows = records(rows)
        rows = [dict(r) for r in rows]
        if columns is None:
            seen: dict[str, None] = {}
            for row in rows:
                seen.update(dict.fromkeys(row))
            columns = list(seen)
        return cls(list(columns), rows, title)

    def cells(self) -> list[list[str]]:
        return [[_cell(row.get(c)) for c in self.columns] for row in self.rows]

    def to_markdown(self) -> str:
        """A Markdown table; every cell is text (``longicl.published.escape``: no markup, no line
        break, ``|`` escaped) unless it is `Markdown` already."""

        clean = markdown_text
        lines = ["| " + " | ".join(clean(c) for c in self.columns) + " |"]
        lines.append("|" + "|".join("---:" if self._numeric(c) else "---" for c in self.columns) + "|")
        lines += ["| " + " | ".join(clean(c) for c in cells) + " |" for cells in self.cells()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>" for cells in self.cells()
        )
        caption = f"<caption>{escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        return (self.title + "\n" if self.title else "") + self.to_markdown()

    def _numeric(self, column: str) -> bool:
        values = [r.get(column) for r in self.rows if r.get(column) is not None]
        values = [v for v in values if v != "—"]
        return bool(values) and all(_is_number(v) for v in values)


def _cell(value: Any) -> str:
    """A cell's text; a `Markdown` cell (e.g. a code span) as it is, its pipes escaped for the table."""
    if isinstance(value, Markdown):
        return Markdown(re.sub(r"(?<!\\)\|", r"\\|", value.replace("\n", " ")))
    return fmt(value)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    text = str(value).rstrip("%").replace(",", "")
    try:
        float(text)
    except ValueError:
        return False
    return True

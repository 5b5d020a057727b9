"""How numbers and tables are written in the report (registered as Jinja2 filters)."""

from __future__ import annotations

import math
import re
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from longicl import analysis as an
from longicl.published import Markdown, backticked, code, escape, md

__all__ = ["Markdown", "backticked", "code", "escape", "md"]  # sections build their Markdown through these


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def ci95(accuracy: float | None, n: int | None) -> str:
    """The Wilson score interval at 95%, in percent (sound at 0% and 100% too)."""
    if accuracy is None or not n:
        return "—"
    z = 1.96
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{100 * max(0.0, centre - half):.1f}–{100 * min(1.0, centre + half):.1f}"


def tokens(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def median_of(task: Mapping[str, Any], key: str) -> int | None:
    value = (task.get(key) or {}).get("median")
    return None if value is None else round(value)


def one_line(text: str) -> str:
    """``text`` with its whitespace runs collapsed (a paragraph or list item on one line)."""
    return " ".join(str(text).split())


def wrap(text: str, indent: str = "", width: int = 100) -> str:
    """``text`` (whitespace runs collapsed) filled to ``width`` columns, continuation lines indented
    by ``indent``: a paragraph or list item whose words come partly from run data keeps the
    Markdown source's line length."""
    return textwrap.fill(
        one_line(text), width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def table(rows: Any, css: str = "", caption: str = "", columns: Sequence[str] | None = None) -> Markdown:
    """A Markdown table of ``rows`` (dicts or a DataFrame; every cell escaped unless it is
    `Markdown`); ``css`` becomes the HTML table's class through a marker line that
    `longicl.report.html` consumes, ``caption`` (escaped unless `Markdown`) an italic line above."""
    parts = []
    if caption:
        parts.append(f"*{escape(caption)}*")
    if css:
        if not re.fullmatch(r"[\w-]+", css):
            raise ValueError(f"table class {css!r}: letters, digits, - and _ only")
        parts.append(f"<!-- table: {css} -->")
    parts.append(an.Table.of(rows, columns).to_markdown())
    return Markdown("\n\n".join(parts))


def task_list(ids: Iterable[int]) -> str:
    """``[1, 2, 3, 4, 5, 6, 7]`` as ``tasks 1-7``, ``[8]`` as ``task 8``, ``[2, 5]`` as ``tasks 2, 5``."""
    ordered = sorted(set(ids))
    if len(ordered) == 1:
        return f"task {ordered[0]}"
    if ordered and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"tasks {ordered[0]}-{ordered[-1]}"
    return "tasks " + ", ".join(map(str, ordered))


def common_value(values: Mapping[int, int]) -> int | None:
    """The value most task ids share (the larger on a tie)."""
    if not values:
        return None
    counts = Counter(values.values())
    return max(counts, key=lambda value: (counts[value], value))


def exceptions(values: Mapping[int, int]) -> list[tuple[int, list[int]]]:
    """Values other than the `common_value`, largest first, each with its task ids."""
    common = common_value(values)
    others: dict[int, list[int]] = {}
    for task_id, value in values.items():
        if value != common:
            others.setdefault(value, []).append(task_id)
    return sorted(others.items(), reverse=True)


def common_floor(floors: Mapping[int, int]) -> int | None:
    """The ICL floor most tasks share (the larger on a tie)."""
    return common_value(floors)


def floor_phrase(floors: Mapping[int, int], noun: str = "demonstrations") -> str:
    """``30,000 tokens of demonstrations (15,000 for task 8)`` from the floor of each task id."""
    common = common_floor(floors)
    if common is None:
        return "the rule's minimum of demonstration tokens"
    others = [f"{floor:,} for {task_list(ids)}" for floor, ids in exceptions(floors)]
    return f"{common:,} tokens of {noun}" + (f" ({'; '.join(others)})" if others else "")

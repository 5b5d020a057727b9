"""Run data made safe for where it is published: Markdown, the HTML built from it, spreadsheets.

Everything a run records may come from someone else: a model's replies and predictions, the model
names and messages a server sends, task files and data from others, review decisions. Such text is
never markup. This module is the one place that says how it is written:

- :func:`escape` turns any value into Markdown that shows exactly its text: ``<``, ``>`` and ``&``
  become entities (so no Markdown processor, CommonMark or not, sees raw HTML), the characters
  that start links, images, emphasis, code and table cells get a backslash, and line breaks become
  spaces (a value cannot start a heading, a list or a fenced block of its own). ``![m](/etc/x)``
  stays the text ``![m](/etc/x)``: no image, no link, nothing read from disk.
- Bidi overrides/isolates and zero-width characters (U+202A-202E, U+2066-2069, U+200B-200F,
  U+FEFF), which make a text read differently from what it is, are shown as ``U+202E``-style
  text by every function here, in code spans and blocks too.
- :class:`Markdown` marks text that is already safe (authored templates, escaped values, the
  output of :func:`code`, :func:`code_block` and :func:`md`); joining or adding plain strings to
  it escapes them, so only authored text is ever trusted. The report's Jinja2 environment escapes
  every ``{{ value }}`` that is not `Markdown` (``longicl.report.build.templates``): a new section
  is safe by default.
- :func:`spreadsheet_cell` keeps a model's answer from being a formula when a CSV is opened in a
  spreadsheet (OWASP "CSV injection"): a text starting with ``=``, ``+``, ``-``, ``@``, a tab, a
  carriage return or a line feed gets a leading ``'``, unless the whole text is a plain number
  (``-3``, ``+1.5e3`` stay numbers). The JSONL predictions keep the exact text.

Nothing here imports the rest of the package: every layer may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

#: Characters that start Markdown constructs inside a line; each gets a backslash (an underscore
#: between letters or digits starts nothing in CommonMark: ``int_list`` stays as it is).
_ACTIVE = re.compile(r"([\\`*\[\]|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_LINE_BREAKS = re.compile(r"\r\n|\r|\n|\u2028|\u2029")
_BACKTICKS = re.compile(r"`+")
_LINE_FENCE = re.compile(r"^ {0,3}(`{3,})", re.M)  # what could close a fenced block
#: What a spreadsheet reads as the start of a formula (OWASP), plus a line feed.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
#: Characters that reorder or hide text (bidi embeddings, overrides and isolates; zero-width
#: spaces, joiners and marks; the byte-order mark): shown as ``U+202E``-style text wherever run
#: data is published, code included ("Trojan Source"), so what a reader sees is what is there.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class Markdown(str):
    """Markdown that may be written as it is: authored, or built from escaped values."""

    __slots__ = ()

    def __add__(self, other: object) -> Markdown:
        return Markdown(str.__add__(self, escape(other)))

    def __radd__(self, other: object) -> Markdown:
        return Markdown(str.__add__(escape(other), self))

    def join(self, items: Iterable[object]) -> Markdown:  # type: ignore[override]
        return Markdown(str.join(self, (escape(item) for item in items)))


def _visible(text: str) -> str:
    """``text`` with each bidi control and zero-width character written as ``U+XXXX``."""
    return _INVISIBLE.sub(lambda m: f"U+{ord(m.group()):04X}", text)


def escape(value: object) -> Markdown:
    """``value`` as Markdown text that shows exactly ``str(value)`` on one line (a `Markdown`
    value is returned as it is; numbers need no escaping)."""
    if isinstance(value, Markdown):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Markdown(value)
    text = _visible(_LINE_BREAKS.sub(" ", str(value)))
    text = _ACTIVE.sub(r"\\\1", text)
    text = "".join(_ENTITIES.get(ch, ch) for ch in text) if any(c in text for c in "&<>") else text
    if text.startswith("#"):
        text = "\\" + text  # a heading when a template puts the value at a line's start
    return Markdown(text)


def code(value: object) -> Markdown:
    """``value`` as an inline code span showing exactly its text (on one line): the fence is longer
    than any run of backticks inside, so the value cannot close it."""
    text = _visible(_LINE_BREAKS.sub(" ", str(value)))
    if not text:
        return Markdown("")
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ")):
        text = f" {text} "
    return Markdown(f"{fence}{text}{fence}")


def code_block(value: object, info: str = "") -> Markdown:
    """``value`` as a fenced code block (its lines as they are): the fence is longer than any run
    of backticks inside, so no line of the value can close it."""
    text = _visible(str(value).replace("\r\n", "\n").replace("\r", "\n").rstrip("\n"))
    longest = max((len(run) for run in _LINE_FENCE.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return Markdown(f"{fence}{info}\n{text}\n{fence}")


def backticked(value: object) -> Markdown:
    """A text whose parts between backticks are code (``exact program `name` answers``): each
    part escaped or made a code span, so whatever the parts hold stays text."""
    parts = str(value).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: all of it is text
        return escape(value)
    return Markdown("").join(code(p) if i % 2 else escape(p) for i, p in enumerate(parts))


def verbatim(value: object) -> Markdown:
    """``value`` for a line inside a fenced code block, where it is shown as it is: only a line
    break could end the block (a line starting with the fence), so line breaks become spaces."""
    return Markdown(_visible(_LINE_BREAKS.sub(" ", str(value))))


def md(template: str, *args: object, **kwargs: object) -> Markdown:
    """The authored Markdown ``template`` with ``str.format`` fields filled by escaped values
    (`Markdown` values and numbers as they are, so ``{:,}`` still works)."""
    return Markdown(template.format(*map(_field, args), **{k: _field(v) for k, v in kwargs.items()}))


def _field(value: object) -> Any:
    if isinstance(value, Markdown) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    return escape(value)


def spreadsheet_cell(value: Any) -> Any:
    """``value`` safe in a CSV opened by a spreadsheet: a text that a spreadsheet would read as a
    formula gets a leading ``'`` (a plain number such as ``-3`` is left as it is); anything that
    is not a string is returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value

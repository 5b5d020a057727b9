"""Answer extraction and normalisation, per answer kind.

Real Qwen3 answers are messy: reasoning lines before the answer, ``<think>`` blocks (closed,
or opened by the chat template so that only ``</think>`` appears), leading blank lines, tags
that open one way and close another (``[label]Sad</label>``), ``Answer: …`` lines, markdown
bold, quotes, a trailing period, odd casing. Extraction takes, in order of trust:

1. the last tagged span (``<label>``, ``<answer>``, ``<output>``; angle or square brackets,
   closing tag optional);
2. the last ``Answer:``/``Output:``/``Final answer:`` line, or "the answer is …";
3. the last non-empty line.

The candidate is then normalised for the task's answer kind. An answer that cannot be read
becomes the prediction ``""`` (never null) and counts as a parse failure. Code answers (task 8)
are read by `longicl.code_extract` instead. Each answer kind has one `AnswerReader` in `READERS`.

Weak and base models answer in the demonstrations' own shape: they echo the template's answer
prefix (``Output: Sad``) and may go on inventing demonstrations (``\nInput: …\nOutput: …``).
Given the template's `ReplyShape`, the reply is cut where a new demonstration starts and a
leading echoed prefix is dropped before the steps above, so the invented answers never count.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from longicl.code_extract import extract_code
from longicl.reasoning import strip_reasoning
from longicl.registry import Registry
from longicl.tasks import AnswerKind, TaskSpec

_TAG_NAMES = r"(?:label|answer|output|final[ _]answer)"
_TAGGED = re.compile(
    rf"[<\[]\s*{_TAG_NAMES}\s*[>\]](.*?)(?:[<\[]\s*/\s*{_TAG_NAMES}\s*[>\]]|\n|$)",
    re.S | re.I,
)
_ANSWER_LINE = re.compile(
    r"^[\s>*#-]*(?:the\s+)?(?:final\s+answer|answer|output|label|prediction|result)\s*(?:\*\*)?\s*[:：]\s*(.+?)\s*$",
    re.I | re.M,
)
_ANSWER_IS = re.compile(r"\b(?:final\s+)?answer\s+(?:is|would\s+be|:)\s*[:：]?\s*(.+?)\s*$", re.I | re.M)
_INTEGER = re.compile(r"[-−–]?\d+")
_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
_WRAPPERS = "\"'`“”‘’*_ \t"


@dataclass(frozen=True)
class ReplyShape:
    """What the prompt template says about replies (from `longicl.prompt.PromptTemplate`)."""

    answer_prefix: str = ""  # the demonstrations' text before an answer, e.g. "Output:"
    next_demo: str = ""  # a line that starts a new demonstration, e.g. "Input:"

    def trim(self, body: str) -> str:
        """``body`` up to the first invented demonstration, without a leading echoed prefix."""
        if self.next_demo:
            start = re.compile(r"^[ \t]*" + re.escape(self.next_demo), re.M | re.I)
            for found in start.finditer(body):
                if body[: found.start()].strip():  # an echo of the query before any answer is kept
                    body = body[: found.start()]
                    break
        body = body.strip()
        prefix = self.answer_prefix
        if prefix and body[: len(prefix)].lower() == prefix.lower():
            body = body[len(prefix) :].strip()
        return body


@dataclass(frozen=True)
class ParsedAnswer:
    value: str  # the normalised prediction, "" when nothing could be read
    ok: bool
    candidate: str  # the extracted answer text before normalisation
    reason: str | None = None  # why parsing failed


def extract_candidate(text: str) -> str:
    """The most trustworthy answer-bearing span of a reply (not yet normalised)."""
    tagged = [m.group(1).strip() for m in _TAGGED.finditer(text) if m.group(1).strip()]
    if tagged:
        return tagged[-1]
    lines = _ANSWER_LINE.findall(text)
    if lines:
        return lines[-1]
    said = _ANSWER_IS.findall(text)
    if said:
        return said[-1]
    non_empty = [line for line in text.splitlines() if line.strip()]
    return non_empty[-1].strip() if non_empty else ""


def clean(text: str) -> str:
    """Strip wrapping whitespace, quotes, backticks and markdown emphasis."""
    previous = None
    while previous != text:
        previous = text
        text = text.strip().strip(_WRAPPERS)
    return text


def parse_answer(spec: TaskSpec, text: str | None, shape: ReplyShape | None = None) -> ParsedAnswer:
    """Read one model reply as an answer of ``spec``'s kind (``shape``: see `ReplyShape`)."""
    if text is None or not text.strip():
        return ParsedAnswer("", False, "", "empty reply")
    return reader_for(spec).parse(spec, text, shape)


def normalise(spec: TaskSpec, text: str) -> str:
    """The canonical form of a clean answer (gold or prediction); the key exact match compares."""
    return reader_for(spec).normalise(spec, text)


@dataclass(frozen=True)
class AnswerReader:
    """How answers of one kind are read: out of a reply (``parse``) and as the key exact match
    compares (``normalise``)."""

    parse: Callable[[TaskSpec, str, ReplyShape | None], ParsedAnswer]
    normalise: Callable[[TaskSpec, str], str]


#: the normaliser of a kind: (spec, clean candidate, reply body) -> canonical value or None
Normaliser = Callable[[TaskSpec, str, str], str | None]


def _prose(value_of: Normaliser, key_tail: Callable[[str], str] = lambda value: value) -> AnswerReader:
    """A reader for answers written in prose: drop the reasoning, take the most trusted span,
    normalise it (``key_tail`` finishes the comparison key)."""

    def parse(spec: TaskSpec, text: str, shape: ReplyShape | None) -> ParsedAnswer:
        body = strip_reasoning(text)
        if not body:
            return ParsedAnswer("", False, "", "no answer after the reasoning")
        if shape is not None:
            body = shape.trim(body)
            if not body:
                return ParsedAnswer("", False, "", "only the answer prefix, no answer")
        candidate = clean(extract_candidate(body))
        value = value_of(spec, candidate, body)
        if value is None:
            return ParsedAnswer("", False, candidate, f"not a valid {spec.answer_kind.value} answer")
        return ParsedAnswer(value, True, candidate)

    def key(spec: TaskSpec, text: str) -> str:
        value = value_of(spec, clean(text), text)
        return clean(text) if value is None else key_tail(value)

    return AnswerReader(parse, key)


def _parse_code(spec: TaskSpec, text: str, shape: ReplyShape | None) -> ParsedAnswer:
    code = extract_code(text)
    if not code:
        return ParsedAnswer("", False, "", "no code found")
    return ParsedAnswer(code, True, code)


def reader_for(spec: TaskSpec) -> AnswerReader:
    return READERS.get(spec.answer_kind, where=f"{spec.source}: answer")


def _label(spec: TaskSpec, candidate: str, body: str) -> str | None:
    table = _label_table(spec)
    key = _label_key(candidate)
    if key in table:
        return table[key]
    # Fall back to a label mentioned as a whole word: in the candidate line, then anywhere;
    # the last mention wins, and longer labels first so "not sad" is never read as "sad".
    pattern = re.compile(
        r"(?<![\w-])(" + "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True)) + r")(?![\w-])",
        re.I,
    )
    for text in (candidate, body.splitlines()[-1] if body else "", body):
        found = pattern.findall(text)
        if found:
            return table[_label_key(found[-1])]
    return None


def _label_key(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip(".!,;:").lower())


def _label_table(spec: TaskSpec) -> dict[str, str]:
    table = {_label_key(label): label for label in spec.labels or ()}
    table.update({alias: label for alias, label in spec.label_aliases})
    return table


def _integer(spec: TaskSpec, candidate: str, body: str) -> str | None:
    numbers = _INTEGER.findall(candidate)
    if not numbers:
        return None
    return str(int(numbers[-1].replace("−", "-").replace("–", "-")))


def _int_list(spec: TaskSpec, candidate: str, body: str) -> str | None:
    for text in (candidate, body):
        lists = _BRACKETED.findall(text)
        if lists:
            inner = lists[-1]
            items = [part.strip() for part in inner.split(",") if part.strip()]
            if all(_INTEGER.fullmatch(item) for item in items):
                return "[" + ", ".join(str(int(i.replace("−", "-"))) for i in items) + "]"
    bare = [part for part in re.split(r"[,\s]+", candidate) if part]
    if bare and all(_INTEGER.fullmatch(part) for part in bare):
        return "[" + ", ".join(str(int(part)) for part in bare) + "]"
    return None


def _text(spec: TaskSpec, candidate: str, body: str) -> str | None:
    value = re.sub(r"\s+", " ", candidate).strip()
    if spec.lowercase:
        value = value.lower()
    if value.endswith(".") and (spec.trailing_period == "strip" or not _looks_abbreviated(value)):
        value = value.rstrip(".").rstrip()
    value = clean(value)
    return value or None


def _looks_abbreviated(value: str) -> bool:
    """``d.c.``, ``jr.``, ``b.a.``: a last word that has another dot or is at most two letters."""
    last = re.split(r"[\s,]+", value)[-1]
    stem = last[:-1]
    return "." in stem or 0 < len(stem) <= 2


#: answer kind -> its reader; every kind a task may declare has one (tests/test_tasks.py checks)
READERS: Registry[AnswerReader] = Registry(
    "answer kind",
    {
        AnswerKind.LABEL: _prose(_label),
        AnswerKind.INTEGER: _prose(_integer),
        AnswerKind.INT_LIST: _prose(_int_list),
        # Compare text answers without any trailing period, whatever the prediction keeps.
        AnswerKind.TEXT: _prose(_text, key_tail=lambda value: value.rstrip(".").rstrip()),
        AnswerKind.CODE: AnswerReader(_parse_code, lambda spec, text: text.strip()),  # judged by running it
    },
)

"""Pull one Python module out of a model's answer to a kernel-generation prompt.

Answers come in many shapes: a reasoning block (``<think>…</think>``) followed by prose and one or
more fenced code blocks, a bare module with a sentence before or after it, or a reply cut short in
the middle of a fence. :func:`extract_code` turns any of them into the single module the organisers
will import, or ``None`` when there is no code at all.

Rules, in order:

1. Reasoning is dropped: every closed ``<think>…</think>`` block, everything before a stray
   ``</think>`` (chat templates often put the opening tag in the prompt), and an unclosed
   ``<think>`` together with everything after it (the answer was cut short while thinking).
2. Fenced blocks (three or more backticks or tildes) tagged ``python``/``py``/``python3``/``triton``
   or untagged are candidates; blocks tagged with another language (``bash``, ``json``…) are not.
   A fence left open at the end of the answer counts up to the end.
3. When several blocks qualify, one is picked (never joined), by :func:`score_block`: defines the
   wanted wrapper > contains ``@triton.jit`` > parses as Python > imports triton > length.
4. Without any fence the answer is taken as a bare module: leading prose is cut at the first line
   that starts like code, trailing prose is cut from the end, line by line, until the rest parses
   (if nothing parses from that line, the next code-like line is tried).
"""

from __future__ import annotations

import ast
import re

__all__ = ["extract_code", "fenced_blocks", "parse_module", "score_block", "strip_thinking"]

_PY_TAGS = {"", "python", "py", "python3", "py3", "triton", "python-triton", "pycon"}

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]{0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<tag>[^\s`]*)[^\n`]*$")

# A line that starts a Python module rather than a sentence of prose.
_CODE_START = re.compile(
    r"^(?:import\s+[\w.]+|from\s+[\w.]+\s+import\b|@[\w.]+|(?:async\s+)?def\s+\w+\s*\(|class\s+\w+"
    r"|#!|#\s*-\*-|[A-Za-z_][\w.]*\s*(?::[^=]+)?=[^=]|if\s+__name__\s*==|\"\"\"|''')"
)

# How many trailing lines we are willing to cut while looking for a module that parses.
_MAX_TRIM = 60
_MAX_STARTS = 8


def strip_thinking(text: str) -> str:
    """Remove reasoning blocks; see rule 1 of the module docstring."""
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.S | re.I)
    close = re.search(r"</think>", text, flags=re.I)
    if close:  # opening tag was in the prompt: everything before the closing tag is reasoning
        text = text[close.end() :]
    open_ = re.search(r"<think>", text, flags=re.I)
    if open_:  # unclosed: the rest is unfinished reasoning
        text = text[: open_.start()]
    return text


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """All fenced blocks as ``(tag, body)`` pairs, in order; an unclosed last fence runs to the end."""
    lines = text.splitlines()
    blocks: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        fence, tag = m.group("fence"), m.group("tag").lower()
        body: list[str] = []
        j = i + 1
        closing = re.compile(r"^[ \t]{0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
        while j < len(lines) and not closing.match(lines[j]):
            body.append(lines[j])
            j += 1
        blocks.append((tag, "\n".join(body)))
        i = j + 1
    return blocks


def parse_module(code: str) -> ast.Module | None:
    """``ast.parse`` for code a model wrote; ``None`` when it cannot be parsed, for any reason.

    Besides ``SyntaxError`` (and ``ValueError`` for NUL bytes), deeply nested or huge code raises
    ``RecursionError``, ``MemoryError`` or ``SystemError`` ("AST constructor recursion depth
    mismatch", in a thread); none of them may escape into the run."""
    try:
        return ast.parse(code)
    except Exception:  # noqa: BLE001 - see above: untrusted input, every failure means "does not parse"
        return None


def _parses(code: str) -> bool:
    return parse_module(code) is not None


def _defines(code: str, name: str) -> bool:
    return re.search(r"^(?:async\s+)?def\s+" + re.escape(name) + r"\s*\(", code, flags=re.M) is not None


def score_block(code: str, wrapper: str | None = None) -> tuple[int, int, int, int, int]:
    """Sort key for a candidate block; larger is better."""
    return (
        int(wrapper is not None and _defines(code, wrapper)),
        int("@triton.jit" in code or "@jit" in code),
        int(_parses(code)),
        int(re.search(r"^\s*(?:import|from)\s+triton\b", code, flags=re.M) is not None),
        len(code.strip()),
    )


def _bare_module(text: str) -> str | None:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    starts = [i for i, line in enumerate(lines) if _CODE_START.match(line)]
    if not starts:
        return None
    # From the earliest line that starts like code, cut trailing prose line by line until the rest
    # parses; a prose line that happens to look like code ("Note: BLOCK = 128") just fails to
    # parse, and the next start is tried.
    for start in starts[:_MAX_STARTS]:
        body = lines[start:]
        for cut in range(min(_MAX_TRIM, len(body))):
            candidate = "\n".join(body[: len(body) - cut]).rstrip()
            if candidate and _parses(candidate):
                return candidate + "\n"
    # Nothing parses: hand the whole thing over so the checker reports a parse failure.
    joined = "\n".join(lines[starts[0] :]).strip()
    return joined + "\n" if joined else None


def extract_code(text: str, *, wrapper: str | None = None) -> str | None:
    """One Python module from a model answer, or ``None`` when there is no code.

    ``wrapper`` (optional) is the entry function's name; blocks that define it are preferred.
    """
    if not text or not text.strip():
        return None
    answer = strip_thinking(text)
    blocks = [body for tag, body in fenced_blocks(answer) if tag in _PY_TAGS and body.strip()]
    if blocks:
        best = max(blocks, key=lambda b: score_block(b, wrapper))
        return best.strip("\n") + "\n"
    if re.search(r"^[ \t]{0,3}(?:`{3,}|~{3,})", answer, flags=re.M):
        # Only fences of other languages: look for a module outside them.
        answer = re.sub(r"^[ \t]{0,3}(`{3,}|~{3,}).*?^[ \t]{0,3}\1[ \t]*$", "", answer, flags=re.M | re.S)
    return _bare_module(answer)

"""Error types for mistakes a user can fix; caught once at the CLI edge, printed as one line, exit 2.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UsageError(Exception):
    """A bad command-line value or configuration setting."""


class DataError(UsageError):
    """A missing or malformed data file; the message names the file and field."""


class ServerUnreachable(UsageError):
    """No OpenAI-compatible server answers at the configured URL."""


EXIT_USAGE = 2


def one_line(value: object, limit: int | None = None) -> str:
    """``value`` (an exception or a text) on one line, whitespace collapsed, cut at ``limit`` chars.

    An exception without a message is named by its type."""
    text = " ".join(str(value).split())
    if not text and isinstance(value, BaseException):
        text = type(value).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"

"""Error types for mistakes a user can fix; caught once at the CLI edge, printed as one line, exit 2.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from enum import IntEnum

from longicl.credentials import redact_text


class ExitCode(IntEnum):
    """The exit codes of every command of the project (``python -m longicl.*``, main.py, api_test.py)."""

    OK = 0
    FAILED = 1  # the command ran, but something it checked or produced failed
    USAGE = 2  # a user mistake: bad value, missing file (one line on stderr, nothing written)
    NOT_ANSWERING = 3  # no server answers (serve status), or every server stopped answering mid-run
    INTERRUPTED = 130  # Ctrl-C (SIGINT)


class UsageError(Exception):
    """A bad command-line value or configuration setting."""

    exit_code = ExitCode.USAGE


class DataError(UsageError):
    """A missing or malformed data file; the message names the file and field."""


class ServerUnreachable(UsageError):
    """No OpenAI-compatible server answers at the configured URL."""


EXIT_USAGE = ExitCode.USAGE

#: What a terminal may act on: C0 controls but line feed and tab, DEL, C1 controls (ESC starts
#: ANSI/OSC sequences: colours, titles, clipboard writes, cursor moves).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def inert(text: str) -> str:
    """``text`` with every control character a terminal would act on shown as a visible escape
    (``\\x1b``, ``\\x07``…): server and model text printed by a command does nothing but show."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def one_line(value: object, limit: int | None = None) -> str:
    """``value`` (an exception or a text) on one line, whitespace collapsed, cut at ``limit`` chars.

    An exception without a message is named by its type. Secrets (API keys, URL credentials)
    are replaced by ``***`` and control characters shown as escapes (`inert`): every message of
    the project goes through here."""
    text = inert(" ".join(redact_text(str(value)).split()))
    if not text and isinstance(value, BaseException):
        text = type(value).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def run_command(body: Callable[[], int | None], *, interrupted: str = "interrupted", limit: int = 500) -> int:
    """Run a command's body; a `UsageError` becomes one line on stderr and its ``exit_code``.

    The one wrapper of every ``main()``: ``sys.exit(run_command(lambda: _main(argv)))``. Ctrl-C
    prints ``interrupted`` and exits 130; any other exception is a bug and keeps its traceback.
    """
    try:
        return int(body() or ExitCode.OK)
    except UsageError as exc:
        print(f"error: {one_line(exc, limit)}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return int(ExitCode.INTERRUPTED)

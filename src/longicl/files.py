"""Files written safely, for every writer of the project: whole files atomically (a temporary file in
the same folder, then rename, so a crash never leaves half a file), appends that never follow a
symbolic link, modes that follow the umask (run folders are meant to be shared), JSON lines read
back with the file and line of a damaged one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from longicl.errors import DataError, UsageError


def _current_umask() -> int:
    try:  # Linux reports it without changing it (os.umask sets it, for a moment, process-wide)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shared_mode(fd: int) -> None:
    """Give a file made by `tempfile.mkstemp` (always 0600) the mode a plain ``open`` would give it
    (0666 less the umask: 0644 usually), like the records: run folders are meant to be shared."""
    os.fchmod(fd, 0o666 & ~_current_umask())


def _not_real(path: str | Path, what: str = "a symbolic link") -> UsageError:
    return UsageError(
        f"{path} is {what}: a run directory's own files and folders must be real ones, or a run "
        "would write (or overwrite=true delete) through it; remove it or choose another out_dir"
    )


def _open_own(path: Path, flags: int) -> int:
    """``os.open`` of a run directory's file, never through a symbolic link (`O_NOFOLLOW`) and
    only a regular file (`O_NONBLOCK`: a FIFO does not block the open)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_real(path) from None
        if exc.errno == errno.ENXIO:
            raise _not_real(path, "not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_real(path, "not a regular file")
    return fd


def open_append(path: Path) -> IO[str]:
    """``path`` opened to append text (made if missing); a symbolic link is refused, not followed."""
    return os.fdopen(_open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path, binary=True) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_writer(path: Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """A handle to write ``path`` a piece at a time (UTF-8 text, or bytes): a temporary file in
    the same folder, renamed over ``path`` when the block ends, removed if it raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        shared_mode(fd)
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def jsonl_lines(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def read_jsonl(path: Path) -> Iterator[dict]:
    """Rows of a JSONL file someone else may have written or edited (a prediction file read back,
    a review file): every line is read, the last one too with or without its newline, and must
    be a JSON object of UTF-8 text (a lone surrogate escape is not); else a `DataError` names
    file:line. Nothing is skipped silently, so a file rewritten from what was read loses no row."""
    for _, _, row in scan_jsonl(path, torn_tail=False):
        yield row


def scan_jsonl(path: Path, *, torn_tail: bool = True) -> Iterator[tuple[int, int, dict]]:
    """(byte offset, line number, row) of each line of a JSONL file; blank lines are passed over.
    A line that is not a JSON object, or not UTF-8, is a `DataError` naming the file and line.

    ``torn_tail``: a last line without its newline is skipped, for the run's own append-only
    records (written half-way when the process died; the sample will be redone). Without it the
    line is read as any other (`read_jsonl`)."""
    with path.open("rb") as handle:
        offset = 0
        for number, raw in enumerate(handle, 1):
            start, offset = offset, offset + len(raw)
            if torn_tail and not raw.endswith(b"\n"):
                return
            try:
                text = raw.decode("utf-8")
                if not text.strip():
                    continue
                row = json.loads(text)
                if not torn_tail and "\\u" in text:
                    json.dumps(row, ensure_ascii=False).encode("utf-8")  # no lone surrogate
            except (ValueError, RecursionError):  # UnicodeError is a ValueError
                row = None
            if not isinstance(row, dict):
                why = (
                    "a damaged line; remove it to redo that sample"
                    if torn_tail
                    else "UTF-8 text, one per line"
                )
                if raw.startswith(b"\xef\xbb\xbf"):
                    why = "it starts with a byte-order mark (BOM): save the file as UTF-8 without one"
                raise DataError(f"{path}:{number}: not a JSON object ({why})")
            yield start, number, row


def repair_torn_tail(path: Path) -> None:
    """Drop a last line without its newline (the process died mid-write) before appending. The
    file itself, never what a symbolic link points at (refused: `UsageError`)."""
    try:
        fd = _open_own(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        end = os.fstat(fd).st_size
        if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
            return
        keep, chunk = 0, 1 << 16
        for start in range(((end - 1) // chunk) * chunk, -1, -chunk):  # the last newline, backwards
            found = os.pread(fd, min(chunk, end - start), start).rfind(b"\n")
            if found >= 0:
                keep = start + found + 1
                break
        os.ftruncate(fd, keep)
    finally:
        os.close(fd)

"""Everything a run writes to disk.

Layout under ``out_dir``::

    config.yaml                     resolved config of the latest invocation
    run.json                        config, git commit, environment, per-task metrics
    openseek-<id>.jsonl             predictions, one line per sample, in input order
    <name>.jsonl, <name>.csv        a declared task's predictions (id under its id_column), and its
                                    input table with a prediction column (tables only)
    records/openseek-<id>.jsonl     append-only per-sample records (requests, raw replies, parses)
    records/openseek-<id>.meta.json fingerprint of the settings that produced the records
    requests/openseek-<id>.jsonl    dry runs only: every request body (static block by reference)
    requests/static/<sha256>.txt    dry runs only: each static block, once
    submission.zip                  test split only: the prediction files, flat, validated; only a
                                    compliant run (the floor, pure ICL, a served language model)
    not-an-entry-submission.zip     the same for a non-compliant run, only with not_an_entry_zip=true
    logs/run.log                    tracebacks of samples that failed with an unexpected error
    .lock                           the pid of the run writing here (see `RunDir.lock`)
    .longicl-run                    the marker: this folder is a run directory (`RUN_MARKER`)

A run directory is a thing the project owns: a run writes only into a new folder, an empty one or
a run directory (one holding the marker), and refuses any other folder before writing a byte
(`RunDir.check_owned`). ``overwrite=true`` deletes only the files a run writes, by name, inside a
run directory (`RunDir.prepare`); a file the run did not write is never touched.

Whole files are written atomically (temporary file in the same directory, then rename), so
a crash never leaves half a file. Records are appended and flushed one sample at a time, so a
crash loses at most the samples still in flight, and re-running resumes from them.

One run writes to an ``out_dir`` at a time: it holds an OS lock (``flock``) on ``.lock`` from its
start to its exit. The kernel releases the lock of a process that dies, so a lock is never stale.
Reading (the report, the notebooks) needs no lock. Settings, records and logs are written through
`longicl.credentials`, so no API key or URL password reaches the disk.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import stat
import tempfile
import traceback
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from longicl.credentials import redact_secrets, redact_text
from longicl.errors import DataError, UsageError
from longicl.files import (
    _not_real,
    _open_own,
    atomic_write_json,
    atomic_write_text,
    atomic_writer,
    open_append,
    repair_torn_tail,
    scan_jsonl,
    shared_mode,
)
from longicl.published import spreadsheet_cell
from longicl.records import record_type_problem

#: a non-compliant test run's zip (``not_an_entry_zip=true``); never ``submission.zip``
NOT_AN_ENTRY_ZIP = "not-an-entry-submission.zip"

if TYPE_CHECKING:
    import pandas as pd


#: the file that makes a folder a run directory (written when a run starts writing there)
RUN_MARKER = ".longicl-run"
#: a dry run's static block file: requests/static/<sha256>.txt
_STATIC_BLOCK = re.compile(r"[0-9a-f]{64}\.txt")
#: the folders a run writes in below ``out_dir``: like every file in them and in ``out_dir`` itself,
#: real ones, never symbolic links (`RunDir.check_no_links`)
OWN_FOLDERS = ("records", "requests", "requests/static", "logs")


class RunDirBusy(UsageError):
    """Another live process holds the lock of ``out_dir``."""


class RunDir:
    """One run's output directory. Nothing is created until `prepare` is called."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handles: dict[str, IO[str]] = {}
        self._lock_fd: int | None = None
        self._created: list[Path] = []  # directories made only to hold the lock, innermost first

    # -- paths ---------------------------------------------------------------------------------
    def predictions_path(self, task: str) -> Path:
        return self.path / f"{task}.jsonl"

    def records_path(self, task: str) -> Path:
        return self.path / "records" / f"{task}.jsonl"

    def meta_path(self, task: str) -> Path:
        return self.path / "records" / f"{task}.meta.json"

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def zip_path(self) -> Path:
        return self.path / "submission.zip"

    @property
    def not_an_entry_zip_path(self) -> Path:
        """A non-compliant test run's zip (``not_an_entry_zip=true``): named so it cannot pass for an entry."""
        return self.path / NOT_AN_ENTRY_ZIP

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    @property
    def log_path(self) -> Path:
        return self.path / "logs" / "run.log"

    # -- one writer at a time --------------------------------------------------------------------
    def lock(self) -> None:
        """Become the only writer of ``out_dir`` until `unlock` (or the process's exit).

        Raises `RunDirBusy` (one line with the holder's pid) when another process holds it; nothing
        is written then. The pid goes into the lock file only for that message."""
        if self._lock_fd is not None:
            return
        missing = []
        parent = self.path.absolute()
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        self.path.mkdir(parents=True, exist_ok=True)
        self.check_no_links()
        fd = _open_own(self.lock_path, os.O_RDWR | os.O_CREAT)
        if os.fstat(fd).st_nlink != 1:  # another name of a file elsewhere: never truncated
            os.close(fd)
            raise _not_real(self.lock_path, "a file with other names (hard links)")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunDirBusy(
                f"out_dir={self.path} is in use by another run (pid {holder}); "
                "wait for it to finish or choose another out_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd, self._created = fd, missing

    def unlock(self) -> None:
        """Release the lock. A run that wrote nothing (it stopped on a user error or an unreachable
        server) also takes away the lock file and the directories it made for it."""
        if self._lock_fd is None:
            return
        if self._created and [p.name for p in self.path.iterdir()] == [self.lock_path.name]:
            self.lock_path.unlink(missing_ok=True)
            for directory in self._created:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only if empty
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
        self._lock_fd, self._created = None, []

    # -- the run's log ---------------------------------------------------------------------------
    def log_failure(self, what: str, exc: BaseException) -> None:
        """Append ``exc``'s traceback to ``logs/run.log`` (the terminal shows a progress bar)."""
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        text = "".join(traceback.format_exception(exc))
        with self.open_own_append(self.log_path, repair=False) as handle:
            handle.write(redact_text(f"{stamp} {what}\n{text}\n"))

    # -- lifecycle -----------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Fail early, writing nothing, when ``out_dir`` cannot hold the run's files."""
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"out_dir={self.path} is a file, not a directory")
        existing = self.path.absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise UsageError(f"out_dir={self.path}: {existing} is a file, not a directory")
        try:  # the only sure test (root ignores permission bits, read-only mounts do not)
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as exc:
            raise UsageError(f"out_dir={self.path}: cannot write in {existing} ({exc.strerror})") from None

    def check_owned(self) -> None:
        """Refuse, writing nothing, an ``out_dir`` that is not the project's: it must be new, empty
        (a stale ``.lock`` aside) or a run directory (it holds `RUN_MARKER`)."""
        if str(self.path) in ("", ".") or self.path == Path("."):
            raise UsageError(
                f"out_dir={str(self.path)!r}: a run needs its own folder, not the current directory; "
                "set out_dir=<a new folder>"
            )
        self.check_no_links()
        if not self.path.is_dir() or (self.path / RUN_MARKER).is_file():
            return
        foreign = sorted(p.name for p in self.path.iterdir() if p.name != self.lock_path.name)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
            # a run directory made before the marker existed: run.json and records/ of a run
            older = (self.path / "run.json").is_file() and (self.path / "records").is_dir()
            hint = (
                f"; if it is a run directory of an older version, an empty {RUN_MARKER} file in it "
                "lets the run resume there"
                if older
                else ""
            )
            raise UsageError(
                f"out_dir={self.path} is not a run directory (it holds {shown} and no {RUN_MARKER}); "
                f"choose a new or empty folder{hint}"
            )

    def check_no_links(self) -> None:
        """Refuse (one line) a symbolic link in ``out_dir`` or in its own folders (`OWN_FOLDERS`),
        and an own folder that is not a folder: a write, a torn-tail repair or an ``overwrite=true``
        deletion would otherwise land on what the link points at. ``out_dir`` itself may be a link
        (the user named it)."""
        if not self.path.is_dir():
            return
        for folder in ("", *OWN_FOLDERS):
            where = self.path / folder
            if folder:
                if not os.path.lexists(where):
                    continue
                if not stat.S_ISDIR(where.lstat().st_mode):
                    raise _not_real(where, "not a folder")
            with os.scandir(where) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        raise _not_real(entry.path)

    def open_own_append(self, path: Path, *, repair: bool = True) -> IO[str]:
        """A file of the run directory opened to append (its folders made): no part of it below
        ``out_dir`` may be a symbolic link; ``repair``: a torn last line is dropped first."""
        current = self.path
        for part in path.relative_to(self.path).parts[:-1]:
            current = current / part
            if current.is_symlink():
                raise _not_real(current)
            current.mkdir(exist_ok=True)
        if repair:
            repair_torn_tail(path)
        return open_append(path)

    def check_resumable(self, fingerprints: dict[str, dict], overwrite: bool) -> None:
        """Refuse to mix records made under other settings into this run (before writing anything)."""
        if overwrite:
            return
        for task, fingerprint in fingerprints.items():
            meta = self.meta_path(task)
            if not meta.is_file():
                continue
            try:
                old = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                raise UsageError(f"{meta}: unreadable; delete it or run with overwrite=true") from None
            changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            if changed:
                raise UsageError(
                    f"{self.path}: holds {task} records made with other settings ({', '.join(changed)}); "
                    "use overwrite=true or another out_dir"
                )

    def task_outputs(self, task: str) -> list[Path]:
        """Every file a run writes for ``task`` (what ``overwrite=true`` deletes)."""
        return [
            self.records_path(task),
            self.meta_path(task),
            self.path / "records" / f"{task}.static.json",
            self.predictions_path(task),
            self.table_path(task),
            self.path / "requests" / f"{task}.jsonl",
        ]

    def run_outputs(self) -> list[Path]:
        """The files a run writes whatever its tasks."""
        return [
            self.run_json,
            self.zip_path,
            self.not_an_entry_zip_path,
            self.path / "config.yaml",
            self.log_path,
        ]

    def prepare(self, fingerprints: dict[str, dict], overwrite: bool) -> None:
        """Make ``out_dir`` a run directory (the marker), after ``overwrite=true`` deleted the files
        a run writes for these tasks, by name: nothing else (see `check_owned`)."""
        self.check_no_links()  # a deletion or a write never goes through a link
        if overwrite and (self.path / RUN_MARKER).is_file():
            for task in fingerprints:
                for path in self.task_outputs(task):
                    path.unlink(missing_ok=True)
            for leftover in (self.run_json, self.zip_path, self.not_an_entry_zip_path):
                leftover.unlink(missing_ok=True)
            static = self.path / "requests" / "static"
            if static.is_dir():
                for block in static.iterdir():
                    if _STATIC_BLOCK.fullmatch(block.name) and not block.is_symlink() and block.is_file():
                        block.unlink()
            for folder in (static, static.parent):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty: a file of the user's keeps it
        self.path.mkdir(parents=True, exist_ok=True)
        marker = self.path / RUN_MARKER
        if not marker.is_file():
            atomic_write_text(marker, "a run directory of longicl (python main.py); see README, Running\n")
        (self.path / "records").mkdir(parents=True, exist_ok=True)
        for task, fingerprint in fingerprints.items():
            atomic_write_json(self.meta_path(task), fingerprint)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    # -- records -------------------------------------------------------------------------------
    def finished_ids(self, task: str) -> set[str]:
        """The ids of the samples with a complete record: failed and unanswered samples
        (`is_complete`) have none, and are asked again on resume."""
        return {k for k, offset in self.record_index(task).items() if offset >= 0}

    def finished_records(self, task: str) -> dict[str, dict]:
        """The latest complete record per sample id (see `finished_ids`), all in memory."""
        return {k: v for k, v in self.all_records(task).items() if is_complete(v)}

    def record_index(self, task: str) -> dict[str, int]:
        """Per sample id, the byte offset in ``records/<task>.jsonl`` of its latest complete
        record, or, for a sample without one, ``-1 - offset`` of its latest record (failed or
        unanswered). Ids are in the order of their first record.

        One pass over the file, one line in memory at a time: what stays is O(samples) small
        ints, not the records (about 8.6 KB each as Python objects). Records are only appended:
        an earlier line stays as written."""
        index: dict[str, int] = {}
        for offset, row in self._scan(task):
            sample_id = row["sample_id"]
            if is_complete(row):
                index[sample_id] = offset
            elif index.get(sample_id, -1) < 0:
                index[sample_id] = -1 - offset
        return index

    def records_at(self, task: str, offsets: Iterable[int]) -> Iterator[dict]:
        """The records at ``offsets`` (as `record_index` gives them), one at a time, in that order."""
        path = self.records_path(task)
        with path.open("rb") as handle:
            for offset in offsets:
                handle.seek(offset if offset >= 0 else -1 - offset)
                record = json.loads(handle.readline())
                problem = record_type_problem(record)
                if problem is not None:
                    raise DataError(f"{path}: sample {record.get('sample_id')}: {problem}")
                yield record

    def latest_records(self, task: str, sample_ids: Iterable[str] | None = None) -> Iterator[dict]:
        """Each sample's latest complete record, else its latest record (see `record_index`),
        one at a time: of ``sample_ids`` in their order (those with a record), or of every sample
        in the order of its first record."""
        index = self.record_index(task)
        if not index:
            return iter(())
        if sample_ids is None:
            return self.records_at(task, index.values())
        return self.records_at(task, (index[i] for i in sample_ids if i in index))

    def all_records(self, task: str) -> dict[str, dict]:
        """Per sample id, its latest record as `latest_records` picks it, all in memory (small
        runs, tests and tools; a run's own metrics and outputs stream `latest_records`)."""
        return {r["sample_id"]: r for r in self.latest_records(task)}

    def _scan(self, task: str) -> Iterator[tuple[int, dict]]:
        """(byte offset, record) of each line of ``records/<task>.jsonl``, checked as
        `files.scan_jsonl` checks lines, and a record without a sample id: a `DataError`
        naming file:line."""
        path = self.records_path(task)
        if not path.is_file():
            return
        for start, number, row in scan_jsonl(path):
            if not isinstance(row.get("sample_id"), str):
                raise DataError(f"{path}:{number}: no sample_id")
            yield start, row

    def append_record(self, task: str, record: dict, *, sync: bool = True) -> None:
        handle = self._handles.get(task)
        if handle is None:
            handle = self._handles[task] = self.open_own_append(self.records_path(task))
        handle.write(json.dumps(redact_secrets(record), ensure_ascii=False) + "\n")
        handle.flush()
        if sync:
            os.fsync(handle.fileno())

    def write_text_once(self, relative: str, text: str) -> None:
        path = self.path / relative
        if not path.exists():
            atomic_write_text(path, text)

    # -- final files ---------------------------------------------------------------------------
    def write_predictions(
        self, task: str, rows: Iterable[tuple[object, str]], id_key: str = "test_sample_id"
    ) -> Path:
        """One line per sample: ``{id_key: id, "prediction": p}``, in the order given."""
        with self.predictions_writer(task, id_key) as line:
            for i, p in rows:
                line(i, p)
        return self.predictions_path(task)

    @contextlib.contextmanager
    def predictions_writer(
        self, task: str, id_key: str = "test_sample_id"
    ) -> Iterator[Callable[[object, str], None]]:
        """``line(id, prediction)`` writes one line of `write_predictions`' file as it comes; the
        file appears whole when the block ends (atomically), and not at all if it raises."""
        with atomic_writer(self.predictions_path(task)) as handle:

            def line(sample_id: object, prediction: str) -> None:
                handle.write(
                    json.dumps({id_key: sample_id, "prediction": prediction}, ensure_ascii=False) + "\n"
                )

            yield line

    def table_path(self, task: str) -> Path:
        return self.path / f"{task}.csv"

    def write_annotated_table(
        self, task: str, frame: pd.DataFrame, predictions: Sequence[str], column: str = "prediction"
    ) -> Path:
        """The input table, every column as read, with ``column`` set to ``predictions`` (row order).

        A prediction a spreadsheet would read as a formula gets a leading ``'``
        (`longicl.published.spreadsheet_cell`); the JSONL predictions keep the exact text, and the
        input columns stay as the user's own file has them."""
        path = self.table_path(task)
        cells = [spreadsheet_cell(p) for p in predictions]
        atomic_write_text(path, frame.assign(**{column: cells}).to_csv(index=False))
        return path

    def write_zip(
        self, files: Sequence[Path], expected_ids: dict[str, Sequence[str]], target: Path | None = None
    ) -> Path:
        """Validate the prediction files against the expected ids, then zip them flat into ``target``
        (default: ``submission.zip``)."""
        target = target or self.zip_path
        validate_predictions(files, expected_ids)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".submission.", suffix=".zip")
        shared_mode(fd)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for path in files:
                    archive.write(path, arcname=path.name)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return target


def is_complete(record: dict) -> bool:
    """Whether a record holds the sample's final outcome: answered (parsed or not), not failed and
    not unanswered (a reply cut, empty or missing; see `longicl.annotators.base.unanswered`)."""
    return bool(record) and not record.get("error") and not record.get("unanswered")


def validate_predictions(
    files: Sequence[Path], expected_ids: dict[str, Sequence[str]], *, in_order: bool = False
) -> None:
    """Every expected id exactly once per file (named ``<task>.jsonl``), no extras, predictions
    are strings; ``in_order``: also in the expected order. Raises ValueError at the first problem."""
    for path in files:
        validate_prediction_lines(
            str(path), path.read_text(encoding="utf-8"), expected_ids[path.stem], in_order=in_order
        )


def validate_prediction_lines(
    name: str, text: str, expected: Sequence[str], *, in_order: bool = False
) -> None:
    """The one submission validator: ``text`` (the JSON lines of a predictions file, called ``name``
    in messages) holds every id of ``expected`` exactly once, no other, each with a string
    prediction (and, ``in_order``, in ``expected``'s order). Raises ValueError naming the file."""
    seen: list[str] = []
    lines = text.split("\n")  # not splitlines(): U+2028, U+0085 in a prediction are text
    if lines[-1] == "":
        lines.pop()  # the last line's newline
    for line_no, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            raise ValueError(f"{name}:{line_no}: not a JSON object") from None
        if (
            not isinstance(row, dict)
            or set(row) != {"test_sample_id", "prediction"}
            or not isinstance(row["prediction"], str)
        ):
            raise ValueError(f"{name}:{line_no}: expected keys test_sample_id, prediction (a string)")
        seen.append(row["test_sample_id"])
    if len(seen) != len(set(seen)):
        raise ValueError(f"{name}: duplicate test_sample_id")
    if set(seen) != set(expected):
        missing, extra = set(expected) - set(seen), set(seen) - set(expected)
        raise ValueError(f"{name}: {len(missing)} ids missing, {len(extra)} unexpected")
    if in_order and seen != list(expected):
        raise ValueError(f"{name}: ids are not in the task file's order of test samples")

"""What each task is: read from task files (YAML), one per task, the challenge's eight included.

A task file declares a task: its name, definition, data table, which column (or template over
columns) is the input, which column holds the answers, the answer kind and its labels, the ICL
floor and the metric. The eight challenge tasks are such files under ``tasks/`` (with a few
optional keys of their own: ``challenge_id``, ``program``, ``annotator``, ...), read by the same
loader as a user's file. Every stage reads a `TaskSpec` from here instead of branching on task ids
or names, so adding a task means adding a file.

``python -m longicl.tasks check FILE`` validates a task file and shows what it understood.
"""

from __future__ import annotations

import contextlib
import re
import reprlib
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from longicl.config_values import load_defaults
from longicl.errors import DataError, UsageError
from longicl.paths import PROJECT_ROOT

#: The challenge's task files (``challenge_id`` 1..8).
CHALLENGE_TASK_DIR = PROJECT_ROOT / "tasks"
TASK_FILE_SUFFIXES = (".yaml", ".yml")
TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
#: what a task file gets for a key it leaves out (``dev_size``, ``metric``, ``annotator``)
TASK_FILE_DEFAULTS: dict[str, Any] = load_defaults("task_file")


class AnswerKind(StrEnum):
    """How an answer looks; selects the parser, the normaliser and the format instruction."""

    LABEL = "label"  # one of a closed label set
    INTEGER = "integer"  # a single (possibly negative) integer
    INT_LIST = "int_list"  # a list of integers, canonical form "[a, b, c]"
    TEXT = "text"  # free text, compared exactly after normalisation
    CODE = "code"  # a Python module (task 8), scored by execution, not by string match


@dataclass(frozen=True)
class TaskSpec:
    """Everything the pipeline needs to know about one task (one task file)."""

    name: str  # output file stem and the key of per-task settings, e.g. "tweet-mood", "openseek-5"
    answer_kind: AnswerKind
    title: str = ""
    labels: tuple[str, ...] | None = None  # closed label set, in canonical casing
    lowercase: bool = False  # normalise answers to lower case (task 7's definition asks for it)
    min_icl_tokens: int = 0  # floor of demonstration tokens per request (the challenge: 30,000)
    default_dev_size: int = TASK_FILE_DEFAULTS["dev_size"]
    # no dev_size in the task file: a dev run holds out at most default_dev_size rows and at most a
    # fifth of the labelled rows (`longicl.data.load_task` sizes it), so a small table keeps most
    # rows as demonstrations
    dev_size_from_table: bool = False
    metric: str = TASK_FILE_DEFAULTS["metric"]  # a name in longicl.metrics.TASK_METRICS
    program: str | None = None  # name of an exact program that solves the task (classical engine)
    # Other spellings models use for a label, lower case -> canonical label ("yes" -> "Y").
    label_aliases: tuple[tuple[str, str], ...] = ()
    # A trailing "." on a text answer is noise, except in abbreviations where gold keeps it
    # ("washington, d.c.", "jr."): "strip" always drops it, "keep_abbreviations" keeps those.
    trailing_period: str = "strip"
    # Which annotator handles a sample (longicl.annotators.ANNOTATORS): "default" (ask, parse, vote) or "kernel"
    # (generate, check by running, repair, fall back; longicl.annotators.kernel).
    annotator: str = TASK_FILE_DEFAULTS["annotator"]
    id: int | None = None  # the challenge's task number; None for any other task
    # Where the data is: ``data`` relative to ``task_file``; the columns for tables.
    task_file: Path | None = None
    data: str = ""
    definition: str | None = None  # None: the data file's own (challenge-format .json)
    id_column: str | None = None  # None: the row number
    input: str | None = None  # a column, or a template over columns ("{premise} / {hypothesis}")
    output_column: str | None = None

    @property
    def is_closed(self) -> bool:
        return self.labels is not None

    @property
    def is_challenge(self) -> bool:
        return self.id is not None

    @property
    def file(self) -> str:
        """The data file's name."""
        return Path(self.data).name

    @property
    def source(self) -> str:
        """Where the task is declared, for error messages."""
        return str(self.task_file) if self.task_file else self.name

    @property
    def config_keys(self) -> tuple[str, ...]:
        """Keys of this task's per-task settings (``method.per_task.<key>``, ``selection.per_task.<key>``,
        ``engine.models.<key>``): the name, and for the challenge's tasks their number first."""
        return (str(self.id), self.name) if self.id is not None else (self.name,)

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The columns the input is made of (one column, or the fields of a template)."""
        if not self.input:
            return ()
        if not is_template(self.input):
            return (self.input,)
        return tuple(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(self.input) if f))


def is_template(text: str) -> bool:
    return "{" in text


def per_task_entry(table: Mapping[str, Any] | None, spec: TaskSpec) -> Any:
    """``table[key]`` for the first of ``spec.config_keys`` that has a (non-null) entry, else None."""
    for key in spec.config_keys:
        value = (table or {}).get(key)
        if value is not None:
            return value
    return None


# ------------------------------------------------------------------------------------------------
# task files
# ------------------------------------------------------------------------------------------------
#: The task-file contract (issue 13) and the optional keys; anything else is a mistake.
REQUIRED_KEYS = ("name", "data", "answer")
CONTRACT_KEYS = (
    "name",
    "definition",
    "data",
    "id_column",
    "input",
    "output_column",
    "answer",
    "labels",
    "min_icl_tokens",
    "metric",
)
OPTIONAL_KEYS = (
    "title",
    "dev_size",
    "label_aliases",
    "lowercase",
    "trailing_period",
    "program",
    "annotator",
    "challenge_id",
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TRAILING_PERIOD = ("strip", "keep_abbreviations")

#: a task file is a page of settings: larger files, and YAML aliases (a few bytes can name millions
#: of values), are refused before anything is built or formatted from them
MAX_TASK_FILE_BYTES = 1_000_000
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 3, 80, 80
_SHOWN.maxlist = _SHOWN.maxdict = _SHOWN.maxtuple = _SHOWN.maxset = 6


def shown(value: object) -> str:
    """A value of a task file as a message shows it: bounded in size and depth, whatever it is."""
    return _SHOWN.repr(value)


#: how deeply a task file's lists and mappings may nest (its deepest key needs 3)
MAX_TASK_FILE_DEPTH = 32


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader refusing aliases (``*name``): a task file never needs them, and nested
    aliases expand exponentially when the value is walked or formatted. Nesting deeper than
    `MAX_TASK_FILE_DEPTH` is refused too, before Python's recursion limit is reached."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a task file", event.start_mark
            )
        if self._depth >= MAX_TASK_FILE_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_TASK_FILE_DEPTH} levels", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_LOADED: dict[tuple[Path, int, int], TaskSpec] = {}  # (resolved file, mtime, size) -> its spec
_DECLARED: dict[str, TaskSpec] = {}  # name -> the latest spec of that name read in this process


def load_task_file(path: str | Path) -> TaskSpec:
    """Read and validate one task file; every mistake is one `DataError` naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: task file not found")
    stat = path.stat()
    version = (path.resolve(), stat.st_mtime_ns, stat.st_size)
    if version in _LOADED:
        _DECLARED[_LOADED[version].name] = _LOADED[version]  # the latest read, even from the cache
        return _LOADED[version]
    if stat.st_size > MAX_TASK_FILE_BYTES:
        raise DataError(f"{path}: {stat.st_size} bytes; a task file holds at most {MAX_TASK_FILE_BYTES}")
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader)  # noqa: S506 - safe
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    except RecursionError:
        raise DataError(f"{path}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise DataError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    spec = _spec_from_document(path, doc)
    _LOADED[version] = _DECLARED[spec.name] = spec
    return spec


def _spec_from_document(path: Path, doc: object) -> TaskSpec:
    def fail(key: str, reason: str) -> DataError:
        return DataError(f"{path}: {key}: {reason}")

    if not isinstance(doc, dict):
        raise DataError(f"{path}: a task file is a YAML mapping of keys (name, data, input, ...)")
    unknown = sorted(str(k) for k in doc if k not in CONTRACT_KEYS + OPTIONAL_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key; known keys: {', '.join(CONTRACT_KEYS + OPTIONAL_KEYS)}")
    for key in REQUIRED_KEYS:
        if doc.get(key) in (None, ""):
            raise fail(key, "missing (required)")

    def text(key: str, default: str | None = None) -> str | None:
        value = doc.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise fail(key, f"must be a string, got {shown(value)}")
        return str(value)

    def flag(key: str) -> bool:
        value = doc.get(key, False)
        if not isinstance(value, bool):
            raise fail(key, f"must be true or false, got {shown(value)}")
        return value

    def count(key: str, default: int) -> int:
        value = doc.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise fail(key, f"must be a whole number >= 0, got {shown(value)}")
        return value

    name = text("name") or ""
    if not _NAME.fullmatch(name):
        raise fail(
            "name", f"{shown(name)} must be letters, digits, '.', '-' or '_' (it names the output files)"
        )
    try:
        answer_kind = AnswerKind(text("answer"))
    except ValueError:
        raise fail(
            "answer", f"{shown(doc['answer'])} is not one of {', '.join(k.value for k in AnswerKind)}"
        ) from None
    data = text("data") or ""
    suffix = Path(data).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise fail("data", f"{shown(data)} must end in one of {', '.join(TABLE_SUFFIXES)}")
    is_table = suffix != ".json"
    definition = text("definition")
    if definition is not None and not definition.strip():
        raise fail("definition", "is empty")
    if is_table:
        if definition is None:
            raise fail("definition", "missing (required unless the data is a challenge-format .json file)")
        for key in ("input", "output_column"):
            if not text(key):
                raise fail(key, f"missing (required for a {suffix} table)")
    else:
        for key in ("input", "output_column"):
            if key in doc:
                raise fail(
                    key, "not used with a challenge-format .json file (its fields are input and output)"
                )
    template = text("input")
    if template is not None and is_template(template):
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template)]
        except ValueError as exc:
            raise fail("input", f"not a valid template ({exc}); write {{column}} for a column") from None
        named = [f for f in fields if f is not None]
        if not named or any(not f.strip() or f.isdigit() or "." in f or "[" in f for f in named):
            raise fail("input", "a template names its columns in braces, e.g. 'Premise: {premise}'")
    labels = _labels(doc.get("labels"), fail)
    if labels is not None and answer_kind is not AnswerKind.LABEL:
        raise fail("labels", f"only for answer: label (this task's answer is {answer_kind.value})")
    metric = text("metric") or TASK_FILE_DEFAULTS["metric"]
    if metric == "macro_f1" and answer_kind is not AnswerKind.LABEL:
        raise fail("metric", "macro_f1 needs answer: label")
    trailing = text("trailing_period", "strip") or "strip"
    if trailing not in _TRAILING_PERIOD:
        raise fail("trailing_period", f"{shown(trailing)} is not one of {', '.join(_TRAILING_PERIOD)}")
    challenge_id = doc.get("challenge_id")
    if challenge_id is not None and (isinstance(challenge_id, bool) or not isinstance(challenge_id, int)):
        raise fail("challenge_id", f"must be a whole number, got {shown(challenge_id)}")
    dev_size = count("dev_size", TASK_FILE_DEFAULTS["dev_size"])
    if dev_size < 1:
        raise fail("dev_size", "must be at least 1")
    return TaskSpec(
        name=name,
        answer_kind=answer_kind,
        title=text("title") or name,
        labels=labels,
        lowercase=flag("lowercase"),
        min_icl_tokens=count("min_icl_tokens", 0),
        default_dev_size=dev_size,
        dev_size_from_table=doc.get("dev_size") is None,
        metric=metric,
        program=text("program"),
        label_aliases=_aliases(doc.get("label_aliases"), fail),
        trailing_period=trailing,
        annotator=text("annotator") or TASK_FILE_DEFAULTS["annotator"],
        id=challenge_id,
        task_file=path,
        data=data,
        definition=definition.strip() if definition else None,
        id_column=text("id_column"),
        input=template,
        output_column=text("output_column"),
    )


def _scalar_text(value: object) -> str | None:
    """A label as text; YAML's booleans (yes, no, on, off unquoted) are refused, not guessed."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)


def _labels(value: object, fail: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise fail("labels", "must be a non-empty list, e.g. [down, fine]")
    labels = [_scalar_text(v) for v in value]
    if any(label is None or not label.strip() for label in labels):
        raise fail("labels", f"every label must be a non-empty string (quote yes/no/on/off): {shown(value)}")
    if len(set(labels)) != len(labels):
        raise fail("labels", f"repeats a label: {shown(value)}")
    return tuple(label for label in labels if label is not None)


def _aliases(value: object, fail: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise fail("label_aliases", 'must map another spelling to a label, e.g. {"yes": "Y"}')
    pairs = [(_scalar_text(k), _scalar_text(v)) for k, v in value.items()]
    if any(k is None or v is None for k, v in pairs):
        raise fail("label_aliases", f"keys and labels must be strings (quote yes/no/on/off): {shown(value)}")
    return tuple((str(k), str(v)) for k, v in pairs)


def _challenge_tasks() -> dict[int, TaskSpec]:
    specs = [load_task_file(path) for path in sorted(CHALLENGE_TASK_DIR.glob("openseek-*.yaml"))]
    return {spec.id: spec for spec in sorted(specs, key=lambda s: s.id or 0) if spec.id is not None}


#: The challenge's tasks by number, read from ``tasks/openseek-<id>.yaml``.
TASKS: dict[int, TaskSpec] = _challenge_tasks()


# ------------------------------------------------------------------------------------------------
# looking tasks up
# ------------------------------------------------------------------------------------------------
def looks_like_task_file(value: object) -> bool:
    return isinstance(value, Path) or (
        isinstance(value, str) and value.strip().lower().endswith(TASK_FILE_SUFFIXES)
    )


def task_file_path(value: str | Path) -> Path:
    """A task file named relative to the working directory, else to the project root."""
    path = Path(str(value).strip())
    if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
        return PROJECT_ROOT / path
    return path


def get_task(task: int | str | Path) -> TaskSpec:
    """A task by number (``5``, ``"5"``), name (``"openseek-5"``, or a task file's name once read)
    or task file (``"examples/tweet-mood.yaml"``)."""
    if looks_like_task_file(task):
        return load_task_file(task_file_path(task))  # type: ignore[arg-type]
    text = str(task).strip()
    if text in _DECLARED:
        return _DECLARED[text]
    try:
        return TASKS[int(text.removeprefix("openseek-"))]
    except (ValueError, KeyError):
        known = ", ".join(str(i) for i in TASKS)
        raise UsageError(
            f"unknown task {task!r}: expected one of {known}, 'all', or a task file (.yaml)"
        ) from None


def resolve_tasks(selection: object) -> list[TaskSpec]:
    """Turn the CLI's ``task=`` value into specs: ``all``, ``5``, ``[1,2]``, ``"1,2"``, a task file,
    or a list mixing ids and task files. The challenge's tasks come first, in id order, then task
    files in the order given."""
    if selection is None:
        raise UsageError("task is not set: expected 1..8, a list such as [1,5], 'all', or a task file")
    if isinstance(selection, str | Path):
        text = str(selection).strip()
        items: list[object] = [part for part in text.strip("[]").split(",") if part.strip()]
    elif isinstance(selection, int):
        items = [selection]
    else:
        try:
            items = list(selection)  # type: ignore[call-overload]
        except TypeError:
            raise UsageError(
                f"task={selection!r} is not a task id, a list of ids, 'all' or a task file"
            ) from None
    if not items:
        raise UsageError("task= names no task: expected 1..8, a list such as [1,5], 'all', or a task file")
    specs: dict[str, TaskSpec] = {}
    for spec in _expand(items):
        if spec.name in specs and specs[spec.name] != spec:
            raise UsageError(
                f"task=: two tasks are named {spec.name!r} ({specs[spec.name].source}, {spec.source})"
            )
        specs[spec.name] = spec
    challenge = sorted((s for s in specs.values() if s.is_challenge), key=lambda s: s.id or 0)
    return challenge + [s for s in specs.values() if not s.is_challenge]


def _expand(items: Iterable[object]) -> Iterable[TaskSpec]:
    for item in items:
        if isinstance(item, str) and item.strip().lower() == "all":
            yield from TASKS.values()
        else:
            yield get_task(item)  # type: ignore[arg-type]


def remember_run_tasks(tasks: Mapping[str, Mapping[str, Any]]) -> None:
    """Make the declared tasks of a finished run (its ``run.json`` ``tasks``) known to `get_task`
    by name, for reports, notebooks and review: from the task file the run recorded (even when
    another file of the same name was read before), or, when that file is gone and no task of
    that name is known, from what ``run.json`` says about the task."""
    for name, entry in tasks.items():
        if task_order(name)[0] == 0 or not isinstance(entry, Mapping):
            continue
        path = entry.get("task_file")
        if path:
            with contextlib.suppress(DataError):  # gone or changed: fall back below
                if load_task_file(task_file_path(path)).name == name:
                    continue
        if name not in _DECLARED or _DECLARED[name].name != name:
            try:
                kind = AnswerKind(entry.get("answer_kind") or "text")
            except ValueError:
                kind = AnswerKind.TEXT
            _DECLARED[name] = TaskSpec(
                name=name,
                answer_kind=kind,
                title=name,
                min_icl_tokens=int(entry.get("min_icl_tokens_rule") or 0),
                metric=str(entry.get("metric") or TASK_FILE_DEFAULTS["metric"]),
            )


def task_order(name: str) -> tuple[int, int, str]:
    """Sort key for task names: the challenge's tasks by number, then the others by name."""
    match = re.fullmatch(r"openseek-(\d+)", name)
    return (0, int(match.group(1)), "") if match else (1, 0, name)

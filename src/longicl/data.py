"""Loading and validating a task's data, and the dev/test split.

Two shapes of data:

- the challenge's JSON (``.json``): one object with ``Definition``, ``examples`` (id, input,
  output) and ``test_samples`` (id, input);
- a table (``.csv``, ``.jsonl``, ``.parquet``, read with pandas): one row per item; rows whose
  ``output_column`` holds a value are the labelled examples, rows where it is empty are the ones
  to annotate. The input is one column or a template over columns; ids come from ``id_column``
  or the row number.

Anything malformed raises `DataError` with one line naming the file, the key or field and the
reason, so the CLI can print it and exit 2.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from longicl.errors import DataError, UsageError, one_line
from longicl.tasks import AnswerKind, TaskSpec, shown

#: Name of the column the outputs add to a table (replaced if the input table already has one).
PREDICTION_COLUMN = "prediction"
#: Key of the id in prediction files when a table has no ``id_column`` (the 0-based row number).
ROW_KEY = "row"
#: Key of the id in the challenge's prediction files.
CHALLENGE_ID_KEY = "test_sample_id"


@dataclass(frozen=True)
class Example:
    """One labelled example or test sample. ``output`` is None for unlabelled test samples."""

    id: str
    input: str
    output: str | None = None


@dataclass(frozen=True)
class Table:
    """A task's data as the table it was read from, to write it back with a prediction column."""

    frame: pd.DataFrame = field(repr=False)
    id_key: str  # key of the row id in the prediction file: id_column, or "row"
    raw_ids: Mapping[str, Any] = field(repr=False)  # Example.id -> the id as in the table
    positions: Mapping[str, int] = field(repr=False)  # Example.id -> row position in the frame


@dataclass(frozen=True)
class TaskData:
    spec: TaskSpec  # with the labels inferred from the data when the task file gives none
    path: Path
    definition: str
    examples: tuple[Example, ...]
    test_samples: tuple[Example, ...]
    license: str
    sha256: str
    table: Table | None = None  # tables only (not the challenge's JSON)

    @property
    def id_key(self) -> str:
        """The key of the sample id in this task's prediction file."""
        return self.table.id_key if self.table else (self.spec.id_column or CHALLENGE_ID_KEY)

    def raw_id(self, sample_id: str) -> Any:
        """The sample id as the data has it (a number stays a number)."""
        return self.table.raw_ids[sample_id] if self.table else sample_id


@dataclass(frozen=True)
class Split:
    """What one run annotates (``samples``) and where its demonstrations come from (``pool``)."""

    name: str  # "dev" or "test"
    pool: tuple[Example, ...]
    samples: tuple[Example, ...]


def task_path(data_dir: str | Path | None, spec: TaskSpec) -> Path:
    """The data file: relative to the task file; the challenge's tasks look in ``data_dir`` (when
    given) so that ``data_dir=`` keeps moving them."""
    if spec.is_challenge and data_dir is not None:
        return Path(data_dir) / spec.file
    base = spec.task_file.parent if spec.task_file else Path(".")
    return base / spec.data


def load_task(spec: TaskSpec, data_dir: str | Path | None = None) -> TaskData:
    """Read and validate one task's data."""
    if spec.is_challenge and data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"{data_dir}: data directory not found (set data_dir=<path to the task files>)")
    path = task_path(data_dir, spec)
    if not path.is_file():
        where = f"{spec.source}: data: " if not spec.is_challenge else ""
        raise DataError(f"{where}{path}: {'task file' if spec.is_challenge else 'data file'} not found")
    data = _load_challenge_json(spec, path) if path.suffix.lower() == ".json" else _load_table(spec, path)
    return _with_dev_size(data)


#: a task file without dev_size holds out at most this share of its labelled rows on split=dev
DEV_SHARE_DIVISOR = 5


def dev_size_for(spec: TaskSpec, labelled: int) -> int:
    """The rows a dev run holds out by default: the task file's ``dev_size``, or, when it sets
    none, ``default_dev_size`` (200) but at most a fifth of the labelled rows."""
    if not spec.dev_size_from_table:
        return spec.default_dev_size
    return max(1, min(spec.default_dev_size, labelled // DEV_SHARE_DIVISOR))


def _with_dev_size(data: TaskData) -> TaskData:
    size = dev_size_for(data.spec, len(data.examples))
    if size == data.spec.default_dev_size:
        return data
    return replace(data, spec=replace(data.spec, default_dev_size=size))


def _load_challenge_json(spec: TaskSpec, path: Path) -> TaskData:
    raw = path.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise DataError(f"{path}: invalid JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: top level must be a JSON object, got {type(doc).__name__}")

    definition = spec.definition or _definition(path, doc)
    examples = _records(path, doc, "examples", labelled=True)
    if not examples:
        raise DataError(f"{path}: field 'examples' is empty; demonstrations are needed")
    test_samples = _records(path, doc, "test_samples", labelled=False)
    seen: dict[str, str] = {}
    for field_name, records in (("examples", examples), ("test_samples", test_samples)):
        for index, record in enumerate(records):
            if record.id in seen:
                raise DataError(
                    f"{path}: {field_name}[{index}].id {record.id!r} duplicates an id already used in {seen[record.id]}"
                )
            seen[record.id] = field_name
    licence = doc.get("License", "")
    licence_text = "; ".join(map(str, licence)) if isinstance(licence, list) else str(licence)
    spec = _with_labels(spec, examples)
    return TaskData(
        spec=spec,
        path=path,
        definition=definition,
        examples=tuple(examples),
        test_samples=tuple(test_samples),
        license=licence_text,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------
def _read_csv(path: Path) -> pd.DataFrame:
    # Every cell as text, "NA"/"null" kept as written: the CSV output gives them back untouched.
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")


def _read_jsonl(path: Path) -> pd.DataFrame:
    return pd.read_json(path, lines=True, dtype=False, encoding="utf-8")


def _read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


#: data file suffix -> its reader
TABLE_READERS = {".csv": _read_csv, ".jsonl": _read_jsonl, ".parquet": _read_parquet}


def read_table(spec: TaskSpec, path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        frame = TABLE_READERS[suffix](path)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types for a bad file
        raise DataError(
            f"{spec.source}: data: {path} cannot be read as {suffix.lstrip('.')} ({one_line(exc, 200)})"
        ) from None
    if frame.empty:
        raise DataError(f"{spec.source}: data: {path} holds no rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True)


_INTEGER = re.compile(r"[+-]?\d+")


def is_nested(value: object) -> bool:
    """A cell holding a list, an object or an array (JSONL, Parquet's nested columns)."""
    return isinstance(value, list | dict | tuple | set) or getattr(value, "ndim", 0) > 0


def is_empty(value: object) -> bool:
    """A missing cell: None, NaN/NA, or blank text."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def cell_text(value: object) -> str:
    """A cell as prompt text; lists and objects (from JSONL) as JSON."""
    if is_empty(value):
        return ""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item() if getattr(value, "ndim", 0) == 0 else value.tolist()
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def plain_value(value: object) -> Any:
    """A cell as a JSON-ready Python value (numpy scalars become int/float/str)."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _load_table(spec: TaskSpec, path: Path) -> TaskData:
    source = spec.source
    frame = read_table(spec, path)
    columns = list(frame.columns)

    def missing(key: str, column: str) -> DataError:
        return DataError(
            f"{source}: {key}: column {column!r} is not in {path.name} (columns: {', '.join(columns)})"
        )

    for key, column in (("id_column", spec.id_column), ("output_column", spec.output_column)):
        if column is not None and column not in frame.columns:
            raise missing(key, column)
    for column in spec.input_columns:
        if column not in frame.columns:
            raise missing("input", column)

    if spec.id_column is not None:
        as_read = [plain_value(v) for v in frame[spec.id_column]]
        raw_ids = [_csv_id(v) for v in as_read] if path.suffix.lower() == ".csv" else as_read
        ids = [cell_text(v) for v in raw_ids]
        for position, ident in enumerate(ids):
            if not ident:
                raise DataError(
                    f"{source}: id_column: row {position} of {path.name} has an empty {spec.id_column!r}"
                )
        counts = Counter(ids)
        if len(counts) != len(ids):
            duplicate = next(i for i, n in counts.items() if n > 1)
            raise DataError(
                f"{source}: id_column: {spec.id_column!r} repeats the id {duplicate!r} ({counts[duplicate]} rows)"
            )
    else:
        raw_ids = list(range(len(frame)))
        ids = [str(i) for i in raw_ids]

    for key, column in (("id_column", spec.id_column), ("output_column", spec.output_column)):
        if column is None:
            continue
        for position, value in enumerate(frame[column]):
            if is_nested(value):
                raise DataError(
                    f"{source}: {key}: row {ids[position]} of {path.name} has {column}={shown(value)}: "
                    "a list or object, not one value"
                )
    inputs = _inputs(spec, frame)
    outputs = [None if is_empty(v) else cell_text(v).strip() for v in frame[spec.output_column]]
    if spec.answer_kind is AnswerKind.INTEGER:
        for ident, output in zip(ids, outputs, strict=True):
            if output is not None and not _INTEGER.fullmatch(output):
                raise DataError(
                    f"{source}: answer: integer, but row {ident} of {path.name} has "
                    f"{spec.output_column}={shown(output)}; use answer: label (or text) for such answers"
                )
    examples, samples = [], []
    for ident, text, output in zip(ids, inputs, outputs, strict=True):
        (examples if output is not None else samples).append(Example(ident, text, output))
    if not examples:
        raise DataError(
            f"{source}: output_column: no labelled rows ({spec.output_column!r} is empty in every row of {path.name})"
        )
    if spec.labels is not None:
        allowed = set(spec.labels)
        for example in examples:
            if example.output not in allowed:
                raise DataError(
                    f"{source}: labels: row {example.id} has {spec.output_column}={example.output!r}, "
                    f"not one of {list(spec.labels)}"
                )
    digest = hashlib.sha256(path.read_bytes())
    return TaskData(
        spec=_with_labels(spec, examples),
        path=path,
        definition=spec.definition or "",
        examples=tuple(examples),
        test_samples=tuple(samples),
        license="",
        sha256=digest.hexdigest(),
        table=Table(
            frame=frame,
            id_key=spec.id_column or ROW_KEY,
            raw_ids=dict(zip(ids, raw_ids, strict=True)),
            positions={ident: position for position, ident in enumerate(ids)},
        ),
    )


def _csv_id(value: Any) -> Any:
    """A CSV id as the prediction file gives it back: text that is a plain integer ("1002", not
    "007" or "1e3") becomes the number, anything else stays text."""
    if isinstance(value, str) and value.isdigit() and str(int(value)) == value:
        return int(value)
    return value


def _inputs(spec: TaskSpec, frame: pd.DataFrame) -> list[str]:
    template = spec.input or ""
    if template in frame.columns:
        return [cell_text(v) for v in frame[template]]
    columns = spec.input_columns
    rows = zip(*(frame[c] for c in columns), strict=True)
    return [template.format_map({c: cell_text(v) for c, v in zip(columns, row, strict=True)}) for row in rows]


def _with_labels(spec: TaskSpec, examples: list[Example]) -> TaskSpec:
    """A label task without ``labels``: the labels found in the data, in a stable order."""
    if spec.answer_kind is not AnswerKind.LABEL or spec.labels is not None:
        return spec
    found = sorted({ex.output or "" for ex in examples}, key=_label_order)
    return replace(spec, labels=tuple(found))


def _label_order(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


# ------------------------------------------------------------------------------------------------
# the challenge's JSON
# ------------------------------------------------------------------------------------------------
def _definition(path: Path, doc: dict) -> str:
    if "Definition" not in doc:
        raise DataError(f"{path}: missing field 'Definition'")
    value = doc["Definition"]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        text = "\n".join(value)
    elif isinstance(value, str):
        text = value
    else:
        raise DataError(f"{path}: field 'Definition' must be a string or a non-empty list of strings")
    if not text.strip():
        raise DataError(f"{path}: field 'Definition' is empty")
    return text.strip()


def _records(path: Path, doc: dict, field: str, *, labelled: bool) -> list[Example]:
    if field not in doc:
        raise DataError(f"{path}: missing field '{field}'")
    items = doc[field]
    if not isinstance(items, list):
        raise DataError(f"{path}: field '{field}' must be a list, got {type(items).__name__}")
    records = []
    for index, item in enumerate(items):
        where = f"{path}: {field}[{index}]"
        if not isinstance(item, dict):
            raise DataError(f"{where} must be an object, got {type(item).__name__}")
        ident = item.get("id")
        if not isinstance(ident, str) or not ident.strip():
            raise DataError(f"{where}.id is missing or not a non-empty string")
        text = item.get("input")
        if not isinstance(text, str):
            raise DataError(f"{where}.input is missing or not a string (id {ident})")
        output = None
        if labelled:
            if "output" not in item:
                raise DataError(f"{where}.output is missing (id {ident})")
            output = _first_output(item["output"])
            if output is None:
                raise DataError(
                    f"{where}.output must be a string or a non-empty list of strings (id {ident})"
                )
        records.append(Example(id=ident, input=text, output=output))
    return records


def _first_output(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    return None


def split(data: TaskData, name: str, *, dev_size: int | None = None, seed: int = 0) -> Split:
    """Build the run's split.

    ``test``: annotate ``test_samples`` with every example as a possible demonstration.
    ``dev``: hold out ``dev_size`` examples (label-stratified for closed label sets, otherwise a
    seeded random sample), kept in file order, and demonstrate only from the rest. Examples whose
    input text equals a held-out input are dropped from the pool too, so no query can ever meet
    itself among its demonstrations.
    """
    if name == "test":
        return Split("test", data.examples, data.test_samples)
    if name != "dev":
        raise UsageError(f"split={name!r} is not one of: dev, test")
    size = data.spec.default_dev_size if dev_size is None else int(dev_size)
    if size < 1:
        raise UsageError(f"dev_size={size} must be at least 1")
    if size >= len(data.examples):
        raise UsageError(
            f"dev_size={size} leaves no demonstrations: {data.path.name} has {len(data.examples)} examples"
        )
    chosen = _stratified_indices(data, size, seed)
    held_inputs = {data.examples[i].input for i in chosen}
    samples = tuple(data.examples[i] for i in sorted(chosen))
    pool = tuple(ex for i, ex in enumerate(data.examples) if i not in chosen and ex.input not in held_inputs)
    return Split("dev", pool, samples)


def _stratified_indices(data: TaskData, size: int, seed: int) -> set[int]:
    """Indices of a deterministic sample; for closed label sets, proportional per label."""
    rng = random.Random(f"dev-split:{data.spec.name}:{seed}")
    if not data.spec.is_closed:
        return set(rng.sample(range(len(data.examples)), size))
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(data.examples):
        by_label[ex.output or ""].append(i)
    total = len(data.examples)
    # Largest-remainder allocation keeps the label shares of the whole file.
    quotas = {label: size * len(idx) / total for label, idx in by_label.items()}
    counts = {label: int(q) for label, q in quotas.items()}
    leftover = size - sum(counts.values())
    for label in sorted(quotas, key=lambda lab: (-(quotas[lab] - counts[lab]), lab))[:leftover]:
        counts[label] += 1
    chosen: set[int] = set()
    for label in sorted(by_label):
        chosen.update(rng.sample(by_label[label], counts[label]))
    return chosen

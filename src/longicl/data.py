"""Loading and validating task files, and the dev/test split.

A task file is one JSON object with ``Definition``, ``examples`` (id, input, output) and
``test_samples`` (id, input). Anything malformed raises `DataError` with one line naming the
file, the field and the reason, so the CLI can print it and exit 2.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from longicl.errors import DataError, UsageError
from longicl.tasks import TaskSpec


@dataclass(frozen=True)
class Example:
    """One labelled example or test sample. ``output`` is None for unlabelled test samples."""

    id: str
    input: str
    output: str | None = None


@dataclass(frozen=True)
class TaskData:
    spec: TaskSpec
    path: Path
    definition: str
    examples: tuple[Example, ...]
    test_samples: tuple[Example, ...]
    license: str
    sha256: str


@dataclass(frozen=True)
class Split:
    """What one run annotates (``samples``) and where its demonstrations come from (``pool``)."""

    name: str  # "dev" or "test"
    pool: tuple[Example, ...]
    samples: tuple[Example, ...]


def task_path(data_dir: str | Path, spec: TaskSpec) -> Path:
    return Path(data_dir) / spec.file


def load_task(spec: TaskSpec, data_dir: str | Path) -> TaskData:
    """Read and validate one task file."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found (set data_dir=<path to the task files>)")
    path = task_path(data_dir, spec)
    if not path.is_file():
        raise DataError(f"{path}: task file not found")
    raw = path.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: top level must be a JSON object, got {type(doc).__name__}")

    definition = _definition(path, doc)
    examples = _records(path, doc, "examples", labelled=True)
    if not examples:
        raise DataError(f"{path}: field 'examples' is empty; demonstrations are needed")
    test_samples = _records(path, doc, "test_samples", labelled=False)
    seen: dict[str, str] = {}
    for field, records in (("examples", examples), ("test_samples", test_samples)):
        for index, record in enumerate(records):
            if record.id in seen:
                raise DataError(
                    f"{path}: {field}[{index}].id {record.id!r} duplicates an id already used in {seen[record.id]}"
                )
            seen[record.id] = field
    licence = doc.get("License", "")
    licence_text = "; ".join(map(str, licence)) if isinstance(licence, list) else str(licence)
    return TaskData(
        spec=spec,
        path=path,
        definition=definition,
        examples=tuple(examples),
        test_samples=tuple(test_samples),
        license=licence_text,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


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

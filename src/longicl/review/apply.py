"""Applying human decisions to a run: records, prediction files, submission.zip.

Everything is checked before anything is written: a decision for a sample the run does not have,
or an answer that is not valid for the task (outside the label set, not an integer, ...), is
refused with one line. Then, holding the run dir's lock (`RunDir.lock`), per changed sample, a new record line is appended (records are
append-only; the latest line per sample is the record): it keeps the model's answer
(``model_prediction``, ``model_correct``, and its confidence) and adds the human one (``prediction``,
``answered_by: human``, ``human``). Prediction files and ``submission.zip`` are then derived
from the records again and replaced atomically where their bytes change. A decision equal to
what the record already holds changes nothing, so importing the same file twice changes nothing
(and an import interrupted half-way is completed by running it again).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longicl.data import TaskData, load_task
from longicl.errors import DataError, UsageError, one_line
from longicl.files import atomic_write_bytes, atomic_write_json, jsonl_lines, read_jsonl
from longicl.metrics import score
from longicl.parse import parse_answer
from longicl.records import AnyRecord, SampleRecord, as_record
from longicl.review.items import Decision, data_dir, run_tasks
from longicl.run_json import read_run_summary
from longicl.rundir import RunDir, validate_predictions
from longicl.runner import write_task_outputs
from longicl.tasks import TaskSpec


@dataclass
class ApplyResult:
    changed: dict[str, list[str]] = field(default_factory=dict)  # task -> sample ids
    unchanged: int = 0
    files: list[str] = field(default_factory=list)  # files rewritten


def apply_decisions(
    run_dir: str | Path, decisions: Sequence[Decision], *, tool: str = "", source: str = ""
) -> ApplyResult:
    """Check every decision, then apply them (see the module). Two decisions for one sample (its
    task as resolved, named or found) with different answers are refused; ``source`` is the file
    they come from, for that message."""
    run_dir = Path(run_dir)
    specs = {s.name: s for s in run_tasks(run_dir)}
    rundir = RunDir(run_dir)
    records = {
        name: {sample_id: as_record(r) for sample_id, r in rundir.all_records(name).items()} for name in specs
    }
    resolved: dict[tuple[str, str], tuple[TaskSpec, Decision, str]] = {}
    for decision in decisions:  # check everything first
        spec = _task_of(decision, specs, records)
        parsed = parse_answer(spec, decision.answer)
        if not parsed.ok or (spec.is_closed and parsed.value not in (spec.labels or ())):
            allowed = f" (one of {', '.join(spec.labels or ())})" if spec.is_closed else ""
            raise UsageError(
                f"{decision.where}: {decision.answer!r} is not a valid {spec.answer_kind.value} answer "
                f"of {spec.name}{allowed}"
            )
        earlier = resolved.setdefault((spec.name, decision.sample_id), (spec, decision, parsed.value))[1]
        if earlier.answer != decision.answer:
            a, b = (d.where.removeprefix(f"{source}: ") for d in (earlier, decision))
            raise UsageError(
                f"{source or decision.where}: {a} and {b} decide sample {decision.sample_id} of {spec.name} "
                f"differently ({earlier.answer!r}, {decision.answer!r}); keep one and import again"
            )
    outputs = _read_outputs(rundir, specs)  # the files rewritten below, checked before any write
    result = ApplyResult()
    rundir.lock()  # one writer per out_dir: not while a run (or another import) writes there
    try:
        for (name, sample_id), (spec, decision, answer) in resolved.items():
            record = records[name][sample_id]
            if record.human_decided and record.prediction == answer:
                result.unchanged += 1
                continue
            updated = human_record(spec, record, answer, decision, tool)
            rundir.append_record(name, updated.to_dict())
            records[name][sample_id] = updated
            result.changed.setdefault(name, []).append(sample_id)
        result.files = _rewrite_outputs(rundir, outputs, records)
        result.files += _count_human_decisions(rundir, records)
    finally:
        rundir.close()
        rundir.unlock()
    return result


def _count_human_decisions(rundir: RunDir, records: Mapping[str, Mapping[str, SampleRecord]]) -> list[str]:
    """run.json's ``human_decided`` of each task, counted again from its latest records, so that
    run.json and the report say at once how many answers are a human's (the rest of a task's
    entry scores the model's own answers, which an import leaves as they were)."""
    try:
        summary = read_run_summary(json.loads(rundir.run_json.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return []  # no run.json (a run stopped before its end) or not one: the next run writes it
    if summary is None:
        return []
    changed = False
    for name, latest in records.items():
        entry = summary.tasks.get(name)
        count = sum(1 for record in latest.values() if record.human_decided)
        if entry is not None and entry.get("human_decided") != count:
            summary.tasks[name] = {**entry, "human_decided": count}
            changed = True
    if not changed:
        return []
    atomic_write_json(rundir.run_json, summary.to_dict())
    return [rundir.run_json.name]


def human_record(
    spec: TaskSpec, record: AnyRecord, answer: str, decision: Decision, tool: str
) -> SampleRecord:
    """A new record: ``record`` with the human's answer as its prediction, the model's answer kept."""
    typed = SampleRecord.from_dict(record if isinstance(record, Mapping) else record.to_dict())
    if not typed.human_decided:
        typed.model_prediction = typed.prediction or ""
        typed.model_correct = typed.correct
        typed.model_error = typed.error
    typed.prediction = answer
    typed.overridden_by = "human"
    typed.human = {"answer": answer, "annotator": decision.annotator, "tool": tool or None}
    typed.error = None
    typed.correct = score(spec, answer, typed.gold)
    return typed


def _task_of(
    decision: Decision, specs: dict[str, TaskSpec], records: dict[str, dict[str, SampleRecord]]
) -> TaskSpec:
    if decision.task is not None:
        spec = specs.get(decision.task)
        if spec is None or decision.sample_id not in records[decision.task]:
            raise UsageError(
                f"{decision.where}: unknown sample {decision.sample_id!r} of task {decision.task}"
            )
        return spec
    owners = [name for name in specs if decision.sample_id in records[name]]
    if len(owners) != 1:
        why = (
            "unknown sample"
            if not owners
            else f"sample in several tasks ({', '.join(owners)}); name the task:"
        )
        raise UsageError(f"{decision.where}: {why} {decision.sample_id!r}")
    return specs[owners[0]]


@dataclass
class _Outputs:
    """What `_rewrite_outputs` reads, read and checked before anything is written."""

    predictions: list[tuple[str, Path, TaskData | None, str, list[str], list[dict[str, Any]]]]
    zips: dict[Path, tuple[dict[str, bytes], dict[str, list[str]]]]  # members, their sample ids


def _read_outputs(rundir: RunDir, specs: dict[str, TaskSpec]) -> _Outputs:
    """Every prediction file's rows (each an object with its id and a string prediction) and each
    zip's members with their files' sample ids; a damaged one is one line naming file:line."""
    predictions = []
    for name, spec in specs.items():
        path = rundir.predictions_path(name)
        if not path.is_file():
            continue
        rows = list(read_jsonl(path))
        task_data = None if spec.is_challenge else load_task(spec, data_dir(rundir.path))
        id_key = task_data.id_key if task_data is not None else "test_sample_id"
        _check_rows(path, rows, id_key, raw_ids=task_data is not None)
        sample_ids = (
            _sample_ids(task_data, rows, path) if task_data is not None else [r[id_key] for r in rows]
        )
        predictions.append((name, path, task_data, id_key, sample_ids, rows))
    zips = {}
    for zip_path in (rundir.zip_path, rundir.not_an_entry_zip_path):
        if not zip_path.is_file():
            continue
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = {n: archive.read(n) for n in archive.namelist()}
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            raise DataError(f"{zip_path}: not a readable zip ({one_line(exc, 120)})") from None
        expected = {}
        for member in members:
            file = rundir.path / member
            if Path(member).name != member or not member.endswith(".jsonl") or not file.is_file():
                raise DataError(f"{zip_path}: member {member!r} is not a prediction file of this run")
            rows = list(read_jsonl(file))
            _check_rows(file, rows, "test_sample_id")
            expected[Path(member).stem] = [row["test_sample_id"] for row in rows]
        zips[zip_path] = (members, expected)
    return _Outputs(predictions, zips)


def _check_rows(path: Path, rows: Sequence[dict[str, Any]], id_key: str, *, raw_ids: bool = False) -> None:
    """Each row has a string prediction and its id: a string (a number too, a table's own id)."""
    kinds = (str, int) if raw_ids else (str,)
    for number, row in enumerate(rows, 1):
        for key, allowed in ((id_key, kinds), ("prediction", (str,))):
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, allowed):
                raise DataError(f"{path}:{number}: {key} must be a string, not {type(value).__name__}")


def _rewrite_outputs(
    rundir: RunDir, outputs: _Outputs, records: dict[str, dict[str, SampleRecord]]
) -> list[str]:
    """Prediction files from the records (in their own order), then the zip; only what changed.
    A declared task's annotated table (``<name>.csv``) is written again with its predictions."""
    written = []
    contents: dict[str, bytes] = {}
    for name, path, task_data, id_key, sample_ids, rows in outputs.predictions:
        latest = records[name]
        predictions = {
            sample_id: _prediction(latest.get(sample_id), row["prediction"])
            for sample_id, row in zip(sample_ids, rows, strict=True)
        }
        new = jsonl_lines(
            {id_key: row[id_key], "prediction": predictions[sample_id]}
            for sample_id, row in zip(sample_ids, rows, strict=True)
        ).encode("utf-8")
        contents[path.name] = new
        if new == path.read_bytes():
            continue
        if task_data is None:
            atomic_write_bytes(path, new)
        else:  # the same prediction file, and the input table with its prediction column
            write_task_outputs(rundir, task_data, sample_ids, predictions)
            if task_data.table is not None:
                written.append(rundir.table_path(name).name)
        written.append(path.name)
    for zip_path, (members, expected) in outputs.zips.items():
        if any(n in contents and contents[n] != data for n, data in members.items()):
            files = [rundir.path / n for n in members]
            validate_predictions(files, expected)
            rundir.write_zip(files, expected, zip_path)
            written.append(zip_path.name)
    return written


def _sample_ids(data: TaskData, rows: Sequence[dict[str, Any]], path: Path) -> list[str]:
    """The sample ids of a declared task's prediction rows (which carry the table's own ids)."""
    by_raw = {data.raw_id(e.id): e.id for e in (*data.examples, *data.test_samples)}
    ids = []
    for number, row in enumerate(rows, 1):
        sample_id = by_raw.get(row.get(data.id_key))
        if sample_id is None:
            raise UsageError(
                f"{path}: line {number}: {data.id_key}={row.get(data.id_key)!r} is not in {data.path}"
            )
        ids.append(sample_id)
    return ids


def _prediction(record: SampleRecord | None, current: str) -> str:
    if record is None:
        return current
    if record.error:
        return ""
    return record.prediction or ""

"""What goes out for review (`ReviewItem`) and what comes back (`Decision`), read from a run dir."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from longicl.data import load_task
from longicl.errors import UsageError
from longicl.parse import normalise
from longicl.quality.confidence import of_record
from longicl.records import AnyRecord, as_record
from longicl.run_json import RunSummary, read_run_summary
from longicl.rundir import RunDir
from longicl.tasks import AnswerKind, TaskSpec, get_task, remember_run_tasks, task_order

PROJECT_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class ReviewItem:
    spec: TaskSpec
    sample_id: str
    index: int
    text: str  # the sample's input
    prediction: str  # the model's answer ("" when it had none)
    confidence: float | None
    confidence_source: str | None
    model_version: str

    @property
    def question(self) -> str:
        """The tool's control/question name: a label choice or a free-text answer."""
        return "label" if self.spec.is_closed else "answer"


@dataclass(frozen=True)
class Decision:
    """One human answer for one sample, as read from a tool's export."""

    sample_id: str
    answer: str
    task: str | None = None  # None: find the sample among the run's tasks
    annotator: str | None = None
    where: str = ""  # position in the file, for error messages


def run_tasks(run_dir: Path) -> list[TaskSpec]:
    """The tasks a run dir holds records of: the challenge's in id order, then declared ones by
    name (known from the task files ``run.json`` names)."""
    if not (run_dir / "records").is_dir():
        raise UsageError(f"{run_dir}: not a run directory (no records/)")
    remember_run_tasks(_run_json(run_dir).tasks)
    names = sorted(
        (p.name.removesuffix(".jsonl") for p in (run_dir / "records").glob("*.jsonl")), key=task_order
    )
    specs = [_with_data_labels(get_task(name), run_dir) for name in names]
    if not specs:
        raise UsageError(f"{run_dir}: no records to review")
    return specs


def _with_data_labels(spec: TaskSpec, run_dir: Path) -> TaskSpec:
    """A declared label task without ``labels``: with the labels the run inferred from its data
    (`longicl.data.load_task`), which review forms offer and imported decisions are checked against."""
    if spec.answer_kind is not AnswerKind.LABEL or spec.labels is not None:
        return spec
    return load_task(spec, data_dir(run_dir)).spec


def run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UsageError(f"{path}: missing; is {run_dir} a run directory?")
    try:
        return dict(OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {})
    except Exception:  # omegaconf raises several types for a malformed file
        raise UsageError(f"{path}: not a readable config") from None


def data_dir(run_dir: Path) -> Path:
    """The run's data_dir (relative ones as the run read them: from here, else the project)."""
    path = Path(str(run_config(run_dir).get("data_dir", "data/openseek")))
    if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
        return PROJECT_ROOT / path
    return path


def _run_json(run_dir: Path) -> RunSummary:
    try:
        run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return RunSummary()
    return read_run_summary(run) or RunSummary()


def model_version(run_dir: Path) -> str:
    engine = _run_json(run_dir).engine or (run_config(run_dir).get("engine") or {})
    return f"longicl/{engine.get('model') or engine.get('name') or 'unknown'}"


def load_items(
    run_dir: str | Path, *, task: str | None = None, below: float | None = None
) -> list[ReviewItem]:
    """The run's answered samples (of ``task``), with confidence < ``below`` when given (samples
    without a confidence count as below any threshold), most uncertain first. Samples a human
    already answered are left out."""
    run_dir = Path(run_dir)
    specs = run_tasks(run_dir)
    if task is not None:
        wanted = get_task(task)
        if wanted.name not in {s.name for s in specs}:
            raise UsageError(f"--task {task}: {run_dir} has no records of {wanted.name}")
        specs = [wanted]
    rundir = RunDir(run_dir)
    version = model_version(run_dir)
    items: list[ReviewItem] = []
    for spec in specs:
        if not rundir.records_path(spec.name).is_file():
            continue
        inputs: dict[str, str] | None = None
        for record in rundir.latest_records(spec.name):  # one at a time: an item keeps a few fields
            if inputs is None:
                inputs = _inputs(spec, data_dir(run_dir))
            typed = as_record(record)
            if typed.human_decided or typed.vote is None:
                continue
            value, source = stored_confidence(spec, typed)
            if below is not None and value is not None and float(value) >= below:
                continue
            items.append(
                ReviewItem(
                    spec,
                    typed.sample_id,
                    int(0 if typed.index is None else typed.index),
                    inputs.get(typed.sample_id, ""),
                    str(typed.prediction or ""),
                    value,
                    source,
                    f"{version}/{typed.method_json or 'icl'}",
                )
            )
    return sorted(
        items,
        key=lambda i: (-1.0 if i.confidence is None else i.confidence, task_order(i.spec.name), i.index),
    )


def stored_confidence(spec: TaskSpec, record: AnyRecord) -> tuple[float | None, str | None]:
    """The record's confidence as written (calibrated when a map was applied); computed from its
    requests for records written before confidences were."""
    typed = as_record(record)
    stored = typed.confidence or {}
    if "confidence_source" in stored:
        value = stored.get("confidence")
        return (None if value is None else float(value)), stored.get("confidence_source")
    computed = of_record(typed, lambda answer: normalise(spec, answer))
    return computed.value, computed.source


def _inputs(spec: TaskSpec, directory: Path) -> dict[str, str]:
    data = load_task(spec, directory)
    return {ex.id: ex.input for ex in (*data.examples, *data.test_samples)}


def one_task(items: Sequence[ReviewItem], fmt: str) -> TaskSpec | None:
    """A tool project holds one task (one label set): refuse a mix."""
    names = sorted({i.spec.name for i in items}, key=task_order)
    if len(names) > 1:
        raise UsageError(
            f"--format {fmt}: one project per task; pass --task NAME (this run has {', '.join(names)})"
        )
    return items[0].spec if items else None

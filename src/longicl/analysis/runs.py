"""A run directory as the notebooks and the report see it, and what it says per task."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from longicl.analysis.configs import main_command
from longicl.analysis.engines import EngineTraits, engine_answers, engine_traits, engine_words
from longicl.analysis.paths import DATA_DIR, PROJECT_ROOT, project_path
from longicl.analysis.stats import rounded
from longicl.analysis.tables import COUNT, NUMBER, TEXT, frame
from longicl.data import Example, load_task
from longicl.errors import DataError
from longicl.records import SampleRecord, summary_record
from longicl.run_json import RunSummary, read_run_summary
from longicl.rundir import RunDir
from longicl.tasks import TaskSpec, get_task, remember_run_tasks

#: How an answer was made, in words (see `task_method`).
METHOD_DESCRIPTIONS = {
    "icl": "in-context learning (the language model answers)",
    "program": "exact program (no model)",
    "classifier": "text classifier trained on the examples (CPU side model)",
    "retrieval": "answer of the BM25-nearest labelled example (no model)",
    "none": "no answer (dry run)",
}

#: Model kinds of an engine that does not read prompts (run.json ``engine.models``) -> the method
#: they amount to.
_MODEL_KINDS = {
    "program": "program",
    "nearest": "retrieval",
    "tfidf": "classifier",
    "token_count": "classifier",
    "pair_genre": "classifier",
}

#: Those model kinds in words (others are classifiers).
_MODEL_WORDS = {"program": "exact program `{program}`", "nearest": "BM25 nearest-example retrieval"}


#: what the error pages read of a record's last request besides what `summary_record` keeps of
#: every request: the reply (shown, and its length), the per-sample demonstrations (neighbours)
REPORTED_LAST_REQUEST_FIELDS = frozenset({"raw_response", "dynamic_demo_ids"})


def report_record(line: dict[str, Any]) -> SampleRecord:
    """A record line, typed, as the report and the notebooks read it: its `summary_record` (the
    requests without replies, reasoning, usage, timing: most of a record's size), but the last
    request's reply and demonstrations, which the error pages show. ``records/<task>.jsonl``
    keeps them all."""
    record = SampleRecord.from_dict(summary_record(line, keep_last=REPORTED_LAST_REQUEST_FIELDS))
    last = record.requests[-1] if record.requests else None  # a new dict (summary_record's)
    ids = last.get("dynamic_demo_ids") if isinstance(last, dict) else None
    if isinstance(ids, list):  # the pool's ids, repeated in every record: one string each
        last["dynamic_demo_ids"] = [sys.intern(i) if isinstance(i, str) else i for i in ids]
    return record


@dataclass
class RunData:
    """One run directory as the notebooks and the report see it."""

    path: Path
    summary: dict[str, Any]  # run.json as read (`run_summary`: typed)
    records: dict[str, list[SampleRecord]]  # task name -> its `report_record`s in sample order
    static: dict[str, dict[str, Any]]

    @cached_property
    def run_summary(self) -> RunSummary:
        """``summary`` (run.json), typed."""
        return RunSummary.from_dict(self.summary)

    @property
    def engine(self) -> str:
        return str(self.run_summary.engine_name or self.config.get("engine", {}).get("name"))

    @property
    def answers(self) -> bool:
        return engine_answers(self.engine)

    @property
    def split(self) -> str:
        return str(self.run_summary.split or self.config.get("split"))

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.run_summary.config or {})

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        return dict(self.run_summary.tasks)

    @property
    def thinking(self) -> bool:
        return bool((self.config.get("method") or {}).get("enable_thinking", False))

    @property
    def traits(self) -> EngineTraits:
        return engine_traits(self.engine)

    @property
    def language_model(self) -> bool:
        """Whether a language model that read the prompts answered."""
        return self.traits.language_model

    @property
    def model(self) -> str:
        """The language model that answered, in words."""
        if self.language_model:
            engine = self.run_summary.engine or {}
            return str(engine.get("model") or self.config.get("engine", {}).get("model") or "?")
        return engine_words(self.engine).model or f"none ({self.engine})"

    @property
    def label(self) -> str:
        """A short name: engine, split and directory."""
        return f"{engine_words(self.engine).label.format(model=self.model)}, {self.split}: {self.name}"

    @property
    def system(self) -> str:
        """The run's row name in a comparison with other systems."""
        return f"{engine_words(self.engine).system.format(model=self.model)}: `{self.name}`"

    def meets_floor(self, name: str) -> bool:
        """Whether every request of task ``name`` carried at least the rule's minimum."""
        minimum = ((self.tasks.get(name) or {}).get("icl_tokens") or {}).get("min")
        return minimum is not None and minimum >= self.icl_floor(name)

    def icl_floor(self, name: str) -> int:
        """The rule's minimum of demonstration tokens for task ``name``, as the run recorded it."""
        recorded = (self.tasks.get(name) or {}).get("min_icl_tokens_rule")
        return int(recorded) if recorded is not None else get_task(name).min_icl_tokens

    @property
    def name(self) -> str:
        """The run directory, relative to the project root when inside it, else its last two parts:
        an absolute path keeps its leading ``/`` (``/tmp/x``) or, shortened, says so (``…/a/b``)."""
        try:
            return self.path.resolve().relative_to(PROJECT_ROOT).as_posix()
        except ValueError:
            tail = "/".join(self.path.parts[-2:])
            if not self.path.is_absolute():
                return tail
            return self.path.as_posix() if len(self.path.parts) <= 3 else f"…/{tail}"

    def data_dir(self) -> Path:
        configured = self.config.get("data_dir") or "data/openseek"
        path = Path(str(configured))
        if path.is_absolute() or path.exists():
            return path
        return project_path(path)


def load_run(path: str | Path) -> RunData:
    """Read ``run.json``, the per-sample records and the static blocks of a run directory."""
    path = project_path(path)
    run_json = path / "run.json"
    if not run_json.is_file():
        raise FileNotFoundError(
            f"{path}: no run.json (not a finished run directory; make one with "
            "`python main.py out_dir=<dir> …`, e.g. `make demo` for outputs/demo)"
        )
    try:
        summary = json.loads(run_json.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        summary = None
    typed = read_run_summary(summary)
    if typed is None:
        raise DataError(f"{run_json}: not a run summary (a JSON object with tasks); written by main.py")
    remember_run_tasks(typed.tasks)  # declared tasks: get_task(name) finds them
    rundir = RunDir(path)
    records, static = {}, {}
    for name in typed.tasks:
        rows = {r.sample_id: r for r in map(report_record, rundir.latest_records(name))}.values()
        records[name] = sorted(rows, key=lambda r: 0 if r.index is None else r.index)
        static_path = path / "records" / f"{name}.static.json"
        if static_path.is_file():
            static[name] = json.loads(static_path.read_text(encoding="utf-8"))
    return RunData(path, summary, records, static)


def classical_model(run: RunData, name: str) -> dict[str, Any]:
    """The classical engine's model settings for task ``name`` ({} for other engines)."""
    models = (run.run_summary.engine or {}).get("models") or {}
    entry = models.get(name) or models.get(str(get_task(name).id)) or {}
    return dict(entry.get("settings") or entry) if isinstance(entry, Mapping) else {}


def task_method(run: RunData, name: str) -> str:
    """How task ``name``'s answers were made: ``icl``, ``icl+program``, ``program``, ``classifier``,
    ``retrieval`` or ``none``. An engine that answers without reading the prompt is judged by the
    per-task model its run.json entry describes (whatever the method settings say), an engine
    that answers nothing by that, a language model by the task's ``method`` in run.json."""
    if not run.answers:
        return "none"
    if not run.language_model:
        kind = str(classical_model(run, name).get("kind") or "")
        return _MODEL_KINDS.get(kind, kind or run.engine)
    return str((run.tasks.get(name) or {}).get("method") or "icl")


def _model_in_words(model: Mapping[str, Any]) -> str:
    kind = str(model.get("kind") or "classical")
    if kind in _MODEL_WORDS:
        return _MODEL_WORDS[kind].format(**{**model, "program": model.get("program") or "?"})
    detail = model.get("classifier")
    return f"{kind} classifier" + (f" ({detail})" if detail else "")


def side_models(run: RunData, name: str) -> str:
    """Programs or models other than the language model that shaped task ``name``'s answers."""
    if not run.answers:
        return "none"
    if not run.language_model:
        return _model_in_words(classical_model(run, name)) + " answers every sample"
    task = run.tasks.get(name) or {}
    used = list(task.get("side_models") or [])
    return ", ".join(used) if used else "none"


def task_thinking(run: RunData, name: str) -> bool:
    """Whether Qwen3 thinking was on for task ``name`` (per-task settings win)."""
    settings = (run.tasks.get(name) or {}).get("method_settings") or {}
    if settings.get("enable_thinking") is not None:
        return bool(settings["enable_thinking"])
    return run.thinking


#: Columns of `method_rows` and their dtypes.
METHOD_COLUMNS = {
    "task": TEXT,
    "answers by": TEXT,
    "thinking": TEXT,
    "constrained decoding": TEXT,
    "max tokens": COUNT,
    "self-consistency": COUNT,
    "label log-probs": COUNT,
    "calibration": TEXT,
}


def method_rows(run: RunData) -> pd.DataFrame:
    """Per task: how requests were decoded and combined (from run.json ``method_settings``)."""
    rows = []
    for name, task in run.tasks.items():
        settings = task.get("method_settings") or {}
        constraint = settings.get("structured_outputs")
        rows.append(
            {
                "task": name,
                "answers by": task_method(run, name),
                "thinking": "on" if task_thinking(run, name) else "off",
                "constrained decoding": ", ".join(constraint) if isinstance(constraint, Mapping) else "none",
                "max tokens": settings.get("max_tokens"),
                "self-consistency": settings.get("self_consistency"),
                "label log-probs": settings.get("logprobs"),
                "calibration": settings.get("calibration") or "none",
            }
        )
    return frame(rows, METHOD_COLUMNS)


def _spread(task: Mapping[str, Any], key: str, stat: str) -> float | None:
    value = (task.get(key) or {}).get(stat)
    return None if value is None else value


def task_spec(name: str) -> TaskSpec:
    return get_task(name)


#: Columns of `task_rows` and their dtypes.
TASK_COLUMNS = {
    "task": TEXT,
    "title": TEXT,
    "n": COUNT,
    "accuracy": NUMBER,
    "parse failures": COUNT,
    "failed requests": COUNT,
    "prompt tokens (median)": COUNT,
    "uncached prefill (median)": COUNT,
    "ICL tokens (min)": COUNT,
    "seconds": NUMBER,
    "method": TEXT,
}


def task_rows(run: RunData) -> pd.DataFrame:
    """One row per task of a run: the numbers of the report's per-task table."""
    rows = []
    for name, task in run.tasks.items():
        spec = task_spec(name)
        rows.append(
            {
                "task": name,
                "title": spec.title,
                "n": task.get("n"),
                "accuracy": task.get("accuracy"),
                "parse failures": task.get("parse_failures"),
                "failed requests": task.get("failed_requests"),
                "prompt tokens (median)": rounded(_spread(task, "prompt_tokens", "median")),
                "uncached prefill (median)": rounded(_spread(task, "uncached_prompt_tokens", "median")),
                "ICL tokens (min)": _spread(task, "icl_tokens", "min"),
                "seconds": task.get("seconds"),
                "method": task_method(run, name),
            }
        )
    return frame(rows, TASK_COLUMNS)


def examples_by_id(task: str | int, data_dir: str | Path | None = None) -> dict[str, Example]:
    """Every labelled example and test sample of a task, by id."""
    spec = get_task(task)
    data = load_task(spec, project_path(data_dir) if data_dir else DATA_DIR)
    return {ex.id: ex for ex in (*data.examples, *data.test_samples)}


def run_summary(run: RunData) -> str:
    """Markdown: what a run is (engine, model, split, sizes) and how to reproduce it."""
    accuracies = [t["accuracy"] for t in run.tasks.values() if t.get("accuracy") is not None]
    samples = sum(int(t.get("n") or 0) for t in run.tasks.values())
    command, verified = main_command(run.config, run.run_summary.command)
    lines = [
        f"**{run.label}**: engine `{run.engine}`, model: {run.model}, split `{run.split}`, "
        f"{len(run.tasks)} tasks, {samples:,} samples, thinking {'on' if run.thinking else 'off'}.",
        "",
        f"Mean accuracy over scored tasks: {sum(accuracies) / len(accuracies):.3f}."
        if accuracies
        else "No accuracy (no answers, or a test split).",
        "",
        f"Reproduce{'' if verified else ' (approximately)'}: `{command}`",
    ]
    return "\n".join(lines)

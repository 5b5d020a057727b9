"""The typed view of a run's ``run.json``: what `longicl.run_summary.finish` writes and every
reader (the report, the notebooks, review, sweep, the command line) reads back through
`RunSummary.from_dict` / `read_run_summary`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunSummary:
    """The typed view of a run's ``run.json`` (written by `longicl.run_summary.finish`), for its
    readers: `from_dict` is tolerant (a missing key is None, an unknown one kept in `extra`) and
    ``to_dict()`` gives the JSON it read back, keys in the same order. A task's entry stays a
    mapping (its fields grow with the metrics; `task` reads one)."""

    created: str | None = None  # ISO time, UTC
    command: list[str] | None = None  # sys.argv, secrets redacted
    git: dict[str, Any] | None = None  # commit, dirty
    environment: dict[str, Any] | None = None  # python, platform, packages
    config: dict[str, Any] | None = None  # the composed config, secrets redacted
    engine: dict[str, Any] | None = None  # the engine's describe(), secrets redacted
    split: str | None = None
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task name -> its entry
    mean_accuracy: float | None = None  # dev runs
    uncached_prompt_tokens_median: float | None = None
    missing_predictions: int | None = None
    unanswered: int | None = None
    compliant: bool | None = None
    submission: str | None = None  # the zip's file name (None: none written)
    submission_refused: str | None = None  # why not (written only then)
    extra: dict[str, Any] = field(default_factory=dict)
    source_keys: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        names = _RUN_SUMMARY_FIELDS
        tasks = data.get("tasks")
        return cls(
            **{k: v for k, v in data.items() if k in names and k != "tasks"},
            tasks=dict(tasks) if isinstance(tasks, Mapping) else {},
            extra={k: v for k, v in data.items() if k not in names},
            source_keys=tuple(data),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in _RUN_SUMMARY_FIELDS}
        if self.submission_refused is None:
            del out["submission_refused"]
        out.update(self.extra)
        if self.source_keys is None:
            return out
        return {key: out.get(key, getattr(self, key, None)) for key in self.source_keys}

    def task(self, name: str) -> Mapping[str, Any]:
        """Task ``name``'s entry ({} when the run has none)."""
        entry = self.tasks.get(name)
        return entry if isinstance(entry, Mapping) else {}

    @property
    def engine_name(self) -> str | None:
        return self.engine.get("name") if isinstance(self.engine, Mapping) else None


_RUN_SUMMARY_FIELDS = (
    "created",
    "command",
    "git",
    "environment",
    "config",
    "engine",
    "split",
    "tasks",
    "mean_accuracy",
    "uncached_prompt_tokens_median",
    "missing_predictions",
    "unanswered",
    "compliant",
    "submission",
    "submission_refused",
)


def read_run_summary(data: Any) -> RunSummary | None:
    """run.json as parsed, typed; None when it is not a run summary: a JSON object whose
    ``tasks`` (each task's entry), ``config`` and ``engine``, where present, are objects."""
    if not isinstance(data, Mapping):
        return None
    summary = RunSummary.from_dict(data)
    parts = (data.get("tasks"), summary.config, summary.engine, *summary.tasks.values())
    if not all(part is None or isinstance(part, Mapping) for part in parts):
        return None
    return summary


def as_run_summary(summary: RunSummary | Mapping[str, Any]) -> RunSummary:
    """``summary`` typed (itself when it already is): run.json as read, or a run's result."""
    return summary if isinstance(summary, RunSummary) else RunSummary.from_dict(summary)

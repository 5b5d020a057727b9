"""One run, from a resolved config to prediction files, records, metrics and a submission.

Order matters for the "nothing written half-way" promise: every setting, every task file and
every task's static block are checked, and the engine is started, before the first byte is
written to ``out_dir``.

Tasks run in lanes: one lane per server (an engine without servers has one lane). A lane runs
its tasks one after another, so its server's prefix cache holds one task's static block at a
time; lanes run side by side. Within a task, ``engine.concurrency`` workers keep requests in
flight, and every finished sample is appended to the records at once (resume reads them back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from longicl.annotators import annotator_for
from longicl.annotators.base import unanswered
from longicl.credentials import redact
from longicl.data import PREDICTION_COLUMN, Example, TaskData
from longicl.engines import Engine, build_engine
from longicl.engines.servers import NoServerLeft, ServerPool
from longicl.errors import UsageError, one_line
from longicl.files import atomic_write_json, atomic_write_text
from longicl.metrics import score
from longicl.prompt import PromptPlan
from longicl.records import MethodLabel, SampleRecord, summary_record
from longicl.run_settings import (
    RunSettings,
    TaskRun,
    check_apart_from_data,
    check_floor,
    compliance_problems,
    prepare_tasks,
    settings_from_config,
)
from longicl.run_summary import RunResult, TaskTallies, TaskTotals, finish, static_tokens
from longicl.rundir import RunDir
from longicl.serve import ServerHandle, ensure_server
from longicl.tasks import TaskSpec
from longicl.tokens import TokenCounter

# settings and pre-run checks live in run_settings, run.json in run_summary; their names stay importable here
__all__ = [
    "RunResult",
    "RunSettings",
    "TaskRun",
    "check_apart_from_data",
    "check_floor",
    "compliance_problems",
    "end_of_task",
    "failed_record",
    "prepare_tasks",
    "run",
    "run_task",
    "settings_from_config",
    "token_counter",
    "write_task_outputs",
]


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------


def run(cfg: DictConfig | Mapping[str, Any]) -> RunResult:
    settings = settings_from_config(cfg)
    engine = build_engine(settings.engine)  # validates engine settings before any heavy work
    rundir = RunDir(settings.out_dir)
    rundir.check_owned()  # a new or empty folder, or a run directory; nothing else, before any write
    check_apart_from_data(settings, rundir)
    rundir.check_writable()
    rundir.lock()  # one writer per out_dir; a busy one stops here, before anything is written
    server: ServerHandle | None = None  # what serve.autostart started, stopped below
    try:
        engine.launch()  # engine=local starts its own server here (token counts may need it); stopped below
        try:
            if settings.tokenizer == "server":  # counting needs the server: start it first
                server = _autostart(settings)
            counter = token_counter(settings, engine)
            task_runs = prepare_tasks(settings, counter)
            fingerprints = {t.spec.name: t.fingerprint for t in task_runs}
            rundir.check_resumable(fingerprints, settings.overwrite)
            server = server or _autostart(settings)  # else only now, once the tasks are known to be fine
            return asyncio.run(_run(settings, task_runs, engine, rundir, fingerprints))
        finally:
            if server is not None:
                server.stop()
            engine.shutdown()
    finally:
        rundir.unlock()


def _autostart(settings: RunSettings) -> ServerHandle | None:
    """serve.autostart=true: start a local vLLM when nothing answers (GPU boxes only); None if not."""
    return ensure_server(settings.config) if settings.engine.name == "openai" else None


def token_counter(settings: RunSettings, engine: Engine) -> TokenCounter:
    """Qwen's counts (``model.tokenizer=qwen``), or the served model's (``server``: its first server)."""
    if settings.tokenizer == "qwen":
        return TokenCounter(settings.tokenizer_path)
    served = engine.served_tokenizer()
    if served is None:
        raise UsageError(f"model.tokenizer=server needs a served model: engine={engine.name} has none")
    return TokenCounter(served=served)


async def _run(
    settings: RunSettings,
    task_runs: Sequence[TaskRun],
    engine: Engine,
    rundir: RunDir,
    fingerprints: dict[str, dict],
) -> RunResult:
    totals: dict[str, TaskTotals] = {}

    async def lane(runs: list[TaskRun]) -> None:
        for task_run in runs:
            totals[task_run.spec.name] = await run_task(task_run, engine, rundir, settings)

    try:
        await engine.start()
        rundir.prepare(fingerprints, settings.overwrite)
        atomic_write_text(
            rundir.path / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(redact(settings.config)))
        )
        await _together([lane(runs) for runs in _lanes(engine, task_runs, rundir)])
    finally:
        await engine.aclose()
        rundir.close()
    return finish(settings, task_runs, engine, rundir, totals)


def _lanes(engine: Engine, task_runs: Sequence[TaskRun], rundir: RunDir) -> list[list[TaskRun]]:
    """Tasks grouped by server, each group in task order; one group if the engine has no servers."""
    pool: ServerPool | None = getattr(engine, "pool", None)
    if pool is None:
        return [list(task_runs)]
    by_name = {t.spec.name: t for t in task_runs}
    work: dict[str, float] = {}  # expected work: prompt tokens still to send
    for t in task_runs:
        wanted = {s.id for s in t.samples}
        done = len(wanted & rundir.finished_ids(t.spec.name))
        work[t.spec.name] = float((len(t.samples) - done) * t.prompt_tokens)
    return [[by_name[name] for name in names] for names in pool.assign(work)]


async def _together(coroutines: Sequence[Any]) -> None:
    """Run side by side; the first error cancels the others (and is raised once they are done)."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_task(task_run: TaskRun, engine: Engine, rundir: RunDir, settings: RunSettings) -> TaskTotals:
    spec, samples = task_run.spec, task_run.samples
    started = time.monotonic()
    await engine.prepare(spec, task_run.split.pool)
    logger = DryRunLog(rundir, spec.name) if not engine.answers else None
    annotator = annotator_for(spec).for_run(
        spec, task_run.builder, engine, settings.method, request_logger=logger, config=settings.config
    )
    _write_static_blocks(rundir, task_run, annotator.settings.self_consistency)
    wanted = {s.id for s in samples}
    finished = rundir.finished_ids(spec.name) & wanted
    todo = [(i, s) for i, s in enumerate(samples) if s.id not in finished]
    bar = tqdm(
        total=len(samples),
        initial=len(samples) - len(todo),
        desc=f"{spec.name} ({settings.split})",
        unit="req",
        disable=not settings.progress,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    tally = {"done": 0, "correct": 0, "failed": 0}
    pending = iter(todo)
    if todo and engine.answers and engine.reads_prompts:  # a model reads the prompts: say why 0% lasts
        bar.set_postfix_str(f"prefilling the shared block ({static_tokens(task_run):,} tokens)", refresh=True)

    async def worker() -> None:
        for index, sample in pending:
            try:
                record = await annotator.annotate(sample, index)
            except (UsageError, NoServerLeft):
                raise  # a setting or every server: the run stops (cli.execute says why)
            except Exception as exc:  # noqa: BLE001 - one sample's bug or bad reply never stops a run
                rundir.log_failure(f"{spec.name} sample {sample.id} (index {index})", exc)
                record = failed_record(spec, sample, index, exc, annotator.settings.method_label(spec))
            typed = SampleRecord.from_dict(record)
            typed.compliant = not compliance_problems(settings, spec, engine, typed.method.pure_icl)
            why = unanswered(typed) if engine.answers else None
            if why is not None:  # asked again on resume (rundir.is_complete); not a parse failure
                typed.unanswered = why
            record = typed.to_dict()
            rundir.append_record(spec.name, record)
            tally["done"] += 1
            tally["correct"] += int(bool(typed.correct))
            tally["failed"] += int(bool(typed.error))
            if typed.correct is not None:
                bar.set_postfix(
                    acc=f"{tally['correct'] / tally['done']:.3f}", failed=tally["failed"], refresh=False
                )
            elif tally["done"] == 1:
                bar.set_postfix_str("", refresh=False)  # the shared block is prefilled by now
            bar.update(1)

    try:
        await _together([worker() for _ in range(max(1, min(engine.concurrency, len(todo))))])
    finally:
        bar.close()
        await annotator.aclose()
        if logger is not None:
            logger.close()
    return end_of_task(task_run, rundir, settings, engine, started)


def end_of_task(
    task_run: TaskRun, rundir: RunDir, settings: RunSettings, engine: Engine, started: float
) -> TaskTotals:
    """One pass over the task's latest records, each read once (`RunDir.record_index`, then a
    seek per record) and typed once (`SampleRecord`, without what no summary reads:
    `summary_record`): the run's samples in sample order, each one's prediction written to the
    outputs as it comes (input order) and the record handed to every summary (`TaskTallies`);
    then the task's other records (an earlier invocation's samples), for the summaries that
    cover them. What stays in memory is O(samples) small things: the offset index, the task's own
    samples (already loaded), a declared table's prediction column; plus what the summaries keep."""
    spec, samples = task_run.spec, task_run.samples
    index = rundir.record_index(spec.name)
    tallies = TaskTallies(task_run, settings, rundir.path)
    records = rundir.records_at(spec.name, (index[s.id] for s in samples if s.id in index))
    with _outputs(rundir, task_run.data, enabled=engine.answers) as write:
        for sample in samples:
            typed = _typed(next(records)) if sample.id in index else None
            if typed is not None:
                tallies.add(typed, own=True)
            write(sample.id, _prediction(typed))
    records.close()
    own = {s.id for s in samples}
    for record in rundir.records_at(spec.name, (o for i, o in index.items() if i not in own)):
        tallies.add(_typed(record), own=False)
    return tallies.result(time.monotonic() - started)


def _typed(record: dict[str, Any]) -> SampleRecord:
    return SampleRecord.from_dict(summary_record(record))


@contextlib.contextmanager
def _outputs(rundir: RunDir, data: TaskData, *, enabled: bool) -> Iterator[Callable[[str, str], None]]:
    """``write(sample_id, prediction)``, called in input order: ``<name>.jsonl`` written line by
    line (whole when the block ends), and a table's prediction column (`write_task_outputs`).
    Nothing is written when not ``enabled`` (a dry run)."""
    if not enabled:
        yield lambda sample_id, prediction: None
        return
    name = data.spec.name
    column = [""] * len(data.table.frame) if data.table is not None else None
    with rundir.predictions_writer(name, id_key=data.id_key) as line:

        def write(sample_id: str, prediction: str) -> None:
            line(data.raw_id(sample_id), prediction)
            if column is not None:
                column[data.table.positions[sample_id]] = prediction

        yield write
    if column is not None:
        rundir.write_annotated_table(name, data.table.frame, column, PREDICTION_COLUMN)


def write_task_outputs(
    rundir: RunDir, data: TaskData, sample_ids: Sequence[str], predictions: Mapping[str, str]
) -> None:
    """``<name>.jsonl`` (id under the data's id key, prediction; in input order) and, for tables,
    ``<name>.csv``: the input table with a prediction column (empty for rows not annotated)."""
    with _outputs(rundir, data, enabled=True) as write:
        for sample_id in sample_ids:
            write(sample_id, predictions[sample_id])


def failed_record(
    spec: TaskSpec, sample: Example, index: int, exc: Exception, method: MethodLabel
) -> dict[str, Any]:
    """The record of a sample whose annotation raised: no prediction, the error named; like a
    failed request, it counts as missing (exit 1) and is redone when the run is resumed."""
    return SampleRecord(
        task=spec.name,
        sample_id=sample.id,
        index=index,
        prediction="",
        parsed_ok=False,
        parse_error=None,
        gold=sample.output,
        correct=score(spec, "", sample.output),
        method=method,
        error=f"{type(exc).__name__}: {one_line(exc, 500)} (traceback in logs/run.log)",
        requests=[],
        vote=None,
        has_decision=False,  # nothing was decided
    ).to_dict()


def _prediction(record: SampleRecord | None) -> str:
    if record is None or record.error:
        return ""
    return record.prediction or ""


def _write_static_blocks(rundir: RunDir, task_run: TaskRun, variants: int = 1) -> None:
    blocks = [task_run.builder.static_block(v) for v in range(variants)]  # one per self-consistency variant
    atomic_write_json(
        rundir.path / "records" / f"{task_run.spec.name}.static.json",
        {
            "variants": {
                str(b.variant): {
                    "sha256": b.sha256,
                    "tokens": b.tokens,
                    "demo_tokens": b.demo_tokens,
                    "demo_ids": list(b.demo_ids),
                }
                for b in blocks
            }
        },
    )


class DryRunLog:
    """Writes every request body of a dry run; static blocks are stored once and referenced."""

    def __init__(self, rundir: RunDir, task: str) -> None:
        self.rundir = rundir
        self.path = rundir.path / "requests" / f"{task}.jsonl"
        # Appended: a resumed dry run adds the bodies of the samples it redoes (overwrite=true clears).
        self.handle = rundir.open_own_append(self.path)
        self.static_written: set[str] = set()

    def __call__(self, request, plan: PromptPlan) -> None:
        sha = plan.static.sha256
        if sha not in self.static_written:
            self.rundir.write_text_once(f"requests/static/{sha}.txt", plan.static.text)
            self.static_written.add(sha)
        body = {
            "sample_id": plan.sample.id,
            "variant": plan.static.variant,
            "prompt_tokens": plan.prompt_tokens,
            "icl_tokens": plan.icl_tokens,
            "static_tokens": plan.shared_prefix_tokens,
            "uncached_tokens": plan.uncached_tokens,
            "demo_ids": {"static_block": sha, "dynamic": list(plan.dynamic_ids)},
            "body": {
                "messages": [
                    {"role": "system", "content": plan.system_text},
                    {
                        "role": "user",
                        "content": {"static_block": sha, "then": plan.dynamic_text + plan.query_text},
                    },
                ],
                "max_tokens": request.max_tokens,
                **({"logprobs": True, "top_logprobs": request.logprobs} if request.logprobs else {}),
                **request.sampling,
                **request.extra_body,
            },
        }
        self.handle.write(json.dumps(body, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.handle.close()

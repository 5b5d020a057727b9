"""Configurations: hydra overrides of a run, running one in process, and the ``python main.py``
command that reproduces a recorded config."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from longicl.analysis.engines import engine_answers, resolve_engine
from longicl.analysis.paths import CONF_DIR, project_path
from longicl.config_values import plain
from longicl.credentials import redact, redact_command, shell_override
from longicl.tasks import TASKS, resolve_tasks

#: Hydra config groups, in the order `main_command` writes them.
CONFIG_GROUPS = ("engine", "selection", "prompt", "method")

_MISSING = object()


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
    if base_url and _takes_base_url(engine):
        overrides.append(f"engine.base_url={base_url}")
    if limit is not None:
        overrides.append(f"limit={int(limit)}")
    if out_dir is not None:
        overrides.append(f"out_dir={project_path(out_dir)}")
    return [*overrides, *extra]


def _takes_base_url(engine: str) -> bool:
    """Whether ``conf/engine/<engine>.yaml`` has a ``base_url`` setting (a served model)."""
    path = CONF_DIR / "engine" / f"{engine}.yaml"
    return path.is_file() and "base_url" in (yaml.safe_load(path.read_text(encoding="utf-8")) or {})


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
        overwrite = not engine_answers(cfg.engine.name)  # nothing worth resuming
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

    config = redact(config)  # the key is read from the reader's environment: engine.api_key=$OPENAI_API_KEY
    overrides = config_overrides(config)
    command = " ".join(["python", "main.py", *(shell_override(o) for o in overrides)])
    try:
        composed = _flatten(plain(OmegaConf.to_container(compose(overrides), resolve=True)))
        verified = all(composed.get(k, _MISSING) == v for k, v in _flatten(plain(config)).items())
    except Exception:  # noqa: BLE001 - any composition failure means "not verified"
        verified = False
    if not verified and recorded and Path(recorded.split()[0]).name == "main.py":
        return "python " + redact_command(recorded), False
    return command, verified


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

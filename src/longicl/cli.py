"""The command line's edges: composing the config, running, and turning user errors into one line."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from longicl.credentials import withhold_api_key, withhold_url_credentials
from longicl.errors import ExitCode, UsageError, one_line, run_command
from longicl.run_json import RunSummary, as_run_summary

EXIT_MISSING = ExitCode.FAILED  # the run finished, but some samples have no prediction (failed requests)
EXIT_NO_SERVER = ExitCode.NOT_ANSWERING  # every server stopped answering mid-run; finished samples are kept
RESUME_HINT = "finished samples are kept; run the same command again to resume"


def compose_config(conf_dir: Path, overrides: list[str]) -> DictConfig:
    """Compose ``conf/config.yaml`` with command-line overrides, as ``@hydra.main`` would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except Exception as exc:  # noqa: BLE001 - hydra's many types; the known ones get a plainer line
        explained = explain_override_error(str(exc), conf_dir, overrides)
        if explained is None:
            raise
        raise UsageError(explained) from exc
    OmegaConf.resolve(cfg)
    return cfg


SETTINGS_HELP = 'README.md, "Running", lists the settings; python main.py --cfg job prints them all'


def group_options(conf_dir: Path) -> dict[str, list[str]]:
    """The config groups under ``conf_dir`` and their options (``engine`` -> classical, dryrun, …)."""
    return {
        group.name: sorted(p.stem for p in group.glob("*.yaml"))
        for group in sorted(conf_dir.iterdir())
        if group.is_dir()
    }


def known_keys(conf_dir: Path) -> list[str]:
    """Every dotted key of the default config, and every group name."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name="config"), resolve=False)
    keys: list[str] = []

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                dotted = f"{prefix}{key}"
                keys.append(dotted)
                walk(value, dotted + ".")

    walk(cfg, "")
    return sorted(set(keys) | set(group_options(conf_dir)))


#: the settings ``--help`` shows first, in this order (every other key: ``--cfg job``)
HELP_KEYS = (
    "task",
    "split",
    "limit",
    "dev_size",
    "engine",
    "engine.base_url",
    "engine.model",
    "selection",
    "method",
    "min_icl_tokens",
    "max_prompt_tokens",
    "out_dir",
    "overwrite",
    "not_an_entry_zip",
)


def main_help(conf_dir: Path, usage: str) -> str:
    """``--help``: the usage, the main settings with their defaults (from conf/), every group's
    options, and where the rest is explained."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose(config_name="config")
    groups = group_options(conf_dir)
    raw = OmegaConf.to_container(cfg, resolve=False)  # out_dir: outputs/${split}, as written
    rows = []
    for key in HELP_KEYS:
        value = _raw(raw, key)
        if not (isinstance(value, str) and "${" in value):
            value = OmegaConf.select(cfg, key)
        if key in groups:
            value = f"{OmegaConf.select(cfg, key + '.name') or ''}".strip() or "default"
            value = f"{value}   (one of: {', '.join(groups[key])})"
        rows.append((key, "null" if value is None else str(value)))
    width = max(len(k) for k, _ in rows)
    lines = [usage.strip(), "", "settings (key=value; defaults from conf/):"]
    lines += [f"  {key.ljust(width)}  {value}" for key, value in rows]
    lines += [
        "",
        'Every setting and its meaning: README.md, "Running". python main.py --cfg job prints the whole',
        'composed config; -m runs a hydra sweep (docs/methods.md, "Sweeps"); --hydra-help: hydra\'s own flags.',
    ]
    return "\n".join(lines)


def _raw(node: object, key: str) -> object:
    """The value of dotted ``key`` in a plain container, as written (None: not there)."""
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _did_you_mean(word: str, candidates: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _group_settings(conf_dir: Path, group: str, overrides: Sequence[str]) -> tuple[str, list[str]] | None:
    """The option of config group ``group`` the overrides choose (or the default) and its own
    keys (``engine.timeout``, not the keys below them); None when ``group`` is not a group or that option does not compose."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if group not in group_options(conf_dir):
        return None
    choices = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in group_options(conf_dir)]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            node = OmegaConf.select(compose(config_name="config", overrides=choices), group)
    except Exception:  # noqa: BLE001 - the group's own error is explained elsewhere
        return None
    if not isinstance(node, DictConfig):
        return None
    return str(node.get("name") or "default"), [f"{group}.{key}" for key in node]


def explain_override_error(message: str, conf_dir: Path, overrides: Sequence[str] = ()) -> str | None:
    """A plainer line for hydra's errors about a setting name or a group option (None: not one).

    A key under a config group (``engine.timeout``) is explained against the option chosen
    (``engine=dryrun`` has no ``timeout``): its own settings, never a suggestion of the key itself."""
    import re

    if found := re.search(r"Could not override '([^']+)'", message):
        key = found.group(1)
        group = key.split(".", 1)[0]
        chosen = _group_settings(conf_dir, group, overrides) if "." in key else None
        if chosen is not None:
            option, own = chosen
            # a key of another option (engine.timeout of engine=openai) is spelled right
            hint = "" if key in known_keys(conf_dir) else _did_you_mean(key, own)
            listed = ", ".join(own[:8]) + (f", … {len(own) - 8} more: --cfg job" if len(own) > 8 else "")
            return f"{key} is not a setting of {group}={option}{hint} (its settings: {listed})"
        hint = _did_you_mean(key, [k for k in known_keys(conf_dir) if k != key])
        if hint:
            return f"{key} is not a setting{hint} ({SETTINGS_HELP})"
        return f"{key} is not a setting ({SETTINGS_HELP}; a new key is added with +{key}=…)"
    if found := re.search(r"Could not (?:find|load) '([^'/]+)/([^']+)'", message):
        group, name = found.groups()
        if group == "method" and name == "best":
            return (
                "method=best needs a sweep selected first: python -m longicl.sweep select <run dirs…> "
                '-o conf/method/best.yaml writes it (docs/methods.md, "Sweeps")'
            )
        options = group_options(conf_dir).get(group, [])
        return f"{group}={name} is not one of: {', '.join(options)}{_did_you_mean(name, options)}"
    return None


def user_error_exit(exc: BaseException) -> int:
    """A user mistake caught outside `run_command` (e.g. hydra's own errors): one line, exit 2."""
    print(f"error: {one_line(exc, 500)}", file=sys.stderr)
    return ExitCode.USAGE


def execute(cfg: DictConfig) -> int:
    """Run one configuration; returns the process exit code."""
    quiet_http_loggers()  # after hydra has set up logging for the job
    return run_command(lambda: _execute(cfg), interrupted=f"interrupted: {RESUME_HINT}")


def _execute(cfg: DictConfig) -> int:
    from longicl.engines.servers import NoServerLeft
    from longicl.runner import run

    try:
        result = run(cfg)
    except NoServerLeft as exc:
        print(f"error: {one_line(exc, 500)}; {RESUME_HINT}", file=sys.stderr)
        return EXIT_NO_SERVER
    print_summary(result.summary, result.out_dir)
    if result.missing:
        unanswered = sum(result.unanswered.values())
        parts = []
        if result.missing > unanswered:
            parts.append(f"{result.missing - unanswered} samples have no prediction (failed requests)")
        if unanswered:
            why = ", ".join(f"{reason}: {n}" for reason, n in result.unanswered.items())
            parts.append(f"{unanswered} samples unanswered ({why})")
        print(f"error: {'; '.join(parts)}; run the same command again to retry them", file=sys.stderr)
        return EXIT_MISSING
    return ExitCode.OK


def print_summary(summary: RunSummary | Mapping[str, Any], out_dir: Path) -> None:
    run = as_run_summary(summary)
    rows = [
        (
            "task",
            "n",
            "accuracy",
            "parse_fail",
            "failed",
            "prompt_tok(med)",
            "uncached(med)",
            "seconds",
            "method",
        )
    ]
    for name, task in run.tasks.items():
        prompt = (task.get("prompt_tokens") or {}).get("median")
        uncached = (task.get("uncached_prompt_tokens") or {}).get("median")
        accuracy = task.get("accuracy")
        rows.append(
            (
                name,
                str(task.get("n")),
                "-" if accuracy is None else f"{accuracy:.3f}",
                str(task.get("parse_failures")),
                str(task.get("failed_requests")),
                "-" if prompt is None else f"{prompt:,.0f}",
                "-" if uncached is None else f"{uncached:,.0f}",
                f"{task.get('seconds', 0):.1f}",
                str(task.get("method")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    for name, task in run.tasks.items():
        if task.get("score") is not None and task.get("metric") not in (None, "exact_match"):
            print(f"{name}: {task['metric']} {task['score']:.4f}")
    if run.mean_accuracy is not None:
        print(f"mean accuracy: {run.mean_accuracy:.4f}")
    print(f"outputs: {out_dir}" + (f" (submission: {out_dir / run.submission})" if run.submission else ""))


# ------------------------------------------------------------------------------------------------
# python main.py / longicl run
# ------------------------------------------------------------------------------------------------
RUN_USAGE = """\
usage: longicl run [key=value ...]      (the same as: python main.py [key=value ...])

Annotate the challenge's tasks (or your own task files) by long-context in-context learning:
  longicl run task=all split=test                       the submission run (needs a served model)
  longicl run task=5 split=dev limit=50                 score on held-out labelled examples
  longicl run engine=classical split=dev                CPU annotators, no model
  longicl run engine=dryrun task=all                    build and save every request, call nothing
  longicl run -m selection=hybrid,bm25 split=dev out_dir='outputs/sweep/${hydra:job.num}'
                                                        a hydra sweep, one out_dir per job

Mistakes in settings or data: one line on stderr, exit 2, nothing written. Exit 1: some samples
have no prediction; 3: every server stopped answering; 130: interrupted. The same command resumes.
"""


def quiet_http_loggers() -> None:
    """httpx/httpcore (and their forks, e.g. ``httpx2``) log each request's URL, credentials
    included, at INFO: warnings only."""
    import logging

    names = {"httpx", "httpx2", "httpcore", "httpcore2"}
    names |= {n for n in logging.root.manager.loggerDict if n.split(".")[0].startswith(("httpx", "httpcore"))}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)


def run_main(argv: list[str] | None = None, conf_dir: Path | None = None) -> int:
    """``python main.py`` and ``longicl run``: compose ``conf/`` with ``argv``'s overrides and run.
    ``--help`` prints the settings; other flags (``-m``, ``--cfg job``, ``--hydra-help``) go to hydra."""
    from longicl.paths import CONF_DIR

    conf_dir = conf_dir or CONF_DIR
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(main_help(conf_dir, RUN_USAGE))
        return ExitCode.OK
    if any(arg.startswith("-") for arg in argv):
        return _hydra_main(conf_dir, argv)
    try:
        cfg = compose_config(conf_dir, argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - hydra/omegaconf raise many types for bad overrides
        return user_error_exit(exc)
    return execute(cfg)


def _hydra_main(conf_dir: Path, argv: list[str]) -> int:
    """Hydra's own entry point, for multirun sweeps (-m) and hydra's flags (--cfg, --hydra-help)."""
    import hydra

    @hydra.main(config_path=str(conf_dir), config_name="config", version_base="1.3")
    def hydra_main(cfg: DictConfig) -> int:
        code = execute(cfg)
        if code == ExitCode.USAGE:
            raise SystemExit(code)
        return code

    original = sys.argv
    # hydra writes and prints its overrides (multirun.yaml, .hydra/, the job lines): the key goes to
    # $OPENAI_API_KEY instead, where the engine reads it (longicl.credentials)
    # and URL credentials (user:password@) become ${oc.env:…} interpolations the job resolves
    withheld = withhold_url_credentials(withhold_api_key(argv))
    sys.argv = [original[0] if original else "longicl", *withheld]  # hydra parses sys.argv
    try:
        hydra_main()
    finally:
        sys.argv = original
    return ExitCode.OK

"""The command line's edges: composing the config, running, and turning user errors into one line."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from longicl.errors import ExitCode, one_line, run_command

EXIT_MISSING = ExitCode.FAILED  # the run finished, but some samples have no prediction (failed requests)
EXIT_NO_SERVER = ExitCode.NOT_ANSWERING  # every server stopped answering mid-run; finished samples are kept
RESUME_HINT = "finished samples are kept; run the same command again to resume"


def compose_config(conf_dir: Path, overrides: list[str]) -> DictConfig:
    """Compose ``conf/config.yaml`` with command-line overrides, as ``@hydra.main`` would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


def user_error_exit(exc: BaseException) -> int:
    """A user mistake caught outside `run_command` (e.g. hydra's own errors): one line, exit 2."""
    print(f"error: {one_line(exc, 500)}", file=sys.stderr)
    return ExitCode.USAGE


def execute(cfg: DictConfig) -> int:
    """Run one configuration; returns the process exit code."""
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
        print(
            f"error: {result.missing} samples have no prediction (failed requests); "
            "run the same command again to retry them",
            file=sys.stderr,
        )
        return EXIT_MISSING
    return ExitCode.OK


def print_summary(summary: dict, out_dir: Path) -> None:
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
    for name, task in summary["tasks"].items():
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
    for name, task in summary["tasks"].items():
        if task.get("score") is not None and task.get("metric") not in (None, "exact_match"):
            print(f"{name}: {task['metric']} {task['score']:.4f}")
    if summary.get("mean_accuracy") is not None:
        print(f"mean accuracy: {summary['mean_accuracy']:.4f}")
    print(
        f"outputs: {out_dir}"
        + (f" (submission: {out_dir / summary['submission']})" if summary.get("submission") else "")
    )

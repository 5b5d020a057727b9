"""Choosing the best configuration per task from a sweep of dev runs.

A sweep is a hydra multirun on the dev split, one out_dir per job, e.g.::

    python main.py -m task=all split=dev limit=200 engine.base_url=http://gpu:2026/v1 \\
        selection=hybrid,bm25 selection.static_tokens=31000,64000 \\
        method=pure_icl,thinking method.self_consistency=1,5 \\
        out_dir='outputs/sweep/${hydra:job.num}'

Then::

    python -m longicl.sweep select outputs/sweep [more run dirs …] [-o conf/method/best.yaml]

reads every ``run.json`` below the given paths and, per task, keeps the run with the highest dev
accuracy (ties: fewer prompt tokens per sample, counting every self-consistency request; then
the path, so the choice is deterministic). A dev run that fitted a label-score calibration also
competes with its calibrated accuracy (cross-fitted for ``bias``); choosing it sets
``method.per_task.<id>.calibration`` to that run's calibration.json. The result is written as a
hydra preset in the ``method`` group, ``python main.py method=best``: the method settings of each
task's winner under ``method.per_task``, its selection budget under ``selection.per_task``, the
most frequent winning strategy as ``selection``, and where each choice came from under
``sweep_selection`` (which also lands in the run's ``run.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from longicl.annotators.settings import PER_TASK_KEYS, MethodSettings
from longicl.errors import DataError, ExitCode, UsageError, one_line, run_command
from longicl.files import atomic_write_text
from longicl.methods.report import CALIBRATION_FILE
from longicl.paths import CONF_DIR
from longicl.run_json import read_run_summary
from longicl.tasks import TaskSpec, get_task, looks_like_task_file

DEFAULT_OUTPUT = CONF_DIR / "method" / "best.yaml"
_CALIBRATED_ACCURACY = {"batch": "batch_accuracy", "bias": "bias_accuracy_cv"}


@dataclass(frozen=True)
class Candidate:
    """One task of one dev run (optionally with its fitted calibration applied)."""

    task: TaskSpec
    run: Path  # the run's out_dir
    accuracy: float
    n: int
    prompt_tokens_per_sample: float
    selection: dict[str, Any]
    method: dict[str, Any]  # per-task method settings (the keys of method.per_task)
    method_name: str
    calibration: str | None = None  # mode applied on top of the run's own predictions
    comparable: dict[str, Any] = field(default_factory=dict)  # what must match for a fair comparison

    def sort_key(self) -> tuple:
        return (
            -round(self.accuracy, 12),
            self.prompt_tokens_per_sample,
            str(self.run),
            self.calibration or "",
        )

    def describe(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 6),
            "n": self.n,
            "prompt_tokens_per_sample": round(self.prompt_tokens_per_sample, 1),
            "run": str(self.run),
            "method": self.method_name,
            "selection": self.selection.get("name"),
            "calibration": self.calibration,
        }


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run.json at or below ``paths`` (a run.json, a run dir, or a sweep dir)."""
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name == "run.json":
            found.add(path.resolve())
        elif (path / "run.json").is_file():
            found.add((path / "run.json").resolve())
        elif path.is_dir():
            found.update(p.resolve() for p in path.rglob("run.json"))
        else:
            raise UsageError(f"{path}: no such run.json, run directory or sweep directory")
    return sorted(found)


def candidates(run_json: Path, warnings: list[str] | None = None) -> list[Candidate]:
    """The dev-scored tasks of one run, as candidates.

    run.json may come from someone else: a wrongly typed field is a `DataError` naming it; a
    non-finite accuracy is no candidate, and the only calibration file a candidate may name is the
    run's own ``calibration.json`` inside its run dir (anything else is ignored with a warning,
    appended to ``warnings``)."""
    warnings = [] if warnings is None else warnings
    try:
        doc = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{run_json}: not a readable run.json ({exc})") from None
    summary = read_run_summary(doc)
    if summary is None:
        raise UsageError(f"{run_json}: not a run summary (a JSON object with tasks); written by main.py")
    config = summary.config or {}
    config_method = _mapping(config.get("method"), run_json, "config.method")
    config_selection = _mapping(config.get("selection"), run_json, "config.selection")
    # An earlier run's config: keys added since take their values from conf/method/default.yaml.
    try:
        method = MethodSettings.from_config(config_method, check_environment=False, fill_missing=True)
    except UsageError as exc:
        raise DataError(f"{run_json}: config.method: {exc}") from None
    run_dir = run_json.parent
    out = []
    for name, entry in summary.tasks.items():
        if entry.get("split") != "dev" or entry.get("accuracy") is None or not entry.get("n"):
            continue
        where = f"tasks.{name}"
        if looks_like_task_file(name):  # a key of run.json never makes select read another file
            raise DataError(f"{run_json}: {where} is not a task name")
        try:
            spec = get_task(name)
        except UsageError as exc:
            raise DataError(f"{run_json}: {where}: {exc}") from None
        settings = method.for_task(spec)
        n = _count(entry.get("n"), run_json, f"{where}.n")
        accuracy = _number(entry.get("accuracy"), run_json, f"{where}.accuracy")
        prompt = _number(
            _mapping(entry.get("prompt_tokens"), run_json, f"{where}.prompt_tokens").get("median") or 0,
            run_json,
            f"{where}.prompt_tokens.median",
        )
        requests = _count(entry.get("requests") or n, run_json, f"{where}.requests")
        per_sample = prompt * (requests / n)
        if not (math.isfinite(accuracy) and math.isfinite(per_sample)):
            warnings.append(f"{run_json}: {where}: a non-finite accuracy or prompt size; not a candidate")
            continue
        entry_selection = _mapping(entry.get("selection"), run_json, f"{where}.selection")
        selection = {
            "name": entry_selection.get("name") or config_selection.get("name"),
            "static_tokens": entry_selection.get("static_tokens"),
            "dynamic_tokens": entry_selection.get("dynamic_tokens"),
        }
        per_task = _per_task_method(settings)
        comparable = {"split_seed": config.get("seed"), "dev_size": config.get("dev_size"), "n": n}
        method_name = str(entry.get("method") or settings.method_label(spec))
        base = Candidate(
            spec, run_dir, accuracy, n, per_sample, selection, per_task, method_name, None, comparable
        )  # fmt: skip
        out.append(base)
        calibration = _mapping(entry.get("calibration"), run_json, f"{where}.calibration")
        best = calibration.get("best")
        if best not in _CALIBRATED_ACCURACY or calibration.get(_CALIBRATED_ACCURACY[best]) is None:
            continue
        key = f"{where}.calibration.{_CALIBRATED_ACCURACY[best]}"
        calibrated = _number(calibration[_CALIBRATED_ACCURACY[best]], run_json, key)
        file = _own_calibration_file(run_dir, calibration.get("written", CALIBRATION_FILE))
        if file is None:
            warnings.append(
                f"{run_json}: {where}.calibration: not the run's own {CALIBRATION_FILE}; its calibrated "
                "accuracy is ignored"
            )
        elif not math.isfinite(calibrated):
            warnings.append(f"{run_json}: {key} is not finite; its calibrated accuracy is ignored")
        else:
            out.append(
                Candidate(
                    spec,
                    run_dir,
                    calibrated,
                    n,
                    per_sample,
                    selection,
                    {**per_task, "calibration": str(file), "calibration_mode": best},
                    method_name,
                    best,
                    comparable,
                )  # fmt: skip
            )
    return out


def _own_calibration_file(run_dir: Path, written: object) -> Path | None:
    """The run's own calibration.json when ``written`` names it and it is a file inside the run dir
    (not a link out of it); None otherwise."""
    if written != CALIBRATION_FILE:
        return None
    root = run_dir.resolve()
    file = (root / CALIBRATION_FILE).resolve()
    return file if file.parent == root and file.is_file() else None


def _mapping(value: object, run_json: Path, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataError(f"{run_json}: {key} must be an object, not {type(value).__name__}")
    return value


def _number(value: object, run_json: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"{run_json}: {key} must be a number, not {one_line(repr(value), 60)}")
    return float(value)


def _count(value: object, run_json: Path, key: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{run_json}: {key} must be a positive whole number, not {one_line(repr(value), 60)}")
    return value


def _per_task_method(settings: MethodSettings) -> dict[str, Any]:
    values = {key: getattr(settings, key) for key in PER_TASK_KEYS}
    for key in ("sampling", "thinking_sampling", "max_tokens"):
        values[key] = dict(values[key])
    return values


def select(runs: Sequence[Path]) -> tuple[dict[int, Candidate], list[str]]:
    """The best candidate per task id, and warnings about unfair comparisons."""
    by_task: dict[int, list[Candidate]] = {}
    warnings: list[str] = []
    for run_json in runs:
        for candidate in candidates(run_json, warnings):
            by_task.setdefault(candidate.task.id, []).append(candidate)
    best = {}
    for task_id, group in sorted(by_task.items()):
        group.sort(key=Candidate.sort_key)
        best[task_id] = group[0]
        differing = {k for c in group for k, v in c.comparable.items() if v != group[0].comparable.get(k)}
        if differing:
            warnings.append(
                f"openseek-{task_id}: runs differ in {', '.join(sorted(differing))}; their accuracies "
                "are not measured on the same dev samples"
            )
    return best, warnings


def best_preset(best: dict[int, Candidate], sources: Sequence[Path]) -> tuple[str, dict[str, Any]]:
    """The hydra preset (YAML text) for ``best``."""
    strategies = Counter(c.selection.get("name") for c in best.values() if c.selection.get("name"))
    strategy = sorted(strategies.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if strategies else None
    mixed = len(strategies) > 1
    doc: dict[str, Any] = {
        "defaults": ["default@method", *([{"override /selection": strategy}] if strategy else []), "_self_"],
        "method": {"name": "best", "per_task": {str(t): c.method for t, c in sorted(best.items())}},
        "selection": {
            "per_task": {
                str(t): {k: v for k, v in c.selection.items() if v is not None}
                for t, c in sorted(best.items())
            }
        },
        "sweep_selection": {str(t): c.describe() for t, c in sorted(best.items())},
    }
    header = [
        "# @package _global_",
        "# The best dev configuration per task, written by `python -m longicl.sweep select`",
        f"# on {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} from {len(sources)} run(s).",
        "# Rule: highest dev accuracy; ties: fewer prompt tokens per sample (all requests); then the path.",
        "# Use: python main.py method=best task=all split=test",
    ]
    if mixed:
        header.append(
            "# The winners use different selection strategies; `selection` is the most frequent, and each"
        )
        header.append("# task's own strategy is under selection.per_task.<id>.name (see docs/methods.md).")
    text = "\n".join(header) + "\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    return text, doc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="longicl sweep", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sel = commands.add_parser("select", help="write the best configuration per task as a method preset")
    sel.add_argument("paths", nargs="+", help="sweep directories, run directories or run.json files")
    sel.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT), help="the preset to write (best.yaml)")
    args = parser.parse_args(argv)
    return run_command(lambda: _select(args))


def _select(args: argparse.Namespace) -> int:
    runs = find_runs(args.paths)
    if not runs:
        raise UsageError(f"no run.json below {', '.join(args.paths)}")
    best, warnings = select(runs)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not best:
        raise UsageError("no dev-scored task in these runs (run the sweep with split=dev)")
    text, _ = best_preset(best, runs)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, text)
    for task_id, c in sorted(best.items()):
        extra = f" +calibration({c.calibration})" if c.calibration else ""
        print(
            f"openseek-{task_id}: accuracy {c.accuracy:.4f} (n={c.n}) {c.method_name}{extra} "
            f"selection={c.selection.get('name')} from {c.run}"
        )
    print(f"wrote {output}")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())

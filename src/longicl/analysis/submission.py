"""A test run's submission.zip checked against the task files."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longicl.analysis.runs import RunData
from longicl.data import load_task
from longicl.rundir import validate_prediction_lines
from longicl.tasks import get_task


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
    """Open a test run's ``submission.zip`` and check every member with the pipeline's own
    validator (`longicl.rundir.validate_prediction_lines`) against the task files' test ids, in
    order; every problem is kept (one line each) for the notebook rather than raised."""
    path = run.path / str(run.run_summary.submission or "submission.zip")
    problems: list[str] = []
    rows: dict[str, int] = {}
    empty: dict[str, int] = {}
    files: list[str] = []
    if run.split != "test":
        problems.append(f"{run.path}: a {run.split} run has no submission")
    if not path.is_file():
        refused = run.run_summary.submission_refused
        problems.append(
            f"{path}: missing ({refused}: only a compliant run is an entry)"
            if refused
            else f"{path}: missing (a test run writes it only when every sample has a prediction)"
        )
        return SubmissionCheck(path, files, rows, empty, problems)
    if path.name != "submission.zip":
        problems.append(f"{path.name}: not an entry ({run.run_summary.submission_refused})")
    limit = run.config.get("limit")
    with zipfile.ZipFile(path) as archive:
        files = sorted(archive.namelist())
        for name in run.tasks:
            member = f"{name}.jsonl"
            if member not in files:
                problems.append(f"{member}: not in the zip")
                continue
            text = archive.read(member).decode("utf-8")
            data = load_task(get_task(name), run.data_dir())
            expected = [ex.id for ex in data.test_samples]
            expected = expected[: int(limit)] if limit else expected
            try:
                validate_prediction_lines(member, text, expected, in_order=True)
            except ValueError as exc:
                problems.append(str(exc))
            predictions = _predictions(text)
            rows[name] = len(predictions)
            empty[name] = sum(1 for prediction in predictions if not prediction)
    if limit:
        problems.append(f"limit={limit}: a partial submission (only the first {limit} test samples per task)")
    return SubmissionCheck(path, files, rows, empty, problems)


def _predictions(text: str) -> list[Any]:
    """The prediction of every line of a predictions file (None where a line has none)."""
    out = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        out.append(row.get("prediction") if isinstance(row, dict) else None)
    return out


def submission_markdown(check: SubmissionCheck) -> str:
    if not check.path.is_file():
        return f"**No {check.path.name}.** " + " ".join(check.problems)
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

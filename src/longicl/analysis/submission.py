"""A test run's submission.zip checked against the task files."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from longicl.analysis.runs import RunData
from longicl.data import load_task
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

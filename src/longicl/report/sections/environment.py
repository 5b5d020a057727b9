"""Environment and reproduction: versions of every run, and the commands that rebuild them."""

from __future__ import annotations

import shlex
from typing import Any

from longicl import analysis as an
from longicl.report.document import Report


def build(report: Report) -> dict[str, Any]:
    rows, commands = [], []
    for run in report.runs:
        env = run.run_summary.environment or {}
        git = run.run_summary.git or {}
        rows.append(
            {
                "run": run.name,
                "python": env.get("python"),
                "platform": env.get("platform"),
                "git commit": str(git.get("commit") or "—")[:12]
                + (" (uncommitted changes)" if git.get("dirty") else ""),
                "packages": ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items()),
            }
        )
        command, verified = an.main_command(run.config, run.run_summary.command)
        commands.append({"run": run, "command": command, "verified": verified})
    report_args = " ".join(shlex.quote(str(r.path)) for r in report.runs)
    return {
        "rows": rows,
        "commands": commands,
        "report_command": report.command
        or f".venv/bin/python -m longicl.report {report_args} -o {shlex.quote(str(report.out_dir))}",
    }

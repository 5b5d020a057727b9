"""Title and what the document is: the challenge, its rule, where the numbers come from."""

from __future__ import annotations

import datetime as dt
from typing import Any

from longicl.report.document import Report


def build(report: Report) -> dict[str, Any]:
    commits = {str((r.run_summary.git or {}).get("commit") or "")[:12] for r in report.runs} - {""}
    return {
        "title": report.title,
        "answered_by": report.answered_by,
        "floor": report.floor_phrase,
        "today": dt.date.today().isoformat(),
        "runs": len(report.runs),
        "commits": ", ".join(sorted(commits)),
    }

"""The technical report: run directories in, ``technical_report.md`` and ``.html`` out.

    python -m longicl.report outputs/demo [more run dirs…] -o reports

Each section (``sections/<name>.py``) gathers its numbers from the runs into template variables;
its Jinja2 template (``templates/sections/<name>.md.j2``) writes the Markdown, with figures as PNG
files under ``<out>/figures/``. The Markdown is converted once more, by markdown-it-py, into one
self-contained HTML page with the figures embedded as base64 and its style inline (no external
resource of any kind). Every number comes from the run directories' ``run.json`` and records,
from the task files, or from the values notebooks recorded (``reports/notebooks/``); the report
says which engine produced which number.
"""

from longicl.report.build import Written, build_report, main, render_markdown, templates
from longicl.report.document import TITLE, Report
from longicl.report.formatting import ci95 as _ci95
from longicl.report.html import inline_html

__all__ = [
    "TITLE",
    "Report",
    "Written",
    "_ci95",
    "build_report",
    "inline_html",
    "main",
    "render_markdown",
    "templates",
]

"""Run directories in, ``technical_report.md``, ``technical_report.html`` and ``figures/*.png`` out."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from longicl import analysis as an
from longicl import published
from longicl.credentials import redact_text
from longicl.errors import ExitCode, UsageError, run_command
from longicl.files import atomic_write_text
from longicl.report import formatting
from longicl.report.document import Report, readable
from longicl.report.document import notebook_values as read_notebook_values
from longicl.report.html import render_page
from longicl.report.sections import SECTIONS


@dataclass
class Written:
    markdown: Path
    html: Path
    figures: list[Path] = field(default_factory=list)


def templates() -> Environment:
    """The report's Jinja2 templates (package data under ``templates/``), writing Markdown.

    Every ``{{ value }}`` is escaped for Markdown (`longicl.published.escape`) unless it is
    `Markdown` already: the output of the ``table``, ``code``, ``code_block``, ``verbatim`` and ``md`` filters,
    or a value a section built with them. Run data is text, never markup, in every template."""
    env = Environment(
        loader=PackageLoader("longicl.report", "templates"),
        autoescape=False,
        finalize=published.escape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
    )
    env.filters.update(
        table=formatting.table,
        pct=formatting.pct,
        tokens=formatting.tokens,
        wrap=formatting.wrap,
        code=published.code,
        code_block=published.code_block,
        md=published.md,
        verbatim=published.verbatim,
    )
    return env


def render_markdown(report: Report, env: Environment) -> str:
    """Every section that has something to say, in `SECTIONS` order."""
    parts = []
    for name in SECTIONS:
        variables = importlib.import_module(f"longicl.report.sections.{name}").build(report)
        if variables is not None:
            parts.append(env.get_template(f"sections/{name}.md.j2").render(**variables).strip())
    return re.sub(r"\n{3,}", "\n\n", "\n\n".join(parts)) + "\n"


def build_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path = "reports",
    *,
    notebook_values: str | Path | None = None,
    command: str | None = None,
) -> Written:
    """Write ``technical_report.md``, ``technical_report.html`` and ``figures/*.png`` to ``out_dir``.

    ``notebook_values``: a directory of ``<notebook>.values.json`` files (default:
    ``<out_dir>/notebooks`` when it exists).
    """
    if not run_dirs:
        raise ValueError("no run directory given")
    runs = [an.load_run(d) for d in run_dirs]
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    values_dir = Path(notebook_values) if notebook_values else out / "notebooks"
    report = Report(runs, out, values=read_notebook_values(values_dir), command=command)
    env = templates()
    text = redact_text(render_markdown(report, env))  # no key, no URL password (longicl.credentials)
    markdown, html = out / "technical_report.md", out / "technical_report.html"
    atomic_write_text(markdown, text)
    atomic_write_text(html, render_page(text, report.title, out, env))
    for path in (markdown, html):
        readable(path)
    return Written(markdown, html, report.figures)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m longicl.report",
        description="Write the technical report (Markdown and self-contained HTML) from run directories.",
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (each with a run.json)")
    parser.add_argument("-o", "--out", type=Path, default=Path("reports"), help="output directory (reports)")
    parser.add_argument(
        "--notebook-values",
        type=Path,
        default=None,
        help="directory of <notebook>.values.json (default: OUT/notebooks when present)",
    )
    args = parser.parse_args(argv)
    command = "python -m longicl.report " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else list(argv))
    )
    try:
        written = build_report(
            args.run_dirs, args.out, notebook_values=args.notebook_values, command=".venv/bin/" + command
        )
    except (FileNotFoundError, ValueError) as exc:  # a missing or unreadable run directory
        raise UsageError(str(exc)) from None
    print(f"wrote {written.markdown}")
    print(f"wrote {written.html} ({len(written.figures)} figures embedded)")
    return ExitCode.OK

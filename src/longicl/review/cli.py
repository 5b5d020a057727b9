"""Human review of a run's uncertain answers, in Label Studio or Argilla, and back.

export RUN_DIR --format label-studio|argilla [--below 0.8] [--task NAME] -o FILE
    writes the samples below a confidence threshold (all, without --below), most uncertain first,
    in the tool's import format, the model's answer as a pre-annotation; beside it the project's
    set-up (Label Studio: FILE.config.xml; Argilla: FILE.settings.json).
import RUN_DIR FILE [--format ...]
    reads the tool's export after humans worked. Decisions are Label Studio "annotations" (not
    the "predictions", which hold the model's answers) or Argilla submitted "responses". They
    rewrite the records, prediction files, a declared task's CSV and the zip, atomically; the
    model's own answer is kept in each record (docs/quality.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from longicl.errors import UsageError, run_command
from longicl.files import atomic_write_text
from longicl.review.apply import apply_decisions
from longicl.review.formats import FORMATS
from longicl.review.items import load_items, one_task


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="longicl review",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="samples to review, in a labelling tool's import format")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--format", required=True, choices=sorted(FORMATS))
    export.add_argument("--below", type=float, default=None, help="only samples with confidence below this")
    export.add_argument("--task", default=None, help="one task (a tool project holds one label set)")
    export.add_argument("-o", "--output", required=True, type=Path)
    imported = commands.add_parser("import", help="apply the decisions of a labelling tool's export")
    imported.add_argument("run_dir", type=Path)
    imported.add_argument("file", type=Path)
    imported.add_argument("--format", choices=sorted(FORMATS), default=None, help="default: detected")
    args = parser.parse_args(argv)
    return run_command(lambda: _export(args) if args.command == "export" else _import(args))


def _export(args: argparse.Namespace) -> int:
    if args.below is not None and not 0.0 <= args.below <= 1.0:
        raise UsageError(f"--below {args.below}: a confidence between 0 and 1")
    items = load_items(args.run_dir, task=args.task, below=args.below)
    fmt = FORMATS.get(args.format)
    spec = one_task(items, args.format)
    if spec is None and args.task:
        from longicl.tasks import get_task

        spec = get_task(args.task)
    doc, extra = fmt.export(items, spec)
    atomic_write_text(args.output, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    written = [args.output]
    for suffix, text in extra.items():
        path = args.output.with_name(args.output.stem + suffix)
        atomic_write_text(path, text)
        written.append(path)
    print(f"{len(items)} samples to review -> {', '.join(str(p) for p in written)}")
    return 0


#: a labelling tool's export is a list of flat records: deeper JSON is refused before it is parsed
MAX_DEPTH = 32


def _import(args: argparse.Namespace) -> int:
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{args.file}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if json_depth(text) > MAX_DEPTH:
        raise UsageError(
            f"{args.file}: JSON nested deeper than {MAX_DEPTH} levels; not a labelling tool's export"
        )
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise UsageError(f"{args.file}: not JSON") from None
    name = args.format or detect(doc)
    if name is None:
        raise UsageError(
            f"{args.file}: not an export of any review format ({', '.join(FORMATS)}); pass --format"
        )
    decisions = FORMATS.get(name).decisions(doc, str(args.file))
    result = apply_decisions(args.run_dir, decisions, tool=name, source=str(args.file))
    changed = sum(len(v) for v in result.changed.values())
    print(
        f"{len(decisions)} decisions: {changed} applied, {result.unchanged} already applied"
        + (f"; rewrote {', '.join(result.files)}" if result.files else "")
    )
    if not decisions:
        print(f"note: {args.file} holds no decision: {FORMATS.get(name).where_decisions_go}", file=sys.stderr)
    return 0


def json_depth(text: str) -> int:
    """How deeply ``text``'s arrays and objects nest (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def detect(doc: object) -> str | None:
    """Which tool's export ``doc`` looks like (None: no format recognises it)."""
    return FORMATS.recognises(doc)

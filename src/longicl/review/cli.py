"""``python -m longicl.review export|import`` (see the package docstring)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from longicl.errors import UsageError, run_command
from longicl.review.apply import apply_decisions
from longicl.review.formats import FORMATS
from longicl.review.items import load_items, one_task
from longicl.rundir import atomic_write_text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longicl.review", description=__doc__)
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


def _import(args: argparse.Namespace) -> int:
    try:
        doc = json.loads(args.file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{args.file}: cannot read it ({exc.strerror})") from None
    except ValueError:
        raise UsageError(f"{args.file}: not JSON") from None
    name = args.format or detect(doc)
    if name is None:
        raise UsageError(
            f"{args.file}: not an export of any review format ({', '.join(FORMATS)}); pass --format"
        )
    decisions = FORMATS.get(name).decisions(doc, str(args.file))
    result = apply_decisions(args.run_dir, decisions, tool=name)
    changed = sum(len(v) for v in result.changed.values())
    print(
        f"{len(decisions)} decisions: {changed} applied, {result.unchanged} already applied"
        + (f"; rewrote {', '.join(result.files)}" if result.files else "")
    )
    return 0


def detect(doc: object) -> str | None:
    """Which tool's export ``doc`` looks like (None: no format recognises it)."""
    return FORMATS.recognises(doc)

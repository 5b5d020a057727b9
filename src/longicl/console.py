"""``longicl``: the project's one command (``[project.scripts]`` in pyproject.toml).

    longicl run [key=value ...]          annotate (the same as ``python main.py``)
    longicl tasks check FILE             what a task file declares (``python -m longicl.tasks``)
    longicl check [--base-url URL]       check a running server (``python api_test.py``)
    longicl serve command|start|stop     a local vLLM server (``python -m longicl.serve``)
    longicl review export|import …       human review of uncertain answers (``python -m longicl.review``)
    longicl report RUN_DIR … -o reports  the technical report (``python -m longicl.report``)
    longicl notebooks [NAME …]           execute the notebooks (``python -m longicl.notebooks``)
    longicl sweep select RUNS …          the best configuration per task (``python -m longicl.sweep``)

Each subcommand takes the arguments of the module it names; ``longicl SUBCOMMAND --help`` explains them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

#: subcommand -> (module, its entry function, one line of help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("longicl.cli", "run_main", "annotate: python main.py with hydra overrides (key=value)"),
    "tasks": ("longicl.tasks.__main__", "main", "check a task file: what it declares, its floor"),
    "check": ("longicl.apicheck.cli", "main", "check a running OpenAI-compatible server (api_test.py)"),
    "serve": ("longicl.serve.cli", "main", "print, start or stop a local vLLM server"),
    "review": ("longicl.review.cli", "main", "export uncertain answers for review; import the decisions"),
    "report": ("longicl.report.build", "main", "write the technical report of run directories"),
    "notebooks": ("longicl.notebooks", "main", "execute the notebooks headless (papermill)"),
    "sweep": ("longicl.sweep", "main", "select the best configuration per task from sweep runs"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: longicl SUBCOMMAND [ARGS ...]", "", "subcommands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, _, text) in COMMANDS.items()]
    lines += ["", "longicl SUBCOMMAND --help explains each one; README.md has the walk-through."]
    return "\n".join(lines)


def entry(name: str) -> Callable[[list[str]], int]:
    module, function, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), function)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        print(
            f"error: {name!r} is not a subcommand of longicl{hint} (longicl --help lists them)",
            file=sys.stderr,
        )
        return 2
    return int(entry(name)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

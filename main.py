"""Annotate the challenge's tasks by long-context in-context learning (the same as ``longicl run``).

    python main.py task=all split=test                         # the submission run
    python main.py task=5 split=dev limit=50 engine=dryrun     # inspect requests, call nothing
    python main.py -m selection=hybrid,bm25 split=dev out_dir='outputs/sweep/${hydra:job.num}'  # a sweep
    python main.py --help                                      # the main settings and their defaults

Configuration lives in conf/ (hydra); see README.md for every setting. Mistakes in settings or
data end with one line on stderr and exit code 2; a run with missing predictions exits 1; a run
whose servers all stopped answering exits 3; Ctrl-C exits 130. Finished samples are always kept:
the same command resumes (see docs/reliability.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from longicl.cli import run_main
except ImportError:  # pragma: no cover - the shell's own python, without the project's venv
    sys.exit(
        "error: longicl is not installed for this python; use the project's venv: "
        "`make install`, then `source .venv/bin/activate` (README.md, first lines)"
    )

CONF_DIR = Path(__file__).resolve().parent / "conf"


def main(argv: list[str]) -> int:
    return run_main(argv, CONF_DIR)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

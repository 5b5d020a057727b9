"""Annotate the challenge's tasks by long-context in-context learning.

    python main.py task=all split=test                         # the submission run
    python main.py task=5 split=dev limit=50 engine=dryrun     # inspect requests, call nothing
    python main.py -m selection=hybrid,bm25 split=dev          # a hydra sweep

Configuration lives in conf/ (hydra); see README.md for every setting. Mistakes in settings or
data end with one line on stderr and exit code 2; a run with missing predictions exits 1; a run
whose servers all stopped answering exits 3; Ctrl-C exits 130. Finished samples are always kept:
the same command resumes (see docs/reliability.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from longicl.cli import compose_config, execute, user_error_exit
from longicl.credentials import withhold_api_key
from longicl.errors import ExitCode

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> int:
    """Hydra's own entry point, used for multirun sweeps (-m) and hydra's flags (--cfg, --help)."""
    code = execute(cfg)
    if code == ExitCode.USAGE:
        raise SystemExit(code)
    return code


def main(argv: list[str]) -> int:
    if any(arg.startswith("-") for arg in argv):
        # hydra writes and prints its overrides (multirun.yaml, .hydra/, the job lines): the key
        # goes to $OPENAI_API_KEY instead, where the engine reads it (longicl.credentials)
        sys.argv[1:] = withhold_api_key(argv)
        hydra_main()
        return 0
    try:
        cfg = compose_config(CONF_DIR, argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - hydra/omegaconf raise many types for bad overrides
        return user_error_exit(exc)
    return execute(cfg)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

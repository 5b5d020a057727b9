"""How long building every request of the test split takes (engine=dryrun: 3,666 test samples,
3,832 requests, since task 8 sends two per sample: the module and a plain PyTorch reference).

    python benchmarks/bench_dryrun.py [extra hydra overrides]

Prints wall seconds, requests per second and the token figures of the run. Nothing is asserted:
compare the printed numbers across commits (the issue's target: under 60 s on 2 cores).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> None:
    from longicl.cli import compose_config
    from longicl.runner import run

    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config(
            ROOT / "conf",
            ["engine=dryrun", "task=all", "split=test", "progress=false", f"out_dir={out}", *argv],
        )
        started = time.perf_counter()
        result = run(cfg)
        seconds = time.perf_counter() - started
    tasks = result.summary["tasks"]
    requests = sum(t["requests"] for t in tasks.values())
    samples = sum(int(t["n"]) for t in tasks.values())
    print(
        f"dry run, split=test, all tasks: {samples} samples, {requests} requests in {seconds:.1f} s "
        f"({requests / seconds:.0f} req/s; more requests than samples: task 8 sends a reference request "
        "per sample too)"
    )
    for name, task in tasks.items():
        p, u = task["prompt_tokens"], task["uncached_prompt_tokens"]
        print(
            f"  {name}: prompt tokens min/median/max {p['min']}/{p['median']:.0f}/{p['max']}, "
            f"uncached median {u['median']:.0f}, min ICL {task['icl_tokens']['min']}"
        )
    print(
        f"  uncached prompt tokens, median over all requests: {result.summary['uncached_prompt_tokens_median']:.0f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])

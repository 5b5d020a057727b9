"""Prefix reuse on a real engine: per-sample wall time of ``hybrid`` vs ``bm25`` at equal ICL tokens.

    python benchmarks/bench_real_engine.py [--task 5] [--samples 5] [--floor 2000] [extra overrides]

Both runs go to ``engine=local`` (llama.cpp + SmolLM2-135M on this CPU; the [local] extra) over the
same dev samples with the same demonstration budget: ``hybrid`` puts the budget in a static block
shared by every sample (prefilled once, then reused as the cached prefix) plus 200 tokens of
per-sample neighbours; ``bm25`` retrieves the whole budget per sample (a new prefill each time).
Prints per-sample seconds of both and the ratio of their medians (the first sample of each run
included: it is the one that pays for hybrid's static block). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(strategy: str, args: argparse.Namespace, extra: list[str]) -> tuple[list[float], int, float]:
    """Per-sample latencies, the smallest ICL token count and the run's wall time."""
    from longicl.cli import compose_config
    from longicl.runner import run

    budget = args.floor + 200
    dynamic = 200 if strategy == "hybrid" else 0  # equal totals: static + dynamic = budget
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config(
            ROOT / "conf",
            [
                "engine=local",
                f"task={args.task}",
                "split=dev",
                f"limit={args.samples}",
                f"min_icl_tokens={args.floor}",
                f"selection={strategy}",
                f"selection.static_tokens={budget - dynamic}",
                f"selection.dynamic_tokens={dynamic}",
                "progress=false",
                f"out_dir={out}",
                *extra,
            ],
        )
        started = time.perf_counter()
        result = run(cfg)
        wall = time.perf_counter() - started
        records_path = Path(out) / "records" / f"openseek-{args.task}.jsonl"
        records = [json.loads(line) for line in records_path.read_text().splitlines()]
    latencies = [r["requests"][0]["latency_s"] for r in sorted(records, key=lambda r: r["index"])]
    icl = result.summary["tasks"][f"openseek-{args.task}"]["icl_tokens"]["min"]
    return latencies, icl, wall


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=int, default=5)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--floor", type=int, default=2000, help="min_icl_tokens of both runs")
    args, extra = parser.parse_known_args(argv)
    medians = {}
    for strategy in ("hybrid", "bm25"):
        latencies, icl, wall = timed_run(strategy, args, extra)
        medians[strategy] = statistics.median(latencies)
        print(
            f"{strategy:>6}: per-sample s {', '.join(f'{x:.1f}' for x in latencies)}; "
            f"median {medians[strategy]:.1f} s, min ICL tokens {icl}, run {wall:.0f} s"
        )
    print(f"bm25 / hybrid median per-sample time: {medians['bm25'] / medians['hybrid']:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])

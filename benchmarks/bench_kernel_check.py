"""Time the sandboxed kernel checker: per-check wall time, child setup (torch/triton import) and run.

    python benchmarks/bench_kernel_check.py [--repeat 5] [--workers 1] [--device cpu]
        [--sandbox auto|bwrap|unshare|none]

Runs the hand-written candidates of ``tests/kernel_candidates`` (correct Triton against the PyTorch
reference) and prints one JSON line per check plus a summary; needs the ``[kernels]`` extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from longicl.kernels.check import check_candidate

CANDIDATES = Path(__file__).resolve().parents[1] / "tests" / "kernel_candidates"
PAIRS = [("div_triton", "div", "div_torch"), ("relu_triton", "relu", "relu_torch"),
         ("softmax_triton", "softmax", "softmax_torch")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sandbox", default="auto", help="the OS isolation (kernels.sandbox)")
    args = parser.parse_args()
    jobs = [pair for _ in range(args.repeat) for pair in PAIRS]

    def run(pair: tuple[str, str, str]) -> dict:
        cand, task, ref = pair
        res = check_candidate(
            (CANDIDATES / f"{cand}.py").read_text(),
            (CANDIDATES / f"{task}_task.txt").read_text(),
            (CANDIDATES / f"{ref}.py").read_text(),
            device=args.device,
            sandbox=args.sandbox,
        )
        row = {"candidate": cand, "stage": res.stage.value, "seconds": res.seconds,
               "isolation": res.isolation, "setup_seconds": res.setup_seconds, "run_seconds": res.run_seconds, "peak_rss_mb": res.peak_rss_mb}  # fmt: skip
        print(json.dumps(row), flush=True)
        return row

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(run, jobs))
    wall = time.monotonic() - start
    summary = {
        "checks": len(rows),
        "passed": sum(r["stage"] == "passed" for r in rows),
        "wall_seconds": round(wall, 2),
        "checks_per_minute": round(60 * len(rows) / wall, 1),
        "median_check_seconds": statistics.median(r["seconds"] for r in rows),
        "median_setup_seconds": statistics.median(r["setup_seconds"] or 0 for r in rows),
        "median_run_seconds": statistics.median(r["run_seconds"] or 0 for r in rows),
        "max_peak_rss_mb": max(r["peak_rss_mb"] or 0 for r in rows),
    }
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()

"""engine=ray (HTTP mode) against the fake server vs engine=openai: rows/s and the driver's peak memory.

    python benchmarks/bench_ray.py [--rows 1000 2000] [--engines openai ray] [extra hydra overrides]

A synthetic task of short rows (declared tasks, issue 13, had not landed when this was written:
the rows are written as a task-4 file, "concatenate the strings", in a temporary data dir, with
the real task-4 examples as the demonstration pool and ``--rows`` generated test samples). The
fake server runs in its own process, so the driver's memory is the runner's alone. Each engine
and size runs in a fresh child process; its peak RSS (``ru_maxrss``) is printed with the rows/s.
Memory should not grow with the rows beyond the task data itself: requests are built as workers
take samples, and Ray windows hold at most ``engine.concurrency`` prompts. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK_FILE = "openseek-4_conala_concat_strings.json"


def write_task(data_dir: Path, rows: int) -> None:
    source = json.loads((ROOT / "data" / "openseek" / TASK_FILE).read_text())
    words = ["a", "bc", "def", "x", "yz", "that.", "I", "are", "as", "W"]
    rng = random.Random(0)
    source["test_samples"] = [
        {"id": f"openseek-4-synthetic{i:08d}", "input": str(rng.sample(words, 4))} for i in range(rows)
    ]
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / TASK_FILE).write_text(json.dumps(source))


def child(engine: str, rows: int, url: str, overrides: list[str]) -> None:
    """One run in this (fresh) process; prints one JSON line."""
    sys.path.insert(0, str(ROOT / "src"))
    from longicl.cli import compose_config
    from longicl.runner import run

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        write_task(data_dir, rows)
        extra = ["engine=ray", "+engine.ray.init.num_cpus=2"] if engine == "ray" else []
        cfg = compose_config(
            ROOT / "conf",
            [
                "task=4",
                "split=test",
                "progress=false",
                f"data_dir={data_dir}",
                f"out_dir={tmp}/out",
                *extra,
                f"engine.base_url={url}",
                "engine.model=auto",
                *overrides,
            ],
        )
        started = time.perf_counter()
        result = run(cfg)
        seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "engine": engine,
                "rows": rows,
                "seconds": seconds,
                "missing": result.missing,
                "peak_mb": peak_mb,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--engines", nargs="+", default=["openai", "ray"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.child:
        engine, rows, url = args.child
        child(engine, int(rows), url, overrides)
        return
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip().split()[-1]
        for rows in args.rows:
            for engine in args.engines:
                done = subprocess.run(
                    [sys.executable, __file__, "--child", engine, str(rows), url, *overrides],
                    capture_output=True,
                    text=True,
                )
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                if not lines:
                    print(f"{engine} {rows} rows failed:\n{done.stderr[-2000:]}")
                    continue
                r = json.loads(lines[-1])
                print(
                    f"{r['engine']:>6} {r['rows']:>7} rows: {r['seconds']:7.1f} s, {r['rows'] / r['seconds']:7.1f} rows/s, "
                    f"driver peak RSS {r['peak_mb']:7.0f} MB, missing {r['missing']}",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()

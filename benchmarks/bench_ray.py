"""engine=ray (HTTP mode) against the fake server vs engine=openai: rows/s and the driver's peak memory.

    python benchmarks/bench_ray.py [--rows 100000] [--engines openai ray] [extra hydra overrides]

A synthetic declared task (a task YAML and a CSV, as in ``examples/``): the 500 labelled rows of
``examples/tweet-mood.csv`` as the demonstration pool, then ``--rows`` generated short rows to
annotate (``min_icl_tokens`` small, so that a request is short and the transport is measured).
The fake server runs in its own process, so the driver's memory is the runner's alone. Each
engine and size runs in a fresh child process; its peak RSS (``ru_maxrss``) is printed with the
rows/s, and so is its RSS when 10%, 50% and 90% of the rows were recorded (sampled twice a second
from ``/proc``). While rows stream, memory should stay flat from 10% to 90%: requests are built
as workers take samples, and each server's Ray stream holds at most ``engine.concurrency``
prompts. What does grow with the rows is the task data (read whole, as for every engine) and the
end of the run after the last row, which streams the records but keeps a summary of each for the
metrics (see benchmarks/bench_metrics.py). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["so", "happy", "today", "sad", "rain", "again", "love", "this", "tired", "ok", "#mood", "lol"]


def write_task(folder: Path, rows: int) -> Path:
    """``bench-mood.yaml`` and its CSV: the example's labelled rows, then ``rows`` to annotate."""
    folder.mkdir(parents=True, exist_ok=True)
    with (ROOT / "examples" / "tweet-mood.csv").open(newline="") as source:
        labelled = [r for r in csv.DictReader(source) if r["mood"]]
    rng = random.Random(0)
    with (folder / "bench-mood.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["tweet_id", "text", "mood"])
        for r in labelled:
            writer.writerow([r["tweet_id"], r["text"], r["mood"]])
        for i in range(rows):
            writer.writerow([10_000_000 + i, " ".join(rng.choices(WORDS, k=6)), ""])
    task = folder / "bench-mood.yaml"
    task.write_text(
        "name: bench-mood\n"
        "definition: Decide the mood of the author of a short post. Answer 'down' or 'fine'.\n"
        "data: bench-mood.csv\nid_column: tweet_id\ninput: text\noutput_column: mood\n"
        "answer: label\nlabels: [down, fine]\nmin_icl_tokens: 300\nmetric: macro_f1\n"
    )
    return task


def child(engine: str, rows: int, url: str, overrides: list[str], server_pid: int | None = None) -> None:
    """One run in this (fresh) process; prints one JSON line."""
    sys.path.insert(0, str(ROOT / "src"))
    from longicl.cli import compose_config
    from longicl.runner import run

    with tempfile.TemporaryDirectory() as tmp:
        task = write_task(Path(tmp) / "task", rows)
        extra = ["engine=ray", "+engine.ray.init.num_cpus=2"] if engine == "ray" else []
        cfg = compose_config(
            ROOT / "conf",
            [
                f"task={task}",
                "split=test",
                "progress=false",
                f"out_dir={tmp}/out",
                *extra,
                f"engine.base_url={url}",
                "engine.model=auto",
                *overrides,
            ],
        )
        progress = _RssAtProgress(Path(tmp) / "out" / "records" / "bench-mood.jsonl", rows, server_pid)
        started = time.perf_counter()
        result = run(cfg)
        seconds = time.perf_counter() - started
        progress.stop()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "engine": engine,
                "rows": rows,
                "seconds": seconds,
                "missing": result.missing,
                "peak_mb": peak_mb,
                "rss_at": progress.rss_at,
                "steady_rows_per_s": _steady_rate(progress.time_at, rows),
                "cpu_ms_per_row": _cpu_per_row(progress.cpu_at, rows),
            }
        )
    )


class _RssAtProgress(threading.Thread):
    """This process's RSS (MB), and the time, when the records file first held 10%, 50% and 90%
    of ``rows`` (the rate between 10% and 90% is the steady one, without Ray's start-up)."""

    MARKS = (0.1, 0.5, 0.9)

    def __init__(self, records: Path, rows: int, server_pid: int | None = None) -> None:
        super().__init__(daemon=True)
        self.records, self.rows, self.server_pid = records, rows, server_pid
        self.rss_at: dict[str, float] = {}
        self.time_at: dict[str, float] = {}
        self.cpu_at: dict[str, dict[str, float]] = {}
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        seen, offset = 0, 0
        while not self.halt.wait(0.5) and len(self.rss_at) < len(self.MARKS):
            if not self.records.exists():
                continue
            with self.records.open("rb") as handle:  # count only the lines added since last time
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
            seen += chunk.count(b"\n")
            for mark in self.MARKS:
                if seen >= mark * self.rows and f"{mark:.0%}" not in self.rss_at:
                    self.rss_at[f"{mark:.0%}"] = _rss_mb()
                    self.time_at[f"{mark:.0%}"] = time.perf_counter()
                    self.cpu_at[f"{mark:.0%}"] = _cpu_seconds(self.server_pid)

    def stop(self) -> None:
        self.halt.set()
        self.join()


def _steady_rate(time_at: dict[str, float], rows: int) -> float | None:
    if "10%" not in time_at or "90%" not in time_at or time_at["90%"] <= time_at["10%"]:
        return None
    return 0.8 * rows / (time_at["90%"] - time_at["10%"])


def _cpu_per_row(cpu_at: dict[str, dict[str, float]], rows: int) -> dict[str, float] | None:
    """CPU milliseconds per row between 10% and 90% of the rows, per part (see `_cpu_seconds`).

    Unlike rows/s, this hardly depends on what else the machine runs (a shared machine's load
    shows in rows/s, not in the CPU a row costs)."""
    if "10%" not in cpu_at or "90%" not in cpu_at:
        return None
    first, last = cpu_at["10%"], cpu_at["90%"]
    return {part: 1000 * (last[part] - first.get(part, 0.0)) / (0.8 * rows) for part in last}


def _cpu_seconds(server_pid: int | None) -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process ("driver"), its descendants (Ray's
    raylet, GCS and workers: "ray") and the fake server ("server"), read from ``/proc``. A process
    that ended between two readings is not counted (Ray's workers here live through the run)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    me = os.getpid()
    mine, grew = {me}, True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in mine} - mine
        mine |= children
        grew = bool(children)
    return {
        "driver": used.get(me, 0.0),
        "ray": sum(used.get(pid, 0.0) for pid in mine - {me}),
        "server": used.get(server_pid, 0.0) if server_pid else 0.0,
    }


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--engines", nargs="+", default=["openai", "ray"])
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.child:
        engine, rows, url, server_pid = args.child
        child(engine, int(rows), url, overrides, int(server_pid))
        return
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_server.py"), "--port", "0", "--forget-requests"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip().split()[-1]
        for rows in args.rows:
            for engine in args.engines:
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        engine,
                        str(rows),
                        url,
                        str(server.pid),
                        *overrides,
                    ],
                    capture_output=True,
                    text=True,
                )
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                if not lines:
                    print(f"{engine} {rows} rows failed:\n{done.stderr[-2000:]}")
                    continue
                r = json.loads(lines[-1])
                at = ", ".join(f"{mark} {mb:.0f}" for mark, mb in r["rss_at"].items())
                steady = r["steady_rows_per_s"]
                cpu = r["cpu_ms_per_row"] or {}
                cpu_text = " + ".join(f"{part} {ms:.2f}" for part, ms in cpu.items())
                load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
                print(
                    f"{r['engine']:>6} {r['rows']:>7} rows: {r['seconds']:7.1f} s, {r['rows'] / r['seconds']:7.1f} rows/s "
                    f"({steady or float('nan'):.1f} from 10% to 90%), "
                    f"driver peak RSS {r['peak_mb']:7.0f} MB (RSS at {at} MB), missing {r['missing']}; "
                    f"CPU ms per row {sum(cpu.values()):.2f} ({cpu_text}); load average {load}",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()

"""The end of a run over N records: the driver's peak memory of the metrics and outputs step.

    python benchmarks/bench_metrics.py [--rows 1000000] [--paths pass stream all]

Writes ``--rows`` synthetic records of a declared label task (``macro_f1``, split ``dev``: gold
answers, so the dev-only quality numbers and the confidence map are computed too) in the shape
`longicl.records.SampleRecord` writes them (one request each, with its dynamic demonstration ids,
raw reply, label scores, usage: about 2 KB a line, as in a real run's records), then, in a fresh
process per path, runs what a run does after its last row:

- ``pass`` (what the runner does): `longicl.runner.end_of_task`, the one pass: an index of byte
  offsets (`RunDir.record_index`), then each sample's latest record read once, typed once
  (`SampleRecord` of its `summary_record`), its prediction written to the predictions file as it
  comes and the record fed to every summary (`run_summary.TaskTallies`: `MetricsTally`, the method
  report, the quality numbers: one-pass tallies, with bounded samples for curves and fits);
- ``stream`` (the runner before the one pass): each record's `summary_record` kept in a dict,
  then handed to `aggregate`, `task_report`, `task_quality`;
- ``all`` (before that): every record read back whole (`RunDir.all_records`) and handed to the
  same summaries.

Each prints its seconds and peak RSS (``ru_maxrss``). Nothing is asserted.
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
TASK = "bench-mood"


def write_run(folder: Path, rows: int) -> Path:
    """A task file, its CSV (a few labelled rows: the data is not what is measured) and a run
    directory whose records hold ``rows`` samples."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TASK}.csv").write_text(
        "tweet_id,text,mood\n" + "".join(f"{i},word {i},{'fine' if i % 3 else 'down'}\n" for i in range(40))
    )
    task = folder / f"{TASK}.yaml"
    task.write_text(
        f"name: {TASK}\ndefinition: Decide the mood. Answer 'down' or 'fine'.\ndata: {TASK}.csv\n"
        "id_column: tweet_id\ninput: text\noutput_column: mood\nanswer: label\nlabels: [down, fine]\n"
        "min_icl_tokens: 10\nmetric: macro_f1\n"
    )
    out = folder / "out" / "records"
    out.mkdir(parents=True)
    rng = random.Random(0)
    with (out / f"{TASK}.jsonl").open("w") as handle:
        for i in range(rows):
            gold = "fine" if i % 3 else "down"
            fine = rng.random()
            answer = "fine" if fine > 0.3 else "down"
            scores = {"down": round(-fine * 3, 6), "fine": round(-(1 - fine) * 3, 6)}
            request = {
                "variant": 0,
                "static_block": "a" * 64,
                "static_demos": 120,
                "dynamic_demo_ids": [str(10_000_000 + rng.randrange(10**6)) for _ in range(60)],
                "prompt_tokens": 8300 + i % 50,
                "static_tokens": 8000,
                "icl_tokens": 8100 + i % 40,
                "uncached_tokens": 300 + i % 50,
                "raw_response": f"Output: {answer}",
                "reasoning": None,
                "parsed": answer,
                "answer": answer,
                "label_logprobs": scores,
                "calibrated_logprobs": None,
                "finish_reason": "stop",
                "usage": {"prompt_tokens": 8300, "completion_tokens": 3, "total_tokens": 8303},
                "latency_s": 0.1234,
                "attempts": 1,
                "server": "http://127.0.0.1:2026/v1",
                "error": None,
                "notes": [],
            }
            record = {
                "task": TASK,
                "sample_id": str(10_000_000 + i),
                "index": i,
                "prediction": answer,
                "parsed_ok": True,
                "parse_error": None,
                "gold": gold,
                "correct": float(answer == gold),
                "method": "icl",
                "error": None,
                "requests": [request],
                "vote": {
                    "rule": "majority",
                    "answer": answer,
                    "tally": {answer: 1.0},
                    "tie_break": None,
                    "agreement": 1.0,
                    "side": [],
                },
                "confidence": round(max(fine, 1 - fine), 6),
                "confidence_source": "label_scores",
                "decided_by": "text",
                "compliant": True,
            }
            handle.write(json.dumps(record) + "\n")
    return task


def child(path: str, folder: Path, task: Path) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from longicl.cli import compose_config
    from longicl.methods import task_report
    from longicl.metrics import aggregate
    from longicl.quality import task_quality
    from longicl.records import summary_record
    from longicl.rundir import RunDir
    from longicl.runner import settings_from_config

    settings = settings_from_config(
        compose_config(ROOT / "conf", [f"task={task}", "split=dev", "engine=dryrun", f"out_dir={folder}/out"])
    )
    spec = settings.tasks[0]
    rundir = RunDir(folder / "out")
    base_mb = _rss_mb()  # the interpreter and the imports, before any record is read
    started = time.perf_counter()
    if path == "pass":
        metrics, report, quality, rows = _one_pass(spec, settings, rundir)
    else:
        if path == "stream":
            records = {r["sample_id"]: summary_record(r) for r in rundir.latest_records(TASK)}
        else:
            records = rundir.all_records(TASK)
        predictions = [(sample_id, r.get("prediction") or "") for sample_id, r in records.items()]
        ordered = list(records.values())
        metrics = aggregate(ordered, 0.0, spec)
        report = task_report(spec, records, settings.method, rundir.path, "dev")
        quality = task_quality(spec, ordered, "dev", rundir.path)
        rundir.write_predictions(TASK, predictions, id_key="tweet_id")
        rows = len(records)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "path": path,
                "rows": rows,
                "seconds": seconds,
                "peak_mb": peak_mb,
                "base_mb": base_mb,
                "score": metrics.score,
                "report_keys": sorted(report),
                "quality_keys": sorted(quality),
            }
        )
    )


def _one_pass(spec, settings, rundir):
    """`runner.end_of_task` over every record of the file (all of them the run's samples)."""
    from types import SimpleNamespace

    from longicl.runner import end_of_task

    ids = list(rundir.record_index(TASK))
    data = SimpleNamespace(spec=spec, table=None, id_key="tweet_id", raw_id=lambda sample_id: sample_id)
    task_run = SimpleNamespace(spec=spec, samples=[SimpleNamespace(id=i) for i in ids], data=data)
    del ids
    totals = end_of_task(task_run, rundir, settings, SimpleNamespace(answers=True), time.monotonic())
    return totals.metrics, totals.method, totals.quality, totals.metrics.n


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument(
        "--paths",
        nargs="+",
        default=["pass", "stream", "all"],
        choices=["pass", "stream", "all"],
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            task = write_run(Path(tmp), rows)
            size = (Path(tmp) / "out" / "records" / f"{TASK}.jsonl").stat().st_size
            print(
                f"{rows} records written ({size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
            for path in args.paths:
                done = subprocess.run(
                    [sys.executable, __file__, "--child", path, tmp, str(task)],
                    capture_output=True,
                    text=True,
                )
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                if not lines:
                    print(f"{path} {rows} rows failed:\n{done.stderr[-2000:]}", flush=True)
                    continue
                r = json.loads(lines[-1])
                print(
                    f"{r['path']:>6} {r['rows']:>8} records: {r['seconds']:7.1f} s, peak RSS {r['peak_mb']:7.0f} MB, "
                    f"{r['base_mb']:.0f} MB before the first record: "
                    f"{(r['peak_mb'] - r['base_mb']) * 1024 / r['rows']:.2f} KB a record, macro F1 {r['score']:.4f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

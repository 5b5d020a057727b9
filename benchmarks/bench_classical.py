"""Wall time and dev accuracy of the classical engine, task by task, without the prompt builder.

    python benchmarks/bench_classical.py                    # dev split, cold cache (a temp dir)
    python benchmarks/bench_classical.py --warm             # then again from the cache it wrote
    python benchmarks/bench_classical.py --tasks 2,5,6 --set 5.C=10 --set 5.classifier=linear_svc

Each task is prepared on its split's demonstration pool (the engine's ``prepare``: fit, or load
from the cache) and every sample is answered through ``complete`` and the usual parser, exactly
as ``python main.py engine=classical`` does minus the prompts. Prints, per task: the model, the
pool size, seconds to prepare and to predict, accuracy and the majority-label baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from longicl.data import load_task, split
from longicl.engines.base import ChatRequest
from longicl.engines.classical import ClassicalEngine
from longicl.metrics import score
from longicl.parse import parse_answer
from longicl.tasks import TaskSpec, resolve_tasks

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="all", help="task ids, e.g. 2,5,6 (default: all)")
    parser.add_argument("--split", default="dev", choices=("dev", "test"))
    parser.add_argument("--dev-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "openseek")
    parser.add_argument("--config", type=Path, default=ROOT / "conf" / "engine" / "classical.yaml")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temp dir (cold)")
    parser.add_argument("--warm", action="store_true", help="run a second pass from the cache")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TASK.KEY=VALUE",
        help="override a model setting, e.g. 5.C=10 (VALUE is read as YAML)",
    )
    return parser.parse_args(argv)


def model_settings(config: Path, overrides: list[str]) -> dict:
    settings = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else {}
    models = {str(k): dict(v or {}) for k, v in (settings.get("models") or {}).items()}
    for item in overrides:
        target, _, value = item.partition("=")
        task, _, key = target.partition(".")
        if not (task and key and value):
            raise SystemExit(f"--set {item!r}: expected TASK.KEY=VALUE")
        models.setdefault(task, {})[key] = yaml.safe_load(value)
    return models


async def bench_task(engine: ClassicalEngine, spec: TaskSpec, args: argparse.Namespace) -> dict:
    data = load_task(spec, args.data_dir)
    parts = split(data, args.split, dev_size=args.dev_size, seed=args.seed)
    started = time.perf_counter()
    await engine.prepare(spec, parts.pool)
    prepared = time.perf_counter() - started
    started = time.perf_counter()
    correct, scored = 0.0, 0
    for sample in parts.samples:
        request = ChatRequest(task=spec, sample=sample, messages=[], max_tokens=1)
        completion = await engine.complete(request)
        parsed = parse_answer(spec, completion.text) if completion.error is None else None
        value = score(spec, parsed.value if parsed and parsed.ok else "", sample.output)
        if value is not None:
            correct += value
            scored += 1
    predicted = time.perf_counter() - started
    majority = None
    if spec.is_closed and args.split == "dev":
        top = Counter(ex.output for ex in parts.pool).most_common(1)[0][0]
        majority = sum(ex.output == top for ex in parts.samples) / len(parts.samples)
    model = engine.model_for(spec)
    return {
        "task": spec.name,
        "model": model.kind if model else "-",
        "pool": len(parts.pool),
        "n": len(parts.samples),
        "source": engine.sources.get(spec.name, "-"),
        "prepare_s": prepared,
        "predict_s": predicted,
        "accuracy": correct / scored if scored else None,
        "majority": majority,
    }


def print_table(title: str, rows: list[dict], total: float) -> None:
    print(f"\n{title}")
    header = f"{'task':<11} {'model':<12} {'pool':>5} {'n':>4} {'source':<6} {'prepare_s':>9} {'predict_s':>9} {'accuracy':>8} {'majority':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        maj = "-" if r["majority"] is None else f"{r['majority']:.3f}"
        print(
            f"{r['task']:<11} {r['model']:<12} {r['pool']:>5} {r['n']:>4} {r['source']:<6} "
            f"{r['prepare_s']:>9.2f} {r['predict_s']:>9.2f} {acc:>8} {maj:>8}"
        )
    print(f"total wall time: {total:.1f} s")


async def one_pass(args: argparse.Namespace, cache_dir: Path, models: dict) -> tuple[list[dict], float]:
    engine = ClassicalEngine(cache_dir=cache_dir, models=models)
    started = time.perf_counter()
    rows = [await bench_task(engine, spec, args) for spec in resolve_tasks(args.tasks)]
    return rows, time.perf_counter() - started


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    models = model_settings(args.config, args.set)
    with tempfile.TemporaryDirectory(prefix="bench-classical-") as temp:
        cache_dir = args.cache_dir or Path(temp)
        rows, total = asyncio.run(one_pass(args, cache_dir, models))
        print_table(f"{args.split} split, cache {cache_dir} (first pass)", rows, total)
        if args.warm:
            rows, total = asyncio.run(one_pass(args, cache_dir, models))
            print_table(f"{args.split} split, cache {cache_dir} (second pass)", rows, total)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""How well per-sample confidence separates right from wrong answers, on the noisy fake server.

    python benchmarks/bench_confidence.py                 # tasks 5 (labels) and 1 (integers), 60 dev samples
    python benchmarks/bench_confidence.py --limit 100 --seeds 0,1,2

The fake model (tests/fake_server.py, ``NoisyAnswers``) is right with a per-query probability
and reports that probability, sharpened (over-confident), at the label token. For each setting
it prints the dev accuracy, the AUROC of the confidence for right vs wrong answers (0.5 is
chance), the ECE of the raw confidence and of the isotonic-calibrated one (5-fold cross-fitted),
and the accuracy of the 80% most confident answers. Settings: label log-probabilities (K=1),
agreement of K=5 variants without log-probabilities, and both (K=5 with log-probabilities).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import compose  # noqa: E402
from fake_server import FakeServer, GoldAnswers, NoisyAnswers  # noqa: E402

from longicl.quality.summary import task_quality  # noqa: E402
from longicl.rundir import RunDir  # noqa: E402
from longicl.runner import run  # noqa: E402
from longicl.tasks import TASKS  # noqa: E402

SETTINGS = {
    "logprob K=1": ["method.self_consistency=1"],
    "agreement K=5": ["method.self_consistency=5", "method.logprobs=null"],
    "both K=5": ["method.self_consistency=5"],
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="5,1")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--seeds", default="0", help="answer-noise seeds of the fake model")
    args = parser.parse_args(argv)
    gold = GoldAnswers(ROOT / "data" / "openseek")
    labels = {t.id: t.labels for t in TASKS.values() if t.labels}
    print(
        f"{'task':<11} {'setting':<14} {'seed':>4} {'n':>4} {'acc':>6} {'AUROC':>6} {'ECE raw':>8} {'ECE cal':>8} {'acc@80%':>8} {'s':>6}"
    )
    for seed in [int(s) for s in args.seeds.split(",")]:
        with FakeServer(NoisyAnswers(gold, labels, seed=seed)) as server:
            for task_id in [int(t) for t in args.tasks.split(",")]:
                spec = TASKS[task_id]
                for name, overrides in SETTINGS.items():
                    if name.startswith("logprob") and not spec.is_closed:
                        continue  # no label scores: a single answer has no confidence
                    with tempfile.TemporaryDirectory() as out:
                        started = time.monotonic()
                        run(
                            compose(
                                f"task={task_id}",
                                "split=dev",
                                f"limit={args.limit}",
                                *overrides,
                                f"engine.base_url={server.url}",
                                f"out_dir={out}",
                            )
                        )
                        records = list(RunDir(Path(out)).all_records(spec.name).values())
                        conf = task_quality(spec, records, "dev", None)["confidence"]
                        at80 = next(p for p in conf["coverage_accuracy"] if p["coverage"] == 0.8)["accuracy"]
                        print(
                            f"{spec.name:<11} {name:<14} {seed:>4} {len(records):>4} {conf['accuracy']:>6.3f} "
                            f"{_f(conf['auroc'])} {_f(conf['ece_raw'], 8)} {_f(conf.get('ece_calibrated_cv'), 8)} "
                            f"{at80:>8.3f} {time.monotonic() - started:>6.1f}",
                            flush=True,
                        )
    return 0


def _f(value: float | None, width: int = 6) -> str:
    return f"{value:>{width}.3f}" if value is not None else f"{'-':>{width}}"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

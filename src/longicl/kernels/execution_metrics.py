"""Task 8 numbers for run.json, from the records `KernelAnnotator` writes (``record["kernel"]``).

The organisers score an answer by calling its wrapper (call accuracy) and comparing its outputs
with the reference implementation's (execution accuracy). Without their references, the closest
measurements here are the checker's, on small generated inputs:

* ``call_rate``: the answer's wrapper ran and returned (``callable``);
* ``agree_rate``: the answer is a Triton module whose outputs matched a PyTorch reference written
  by the model for the same description (an independent implementation, not ground truth);
  ``agree_rate_checked`` divides by the samples where such a reference passed;
* ``passed_rate``: every applicable checker stage passed (with or without a reference);
* on dev, against the gold module of each held-out example: ``gold.callable_rate`` (the checker's
  ceiling on this machine: golds that run here), ``vs_gold.agree_rate`` (answers that match the
  gold, among samples whose gold passed).

``kernel_metrics(records)`` also lists every sample's final stage, so a run.json shows where
answers fail without opening the records.

`KernelTally` computes the same in one pass over the records (``add`` each, then ``result``),
keeping counts, a running sum, a bounded sample of the check times for their median (exact up to
`CURVE_SAMPLE` checks; past it ``check_seconds`` gains ``sampled``) and, with ``samples``, the list
of samples (one small entry per checked sample, output content; past `CURVE_SAMPLE` entries the
first ones are listed and ``samples_listed`` says how many).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

from longicl.records import AnyRecord, as_record
from longicl.reservoir import CURVE_SAMPLE, Reservoir

__all__ = ["KernelTally", "kernel_metrics"]


def _rate(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def kernel_metrics(records: Iterable[AnyRecord], *, samples: bool = True) -> dict[str, Any]:
    """Checker-measured rates over one task's records; records without ``kernel`` (dry run,
    another annotator) count in ``n`` but not in the rates' numerators."""
    tally = KernelTally(samples=samples)
    for record in records:
        tally.add(record)
    return tally.result()


class KernelTally:
    """`kernel_metrics` in one pass: ``add`` every record, then ``result``."""

    def __init__(self, *, samples: bool = True) -> None:
        self.samples = samples
        self.n = 0
        self.with_code = 0
        self.checked = 0
        self.count: Counter[str] = Counter()  # the checked samples' yes/no facts, by name
        self.final: Counter[Any] = Counter()
        self.stages: Counter[Any] = Counter()
        self.kinds: Counter[Any] = Counter()
        self.repair_rounds: Counter[str] = Counter()
        self.check_total: float = 0  # as sum() adds them, in order
        self.check_seconds: Reservoir[float] = Reservoir(CURVE_SAMPLE)
        self.gold: Counter[str] = Counter()
        self.gold_stages: Counter[Any] = Counter()
        self.gold_kinds: Counter[Any] = Counter()
        self.vs_gold: Counter[str] = Counter()
        self.vs_gold_stages: Counter[Any] = Counter()
        # one small entry per checked sample: output content (run.json lists them), bounded
        self.listed: list[dict[str, Any]] = []

    def add(self, record: AnyRecord) -> None:
        r = as_record(record)
        self.n += 1
        self.with_code += bool(r.prediction)
        k = r.kernel or {}
        if not k:
            return
        self.checked += 1
        candidates = k.get("candidates") or []
        facts = {
            "callable": bool(k.get("callable")),
            "agrees": k.get("agrees") is True,
            "passed": k.get("stage") == "passed",
            "with_reference": bool((candidates or [{}])[-1].get("against_reference")),
            "triton_passed": any(c.get("passed") for c in candidates if c.get("source") == "triton"),
            "first_try": bool((candidates or [{}])[0].get("passed")),
            "uses_triton": bool(k.get("uses_triton")),
            "reference_passed": bool(k.get("reference_passed")),
        }
        self.count.update(name for name, yes in facts.items() if yes)
        self.final[k.get("final", "none")] += 1
        self.stages[k.get("stage")] += 1
        self.kinds[k.get("kind") or "none"] += 1
        self.repair_rounds[str(k.get("repair_rounds", 0))] += 1
        for c in [*candidates, k.get("reference") or {}]:
            if c:
                seconds = float(c.get("seconds") or 0.0)
                self.check_total += seconds
                self.check_seconds.add(seconds)
        gold = k.get("gold")
        if gold:
            self.gold["checked"] += 1
            self.gold["callable"] += bool(gold.get("callable"))
            self.gold["passed"] += bool(gold.get("passed"))
            self.gold["cuda_shim_used"] += bool(gold.get("cuda_shim_used"))
            self.gold_stages[gold.get("stage")] += 1
            self.gold_kinds[gold.get("kind") or "none"] += 1
        vs_gold = k.get("vs_gold")
        if vs_gold:
            self.vs_gold["checked"] += 1
            self.vs_gold["callable"] += bool(vs_gold.get("callable"))
            self.vs_gold["agrees"] += vs_gold.get("agrees") is True
            self.vs_gold_stages[vs_gold.get("stage")] += 1
        if self.samples and len(self.listed) < CURVE_SAMPLE:
            self.listed.append(
                {
                    "sample_id": r.sample_id,
                    "final": k.get("final"),
                    "callable": k.get("callable"),
                    "agrees": k.get("agrees"),
                    "stage": k.get("stage"),
                    "kind": k.get("kind"),
                    **({"gold_agrees": (vs_gold or {}).get("agrees")} if gold else {}),
                }
            )

    def result(self) -> dict[str, Any]:
        n, count = self.n, self.count
        seconds = self.check_seconds
        out: dict[str, Any] = {
            "n": n,
            "checked": self.checked,
            "with_code": self.with_code,
            "callable": count["callable"],
            "call_rate": _rate(count["callable"], n),
            "agrees": count["agrees"],
            "agree_rate": _rate(count["agrees"], n),
            "agree_rate_checked": _rate(count["agrees"], count["with_reference"]),
            "passed": count["passed"],
            "passed_rate": _rate(count["passed"], n),
            "uses_triton": count["uses_triton"],
            "triton_passed_first_try": count["first_try"],
            "triton_passed_any_round": count["triton_passed"],
            "reference_passed": count["reference_passed"],
            "final": dict(self.final.most_common()),
            "stages": dict(self.stages.most_common()),
            "kinds": dict(self.kinds.most_common()),
            "repair_rounds": dict(sorted(self.repair_rounds.items())),
            "check_seconds": {
                "total": round(self.check_total, 1),
                # the median of a sample past CURVE_SAMPLE checks (then ``sampled``)
                "median": round(statistics.median(seconds.items()), 3) if seconds.seen else None,
                "checks": seconds.seen,
                **({"sampled": len(seconds)} if seconds.sampled else {}),
            },
        }
        if self.gold["checked"]:
            gold = self.gold
            out["gold"] = {
                "checked": gold["checked"],
                "callable": gold["callable"],
                "callable_rate": _rate(gold["callable"], gold["checked"]),
                "passed": gold["passed"],
                "stages": dict(self.gold_stages.most_common()),
                "kinds": dict(self.gold_kinds.most_common()),
                "cuda_shim_used": gold["cuda_shim_used"],
            }
            out["vs_gold"] = {
                "checked": self.vs_gold["checked"],
                "callable": self.vs_gold["callable"],
                "agrees": self.vs_gold["agrees"],
                "agree_rate": _rate(
                    self.vs_gold["agrees"], gold["passed"]
                ),  # among samples whose gold passed
                "stages": dict(self.vs_gold_stages.most_common()),
            }
        if self.samples:
            out["samples"] = list(self.listed)
            if self.checked > len(self.listed):
                out["samples_listed"] = len(self.listed)
        return out

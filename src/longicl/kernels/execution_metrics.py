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
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

from longicl.records import AnyRecord, as_record

__all__ = ["kernel_metrics"]


def _rate(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def kernel_metrics(records: Iterable[AnyRecord], *, samples: bool = True) -> dict[str, Any]:
    """Checker-measured rates over one task's records; records without ``kernel`` (dry run,
    another annotator) count in ``n`` but not in the rates' numerators."""
    rows = [as_record(r) for r in records]
    n = len(rows)
    kernels = [r.kernel or {} for r in rows]
    checked = [k for k in kernels if k]
    callable_ = sum(1 for k in checked if k.get("callable"))
    agrees = sum(1 for k in checked if k.get("agrees") is True)
    passed = sum(1 for k in checked if k.get("stage") == "passed")
    with_reference = sum(1 for k in checked if (k.get("candidates") or [{}])[-1].get("against_reference"))
    triton_passed = sum(
        1
        for k in checked
        if any(c.get("passed") for c in k.get("candidates") or [] if c.get("source") == "triton")
    )
    first_try = sum(1 for k in checked if (k.get("candidates") or [{}])[0].get("passed"))
    check_seconds = [
        float(c.get("seconds") or 0.0)
        for k in checked
        for c in [*(k.get("candidates") or []), k.get("reference") or {}]
        if c
    ]
    out: dict[str, Any] = {
        "n": n,
        "checked": len(checked),
        "with_code": sum(1 for r in rows if r.prediction),
        "callable": callable_,
        "call_rate": _rate(callable_, n),
        "agrees": agrees,
        "agree_rate": _rate(agrees, n),
        "agree_rate_checked": _rate(agrees, with_reference),
        "passed": passed,
        "passed_rate": _rate(passed, n),
        "uses_triton": sum(1 for k in checked if k.get("uses_triton")),
        "triton_passed_first_try": first_try,
        "triton_passed_any_round": triton_passed,
        "reference_passed": sum(1 for k in checked if k.get("reference_passed")),
        "final": dict(Counter(k.get("final", "none") for k in checked).most_common()),
        "stages": dict(Counter(k.get("stage") for k in checked).most_common()),
        "kinds": dict(Counter(k.get("kind") or "none" for k in checked).most_common()),
        "repair_rounds": dict(sorted(Counter(str(k.get("repair_rounds", 0)) for k in checked).items())),
        "check_seconds": {
            "total": round(sum(check_seconds), 1),
            "median": round(statistics.median(check_seconds), 3) if check_seconds else None,
            "checks": len(check_seconds),
        },
    }
    golds = [k["gold"] for k in checked if k.get("gold")]
    if golds:
        gold_ok = sum(1 for g in golds if g.get("passed"))
        vs_gold = [k["vs_gold"] for k in checked if k.get("vs_gold")]
        matched = sum(1 for v in vs_gold if v.get("agrees") is True)
        out["gold"] = {
            "checked": len(golds),
            "callable": sum(1 for g in golds if g.get("callable")),
            "callable_rate": _rate(sum(1 for g in golds if g.get("callable")), len(golds)),
            "passed": gold_ok,
            "stages": dict(Counter(g.get("stage") for g in golds).most_common()),
            "kinds": dict(Counter(g.get("kind") or "none" for g in golds).most_common()),
            "cuda_shim_used": sum(1 for g in golds if g.get("cuda_shim_used")),
        }
        out["vs_gold"] = {
            "checked": len(vs_gold),
            "callable": sum(1 for v in vs_gold if v.get("callable")),
            "agrees": matched,
            "agree_rate": _rate(matched, gold_ok),  # among samples whose gold passed
            "stages": dict(Counter(v.get("stage") for v in vs_gold).most_common()),
        }
    if samples:
        out["samples"] = [
            {
                "sample_id": r.sample_id,
                "final": k.get("final"),
                "callable": k.get("callable"),
                "agrees": k.get("agrees"),
                "stage": k.get("stage"),
                "kind": k.get("kind"),
                **({"gold_agrees": (k.get("vs_gold") or {}).get("agrees")} if k.get("gold") else {}),
            }
            for r, k in zip(rows, kernels, strict=True)
            if k
        ]
    return out

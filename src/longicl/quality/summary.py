"""What run.json says about a task's annotation quality, and the confidence map a dev run fits.

`task_quality` is merged into the task's run.json entry by the runner (key ``quality``):

- ``confidence``: how many records have one and from which sources, a histogram, and on dev
  (gold known) the AUROC of confidence for right vs wrong answers, ECE raw and calibrated (the
  calibrated one cross-fitted over 5 folds), the reliability-diagram bins, the coverage-accuracy
  table; with a confidence map applied, the ECE of the applied confidences too;
- ``agreement``: Fleiss' kappa across the K variants (K >= 2), Cohen's kappa of the model vs
  each side voter (the classical annotator), and vs gold on dev;
- ``audit``: on dev, the labelled examples the model contradicts with confidence >= 0.8.

On dev with enough confidences it fits the isotonic `ConfidenceMap` and merges it into
``out_dir/calibration.json`` (key ``confidence`` of the task's entry), which a later run applies
with ``method.calibration=<that file>``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from longicl.files import atomic_write_json
from longicl.methods.calibration import MIN_CONFIDENCE_ROWS, ConfidenceMap, cross_fitted_confidence
from longicl.metrics import score
from longicl.parse import normalise
from longicl.quality import agreement as ag
from longicl.quality import confidence_metrics as qm
from longicl.quality.audit import THRESHOLD, audit
from longicl.quality.confidence import model_prediction, of_record
from longicl.records import AnyRecord, SampleRecord, as_record
from longicl.tasks import TaskSpec

CALIBRATION_FILE = "calibration.json"  # the file longicl.methods.report writes label biases into
HISTOGRAM_BINS = 10


def task_quality(
    spec: TaskSpec,
    records: Sequence[AnyRecord] | Mapping[str, AnyRecord],
    split: str,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The ``quality`` entry of one task in run.json (see the module docstring)."""
    rows = [
        r
        for r in map(as_record, records.values() if isinstance(records, Mapping) else records)
        if r.vote is not None
    ]
    if not rows:
        return {}

    def key(answer: str) -> str:
        return normalise(spec, answer)

    confidences = [(r, of_record(r, key)) for r in rows]
    scored = [(r, c) for r, c in confidences if c.value is not None]
    values = [float(c.value) for _, c in scored]
    out: dict[str, Any] = {
        "confidence": {
            "samples": len(rows),
            "with_confidence": len(scored),
            "sources": dict(sorted(Counter(str(c.source) for _, c in scored).items())),
            "mean": _round(float(np.mean(values))) if values else None,
            "histogram": _histogram(values),
        }
    }
    gold_rows = [(r, c) for r, c in scored if r.gold is not None and spec.metric == "exact_match"]
    if split == "dev" and gold_rows:
        correct = [score(spec, model_prediction(r), r.gold) or 0.0 for r, _ in gold_rows]
        raw = [float(c.value) for _, c in gold_rows]
        out["confidence"].update(_dev_numbers(raw, correct, gold_rows))
        if out_dir is not None and len(raw) >= MIN_CONFIDENCE_ROWS:
            fitted = ConfidenceMap.fit(raw, correct)
            _merge_confidence_map(Path(out_dir) / CALIBRATION_FILE, spec.name, fitted, len(raw))
            out["confidence"]["written"] = CALIBRATION_FILE
    out["agreement"] = _agreement(spec, rows, split, key)
    if split == "dev":
        suspects = audit(spec, rows, THRESHOLD)
        out["audit"] = {"threshold": THRESHOLD, "suspects": [s.to_dict() for s in suspects]}
    return out


def _dev_numbers(
    raw: list[float], correct: list[float], gold_rows: Sequence[tuple[SampleRecord, Any]]
) -> dict[str, Any]:
    numbers: dict[str, Any] = {
        "auroc": _round(qm.auroc(raw, correct)),
        "accuracy": _round(float(np.mean(correct))),
        "ece_raw": _round(qm.ece(raw, correct)),
        "reliability_raw": qm.bins_as_dicts(qm.reliability(raw, correct)),
        "coverage_accuracy": [
            {k: _round(v) for k, v in p.items()} for p in qm.coverage_accuracy(raw, correct)
        ],
    }
    if len(raw) >= MIN_CONFIDENCE_ROWS:
        calibrated = cross_fitted_confidence(raw, correct)
        numbers["ece_calibrated_cv"] = _round(qm.ece(calibrated, correct))
        numbers["reliability_calibrated_cv"] = qm.bins_as_dicts(qm.reliability(calibrated, correct))
    stored = [r.confidence or {} for r, _ in gold_rows]
    applied = [s.get("confidence") for s in stored]
    if any("|" in str(s.get("confidence_source") or "") for s in stored) and None not in applied:
        numbers["ece_applied"] = _round(qm.ece([float(v) for v in applied], correct))
    return numbers


def _agreement(spec: TaskSpec, rows: Sequence[SampleRecord], split: str, key) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ratings = ag.variant_ratings(rows, key)
    if ratings and len(ratings[0]) >= 2:
        out["variants"] = {
            "k": len(ratings[0]),
            "samples": len(ratings),
            "fleiss_kappa": _round(ag.fleiss_kappa(ratings)),
        }
    for source, (mine, theirs) in sorted(ag.side_pairs(rows, key).items()):
        out[f"vs_{source}"] = {
            "samples": len(mine),
            "cohen_kappa": _round(ag.cohen_kappa(mine, theirs)),
            "agreement": _round(float(np.mean([a == b for a, b in zip(mine, theirs, strict=True)]))),
        }
    if split == "dev" and spec.metric == "exact_match":
        pairs = [(key(model_prediction(r)), key(str(r.gold))) for r in rows if r.gold is not None]
        if pairs:
            mine, gold = [p[0] for p in pairs], [p[1] for p in pairs]
            out["vs_gold"] = {"samples": len(pairs), "cohen_kappa": _round(ag.cohen_kappa(mine, gold))}
    return out


def _histogram(values: Sequence[float]) -> dict[str, list]:
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return {"edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}


def _merge_confidence_map(path: Path, task: str, fitted: ConfidenceMap, samples: int) -> None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc = doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        doc = {}
    entry = dict(doc.get(task) or {})
    entry["confidence"] = {**fitted.to_dict(), "dev_samples": samples}
    doc[task] = entry
    atomic_write_json(path, dict(sorted(doc.items())))


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)

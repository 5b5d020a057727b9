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

`QualityTally` computes the entry in one pass over the records (``add`` each, then ``result``)
with memory bounded in the rows: counts, running sums and count tables (kappas from scikit-learn
with integer ``sample_weight``), and for what needs every point (AUROC, ECE, reliability,
coverage-accuracy, the isotonic fit and its cross-fitting, the mean confidence) the first
`CURVE_SAMPLE` points, then a seeded sample of them (`longicl.reservoir`). Up to `CURVE_SAMPLE`
points the entry is the one the whole list gives, byte for byte; past it, ``confidence`` gains
``sampled`` (the points the curves were estimated from) beside the true counts. Per-row state that
stays: the audit's suspects (output content, only contradicted dev examples), and count tables
keyed by distinct answers (as many as there are distinct answers).
"""

from __future__ import annotations

import hashlib
import json
import math
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from longicl.files import atomic_write_json
from longicl.methods.calibration import MIN_CONFIDENCE_ROWS, ConfidenceMap, cross_fitted_confidence
from longicl.metrics import score
from longicl.parse import normalise
from longicl.quality import agreement as ag
from longicl.quality import confidence_metrics as qm
from longicl.quality.audit import THRESHOLD, Suspects
from longicl.quality.confidence import model_prediction, of_record
from longicl.records import AnyRecord, SampleRecord, as_record
from longicl.reservoir import CURVE_SAMPLE, Reservoir
from longicl.tasks import TaskSpec

CALIBRATION_FILE = "calibration.json"  # the file longicl.methods.report writes label biases into
HISTOGRAM_BINS = 10
# Cohen's kappa through scikit-learn's confusion matrix up to this many distinct answers (a
# matrix of their square: 8 MB at 1,000), from the counts alone past it (`_cohen_kappa`)
DENSE_ANSWERS = 1_000
LONGEST_KEPT_ANSWER = 64  # longer answers are counted by a digest (`_answer_key`)
_HISTOGRAM_CHUNK = 4096  # confidences binned at a time (a value's bin depends on it alone)


def task_quality(
    spec: TaskSpec,
    records: Sequence[AnyRecord] | Mapping[str, AnyRecord],
    split: str,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The ``quality`` entry of one task in run.json (see the module docstring)."""
    tally = QualityTally(spec, split, out_dir)
    for record in records.values() if isinstance(records, Mapping) else records:
        tally.add(record)
    return tally.result()


@dataclass
class _Variants:
    """The variant ratings of the rows with one number of variants ``k`` (Fleiss' kappa)."""

    rows: int = 0
    categories: Counter[str] = field(default_factory=Counter)  # answer -> ratings
    squares: Counter[int] = field(default_factory=Counter)  # a row's sum of squared counts -> rows
    # the same per row, in order, while there are at most CURVE_SAMPLE rows (numpy's mean of them)
    ordered: array | None = field(default_factory=lambda: array("q"))


class QualityTally:
    """`task_quality` in one pass: ``add`` every record, then ``result`` (which writes the
    confidence map into ``out_dir/calibration.json`` as `task_quality` does)."""

    def __init__(self, spec: TaskSpec, split: str, out_dir: str | Path | None = None) -> None:
        self.spec = spec
        self.split = split
        self.out_dir = out_dir
        self.samples = 0
        self.with_confidence = 0
        self.sources: Counter[str] = Counter()
        self.values: list[float] | None = []  # every confidence while at most CURVE_SAMPLE
        self.value_total = 0.0  # their running sum (the mean past CURVE_SAMPLE)
        self.histogram = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
        self._pending: list[float] = []  # confidences not binned yet
        self.dev = split == "dev" and spec.metric == "exact_match"
        # dev rows with gold and a confidence: (raw confidence, correct, confidence as applied)
        self.points: Reservoir[tuple[float, float, Any]] = Reservoir(CURVE_SAMPLE)
        self.hits = 0.0
        self.mapped = False  # some stored confidence went through a confidence map
        self.unmapped = False  # some stored confidence is missing
        self.variants: dict[int, _Variants] = {}
        self.side: dict[str, Counter[tuple[str, str]]] = {}  # source -> (model, side voter) -> rows
        self.vs_gold: Counter[tuple[str, str]] = Counter()  # (model, gold) -> rows
        self.suspects = Suspects(spec, THRESHOLD) if split == "dev" else None

    def key(self, answer: str) -> str:
        return normalise(self.spec, answer)

    def add(self, record: AnyRecord) -> None:
        r = as_record(record)
        if r.vote is None:
            return
        self.samples += 1
        conf = of_record(r, self.key)
        if conf.value is not None:
            value = float(conf.value)
            self.with_confidence += 1
            self.sources[str(conf.source)] += 1
            self.value_total += value
            if self.values is not None:
                self.values.append(value)
                if len(self.values) > CURVE_SAMPLE:
                    self.values = None
            self._pending.append(value)
            if len(self._pending) >= _HISTOGRAM_CHUNK:
                self._bin()
            if self.dev and r.gold is not None:
                correct = score(self.spec, model_prediction(r), r.gold) or 0.0
                stored = r.confidence or {}
                self.mapped = self.mapped or "|" in str(stored.get("confidence_source") or "")
                applied = stored.get("confidence")
                self.unmapped = self.unmapped or applied is None
                self.hits += correct
                self.points.add((value, correct, applied))
        self._add_agreement(r)
        if self.suspects is not None:
            self.suspects.add(r)

    def _add_agreement(self, r: SampleRecord) -> None:
        key = self.key
        ratings = [
            _answer_key(key(str(q.get("answer") or ""))) if q.get("answer") else ag.UNREADABLE
            for q in r.request_entries
        ]
        k = self.variants.setdefault(len(ratings), _Variants())
        k.rows += 1
        counts = Counter(ratings)
        k.categories.update(counts)
        square = sum(c * c for c in counts.values())
        k.squares[square] += 1
        if k.ordered is not None:
            k.ordered.append(square)
            if len(k.ordered) > CURVE_SAMPLE:
                k.ordered = None
        sides = (r.vote or {}).get("side") or []
        if sides:
            model = ag.model_answer(r, key)
            for side in sides:
                if model is None or not side.get("answer"):
                    continue
                pairs = self.side.setdefault(str(side.get("source") or "side"), Counter())
                pairs[(_answer_key(model), _answer_key(key(str(side["answer"]))))] += 1
        if self.split == "dev" and self.spec.metric == "exact_match" and r.gold is not None:
            pair = (_answer_key(key(model_prediction(r))), _answer_key(key(str(r.gold))))
            self.vs_gold[pair] += 1

    def _bin(self) -> None:
        counts, _ = np.histogram(self._pending, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
        self.histogram += counts
        self._pending = []

    def result(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        self._bin()
        if self.values is not None:
            mean = _round(float(np.mean(self.values))) if self.values else None
        else:  # past CURVE_SAMPLE confidences: the running sum's
            mean = _round(self.value_total / self.with_confidence)
        _, edges = np.histogram([], bins=HISTOGRAM_BINS, range=(0.0, 1.0))
        out: dict[str, Any] = {
            "confidence": {
                "samples": self.samples,
                "with_confidence": self.with_confidence,
                "sources": dict(sorted(self.sources.items())),
                "mean": mean,
                "histogram": {
                    "edges": [round(float(e), 2) for e in edges],
                    "counts": [int(c) for c in self.histogram],
                },
            }
        }
        if self.split == "dev" and self.points.seen:
            points = self.points.items()
            raw = [p[0] for p in points]
            correct = [p[1] for p in points]
            numbers = self._dev_numbers(raw, correct, [p[2] for p in points])
            out["confidence"].update(numbers)
            if self.out_dir is not None and len(raw) >= MIN_CONFIDENCE_ROWS:
                fitted = ConfidenceMap.fit(raw, correct)
                sampled = {"sampled": len(raw)} if self.points.sampled else {}
                _merge_confidence_map(
                    Path(self.out_dir) / CALIBRATION_FILE, self.spec.name, fitted, self.points.seen, sampled
                )
                out["confidence"]["written"] = CALIBRATION_FILE
            if self.points.sampled:  # the curves and the fit are estimated from this many points
                out["confidence"]["sampled"] = len(raw)
        out["agreement"] = self._agreement()
        if self.suspects is not None:
            out["audit"] = {"threshold": THRESHOLD, "suspects": [s.to_dict() for s in self.suspects.result()]}
        return out

    def _dev_numbers(self, raw: list[float], correct: list[float], applied: list[Any]) -> dict[str, Any]:
        # the share right: of the kept points up to CURVE_SAMPLE (numpy's mean), else the exact count's
        accuracy = float(np.mean(correct)) if not self.points.sampled else self.hits / self.points.seen
        numbers: dict[str, Any] = {
            "auroc": _round(qm.auroc(raw, correct)),
            "accuracy": _round(accuracy),
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
        if self.mapped and not self.unmapped:
            numbers["ece_applied"] = _round(qm.ece([float(v) for v in applied], correct))
        return numbers

    def _agreement(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        k = max(self.variants)
        variants = self.variants[k]
        if k >= 2:
            out["variants"] = {
                "k": k,
                "samples": variants.rows,
                "fleiss_kappa": _round(_fleiss_kappa(k, variants)),
            }
        for source, pairs in sorted(self.side.items()):
            total = sum(pairs.values())
            matches = sum(n for (a, b), n in pairs.items() if a == b)
            out[f"vs_{source}"] = {
                "samples": total,
                "cohen_kappa": _round(_cohen_kappa(pairs)),
                # numpy's mean of the 0/1 matches: their exact sum over the count
                "agreement": _round(float(np.float64(matches) / total)),
            }
        if self.vs_gold:
            out["vs_gold"] = {
                "samples": sum(self.vs_gold.values()),
                "cohen_kappa": _round(_cohen_kappa(self.vs_gold)),
            }
        return out


def _fleiss_kappa(raters: int, variants: _Variants) -> float | None:
    """`agreement.fleiss_kappa` of the rows with ``raters`` ratings, from their count tables."""
    totals = np.array([variants.categories[c] for c in sorted(variants.categories)], dtype=float)
    if variants.ordered is not None:  # numpy's mean, as fleiss_kappa takes it, over the rows in order
        squares = np.frombuffer(variants.ordered, dtype=np.int64).astype(float)
        observed = float(((squares - raters) / (raters * (raters - 1))).mean())
    else:  # past CURVE_SAMPLE rows: the exact mean
        agreeing = sum(n * (square - raters) for square, n in variants.squares.items())
        observed = float(Fraction(agreeing, variants.rows * raters * (raters - 1)))
    shares = totals / totals.sum()
    expected = float((shares * shares).sum())
    if expected >= 1.0:
        return None  # every rating is the same category: agreement is total but kappa undefined
    return (observed - expected) / (1.0 - expected)


def _cohen_kappa(pairs: Counter[tuple[str, str]]) -> float | None:
    """`agreement.cohen_kappa` of the paired answers counted in ``pairs``: scikit-learn's, with the
    counts as integer sample weights (the same confusion matrix, the same number), while the
    answers are few; past `DENSE_ANSWERS` distinct answers (an open-answer task) from the counts
    alone, as one exact fraction, because scikit-learn's matrix grows with their square."""
    from sklearn.metrics import cohen_kappa_score

    total = sum(pairs.values())
    answers = {a for pair in pairs for a in pair}
    if total < 2 or len(answers) < 2:
        return None
    if len(answers) > DENSE_ANSWERS:
        return _sparse_cohen_kappa(pairs, total)
    a, b = zip(*pairs, strict=True)
    weights = np.fromiter(pairs.values(), dtype=np.int64, count=len(pairs))
    value = float(cohen_kappa_score(list(a), list(b), sample_weight=weights))
    return None if math.isnan(value) else value


def _sparse_cohen_kappa(pairs: Counter[tuple[str, str]], total: int) -> float | None:
    """Cohen's kappa (p_o - p_e) / (1 - p_e), in integers: n * agreeing - S over n * n - S, where
    S sums, over the answers, how often each annotator gave it (multiplied)."""
    first: Counter[str] = Counter()
    second: Counter[str] = Counter()
    agreeing = 0
    for (a, b), n in pairs.items():
        first[a] += n
        second[b] += n
        agreeing += n if a == b else 0
    chance = sum(n * second[a] for a, n in first.items())
    if total * total == chance:
        return None  # both always gave one and the same answer: kappa is undefined
    return float(Fraction(total * agreeing - chance, total * total - chance))


def _answer_key(answer: str) -> str:
    """An answer as the count tables keep it: itself when short, else a digest of it (equal
    answers, equal keys), so that a table of long free-text answers stays small."""
    if len(answer) <= LONGEST_KEPT_ANSWER:
        return answer
    return "\x00" + hashlib.blake2b(answer.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _merge_confidence_map(
    path: Path, task: str, fitted: ConfidenceMap, samples: int, extra: Mapping[str, Any] | None = None
) -> None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc = doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        doc = {}
    entry = dict(doc.get(task) or {})
    entry["confidence"] = {**fitted.to_dict(), "dev_samples": samples, **(extra or {})}
    doc[task] = entry
    atomic_write_json(path, dict(sorted(doc.items())))


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)

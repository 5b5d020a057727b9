"""How well confidences rank and mean: AUROC, ECE, reliability bins, coverage-accuracy.

All take parallel sequences of confidences in [0, 1] and correctness (1.0 / 0.0), one per
sample that has both; samples without a confidence are left out by the caller and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

BINS = 10
COVERAGES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    n: int
    confidence: float | None  # mean confidence in the bin
    accuracy: float | None


def auroc(confidence: Sequence[float], correct: Sequence[float]) -> float | None:
    """Area under the ROC curve of confidence as a detector of right answers (0.5: chance);
    None when only right or only wrong answers exist."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(correct, dtype=float) >= 0.5
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, np.asarray(confidence, dtype=float)))


def reliability(
    confidence: Sequence[float], correct: Sequence[float], bins: int = BINS
) -> list[ReliabilityBin]:
    """Equal-width confidence bins with their mean confidence and accuracy (the diagram's data)."""
    conf = np.asarray(confidence, dtype=float)
    hits = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        out.append(
            ReliabilityBin(
                float(edges[b]),
                float(edges[b + 1]),
                n,
                float(conf[mask].mean()) if n else None,
                float(hits[mask].mean()) if n else None,
            )
        )
    return out


def ece(confidence: Sequence[float], correct: Sequence[float], bins: int = BINS) -> float | None:
    """Expected calibration error: the bin-size-weighted mean |accuracy - confidence|."""
    total = len(confidence)
    if not total:
        return None
    return float(
        sum(
            b.n / total * abs(b.accuracy - b.confidence)
            for b in reliability(confidence, correct, bins)
            if b.n
        )
    )


def coverage_accuracy(
    confidence: Sequence[float], correct: Sequence[float], coverages: Sequence[float] = COVERAGES
) -> list[dict[str, float]]:
    """Accepting the most confident share ``coverage`` of the samples: their accuracy and the
    lowest confidence accepted ("accept the 80% most confident labels at 97% accuracy")."""
    if not confidence:
        return []
    order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
    conf = np.asarray(confidence, dtype=float)[order]
    hits = np.asarray(correct, dtype=float)[order]
    out = []
    for coverage in coverages:
        k = max(1, int(round(coverage * len(conf))))
        out.append(
            {
                "coverage": float(coverage),
                "n": k,
                "accuracy": float(hits[:k].mean()),
                "threshold": float(conf[k - 1]),
            }
        )
    return out


def curve(confidence: Sequence[float], correct: Sequence[float]) -> list[dict[str, float]]:
    """The whole coverage-accuracy curve, one point per accepted sample count (for plots)."""
    n = len(confidence)
    return coverage_accuracy(confidence, correct, [k / n for k in range(1, n + 1)]) if n else []


def bins_as_dicts(bins: Sequence[ReliabilityBin]) -> list[dict]:
    return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(b).items()} for b in bins]

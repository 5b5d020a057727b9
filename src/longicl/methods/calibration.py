"""Calibrating label scores: a per-label additive bias on the log-probabilities, fitted on dev.

An in-context learner's label probabilities are biased by the prompt (the demonstrations' label
mix and order, recency, the labels' surface form). Both corrections here add one bias per label
(and per prompt variant, since each variant is a different prompt) to the label log-probabilities
and renormalise:

- ``batch``: batch calibration (Zhou et al., 2023): the bias is minus the log of the mean label
  distribution the model predicts over the dev batch, so that on average no label is preferred.
  Like contextual calibration (Zhao et al., 2021), whose content-free "N/A" input it replaces by
  the batch, it needs no gold labels;
- ``bias``: the bias that maximises the likelihood of the dev gold labels (a multinomial logistic
  regression with the model's log-probabilities as a fixed offset, lightly L2-regularised). It
  also learns the true label prior; its dev accuracy is reported cross-fitted (5 folds), since
  an in-sample accuracy would flatter it.

`fit` returns every mode's parameters and dev accuracies; `out_dir/calibration.json` keeps them,
with ``use`` naming the mode with the best dev accuracy ("none" when no mode beats the raw
scores). A later run applies one with ``method.calibration=<path>``.

The same file also keeps, per task, a `ConfidenceMap` (``confidence``: isotonic regression of
dev correctness on the raw per-sample confidence of `longicl.quality.confidence`), which a run
with ``method.calibration=<path>`` applies to every record's confidence; it is fitted for every
answer kind, so an entry may have a confidence map and no label biases (text tasks).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from longicl.errors import UsageError
from longicl.methods.scoring import FLOOR, normalise

MODES = ("none", "batch", "bias")
POOLED = "*"  # the bias fitted on every variant's requests together
MIN_ROWS_PER_VARIANT = 20  # fewer requests of a variant: it uses the pooled bias
FOLDS = 5
L2 = 1.0


@dataclass(frozen=True)
class Row:
    """One request's label scores, with the sample's gold label (None on test)."""

    sample: int  # sample index (folds split by sample, so all variants of a sample stay together)
    variant: int
    logprobs: Mapping[str, float]
    gold: str | None = None


@dataclass(frozen=True)
class Calibration:
    labels: tuple[str, ...]
    mode: str = "none"
    bias: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # variant|"*" -> label -> b

    def apply(self, logprobs: Mapping[str, float], variant: int) -> dict[str, float]:
        if self.mode == "none" or not self.bias:
            return dict(logprobs)
        bias = self.bias.get(str(variant)) or self.bias.get(POOLED) or {}
        return normalise({label: logprobs[label] + bias.get(label, 0.0) for label in logprobs})

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "bias": {v: {k: round(b, 6) for k, b in labels.items()} for v, labels in self.bias.items()},
        }


def fit_batch(rows: Sequence[Row], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Batch calibration: per variant (and pooled), bias = -log(mean predicted distribution)."""

    def one(group: Sequence[Row]) -> dict[str, float]:
        probs = np.array([[math.exp(r.logprobs[label]) for label in labels] for r in group])
        mean = np.clip(probs.mean(axis=0), math.exp(FLOOR), None)
        return {label: float(-math.log(m)) for label, m in zip(labels, mean, strict=True)}

    return _per_variant(rows, one)


def fit_bias(rows: Sequence[Row], labels: Sequence[str], l2: float = L2) -> dict[str, dict[str, float]]:
    """Per variant (and pooled): the bias maximising the dev gold labels' likelihood."""

    def one(group: Sequence[Row]) -> dict[str, float]:
        scored = [r for r in group if r.gold in labels]
        if not scored:
            return {label: 0.0 for label in labels}
        x = np.array([[r.logprobs[label] for label in labels] for r in scored])
        y = np.array([labels.index(r.gold) for r in scored])

        def loss(b: np.ndarray) -> tuple[float, np.ndarray]:
            z = x + b
            z = z - z.max(axis=1, keepdims=True)
            log_q = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            q = np.exp(log_q)
            nll = -log_q[np.arange(len(y)), y].sum() + l2 * float(b @ b)
            grad = q.sum(axis=0) - np.bincount(y, minlength=len(labels)) + 2 * l2 * b
            return float(nll), grad

        result = minimize(loss, np.zeros(len(labels)), jac=True, method="L-BFGS-B")
        b = result.x - result.x.mean()
        return {label: float(v) for label, v in zip(labels, b, strict=True)}

    return _per_variant(rows, one)


def _per_variant(rows: Sequence[Row], fit_one: Callable[[Sequence[Row]], dict[str, float]]):
    fitted = {POOLED: fit_one(rows)} if rows else {}
    by_variant: dict[int, list[Row]] = {}
    for row in rows:
        by_variant.setdefault(row.variant, []).append(row)
    if len(by_variant) > 1:
        for variant, group in sorted(by_variant.items()):
            if len(group) >= MIN_ROWS_PER_VARIANT:
                fitted[str(variant)] = fit_one(group)
    return fitted


def fit(labels: Sequence[str], mode: str, rows: Sequence[Row]) -> Calibration:
    if mode == "none" or not rows:
        return Calibration(tuple(labels))
    fitter = {"batch": fit_batch, "bias": fit_bias}[mode]
    return Calibration(tuple(labels), mode, fitter(rows, labels))


def cross_fitted(
    labels: Sequence[str], mode: str, rows: Sequence[Row], folds: int = FOLDS
) -> dict[tuple[int, int], dict[str, float]]:
    """Calibrated scores of every row, each from a calibration fitted without its sample's fold."""
    out: dict[tuple[int, int], dict[str, float]] = {}
    for fold in range(folds):
        train = [r for r in rows if r.sample % folds != fold]
        test = [r for r in rows if r.sample % folds == fold]
        calibration = fit(labels, mode, train)
        for row in test:
            out[(row.sample, row.variant)] = calibration.apply(row.logprobs, row.variant)
    return out


# ------------------------------------------------------------------------------------------------
# calibration.json
# ------------------------------------------------------------------------------------------------
def load_file(path: str | Path) -> dict[str, Any]:
    """Read and check a calibration file (one entry per task name); UsageError if unusable."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"method.calibration={path}: cannot read it ({exc.strerror})") from None
    except ValueError:
        raise UsageError(f"method.calibration={path} is not JSON") from None
    if not isinstance(doc, dict):
        raise UsageError(f"method.calibration={path}: expected an object with one entry per task")
    for name, entry in doc.items():
        if not isinstance(entry, dict):
            raise UsageError(f"method.calibration={path}: {name} is not an object")
        if ("modes" in entry or "use" in entry) and not isinstance(entry.get("labels"), list):
            raise UsageError(f"method.calibration={path}: {name} has no label list")
        if entry.get("confidence") is not None:
            ConfidenceMap.from_dict(entry["confidence"], f"method.calibration={path}: {name}")
        if entry.get("use", "none") not in MODES:
            raise UsageError(f"method.calibration={path}: {name}.use={entry.get('use')!r} is not a mode")
        for mode in MODES[1:]:
            if mode in (entry.get("modes") or {}) and not isinstance(entry["modes"][mode].get("bias"), dict):
                raise UsageError(f"method.calibration={path}: {name}.modes.{mode} has no bias")
    return doc


def from_entry(entry: Mapping[str, Any], labels: Sequence[str], mode: str = "auto") -> Calibration:
    """The calibration ``mode`` (``auto``: the file's ``use``) of one task's file entry."""
    if "labels" not in entry and "modes" not in entry:  # a confidence map only
        return Calibration(tuple(labels))
    if list(entry.get("labels") or []) != list(labels):
        raise UsageError(f"calibration labels {entry.get('labels')} do not match the task's {list(labels)}")
    chosen = entry.get("use", "none") if mode == "auto" else mode
    if chosen == "none":
        return Calibration(tuple(labels))
    params = (entry.get("modes") or {}).get(chosen)
    if params is None:
        raise UsageError(f"the calibration file has no {chosen!r} parameters for this task")
    bias = {str(v): {str(k): float(b) for k, b in labels_.items()} for v, labels_ in params["bias"].items()}
    return Calibration(tuple(labels), chosen, bias)


@lru_cache(maxsize=8)
def _load_cached(path: str) -> dict[str, Any]:
    return load_file(path)


def load_calibration(path: str | Path) -> dict[str, Any]:
    """`load_file`, read once per path and run."""
    return _load_cached(str(path))


# ------------------------------------------------------------------------------------------------
# confidence calibration: a monotone map from a raw confidence to the probability of being right
# ------------------------------------------------------------------------------------------------
CONFIDENCE_METHODS = ("isotonic",)
MIN_CONFIDENCE_ROWS = 20  # fewer dev samples with a confidence: no map is fitted


@dataclass(frozen=True)
class ConfidenceMap:
    """Isotonic regression of dev correctness on the raw confidence (scikit-learn), kept as its
    breakpoints and applied by linear interpolation, clipped to the fitted range.

    Unlike the label biases above it works for every answer kind (label probabilities, variant
    agreement, or both), and it is monotone, so it never reorders samples: it changes what a
    confidence of 0.9 *means* (ECE), not which samples are most trusted (AUROC)."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    method: str = "isotonic"

    @classmethod
    def fit(cls, confidence: Sequence[float], correct: Sequence[float]) -> ConfidenceMap:
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        model.fit(np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float))
        return cls(tuple(float(v) for v in model.X_thresholds_), tuple(float(v) for v in model.y_thresholds_))

    def apply(self, confidence: float) -> float:
        return float(np.interp(confidence, self.x, self.y))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "x": [round(v, 6) for v in self.x], "y": [round(v, 6) for v in self.y]}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], where: str) -> ConfidenceMap:
        x, y = entry.get("x"), entry.get("y")
        if (
            entry.get("method") not in CONFIDENCE_METHODS
            or not isinstance(x, list)
            or not isinstance(y, list)
            or len(x) != len(y)
            or not x
        ):
            raise UsageError(f"{where}.confidence: expected method (isotonic) and x, y lists of one length")
        return cls(tuple(float(v) for v in x), tuple(float(v) for v in y), str(entry["method"]))


def cross_fitted_confidence(
    confidence: Sequence[float], correct: Sequence[float], folds: int = FOLDS
) -> list[float]:
    """Each sample's calibrated confidence from a map fitted without its fold (index modulo
    ``folds``), so that dev numbers of the calibrated confidence are not flattered in-sample."""
    out = [0.0] * len(confidence)
    for fold in range(folds):
        train = [i for i in range(len(confidence)) if i % folds != fold]
        test = [i for i in range(len(confidence)) if i % folds == fold]
        if not test:
            continue
        mapping = ConfidenceMap.fit([confidence[i] for i in train], [correct[i] for i in train])
        for i in test:
            out[i] = mapping.apply(confidence[i])
    return out


def confidence_map(path: str | Path, task: str) -> ConfidenceMap | None:
    """The confidence map a calibration file holds for ``task`` (None: the file has none)."""
    entry = load_calibration(path).get(task) or {}
    if not entry.get("confidence"):
        return None
    return ConfidenceMap.from_dict(entry["confidence"], f"method.calibration={path}: {task}")

"""Annotation quality: per-sample confidence, its calibration, agreement, and the pool audit.

- `confidence`: one confidence in [0, 1] per record (label probabilities at the label token,
  agreement across self-consistency variants, or both) and its source; None when there is none;
- `confidence_metrics`: AUROC, ECE, reliability bins and the coverage-accuracy curve;
- `agreement`: Fleiss' kappa across variants, Cohen's kappa between annotators and vs gold;
- `audit`: labelled examples the model contradicts with confidence (likely label errors);
- `summary`: the ``quality`` entry of run.json and the dev-fitted confidence map.

The calibration itself (the isotonic `ConfidenceMap`) lives with the label-score calibration in
`longicl.methods.calibration`; the human review round trip is `longicl.review`.
"""

from longicl.quality.confidence import Confidence, Support, confidence, of_record
from longicl.quality.summary import QualityTally, task_quality

__all__ = ["Confidence", "QualityTally", "Support", "confidence", "of_record", "task_quality"]

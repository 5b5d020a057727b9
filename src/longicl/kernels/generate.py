"""Kept so that ``from longicl.kernels.generate import …`` keeps working.

Task 8's annotator is `longicl.annotators.kernel`; its checked candidates are `longicl.kernels.candidates`.
"""

from longicl.annotators.kernel import FALLBACK_TIERS, KernelAnnotator, KernelSettings
from longicl.kernels.candidates import STAGE_RANK, Candidate, static_signature_failure

__all__ = [
    "FALLBACK_TIERS",
    "STAGE_RANK",
    "Candidate",
    "KernelAnnotator",
    "KernelSettings",
    "static_signature_failure",
]

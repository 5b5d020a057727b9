"""Kept so that ``from longicl.annotate import …`` keeps working: the code is in `longicl.annotators`.

``Annotator`` here is the in-context-learning annotator (`longicl.annotators.icl.IclAnnotator`),
as it was before the package existed; the annotators' common base is `longicl.annotators.Annotator`.
"""

from longicl.annotators.base import RequestLogger, build_request
from longicl.annotators.icl import Attempt, task_calibration
from longicl.annotators.icl import IclAnnotator as Annotator
from longicl.annotators.settings import PER_TASK_KEYS, MethodSettings

__all__ = [
    "PER_TASK_KEYS",
    "Annotator",
    "Attempt",
    "MethodSettings",
    "RequestLogger",
    "build_request",
    "task_calibration",
]

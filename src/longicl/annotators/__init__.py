"""Annotators: from one sample to its record, one strategy per module over a small base.

- `base`: `Annotator` (the request, the send path, `ask` with the prompt shrink and the thinking
  follow-up, the dry run), `build_request`, and the registry a task's ``TaskSpec.annotator`` names;
- `settings`: `MethodSettings` and `KernelSettings`, the validated ``method`` and ``kernels`` configs;
- `icl`: in-context learning, a vote over prompt variants (``"default"``);
- `side_models`: the classical voter and the program check around it;
- `kernel`: task 8, generate -> check -> repair -> fall back (``"kernel"``).
"""

from longicl.annotators.base import ANNOTATORS, Annotator, Asked, RequestLogger, annotator_for, build_request
from longicl.annotators.icl import Attempt, IclAnnotator, task_calibration
from longicl.annotators.kernel import KernelAnnotator
from longicl.annotators.settings import PER_TASK_KEYS, KernelSettings, MethodSettings
from longicl.annotators.side_models import SideEngine, SideModels

__all__ = [
    "ANNOTATORS",
    "PER_TASK_KEYS",
    "Annotator",
    "Asked",
    "Attempt",
    "IclAnnotator",
    "KernelAnnotator",
    "KernelSettings",
    "MethodSettings",
    "RequestLogger",
    "SideEngine",
    "SideModels",
    "annotator_for",
    "build_request",
    "task_calibration",
]

"""Task 8 (Triton kernel generation): code extraction, wrapper signatures and a sandboxed checker.

Importing this package imports neither torch nor triton (only the checker's child process does),
and its names are loaded lazily so that ``python -m longicl.kernels.check`` runs cleanly.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CheckResult": "check",
    "GoldReport": "check",
    "Stage": "check",
    "check_answer": "check",
    "check_candidate": "check",
    "check_gold_examples": "check",
    "extract_code": "extract",
    "InputPlan": "signature",
    "Param": "signature",
    "WrapperSignature": "signature",
    "input_plans": "signature",
    "parse_signature": "signature",
    "parse_wrapper_info": "signature",
    "signature_from_source": "signature",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'longicl.kernels' has no attribute {name!r}")
    return getattr(importlib.import_module(f"longicl.kernels.{module}"), name)

"""What the entry function of a kernel task looks like, and which inputs to call it with.

Test-style inputs (TritonBench-T) carry a ``Wrapper Entry Information:`` section in free form:
``div(input, other, *, rounding_mode=None, out=None) -> Tensor; input (Tensor): …``, with or
without ``def``, with type annotations, with ``Args:`` blocks, with bullet lists, or (twice in the
166 samples) without any function head at all (``A (Tensor), B (Tensor), *, left (bool, optional)``).
:func:`parse_wrapper_info` reads all of these into a :class:`WrapperSignature`.

Example-style inputs (TritonBench-G) describe the code in prose; their entry function is read from
a source module instead (:func:`signature_from_source`: the last top-level function that is not a
Triton kernel nor a test).

:func:`input_plans` turns a signature into a few concrete, JSON-serialisable call plans (shapes,
dtypes, value domains, scalar values) for the sandboxed runner. The heuristics are documented on
that function; they aim at "a correct implementation runs", not at covering every case.

Modules: ``params`` (Param, WrapperSignature, type words), ``prose`` (task inputs), ``source``
(modules), ``inputs`` (call plans).
"""

from __future__ import annotations

from longicl.kernels.signature.inputs import ArgSpec, InputPlan, input_plans
from longicl.kernels.signature.params import Param, WrapperSignature, classify_type
from longicl.kernels.signature.prose import parse_wrapper_info, wrapper_section
from longicl.kernels.signature.source import parse_signature, signature_from_source

__all__ = [
    "ArgSpec",
    "InputPlan",
    "Param",
    "WrapperSignature",
    "classify_type",
    "input_plans",
    "parse_signature",
    "parse_wrapper_info",
    "signature_from_source",
    "wrapper_section",
]

"""Concrete, JSON-serialisable calls of an entry function for the sandboxed runner: shapes, dtypes,
value domains and scalar values (the heuristics are on :func:`input_plans`)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from longicl.kernels.signature.params import _FLOAT_NAMES, _INT_NAMES, Param, ValueType, WrapperSignature

# --------------------------------------------------------------------------------------------
# Input plans


@dataclass
class ArgSpec:
    """One argument to build in the runner."""

    name: str
    how: Literal["positional", "keyword", "var_positional"]
    type: ValueType
    shape: list[int] = field(default_factory=list)
    dtype: str = "float32"
    domain: str = "normal"  # normal | positive | unit | open01 | spd | wellcond | index<N> | permutation
    value: Any = None  # scalars (int/float/bool/str/None/list)


@dataclass
class InputPlan:
    """A concrete call: arguments, optional extras (passed only when accepted), an expected shape."""

    name: str
    args: list[ArgSpec]
    optional_kwargs: dict[str, Any] = field(default_factory=dict)
    expected_shape: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SIZE_BY_SYMBOL = {
    "b": 2, "batch": 2, "minibatch": 2, "n_batch": 2, "batch_size": 2,
    "kh": 3, "kw": 3, "k_h": 3, "k_w": 3, "kernel_size": 3, "kl": 3,
    "c": 4, "channels": 4, "in_channels": 3, "c_in": 3, "out_channels": 4, "c_out": 4, "num_features": 4,
    "h": 6, "w": 8, "ih": 6, "iw": 8, "h_in": 6, "w_in": 8, "l": 8, "iw_": 8, "seq": 8, "seq_len": 8,
}  # fmt: skip
_POOL = (4, 8, 5, 6, 3, 7)

_POSITIVE_WORDS = (
    r"sqrt|rsqrt|log|log2|log10|log1p|gammaln|lgamma|digamma|polygamma|zeta|pow|reciprocal|i0|mvlgamma"
)
_UNIT_WORDS = r"asin|acos|atanh|erfinv|arcsin|arccos"


def _domain(sig: WrapperSignature) -> str:
    tokens = set(re.split(r"[_.]", (sig.qualname or sig.name or "").lower()))
    desc = sig.description.lower()
    if tokens & {"cholesky", "ldl"} or "positive-definite" in desc or "positive definite" in desc:
        return "spd"
    if tokens & {"solve", "inv", "invert", "inverse", "lu", "det", "determinant", "qr", "eig", "svd", "pinv"}:
        return "wellcond"
    if tokens & {"logit"}:
        return "open01"
    if tokens & set(_UNIT_WORDS.split("|")):
        return "unit"
    if tokens & set(_POSITIVE_WORDS.split("|")) and "softmax" not in tokens and "logsumexp" not in tokens:
        return "positive"
    return "normal"


def _resolve(shape: tuple[str, ...] | None, sizes: dict[str, int]) -> list[int] | None:
    if shape is None:
        return None
    out: list[int] = []
    for dim in shape:
        key = dim.lower()
        if key in {"*", "...", "…"} or key.startswith("*"):
            continue  # zero batch dimensions
        if re.fullmatch(r"\d+", key):
            out.append(max(1, min(int(key), 16)))
            continue
        if not re.fullmatch(r"[a-z_][\w]*", key):
            return None  # an expression we do not evaluate
        if key not in sizes:
            sizes[key] = _SIZE_BY_SYMBOL.get(
                key, _POOL[len([k for k in sizes if k not in _SIZE_BY_SYMBOL]) % 6]
            )
        out.append(sizes[key])
    return out or None


def _scalar_for(p: Param, sig: WrapperSignature, first_shape: list[int]) -> Any:
    low = p.name.lower()
    rank = len(first_shape)
    if p.type == "bool":
        return False
    if p.type == "str":
        return None
    if p.type == "dtype":
        return None
    if low in {"normalized_shape"}:
        return first_shape[-1] if first_shape else 8
    if low in {"dim", "axis"}:
        return -1
    if low in {"k", "n"}:
        return 2
    if p.type == "ints" or low in {"dims", "size", "shape"}:
        if "permute" in (sig.name or "") or low == "dims" and "permute" in sig.description.lower():
            return list(reversed(range(rank)))
        if low in {"size", "shape"}:
            return list(first_shape) or [4, 8]
        return [2] + [1] * max(rank - 1, 0)
    if p.type == "int" or low in _INT_NAMES:
        if low in {"dim", "axis"}:
            return -1
        return {"steps": 5, "kernel_size": 2, "output_size": 2, "num_groups": 2, "groups": 1, "stride": 1,
                "padding": 0, "dilation": 1, "upscale_factor": 2, "correction": 1, "diagonal": 0,
                "num_classes": 4, "repeats": 2}.get(low, 2)  # fmt: skip
    if p.type == "float" or low in _FLOAT_NAMES:
        return {"alpha": 0.5, "beta": 2.0, "eps": 1e-5, "p": 0.0, "lr": 0.01, "momentum": 0.9, "start": 0.0,
                "end": 1.0, "base": 10.0, "value": -1.5, "margin": 0.5, "threshold": 1.0,
                "lambd": 0.5, "scale": 0.5}.get(low, 0.5)  # fmt: skip
    return None


def input_plans(sig: WrapperSignature) -> list[InputPlan]:
    """Call plans for the signature, most faithful first.

    Heuristics:

    * Only required parameters are passed (positionally, or by name when keyword-only); optional
      ones keep the candidate's defaults, except that ``training=False`` is passed when the
      signature has it (dropout would make two correct implementations disagree).
    * Tensor shapes come from the docs' shape hints ("of shape `(B, N, M)`"): a symbol gets the same
      size everywhere (so bmm/conv operands fit), ``*`` batch dimensions are dropped, kernel sizes
      are 3, batch 2, channels 3-4, spatial 6x8, other symbols 4, 8, 5, … in order of appearance.
      Tensors without a hint are 4x8 float32 ("hinted" plan); the fallback plans make every tensor
      8x8 ("square"), 8 ("vector"), 2x8x16 ("batched3") or 2x2x16x16 ("batched4"). The runner
      uses the first plan the reference (else the candidate) accepts.
    * Values are standard normal, except: positive (uniform 0.1-1.1) for sqrt/log/pow/gamma-like
      names, within (-0.9, 0.9) for asin/acos/atanh, within (0.05, 0.95) for logit, symmetric
      positive definite for cholesky/LDL, diagonally dominant for solve/inverse/LU/det/QR/SVD/eig.
      Index tensors are int64 in [0, 2); masks are random bools.
    * Required scalars: dim=-1, k/n=2, alpha=0.5, beta=2.0, eps=1e-5, value=-1.5, bools False,
      strings and dtypes left to their defaults (None), ``normalized_shape`` = last size of the
      first tensor, ``dims`` of a permute = reversed axes.
    """
    domain = _domain(sig)
    plans: list[InputPlan] = []
    optional: dict[str, Any] = {}
    if sig.param("training") is not None:
        optional["training"] = False
    variants: list[tuple[str, list[int]]] = [
        ("hinted", [4, 8]),
        ("square", [8, 8]),
        ("vector", [8]),
        ("batched3", [2, 8, 16]),
        ("batched4", [2, 2, 16, 16]),
    ]
    for plan_name, default_shape in variants:
        sizes: dict[str, int] = {}
        args: list[ArgSpec] = []
        tensor_shapes: list[list[int]] = []
        for p in sig.params:
            if p.kind == "var_positional":
                if p.type == "tensors" or "tensor" in p.name.lower():
                    for i in range(2):
                        args.append(ArgSpec(f"{p.name}[{i}]", "var_positional", "tensor", list(default_shape),
                                            domain=domain))  # fmt: skip
                elif p.type == "ints" or p.name == "size":
                    args.append(ArgSpec(p.name, "var_positional", "ints", value=list(default_shape)))
                continue
            if not p.required or p.kind == "var_keyword":
                continue
            how: Literal["positional", "keyword"] = "keyword" if p.kind == "keyword_only" else "positional"
            if p.type in ("tensor", "any", "tensors", "mask", "index"):
                shape = _resolve(p.shape, sizes) if plan_name == "hinted" else None
                shape = shape or list(default_shape)
                if p.type == "tensors":
                    args.append(ArgSpec(p.name, how, "tensors", shape, domain=domain))
                elif p.type == "index":
                    args.append(ArgSpec(p.name, how, "index", shape[:1], dtype="int64", domain="index2"))
                elif p.type == "mask":
                    args.append(ArgSpec(p.name, how, "mask", shape, dtype="bool"))
                else:
                    args.append(ArgSpec(p.name, how, "tensor", shape, domain=domain))
                    tensor_shapes.append(shape)
            else:
                first = tensor_shapes[0] if tensor_shapes else list(default_shape)
                args.append(ArgSpec(p.name, how, p.type, value=_scalar_for(p, sig, first)))
        expected = _resolve(sig.output_shape, dict(sizes)) if plan_name == "hinted" else None
        if plan_name != "hinted" and not any(a.type in ("tensor", "tensors", "mask") for a in args):
            continue  # scalar-only signatures: the fallbacks would be identical
        plans.append(InputPlan(plan_name, args, dict(optional), expected))
    return plans

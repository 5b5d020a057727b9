"""The parameters of an entry function and what kind of value each takes (a type word, a name, a
default), whatever the signature was read from: the task's prose or a module's source."""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

ParamKind = Literal["positional", "keyword_only", "var_positional", "var_keyword"]
# tensor: a floating tensor; index: an integer (Long/Int) tensor; mask: a bool tensor;
# tensors: a sequence of tensors; ints: a tuple of ints (shape, dims); any: unknown.
ValueType = Literal[
    "tensor", "index", "mask", "tensors", "int", "ints", "float", "bool", "str", "dtype", "any"
]


@dataclass(frozen=True)
class Param:
    """One parameter of the entry function."""

    name: str
    kind: ParamKind = "positional"
    type: ValueType = "any"
    required: bool = True
    default: str | None = None  # source text of the default, when one is given
    shape: tuple[str, ...] | None = None  # shape hint from the docs, e.g. ("B", "N", "M")
    doc: str = ""


@dataclass(frozen=True)
class WrapperSignature:
    """The entry function: its name (``None`` when the text gives none) and parameters."""

    name: str | None
    params: tuple[Param, ...] = ()
    qualname: str | None = None  # as written, e.g. "linalg.svd" or "torch.permute_copy"
    returns: str | None = None  # text after "->", e.g. "Tensor" or "(Tensor, LongTensor)"
    output_shape: tuple[str, ...] | None = None
    source: str = "wrapper_info"  # "wrapper_info", "args_only", "code"
    description: str = ""  # the functional description (used for value-domain heuristics)

    @property
    def positional(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kind == "positional")

    @property
    def keyword_only(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kind == "keyword_only")

    @property
    def required(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.required and p.kind in ("positional", "keyword_only"))

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def aliases(self) -> list[str]:
        """Function names a candidate may define for this entry point, best first."""
        if not self.name:
            return []
        names = [self.name]
        if self.qualname and "." in self.qualname:
            parts = [p for p in self.qualname.split(".") if p != "torch"]
            names.append("_".join(parts))
        if self.name.endswith("_") and not self.name.endswith("__"):
            names.append(self.name.rstrip("_"))
        return list(dict.fromkeys(n for n in names if n))

    @property
    def fully_typed(self) -> bool:
        return all(p.type != "any" for p in self.required)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WrapperSignature:
        params = tuple(
            Param(**{**p, "shape": tuple(p["shape"]) if p.get("shape") is not None else None})
            for p in data.get("params", ())
        )
        out = data.get("output_shape")
        return cls(**{**data, "params": params, "output_shape": tuple(out) if out is not None else None})


# --------------------------------------------------------------------------------------------
# Type words


def classify_type(text: str) -> ValueType:
    """Map an annotation or a doc type ("Tensor or Number", "int, optional", "LongTensor") to a type."""
    t = text.lower().replace("torch.", "").replace("`", "")
    t = re.sub(r"\b(optional|, optional)\b", "", t)
    union = re.match(r"\s*(?:union|optional)\[(?P<inner>.*)\]\s*$", t)
    if union:
        return classify_type(_split_top(union.group("inner"))[0])
    if " or " in t and not re.search(r"(sequence|list|tuple|iterable) of tensors", t):
        # "Tensor or Number", "float or Tensor", "int or tuple of ints": the first alternative wins.
        first = classify_type(t.split(" or ")[0])
        if first != "any":
            return first
    if re.search(r"(sequence|list|tuple|iterable) of tensors|list\[tensor\]|sequence\[tensor\]", t):
        return "tensors"
    if "tuple[tensor" in t:
        return "tensors"
    if "booltensor" in t or re.search(r"\bbool(ean)? tensor\b", t):
        return "mask"
    if re.search(r"\b(long|int)tensor\b", t) or re.search(r"\b(long|int|integer) tensor\b", t):
        return "index"
    if re.search(r"\btensor\b", t):
        return "tensor"
    if "dtype" in t:
        return "dtype"
    if re.search(r"\bbool(ean)?\b", t):
        return "bool"
    if re.search(r"\bstr(ing)?\b|\blayout\b", t):
        return "str"
    if re.search(r"^\s*int\b(?! or tuple| or list)", t) and not re.search(r"tuple|list", t.split(" or ")[0]):
        return "int"
    if re.search(r"tuple\s*(of|\[)\s*int|list\s*(of|\[)\s*int|sequence of int|\bsize\b|int\.\.\.", t):
        return "ints"
    if re.search(r"\bint\b", t):
        return "int"
    if re.search(r"\b(float|number|scalar|complex|double)\b", t):
        return "float"
    return "any"


def _type_from_default(default: str | None) -> ValueType:
    if default is None:
        return "any"
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return "dtype" if default.startswith(("torch.float", "torch.int")) else "any"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, tuple | list):
        return "ints" if all(isinstance(v, int) for v in value) else "any"
    return "any"


_TENSOR_NAMES = {
    "input", "other", "x", "y", "a", "b", "c", "weight", "bias", "mat", "mat1", "mat2", "vec", "x1", "x2",
    "input1", "input2", "target", "targets", "logits", "grid", "theta", "tensor", "self", "l", "q", "k",
    "v", "residual", "running_mean", "running_var", "query", "key", "value_", "src", "exponent",
}  # fmt: skip
_INT_NAMES = {
    "dim", "n", "groups", "num_groups", "kernel_size", "stride", "padding", "dilation", "steps",
    "output_size", "upscale_factor", "correction", "diagonal", "offset", "num_classes", "repeats", "axis",
}  # fmt: skip
_FLOAT_NAMES = {"alpha", "beta", "eps", "p", "lr", "momentum", "negative_slope", "threshold", "lambd", "margin",
                "value", "scale", "start", "end", "base", "min", "max"}  # fmt: skip
_BOOL_NAMES = {"keepdim", "inplace", "training", "upper", "left", "pivot", "hermitian", "align_corners",
               "return_indices", "ceil_mode", "full_matrices", "largest", "sorted"}  # fmt: skip
_STR_NAMES = {"mode", "reduction", "approximate", "padding_mode", "norm", "driver", "rounding_mode"}


def _type_from_name(name: str) -> ValueType:
    low = name.lower()
    if low in {"index", "indices", "input_indices"}:
        return "index"
    if low == "mask":
        return "mask"
    if low in {"tensors"}:
        return "tensors"
    if low in _BOOL_NAMES:
        return "bool"
    if low in _STR_NAMES:
        return "str"
    if low in _INT_NAMES:
        return "int"
    if low in _FLOAT_NAMES:
        return "float"
    if low == "dtype":
        return "dtype"
    if low in {"dims", "size", "shape", "normalized_shape"}:
        return "ints"
    if low in _TENSOR_NAMES or re.fullmatch(r"(input|x|mat|weight|tensor)\d*|[a-z]", low) or len(name) == 1:
        return "tensor"
    return "any"


def _split_top(text: str, sep: str = ",") -> list[str]:
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    cur: list[str] = []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]

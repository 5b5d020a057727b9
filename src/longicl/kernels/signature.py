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
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from longicl.kernels.extract import parse_module

__all__ = [
    "ArgSpec",
    "InputPlan",
    "Param",
    "WrapperSignature",
    "input_plans",
    "parse_signature",
    "parse_wrapper_info",
    "signature_from_source",
    "wrapper_section",
]

ParamKind = Literal["positional", "keyword_only", "var_positional", "var_keyword"]
# tensor: a floating tensor; index: an integer (Long/Int) tensor; mask: a bool tensor;
# tensors: a sequence of tensors; ints: a tuple of ints (shape, dims); any: unknown.
ValueType = Literal[
    "tensor", "index", "mask", "tensors", "int", "ints", "float", "bool", "str", "dtype", "any"
]

_SECTION_HEADS = ("Functional Description", "Wrapper Entry Information", "Math", "other")


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
# Sections of a test-style input


def wrapper_section(task_input: str) -> str | None:
    """The text of the ``Wrapper Entry Information:`` section, or ``None``."""
    return _section(task_input, "Wrapper Entry Information")


def _section(task_input: str, head: str) -> str | None:
    m = re.search(r"^" + re.escape(head) + r":[ \t]*", task_input, flags=re.M)
    if not m:
        return None
    rest = task_input[m.end() :]
    others = "|".join(re.escape(h) for h in _SECTION_HEADS if h != head)
    end = re.search(r"^(?:" + others + r"):|^After generation, verify", rest, flags=re.M)
    return rest[: end.start() if end else len(rest)].strip()


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


# --------------------------------------------------------------------------------------------
# Function heads


_HEAD = re.compile(r"(?:^|[\s:;>`])(?:def\s+)?(?P<name>[A-Za-z_][\w.]*)\s*\(")


def _balanced(text: str, open_at: int) -> int | None:
    """Index of the parenthesis closing the one at ``open_at``, or None."""
    depth = 0
    quote: str | None = None
    for i in range(open_at, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return None


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


_IDENT = re.compile(r"[A-Za-z_]\w*")


def _params_from_arglist(arglist: str) -> list[Param] | None:
    """Parse ``input, other, *, alpha=1, out: Tensor = None`` (tolerating ``*size, *``)."""
    params: list[Param] = []
    kw_only = False
    for raw in _split_top(arglist.replace("\n", " ")):
        piece = raw.strip()
        if not piece or piece == "/":
            continue
        if piece == "*":
            kw_only = True
            continue
        if piece.startswith("**"):
            name = piece[2:].split(":")[0].strip()
            if not _IDENT.fullmatch(name):
                return None
            params.append(Param(name, "var_keyword", "any", required=False))
            continue
        if piece.startswith("*"):
            name = piece[1:].split(":")[0].strip()
            if not _IDENT.fullmatch(name):
                return None
            vtype: ValueType = "tensors" if "tensor" in name.lower() else "ints" if name == "size" else "any"
            params.append(Param(name, "var_positional", vtype, required=False))
            kw_only = True
            continue
        default: str | None = None
        head = piece
        eq = _split_top(piece, "=")
        if len(eq) >= 2:
            head, default = eq[0], "=".join(eq[1:]).strip()
        name, _, annotation = head.partition(":")
        name = name.strip()
        if not _IDENT.fullmatch(name):
            return None
        vtype = classify_type(annotation) if annotation.strip() else "any"
        if vtype == "any":
            vtype = _type_from_default(default)
        params.append(
            Param(
                name,
                "keyword_only" if kw_only else "positional",
                vtype,
                required=default is None,
                default=default,
            )
        )
    return params


def _find_head(section: str) -> tuple[str, str, int] | None:
    """``(qualname, arglist, end)`` of the ``name(args)`` head that opens the section, if any.

    Only ``def`` and backticks may stand before it; a documented argument such as
    ``input (Tensor): …`` is not a head.
    """
    m = _HEAD.search(section[:400])
    if m is None or re.sub(r"\bdef\b|[`\s]", "", section[: m.start("name")]):
        return None
    close = _balanced(section, m.end() - 1)
    if close is None:
        return None
    arglist = section[m.end() : close]
    names = [re.split(r"[:=]", a)[0].strip(" *") for a in _split_top(arglist) if a.strip()]
    if names and all(classify_type(n) != "any" for n in names):
        return None
    return m.group("name"), arglist, close + 1


# --------------------------------------------------------------------------------------------
# Docs of parameters


_DOC_ENTRY = r"(?:^|[\s;.,:(-])\**`?{name}`?\**\s*(?:\((?P<type>[^()\n]*(?:\([^()\n]*\)[^()\n]*)*)\)|:)"
_SHAPE = re.compile(
    r"(?:shape|形状为)\s*(?:of\s*)?(?:is\s*)?[:`\\]*(?:math:`)?\s*\\?\((?P<dims>[^()\n]*)\\?\)", re.I
)


def _clean_dim(dim: str) -> str:
    d = dim.strip().strip("`").strip()
    d = re.sub(r"\\text\{([^}]*)\}", r"\1", d)
    d = d.replace("\\_", "_").replace("{", "").replace("}", "").replace("\\", "")
    d = re.sub(r"\s*/\s*\w+$", "", d)  # in_channels / groups -> in_channels
    return re.sub(r"\s+", "_", d.strip())


def _shape_in(text: str) -> tuple[str, ...] | None:
    m = _SHAPE.search(text)
    if not m:
        return None
    dims = [_clean_dim(d) for d in m.group("dims").split(",")]
    dims = [d for d in dims if d]
    return tuple(dims) if dims else None


def _doc_entries(text: str, names: list[str]) -> dict[str, tuple[str | None, str]]:
    """For each parameter name: (type text in parentheses or None, doc text up to the next entry)."""
    hits: list[tuple[int, int, str, str | None]] = []
    for name in names:
        pattern = re.compile(_DOC_ENTRY.format(name=re.escape(name)), flags=re.M | re.I)
        for m in pattern.finditer(text):
            type_text = m.group("type")
            if type_text is None and not re.match(r"[\s*`]*" + re.escape(name), text[m.start() :].lstrip()):
                continue
            if type_text is not None and (
                "shape" in type_text.lower()
                or "," in type_text
                and not re.search(
                    r"optional|tensor|int|float|bool|str|number|dtype|tuple|list", type_text, re.I
                )
            ):
                continue  # "input (B, N, M)" is a shape, not a type
            hits.append((m.start(), m.end(), name, type_text))
            break
    hits.sort()
    out: dict[str, tuple[str | None, str]] = {}
    for i, (_, end, name, type_text) in enumerate(hits):
        stop = hits[i + 1][0] if i + 1 < len(hits) else len(text)
        out[name] = (type_text, text[end:stop].strip())
    return out


def _shape_section(text: str) -> dict[str, tuple[str, ...]]:
    """``Shape: - Input: (N, C, H, W) …  Output: (…)`` lines, keyed by lower-case name."""
    out: dict[str, tuple[str, ...]] = {}
    for m in re.finditer(r"(?:^|[\s,-])(?P<name>[A-Za-z_]\w*)\s*:\s*\\?\((?P<dims>[^()\n]*)\\?\)", text):
        dims = tuple(d for d in (_clean_dim(x) for x in m.group("dims").split(",")) if d)
        if dims and m.group("name").lower() not in out:
            out[m.group("name").lower()] = dims
    return out


def _enrich(params: list[Param], doc_text: str) -> list[Param]:
    entries = _doc_entries(doc_text, [p.name for p in params])
    shapes = _shape_section(doc_text)
    enriched: list[Param] = []
    for p in params:
        type_text, doc = entries.get(p.name, (None, ""))
        vtype = p.type
        if type_text is not None:
            doc_type = classify_type(type_text)
            # Docs say more than a default value does ("Tensor or Number" for other=1).
            if doc_type != "any" and (vtype in ("any", "float", "int") or doc_type in ("index", "mask")):
                vtype = doc_type
        if vtype == "any":
            vtype = _type_from_name(p.name)
        if p.name in ("dtype",):
            vtype = "dtype"
        shape = _shape_in(doc) if doc else None
        if shape is None:
            shape = shapes.get(p.name.lower())
        optional = type_text is not None and "optional" in type_text.lower()
        required = p.required and not (optional and p.kind == "keyword_only")
        if p.name == "out" and p.kind != "positional":
            required = False
        enriched.append(replace(p, type=vtype, shape=shape, doc=doc[:300], required=required))
    return enriched


def _args_only(section: str) -> list[Param] | None:
    """Parameters from a section with no function head: ``A (Tensor), B (Tensor), *, left (bool…)``."""
    params: list[Param] = []
    kw_only = False
    for m in re.finditer(
        r"(?:^|[\s,;.])(?P<star>\*,\s*)?(?P<name>[A-Za-z_]\w*)\s*\((?P<type>[^()]*)\)", section
    ):
        if m.group("star"):
            kw_only = True
        name, type_text = m.group("name"), m.group("type")
        if any(p.name == name for p in params) or classify_type(type_text) == "any":
            continue
        optional = "optional" in type_text.lower()
        params.append(
            Param(
                name,
                "keyword_only" if (kw_only or (optional and name == "out")) else "positional",
                classify_type(type_text),
                required=not optional,
            )
        )
    return params or None


def parse_wrapper_info(task_input: str) -> WrapperSignature | None:
    """Read the ``Wrapper Entry Information`` of a test-style input; ``None`` when absent or unreadable."""
    section = wrapper_section(task_input)
    if not section:
        return None
    description = (
        (_section(task_input, "Functional Description") or "") + "\n" + (_section(task_input, "other") or "")
    )
    head = _find_head(section)
    if head is not None:
        qual, arglist, end = head
        params = _params_from_arglist(arglist)
        if params is not None:
            rest = section[end:]
            returns = None
            rm = re.match(
                r"\s*->\s*(?P<ret>\([^)]*\)|[\w\[\], .]+?)(?=\s*(?:[:;.]\s|[:;.]?$|\n|Args|-|$))", rest
            )
            if rm is None:
                rm = re.match(r"\s*->\s*(?P<ret>\([^)]*\))", rest)
            if rm:
                returns = rm.group("ret").strip()
            doc_text = rest + "\n" + (_section(task_input, "other") or "")
            enriched = _enrich(params, doc_text)
            shapes = _shape_section(doc_text)
            name = qual.split(".")[-1]
            return WrapperSignature(
                name=name,
                params=tuple(enriched),
                qualname=qual,
                returns=returns,
                output_shape=shapes.get("output"),
                source="wrapper_info",
                description=description.strip(),
            )
    args = _args_only(section)
    if args is None:
        return None
    enriched = _enrich(args, section)
    return WrapperSignature(
        name=None, params=tuple(enriched), source="args_only", description=description.strip()
    )


# --------------------------------------------------------------------------------------------
# From source code


def _is_kernel(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for dec in fn.decorator_list:
        text = ast.unparse(dec)
        if re.search(r"\b(jit|autotune|heuristics|njit|kernel)\b", text):
            return True
    return False


def _entry_functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and not _is_kernel(node)
        and not node.name.startswith(("test", "_test", "benchmark", "main"))
    ]


def _params_from_ast(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[Param]:
    a = fn.args
    params: list[Param] = []
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    for arg, default in zip(positional, defaults, strict=True):
        params.append(_param_from_ast(arg, default, "positional"))
    if a.vararg is not None:
        params.append(Param(a.vararg.arg, "var_positional", _type_from_name(a.vararg.arg), required=False))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        params.append(_param_from_ast(arg, default, "keyword_only"))
    if a.kwarg is not None:
        params.append(Param(a.kwarg.arg, "var_keyword", "any", required=False))
    return params


def _param_from_ast(arg: ast.arg, default: ast.expr | None, kind: ParamKind) -> Param:
    default_text = ast.unparse(default) if default is not None else None
    vtype: ValueType = "any"
    if arg.annotation is not None:
        vtype = classify_type(ast.unparse(arg.annotation))
    if vtype == "any":
        vtype = _type_from_default(default_text)
    if vtype == "any":
        vtype = _type_from_name(arg.arg)
    return Param(arg.arg, kind, vtype, required=default is None, default=default_text)


def signature_from_source(
    code: str, name: str | None = None, description: str = ""
) -> WrapperSignature | None:
    """The entry function of a module: ``name`` if it is defined, else the last top-level plain def.

    Kernels (``@triton.jit``/``@triton.autotune``…) and ``test*``/``main`` functions are skipped.
    ``None`` when the code does not parse or defines no such function.
    """
    tree = parse_module(code)
    if tree is None:
        return None
    functions = _entry_functions(tree)
    if not functions:
        return None
    # The module object keeps the last definition of a name, so the signature must too.
    chosen = next((f for f in reversed(functions) if f.name == name), None) if name else None
    if chosen is None:
        public = [f for f in functions if not f.name.startswith("_")]
        chosen = (public or functions)[-1]
    params = _params_from_ast(chosen)
    params = _enrich(params, description) if description else params
    return WrapperSignature(
        name=chosen.name, params=tuple(params), qualname=chosen.name, source="code", description=description
    )


def _names_in_prose(task_input: str) -> list[str]:
    """Identifiers the instruction calls a wrapper/function, in order of appearance."""
    found = re.findall(
        r"(?:wrapper|function|method)\s+(?:function\s+)?[`'\"]?([A-Za-z_]\w*)[`'\"]?"
        r"|[`'\"]([A-Za-z_]\w*)[`'\"]\s+(?:is\s+(?:a|the)\s+)?(?:wrapper|python function|function)",
        task_input,
        flags=re.I,
    )
    return [a or b for a, b in found]


def parse_signature(task_input: str, code: str | None = None) -> WrapperSignature | None:
    """The entry signature for any task input.

    Test-style inputs are read from their wrapper section. Example-style inputs (or test-style ones
    whose section cannot be read) use ``code`` (a gold or candidate module): a function the
    instruction names as a wrapper if the code defines it, else the last top-level plain def.
    """
    sig = parse_wrapper_info(task_input) if task_input else None
    if sig is not None:
        return sig
    if code is None:
        return None
    tree = parse_module(code)
    if tree is None:
        return None
    defined = {f.name for f in _entry_functions(tree)}
    named = [n for n in _names_in_prose(task_input or "") if n in defined]
    return signature_from_source(code, named[-1] if named else None, description=task_input or "")


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

"""Signatures read from a test-style task input (TritonBench-T): its ``Wrapper Entry Information:``
section, in any of the free forms the 166 samples use (see the package docstring)."""

from __future__ import annotations

import re
from dataclasses import replace

from longicl.kernels.signature.params import (
    Param,
    ValueType,
    WrapperSignature,
    _split_top,
    _type_from_default,
    _type_from_name,
    classify_type,
)

_SECTION_HEADS = ("Functional Description", "Wrapper Entry Information", "Math", "other")

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

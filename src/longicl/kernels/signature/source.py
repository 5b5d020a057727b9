"""Signatures read from a module's source (example-style inputs, TritonBench-G, and candidates):
the entry function is the named wrapper, else the last top-level function that is neither a Triton
kernel nor a test."""

from __future__ import annotations

import ast
import re

from longicl.kernels.extract import parse_module
from longicl.kernels.signature.params import (
    Param,
    ParamKind,
    ValueType,
    WrapperSignature,
    _type_from_default,
    _type_from_name,
    classify_type,
)
from longicl.kernels.signature.prose import _enrich, parse_wrapper_info

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

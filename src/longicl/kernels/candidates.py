"""Task 8's checked candidates: what a module reached in the checker, and checks told from source.

`Candidate` is one module that was checked (a Triton answer, a repair, or the PyTorch reference)
and how far it got (`STAGE_RANK`); `static_signature_failure` fails a module that cannot define
the wanted wrapper without starting a checker process. Used by `longicl.annotators.kernel`.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from longicl.code_extract import parse_module
from longicl.kernels.check import CheckResult, Stage
from longicl.kernels.signature import WrapperSignature

#: How far a check got; a higher rank is a better candidate.
STAGE_RANK = {stage: rank for rank, stage in enumerate(Stage)}


@dataclass
class Candidate:
    """One module that was checked: a Triton answer (round 0, or repair round k) or the reference."""

    source: str  # "triton" or "reference"
    round: int
    code: str | None
    result: CheckResult
    against_reference: bool = False  # checked against a passing reference

    @property
    def rank(self) -> int:
        return STAGE_RANK[self.result.stage]

    @property
    def label(self) -> str:
        """The record's ``final`` value when this candidate is the answer."""
        if self.source == "reference":
            return "reference" if self.result.passed else "reference_failed"
        if self.result.passed:
            return "triton" if self.round == 0 else f"triton_repaired_{self.round}"
        return "triton_callable" if self.result.callable else "triton_failed"

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {
            "source": self.source,
            "round": self.round,
            "stage": r.stage.value,
            "kind": r.kind,
            "callable": r.callable,
            "agrees": r.agrees,
            "passed": r.passed,
            "against_reference": self.against_reference,
            "error": clip(r.error, 600),
            "notes": [clip(n, 300) for n in r.notes][:5],
            "wrapper": r.wrapper,
            "plan": r.plan,
            "device": r.device,
            "cuda_shim_used": r.cuda_shim_used,
            "uses_triton": uses_triton(self.code),
            "code_sha256": hashlib.sha256(self.code.encode()).hexdigest()[:16] if self.code else None,
            "seconds": r.seconds,
        }


def wrapper_phrase(sig: WrapperSignature | None) -> str:
    """How the prompts name the entry function: ```div``` or, unnamed, a description."""
    return f"`{sig.name}`" if sig is not None and sig.name else "that the task describes"


def uses_triton(code: str | None) -> bool:
    return bool(code) and ("triton.jit" in code or "@jit" in code)


def clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _top_level_names(code: str) -> set[str] | None:
    """Names a module binds at its top level; None when that cannot be told from the source."""
    tree = parse_module(code)
    if tree is None:
        return None
    if "globals()" in code or "setattr(" in code or "__getattr__" in code:
        return None
    names: set[str] = set()

    def targets(node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Tuple | ast.List):
            for element in node.elts:
                targets(element)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    def visit(body: Sequence[ast.stmt]) -> bool:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    targets(target)
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets(node.target)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    if alias.name == "*":
                        return False
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.If | ast.For | ast.While | ast.With | ast.AsyncWith | ast.AsyncFor):
                if not visit(node.body) or not visit(getattr(node, "orelse", [])):
                    return False
                if isinstance(node, ast.For | ast.AsyncFor):
                    targets(node.target)
            elif isinstance(node, ast.Try):
                for part in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                    if not visit(part):
                        return False
        return True

    return names if visit(tree.body) else None


def static_signature_failure(code: str | None, sig: WrapperSignature | None) -> CheckResult | None:
    """A signature failure told from the source alone (no process): the module parses but binds
    none of the wrapper's names at its top level. None when a check must run to tell."""
    if not code or sig is None or not sig.name:
        return None
    names = _top_level_names(code)
    wanted = sig.aliases()
    if names is None or any(n in names for n in wanted):
        return None
    defined = sorted(n for n in names if not n.startswith("_"))
    return CheckResult(
        Stage.SIGNATURE,
        kind="signature",
        error=f"no {' or '.join(wanted)} defined (module defines: {', '.join(defined)[:300]})",
        notes=["found from the source, without running it"],
    )

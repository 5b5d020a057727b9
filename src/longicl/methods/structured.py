"""Constrained decoding: the one place that knows vLLM's request fields for structured outputs.

vLLM (0.10.2 and later) takes every constraint in one request field, ``structured_outputs``,
keyed by its kind: ``{"structured_outputs": {"choice": [...]}}``, ``{"regex": "..."}``,
``{"json": schema}`` or ``{"grammar": "..."}``. The older top-level fields (``guided_choice``,
``guided_regex``, ``guided_json``, ``guided_grammar``) were deprecated in 0.10.2 and removed in
0.12.0; a server that does not know a field ignores it and still answers HTTP 200, so a wrong
field name fails *open* (unconstrained text, no error). ``FIELD_STYLES`` keeps both spellings so
that an older server can still be driven (``method.structured_outputs_style=guided``), and
``tests/test_methods.py`` pins the current one.

Which constraint a task gets follows from its answer kind (`longicl.tasks.AnswerKind`):

- closed label sets (tasks 2, 5, 6): ``choice`` over exactly the task's labels;
- integers (task 1) and integer lists (task 3): a ``regex`` in the gold answers' own format;
- free text (tasks 4, 7) and code (task 8): no constraint.

With Qwen3 thinking on, the server must run a reasoning parser (``--reasoning-parser qwen3``, as
``llm_config.yaml`` does): vLLM then applies the constraint only after ``</think>``, so the model
thinks freely and the answer is constrained. Without a reasoning parser the constraint starts at
the first generated token and leaves no room for thinking.
"""

from __future__ import annotations

from typing import Any

from longicl.errors import UsageError
from longicl.tasks import AnswerKind, TaskSpec

#: request fields per server generation: constraint kind -> (top-level field, key inside it or None)
FIELD_STYLES: dict[str, dict[str, tuple[str, str | None]]] = {
    # vLLM >= 0.10.2 (the only form from 0.12.0 on)
    "structured_outputs": {
        "choice": ("structured_outputs", "choice"),
        "regex": ("structured_outputs", "regex"),
        "json": ("structured_outputs", "json"),
        "grammar": ("structured_outputs", "grammar"),
    },
    # vLLM < 0.12 (deprecated since 0.10.2): one top-level field per kind
    "guided": {
        "choice": ("guided_choice", None),
        "regex": ("guided_regex", None),
        "json": ("guided_json", None),
        "grammar": ("guided_grammar", None),
    },
}
DEFAULT_STYLE = "structured_outputs"

# At most 19 digits: a bounded pattern, so a constrained model cannot run on with digits forever.
_INT = r"-?[0-9]{1,19}"
INTEGER_REGEX = _INT
INT_LIST_REGEX = rf"\[({_INT}(, {_INT})*)?\]"  # the gold format: "[36, 88, 148]", or "[]"


def constraint_for(spec: TaskSpec) -> tuple[str, Any] | None:
    """``(kind, value)`` of the constraint that fits ``spec``'s answers, or None."""
    if spec.answer_kind is AnswerKind.LABEL and spec.labels:
        return "choice", list(spec.labels)
    if spec.answer_kind is AnswerKind.INTEGER:
        return "regex", INTEGER_REGEX
    if spec.answer_kind is AnswerKind.INT_LIST:
        return "regex", INT_LIST_REGEX
    return None


def structured_outputs_for(spec: TaskSpec, style: str = DEFAULT_STYLE) -> dict[str, Any] | None:
    """The request-body fields that constrain ``spec``'s answer, e.g.
    ``{"structured_outputs": {"choice": ["Sad", "Not sad"]}}``; None when nothing fits."""
    constraint = constraint_for(spec)
    if constraint is None:
        return None
    kind, value = constraint
    field, key = _fields(style)[kind]
    return {field: {key: value}} if key else {field: value}


def _fields(style: str) -> dict[str, tuple[str, str | None]]:
    try:
        return FIELD_STYLES[style]
    except KeyError:
        raise UsageError(
            f"method.structured_outputs_style={style!r} is not one of: {', '.join(FIELD_STYLES)}"
        ) from None

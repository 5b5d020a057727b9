"""A run's ``selection`` section, typed: the strategy and its budget, globally and per task.

Every key is set by ``conf/selection/<name>.yaml`` (the only home of the defaults): a key the
section lacks, or one it has that is not a selection setting, is one `UsageError` line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from longicl.config_values import as_int, exact_keys
from longicl.selection.base import PromptBudget
from longicl.tasks import TaskSpec, per_task_entry


@dataclass(frozen=True)
class SelectionSettings:
    """``selection.*``: ``static_tokens`` null means the task's floor plus ``margin_tokens``;
    ``per_task.<id or name>`` overrides any of the others for one task."""

    name: str
    static_tokens: int | None
    margin_tokens: int
    dynamic_tokens: int
    per_task: Mapping[str, Mapping[str, Any]] = field(repr=False)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> SelectionSettings:
        exact_keys(section, _KEYS, "selection", "conf/selection/<name>.yaml")
        static = section["static_tokens"]
        return cls(
            name=str(section["name"]),
            static_tokens=None if static is None else as_int(static, "selection.static_tokens", minimum=0),
            margin_tokens=as_int(section["margin_tokens"], "selection.margin_tokens", minimum=0),
            dynamic_tokens=as_int(section["dynamic_tokens"], "selection.dynamic_tokens", minimum=0),
            per_task=dict(section["per_task"] or {}),
        )

    def strategy_for(self, spec: TaskSpec) -> str:
        """``selection.per_task.<id or name>.name``, else ``selection.name``."""
        own = per_task_entry(self.per_task, spec) or {}
        return str(own.get("name") or self.name)

    def budget_for(self, spec: TaskSpec, max_prompt_tokens: int) -> PromptBudget:
        own = per_task_entry(self.per_task, spec) or {}

        def value(key: str) -> Any:
            return own[key] if key in own else getattr(self, key)

        margin = as_int(value("margin_tokens"), "selection.margin_tokens", minimum=0)
        static = value("static_tokens")
        static = (
            spec.min_icl_tokens + margin
            if static is None
            else as_int(static, "selection.static_tokens", minimum=0)
        )
        return PromptBudget(
            static_tokens=static,
            dynamic_tokens=as_int(value("dynamic_tokens"), "selection.dynamic_tokens", minimum=0),
            min_icl_tokens=spec.min_icl_tokens,
            max_prompt_tokens=max_prompt_tokens,
        )


_KEYS = tuple(f.name for f in fields(SelectionSettings))

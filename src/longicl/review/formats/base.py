from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from longicl.review.items import Decision, ReviewItem
from longicl.tasks import TaskSpec


def first_row(doc: Any) -> dict[str, Any] | None:
    """The first record of an export: ``doc`` itself as a list, or its ``records``; None if there is none."""
    rows = doc.get("records") if isinstance(doc, dict) else doc
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        return None
    return rows[0]


class ReviewFormat(ABC):
    name = "base"
    #: where a human's decision goes in the tool's export (said when an import finds none)
    where_decisions_go = ""

    @classmethod
    @abstractmethod
    def recognises(cls, doc: Any) -> bool:
        """Whether ``doc`` (a parsed JSON file) looks like this tool's export."""

    @classmethod
    @abstractmethod
    def export(cls, items: Sequence[ReviewItem], spec: TaskSpec | None) -> tuple[Any, dict[str, str]]:
        """The document to write as the import file, and extra files by suffix (project set-up)."""

    @classmethod
    @abstractmethod
    def decisions(cls, doc: Any, source: str) -> list[Decision]:
        """The human decisions in the tool's export ``doc`` (UsageError naming ``source`` if it is
        not such an export)."""

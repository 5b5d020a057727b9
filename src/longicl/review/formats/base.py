from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from longicl.review.items import Decision, ReviewItem
from longicl.tasks import TaskSpec


class ReviewFormat(ABC):
    name = "base"
    #: where a human's decision goes in the tool's export (said when an import finds none)
    where_decisions_go = ""

    @classmethod
    @abstractmethod
    def export(cls, items: Sequence[ReviewItem], spec: TaskSpec | None) -> tuple[Any, dict[str, str]]:
        """The document to write as the import file, and extra files by suffix (project set-up)."""

    @classmethod
    @abstractmethod
    def decisions(cls, doc: Any, source: str) -> list[Decision]:
        """The human decisions in the tool's export ``doc`` (UsageError naming ``source`` if it is
        not such an export)."""

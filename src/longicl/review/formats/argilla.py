"""Argilla (v2): records as `rg.Record.to_dict()` writes them and `rg.Record.from_dict()` reads them.

Each record: ``id`` (``<task>:<sample_id>``), ``fields`` (``text``: the input), ``metadata``
(``task``, ``sample_id``, ``confidence``, ``confidence_source``), ``suggestions`` keyed by the
question name (``label`` for closed labels, ``answer`` otherwise) with ``value``, ``score`` and
``agent``, and empty ``responses``. The dataset settings (one text field, a label or text
question, the metadata) are written beside it as ``.settings.json`` to create the dataset with.

Import: the same records after review, ``responses`` keyed by question name, each a list of
``{"value", "user_id"[, "status"]}``; the last submitted response decides (no ``status``: submitted; drafts and discarded ones do not).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from longicl.errors import UsageError
from longicl.review.formats.base import ReviewFormat, first_row
from longicl.review.items import Decision, ReviewItem
from longicl.tasks import TaskSpec


class Argilla(ReviewFormat):
    name = "argilla"
    where_decisions_go = (
        'a decision is a submitted response in a record\'s "responses" ("label" or "answer": '
        '[{"value": ..., "status": "submitted"}]); "suggestions" holds the model\'s answers and '
        "is never read as a decision"
    )

    @classmethod
    def recognises(cls, doc: Any) -> bool:
        row = first_row(doc)
        return row is not None and ("fields" in row or "responses" in row)

    @classmethod
    def export(cls, items: Sequence[ReviewItem], spec: TaskSpec | None) -> tuple[Any, dict[str, str]]:
        records = []
        for item in items:
            suggestions = {}
            if item.prediction:
                suggestions[item.question] = {
                    "value": item.prediction,
                    "score": None if item.confidence is None else round(item.confidence, 6),
                    "agent": item.model_version,
                }
            records.append(
                {
                    "id": f"{item.spec.name}:{item.sample_id}",
                    "fields": {"text": item.text},
                    "metadata": {
                        "task": item.spec.name,
                        "sample_id": item.sample_id,
                        "confidence": item.confidence,
                        "confidence_source": item.confidence_source,
                    },
                    "suggestions": suggestions,
                    "responses": {},
                    "vectors": {},
                }
            )
        extra = {".settings.json": json.dumps(settings(spec), indent=2) + "\n"} if spec is not None else {}
        return records, extra

    @classmethod
    def decisions(cls, doc: Any, source: str) -> list[Decision]:
        if isinstance(doc, Mapping) and isinstance(doc.get("records"), list):
            doc = doc["records"]
        if not isinstance(doc, list):
            raise UsageError(f"{source}: expected a list of Argilla records")
        out = []
        for position, record in enumerate(doc):
            where = f"{source}: record [{position}]"
            if not isinstance(record, Mapping):
                raise UsageError(f"{where} is not an object")
            metadata = record.get("metadata") or {}
            if not isinstance(metadata, Mapping):
                raise UsageError(f"{where}: metadata is not an object")
            sample_id = metadata.get("sample_id")
            task = metadata.get("task")
            if task is not None and not isinstance(task, str):
                raise UsageError(f"{where}: metadata.task is not a task name")
            if not sample_id and isinstance(record.get("id"), str) and ":" in record["id"]:
                task, sample_id = record["id"].split(":", 1)
            if not isinstance(sample_id, str) or not sample_id:
                raise UsageError(f"{where}: metadata.sample_id is missing")
            responses = record.get("responses") or {}
            if not isinstance(responses, Mapping):
                raise UsageError(f"{where}: responses is not an object")
            answer, user = None, None
            for question in ("label", "answer"):
                given = responses.get(question) or []
                if not isinstance(given, list):
                    raise UsageError(f"{where}: responses.{question} is not a list")
                for response in given:
                    if isinstance(response, Mapping) and response.get("status", "submitted") == "submitted":
                        value = response.get("value")
                        if isinstance(value, str) and value.strip():
                            answer, user = value, response.get("user_id")
            if answer is not None:
                out.append(
                    Decision(
                        sample_id,
                        answer,
                        str(task) if task else None,
                        None if user is None else str(user),
                        where,
                    )
                )
        return out


def settings(spec: TaskSpec) -> dict[str, Any]:
    """The dataset settings matching the records (rg.Settings: fields, questions, metadata)."""
    question: dict[str, Any]
    if spec.is_closed:
        question = {
            "name": "label",
            "type": "label_selection",
            "labels": list(spec.labels or ()),
            "required": True,
        }
    else:
        question = {"name": "answer", "type": "text", "required": True}
    return {
        "guidelines": f"{spec.name}: {spec.title}. Correct the suggested answer where it is wrong.",
        "fields": [{"name": "text", "type": "text"}],
        "questions": [question],
        "metadata": [
            {"name": "task", "type": "terms"},
            {"name": "sample_id", "type": "terms"},
            {"name": "confidence", "type": "float"},
        ],
    }

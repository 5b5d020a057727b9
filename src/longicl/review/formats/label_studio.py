"""Label Studio: tasks in its JSON import format with pre-annotations, and its JSON export.

Import file (a list of tasks): ``data`` holds ``sample_id``, the input as ``text`` and the
``task`` name; ``predictions`` holds one prediction with ``model_version``, ``score`` (the
confidence, left out when there is none) and a ``result`` with one region: a ``choices`` result
(``value.choices``) for closed labels, a ``textarea`` result (``value.text``) for other answers,
from the control ``label`` / ``answer`` to the ``Text`` object ``text``. The labelling config
XML written beside it declares exactly those names.

Export (Label Studio's JSON export): the same tasks with ``annotations``; each annotation has a
``result`` list and may be ``was_cancelled``. The last annotation that is not cancelled and has
a result for the control is the decision; a task without one is not a decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

from longicl.errors import UsageError
from longicl.review.formats.base import ReviewFormat, first_row
from longicl.review.items import Decision, ReviewItem
from longicl.tasks import TaskSpec

TEXT = "text"


class LabelStudio(ReviewFormat):
    name = "label-studio"
    where_decisions_go = (
        'a decision is an entry of a task\'s "annotations" list (Label Studio writes one when you submit; '
        'by hand, copy the task\'s "predictions" entry into "annotations": [...] and set its value); '
        '"predictions" holds the model\'s answers and is never read as a decision'
    )

    @classmethod
    def recognises(cls, doc: Any) -> bool:
        row = first_row(doc)
        return row is not None and "data" in row

    @classmethod
    def export(cls, items: Sequence[ReviewItem], spec: TaskSpec | None) -> tuple[Any, dict[str, str]]:
        tasks = []
        for item in items:
            prediction: dict[str, Any] = {"model_version": item.model_version, "result": _result(item)}
            if item.confidence is not None:
                prediction["score"] = round(item.confidence, 6)
            tasks.append(
                {
                    "data": {"sample_id": item.sample_id, TEXT: item.text, "task": item.spec.name},
                    "predictions": [prediction],
                }
            )
        extra = {".config.xml": labelling_config(spec)} if spec is not None else {}
        return tasks, extra

    @classmethod
    def decisions(cls, doc: Any, source: str) -> list[Decision]:
        if not isinstance(doc, list):
            raise UsageError(f"{source}: a Label Studio JSON export is a list of tasks")
        out = []
        for position, task in enumerate(doc):
            where = f"{source}: task [{position}]"
            if not isinstance(task, Mapping) or not isinstance(task.get("data"), Mapping):
                raise UsageError(f"{where} has no data object")
            sample_id = task["data"].get("sample_id")
            if not isinstance(sample_id, str) or not sample_id:
                raise UsageError(f"{where}: data.sample_id is missing")
            annotations = task.get("annotations")
            if annotations is None:
                continue
            if not isinstance(annotations, list):
                raise UsageError(f"{where}: annotations is not a list")
            answer, annotator = None, None
            for annotation in annotations:
                if not isinstance(annotation, Mapping) or annotation.get("was_cancelled"):
                    continue
                found = _answer(annotation.get("result") or [], f"{where}.annotations")
                if found is not None:
                    answer, annotator = found, annotation.get("completed_by")
            if answer is not None:
                task_name = task["data"].get("task")
                if task_name is not None and not isinstance(task_name, str):
                    raise UsageError(f"{where}: data.task is not a task name")
                out.append(
                    Decision(
                        sample_id,
                        answer,
                        str(task_name) if task_name else None,
                        None if annotator is None else str(annotator),
                        where,
                    )
                )
        return out


def labelling_config(spec: TaskSpec) -> str:
    """The project's labelling config: the input text and one control for the answer."""
    lines = ["<View>", f"  <Header value={quoteattr(f'{spec.name}: {spec.title}')}/>"]
    lines.append(f'  <Text name="{TEXT}" value="${TEXT}"/>')
    if spec.is_closed:
        lines.append(
            f'  <Choices name="label" toName="{TEXT}" choice="single" showInline="true" required="true">'
        )
        lines += [f"    <Choice value={quoteattr(label)}/>" for label in spec.labels or ()]
        lines.append("  </Choices>")
    else:
        lines.append(
            f'  <TextArea name="answer" toName="{TEXT}" editable="true" maxSubmissions="1" required="true"/>'
        )
    lines.append("</View>")
    return "\n".join(lines) + "\n"


def _result(item: ReviewItem) -> list[dict[str, Any]]:
    if not item.prediction:
        return []
    region: dict[str, Any] = {"from_name": item.question, "to_name": TEXT}
    if item.spec.is_closed:
        region.update(type="choices", value={"choices": [item.prediction]})
    else:
        region.update(type="textarea", value={"text": [item.prediction]})
    return [region]


def _answer(result: Any, where: str) -> str | None:
    if not isinstance(result, list):
        raise UsageError(f"{where}: result is not a list")
    for region in result:
        if not isinstance(region, Mapping) or region.get("from_name") not in ("label", "answer"):
            continue
        value = region.get("value")
        if not isinstance(value, Mapping):
            raise UsageError(f"{where}: the value of {region.get('from_name')} is not an object")
        for field in ("choices", "text"):
            chosen = value.get(field)
            if chosen is None:
                continue
            if isinstance(chosen, str):
                return chosen
            if not isinstance(chosen, list) or not all(isinstance(c, str) for c in chosen):
                raise UsageError(f"{where}: {field} is not a list of texts")
            if chosen:
                return chosen[0]
    return None

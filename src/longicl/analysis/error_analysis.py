"""Errors of a run: confusion matrices, label bias, parse failures, the worst samples with the
neighbours their prompts carried, answer lengths."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from longicl.analysis.runs import RunData
from longicl.analysis.stats import percentile
from longicl.analysis.tables import COUNT, NUMBER, TEXT, frame
from longicl.data import Example
from longicl.records import AnyRecord, SampleRecord, as_record
from longicl.tasks import get_task

UNPARSED = "(unparsed)"


def confusion_matrix(records: Sequence[AnyRecord], labels: Sequence[str]) -> tuple[list[str], Any]:
    """``(columns, matrix)``: rows are gold labels in ``labels`` order, columns the predictions,
    with a last column ``(unparsed)`` for empty or unknown predictions."""
    import numpy as np

    rows = list(labels)
    columns = [*rows, UNPARSED]
    matrix = np.zeros((len(rows), len(columns)), dtype=int)
    for record in map(as_record, records):
        gold = record.gold
        if gold not in rows:
            continue
        prediction = record.prediction or ""
        column = columns.index(prediction) if prediction in rows else len(columns) - 1
        matrix[rows.index(gold), column] += 1
    return columns, matrix


def label_bias(records: Sequence[AnyRecord], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per label: how often it is the gold answer and how often it is predicted."""
    typed = [as_record(r) for r in records]
    gold = Counter(r.gold for r in typed)
    predicted = Counter((r.prediction if r.prediction in labels else UNPARSED) for r in typed)
    total = len(records) or 1
    rows = []
    for label in [*labels, UNPARSED]:
        if label == UNPARSED and not predicted.get(label):
            continue
        rows.append(
            {
                "label": label,
                "gold": gold.get(label, 0),
                "predicted": predicted.get(label, 0),
                "gold share": gold.get(label, 0) / total,
                "predicted share": predicted.get(label, 0) / total,
            }
        )
    return rows


def last_request(record: AnyRecord) -> dict[str, Any]:
    return dict(as_record(record).last_request)


def parse_failures(records: Sequence[AnyRecord]) -> list[dict[str, Any]]:
    """Samples whose reply could not be read (failed requests included)."""
    rows = []
    for record in map(as_record, records):
        if record.parsed_ok is False or record.error:
            rows.append(
                {
                    "sample": record.sample_id,
                    "reason": record.error or record.parse_error,
                    "reply": (record.last_request.get("raw_response") or "")[:300],
                    "gold": record.gold,
                }
            )
    return rows


#: Columns of `parse_failure_rows` and their dtypes.
PARSE_FAILURE_COLUMNS = {"task": TEXT, "sample": TEXT, "reason": TEXT, "reply": TEXT, "gold": TEXT}


def parse_failure_rows(run: RunData) -> pd.DataFrame:
    """The `parse_failures` of every task of a run, one row per sample."""
    rows = [{"task": name, **row} for name, records in run.records.items() for row in parse_failures(records)]
    return frame(rows, PARSE_FAILURE_COLUMNS)


def _badness(record: SampleRecord) -> int:
    if record.error:
        return 3
    if record.parsed_ok is False:
        return 2
    if record.correct == 0:
        return 1
    return 0


def worst_samples(records: Sequence[AnyRecord], k: int = 5) -> list[dict[str, Any]]:
    """Up to ``k`` records that went worst: failed requests, then parse failures, then wrong
    answers (longest replies first within a kind, then sample order)."""
    bad = [(t, r) for r in records if _badness(t := as_record(r)) > 0]
    bad.sort(
        key=lambda pair: (
            -_badness(pair[0]),
            -len(pair[0].last_request.get("raw_response") or ""),
            0 if pair[0].index is None else pair[0].index,
        )
    )
    return [r.to_dict() if isinstance(r, SampleRecord) else dict(r) for _, r in bad[:k]]


def neighbours(record: AnyRecord, pool: Mapping[str, Example]) -> list[Example]:
    """The per-sample (dynamic) demonstrations of a record's last request, most similar last."""
    ids = as_record(record).last_request.get("dynamic_demo_ids") or []
    return [pool[i] for i in ids if i in pool]


def neighbour_agreement(record: AnyRecord, pool: Mapping[str, Example]) -> float | None:
    """Share of the sample's neighbours whose output equals its gold answer (None for code)."""
    demos = neighbours(record, pool)
    typed = as_record(record)
    gold, task = typed.gold, typed.task
    if not demos or gold is None or (task and get_task(task).answer_kind.value == "code"):
        return None
    return sum(1 for ex in demos if ex.output == gold) / len(demos)


def answer_lengths(records: Sequence[AnyRecord]) -> list[int]:
    """Characters of each sample's final raw reply (samples without a reply are left out)."""
    return [len(text) for r in records if (text := as_record(r).last_request.get("raw_response")) is not None]


#: Columns of `error_rows` and their dtypes.
ERROR_COLUMNS = {
    "task": TEXT,
    "n": COUNT,
    "accuracy": NUMBER,
    "wrong": COUNT,
    "parse failures": COUNT,
    "failed requests": COUNT,
    "reply chars (median)": NUMBER,
}


def error_rows(run: RunData) -> pd.DataFrame:
    """Per task: samples, wrong answers, parse failures, failed requests."""
    rows = []
    for name, lines in run.records.items():
        records = [as_record(r) for r in lines]
        rows.append(
            {
                "task": name,
                "n": len(records),
                "accuracy": run.tasks.get(name, {}).get("accuracy"),
                "wrong": sum(1 for r in records if r.correct == 0),
                "parse failures": sum(1 for r in records if r.parsed_ok is False and not r.error),
                "failed requests": sum(1 for r in records if r.error),
                "reply chars (median)": percentile(answer_lengths(records), 0.5),
            }
        )
    return frame(rows, ERROR_COLUMNS)


def describe_sample(line: AnyRecord, pool: Mapping[str, Example], *, width: int = 400) -> str:
    """Markdown for one sample: input, gold, prediction, reply, and its neighbours."""
    record = as_record(line)

    def short(text: str | None) -> str:
        text = " ".join((text or "").split())
        return text if len(text) <= width else text[: width - 1] + "…"

    sample = pool.get(str(record.sample_id))
    lines = [
        f"**{record.sample_id}**",
        "",
        f"- input: {short(sample.input if sample else None)}",
        f"- gold: `{short(record.gold)}`; prediction: `{short(record.prediction)}`",
        f"- raw reply: `{short(record.last_request.get('raw_response'))}`",
    ]
    if record.parse_error or record.error:
        lines.append(f"- problem: {short(record.error or record.parse_error)}")
    demos = neighbours(record, pool)
    agreement = neighbour_agreement(record, pool)
    lines.append(
        f"- {len(demos)} per-sample neighbours"
        + ("" if agreement is None else f", {agreement:.0%} of them labelled with the gold answer")
        + (":" if demos else "")
    )
    for ex in demos[::-1][:5]:  # most similar first
        lines.append(f"    - `{short(ex.output)[:60]}` ← {short(ex.input)[: width // 2]}")
    return "\n".join(lines)


def worst_markdown(records: Sequence[AnyRecord], pool: Mapping[str, Example], k: int = 3) -> str:
    """The `worst_samples` of a task described one after another (Markdown)."""
    worst = worst_samples(records, k)
    if not worst:
        scored = any(as_record(r).correct is not None for r in records)
        return (
            "No wrong answers."
            if scored
            else "No scored answers (a dry run, or a task judged by execution such as task 8)."
        )
    return "\n\n".join(describe_sample(r, pool) for r in worst)

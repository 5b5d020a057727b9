"""Agreement statistics: across prompt variants, between annotators, and against gold.

- Fleiss' kappa across the K self-consistency variants (every sample rated by all K; an
  unreadable answer is a category of its own), chance-corrected, 1 = the variants always agree;
- Cohen's kappa (scikit-learn) between two annotators over the samples both answered: the
  language model vs the classical annotator (a side voter in the same run, or another run), and
  the model vs gold on dev.

Answers are compared in the metric's normalised form (``key``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from longicl.records import AnyRecord, SampleRecord, as_record

UNREADABLE = "(unreadable)"


def fleiss_kappa(ratings: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa of ``ratings`` (one row per sample, one answer per rater, equal row lengths);
    None with fewer than 2 raters, no samples, or no variation at all to measure against."""
    rows = [list(r) for r in ratings if r]
    if not rows or len({len(r) for r in rows}) != 1 or len(rows[0]) < 2:
        return None
    raters = len(rows[0])
    categories = sorted({a for r in rows for a in r})
    index = {c: i for i, c in enumerate(categories)}
    counts = np.zeros((len(rows), len(categories)))
    for i, row in enumerate(rows):
        for answer in row:
            counts[i, index[answer]] += 1
    per_sample = ((counts * counts).sum(axis=1) - raters) / (raters * (raters - 1))
    observed = float(per_sample.mean())
    shares = counts.sum(axis=0) / counts.sum()
    expected = float((shares * shares).sum())
    if expected >= 1.0:
        return None  # every rating is the same category: agreement is total but kappa undefined
    return (observed - expected) / (1.0 - expected)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two annotators' paired answers; None when undefined."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) < 2 or len(a) != len(b):
        return None
    if len(set(a) | set(b)) < 2:
        return None
    value = float(cohen_kappa_score(list(a), list(b)))
    return None if np.isnan(value) else value


def variant_ratings(records: Sequence[AnyRecord], key: Callable[[str], str]) -> list[list[str]]:
    """Each record's K variant answers (normalised; unreadable ones as `UNREADABLE`), for the
    records that have the run's full K."""
    rows = [
        [key(str(q.get("answer") or "")) if q.get("answer") else UNREADABLE for q in r.request_entries]
        for r in map(as_record, records)
        if r.vote is not None
    ]
    k = max((len(r) for r in rows), default=0)
    return [r for r in rows if len(r) == k]


def side_pairs(
    records: Sequence[AnyRecord], key: Callable[[str], str]
) -> dict[str, tuple[list[str], list[str]]]:
    """Per side voter (``classifier``, ...): the model's and the side voter's answers, paired."""
    pairs: dict[str, tuple[list[str], list[str]]] = {}
    for r in map(as_record, records):
        for side in (r.vote or {}).get("side") or []:
            model = model_answer(r, key)
            if model is None or not side.get("answer"):
                continue
            mine, theirs = pairs.setdefault(str(side.get("source") or "side"), ([], []))
            mine.append(model)
            theirs.append(key(str(side["answer"])))
    return pairs


def model_answer(record: SampleRecord, key: Callable[[str], str]) -> str | None:
    """The language model's own decision: the answers of its variants, majority (no side votes)."""
    answers = [key(str(q["answer"])) for q in record.request_entries if q.get("answer")]
    if not answers:
        return None
    return max(sorted(set(answers)), key=answers.count)

"""Demo-pool audit: labelled examples whose gold label the model contradicts with confidence.

On a dev run every sample is a labelled example of the task file held out of the pool, the same
examples that serve as demonstrations in test runs. When the model answers one of them
differently from its gold label *and* is confident about it, the gold label is a candidate
label error: users fix the data, not just predictions. Several dev runs with different
``seed`` values hold out different examples, so together they audit more of the pool (a k-fold
audit in the limit); `audit` takes the records of one or several runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from longicl.metrics import score
from longicl.quality.confidence import model_prediction, of_record
from longicl.records import AnyRecord, as_record
from longicl.tasks import TaskSpec

THRESHOLD = 0.8


@dataclass(frozen=True)
class Suspect:
    task: str
    sample_id: str
    gold: str
    model_answer: str
    confidence: float
    confidence_source: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["confidence"] = round(self.confidence, 6)
        return out


def audit(spec: TaskSpec, records: Iterable[AnyRecord], threshold: float = THRESHOLD) -> list[Suspect]:
    """Dev records whose model answer contradicts gold with confidence >= ``threshold``, most
    confident first (one row per sample id; the most confident when several runs saw it)."""
    suspects = Suspects(spec, threshold)
    for record in records:
        suspects.add(record)
    return suspects.result()


class Suspects:
    """`audit` one record at a time. It keeps only the suspects (output content: one per
    contradicted sample id), never the other records."""

    def __init__(self, spec: TaskSpec, threshold: float = THRESHOLD) -> None:
        self.spec = spec
        self.threshold = threshold
        self.best: dict[str, Suspect] = {}

    def add(self, record: AnyRecord) -> None:
        record = as_record(record)
        gold = record.gold
        answer = model_prediction(record)
        if gold is None or not answer or score(self.spec, answer, gold) != 0.0:
            return
        conf = of_record(record)
        # the calibrated value when one was applied
        value = (record.confidence or {}).get("confidence", conf.value)
        if value is None or float(value) < self.threshold:
            return
        suspect = Suspect(
            self.spec.name, str(record.sample_id), str(gold), answer, float(value), str(conf.source)
        )
        if suspect.sample_id not in self.best or self.best[suspect.sample_id].confidence < suspect.confidence:
            self.best[suspect.sample_id] = suspect

    def result(self) -> list[Suspect]:
        return sorted(self.best.values(), key=lambda s: (-s.confidence, s.sample_id))

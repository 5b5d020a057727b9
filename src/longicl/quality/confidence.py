"""One confidence in [0, 1] per annotated sample, and where it came from.

The confidence of a record's final answer is the mean, over the K prompt variants that were
asked (``self_consistency=K``), of each variant's support for that answer:

- a variant with label probabilities (closed labels, ``method.logprobs``) supports the answer
  with the probability it gives that label, read at the token where the label is generated
  (`longicl.methods.scoring`), after calibration of the label scores when one was applied;
- a variant without them supports it with 1 when its own answer is the same, else 0 (an
  unreadable or failed variant gives 0).

So with K=1 and label scores it is the label probability; with K>1 and no scores it is the share
of variants that agree with the answer; with both it is the soft-vote share, which combines the
two. A single answer without scores has no confidence: ``None``, never a made-up number. Side
voters (the classical classifier) and a program check do not add support: the confidence speaks
for the language model's answers.

``source`` names the ingredients: ``logprob`` (K=1), ``agreement`` (K>1, no scores),
``logprob+agreement`` (K>1, scores), ``None`` without a confidence. A fitted confidence map
(`longicl.methods.calibration.ConfidenceMap`) turns the raw value into a calibrated one; the
source then ends in ``|isotonic``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from longicl.records import AnyRecord, as_record

LOGPROB = "logprob"
AGREEMENT = "agreement"
BOTH = "logprob+agreement"


@dataclass(frozen=True)
class Support:
    """What one prompt variant says about the final answer."""

    answer: str  # the variant's own (normalised) answer, "" when unreadable
    label_logprobs: Mapping[str, float] | None = None  # over the labels, calibrated when applied


@dataclass(frozen=True)
class Confidence:
    value: float | None
    source: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "confidence": None if self.value is None else round(self.value, 6),
            "confidence_source": self.source,
        }


NONE = Confidence(None, None)


def confidence(
    final: str, supports: Sequence[Support], key: Callable[[str], str] | None = None
) -> Confidence:
    """The confidence of ``final`` given each variant's `Support` (see the module docstring)."""
    if not final or not supports:
        return NONE
    key = key or (lambda answer: answer)
    target = key(final)
    scored = [s for s in supports if s.label_logprobs]
    if len(supports) == 1 and not scored:
        return NONE
    shares = []
    for support in supports:
        if support.label_logprobs:
            shares.append(
                sum(math.exp(lp) for label, lp in support.label_logprobs.items() if key(label) == target)
            )
        else:
            shares.append(1.0 if support.answer and key(support.answer) == target else 0.0)
    value = min(1.0, max(0.0, sum(shares) / len(shares)))
    if len(supports) == 1:
        return Confidence(value, LOGPROB)
    return Confidence(value, BOTH if scored else AGREEMENT)


def supports_of(record: AnyRecord) -> list[Support]:
    """Each request's `Support`, read back from a record written by the annotator."""
    out = []
    for request in as_record(record).request_entries:
        scores = request.get("calibrated_logprobs") or request.get("label_logprobs")
        out.append(Support(str(request.get("answer") or ""), scores or None))
    return out


def model_prediction(record: AnyRecord) -> str:
    """The model's final answer, also after a human replaced it (`longicl.review`)."""
    typed = as_record(record)
    if typed.model_prediction is not None or "model_prediction" in (typed.source_keys or ()):
        return str(typed.model_prediction or "")
    return str(typed.prediction or "")


def of_record(record: AnyRecord, key: Callable[[str], str] | None = None) -> Confidence:
    """The record's stored confidence, or one computed from its requests (older records)."""
    typed = as_record(record)
    stored = typed.confidence or {}
    if "confidence_source" in stored:  # the raw value: what a calibration is fitted on
        # ``confidence_raw`` is an extra field as read, a confidence field as an annotator built it
        fields = {**typed.extra, **stored}
        value = fields.get("confidence_raw", fields.get("confidence"))
        source = stored.get("confidence_source")
        return Confidence(
            None if value is None else float(value), None if source is None else source.split("|")[0]
        )
    if typed.error or typed.vote is None:
        return NONE
    return confidence(model_prediction(typed), supports_of(typed), key)


def record_fields(
    final: str,
    supports: Sequence[Support],
    key: Callable[[str], str] | None = None,
    mapping: Any | None = None,
) -> dict[str, Any]:
    """The confidence fields of a record: ``confidence`` and ``confidence_source``, and with a
    confidence map (`longicl.methods.calibration.ConfidenceMap`) applied, the calibrated value
    as ``confidence`` and the raw one as ``confidence_raw``."""
    raw = confidence(final, supports, key)
    if raw.value is None or mapping is None:
        return raw.to_dict()
    calibrated = Confidence(mapping.apply(raw.value), f"{raw.source}|{mapping.method}")
    return {**calibrated.to_dict(), "confidence_raw": round(raw.value, 6)}

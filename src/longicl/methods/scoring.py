"""Label scoring from the log-probabilities of the answer's first token.

For a closed label set whose labels differ in their first token ("Sad" / "Not sad", "Y" / "N",
"0".."6" under Qwen's tokenizer), the distribution of the first answer token already is a
distribution over labels: each top-k token that is a prefix of exactly one label (compared
without surrounding spaces, case-insensitively, aliases included) gives its probability to that
label. Tokens that fit no label, or several, are ignored. A label none of whose tokens made the
top-k gets an even share of the probability mass the top-k leaves over, capped at the smallest
listed probability (it was not listed, so it was not more likely than that).

Scores come only from the position where the answer is generated: the first token after the
last ``</think>`` (thinking with the reasoning inline; none when the server's reasoning parser
splits it off) that is neither blank, nor a quote or markdown mark (a JSON-constrained answer
starts with ``"``), nor part of an echoed answer prefix (``Output:``, which weak models write
first). The alternatives at an earlier position are the model's choice of how to begin, not of
a label. When the caller knows the text span the label was parsed from (``answer``: the
parser's candidate), the position is located from it instead: the token covering the start of
the span's last occurrence after the reasoning, so that ``<label>Sad``, ``Answer: Sad`` or a
label after a sentence of prose are scored at ``Sad``, not at ``<``, ``Answer`` or the prose;
text of that token before the span (``>Sad``) is cut from it and from its alternatives. When the
span is not found in the tokens the rule above applies. Scores are returned as
log-probabilities normalised over the labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from longicl.tasks import TaskSpec

#: log-probabilities are clamped here, so that an impossible label stays a finite number
FLOOR = -50.0
#: characters that open an answer without being part of it (JSON strings, markdown emphasis)
_OPENERS = "\"'`*_"


def answer_token(
    logprobs: Sequence[Mapping[str, Any]] | None, answer_prefix: str = "", *, answer: str | None = None
) -> Mapping[str, Any] | None:
    """The generated token where the answer proper starts (see the module docstring)."""
    if not logprobs:
        return None
    start = 0
    for position, item in enumerate(logprobs):
        if "</think>" in str(item.get("token", "")):
            start = position + 1
    if answer and answer.strip():
        located = _token_at_span(logprobs, start, answer)
        if located is not None:
            return located
    answer_tokens = logprobs[start:]
    prefix = answer_prefix.strip().lower()
    reply = "".join(str(item.get("token", "")) for item in answer_tokens).lstrip().lower()
    echoed = bool(prefix) and reply.startswith(prefix)
    written = ""
    for item in answer_tokens:
        token = str(item.get("token", ""))
        written += token
        if echoed and len(written.lstrip()) <= len(prefix):
            continue  # still inside the echoed prefix
        if token.strip().strip(_OPENERS):
            return item
    return None


def _token_at_span(
    logprobs: Sequence[Mapping[str, Any]], start: int, answer: str
) -> Mapping[str, Any] | None:
    """The token covering the start of ``answer``'s last occurrence after token ``start``, with the
    text before the span cut from it and from its alternatives; None when it does not occur."""
    tokens = [str(item.get("token", "")) for item in logprobs[start:]]
    offset = "".join(tokens).lower().rfind(answer.strip().lower())
    if offset < 0:
        return None
    position = 0
    for index, token in enumerate(tokens):
        if position + len(token) > offset:
            item = logprobs[start + index]
            cut = offset - position
            if cut == 0:
                return item
            lead = token[:cut]
            top = {alt[cut:]: lp for alt, lp in dict(item.get("top") or {}).items() if alt.startswith(lead)}
            return {"token": token[cut:], "logprob": item.get("logprob"), "top": top}
        position += len(token)
    return None


def label_logprobs(
    spec: TaskSpec,
    logprobs: Sequence[Mapping[str, Any]] | None,
    answer_prefix: str = "",
    *,
    answer: str | None = None,
) -> dict[str, float] | None:
    """Log-probability of each label of ``spec`` (normalised over the labels), or None.

    ``answer``: the text span the label was parsed from, which locates the label's token."""
    if not spec.labels:
        return None
    item = answer_token(logprobs, answer_prefix, answer=answer)
    if item is None:
        return None
    top: dict[str, float] = dict(item.get("top") or {})
    token = str(item.get("token", ""))
    if token not in top and item.get("logprob") is not None:
        top[token] = float(item["logprob"])
    owners = _prefix_owners(spec)
    mass: dict[str, list[float]] = {label: [] for label in spec.labels}
    for text, logprob in top.items():
        label = owners(text)
        if label is not None and logprob is not None and math.isfinite(logprob):
            mass[label].append(float(logprob))
    if not any(mass.values()):
        return None
    listed = [float(lp) for lp in top.values() if lp is not None and math.isfinite(lp)]
    leftover = max(0.0, 1.0 - sum(math.exp(lp) for lp in listed))
    missing = [label for label, values in mass.items() if not values]
    unlisted = FLOOR
    if missing:
        share = leftover / len(missing)
        unlisted = min(math.log(share) if share > 0 else FLOOR, min(listed))
    scores = {label: (_logsumexp(values) if values else unlisted) for label, values in mass.items()}
    return normalise(scores)


def normalise(scores: Mapping[str, float]) -> dict[str, float]:
    """Log-probabilities renormalised to sum to one, each clamped at ``FLOOR``."""
    total = _logsumexp(list(scores.values()))
    return {label: max(FLOOR, value - total) for label, value in scores.items()}


def best_label(scores: Mapping[str, float], order: Sequence[str]) -> str:
    """The highest-scoring label; ties go to the label listed first in ``order``."""
    rank = {label: i for i, label in enumerate(order)}
    return max(scores, key=lambda label: (scores[label], -rank.get(label, len(rank))))


def _prefix_owners(spec: TaskSpec):
    names: dict[str, str] = {label.lower(): label for label in spec.labels or ()}
    for alias, label in spec.label_aliases:
        names.setdefault(alias.lower(), label)

    def owner(token: str) -> str | None:
        text = token.strip().lstrip(_OPENERS).lower()
        if not text:
            return None
        found = {label for name, label in names.items() if name.startswith(text)}
        return found.pop() if len(found) == 1 else None

    return owner


def _logsumexp(values: Sequence[float]) -> float:
    if not values:
        return FLOOR
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))

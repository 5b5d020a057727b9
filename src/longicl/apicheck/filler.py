"""Deterministic filler text and a planted needle, for the long-context and prefix-cache probes."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from longicl.apicheck.config import NEEDLE_TEMPLATE

_SUBJECTS = (
    "The archivist",
    "A river pilot",
    "The night baker",
    "An old surveyor",
    "The harbour clerk",
    "A travelling tinker",
    "The lighthouse keeper",
    "A quiet botanist",
    "The village cartographer",
    "A retired signalman",
    "The orchard warden",
    "A young glassblower",
)
_VERBS = (
    "catalogued",
    "repainted",
    "measured",
    "carried",
    "described",
    "mended",
    "counted",
    "sketched",
    "weighed",
    "polished",
    "returned",
    "sorted",
)
_OBJECTS = (
    "the copper lanterns",
    "a crate of blue tiles",
    "the tidal charts",
    "several wool blankets",
    "the brass compass",
    "a basket of pears",
    "the winter ledgers",
    "a box of iron nails",
    "the painted oars",
    "a stack of slate shingles",
    "the linen maps",
    "a jar of amber honey",
)
_PLACES = (
    "near the north gate",
    "behind the grain mill",
    "beside the canal lock",
    "under the stone bridge",
    "at the end of the pier",
    "inside the clock tower",
    "along the market road",
    "by the salt marsh",
    "next to the ferry ramp",
    "in the chapel loft",
    "on the cliff path",
    "past the old quarry",
)
_TIMES = (
    "before dawn",
    "after the rain",
    "during the fair",
    "on a windy afternoon",
    "late in autumn",
    "at midsummer",
    "while the bells rang",
    "as the tide turned",
)
_WORDS = (
    "amber",
    "falcon",
    "juniper",
    "lantern",
    "meridian",
    "orchid",
    "quartz",
    "saffron",
    "tundra",
    "zephyr",
)


def filler_paragraph(rng: random.Random, sentences: int = 8) -> str:
    """One paragraph of plain, fact-free sentences, fully determined by ``rng``'s state."""
    parts = []
    for _ in range(sentences):
        parts.append(
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
            f"{rng.choice(_PLACES)} {rng.choice(_TIMES)}."
        )
    return " ".join(parts)


def build_filler(counter: Any, target_tokens: int, seed: int = 0) -> tuple[list[str], int]:
    """Paragraphs of filler totalling at least ``target_tokens`` tokens (same seed, same text)."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    total = 0
    while total < target_tokens:
        batch = [filler_paragraph(rng) for _ in range(64)]
        for paragraph, n in zip(batch, counter.count_many(batch), strict=True):
            if total >= target_tokens:
                break
            paragraphs.append(paragraph)
            total += n + 1  # + the newline joining paragraphs (an upper bound)
    return paragraphs, total


@dataclass(frozen=True)
class Haystack:
    text: str
    passphrase: str
    tokens: int  # of the text alone


def build_haystack(counter: Any, target_tokens: int, seed: int = 0, depth: float = 0.6) -> Haystack:
    """~``target_tokens`` tokens of filler with ``NEEDLE_TEMPLATE`` planted at ``depth`` (0 start, 1 end)."""
    rng = random.Random(f"needle-{seed}")
    passphrase = f"{rng.choice(_WORDS)}-{rng.randint(1000, 9999)}"
    needle = NEEDLE_TEMPLATE.format(passphrase=passphrase)
    paragraphs, _ = build_filler(counter, max(0, target_tokens - counter.count(needle)), seed)
    at = min(len(paragraphs), max(0, round(len(paragraphs) * depth)))
    paragraphs.insert(at, needle)
    text = "\n".join(paragraphs)
    return Haystack(text, passphrase, counter.count(text))

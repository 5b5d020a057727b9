"""A bounded, seeded sample of a stream that keeps the stream's order: what a run's summaries keep
of the rows for the numbers that need every point (curves, fits, medians).

`Reservoir` keeps the first ``cap`` items as they come, so that up to ``cap`` items a summary
computed from `items()` is the one computed from the whole list; past ``cap`` it keeps a uniform
sample (reservoir sampling, algorithm R, with a seeded generator: the same stream gives the same
sample), and `items()` returns it in arrival order. `sampled` says which case holds, so that an
output can say its curve is estimated from a sample.
"""

from __future__ import annotations

import random
from typing import Generic, TypeVar

#: at most this many points are kept per curve or fit (the numbers are exact up to it)
CURVE_SAMPLE = 100_000
SEED = 0

T = TypeVar("T")


class Reservoir(Generic[T]):
    """At most ``cap`` items of a stream: all of them while there are no more, else a seeded
    uniform sample; `items()` in arrival order."""

    def __init__(self, cap: int = CURVE_SAMPLE, seed: int = SEED) -> None:
        if cap < 1:
            raise ValueError(f"a reservoir keeps at least one item, not {cap}")
        self.cap = cap
        self.seen = 0  # items offered
        self._slots: list[tuple[int, T]] = []  # (arrival number, item)
        self._rng = random.Random(seed)

    def add(self, item: T) -> None:
        arrival = self.seen
        self.seen += 1
        if arrival < self.cap:
            self._slots.append((arrival, item))
            return
        slot = self._rng.randrange(arrival + 1)
        if slot < self.cap:
            self._slots[slot] = (arrival, item)

    @property
    def sampled(self) -> bool:
        """More items came than are kept: what `items()` gives is a sample."""
        return self.seen > self.cap

    def __len__(self) -> int:
        return len(self._slots)

    def items(self) -> list[T]:
        """The kept items in the order they came."""
        slots = sorted(self._slots, key=lambda slot: slot[0]) if self.sampled else self._slots
        return [item for _, item in slots]

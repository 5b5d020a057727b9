"""Reference numbers from outside this project."""

from __future__ import annotations

#: Accuracy on the labelled examples reported by the best public entries of the competition.
BEST_PUBLIC_ACCURACY: dict[int, float] = {2: 0.89, 5: 0.81, 6: 0.83, 7: 0.38}

BEST_PUBLIC_SOURCE = "best public entries (competition leaderboard reports)"

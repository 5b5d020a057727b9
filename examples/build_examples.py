"""Rebuild the example tables from the vendored challenge data (``data/openseek/``).

    python examples/build_examples.py

- ``tweet-mood.csv``: task 5's tweets (SemEval-2018 Task 1, via Super-NaturalInstructions), the
  first 500 labelled examples with "Sad" -> "down", "Not sad" -> "fine", then the first 40 test
  samples left unlabelled; ``tweet_id`` numbers the rows, ``source_id`` keeps the challenge's id.
- ``trivia.jsonl``: task 7's Jeopardy clues, split into ``category`` and ``clue`` columns, the first
  400 labelled examples, then the first 30 test samples without an ``answer``.

The output is deterministic: the same data gives the same bytes.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data" / "openseek"
MOOD = {"Sad": "down", "Not sad": "fine"}
CLUE = re.compile(r"Category: (?P<category>.*?)\s*\nClue: (?P<clue>.*)", re.S)


def _task(prefix: str) -> dict:
    (path,) = DATA.glob(f"{prefix}_*.json")
    return json.loads(path.read_text(encoding="utf-8"))


def tweets() -> None:
    doc = _task("openseek-5")
    rows = [(ex["id"], ex["input"], MOOD[ex["output"][0]]) for ex in doc["examples"][:500]]
    rows += [(s["id"], s["input"], "") for s in doc["test_samples"][:40]]
    with (HERE / "tweet-mood.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tweet_id", "text", "mood", "source_id"])
        for number, (source_id, text, mood) in enumerate(rows, 1001):
            writer.writerow([number, text, mood, source_id])


def trivia() -> None:
    doc = _task("openseek-7")
    items = [(ex, ex["output"][0]) for ex in doc["examples"][:400]]
    items += [(s, None) for s in doc["test_samples"][:30]]
    lines = []
    for number, (item, answer) in enumerate(items, 1):
        match = CLUE.fullmatch(item["input"])
        assert match, item["input"]
        row = {"qid": f"q{number:04d}", "category": match["category"], "clue": match["clue"].strip()}
        if answer is not None:
            row["answer"] = answer
        lines.append(json.dumps(row, ensure_ascii=False))
    (HERE / "trivia.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    tweets()
    trivia()

"""``python -m longicl.tasks check FILE``: validate a task file and show what it understood.

Reads the task file and its data exactly as a run would, counts the demonstrations in Qwen tokens
with the configured prompt template (``conf/prompt/``), and prints the rows, the labelled and
unlabelled counts, the label distribution, the tokens per demonstration and how the pool compares
with the ``min_icl_tokens`` floor. Mistakes: one line naming the file and key, exit 2; nothing is
ever written.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from longicl.errors import DataError, run_command
from longicl.paths import CONF_DIR
from longicl.tasks import TaskSpec, task_file_path


def describe(path: str | Path, *, tokenizer_path: str | None = None) -> list[str]:
    """The lines ``check`` prints for one task file; raises `DataError` for a bad file."""
    from longicl.cli import compose_config
    from longicl.data import load_task
    from longicl.metrics import check_metric
    from longicl.prompt import PromptTemplate
    from longicl.tasks import load_task_file
    from longicl.tokens import TokenCounter

    spec = load_task_file(task_file_path(path))
    check_metric(spec)
    data = load_task(spec)
    spec = data.spec
    labelled, unlabelled = len(data.examples), len(data.test_samples)
    lines = [
        f"{spec.source}: task {spec.name!r}, answer {spec.answer_kind.value}, metric {spec.metric}",
        f"data: {data.path} ({labelled + unlabelled} rows: {labelled} labelled, {unlabelled} to annotate)",
    ]
    if data.table is not None:
        template = "column" if spec.input in data.table.frame.columns else "template over"
        lines.append(
            f"input: {template} {', '.join(repr(c) for c in spec.input_columns)}; "
            f"answers: column {spec.output_column!r}; ids: "
            + (f"column {spec.id_column!r}" if spec.id_column else "row number (0-based)")
        )
    if spec.labels is not None:
        tally = Counter(ex.output for ex in data.examples)
        origin = (
            "listed in the task file" if _listed(path) else "found in the data (add `labels:` to fix them)"
        )
        shares = ", ".join(
            f"{label} {tally.get(label, 0)} ({tally.get(label, 0) / labelled:.1%})" for label in spec.labels
        )
        lines.append(f"labels ({origin}): {shares}")
    prompt_cfg = dict(compose_config(CONF_DIR, []).prompt)
    template = PromptTemplate.from_config(prompt_cfg, spec)
    counter = TokenCounter(tokenizer_path)
    costs = counter.count_many([template.render_demo(ex) for ex in data.examples])
    pool = sum(costs)
    lines.append(
        f"tokens per demonstration: median {statistics.median(costs):,.0f}, min {min(costs):,}, max {max(costs):,} "
        f"({pool:,} in all {labelled} labelled rows)"
    )
    lines.append(_floor_line(spec.min_icl_tokens, costs, spec.default_dev_size))
    lines.append(_dev_line(spec, labelled))
    if pool < spec.min_icl_tokens:
        raise DataError(
            f"{spec.source}: min_icl_tokens: {spec.min_icl_tokens} tokens of demonstrations per request, "
            f"but all {labelled} labelled rows hold only {pool}; lower it or label more rows"
        )
    return lines


def _listed(path: str | Path) -> bool:
    import yaml

    doc = yaml.safe_load(task_file_path(path).read_text(encoding="utf-8"))
    return isinstance(doc, dict) and doc.get("labels") is not None


def _floor_line(floor: int, costs: Sequence[int], dev_size: int) -> str:
    if not floor:
        return "min_icl_tokens: none (every request gets the selection's budget of demonstrations)"
    pool = sum(costs)
    typical = -(-floor // max(1, int(statistics.median(costs))))
    longest_first = _count_to_reach(sorted(costs, reverse=True), floor)
    shortest_first = _count_to_reach(sorted(costs), floor)
    fits = f"the pool holds {pool / floor:.1f}x the floor" if pool >= floor else "the pool CANNOT fill it"
    span = f"{longest_first} to {shortest_first}" if shortest_first else "more than the pool has"
    return (
        f"min_icl_tokens {floor:,}: about {typical} demonstrations of median size per request ({span}); "
        f"{fits} (before a dev run holds out {dev_size} rows)"
    )


def _dev_line(spec: TaskSpec, labelled: int) -> str:
    origin = (
        "dev_size in the task file"
        if not spec.dev_size_from_table
        else f"no dev_size in the task file: at most 200 and a fifth of the {labelled} labelled rows"
    )
    keep = labelled - spec.default_dev_size
    return (
        f"split=dev: holds out {spec.default_dev_size} labelled rows and scores them ({origin}); the other "
        f"{keep} are its demonstrations (split=test demonstrates from all {labelled}); dev_size=N overrides"
    )


def _count_to_reach(costs: Sequence[int], floor: int) -> int | None:
    """How many of ``costs``, taken in order, reach ``floor`` tokens (None: never)."""
    total = 0
    for number, cost in enumerate(costs, 1):
        total += cost
        if total >= floor:
            return number
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="longicl tasks", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a task file and show what it understood")
    check.add_argument("file", help="the task file (.yaml)")
    check.add_argument("--tokenizer-path", default=None, help="count with a model directory's tokenizer")
    args = parser.parse_args(argv)
    return run_command(lambda: _check(args.file, args.tokenizer_path))


def _check(file: str, tokenizer_path: str | None) -> int:
    print("\n".join(describe(file, tokenizer_path=tokenizer_path)))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

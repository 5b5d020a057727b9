"""The registry of the eight challenge tasks: the one place that says what each task is.

Every stage (loading, splitting, selection, prompting, parsing, metrics, engines) reads a
`TaskSpec` from here instead of branching on task ids, so adding a task means adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from longicl.errors import UsageError


class AnswerKind(StrEnum):
    """How an answer looks; selects the parser, the normaliser and the format instruction."""

    LABEL = "label"  # one of a closed label set
    INTEGER = "integer"  # a single (possibly negative) integer
    INT_LIST = "int_list"  # a list of integers, canonical form "[a, b, c]"
    TEXT = "text"  # free text, compared exactly after normalisation
    CODE = "code"  # a Python module (task 8), scored by execution, not by string match


@dataclass(frozen=True)
class TaskSpec:
    """Everything the pipeline needs to know about one task."""

    id: int
    file: str
    title: str
    answer_kind: AnswerKind
    labels: tuple[str, ...] | None = None  # closed label set, in canonical casing
    lowercase: bool = False  # normalise answers to lower case (task 7's definition asks for it)
    min_icl_tokens: int = 30_000  # the competition's floor of in-context tokens per request
    default_dev_size: int = 200
    metric: str = "exact_match"  # "exact_match" or "kernel_check"
    program: str | None = None  # name of an exact program that solves the task (classical engine)
    # Other spellings models use for a label, lower case -> canonical label ("yes" -> "Y").
    label_aliases: tuple[tuple[str, str], ...] = ()
    # A trailing "." on a text answer is noise, except in abbreviations where gold keeps it
    # ("washington, d.c.", "jr."): "strip" always drops it, "keep_abbreviations" keeps those.
    trailing_period: str = "strip"
    # Which annotator handles a sample (runner.ANNOTATORS): "default" (ask, parse, vote) or "kernel"
    # (generate, check by running, repair, fall back; longicl.kernels.generate).
    annotator: str = "default"

    @property
    def name(self) -> str:
        """The file stem used for outputs, e.g. ``openseek-5``."""
        return f"openseek-{self.id}"

    @property
    def is_closed(self) -> bool:
        return self.labels is not None


TASKS: dict[int, TaskSpec] = {
    spec.id: spec
    for spec in (
        TaskSpec(
            1,
            "openseek-1_closest_integers.json",
            "closest integers",
            AnswerKind.INTEGER,
            program="min_abs_difference",
        ),
        TaskSpec(
            2,
            "openseek-2_count_nouns_verbs.json",
            "count nouns / verbs",
            AnswerKind.LABEL,
            labels=("0", "1", "2", "3", "4", "5", "6"),
            label_aliases=(
                ("zero", "0"),
                ("one", "1"),
                ("two", "2"),
                ("three", "3"),
                ("four", "4"),
                ("five", "5"),
                ("six", "6"),
            ),
        ),
        TaskSpec(
            3,
            "openseek-3_collatz_conjecture.json",
            "Collatz step",
            AnswerKind.INT_LIST,
            program="collatz_step",
        ),
        TaskSpec(
            4,
            "openseek-4_conala_concat_strings.json",
            "string concatenation",
            AnswerKind.TEXT,
            program="concatenate",
        ),
        TaskSpec(
            5,
            "openseek-5_semeval_2018_task1_tweet_sadness_detection.json",
            "tweet sadness",
            AnswerKind.LABEL,
            labels=("Sad", "Not sad"),
            label_aliases=(("not_sad", "Not sad"), ("notsad", "Not sad"), ("not-sad", "Not sad")),
        ),
        TaskSpec(
            6,
            "openseek-6_mnli_same_genre_classification.json",
            "MNLI same genre",
            AnswerKind.LABEL,
            labels=("Y", "N"),
            label_aliases=(("yes", "Y"), ("no", "N")),
        ),
        TaskSpec(
            7,
            "openseek-7_jeopardy_answer_generation_all.json",
            "Jeopardy answers",
            AnswerKind.TEXT,
            lowercase=True,
            trailing_period="keep_abbreviations",
        ),
        TaskSpec(
            8,
            "openseek-8_kernel_generation.json",
            "Triton kernel generation",
            AnswerKind.CODE,
            min_icl_tokens=15_000,
            default_dev_size=40,
            metric="kernel_check",
            annotator="kernel",
        ),
    )
}


def get_task(task_id: int | str) -> TaskSpec:
    """Look a task up by its number (``5``, ``"5"``) or name (``"openseek-5"``)."""
    key = str(task_id).strip().removeprefix("openseek-")
    try:
        return TASKS[int(key)]
    except (ValueError, KeyError):
        known = ", ".join(str(i) for i in TASKS)
        raise UsageError(f"unknown task {task_id!r}: expected one of {known} or 'all'") from None


def resolve_tasks(selection: object) -> list[TaskSpec]:
    """Turn the CLI's ``task=`` value (``all``, ``5``, ``[1,2]``, ``"1,2"``) into specs, in id order."""
    if selection is None:
        raise UsageError("task is not set: expected 1..8, a list such as [1,5], or 'all'")
    if isinstance(selection, str):
        text = selection.strip()
        if text.lower() == "all":
            return list(TASKS.values())
        items: list[object] = [part for part in text.strip("[]").split(",") if part.strip()]
    elif isinstance(selection, int):
        items = [selection]
    else:
        try:
            items = list(selection)  # type: ignore[call-overload]
        except TypeError:
            raise UsageError(f"task={selection!r} is not a task id, a list of ids, or 'all'") from None
    if not items:
        raise UsageError("task= names no task: expected 1..8, a list such as [1,5], or 'all'")
    specs = {get_task(item).id: get_task(item) for item in items}
    return [specs[k] for k in sorted(specs)]

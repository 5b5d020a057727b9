import pytest

from longicl.parse import normalise, parse_answer, strip_reasoning
from longicl.tasks import get_task

SAD, MNLI, COUNT, CLOSEST, COLLATZ, CONCAT, JEOPARDY = (get_task(i) for i in (5, 6, 2, 1, 3, 4, 7))


@pytest.mark.parametrize(
    "spec, reply, expected",
    [
        (SAD, "Sad", "Sad"),
        (SAD, "not sad", "Not sad"),
        (SAD, "NOT SAD", "Not sad"),
        (SAD, "<label>Not sad</label>", "Not sad"),
        (SAD, "[label]Sad</label>", "Sad"),
        (SAD, "[label] Not sad [/label]", "Not sad"),
        (SAD, "<think>\nthe author lost a friend, sad\n</think>\n\n<label>Sad</label>", "Sad"),
        (SAD, "</think>\n\nNot sad", "Not sad"),
        (SAD, "\n\n\nSad", "Sad"),
        (SAD, '  "Not sad". ', "Not sad"),
        (SAD, "The tweet mentions a loss.\nAnswer: Sad", "Sad"),
        (SAD, "The author seems cheerful, so the tweet is not sad.", "Not sad"),
        (SAD, "**Answer:** Not sad", "Not sad"),
        (SAD, "Looking at the examples, this resembles the sad ones. <label>sad</label>", "Sad"),
        (MNLI, "y", "Y"),
        (MNLI, "Yes", "Y"),
        (MNLI, "The genres differ.\n<label>N</label>", "N"),
        (MNLI, "Output: N", "N"),
        (COUNT, "3", "3"),
        (COUNT, "There are three nouns.\nAnswer: 3", "3"),
        (COUNT, "two", "2"),
        (CLOSEST, "<label>12</label>", "12"),
        (CLOSEST, "The smallest gap is between 5 and 8.\nAnswer: 3", "3"),
        (CLOSEST, "−4", "-4"),
        (CLOSEST, "0.", "0"),
        (COLLATZ, "[36, 88, 148]", "[36, 88, 148]"),
        (COLLATZ, "<label>[36,88 ,148]</label>", "[36, 88, 148]"),
        (COLLATZ, "Applying the rule:\nAnswer: [4, -2]", "[4, -2]"),
        (COLLATZ, "36, 88, 148", "[36, 88, 148]"),
        (COLLATZ, "[]", "[]"),
        (CONCAT, "pthat.o", "pthat.o"),
        (CONCAT, "'pthat.o'.", "pthat.o"),
        (CONCAT, "<label>AbC</label>", "AbC"),
        (JEOPARDY, "NASCAR", "nascar"),
        (JEOPARDY, "<label>The Nutty Professor</label>", "the nutty professor"),
        (JEOPARDY, "Paris.", "paris"),
        (JEOPARDY, "washington, d.c.", "washington, d.c."),
        (JEOPARDY, "Cal Ripken, Jr.", "cal ripken, jr."),
        (JEOPARDY, "`salman rushdie`", "salman rushdie"),
    ],
)
def test_real_model_styles(spec, reply, expected):
    parsed = parse_answer(spec, reply)
    assert parsed.ok, parsed
    assert parsed.value == expected


@pytest.mark.parametrize(
    "spec, reply",
    [
        (SAD, ""),
        (SAD, None),
        (SAD, "<think>\nstill thinking when the tokens ran out"),
        (SAD, "I am not able to decide."),
        (CLOSEST, "no number here"),
        (COLLATZ, "[a, b]"),
        (MNLI, "maybe"),
    ],
)
def test_unreadable_answers_are_empty_strings_and_failures(spec, reply):
    parsed = parse_answer(spec, reply)
    assert parsed.value == "" and not parsed.ok and parsed.reason


def test_strip_reasoning():
    assert strip_reasoning("<think>a</think>b<think>c</think>d") == "bd"
    assert strip_reasoning("reasoning...</think>\nX") == "X"
    assert strip_reasoning("X <think>unfinished") == "X"


def test_normalise_for_matching():
    assert normalise(JEOPARDY, "Washington, D.C.") == normalise(JEOPARDY, "washington, d.c")
    assert normalise(CONCAT, "AbC") != normalise(CONCAT, "abc")
    assert normalise(SAD, "not sad") == "Not sad"
    assert normalise(COLLATZ, "[1,2]") == "[1, 2]"


@pytest.mark.parametrize(
    "spec, reply, expected",
    [
        (SAD, "Output: Sad", "Sad"),
        (MNLI, "Output:Y", "Y"),
        # A model that goes on inventing demonstrations: only its first answer counts.
        (SAD, "Output: Not sad\n\nInput: what a day\nOutput: Sad", "Not sad"),
        (JEOPARDY, "Output: george washington\nInput: who\nOutput: lincoln", "george washington"),
        # An echo of the query before the answer is kept, the invented demonstration after it is not.
        (SAD, "Input: my tweet\nOutput: Sad\n\nInput: x\nOutput: Not sad", "Sad"),
        (SAD, '"Not sad"', "Not sad"),
    ],
)
def test_replies_in_the_demonstrations_shape(spec, reply, expected):
    from longicl.parse import ReplyShape

    parsed = parse_answer(spec, reply, ReplyShape(answer_prefix="Output:", next_demo="Input:"))
    assert parsed.ok and parsed.value == expected


def test_an_echoed_prefix_alone_is_a_parse_failure():
    from longicl.parse import ReplyShape

    parsed = parse_answer(SAD, "Output:", ReplyShape(answer_prefix="Output:", next_demo="Input:"))
    assert not parsed.ok and parsed.value == "" and "prefix" in parsed.reason

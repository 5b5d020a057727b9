import pytest

from longicl.errors import UsageError
from longicl.tasks import TASKS, AnswerKind, get_task, resolve_tasks


def test_registry_covers_the_eight_tasks_with_their_rules():
    assert sorted(TASKS) == list(range(1, 9))
    assert all(TASKS[i].min_icl_tokens == 30_000 for i in range(1, 8))
    assert TASKS[8].min_icl_tokens == 15_000
    assert TASKS[8].answer_kind is AnswerKind.CODE and TASKS[8].default_dev_size == 40
    assert TASKS[5].labels == ("Sad", "Not sad") and TASKS[6].labels == ("Y", "N")
    assert TASKS[2].labels == tuple(str(i) for i in range(7))
    assert {s.id for s in TASKS.values() if s.program} == {1, 3, 4}


@pytest.mark.parametrize(
    "value, ids",
    [
        ("all", list(range(1, 9))),
        (5, [5]),
        ("5", [5]),
        ([7, 1, 7], [1, 7]),
        ("[1,5]", [1, 5]),
        ("openseek-3", [3]),
    ],
)
def test_resolve_tasks(value, ids):
    assert [s.id for s in resolve_tasks(value)] == ids


@pytest.mark.parametrize("value", [0, 9, "nine", [], "[]", None])
def test_unknown_tasks_are_usage_errors(value):
    with pytest.raises(UsageError):
        resolve_tasks(value)


def test_get_task_by_name():
    assert get_task("openseek-7").lowercase

"""The typed views of what a run writes: `SampleRecord.from_dict` and `RunSummary.from_dict` give
back, through ``to_dict()``, the very lines and run.json they read (keys, values and order)."""

from __future__ import annotations

import json

import pytest
from conftest import compose
from fake_server import FakeServer, NoisyAnswers

from longicl.records import SampleRecord
from longicl.rundir import RunDir
from longicl.runner import run
from longicl.tasks import TASKS

LABELS = {t.id: t.labels for t in TASKS.values() if t.labels}


def _lines(run_dir):
    for path in sorted((run_dir / "records").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            yield json.loads(line)


def _assert_round_trip(run_dir) -> int:
    n = 0
    for line in _lines(run_dir):
        back = SampleRecord.from_dict(line).to_dict()
        assert json.dumps(back) == json.dumps(line)  # same keys in the same order, same values
        n += 1
    return n


@pytest.fixture(scope="module")
def served(tmp_path_factory, gold_answers):
    """A dev run of tasks 5 and 7 against a fake server that answers wrong now and then."""
    path = tmp_path_factory.mktemp("served")
    with FakeServer(NoisyAnswers(gold_answers, LABELS, seed=3)) as server:
        run(compose("task=[5,7]", "split=dev", "limit=8", f"engine.base_url={server.url}", f"out_dir={path}"))
    return path


@pytest.mark.parametrize(
    "overrides",
    [
        ("engine=dryrun", "task=[5,8]", "split=dev", "limit=3"),
        ("engine=classical", "task=1", "split=test", "limit=3"),
    ],
    ids=["dryrun", "classical"],
)
def test_records_of_a_run_without_a_server_read_back_byte_for_byte(tmp_path, overrides):
    from longicl.run_json import RunSummary

    run(compose(*overrides, f"out_dir={tmp_path}"))
    assert _assert_round_trip(tmp_path) >= 3
    summary = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert json.dumps(RunSummary.from_dict(summary).to_dict()) == json.dumps(summary)


def test_records_of_a_served_run_read_back_byte_for_byte(served):
    assert _assert_round_trip(served) >= 16
    lines = list(_lines(served))
    assert all(isinstance(SampleRecord.from_dict(r).compliant, bool) for r in lines)
    assert {r["compliant"] for r in lines} == {SampleRecord.from_dict(r).compliant for r in lines}


def test_review_applied_records_read_back_and_name_the_human(served, tmp_path):
    import shutil

    from longicl.review.apply import apply_decisions
    from longicl.review.items import Decision

    run_dir = tmp_path / "run"
    shutil.copytree(served, run_dir)
    before = RunDir(run_dir).all_records("openseek-5")
    sample_id, record = next(iter(before.items()))
    other = next(label for label in LABELS[5] if label != record["prediction"])
    decision = Decision(sample_id=sample_id, answer=other, annotator="ann", task="openseek-5", where="t")
    apply_decisions(run_dir, [decision], tool="test")
    _assert_round_trip(run_dir)
    after = SampleRecord.from_dict(RunDir(run_dir).all_records("openseek-5")[sample_id])
    assert after.human_decided and after.prediction == other
    assert after.model_prediction == record["prediction"] and after.method.answered_by == "icl"
    assert not SampleRecord.from_dict(record).human_decided


def test_an_older_or_unknown_record_is_read_tolerantly_and_kept():
    old = {"sample_id": "s1", "prediction": "A", "method": "icl++program", "someday": {"x": 1}}
    typed = SampleRecord.from_dict(old)
    assert typed.task is None and typed.correct is None and typed.requests == [] and typed.last_request == {}
    assert typed.method.side_models == ("program",) and typed.extra == {"someday": {"x": 1}}
    assert json.dumps(typed.to_dict()) == json.dumps(old)
    typed.compliant = False  # a field set since is written after what was read, like a dict key
    assert list(typed.to_dict()) == [*old, "compliant"]


def test_run_json_reads_back_byte_for_byte_and_tolerates_older_summaries(served, tmp_path):
    from longicl.run_json import RunSummary

    for path in (served / "run.json",):
        data = json.loads(path.read_text(encoding="utf-8"))
        typed = RunSummary.from_dict(data)
        assert json.dumps(typed.to_dict()) == json.dumps(data)
        assert typed.split == "dev" and set(typed.tasks) == {"openseek-5", "openseek-7"}
        assert (
            typed.engine_name == data["engine"]["name"]
            and typed.task("openseek-5") == data["tasks"]["openseek-5"]
        )
    old = {"tasks": {"openseek-1": {"n": 1}}, "engine": "not a mapping", "later": [1]}
    typed = RunSummary.from_dict(old)
    assert typed.created is None and typed.engine_name is None and typed.extra == {"later": [1]}
    assert typed.task("openseek-2") == {} and json.dumps(typed.to_dict()) == json.dumps(old)

import json
import zipfile

import pytest

from longicl.errors import DataError
from longicl.files import atomic_write_text, read_jsonl
from longicl.rundir import RunDir, validate_predictions


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "file.txt"
    atomic_write_text(target, "hello")
    atomic_write_text(target, "world")
    assert target.read_text() == "world"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_records_resume_latest_success_and_torn_lines(tmp_path):
    rundir = RunDir(tmp_path)
    rundir.append_record("openseek-1", {"sample_id": "a", "prediction": "1", "error": None})
    rundir.append_record("openseek-1", {"sample_id": "b", "prediction": "", "error": "timeout"})
    rundir.close()
    with rundir.records_path("openseek-1").open("a") as handle:
        handle.write('{"sample_id": "c", "predic')  # killed mid-write
    assert set(rundir.finished_records("openseek-1")) == {"a"}
    rundir.append_record("openseek-1", {"sample_id": "b", "prediction": "2", "error": None})
    rundir.close()
    rows = list(read_jsonl(rundir.records_path("openseek-1")))
    assert [r["sample_id"] for r in rows] == ["a", "b", "b"]
    assert rundir.finished_records("openseek-1")["b"]["prediction"] == "2"


def test_latest_records_stream_the_winning_line_of_each_sample_in_the_order_asked(tmp_path):
    """The index keeps a byte offset per sample (the latest complete line, else the latest line);
    records are read back one at a time, in the order of the ids asked, unknown ids skipped."""
    rundir = RunDir(tmp_path)
    for row in [
        {"sample_id": "a", "prediction": "x", "error": None},
        {"sample_id": "b", "prediction": "", "error": "timeout"},
        {"sample_id": "a", "prediction": "", "error": "timeout"},  # a later failure never wins
        {"sample_id": "c", "prediction": "é", "error": None, "unanswered": "empty reply"},
        {"sample_id": "c", "prediction": "z", "error": None},
        {"sample_id": "b", "prediction": "", "error": "HTTP 500"},
    ]:
        rundir.append_record("t", row)
    rundir.close()
    latest = list(rundir.latest_records("t", ["c", "missing", "b", "a"]))
    assert [(r["sample_id"], r["prediction"], r["error"]) for r in latest] == [
        ("c", "z", None),
        ("b", "", "HTTP 500"),
        ("a", "x", None),
    ]
    assert rundir.finished_ids("t") == {"a", "c"}
    assert list(rundir.all_records("t")) == ["a", "b", "c"]  # the order of their first line
    assert list(rundir.latest_records("absent")) == []


def test_a_summary_record_drops_only_what_no_summary_reads():
    from longicl.records import UNSUMMARISED_REQUEST_FIELDS, summary_record

    request = {"parsed": "x", "prompt_tokens": 9, "raw_response": "Output: x", "dynamic_demo_ids": ["1"] * 50}
    record = {"sample_id": "a", "gold": "x", "requests": [request]}
    slim = summary_record(record)
    assert slim["requests"] == [{"parsed": "x", "prompt_tokens": 9}] and slim["gold"] == "x"
    assert record["requests"][0] is request and "raw_response" in request  # the record is left as read
    assert {"raw_response", "dynamic_demo_ids"} <= UNSUMMARISED_REQUEST_FIELDS


def test_fingerprint_mismatch_refuses_to_resume(tmp_path):
    from longicl.errors import UsageError

    rundir = RunDir(tmp_path)
    rundir.prepare({"openseek-1": {"seed": 0}}, overwrite=False)
    rundir.check_resumable({"openseek-1": {"seed": 0}}, overwrite=False)
    with pytest.raises(UsageError, match="seed"):
        rundir.check_resumable({"openseek-1": {"seed": 1}}, overwrite=False)
    rundir.check_resumable({"openseek-1": {"seed": 1}}, overwrite=True)


def test_zip_is_flat_and_validated(tmp_path):
    rundir = RunDir(tmp_path)
    path = rundir.write_predictions("openseek-1", [("x", "1"), ("y", "2")])
    rundir.write_zip([path], {"openseek-1": ["x", "y"]})
    with zipfile.ZipFile(rundir.zip_path) as archive:
        assert archive.namelist() == ["openseek-1.jsonl"]
        first = json.loads(archive.read("openseek-1.jsonl").splitlines()[0])
    assert first == {"test_sample_id": "x", "prediction": "1"}
    with pytest.raises(ValueError, match="1 ids missing"):
        validate_predictions([path], {"openseek-1": ["x", "y", "z"]})
    validate_predictions([path], {"openseek-1": ["y", "x"]})  # the order is free by default
    with pytest.raises(ValueError, match="not in the task file's order"):
        validate_predictions([path], {"openseek-1": ["y", "x"]}, in_order=True)
    path.write_text('{"test_sample_id": "x", "prediction": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"openseek-1.jsonl:1: expected keys"):
        validate_predictions([path], {"openseek-1": ["x"]})
    path.write_text('{"test_sample_id": "x", "prediction": "1"}\nnot json\n')
    with pytest.raises(ValueError, match=r"openseek-1.jsonl:2: not a JSON object"):
        validate_predictions([path], {"openseek-1": ["x"]})


def test_a_jsonl_line_that_is_not_utf8_is_one_error_naming_its_line(tmp_path):
    """A predictions or review file from someone else: bytes that are not UTF-8 are a damaged
    line (file:line), as the run's own records are, not a decoding traceback."""
    path = tmp_path / "openseek-1.jsonl"
    path.write_bytes(b'{"test_sample_id": "x", "prediction": "1"}\n{"prediction": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"openseek-1.jsonl:2: not a JSON object"):
        list(read_jsonl(path))
    rundir = RunDir(tmp_path / "run")
    rundir.records_path("t").parent.mkdir(parents=True)
    rundir.records_path("t").write_bytes(b'{"sample_id": "a"}\n\xc3\x28\n')
    with pytest.raises(DataError, match=r"t.jsonl:2: not a JSON object"):
        list(rundir._scan("t"))


def test_a_prediction_holding_a_line_separator_is_one_line_of_its_file(tmp_path):
    """Predictions are written as UTF-8 text (``ensure_ascii=False``): U+2028, U+2029 or U+0085
    in a model's answer is part of its line, not a line break, for the validator too."""
    rundir = RunDir(tmp_path)
    path = rundir.write_predictions("openseek-1", [("a", "x\u2028y"), ("b", "z\x85w\u2029")])
    validate_predictions([path], {"openseek-1": ["a", "b"]}, in_order=True)
    rundir.write_zip([path], {"openseek-1": ["a", "b"]})
    assert [r["prediction"] for r in read_jsonl(path)] == ["x\u2028y", "z\x85w\u2029"]

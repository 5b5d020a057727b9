"""The human review round trip: export for Label Studio / Argilla, import of their exports."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
import zipfile

import pytest
from conftest import compose
from fake_server import FakeServer, NoisyAnswers

from longicl.review.cli import main
from longicl.rundir import RunDir
from longicl.runner import run
from longicl.tasks import TASKS

LABELS = {t.id: t.labels for t in TASKS.values() if t.labels}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, gold_answers):
    """A dev run (tasks 5 and 7) and a test run (task 5, with submission.zip), noisy answers."""
    out = {}
    with FakeServer(NoisyAnswers(gold_answers, LABELS, seed=1)) as server:
        for split, tasks, limit in (("dev", "[5,7]", 16), ("test", "5", 8)):
            path = tmp_path_factory.mktemp(split)
            run(
                compose(
                    f"task={tasks}",
                    f"split={split}",
                    f"limit={limit}",
                    f"engine.base_url={server.url}",
                    f"out_dir={path}",
                )
            )
            out[split] = path
    return out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _snapshot(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_label_studio_export_schema_and_config(runs, tmp_path):
    target = tmp_path / "review.json"
    assert (
        main(["export", str(runs["dev"]), "--format", "label-studio", "--task", "5", "-o", str(target)]) == 0
    )
    tasks = json.loads(target.read_text())
    records = RunDir(runs["dev"]).all_records("openseek-5")
    assert len(tasks) == len(records) == 16
    scores = []
    for task in tasks:
        assert set(task) == {"data", "predictions"}
        assert set(task["data"]) == {"sample_id", "text", "task"} and task["data"]["text"]
        (prediction,) = task["predictions"]
        assert prediction["model_version"].startswith("longicl/")
        (region,) = prediction["result"]
        assert region["type"] == "choices" and region["from_name"] == "label" and region["to_name"] == "text"
        assert region["value"]["choices"] == [records[task["data"]["sample_id"]]["prediction"]]
        scores.append(prediction["score"])
    assert scores == sorted(scores)  # most uncertain first
    config = ET.fromstring((tmp_path / "review.config.xml").read_text())
    assert config.tag == "View"
    choices = config.find("Choices")
    assert choices.get("name") == "label" and choices.get("toName") == "text"
    assert [c.get("value") for c in choices.findall("Choice")] == ["Sad", "Not sad"]
    assert config.find("Text").get("value") == "$text"
    # a threshold keeps only the samples below it
    main(
        [
            "export",
            str(runs["dev"]),
            "--format",
            "label-studio",
            "--task",
            "5",
            "--below",
            "0.8",
            "-o",
            str(target),
        ]
    )
    assert all(t["predictions"][0]["score"] < 0.8 for t in json.loads(target.read_text()))


def test_text_tasks_export_a_textarea_and_argilla_records(runs, tmp_path):
    target = tmp_path / "review.json"
    assert (
        main(["export", str(runs["dev"]), "--format", "label-studio", "--task", "7", "-o", str(target)]) == 0
    )
    region = json.loads(target.read_text())[0]["predictions"][0]["result"][0]
    assert region["type"] == "textarea" and isinstance(region["value"]["text"][0], str)
    assert (
        ET.fromstring((tmp_path / "review.config.xml").read_text()).find("TextArea").get("name") == "answer"
    )
    argilla = tmp_path / "argilla.json"
    assert main(["export", str(runs["dev"]), "--format", "argilla", "--task", "5", "-o", str(argilla)]) == 0
    records = json.loads(argilla.read_text())
    for record in records:
        assert set(record) == {"id", "fields", "metadata", "suggestions", "responses", "vectors"}
        assert record["id"] == f"openseek-5:{record['metadata']['sample_id']}"
        suggestion = record["suggestions"]["label"]
        assert set(suggestion) == {"value", "score", "agent"} and suggestion["value"] in ("Sad", "Not sad")
    settings = json.loads((tmp_path / "argilla.settings.json").read_text())
    assert settings["questions"][0] == {
        "name": "label",
        "type": "label_selection",
        "labels": ["Sad", "Not sad"],
        "required": True,
    }


def test_several_tasks_need_a_task_name(runs, tmp_path, capsys):
    assert main(["export", str(runs["dev"]), "--format", "argilla", "-o", str(tmp_path / "x.json")]) == 2
    assert "--task" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def _annotate_label_studio(tasks, answers):
    """What Label Studio's JSON export holds after humans answered ``answers`` (sample id -> label)."""
    out = []
    for i, task in enumerate(tasks):
        exported = {"id": i + 1, "data": task["data"], "predictions": task["predictions"], "annotations": []}
        if task["data"]["sample_id"] in answers:
            field = "choices" if task["predictions"][0]["result"][0]["type"] == "choices" else "text"
            exported["annotations"] = [
                {"id": 1, "completed_by": 7, "was_cancelled": True, "result": []},
                {
                    "id": 2,
                    "completed_by": 7,
                    "was_cancelled": False,
                    "result": [
                        {
                            "from_name": task["predictions"][0]["result"][0]["from_name"],
                            "to_name": "text",
                            "type": task["predictions"][0]["result"][0]["type"],
                            "value": {field: [answers[task["data"]["sample_id"]]]},
                        }
                    ],
                },
            ]
        out.append(exported)
    return out


def test_export_edit_import_fixes_exactly_the_edited_samples(runs, tmp_path):
    run_dir = _copy(runs["dev"], tmp_path / "run")
    exported = tmp_path / "review.json"
    main(["export", str(run_dir), "--format", "label-studio", "--task", "5", "-o", str(exported)])
    before = RunDir(run_dir).all_records("openseek-5")
    wrong = [sid for sid, r in before.items() if not r["correct"]][:3]
    right = [sid for sid, r in before.items() if r["correct"]][:1]  # a human confirming the model
    assert wrong, "the noisy server made no mistake to fix"
    answers = {sid: before[sid]["gold"] for sid in wrong + right}
    done = tmp_path / "export.json"
    done.write_text(json.dumps(_annotate_label_studio(json.loads(exported.read_text()), answers)))
    predictions_before = [json.loads(x) for x in (run_dir / "openseek-5.jsonl").read_text().splitlines()]
    assert main(["import", str(run_dir), str(done)]) == 0
    after = RunDir(run_dir).all_records("openseek-5")
    for sid, record in after.items():
        if sid in answers:
            assert record["answered_by"] == "human" and record["prediction"] == answers[sid]
            assert record["model_prediction"] == before[sid]["prediction"] and record["correct"] == 1.0
            assert record["confidence"] == before[sid]["confidence"]  # the model's, kept
            assert before[sid]["confidence_source"] == "logprob"
        else:
            assert record == before[sid]
    predictions_after = [json.loads(x) for x in (run_dir / "openseek-5.jsonl").read_text().splitlines()]
    changed = {
        a["test_sample_id"] for a, b in zip(predictions_after, predictions_before, strict=True) if a != b
    }
    assert changed == set(wrong)
    # importing twice changes nothing, byte for byte
    snapshot = _snapshot(run_dir)
    assert main(["import", str(run_dir), str(done)]) == 0
    assert _snapshot(run_dir) == snapshot
    # reviewed samples do not go out again
    main(["export", str(run_dir), "--format", "label-studio", "--task", "5", "-o", str(exported)])
    assert not {t["data"]["sample_id"] for t in json.loads(exported.read_text())} & set(answers)


def test_argilla_responses_rewrite_predictions_and_the_submission_atomically(runs, tmp_path):
    run_dir = _copy(runs["test"], tmp_path / "run")
    exported = tmp_path / "records.json"
    main(["export", str(run_dir), "--format", "argilla", "-o", str(exported)])
    records = json.loads(exported.read_text())
    first = records[0]
    flipped = "Not sad" if first["suggestions"]["label"]["value"] == "Sad" else "Sad"
    first["responses"] = {"label": [{"value": flipped, "user_id": "u-1", "status": "submitted"}]}
    records[1]["responses"] = {
        "label": [{"value": "Sad", "user_id": "u-1", "status": "draft"}]
    }  # not a decision
    done = tmp_path / "done.json"
    done.write_text(json.dumps(records))
    assert main(["import", str(run_dir), str(done)]) == 0
    rows = {
        r["test_sample_id"]: r["prediction"]
        for r in map(json.loads, (run_dir / "openseek-5.jsonl").read_text().splitlines())
    }
    assert rows[first["metadata"]["sample_id"]] == flipped
    with zipfile.ZipFile(run_dir / "submission.zip") as archive:
        zipped = [json.loads(x) for x in archive.read("openseek-5.jsonl").decode().splitlines()]
    assert {r["test_sample_id"]: r["prediction"] for r in zipped} == rows
    assert not list(run_dir.glob(".*.tmp")) and not list(run_dir.glob(".submission.*"))


@pytest.mark.parametrize(
    ("rename", "answer", "message"),
    [
        ("no-such-sample", "Sad", "unknown sample 'no-such-sample'"),
        (None, "Happy", "'Happy' is not a valid label answer of openseek-5 (one of Sad, Not sad)"),
    ],
)
def test_bad_decisions_are_refused_with_one_line_and_nothing_written(
    runs, tmp_path, capsys, rename, answer, message
):
    run_dir = _copy(runs["dev"], tmp_path / "run")
    exported = tmp_path / "review.json"
    main(["export", str(run_dir), "--format", "label-studio", "--task", "5", "-o", str(exported)])
    tasks = json.loads(exported.read_text())
    first, second = tasks[0]["data"]["sample_id"], tasks[1]["data"]["sample_id"]
    done = _annotate_label_studio(tasks, {first: answer, second: "Sad"})  # one good decision, one bad
    if rename:
        done[0]["data"]["sample_id"] = rename
    path = tmp_path / "export.json"
    path.write_text(json.dumps(done))
    snapshot = _snapshot(run_dir)
    assert main(["import", str(run_dir), str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert _snapshot(run_dir) == snapshot


def _one_decision(run_dir, tmp_path):
    """A Label Studio export of task 5 with its first sample's answer flipped (one decision)."""
    exported = tmp_path / "review.json"
    main(["export", str(run_dir), "--format", "label-studio", "--task", "5", "-o", str(exported)])
    tasks = json.loads(exported.read_text())
    first = tasks[0]["data"]["sample_id"]
    before = RunDir(run_dir).all_records("openseek-5")[first]["prediction"]
    path = tmp_path / "export.json"
    path.write_text(
        json.dumps(_annotate_label_studio(tasks, {first: "Not sad" if before == "Sad" else "Sad"}))
    )
    return path


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"test_sample_id": "ID"}, "prediction"),  # no prediction
        ({"test_sample_id": "ID", "prediction": ["Sad"]}, "prediction"),
        ({"prediction": "Sad"}, "test_sample_id"),
        ({"test_sample_id": ["ID"], "prediction": "Sad"}, "test_sample_id"),
        ([1, 2], "not a JSON object"),
        ({"test_sample_id": "ID", "prediction": "\ud800"}, "not a JSON object"),  # a lone surrogate
    ],
)
def test_a_damaged_prediction_file_is_refused_before_any_record_is_appended(
    runs, tmp_path, capsys, row, field
):
    """The output files an import rewrites are out_dir contents: checked before the lock and the
    first appended record, so a bad row leaves the run as it was (no half-applied import)."""
    run_dir = _copy(runs["dev"], tmp_path / "run")
    path = _one_decision(run_dir, tmp_path)
    predictions = run_dir / "openseek-5.jsonl"
    lines = predictions.read_text().splitlines()
    sample_id = json.loads(lines[3])["test_sample_id"]
    lines[3] = json.dumps(json.loads(json.dumps(row).replace('"ID"', json.dumps(sample_id))))
    predictions.write_text("\n".join(lines) + "\n")
    snapshot = _snapshot(run_dir)
    assert main(["import", str(run_dir), str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{predictions}:4" in err and field in err, err
    assert _snapshot(run_dir) == snapshot


@pytest.mark.parametrize("split", ["dev", "test"])
def test_a_prediction_file_saved_with_other_line_ends_loses_no_row(runs, tmp_path, capsys, split):
    """An import rewrites the prediction files (and submission.zip) from the rows it read: a file
    saved by an editor without its last newline keeps every row, and one with old-Mac line ends
    (CR only) is refused in one line with nothing written; neither is read as fewer rows."""
    for damage in ("no_final_newline", "cr_line_ends"):
        run_dir = _copy(runs[split], tmp_path / damage)
        path = _one_decision(run_dir, tmp_path)
        predictions = run_dir / "openseek-5.jsonl"
        lines = predictions.read_bytes().splitlines()
        predictions.write_bytes(
            b"\n".join(lines) if damage == "no_final_newline" else b"\r".join(lines) + b"\r"
        )
        snapshot = _snapshot(run_dir)
        code = main(["import", str(run_dir), str(path)])
        err = capsys.readouterr().err
        if damage == "cr_line_ends":
            assert code == 2 and f"{predictions}:1: not a JSON object" in err, err
            assert _snapshot(run_dir) == snapshot
            continue
        assert code == 0, err
        assert len(predictions.read_bytes().splitlines()) == len(lines)
        if split == "test":
            with zipfile.ZipFile(run_dir / "submission.zip") as archive:
                assert len(archive.read("openseek-5.jsonl").splitlines()) == len(lines)


def test_a_declared_tasks_table_is_reviewed_and_its_annotated_csv_rewritten(tmp_path):
    """A task file of one's own (examples/tweet-mood.yaml): export, two corrections, import; the
    prediction file (under the table's own id column) and the annotated CSV take them."""
    import csv

    from fake_server import FixedAnswer

    from longicl.paths import PROJECT_ROOT
    from longicl.tasks import load_task_file

    run_dir = tmp_path / "run"
    with FakeServer(FixedAnswer("fine")) as server:
        run(
            compose(
                f"task={PROJECT_ROOT / 'examples' / 'tweet-mood.yaml'}",
                "split=test",
                "limit=4",
                "min_icl_tokens=1000",
                f"engine.base_url={server.url}",
                f"out_dir={run_dir}",
            )
        )
    # another task file of the same name read since (a notebook, another test): the run's own
    # task file still decides what the run's rows are
    other = tmp_path / "other"
    other.mkdir()
    source = PROJECT_ROOT / "examples"
    (other / "tweet-mood.yaml").write_text((source / "tweet-mood.yaml").read_text())
    with (
        (source / "tweet-mood.csv").open(newline="") as handle,
        (other / "tweet-mood.csv").open("w", newline="") as out,
    ):
        csv.writer(out).writerows(list(csv.reader(handle))[:200])  # labelled rows only
    load_task_file(other / "tweet-mood.yaml")
    exported = tmp_path / "review.json"
    assert main(["export", str(run_dir), "--format", "label-studio", "-o", str(exported)]) == 0
    tasks = json.loads(exported.read_text())
    assert len(tasks) == 4 and {t["data"]["task"] for t in tasks} == {"tweet-mood"}
    fixed = sorted(t["data"]["sample_id"] for t in tasks)[:2]
    done = tmp_path / "export.json"
    done.write_text(json.dumps(_annotate_label_studio(tasks, {sid: "down" for sid in fixed})))
    assert main(["import", str(run_dir), str(done)]) == 0
    predictions = [json.loads(x) for x in (run_dir / "tweet-mood.jsonl").read_text().splitlines()]
    assert len(predictions) == 4
    assert {str(p["tweet_id"]): p["prediction"] for p in predictions} == {
        str(t["data"]["sample_id"]): ("down" if t["data"]["sample_id"] in fixed else "fine") for t in tasks
    }
    with (run_dir / "tweet-mood.csv").open(newline="") as handle:
        annotated = {
            row["tweet_id"]: row["prediction"] for row in csv.DictReader(handle) if row["prediction"]
        }
    assert annotated == {str(p["tweet_id"]): p["prediction"] for p in predictions}
    snapshot = _snapshot(run_dir)
    assert main(["import", str(run_dir), str(done)]) == 0
    assert _snapshot(run_dir) == snapshot


def test_decisions_typed_into_predictions_are_not_applied_and_the_import_says_where_they_go(
    runs, tmp_path, capsys
):
    """Without Label Studio, the natural edit is the exported "predictions": that is the model's
    answer, not a decision; the import changes nothing and says where decisions go."""
    run_dir = _copy(runs["dev"], tmp_path / "run")
    exported = tmp_path / "review.json"
    main(["export", str(run_dir), "--format", "label-studio", "--task", "5", "-o", str(exported)])
    tasks = json.loads(exported.read_text())
    for task in tasks:
        for region in task["predictions"][0]["result"]:
            region["value"]["choices"] = ["Sad"]
    exported.write_text(json.dumps(tasks))
    snapshot = _snapshot(run_dir)
    capsys.readouterr()
    assert main(["import", str(run_dir), str(exported)]) == 0
    captured = capsys.readouterr()
    assert "0 decisions" in captured.out and '"annotations"' in captured.err
    assert "predictions" in captured.err and _snapshot(run_dir) == snapshot


def test_review_help_explains_both_verbs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "see the package docstring" not in text
    assert "--below" in text and "annotations" in text and "Argilla" in text


def test_human_decisions_are_not_scored_as_the_models_accuracy(runs, tmp_path, gold_answers):
    """Dev run, review import of corrections, the same run again (resume): run.json and the
    report score the model's answers and count the human ones apart."""
    from longicl.report.build import build_report

    run_dir = _copy(runs["dev"], tmp_path / "run")
    before_json = json.loads((run_dir / "run.json").read_text())["tasks"]["openseek-5"]
    before = RunDir(run_dir).all_records("openseek-5")
    wrong = [sid for sid, r in before.items() if not r["correct"]]
    assert wrong and before_json["accuracy"] < 1.0
    exported = tmp_path / "review.json"
    main(["export", str(run_dir), "--format", "label-studio", "--task", "5", "-o", str(exported)])
    answers = {sid: before[sid]["gold"] for sid in wrong}
    done = tmp_path / "export.json"
    done.write_text(json.dumps(_annotate_label_studio(json.loads(exported.read_text()), answers)))
    assert main(["import", str(run_dir), str(done)]) == 0
    imported = json.loads((run_dir / "run.json").read_text())["tasks"]
    assert imported["openseek-5"]["human_decided"] == len(wrong)  # said at once, not on the next run
    assert imported["openseek-5"]["accuracy"] == before_json["accuracy"]
    with FakeServer(NoisyAnswers(gold_answers, LABELS, seed=1)) as server:
        run(
            compose(
                "task=[5,7]", "split=dev", "limit=16", f"engine.base_url={server.url}", f"out_dir={run_dir}"
            )
        )
    task = json.loads((run_dir / "run.json").read_text())["tasks"]["openseek-5"]
    assert task["accuracy"] == before_json["accuracy"]
    assert task["human_decided"] == len(wrong)
    assert json.loads((run_dir / "run.json").read_text())["tasks"]["openseek-7"]["human_decided"] == 0
    # the prediction files carry the human decisions
    rows = {
        r["test_sample_id"]: r["prediction"]
        for r in map(json.loads, (run_dir / "openseek-5.jsonl").read_text().splitlines())
    }
    assert all(rows[sid] == answers[sid] for sid in wrong)
    text = build_report([run_dir], tmp_path / "report").markdown.read_text()
    assert f"{len(wrong)} of its answers" in text and "human decision" in text


def test_export_reads_the_records_one_at_a_time(runs, tmp_path, monkeypatch):
    """`review export` streams each task's latest records (`RunDir.latest_records`): it never
    holds a run's records whole (`RunDir.all_records`)."""
    streamed = []
    latest = RunDir.latest_records

    def counted(self, task, sample_ids=None):
        for record in latest(self, task, sample_ids):
            streamed.append(record["sample_id"])
            yield record

    def refused(*args, **kwargs):
        raise AssertionError("review export read every record at once")

    monkeypatch.setattr(RunDir, "latest_records", counted)
    monkeypatch.setattr(RunDir, "all_records", refused)
    monkeypatch.setattr(RunDir, "finished_records", refused)
    target = tmp_path / "review.json"
    assert (
        main(["export", str(runs["dev"]), "--format", "label-studio", "--task", "5", "-o", str(target)]) == 0
    )
    assert len(json.loads(target.read_text())) == len(streamed) == len(set(streamed)) == 16


def test_a_task_whose_labels_are_inferred_from_its_data_is_reviewed_with_those_labels(tmp_path):
    """A declared label task without ``labels:`` (inferred from its data): export offers the
    labels the data has, and an annotator's choice among them is applied."""
    import shutil

    from fake_server import FixedAnswer

    from longicl.paths import PROJECT_ROOT

    folder = tmp_path / "task"
    folder.mkdir()
    shutil.copy(PROJECT_ROOT / "examples" / "tweet-mood.csv", folder / "tweet-mood.csv")
    text = (PROJECT_ROOT / "examples" / "tweet-mood.yaml").read_text()
    assert "labels: [down, fine]\n" in text
    (folder / "tweet-mood.yaml").write_text(text.replace("labels: [down, fine]\n", ""))
    run_dir = tmp_path / "run"
    with FakeServer(FixedAnswer("fine")) as server:
        run(
            compose(
                f"task={folder / 'tweet-mood.yaml'}",
                "split=test",
                "limit=3",
                "min_icl_tokens=1000",
                f"engine.base_url={server.url}",
                f"out_dir={run_dir}",
            )
        )
    exported = tmp_path / "review.json"
    assert main(["export", str(run_dir), "--format", "label-studio", "-o", str(exported)]) == 0
    config = ET.fromstring((tmp_path / "review.config.xml").read_text())
    assert sorted(c.get("value") for c in config.iter("Choice")) == ["down", "fine"]
    tasks = json.loads(exported.read_text())
    fixed = tasks[0]["data"]["sample_id"]
    done = tmp_path / "export.json"
    done.write_text(json.dumps(_annotate_label_studio(tasks, {fixed: "down"})))
    assert main(["import", str(run_dir), str(done)]) == 0
    predictions = {
        str(p["tweet_id"]): p["prediction"]
        for p in map(json.loads, (run_dir / "tweet-mood.jsonl").read_text().splitlines())
    }
    assert predictions[str(fixed)] == "down"

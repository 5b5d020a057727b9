"""Issue 21: a user's data and a run's results are never lost, and every bad input gets one line.

1. typed settings (``overwrite=no`` is refused, not read as true);
2. a run never writes over, or next to, its own task data;
3. out_dir is a run directory the project owns (marker file): a user's folder is refused, and
   ``overwrite=true`` deletes only what a run writes;
4. unanswered samples (cut, empty, no reply) are told apart from parse failures and asked again;
5. bad inputs: one line naming the file, exit 2, nothing written.

All through the real entry points (main.py, ``python -m`` modules in process) and the fake server.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT, compose
from fake_server import FakeServer, FaultPlan, FixedAnswer

from longicl.rundir import RUN_MARKER
from longicl.runner import run

FAST_BACKOFF = ("engine.backoff_initial=0.01", "engine.backoff_max=0.02")


def main(argv: list[str]) -> int:
    """``python main.py <argv>``, in this process."""
    spec = importlib.util.spec_from_file_location("longicl_main_py", ROOT / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _dry(out: object, *more: str) -> list[str]:
    return ["progress=false", "engine=dryrun", f"data_dir={DATA_DIR}", f"out_dir={out}", *more]


# ------------------------------------------------------------------------------------------------
# 1. settings are typed, from the YAML
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, words",
    [
        ("overwrite=no", "overwrite='no' is not true or false"),
        ("overwrite=maybe", "overwrite='maybe' is not true or false"),
        ("overwrite=1", "overwrite=1 is not true or false"),
        ("progress=yes", "progress='yes' is not true or false"),
        ("method.enable_thinking=on", "method.enable_thinking='on' is not true or false"),
        ("method.per_task.5.logprobs=lots", "method.per_task.5.logprobs='lots' is not"),
        ("kernels.check.rtol=small", "kernels.check.rtol='small' is not a number"),
        ("serve.autostart=sometimes", "serve.autostart='sometimes' is not true or false"),
        ("max_model_len=true", "max_model_len=True is not an integer"),
    ],
)
def test_a_setting_of_the_wrong_type_is_one_line_and_exit_2(tmp_path, capsys, override, words):
    out = tmp_path / "out"
    code = main(_dry(out, "task=5", "limit=1", override))
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and words in line, line
    assert not out.exists()


def test_overwrite_no_keeps_an_earlier_run_and_its_human_decision(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_dry(out, "task=5", "limit=1")) == 0
    decision = out / "records" / "openseek-5.jsonl"
    with decision.open("a") as handle:  # stands for a decision imported with `review import`
        handle.write(json.dumps({"sample_id": "x", "decided_by": "human"}) + "\n")
    before = _snapshot(out)
    capsys.readouterr()
    assert main(_dry(out, "task=5", "limit=1", "overwrite=no")) == 2
    assert "overwrite='no'" in _one_error_line(capsys.readouterr().err)
    assert _snapshot(out) == before


def test_hydra_booleans_and_interpolations_keep_working(tmp_path):
    out = tmp_path / "out"
    cfg = compose("engine=dryrun", "task=5", "limit=1", f"out_dir={out}", "overwrite=false", "progress=False")
    assert run(cfg).missing == 0
    cfg = compose("engine=dryrun", "task=5", "limit=1", f"out_dir={out}", "overwrite=true", "seed=${limit}")
    assert run(cfg).summary["config"]["seed"] == 1


# ------------------------------------------------------------------------------------------------
# 2. a run never writes over its own input
# ------------------------------------------------------------------------------------------------
def _declared_task(folder: Path, suffix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source = ROOT / "examples" / ("trivia" if suffix == ".jsonl" else "tweet-mood")
    shutil.copy(source.with_suffix(".yaml"), folder / f"task{suffix}.yaml")
    text = (folder / f"task{suffix}.yaml").read_text()
    text = text.replace(f"data: {source.name}{suffix}", f"data: {source.name}{suffix}")
    (folder / f"task{suffix}.yaml").write_text(text)
    shutil.copy(source.with_suffix(suffix), folder / f"{source.name}{suffix}")
    return folder / f"task{suffix}.yaml"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("where", ["same", "spelled-otherwise"])
def test_out_dir_at_or_inside_a_tasks_data_folder_is_refused(tmp_path, capsys, suffix, where):
    task = _declared_task(tmp_path / "data", suffix)
    before = _snapshot(tmp_path / "data")
    out = tmp_path / "data" if where == "same" else tmp_path / "data" / ".." / "data" / "."
    with FakeServer(FixedAnswer("fine")) as server:
        code = main(
            ["progress=false", f"task={task}", "split=test", "limit=3", "min_icl_tokens=100"]
            + [f"engine.base_url={server.url}", f"out_dir={out}"]
        )
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "data" in line and str(out) in line, line
    assert _snapshot(tmp_path / "data") == before
    assert not (tmp_path / "data" / "run").exists()


# ------------------------------------------------------------------------------------------------
# 3. out_dir is a run directory the project owns
# ------------------------------------------------------------------------------------------------
def test_a_users_folder_is_refused_before_any_write(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "requests").mkdir(parents=True)
    (folder / "run.json").write_text('{"mine": true}')
    (folder / "config.yaml").write_text("mine: true\n")
    (folder / "requests" / "notes.txt").write_text("keep me")
    (folder / "submission.zip").write_bytes(b"mine")
    before = _snapshot(folder)
    for overwrite in ("false", "true"):
        code = main(_dry(folder, "task=5", "limit=1", f"overwrite={overwrite}"))
        line = _one_error_line(capsys.readouterr().err)
        assert code == 2 and "not a run directory" in line and str(folder) in line, line
        assert "choose a new or empty folder" in line and RUN_MARKER not in line.split(")", 1)[1], line
    assert _snapshot(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.yaml",
        "requests",
        "run.json",
        "submission.zip",
    ]


def test_only_a_run_directory_of_an_older_version_gets_the_marker_hint(tmp_path, capsys):
    """Folders of `make demo` (demo/, demo-tweet-mood/) are not told to be marked by hand; a
    folder holding a run's run.json and records/ (made before the marker) is."""
    outputs = tmp_path / "outputs"
    (outputs / "demo").mkdir(parents=True)
    older = tmp_path / "older"
    (older / "records").mkdir(parents=True)
    (older / "run.json").write_text("{}")
    hints = {}
    for folder in (outputs, older):
        assert main(_dry(folder, "task=5", "limit=1")) == 2
        hints[folder.name] = _one_error_line(capsys.readouterr().err)
    assert (
        "choose a new or empty folder" in hints["outputs"]
        and RUN_MARKER not in hints["outputs"].split(")", 1)[1]
    )
    assert f"an empty {RUN_MARKER} file in it" in hints["older"]
    assert not (older / RUN_MARKER).exists() and list(outputs.iterdir()) == [outputs / "demo"]


@pytest.mark.parametrize("value", ["", ".", "./"])
def test_an_empty_or_dot_out_dir_is_refused(tmp_path, capsys, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    code = main(_dry(value, "task=5", "limit=1"))
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "out_dir" in line, line
    assert list(tmp_path.iterdir()) == []


def test_a_new_or_empty_folder_becomes_a_marked_run_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new" / "deeper", empty):
        assert main(_dry(out, "task=5", "limit=1")) == 0
        assert (out / RUN_MARKER).is_file()
        assert main(_dry(out, "task=5", "limit=1")) == 0  # a run directory: resumed


def test_overwrite_deletes_only_what_a_run_writes(tmp_path):
    out = tmp_path / "out"
    assert main(_dry(out, "task=5", "limit=1")) == 0
    mine = [out / "requests" / "mine.txt", out / "records" / "mine.jsonl", out / "notes.md"]
    for path in mine:
        path.write_text("keep me")
    assert main(_dry(out, "task=5", "limit=1", "overwrite=true")) == 0
    assert all(p.read_text() == "keep me" for p in mine)
    assert (out / "requests" / "openseek-5.jsonl").is_file()  # the run's own, written again
    assert len((out / "requests" / "openseek-5.jsonl").read_text().splitlines()) == 1


# ------------------------------------------------------------------------------------------------
# 4. unanswered is not the same as answered wrongly
# ------------------------------------------------------------------------------------------------
class ScriptedFaults(FaultPlan):
    """The given faults, one per request in order, then none."""

    def __init__(self, *faults: str) -> None:
        super().__init__(rate=0.0, hang_seconds=0.1)
        self.script = list(faults)

    def draw(self) -> str | None:
        return self.script.pop(0) if self.script else None


UNANSWERED_RUN = (
    "task=5",
    "split=dev",
    "limit=4",
    "engine.concurrency=1",
    "engine.max_retries=1",
    *FAST_BACKOFF,
)


def _record_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records" / "openseek-5.jsonl").read_text().splitlines()]


def test_cut_empty_and_failed_replies_are_unanswered_and_asked_again(tmp_path, gold_answers, capsys):
    out = tmp_path / "out"
    # sample 1: cut twice (finish_reason=length again); 2: empty twice; 3: HTTP 500 twice; 4: fine
    faults = ScriptedFaults("truncated_answer", "truncated_answer", "empty", "empty", "http500", "http500")
    args = ["progress=false", f"data_dir={DATA_DIR}", *UNANSWERED_RUN, f"out_dir={out}"]
    with FakeServer(gold_answers, faults=faults) as server:
        code = main([*args, f"engine.base_url={server.url}"])
    err = capsys.readouterr().err
    assert code == 1, err
    line = _one_error_line(err)
    assert "3 samples unanswered" in line and "cut at max_tokens: 1" in line and "empty reply: 1" in line, (
        line
    )
    summary = json.loads((out / "run.json").read_text())
    assert summary["unanswered"] == 3 and summary["tasks"]["openseek-5"]["unanswered"] == 3
    assert summary["tasks"]["openseek-5"]["parse_failures"] == 0
    first = _record_lines(out)
    assert sorted(r.get("unanswered") or "" for r in first) == [
        "",
        "cut at max_tokens",
        "empty reply",
        "no reply",
    ]

    with FakeServer(gold_answers) as server:  # healthy now: the same command asks the three again
        code = main([*args, f"engine.base_url={server.url}"])
        asked = len(server.requests)
    assert code == 0, capsys.readouterr().err
    assert asked == 3
    lines = _record_lines(out)
    assert lines[:4] == first and len(lines) == 7  # append-only
    predictions = [json.loads(x)["prediction"] for x in (out / "openseek-5.jsonl").read_text().splitlines()]
    assert all(predictions) and len(predictions) == 4
    summary = json.loads((out / "run.json").read_text())
    assert summary["unanswered"] == 0 and summary["tasks"]["openseek-5"]["accuracy"] == 1.0


def test_a_complete_but_unparseable_reply_is_a_parse_failure_not_asked_again(tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "progress=false",
        f"data_dir={DATA_DIR}",
        *UNANSWERED_RUN,
        "method.logprobs=null",
        "method.structured_outputs=false",
        f"out_dir={out}",
    ]
    with FakeServer(FixedAnswer("I would rather not say.")) as server:
        assert main([*args, f"engine.base_url={server.url}"]) == 0
        asked = len(server.requests)
        assert main([*args, f"engine.base_url={server.url}"]) == 0
        assert len(server.requests) == asked
    summary = json.loads((out / "run.json").read_text())
    assert summary["unanswered"] == 0 and summary["tasks"]["openseek-5"]["parse_failures"] == 4


def test_the_latest_complete_record_of_a_sample_wins(tmp_path):
    from longicl.rundir import RunDir

    rundir = RunDir(tmp_path)
    path = rundir.records_path("t")
    path.parent.mkdir(parents=True)
    rows = [
        {"sample_id": "a", "prediction": "", "unanswered": "empty reply"},
        {"sample_id": "a", "prediction": "yes"},
        {"sample_id": "b", "prediction": "no"},
        {"sample_id": "b", "prediction": "", "unanswered": "no reply", "error": "HTTP 500"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert {k: v["prediction"] for k, v in rundir.finished_records("t").items()} == {"a": "yes", "b": "no"}
    assert {k: v["prediction"] for k, v in rundir.all_records("t").items()} == {"a": "yes", "b": "no"}


# ------------------------------------------------------------------------------------------------
# 5. bad inputs: one line naming the file, exit 2, nothing written
# ------------------------------------------------------------------------------------------------
def _tasks_check(path: Path) -> int:
    from longicl.tasks.__main__ import main as tasks_main

    return tasks_main(["check", str(path)])


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    lines = ['a0: &a0 ["xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx"]']
    for level in range(1, 7):
        lines.append(
            f"a{level}: &a{level} [*a{level - 1},*a{level - 1},*a{level - 1},*a{level - 1},*a{level - 1}]"
        )
    lines.append("name: *a6")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    code = _tasks_check(bomb)
    seconds = time.monotonic() - started
    line = _one_error_line(capsys.readouterr().err)
    print(f"\nalias bomb refused in {seconds:.3f}s")
    assert code == 2 and str(bomb) in line and "alias" in line.replace(str(bomb), ""), line


def test_a_large_value_in_a_task_file_is_not_formatted_whole(tmp_path, capsys):
    task = tmp_path / "big.yaml"
    task.write_text(
        "name: [" + ",".join(["abcdefghij"] * 20000) + "]\n"
        "data: x.csv\ndefinition: d\ninput: t\noutput_column: o\nanswer: label\n"
    )
    assert _tasks_check(task) == 2
    line = _one_error_line(capsys.readouterr().err)
    # the value is shown bounded before it is formatted (not formatted whole, then cut)
    assert str(task) in line and "name" in line and "...]" in line and len(line) < 400, line


def _integer_task(folder: Path, outputs: list[object], suffix: str = ".jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"r{i}", "text": f"item {i}", "answer": out} for i, out in enumerate(outputs)]
    if suffix == ".jsonl":
        (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pandas as pd

        pd.DataFrame(rows).to_parquet(folder / f"rows{suffix}")
    (folder / "task.yaml").write_text(
        "name: mytask\ndefinition: Count.\n"
        f"data: rows{suffix}\nid_column: id\ninput: text\noutput_column: answer\nanswer: {{kind}}\n"
    )
    return folder / "task.yaml"


def _with_kind(task: Path, kind: str) -> Path:
    task.write_text(task.read_text().replace("{kind}", kind))
    return task


def test_an_integer_task_with_word_answers_is_refused_by_check_and_run(tmp_path, capsys):
    task = _with_kind(_integer_task(tmp_path / "d", ["one", "two", "3", None]), "integer")
    assert _tasks_check(task) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(task) in line and "integer" in line and "'one'" in line, line
    out = tmp_path / "out"
    assert main(_dry(out, f"task={task}", "min_icl_tokens=1")) == 2
    assert "'one'" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("bad", [["down"], {"mood": "down"}])
def test_jsonl_output_cells_that_are_lists_or_objects_are_refused(tmp_path, capsys, bad):
    task = _with_kind(_integer_task(tmp_path / "d", ["down", "fine", bad, None]), "label")
    assert _tasks_check(task) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(task) in line and "answer" in line and "r2" in line, line


def test_a_parquet_file_with_a_nested_output_column_names_the_column(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    task = _with_kind(_integer_task(tmp_path / "d", [["a"], ["b"], None], ".parquet"), "label")
    assert _tasks_check(task) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "answer" in line and "0 labelled" not in line and "no labelled rows" not in line, line


def test_a_corrupt_record_line_names_the_file_on_resume_and_in_review_export(tmp_path, capsys):
    from longicl.review.cli import main as review_main

    out = tmp_path / "out"
    with FakeServer(FixedAnswer("Sad")) as server:
        args = ["progress=false", f"data_dir={DATA_DIR}", "task=5", "split=dev", "limit=2"]
        args += [f"engine.base_url={server.url}", f"out_dir={out}"]
        assert main(args) == 0
        records = out / "records" / "openseek-5.jsonl"
        lines = records.read_text().splitlines(keepends=True)
        records.write_text(lines[0] + '{"sample_id": "x", "predic\n' + "".join(lines[1:]))
        capsys.readouterr()
        assert main(args) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"{records}:2" in line, line
    assert review_main(["export", str(out), "--format", "label-studio", "-o", str(tmp_path / "r.json")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{records}:2" in line, line
    assert not (tmp_path / "r.json").exists()


@pytest.fixture(scope="module")
def answered_run(tmp_path_factory):
    """A finished dev run of task 5 (three samples) and its command line, to resume."""
    out = tmp_path_factory.mktemp("answered") / "out"
    args = ["progress=false", f"data_dir={DATA_DIR}", "task=5", "split=dev", "limit=3", f"out_dir={out}"]
    with FakeServer(FixedAnswer("Sad")) as server:
        assert main([*args, f"engine.base_url={server.url}"]) == 0
    return out


@pytest.mark.parametrize(
    ("field", "mutate"),
    [
        ("requests[0]", lambda r: r.update(requests=["x", 1])),
        ("requests", lambda r: r.update(requests={"a": 1})),
        ("requests[0].uncached_tokens", lambda r: r["requests"][0].update(uncached_tokens="x")),
        ("requests[0].server", lambda r: r["requests"][0].update(server=[1])),
        ("confidence", lambda r: r.update(confidence="high")),
        ("correct", lambda r: r.update(correct="yes")),
        ("method", lambda r: r.update(method=[1])),
        ("vote", lambda r: r.update(vote="x")),
        ("gold", lambda r: r.update(gold=[1])),
        ("parsed_ok", lambda r: r.update(parsed_ok="no")),
    ],
)
def test_a_wrongly_typed_record_field_is_one_line_and_nothing_half_written(
    answered_run, tmp_path, capsys, field, mutate
):
    """A record line in out_dir whose field has the wrong type stops the end of the run with one
    line naming the records file, the sample and the field; run.json and the prediction file
    stay as they were."""
    out = shutil.copytree(answered_run, tmp_path / "out")
    records = out / "records" / "openseek-5.jsonl"
    lines = records.read_text().splitlines()
    record = json.loads(lines[0])
    mutate(record)
    lines[0] = json.dumps(record)
    records.write_text("\n".join(lines) + "\n")
    kept = {name: (out / name).read_bytes() for name in ("run.json", "openseek-5.jsonl")}
    args = ["progress=false", f"data_dir={DATA_DIR}", "task=5", "split=dev", "limit=3", f"out_dir={out}"]
    capsys.readouterr()
    with FakeServer(FixedAnswer("Sad")) as server:
        assert main([*args, f"engine.base_url={server.url}"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(records) in line and record["sample_id"] in line and f"{field} " in line, line
    assert {name: (out / name).read_bytes() for name in kept} == kept
    assert not list(out.glob(".*.tmp"))


def test_report_of_a_run_json_that_is_a_list_is_one_line(tmp_path, capsys):
    from longicl.report.build import main as report_main

    (tmp_path / "run.json").write_text("[]")
    assert report_main([str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "run.json" in line, line


def test_notebooks_list_works_without_the_notebooks_extra(monkeypatch, capsys):
    from longicl import notebooks

    for module in ("nbformat", "papermill", "jupyter_client"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    assert notebooks.main(["--list"]) == 0
    assert capsys.readouterr().out.strip()


def test_running_a_notebook_without_the_notebooks_extra_is_one_line(monkeypatch, capsys, tmp_path):
    """``longicl notebooks 01 -o DIR`` gave a ModuleNotFoundError traceback."""
    from longicl import notebooks

    monkeypatch.setitem(sys.modules, "papermill", None)  # as if not installed
    out = tmp_path / "nb"
    assert notebooks.main([notebooks.NOTEBOOKS[0][:2], "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "pip install -e '.[notebooks]'" in line and "make notebooks" in line, line
    assert not out.exists()


@pytest.fixture(scope="module")
def dev_run(tmp_path_factory, gold_answers):
    out = tmp_path_factory.mktemp("dev") / "run"
    with FakeServer(gold_answers) as server:
        run(compose("task=5", "split=dev", "limit=4", f"engine.base_url={server.url}", f"out_dir={out}"))
    return out


def _sample_ids(run_dir: Path) -> list[str]:
    return [
        json.loads(x)["sample_id"]
        for x in (run_dir / "records" / "openseek-5.jsonl").read_text().splitlines()
    ]


def _ls_task(sample_id: str, value: object, task: object = "openseek-5") -> dict:
    region = {"from_name": "label", "to_name": "text", "type": "choices", "value": value}
    return {
        "data": {"sample_id": sample_id, "text": "x", "task": task},
        "annotations": [{"result": [region]}],
    }


def _bad_review_files(ids: list[str]) -> dict[str, tuple[object, str]]:
    return {
        "deep": (None, "nested"),
        "argilla-metadata-number": (
            [{"metadata": 5, "responses": {"label": [{"value": "Sad", "status": "submitted"}]}}],
            "metadata",
        ),
        "choices-number": ([_ls_task(ids[0], {"choices": 5})], "choices"),
        "value-null": ([_ls_task(ids[0], None)], "value"),
        "task-list": ([_ls_task(ids[0], {"choices": ["Sad"]}, task=["openseek-5"])], "task"),
        "conflict": (
            [_ls_task(ids[0], {"choices": ["Sad"]}), _ls_task(ids[0], {"choices": ["Not sad"]})],
            ids[0],
        ),
    }


@pytest.mark.parametrize(
    "case", ["deep", "argilla-metadata-number", "choices-number", "value-null", "task-list", "conflict"]
)
def test_bad_review_files_are_one_line_naming_the_file(dev_run, tmp_path, capsys, case):
    from longicl.review.cli import main as review_main

    run_dir = tmp_path / "run"
    shutil.copytree(dev_run, run_dir)
    doc, words = _bad_review_files(_sample_ids(run_dir))[case]
    path = tmp_path / "export.json"
    if case == "deep":
        path.write_text("[" * 100_000 + '"Sad"' + "]" * 100_000)
    else:
        path.write_text(json.dumps(doc))
    before = _snapshot(run_dir)
    code = review_main(["import", str(run_dir), str(path)])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and str(path) in line and words in line, line
    assert _snapshot(run_dir) == before

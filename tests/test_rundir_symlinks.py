"""Hostile run directories: symbolic links in out_dir, and hostile review and task files.

A run directory may be shared, or made by someone else; a symbolic link in it must never make a
run (or ``review import``) write into, truncate or delete a file outside it. Each case is refused
with one line and exit 2, before any write, and the file the link points at is left as it was.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT, compose
from fake_server import FakeServer
from test_run_safety import _dry, _one_error_line, _snapshot, main

from longicl.errors import UsageError
from longicl.files import repair_torn_tail
from longicl.rundir import RUN_MARKER, RunDir
from longicl.runner import check_apart_from_data, run, settings_from_config


def _victim(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "important.txt").write_text("precious user data\nline2\n")
    (home / "token").write_text("my-api-token-without-newline")
    (home / "openseek-5.jsonl").write_text('{"user": "hand-made labels, not a run file"}\n')
    return home


def _run_dir(tmp_path: Path, marked: bool = True) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    if marked:
        (out / RUN_MARKER).write_text("")
    return out


def test_a_lock_that_is_a_symlink_truncates_nothing(tmp_path, capsys):
    home = _victim(tmp_path)
    out = _run_dir(tmp_path, marked=False)
    (out / ".lock").symlink_to(home / "important.txt")  # a folder holding only ".lock"
    before = _snapshot(home)
    code = main(_dry(out, "task=5", "limit=1"))
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and ".lock" in line and "link" in line, line
    assert _snapshot(home) == before
    with pytest.raises(UsageError, match="link"):  # review import takes the lock too
        RunDir(out).lock()
    assert _snapshot(home) == before
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_a_lock_with_another_name_for_a_file_is_not_truncated(tmp_path):
    home = _victim(tmp_path)
    out = _run_dir(tmp_path)
    os.link(home / "important.txt", out / ".lock")  # a hard link: the same file under two names
    with pytest.raises(UsageError, match=".lock"):
        RunDir(out).lock()
    assert (home / "important.txt").read_text() == "precious user data\nline2\n"


@pytest.mark.parametrize("overwrite", ["false", "true"])
@pytest.mark.parametrize(
    "link, target",
    [
        ("records", "home"),
        ("requests", "home"),
        ("logs", "home"),
        ("requests/static", "home"),
        ("records/openseek-5.jsonl", "home/token"),
        ("records/openseek-5.meta.json", "home/important.txt"),
        ("requests/openseek-5.jsonl", "home/token"),
        ("openseek-5.jsonl", "home/important.txt"),
        ("run.json", "home/important.txt"),
        ("config.yaml", "home/important.txt"),
        (RUN_MARKER, "home/important.txt"),
    ],
)
def test_a_symlink_inside_a_run_directory_is_refused_before_any_write(
    tmp_path, capsys, link, target, overwrite
):
    home = _victim(tmp_path)
    out = _run_dir(tmp_path)
    where = out / link
    where.parent.mkdir(parents=True, exist_ok=True)
    where.unlink(missing_ok=True)  # the marker, made a link
    where.symlink_to(tmp_path / target)
    before, inside = _snapshot(home), sorted(p.relative_to(out) for p in out.rglob("*"))
    code = main(_dry(out, "task=5", "limit=2", f"overwrite={overwrite}"))
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and str(where) in line and "link" in line, line
    assert _snapshot(home) == before
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == inside
    assert where.is_symlink()


def test_records_linked_into_the_tasks_data_folder_deletes_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("tweet-mood.yaml", "tweet-mood.csv"):
        shutil.copy(ROOT / "examples" / name, data / name)
    (data / "tweet-mood.jsonl").write_text('{"user": "hand-made labels, not a run file"}\n')
    out = _run_dir(tmp_path)
    (out / "records").symlink_to(Path("..") / "data")
    before = _snapshot(data)
    code = main(_dry(out, f"task={data / 'tweet-mood.yaml'}", "split=dev", "limit=2", "overwrite=true"))
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "records" in line, line
    assert _snapshot(data) == before
    assert sorted(p.name for p in data.iterdir()) == ["tweet-mood.csv", "tweet-mood.jsonl", "tweet-mood.yaml"]


def test_an_output_resolving_into_a_data_folder_is_refused(tmp_path):
    """`check_apart_from_data` on its own: it compares where every output really lands."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("tweet-mood.yaml", "tweet-mood.csv"):
        shutil.copy(ROOT / "examples" / name, data / name)
    out = _run_dir(tmp_path)
    (out / "records").symlink_to(data)
    settings = settings_from_config(compose(f"task={data / 'tweet-mood.yaml'}", f"out_dir={out}"))
    with pytest.raises(UsageError, match="data"):
        check_apart_from_data(settings, RunDir(out))


def test_writers_do_not_follow_a_link_made_after_the_checks(tmp_path):
    """A link made between the checks and the write (a shared folder): the appends and the
    torn-tail repair open the file itself, never what a link points at."""
    home = _victim(tmp_path)
    out = _run_dir(tmp_path)
    (out / "records").mkdir()
    (out / "logs").mkdir()
    rundir = RunDir(out)
    (out / "records" / "openseek-5.jsonl").symlink_to(home / "token")
    (out / "logs" / "run.log").symlink_to(home / "important.txt")
    before = _snapshot(home)
    with pytest.raises(UsageError, match="link"):
        rundir.append_record("openseek-5", {"sample_id": "a"})
    with pytest.raises(UsageError, match="link"):
        rundir.log_failure("sample a", ValueError("boom"))
    with pytest.raises(UsageError, match="link"):
        repair_torn_tail(out / "records" / "openseek-5.jsonl")
    assert _snapshot(home) == before


def test_a_users_symlink_elsewhere_is_not_deleted_on_overwrite(tmp_path):
    """overwrite=true deletes a run's own files by name; a real run directory still works."""
    out = tmp_path / "out"
    assert main(_dry(out, "task=5", "limit=1")) == 0
    assert main(_dry(out, "task=5", "limit=1", "overwrite=true")) == 0
    assert (out / "requests" / "openseek-5.jsonl").is_file()


# ------------------------------------------------------------------------------------------------
# review files and task files
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dev_run(tmp_path_factory, gold_answers):
    out = tmp_path_factory.mktemp("dev") / "run"
    with FakeServer(gold_answers) as server:
        run(compose("task=5", "split=dev", "limit=2", f"engine.base_url={server.url}", f"out_dir={out}"))
    return out


def test_conflicting_decisions_with_and_without_the_task_are_refused(dev_run, tmp_path, capsys):
    from longicl.review.cli import main as review_main

    run_dir = tmp_path / "run"
    shutil.copytree(dev_run, run_dir)
    sample = json.loads((run_dir / "records" / "openseek-5.jsonl").read_text().splitlines()[0])["sample_id"]

    def item(answer: str, **task: str) -> dict:
        region = {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [answer]}}
        return {"data": {"sample_id": sample, "text": "x", **task}, "annotations": [{"result": [region]}]}

    path = tmp_path / "export.json"
    path.write_text(json.dumps([item("Sad", task="openseek-5"), item("Not sad")]))
    before = _snapshot(run_dir)
    code = review_main(["import", str(run_dir), str(path)])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and str(path) in line and sample in line and "differently" in line, line
    assert _snapshot(run_dir) == before


@pytest.mark.parametrize("shape", ["flow", "block"])
def test_a_deeply_nested_task_file_is_one_line(tmp_path, capsys, shape):
    from longicl.tasks.__main__ import main as tasks_main

    path = tmp_path / "deep.yaml"
    if shape == "flow":
        path.write_text("name: x\ntitle: " + "[" * 5000 + "]" * 5000 + "\n")
    else:
        path.write_text("name: x\nlabels:\n" + "".join("  " * i + "- \n" for i in range(1, 400)))
    assert tasks_main(["check", str(path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(path) in line and "nested" in line, line
    out = tmp_path / "out"
    code = main(["progress=false", "engine=dryrun", f"data_dir={DATA_DIR}", f"task={path}", f"out_dir={out}"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and str(path) in line, line
    assert not out.exists()

"""Any table as an annotation task, declared in a YAML file (issue 13): end to end against the fake
server, the outputs, per-task settings by name, and every bad-input case (one line, exit 2, nothing
written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import DATA_DIR, ROOT, compose
from fake_server import FakeServer, KnownAnswers

from longicl.cli import execute
from longicl.data import load_task, split
from longicl.errors import DataError
from longicl.runner import run, settings_from_config
from longicl.tasks import TASKS, load_task_file, resolve_tasks
from longicl.tasks.__main__ import main as tasks_main

MOOD = {"Sad": "down", "Not sad": "fine"}


def _challenge(prefix: str) -> dict:
    (path,) = DATA_DIR.glob(f"{prefix}_*.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _write_yaml(path: Path, **keys: object) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(keys, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def mood_task(tmp_path: Path, labelled: int = 70, unlabelled: int = 6, **overrides: object) -> Path:
    """A CSV label task: numeric ids, an untouched text column with "NA", a numeric-looking column."""
    doc = _challenge("openseek-5")
    rows = [(ex["input"], MOOD[ex["output"][0]]) for ex in doc["examples"][:labelled]]
    rows += [(s["input"], "") for s in doc["test_samples"][:unlabelled]]
    # Unlabelled rows interleaved with labelled ones: outputs must follow input order, not groups.
    rows = [rows[i] for i in sorted(range(len(rows)), key=lambda i: (i % 11, i))]
    frame = pd.DataFrame(
        {
            "tweet_id": [str(5000 + 7 * i) for i in range(len(rows))],
            "text": [text for text, _ in rows],
            "mood": [mood for _, mood in rows],
            "note": ["NA" if i % 3 else "0007" for i in range(len(rows))],
        }
    )
    (tmp_path / "mood.csv").write_text(frame.to_csv(index=False), encoding="utf-8")
    keys = {
        "name": "tweet-mood",
        "definition": "Decide the mood of the author of a short post. Answer 'down' or 'fine'.",
        "data": "mood.csv",
        "id_column": "tweet_id",
        "input": "text",
        "output_column": "mood",
        "answer": "label",
        "labels": ["down", "fine"],
        "min_icl_tokens": 600,
        "metric": "macro_f1",
        "dev_size": 12,
        **overrides,
    }
    return _write_yaml(tmp_path / "tweet-mood.yaml", **{k: v for k, v in keys.items() if v is not None})


def trivia_task(tmp_path: Path, labelled: int = 60, unlabelled: int = 5) -> Path:
    """A JSONL text task whose input is a template over two columns; ids are strings."""
    doc = _challenge("openseek-7")
    items = [(ex["input"], ex["output"][0]) for ex in doc["examples"][:labelled]]
    items += [(s["input"], None) for s in doc["test_samples"][:unlabelled]]
    lines = []
    for number, (text, answer) in enumerate(items):
        category, clue = text.removeprefix("Category: ").split("\nClue: ", 1)
        row = {"qid": f"q{number:03d}", "category": category.strip(), "clue": clue.strip()}
        if answer is not None:
            row["answer"] = answer
        lines.append(json.dumps(row))
    (tmp_path / "trivia.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return _write_yaml(
        tmp_path / "trivia.yaml",
        name="trivia",
        definition="Answer the trivia clue of the given category, in lower case.",
        data="trivia.jsonl",
        id_column="qid",
        input="Category: {category}\nClue: {clue}",
        output_column="answer",
        answer="text",
        lowercase=True,
        min_icl_tokens=500,
        dev_size=8,
    )


def gold_policy(task_file: Path) -> KnownAnswers:
    data = load_task(load_task_file(task_file))
    return KnownAnswers({ex.input: ex.output or "" for ex in data.examples}, default="fine")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------------------
# end to end
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make_task", [mood_task, trivia_task], ids=["csv", "jsonl-template"])
def test_declared_task_dev_split_is_scored_with_ids_in_input_order(tmp_path, make_task):
    task_file = make_task(tmp_path)
    data = load_task(load_task_file(task_file))
    dev = split(data, "dev", seed=0)
    out = tmp_path / "out"
    with FakeServer(gold_policy(task_file)) as server:
        result = run(
            compose(f"task={task_file}", "split=dev", f"engine.base_url={server.url}", f"out_dir={out}")
        )
    assert result.missing == 0 and result.submission is None
    task = result.summary["tasks"][data.spec.name]
    assert task["accuracy"] == 1.0 and task["n"] == len(dev.samples) == data.spec.default_dev_size
    assert task["score"] == 1.0 and task["task_file"] == str(task_file)
    id_key = data.spec.id_column
    rows = _jsonl(out / f"{data.spec.name}.jsonl")
    assert [r[id_key] for r in rows] == [data.raw_id(s.id) for s in dev.samples]
    assert all(set(r) == {id_key, "prediction"} for r in rows)
    assert (out / "records" / f"{data.spec.name}.jsonl").is_file() and (out / "run.json").is_file()


@pytest.mark.parametrize("make_task", [mood_task, trivia_task], ids=["csv", "jsonl-template"])
def test_declared_task_test_split_annotates_each_unlabelled_row_once(tmp_path, make_task):
    task_file = make_task(tmp_path)
    data = load_task(load_task_file(task_file))
    policy = gold_policy(task_file)
    out = tmp_path / "out"
    args = (f"task={task_file}", "split=test", f"out_dir={out}")
    with FakeServer(policy) as server:
        result = run(compose(*args, f"engine.base_url={server.url}"))
        sent = len(server.requests)
        again = run(compose(*args, f"engine.base_url={server.url}"))  # resumes: nothing left to ask
        assert len(server.requests) == sent
    assert result.missing == again.missing == 0
    unlabelled = [s.input for s in data.test_samples]
    assert sent == len(unlabelled) and all(policy.asked[text] == 1 for text in unlabelled)
    id_key = data.spec.id_column
    rows = _jsonl(out / f"{data.spec.name}.jsonl")
    assert [r[id_key] for r in rows] == [data.raw_id(s.id) for s in data.test_samples]
    assert all(r["prediction"] for r in rows)
    if data.path.suffix == ".csv":
        assert all(isinstance(r[id_key], int) for r in rows)  # "5007" in the CSV comes back as 5007
    else:
        assert all(isinstance(r[id_key], str) and r[id_key].startswith("q") for r in rows)


def test_csv_output_keeps_every_input_column_untouched(tmp_path):
    task_file = mood_task(tmp_path)
    out = tmp_path / "out"
    with FakeServer(gold_policy(task_file)) as server:
        run(compose(f"task={task_file}", "split=test", f"engine.base_url={server.url}", f"out_dir={out}"))
    source = pd.read_csv(tmp_path / "mood.csv", dtype=str, keep_default_na=False)
    annotated = pd.read_csv(out / "tweet-mood.csv", dtype=str, keep_default_na=False)
    assert list(annotated.columns) == [*source.columns, "prediction"]
    pd.testing.assert_frame_equal(annotated[source.columns], source)  # "NA", "0007" as written
    unlabelled = source["mood"] == ""
    assert (annotated.loc[unlabelled, "prediction"] != "").all()
    assert (annotated.loc[~unlabelled, "prediction"] == "").all()
    predictions = {r["tweet_id"]: r["prediction"] for r in _jsonl(out / "tweet-mood.jsonl")}
    assert (
        dict(
            zip(
                annotated.loc[unlabelled, "tweet_id"].astype(int),
                annotated.loc[unlabelled, "prediction"],
                strict=True,
            )
        )
        == predictions
    )


def test_task_list_mixes_challenge_ids_and_task_files(tmp_path):
    task_file = mood_task(tmp_path)
    specs = resolve_tasks([str(task_file), 5, "1"])
    assert [s.name for s in specs] == ["openseek-1", "openseek-5", "tweet-mood"]
    out = tmp_path / "out"
    result = run(compose(f"task=[5,{task_file}]", "split=test", "limit=2", "engine=dryrun", f"out_dir={out}"))
    assert list(result.summary["tasks"]) == ["openseek-5", "tweet-mood"]
    assert (out / "requests" / "openseek-5.jsonl").is_file() and (
        out / "requests" / "tweet-mood.jsonl"
    ).is_file()


def test_challenge_tasks_are_read_from_their_task_files():
    assert sorted(TASKS) == list(range(1, 9))
    for task_id, spec in TASKS.items():
        assert (
            spec.task_file == ROOT / "tasks" / f"openseek-{task_id}.yaml"
            and spec.name == f"openseek-{task_id}"
        )
    assert TASKS[6].label_aliases == (("yes", "Y"), ("no", "N"))  # quoted in YAML: not booleans
    assert TASKS[8].annotator == "kernel" and TASKS[8].metric == "kernel_check"


def test_per_task_settings_are_keyed_by_name_for_declared_tasks(tmp_path):
    task_file = mood_task(tmp_path)
    settings = settings_from_config(
        compose(
            f"task=[5,{task_file}]",
            "+selection.per_task.tweet-mood.name=random",
            "+method.per_task.tweet-mood.self_consistency=3",
            "method.per_task.5.self_consistency=2",
        )
    )
    mood, five = settings.tasks[1], settings.tasks[0]
    assert settings.strategy_for(mood) == "random" and settings.strategy_for(five) == "hybrid"
    assert settings.method.for_task(mood).self_consistency == 3
    assert settings.method.for_task(five).self_consistency == 2


def test_labels_are_inferred_when_the_task_file_lists_none(tmp_path):
    data = load_task(load_task_file(mood_task(tmp_path, labels=None)))
    assert data.spec.labels == ("down", "fine")


def test_check_prints_what_it_understood(capsys):
    assert tasks_main(["check", str(ROOT / "examples" / "tweet-mood.yaml")]) == 0
    text = capsys.readouterr().out
    assert "540 rows: 500 labelled, 40 to annotate" in text
    assert "down 288 (57.6%), fine 212 (42.4%)" in text
    assert "tokens per demonstration: median" in text and "min_icl_tokens 8,000" in text


# ------------------------------------------------------------------------------------------------
# bad input: one line naming the file and key, exit 2, nothing written
# ------------------------------------------------------------------------------------------------
def _unknown_key(tmp):
    return mood_task(tmp, colour="blue"), "colour"


def _missing_task_file(tmp):
    return tmp / "nowhere.yaml", "task file not found"


def _missing_data_file(tmp):
    return mood_task(tmp, data="absent.csv"), "data"


def _unreadable_table(tmp):
    (tmp / "broken.parquet").write_bytes(b"this is not parquet")
    return mood_task(tmp, data="broken.parquet"), "data"


def _missing_column(tmp):
    return mood_task(tmp, output_column="feeling"), "output_column"


def _template_missing_column(tmp):
    return mood_task(tmp, input="Post: {text}\nAuthor: {author}"), "input"


def _duplicate_ids(tmp):
    return mood_task(tmp, id_column="note"), "id_column"


def _no_labelled_rows(tmp):
    return mood_task(tmp, labelled=0, unlabelled=10, dev_size=None), "output_column"


def _label_outside_labels(tmp):
    return mood_task(tmp, labels=["down", "okay"]), "labels"


def _floor_too_high(tmp):
    return mood_task(tmp, min_icl_tokens=1_000_000), "min_icl_tokens"


BAD = [
    _unknown_key,
    _missing_task_file,
    _missing_data_file,
    _unreadable_table,
    _missing_column,
    _template_missing_column,
    _duplicate_ids,
    _no_labelled_rows,
    _label_outside_labels,
    _floor_too_high,
]


@pytest.mark.parametrize("make_bad", BAD, ids=[f.__name__.strip("_") for f in BAD])
def test_bad_task_files_fail_in_one_line_and_write_nothing(tmp_path, capsys, make_bad):
    task_file, key = make_bad(tmp_path)
    out = tmp_path / "out"
    code = execute(compose(f"task={task_file}", "split=test", "engine=dryrun", f"out_dir={out}"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and not out.exists()
    assert str(task_file) in err and key in err, err
    assert tasks_main(["check", str(task_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(task_file) in err and key in err, err


def test_check_command_exits_2_from_the_shell(tmp_path):
    task_file, _ = _unknown_key(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "longicl.tasks", "check", str(task_file)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "colour: unknown key" in done.stderr


def test_loader_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"tweet-mood\.yaml: answer:"):
        load_task_file(mood_task(tmp_path, answer="mood"))


def test_a_small_table_without_dev_size_keeps_most_rows_as_demonstrations(tmp_path, capsys):
    """300 labelled rows and no dev_size: a dev run holds out a fifth (60), not 200, and `tasks
    check` says what a dev run keeps; an explicit dev_size stands."""
    path = mood_task(tmp_path, labelled=300, unlabelled=5, dev_size=None, min_icl_tokens=2000)
    data = load_task(load_task_file(path))
    assert data.spec.default_dev_size == 60
    dev = split(data, "dev")
    assert len(dev.samples) == 60 and len(dev.pool) >= 230
    assert tasks_main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "split=dev: holds out 60 labelled rows" in out and "the other 240 are its demonstrations" in out
    (tmp_path / "explicit").mkdir()
    explicit = mood_task(tmp_path / "explicit", labelled=300, unlabelled=5, dev_size=100)
    assert load_task(load_task_file(explicit)).spec.default_dev_size == 100

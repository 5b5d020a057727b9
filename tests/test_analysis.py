"""The analysis library behind the notebooks and the report (longicl.analysis)."""

import asyncio
import io
import json
import zipfile

import numpy as np
import pytest
from conftest import DATA_DIR, compose

from longicl import analysis as an
from longicl.data import Example
from longicl.runner import run


# ------------------------------------------------------------------------------------------------
# fixtures: small real runs
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dry")
    run(compose("engine=dryrun", "task=[5,8]", "split=dev", "limit=3", f"out_dir={out}"))
    return an.load_run(out)


@pytest.fixture(scope="module")
def gold_run(tmp_path_factory, gold_answers):
    from fake_server import FakeServer

    out = tmp_path_factory.mktemp("gold")
    with FakeServer(gold_answers) as server:
        run(compose("task=[1,5]", "split=dev", "limit=4", f"engine.base_url={server.url}", f"out_dir={out}"))
    return an.load_run(out)


def _record(sample_id, gold, prediction, *, parsed_ok=True, error=None, reply=None, dynamic=(), index=0):
    return {
        "task": "openseek-5",
        "sample_id": sample_id,
        "index": index,
        "gold": gold,
        "prediction": prediction,
        "parsed_ok": parsed_ok,
        "parse_error": None if parsed_ok else "not a label",
        "correct": None if gold is None else float(prediction == gold),
        "error": error,
        "requests": [
            {"raw_response": prediction if reply is None else reply, "dynamic_demo_ids": list(dynamic)}
        ],
    }


# ------------------------------------------------------------------------------------------------
# formatting and tables
# ------------------------------------------------------------------------------------------------
def test_fmt_and_table_rendering():
    assert an.fmt(None) == "—"
    assert an.fmt(12345) == "12,345"
    assert an.fmt(0.5) == "0.500"
    assert an.fmt(32384.0) == "32,384"
    assert an.fmt(12.25) == "12.2"
    assert an.fmt(True) == "yes"
    table = an.Table.of([{"a": 1, "b": "x|y"}, {"a": None, "b": "<z>"}], title="T")
    markdown = table.to_markdown()
    assert markdown.splitlines()[0] == "| a | b |"
    assert markdown.splitlines()[1] == "|---:|---|"  # numbers right-aligned
    assert "x\\|y" in markdown
    html = table._repr_html_()
    assert "&lt;z&gt;" in html and "<caption>T</caption>" in html
    assert an.Table.of([{"share": "9.9%"}, {"share": "—"}])._numeric("share")


def test_dataframes_keep_their_dtypes_in_tables_and_values():
    rows = [{"task": "a", "n": 3, "accuracy": 1.0}, {"task": "b", "accuracy": None}]
    table = an.frame(rows, {"task": "string", "n": "Int64", "accuracy": "Float64"})
    assert [str(t) for t in table.dtypes] == ["string", "Int64", "Float64"]
    assert table["n"].isna().tolist() == [False, True]
    # the same Markdown as the plain rows: 1.0 stays "1.000", a missing cell is a dash
    assert an.Table.of(table).to_markdown() == an.Table.of(rows, ["task", "n", "accuracy"]).to_markdown()
    assert an.Table.of(table, ["accuracy"]).columns == ["accuracy"]
    assert an.jsonable(table) == [
        {"task": "a", "n": 3, "accuracy": 1.0},
        {"task": "b", "n": None, "accuracy": None},
    ]
    assert type(an.jsonable(table)[0]["n"]) is int
    assert an.frame([], {"x": "Int64"}).columns.tolist() == ["x"]


def test_values_are_recorded_as_json(tmp_path):
    path = tmp_path / "nb.values.json"
    an.set_values_file(path, notebook="nb")
    point = an.Fit(budget=10, demos=2, fraction=0.5, whole_pool=False)
    assert an.record_value("fit", point) is point
    an.record_value("array", np.arange(3))
    an.record_value("scalar", np.float64(0.25))
    an.record_value("path", tmp_path)
    an.record_value("nan", float("nan"))
    values = an.read_values(path)
    assert values["notebook"] == "nb"
    assert values["fit"] == {"budget": 10, "demos": 2, "fraction": 0.5, "whole_pool": False}
    assert values["array"] == [0, 1, 2] and values["scalar"] == 0.25
    assert values["path"] == str(tmp_path) and values["nan"] is None
    an.set_values_file(None)  # back to memory only
    an.record_value("x", 1)
    assert "x" not in an.read_values(path)
    assert an.read_values(tmp_path / "missing.json") == {}


# ------------------------------------------------------------------------------------------------
# data overview
# ------------------------------------------------------------------------------------------------
def test_fit_counts_demonstrations_in_a_seeded_order():
    assert an.fit([10] * 10, 35) == an.Fit(35, 3, 0.3, False)
    assert an.fit([10] * 10, 1000).whole_pool
    assert an.fit([], 100) == an.Fit(100, 0, 0.0, True)
    costs = list(range(1, 50))  # cheapest first, 19 would fit (1 + ... + 19 = 190)
    fits = [an.fit(costs, 200, seed=seed) for seed in range(6)]
    assert all(f.budget == 200 and 0 < f.demos < 19 and not f.whole_pool for f in fits)
    assert len({f.demos for f in fits}) > 1  # the order is the seed's, not the pool's


def test_data_overview_of_task_5():
    (overview,) = an.data_overview([5], data_dir=DATA_DIR, budgets=[30000, 64000])
    assert (overview.examples, overview.test_samples) == (1899, 500)
    assert set(overview.label_counts) == {"Sad", "Not sad"}
    assert sum(overview.label_counts.values()) == 1899
    assert len(overview.demo_tokens) == 1899 and min(overview.demo_tokens) > 0
    assert len(overview.query_tokens) == 500
    small, large = overview.fits
    assert 0 < small.demos < large.demos and not small.whole_pool
    assert large.whole_pool  # the whole pool (~62K tokens) fits in 64K
    rows = an.overview_rows([overview])
    assert rows.iloc[0]["labels"] == 2 and rows.iloc[0]["pool tokens"] == overview.pool_tokens
    fits = an.fit_rows([overview]).iloc[0]
    assert fits["demos in 30K"] == small.demos and fits["pool share in 64K"] == "100.0%"
    labels = an.label_rows([overview])
    assert set(labels["label"]) == {"Sad", "Not sad"} and labels["share"].sum() == pytest.approx(1.0)
    assert "openseek-5" in an.overview_findings([overview])


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------
def test_confusion_matrix_and_label_bias():
    records = [
        _record("a", "Sad", "Sad"),
        _record("b", "Sad", "Not sad"),
        _record("c", "Not sad", "Not sad"),
        _record("d", "Not sad", "", parsed_ok=False),
        _record("e", None, "Sad"),  # no gold: not counted
    ]
    columns, matrix = an.confusion_matrix(records, ["Sad", "Not sad"])
    assert columns == ["Sad", "Not sad", an.UNPARSED]
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 1]]
    bias = {row["label"]: row for row in an.label_bias(records[:4], ["Sad", "Not sad"])}
    assert bias["Sad"]["gold"] == 2 and bias["Sad"]["predicted"] == 1
    assert bias[an.UNPARSED]["predicted"] == 1


def test_worst_samples_parse_failures_and_neighbours():
    pool = {
        "n1": Example("n1", "sad text", "Sad"),
        "n2": Example("n2", "happy text", "Not sad"),
        "q": Example("q", "query text", "Sad"),
    }
    records = [
        _record("ok", "Sad", "Sad", index=0),
        _record("wrong", "Sad", "Not sad", dynamic=["n2", "n1"], index=1),
        _record("unread", "Sad", "", parsed_ok=False, reply="I cannot tell", index=2),
        _record("failed", "Sad", "", error="HTTP 500", index=3),
    ]
    worst = an.worst_samples(records, 3)
    assert [r["sample_id"] for r in worst] == ["failed", "unread", "wrong"]
    assert [r["sample"] for r in an.parse_failures(records)] == ["unread", "failed"]
    assert [ex.id for ex in an.neighbours(records[1], pool)] == ["n2", "n1"]
    assert an.neighbour_agreement(records[1], pool) == 0.5
    assert an.neighbour_agreement(records[0], pool) is None  # no neighbours
    assert an.answer_lengths(records) == [3, 7, 13, 0]
    text = an.describe_sample(records[1] | {"sample_id": "q"}, pool)
    assert "query text" in text and "50% of them" in text and "sad text" in text
    assert an.worst_markdown(records[:1], pool) == "No wrong answers."
    assert "No scored answers" in an.worst_markdown([_record("x", "Sad", "") | {"correct": None}], pool)


def test_a_run_keeps_of_each_record_what_its_error_pages_read():
    """load_run keeps a record without its earlier requests' replies, reasoning and usage (most of
    its size), but with the last request's reply and demonstrations: the error pages, tables and
    figures read the same from it as from the whole line."""
    from longicl.analysis.runs import report_record

    pool = {"n1": Example("n1", "sad text", "Sad"), "n2": Example("n2", "happy text", "Not sad")}
    lines = [
        _record("wrong", "Sad", "Not sad", dynamic=["n2", "n1"], reply="Not sad, surely", index=1),
        _record("unread", "Sad", "", parsed_ok=False, reply="I cannot tell", index=2),
        _record("ok", "Sad", "Sad", index=0),
    ]
    for line in lines:  # two variants: the first one's reply is not what the pages show
        first = {
            "raw_response": "x" * 500,
            "reasoning": "long",
            "usage": {"prompt_tokens": 9},
            "icl_tokens": 7,
        }
        line["requests"] = [first, {**line["requests"][0], "usage": {"prompt_tokens": 8}, "icl_tokens": 6}]
    kept = [report_record(line) for line in lines]
    assert [list(r.requests[0]) for r in kept] == [["icl_tokens"]] * 3
    assert [sorted(r.requests[1]) for r in kept] == [["dynamic_demo_ids", "icl_tokens", "raw_response"]] * 3
    assert an.worst_markdown(kept, pool) == an.worst_markdown(lines, pool)
    assert "Not sad, surely" in an.worst_markdown(kept, pool) and "50% of them" in an.worst_markdown(
        kept, pool
    )
    assert an.parse_failures(kept) == an.parse_failures(lines)
    assert an.answer_lengths(kept) == an.answer_lengths(lines) == [15, 13, 3]
    assert lines[0]["requests"][0]["raw_response"] == "x" * 500  # the line read is left as it was


# ------------------------------------------------------------------------------------------------
# configurations and runs
# ------------------------------------------------------------------------------------------------
def test_task_overrides_and_engines():
    assert an.task_override("all") == "task=all"
    assert an.task_override([5]) == "task=5"
    assert an.task_override("2,5") == "task=[2,5]"
    assert an.resolve_engine("openai") == "openai"
    assert an.resolve_engine("auto") == an.cpu_engine()
    assert an.cpu_engine() == ("classical" if an.engine_available("classical") else "dryrun")
    assert an.engine_available("dryrun") and not an.engine_available("nonsense")
    overrides = an.run_overrides(
        engine="openai", tasks=[5], split="dev", limit=3, out_dir="outputs/x", base_url="http://h:1/v1"
    )
    assert overrides == [
        "engine=openai",
        "task=5",
        "split=dev",
        "engine.base_url=http://h:1/v1",
        "limit=3",
        f"out_dir={an.PROJECT_ROOT / 'outputs' / 'x'}",
    ]
    assert an.budget_overrides("hybrid", 64000) == ["selection=hybrid", "selection.static_tokens=62800"]


def test_chosen_overrides_add_best_only_when_present(tmp_path, monkeypatch):
    monkeypatch.setattr(an.configs, "CONF_DIR", tmp_path)
    assert an.chosen_overrides(["limit=3"]) == ["limit=3"]
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "best.yaml").write_text("name: best\n")
    assert an.chosen_overrides(["limit=3"]) == ["method=best", "limit=3"]
    assert an.chosen_overrides(["limit=3"], use_best=False) == ["limit=3"]
    assert an.chosen_overrides(["method=thinking"]) == ["method=thinking"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["engine=dryrun", "task=[2,5]", "split=dev", "limit=3"],
        [
            "selection=bm25",
            "selection.static_tokens=62800",
            "engine.base_url=http://h:1/v1",
            "+method.extra_body.foo=1",
            "prompt.header='Hello \"world\": it\\'s'",
            "out_dir='/tmp/a b'",
        ],
    ],
)
def test_main_command_composes_back_to_the_config(overrides):
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(an.compose(overrides), resolve=True)
    command, verified = an.main_command(config)
    assert verified, command
    assert command.startswith("python main.py")
    assert an.main_command(OmegaConf.to_container(an.compose([]), resolve=True)) == ("python main.py", True)


def test_run_main_works_inside_a_running_event_loop(tmp_path):
    async def in_a_kernel():  # a Jupyter kernel runs cells inside an event loop
        return an.run_main(
            an.run_overrides(engine="dryrun", tasks=[5], split="dev", limit=2, out_dir=tmp_path), quiet=True
        )

    result = asyncio.run(in_a_kernel())
    assert (result.out_dir / "run.json").is_file()


def test_load_run_and_rows_of_a_dry_run(dry_run):
    assert dry_run.engine == "dryrun" and not dry_run.answers and dry_run.split == "dev"
    assert dry_run.model.startswith("none")
    assert list(dry_run.records) == ["openseek-5", "openseek-8"]
    assert [r.index for r in dry_run.records["openseek-5"]] == [0, 1, 2]
    rows = an.task_rows(dry_run)
    assert list(rows["task"]) == ["openseek-5", "openseek-8"]
    assert (rows["method"] == "none").all() and rows["accuracy"].isna().all()
    assert rows["accuracy"].dtype == "Float64" and rows["ICL tokens (min)"].dtype == "Int64"
    assert rows.iloc[0]["ICL tokens (min)"] >= 30000 and rows.iloc[1]["ICL tokens (min)"] >= 15000
    assert an.side_models(dry_run, "openseek-5") == "none"
    assert not an.task_thinking(dry_run, "openseek-5")
    assert "not sent" in an.run_summary(dry_run) or "No accuracy" in an.run_summary(dry_run)
    errors = an.error_rows(dry_run)
    assert errors.iloc[0]["wrong"] == 0 and errors.iloc[0]["n"] == 3
    assert an.parse_failure_rows(dry_run).empty
    with pytest.raises(FileNotFoundError):
        an.load_run(dry_run.path / "records")


def test_rows_of_an_answered_run(gold_run):
    assert gold_run.engine == "openai" and gold_run.model == "Qwen3-4B"
    rows = an.task_rows(gold_run).set_index("task")
    assert rows.loc["openseek-5", "accuracy"] == 1.0 and rows.loc["openseek-5", "method"] == "icl"
    # an accuracy of 1.0 stays a float: its cell reads 1.000, not 1
    assert "| 1.000 |" in an.Table.of(rows.reset_index()).to_markdown()
    assert an.side_models(gold_run, "openseek-1") == "none"
    method = an.method_rows(gold_run).set_index("task")
    assert method.loc["openseek-5", "constrained decoding"] in ("choice", "none")
    summary = an.run_summary(gold_run)
    assert "Mean accuracy" in summary and "python main.py" in summary


def test_classical_runs_are_described_by_their_models():
    summary = {
        "engine": {
            "name": "classical",
            "models": {
                "openseek-1": {"settings": {"kind": "program", "program": "min_abs_difference"}},
                "openseek-5": {"settings": {"kind": "tfidf", "classifier": "logreg"}},
                "openseek-7": {"settings": {"kind": "nearest"}},
            },
        },
        "split": "dev",
        "config": {"method": {"enable_thinking": False}},
        "tasks": {"openseek-1": {"method": "icl"}, "openseek-5": {"method": "icl"}, "openseek-7": {}},
    }
    data = an.RunData(an.PROJECT_ROOT / "x", summary, {}, {})
    assert [an.task_method(data, f"openseek-{i}") for i in (1, 5, 7)] == [
        "program",
        "classifier",
        "retrieval",
    ]
    assert "min_abs_difference" in an.side_models(data, "openseek-1")
    assert "logreg" in an.side_models(data, "openseek-5")
    assert data.model.startswith("none")


def test_sweep_and_cost_rows(tmp_path):
    result = an.sweep(
        ["bm25", "hybrid"], [32000], engine="dryrun", tasks=[5], limit=2, out_dir=tmp_path, quiet=True
    )
    assert result.engine == "dryrun" and not result.has_accuracy and not result.skipped
    points = {p.strategy: p for p in result.points}
    assert set(points) == {"bm25", "hybrid"}
    assert points["bm25"].icl_tokens_min >= 30000 and points["hybrid"].icl_tokens_min >= 30000
    cost = an.cost_rows(result.points).set_index("strategy").to_dict("index")
    # bm25 rebuilds the whole context per sample; hybrid shares almost all of it
    assert cost["bm25"]["uncached prefill / sample"] > 0.9 * cost["bm25"]["prompt tokens / sample"]
    assert cost["hybrid"]["uncached prefill / sample"] < 0.1 * cost["hybrid"]["prompt tokens / sample"]
    assert len(an.sweep_rows(result)) == 2
    assert "dry run answers nothing" in an.sweep_summary(result)
    skipped = an.sweep(["hybrid"], [1000], engine="dryrun", tasks=[5], limit=1, out_dir=tmp_path, quiet=True)
    assert skipped.points == [] and skipped.skipped[0]["budget"] == 1000
    assert "skipped hybrid" in an.sweep_summary(skipped)


def test_check_submission(tmp_path):
    from fake_server import FakeServer, FixedAnswer

    out = tmp_path / "test"
    with FakeServer(FixedAnswer("7")) as server:
        overrides = ("task=1", "split=test", "limit=3", f"engine.base_url={server.url}", f"out_dir={out}")
        result = run(compose(*overrides))
    assert result.submission is not None and result.submission.name == "submission.zip"
    check = an.check_submission(an.load_run(out))
    assert check.rows == {"openseek-1": 3} and check.empty == {"openseek-1": 0}
    assert len(check.problems) == 1 and "partial submission" in check.problems[0]
    assert "openseek-1.jsonl" in an.submission_markdown(check)
    with zipfile.ZipFile(out / "submission.zip", "w") as archive:
        archive.writestr("openseek-1.jsonl", json.dumps({"test_sample_id": "x", "prediction": "1"}) + "\n")
    assert any("3 ids missing, 1 unexpected" in p for p in an.check_submission(an.load_run(out)).problems)
    ids = [json.loads(line)["test_sample_id"] for line in (out / "openseek-1.jsonl").read_text().splitlines()]
    with zipfile.ZipFile(out / "submission.zip", "w") as archive:
        rows = [{"test_sample_id": i, "prediction": ""} for i in reversed(ids)]
        archive.writestr("openseek-1.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    shuffled = an.check_submission(an.load_run(out))
    assert any("not in the task file's order" in p for p in shuffled.problems)
    assert shuffled.rows == {"openseek-1": 3} and shuffled.empty == {"openseek-1": 3}
    (out / "submission.zip").unlink()
    missing = an.check_submission(an.load_run(out))
    assert not missing.ok and "No submission.zip" in an.submission_markdown(missing)


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def _renders(fig) -> bool:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue().startswith(b"\x89PNG")


def test_figures_render(dry_run, gold_run, tmp_path):
    overviews = an.data_overview([2, 5], data_dir=DATA_DIR, budgets=[30000, 64000])
    for fig in (
        an.figure_token_lengths(overviews),
        an.figure_label_distributions(overviews),
        an.figure_label_distributions(an.data_overview([1], data_dir=DATA_DIR, budgets=[30000])),
        an.figure_fits(overviews),
        an.figure_confusions(gold_run),
        an.figure_confusions(dry_run),
        an.figure_label_bias(gold_run),
        an.figure_answer_lengths(gold_run),
        an.figure_answer_lengths(dry_run),
        an.figure_accuracy([gold_run]),
        an.figure_tokens(dry_run),
        an.figure_icl_floor(dry_run),
    ):
        assert _renders(fig)
    points = [
        an.SweepPoint("hybrid", b, "openseek-5", 3, acc, 1.0 * b, 1.0 * b, b, 1200.0, b - 1200.0, 0.1, "x")
        for b, acc in ((32000, 0.7), (64000, 0.75))
    ]
    assert _renders(an.figure_sweep_accuracy(points)) and _renders(an.figure_sweep_cost(points))
    json.dumps(an.jsonable(points))


def test_a_classical_test_run_is_no_entry_and_its_optional_zip_says_so(tmp_path):
    """Compliance means the rules: floor, pure ICL and a served language model. Classical answers
    keep the floor but are none of the others: no submission.zip; not_an_entry_zip=true writes
    one under a name that cannot pass for an entry, and the check says why."""
    out = tmp_path / "classical"
    result = run(compose("engine=classical", "task=1", "split=test", "limit=3", f"out_dir={out}"))
    assert result.submission is None and not (out / "submission.zip").exists()
    assert result.summary["compliant"] is False
    assert "without a language model" in result.summary["submission_refused"]
    assert "No submission.zip" in an.submission_markdown(an.check_submission(an.load_run(out)))
    optional = tmp_path / "optional"
    overrides = ("engine=classical", "task=1", "split=test", "limit=3", "not_an_entry_zip=true")
    result = run(compose(*overrides, f"out_dir={optional}"))
    assert result.submission == optional / "not-an-entry-submission.zip"
    assert not (optional / "submission.zip").exists()
    check = an.check_submission(an.load_run(optional))
    assert check.path.name == "not-an-entry-submission.zip" and check.rows == {"openseek-1": 3}
    assert any("not an entry" in p for p in check.problems)

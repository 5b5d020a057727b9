"""End to end through real HTTP: main's config -> runner -> openai client -> fake server -> files."""

import json
import re
import zipfile

import pytest
from conftest import DATA_DIR, compose
from fake_server import FakeServer, FixedAnswer

from longicl.data import load_task
from longicl.runner import run
from longicl.tasks import TASKS
from longicl.tokens import TokenCounter


def _demonstration_region(body: dict) -> tuple[str, str]:
    """(everything before the query, the query input) of a request body."""
    content = body["messages"][-1]["content"]
    start = content.rfind("Input: ")
    return content[:start], content[start + len("Input: ") :].removesuffix("\nOutput:")


@pytest.fixture(scope="module")
def gold_run(tmp_path_factory, gold_answers):
    out = tmp_path_factory.mktemp("gold")
    with FakeServer(gold_answers) as server:
        result = run(
            compose(
                "task=all",
                "split=dev",
                "limit=12",
                "kernels.dev_gold=false",
                f"engine.base_url={server.url}",
                f"out_dir={out}",
            )
        )
        return result, list(server.requests), out


def test_gold_server_scores_one_on_tasks_1_to_7(gold_run):
    result, _, _ = gold_run
    assert result.missing == 0
    for task_id in range(1, 8):
        task = result.summary["tasks"][f"openseek-{task_id}"]
        assert task["accuracy"] == 1.0, task_id
        assert task["parse_failures"] == 0 and task["n"] == 12
    assert result.summary["mean_accuracy"] == 1.0


def test_every_request_carries_the_minimum_icl_context_and_no_leakage(gold_run):
    _, requests, _ = gold_run
    counter = TokenCounter()
    # Task 8 adds a reference request (and repairs) per sample; the others send one each.
    assert len([b for b in requests if "Triton" not in b["messages"][0]["content"]]) == 7 * 12
    by_definition = {}
    for body in requests:
        system = body["messages"][0]["content"]
        by_definition.setdefault(system, []).append(body)
        demos, query = _demonstration_region(body)
        assert f"Input: {query}\n" not in demos
        assert body["chat_template_kwargs"] == {"enable_thinking": False}
        # The start of a new demonstration stops a reply; never in code (task 8's template).
        assert body.get("stop") == (None if "Triton" in system else ["\n\nInput:"])
    definitions = {spec.id: load_task(spec, DATA_DIR).definition for spec in TASKS.values()}
    seen = set()
    for system, bodies in by_definition.items():
        (task_id,) = [i for i, definition in definitions.items() if system.startswith(definition)]
        seen.add(task_id)
        for body in bodies[:3]:
            assert counter.count(_demonstration_region(body)[0]) >= TASKS[task_id].min_icl_tokens, task_id
    assert seen == set(TASKS)  # every task's floor was checked, task 8's 15,000 among them


def test_outputs_layout_and_run_json(gold_run):
    result, _, out = gold_run
    run_json = json.loads((out / "run.json").read_text())
    # The tests run in a git checkout: the run records the commit it ran from.
    assert re.fullmatch(r"[0-9a-f]{40}", run_json["git"]["commit"] or ""), run_json["git"]
    assert isinstance(run_json["git"]["dirty"], bool)
    assert run_json["config"]["split"] == "dev"
    task5 = run_json["tasks"]["openseek-5"]
    for key in ("n", "accuracy", "parse_failures", "prompt_tokens", "seconds", "uncached_prompt_tokens"):
        assert key in task5
    assert set(task5["prompt_tokens"]) == {"min", "median", "max"}
    assert run_json["uncached_prompt_tokens_median"] <= 2000
    lines = (out / "openseek-5.jsonl").read_bytes()
    assert not lines.startswith(b"\xef\xbb\xbf")
    rows = [json.loads(line) for line in lines.splitlines()]
    assert len(rows) == 12 and set(rows[0]) == {"test_sample_id", "prediction"}
    record = json.loads((out / "records" / "openseek-5.jsonl").read_text().splitlines()[0])
    request = record["requests"][0]
    for key in (
        "dynamic_demo_ids",
        "static_block",
        "prompt_tokens",
        "static_tokens",
        "raw_response",
        "parsed",
        "finish_reason",
        "usage",
        "latency_s",
    ):
        assert key in request
    assert (out / "config.yaml").is_file() and not (out / "submission.zip").exists()


def test_prefix_sharing_shows_in_cached_tokens(gold_run):
    _, _, out = gold_run
    rows = [json.loads(line) for line in (out / "records" / "openseek-6.jsonl").read_text().splitlines()]
    cached = [r["requests"][0]["usage"]["prompt_tokens_details"]["cached_tokens"] for r in rows]
    assert sum(c > 25_000 for c in cached) >= len(cached) - 2  # all but the first few hit the cache


def test_test_split_writes_a_validated_flat_submission(tmp_path, gold_answers):
    with FakeServer(FixedAnswer("<label>Sad</label>")) as server:
        # Unconstrained decoding, so that task 6's replies ("Sad") stay unreadable as Y/N.
        overrides = ["task=[5,6]", "split=test", "limit=7", "method.structured_outputs=false"]
        result = run(compose(*overrides, f"engine.base_url={server.url}", f"out_dir={tmp_path}"))
    assert result.submission is not None
    with zipfile.ZipFile(result.submission) as archive:
        assert sorted(archive.namelist()) == ["openseek-5.jsonl", "openseek-6.jsonl"]
        rows = [json.loads(x) for x in archive.read("openseek-5.jsonl").splitlines()]
    assert len(rows) == 7 and {r["prediction"] for r in rows} == {"Sad"}
    assert result.summary["tasks"]["openseek-6"]["parse_failures"] == 7


def test_resume_does_not_request_finished_samples_again(tmp_path, gold_answers):
    with FakeServer(gold_answers) as server:
        run(compose("task=1", "split=dev", "limit=5", f"engine.base_url={server.url}", f"out_dir={tmp_path}"))
        first = len(server.requests)
        result = run(
            compose("task=1", "split=dev", "limit=9", f"engine.base_url={server.url}", f"out_dir={tmp_path}")
        )
        assert len(server.requests) - first == 4
        assert result.summary["tasks"]["openseek-1"]["accuracy"] == 1.0
        run(
            compose(
                "task=1",
                "split=dev",
                "limit=9",
                "overwrite=true",
                f"engine.base_url={server.url}",
                f"out_dir={tmp_path}",
            )
        )
        assert len(server.requests) - first == 4 + 9


def test_dry_run_writes_requests_not_predictions(tmp_path):
    result = run(compose("engine=dryrun", "task=[2,8]", "split=test", "limit=4", f"out_dir={tmp_path}"))
    assert result.missing == 0 and result.submission is None
    lines = (tmp_path / "requests" / "openseek-2.jsonl").read_text().splitlines()
    body = json.loads(lines[0])
    assert body["prompt_tokens"] >= 30_000 and body["icl_tokens"] >= 30_000
    static = tmp_path / "requests" / "static" / f"{body['demo_ids']['static_block']}.txt"
    assert static.is_file() and static.stat().st_size > 50_000
    assert body["body"]["chat_template_kwargs"] == {"enable_thinking": False}
    assert not (tmp_path / "openseek-2.jsonl").exists()
    assert (
        json.loads((tmp_path / "requests" / "openseek-8.jsonl").read_text().splitlines()[0])["icl_tokens"]
        >= 15_000
    )


def test_a_floor_below_the_rule_is_an_experiment_without_submission(tmp_path):
    with FakeServer(FixedAnswer("Sad")) as server:
        overrides = ["task=5", "split=test", "limit=3", "min_icl_tokens=1000"]
        result = run(compose(*overrides, f"engine.base_url={server.url}", f"out_dir={tmp_path}"))
        icl = [TokenCounter().count(b["messages"][-1]["content"]) for b in server.requests]
    assert result.missing == 0 and result.submission is None
    assert not (tmp_path / "submission.zip").exists()
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["compliant"] is False and "min_icl_tokens=1000" in summary["submission_refused"]
    task = summary["tasks"]["openseek-5"]
    assert (task["compliant"], task["min_icl_tokens"], task["min_icl_tokens_rule"]) == (False, 1000, 30_000)
    records = [json.loads(x) for x in (tmp_path / "records" / "openseek-5.jsonl").read_text().splitlines()]
    assert [r["compliant"] for r in records] == [False] * 3
    assert all(1000 <= n < 30_000 for n in icl)  # the context curve's small end really is small


def test_compliance_needs_the_floor_pure_icl_and_a_served_language_model(tmp_path):
    """A classical run keeps the floor but no language model answers; icl_programs is not pure ICL."""
    classical = run(
        compose("engine=classical", "task=5", "split=test", "limit=2", f"out_dir={tmp_path / 'c'}")
    )
    task = classical.summary["tasks"]["openseek-5"]
    assert (classical.summary["compliant"], task["compliant"], classical.submission) == (False, False, None)
    assert "engine=classical answers without a language model" in task["not_compliant_because"]
    records = [
        json.loads(x) for x in (tmp_path / "c" / "records" / "openseek-5.jsonl").read_text().splitlines()
    ]
    assert [r["compliant"] for r in records] == [False, False]
    with FakeServer(FixedAnswer("7")) as server:
        overrides = (
            "task=1",
            "split=test",
            "limit=2",
            "method=icl_programs",
            f"engine.base_url={server.url}",
        )
        programs = run(compose(*overrides, f"out_dir={tmp_path / 'p'}"))
    assert programs.summary["compliant"] is False and programs.submission is None
    assert "not pure in-context learning" in programs.summary["submission_refused"]


def test_run_files_are_as_readable_as_the_records(tmp_path):
    """mkstemp makes 0600 files; run.json, config.yaml, predictions and the zip follow the umask."""
    import os

    old = os.umask(0o022)
    try:
        with FakeServer(FixedAnswer("Sad")) as server:
            run(
                compose(
                    "task=5", "split=test", "limit=2", f"engine.base_url={server.url}", f"out_dir={tmp_path}"
                )
            )
    finally:
        os.umask(old)
    modes = {
        p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"
    }
    assert {"run.json", "config.yaml", "openseek-5.jsonl", "submission.zip"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes
    assert (tmp_path / "records" / "openseek-5.jsonl").stat().st_mode & 0o777 == 0o644


def test_budgets_hold_in_the_served_models_tokens(tmp_path):
    """model.tokenizer=server: the fake server's tokenizer (3 characters a token) counts; Qwen's does not."""
    with FakeServer(FixedAnswer("Sad")) as server:
        overrides = ["task=5", "split=dev", "limit=2", "min_icl_tokens=2000", "model.tokenizer=server"]
        result = run(compose(*overrides, f"engine.base_url={server.url}", f"out_dir={tmp_path}"))
    assert result.missing == 0 and result.summary["compliant"] is False
    records = [json.loads(x) for x in (tmp_path / "records" / "openseek-5.jsonl").read_text().splitlines()]
    for record in records:
        request = record["requests"][0]
        assert request["icl_tokens"] >= 2000
    assert result.summary["tasks"]["openseek-5"]["icl_tokens"]["min"] >= 2000
    # Counted in the server's tokens, which are fewer characters each than Qwen's: fewer demonstrations.
    assert json.loads((tmp_path / "run.json").read_text())["config"]["model"]["tokenizer"] == "server"


def test_the_bar_says_the_shared_block_is_prefilling_and_cached_tokens_is_a_note(tmp_path, capsys):
    """Against a slow CPU server the bar sits at 0% during the first prefill: it says so. A server
    without cached_tokens gets a note worded as a fact, not a warning."""
    with FakeServer(FixedAnswer("Sad"), report_cached_tokens=False) as server:
        overrides = ("task=5", "split=test", "limit=2", "progress=true", f"engine.base_url={server.url}")
        run(compose(*overrides, f"out_dir={tmp_path}"))
    err = capsys.readouterr().err
    static = json.loads((tmp_path / "run.json").read_text())["tasks"]["openseek-5"]["static_block"]["tokens"]
    assert f"prefilling the shared block ({static:,} tokens)" in err
    assert "warning" not in err and "does not report cached_tokens" in err


def test_the_end_of_a_task_reads_each_latest_record_once(tmp_path, gold_answers, monkeypatch):
    """After the last row, one pass: every latest record of the task is read once (the run's
    samples and an earlier invocation's), and run.json is written without reading any again.
    The summaries still cover what they always did: the metrics the run's samples, the requests
    per server every latest record of the task."""
    from collections import Counter

    from longicl.rundir import RunDir

    with FakeServer(gold_answers) as server:
        overrides = ("task=1", "split=dev", f"engine.base_url={server.url}", f"out_dir={tmp_path}")
        run(compose(*overrides, "limit=6"))
        read: Counter[str] = Counter()
        records_at = RunDir.records_at

        def counted(self, task, offsets):
            for record in records_at(self, task, offsets):
                read[record["sample_id"]] += 1
                yield record

        def refused(*args, **kwargs):
            raise AssertionError("a record read outside the end-of-task pass")

        monkeypatch.setattr(RunDir, "records_at", counted)
        monkeypatch.setattr(RunDir, "latest_records", refused)
        monkeypatch.setattr(RunDir, "all_records", refused)
        result = run(compose(*overrides, "limit=4"))
    assert len(read) == 6 and set(read.values()) == {1}
    task = result.summary["tasks"]["openseek-1"]
    assert task["n"] == 4 and task["accuracy"] == 1.0
    assert sum(task["servers"].values()) == 6  # one request per sample, of all six records
    assert len((tmp_path / "openseek-1.jsonl").read_text().splitlines()) == 4

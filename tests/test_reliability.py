"""Reliability: every server fault, context overflow, resume after SIGKILL and SIGINT, bad input.

All through real HTTP against the fake server (in this process, or as a separate process for the
kill tests); nothing of ours is mocked.
"""

import asyncio
import importlib.util
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT, compose, sigint_default
from fake_server import FAULTS, FakeServer, FaultPlan, FixedAnswer

from longicl.data import Example
from longicl.engines.base import ChatRequest
from longicl.engines.local import free_port
from longicl.engines.openai_compat import OpenAIEngine
from longicl.runner import run
from longicl.tasks import TASKS

FAST_BACKOFF = ("engine.backoff_initial=0.05", "engine.backoff_max=0.5")


class ScriptedFaults(FaultPlan):
    """The given faults, one per request in order, then none."""

    def __init__(self, *faults: str, hang_seconds: float = 1.0) -> None:
        super().__init__(rate=0.0, hang_seconds=hang_seconds)
        self.script = list(faults)

    def draw(self) -> str | None:
        return self.script.pop(0) if self.script else None


def _request(max_tokens: int = 16) -> ChatRequest:
    return ChatRequest(
        task=TASKS[5],
        sample=Example("s-1", "I feel fine"),
        messages=[
            {"role": "system", "content": "Label it."},
            {"role": "user", "content": "Input: x\nOutput:"},
        ],
        max_tokens=max_tokens,
    )


def main(argv: list[str]) -> int:
    """``python main.py <argv>``, in this process (main.py is not a package module)."""
    spec = importlib.util.spec_from_file_location("longicl_main_py", ROOT / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _complete(server: FakeServer, **settings):
    engine = OpenAIEngine.from_config(
        base_url=server.url, model="auto", timeout=0.4, backoff_initial=0.01, backoff_max=0.05, **settings
    )

    async def go():
        await engine.start()
        try:
            return await engine.complete(_request())
        finally:
            await engine.aclose()

    return asyncio.run(go())


# ------------------------------------------------------------------------------------------------
# each fault, one at a time
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fault, words",
    [
        ("http500", "HTTP 500"),
        ("http503", "HTTP 503"),
        ("http429", "HTTP 429"),
        ("hang", "timeout after 0.4s"),
        ("drop", "connection error"),
        ("truncated_json", "malformed response"),
        ("empty", "empty answer"),
    ],
)
def test_each_fault_is_retried_and_answered(fault, words):
    with FakeServer(
        FixedAnswer("<label>Sad</label>"), faults=ScriptedFaults(fault), count_tokens=False
    ) as server:
        started = time.monotonic()
        completion = _complete(server)
        elapsed = time.monotonic() - started
    assert completion.error is None and completion.text == "<label>Sad</label>"
    assert completion.attempts == 2 and len(server.requests) == 2
    assert words in completion.notes[0], completion.notes
    if fault == "http429":
        assert elapsed >= 0.2  # the server's Retry-After: 0.2, not our 0.01 s backoff


def test_length_is_retried_once_with_more_tokens_then_recorded():
    with FakeServer(
        FixedAnswer("<label>Sad</label>"), faults=ScriptedFaults("truncated_answer"), count_tokens=False
    ) as s:
        completion = _complete(s)
        assert [r["max_tokens"] for r in s.requests] == [16, 32]
    assert completion.text == "<label>Sad</label>" and completion.attempts == 1
    assert "finish_reason=length; retried with max_tokens=32" in completion.notes
    twice = ScriptedFaults("truncated_answer", "truncated_answer")
    with FakeServer(FixedAnswer("<label>Sad</label>"), faults=twice, count_tokens=False) as s:
        completion = _complete(s)
        assert len(s.requests) == 2  # not retried a second time
    assert completion.error is None and completion.finish_reason == "length"


def test_a_request_that_keeps_failing_is_returned_with_its_error():
    faults = ScriptedFaults(*["http500"] * 10)
    with FakeServer(FixedAnswer("x"), faults=faults, count_tokens=False) as server:
        completion = _complete(server, max_retries=2)
        assert len(server.requests) == 3
    assert completion.text is None and completion.error.startswith("HTTP 500")
    assert completion.attempts == 3 and completion.server == server.url


def test_a_client_error_is_not_retried():
    with FakeServer(FixedAnswer("x"), max_model_len=10, count_tokens=False) as server:
        completion = _complete(server)
        assert len(server.requests) == 1
    assert completion.error.startswith("context_length: ") and "maximum context length" in completion.error


# ------------------------------------------------------------------------------------------------
# whole runs
# ------------------------------------------------------------------------------------------------
def _predictions(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.glob("openseek-*.jsonl"))}


def _records(out: Path) -> list[dict]:
    rows = []
    for path in sorted((out / "records").glob("openseek-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def test_a_run_with_20_percent_faults_gives_the_clean_run_predictions(tmp_path, gold_answers):
    common = ("task=[1,2,3,4,5,6,7]", "split=dev", "limit=6", "engine.timeout=1", *FAST_BACKOFF)
    started = time.monotonic()
    with FakeServer(gold_answers) as server:
        clean = run(compose(*common, f"engine.base_url={server.url}", f"out_dir={tmp_path / 'clean'}"))
    clean_seconds = time.monotonic() - started
    faults = FaultPlan(rate=0.2, kinds=FAULTS, hang_seconds=1.5, seed=30)
    with FakeServer(gold_answers, faults=faults) as server:
        started = time.monotonic()
        faulty = run(compose(*common, f"engine.base_url={server.url}", f"out_dir={tmp_path / 'faulty'}"))
        seconds = time.monotonic() - started
        injected = Counter(server.faults_injected)
    retries = sum(q["attempts"] - 1 for r in _records(tmp_path / "faulty") for q in r["requests"])
    print(
        f"\n20% faults: {dict(injected)}, {len(server.requests)} requests, {retries} retries, "
        f"{seconds:.1f}s (clean run: {clean_seconds:.1f}s)"
    )
    assert len(injected) == len(FAULTS)  # seed 30: every kind within the first 45 requests
    assert clean.missing == 0 and faulty.missing == 0
    cut_twice = {
        r["sample_id"]
        for r in _records(tmp_path / "faulty")
        if "answer cut at max_tokens" in str(r["requests"])
    }
    if not cut_twice:  # a sample truncated twice is a parse failure, by design (rare)
        assert _predictions(tmp_path / "faulty") == _predictions(tmp_path / "clean")
    for task in faulty.summary["tasks"].values():
        assert task["failed_requests"] == 0
        assert task["accuracy"] == 1.0 or cut_twice


def test_context_overflow_shrinks_the_per_sample_block_then_the_static_block(tmp_path, gold_answers):
    # Default prompts are ~32.4K tokens: without per-sample demonstrations ~31.2K, with the
    # static block at the 30K floor ~30.2K; a 30,800-token server needs both shrinks.
    with FakeServer(gold_answers, max_model_len=30_800) as server:
        result = run(
            compose("task=5", "split=dev", "limit=2", f"engine.base_url={server.url}", f"out_dir={tmp_path}")
        )
        assert len(server.requests) == 2 * 3
    assert result.missing == 0 and result.summary["tasks"]["openseek-5"]["accuracy"] == 1.0
    for record in _records(tmp_path):
        request = record["requests"][0]
        notes = [n for n in request["notes"] if n.startswith("context too long")]
        assert len(notes) == 2 and "static<=None" in notes[0] and "static<=30000" in notes[1]
        assert request["icl_tokens"] >= 30_000 and request["dynamic_demo_ids"] == []
        assert request["usage"]["prompt_tokens"] + 64 <= 30_800


def test_context_overflow_below_the_icl_floor_is_a_failed_sample_and_exit_1(tmp_path, gold_answers, capsys):
    with FakeServer(gold_answers, max_model_len=29_000) as server:
        code = main(
            ["progress=false", f"data_dir={DATA_DIR}", "task=5", "split=dev", "limit=2"]
            + [f"engine.base_url={server.url}", f"out_dir={tmp_path}"]
        )
    assert code == 1
    assert "2 samples have no prediction" in capsys.readouterr().err
    run_json = json.loads((tmp_path / "run.json").read_text())
    assert run_json["missing_predictions"] == 2
    assert all(r["error"].startswith("context_length") for r in _records(tmp_path))


# ------------------------------------------------------------------------------------------------
# kill and resume: main.py and the fake server as separate processes
# ------------------------------------------------------------------------------------------------
KILL_RUN = ("task=[4,5]", "split=dev", "limit=10", "engine.concurrency=2")  # two quick tasks


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "requests.jsonl"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_server.py"), "--port", str(port)]
        + ["--data-dir", str(DATA_DIR), "--latency", "0.15", "--log", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=1).read()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.1)
    yield url, log
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def uninterrupted(server_process, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = run(compose(*KILL_RUN, f"engine.base_url={server_process[0]}", f"out_dir={out}"))
    assert result.missing == 0
    return _predictions(out)


def _start_main(url: str, out: Path) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "main.py"), "progress=false", f"data_dir={DATA_DIR}", *KILL_RUN]
    args += [f"engine.base_url={url}", f"out_dir={out}"]
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=sigint_default
    )


def _wait_for_records(process: subprocess.Popen, out: Path, n: int) -> None:
    deadline = time.monotonic() + 90
    while _count_lines(out) < n:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _count_lines(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (out / "records").glob("openseek-*.jsonl"))


def _log_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _query(body: dict) -> str:
    content = body["messages"][-1]["content"]
    return content[content.rfind("Input: ") :]


def test_sigkill_mid_run_then_the_same_command_resumes(server_process, uninterrupted, tmp_path):
    url, log = server_process
    out = tmp_path / "out"
    before = len(_log_lines(log))
    process = _start_main(url, out)
    _wait_for_records(process, out, 6)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    finished = {r["sample_id"] for r in _records_lenient(out)}
    killed_requests = len(_log_lines(log)) - before

    rerun = _start_main(url, out)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    bodies = [row["body"] for row in _log_lines(log)[before:]]
    per_sample = Counter(_query(b) for b in bodies)
    repeats = sum(n - 1 for n in per_sample.values())
    print(
        f"\nSIGKILL after {len(finished)} finished samples ({killed_requests} requests sent); "
        f"rerun sent {len(bodies) - killed_requests}; repeated samples: {repeats}"
    )
    assert len(per_sample) == 20  # every sample asked
    assert len(bodies) - killed_requests == 20 - len(finished)  # finished samples not asked again
    assert repeats <= 2  # at most engine.concurrency requests were in flight at the kill
    assert _predictions(out) == uninterrupted


def _records_lenient(out: Path) -> list[dict]:
    """Records as a resuming run reads them: a torn last line is skipped."""
    rows = []
    for path in (out / "records").glob("openseek-*.jsonl"):
        for line in path.read_text().splitlines(keepends=True):
            if line.endswith("\n"):
                rows.append(json.loads(line))
    return rows


def test_sigint_exits_130_with_one_line_and_keeps_the_records(server_process, tmp_path):
    url, _ = server_process
    out = tmp_path / "out"
    process = _start_main(url, out)
    _wait_for_records(process, out, 4)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        "interrupted: finished samples are kept; run the same command again to resume"
    ]
    kept = _count_lines(out)
    assert kept >= 4 and len(_records(out)) == kept  # every line whole
    assert not (out / "run.json").exists()  # the resumed run writes it (see the SIGKILL test)


# ------------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing written (in-process; tests/test_cli.py covers the subprocess)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, words",
    [
        (["engine.timeout=abc"], "engine.timeout='abc' is not a number"),
        (["engine.timeout=-1"], "engine.timeout=-1 must be greater than 0"),
        (["engine.timeout=0"], "engine.timeout=0 must be greater than 0"),
        (["engine.max_retries=-1"], "engine.max_retries=-1"),
        (["engine.max_retries=1.5"], "engine.max_retries=1.5 is not an integer"),
        (["engine.concurrency=many"], "engine.concurrency='many' is not an integer"),
        (["engine.backoff_initial=-0.5"], "engine.backoff_initial"),
        (["engine.length_retry_factor=1"], "engine.length_retry_factor"),
        (["engine.max_failures_in_row=0"], "engine.max_failures_in_row"),
        (["+engine.max_retry=3"], "engine.max_retry is not a setting of engine=openai"),
        (["engine=ray", "+engine.ray.actor=3"], "engine.ray.actor is not a setting of engine=ray"),
        (["engine=ray", "engine.ray.restart_rows=0"], "engine.ray.restart_rows=0 must be at least 1"),
        (["engine.base_url=[http://127.0.0.1:2026/v1,ftp://x]"], "engine.base_url='ftp://x'"),
        (["engine.base_url=[]"], "engine.base_url is empty"),
        (["engine.base_url=http://127.0.0.1:port/v1"], "not an http(s) URL"),
        (["engine.base_url=[http://a:1/v1,http://a:1/v1]"], "twice"),
        (["dev_size=0"], "dev_size=0"),
        (["seed=-1"], "seed=-1"),
        (["limit=0"], "limit=0"),
        (["task=[]"], "task"),
    ],
)
def test_bad_values_give_one_line_and_exit_2(tmp_path, capsys, overrides, words):
    out = tmp_path / "out"
    code = main(["progress=false", f"data_dir={DATA_DIR}", f"out_dir={out}", "task=5", *overrides])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert words in err
    assert not out.exists()


def test_an_out_dir_that_is_a_file_or_unwritable_gives_one_line_and_exit_2(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    for out, words in (
        (a_file, "is a file, not a directory"),
        (a_file / "sub", "is a file, not a directory"),
        (Path("/proc/longicl-test-out"), "cannot write"),
    ):
        code = main(
            ["progress=false", "engine=dryrun", f"data_dir={DATA_DIR}", f"out_dir={out}", "task=5", "limit=1"]
        )
        err = capsys.readouterr().err
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and words in err and str(out) in err, err
    assert a_file.read_text() == "keep me"

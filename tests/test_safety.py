"""Safe to publish and to share (issue 16): keys never written, one writer per out_dir, and no
sample's exception (or model output) stops a run.

Runs go over real HTTP to ``fake_server.FakeServer``; the concurrency and fault tests start
``main.py`` as separate processes, as a user would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT
from fake_server import FakeServer

from longicl.analysis import main_command
from longicl.credentials import redact, redact_command, redact_text, resolve_api_key
from longicl.errors import one_line
from longicl.kernels.check import Stage, check_candidate
from longicl.kernels.extract import extract_code, parse_module
from longicl.kernels.signature import parse_signature, signature_from_source
from longicl.rundir import RunDir, RunDirBusy

KEY_OVERRIDE = "engine.api_key=$OPENAI_API_KEY"
KEY = "sk-test-0123456789abcdef"  # long enough to be recognised anywhere
RUN = ("progress=false", f"data_dir={DATA_DIR}", "task=5", "split=dev", "limit=3")


def main(argv: list[str]) -> int:
    """``python main.py <argv>`` in this process, with ``sys.argv`` as the shell would set it."""
    spec = importlib.util.spec_from_file_location("longicl_main_py", ROOT / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def files_containing(secret: str, *roots: Path) -> list[str]:
    return [
        str(path)
        for root in roots
        for path in sorted(root.rglob("*"))
        if path.is_file() and secret.encode() in path.read_bytes()
    ]


def report(run_dir: Path, out: Path) -> None:
    from longicl.report import main as report_main

    assert report_main([str(run_dir), "-o", str(out)]) == 0


# ------------------------------------------------------------------------------------------------
# keys
# ------------------------------------------------------------------------------------------------
def test_the_key_comes_from_the_setting_else_the_environment_else_empty(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert resolve_api_key(None) == resolve_api_key("EMPTY") == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert resolve_api_key("EMPTY") == resolve_api_key("$OPENAI_API_KEY") == KEY
    assert resolve_api_key("sk-other-key-on-the-command-line") == "sk-other-key-on-the-command-line"


def test_redaction_of_configs_commands_and_messages() -> None:
    resolve_api_key(KEY)  # the engine remembers the key it sends
    config = {"engine": {"api_key": KEY, "base_url": ["http://bob:hunter2@gpu:2026/v1"]}, "seed": 0}
    assert redact(config) == {
        "engine": {"api_key": "$OPENAI_API_KEY", "base_url": ["http://***@gpu:2026/v1"]},
        "seed": 0,
    }
    assert redact({"engine": {"api_key": "EMPTY"}}) == {"engine": {"api_key": "EMPTY"}}
    command = redact_command(["main.py", f"engine.api_key={KEY}", "engine.base_url=http://a:b@h/v1"])
    assert command == "main.py engine.api_key=$OPENAI_API_KEY engine.base_url=http://***@h/v1"
    assert (
        redact_command(f"api_test.py --api-key {KEY} --quick")
        == "api_test.py --api-key $OPENAI_API_KEY --quick"
    )
    assert KEY not in one_line(RuntimeError(f"401 for Bearer {KEY} at http://bob:hunter2@gpu/v1"))
    assert "hunter2" not in redact_text("at http://bob:hunter2@gpu/v1")


def test_the_reproduction_command_reads_the_key_from_the_environment() -> None:
    from longicl.cli import compose_config

    config = compose_config(ROOT / "conf", ["task=5", f"engine.api_key={KEY}"])
    from omegaconf import OmegaConf

    command, verified = main_command(OmegaConf.to_container(config, resolve=True))
    assert KEY not in command and f" {KEY_OVERRIDE}" in command and verified, command


@pytest.mark.parametrize("how", ["command line", "environment"])
def test_a_server_that_needs_a_key_gets_it_and_no_file_holds_it(tmp_path, gold_answers, monkeypatch, how):
    out, reports = tmp_path / "run", tmp_path / "report"
    with FakeServer(gold_answers, api_key=KEY) as server:
        argv = [*RUN, f"engine.base_url={server.url}", f"out_dir={out}"]
        if how == "command line":
            monkeypatch.delenv("OPENAI_API_KEY", raising=False)
            argv.append(f"engine.api_key={KEY}")
        else:
            monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setattr(sys, "argv", ["main.py", *argv])
        assert main(argv) == 0
        assert server.rejected == 0 and len(server.requests) == 3
    report(out, reports)
    assert files_containing(KEY, out, reports) == []
    summary = json.loads((out / "run.json").read_text())
    if how == "command line":
        assert summary["config"]["engine"]["api_key"] == "$OPENAI_API_KEY"
        assert "engine.api_key=$OPENAI_API_KEY" in summary["command"]
        for page in ("technical_report.md", "technical_report.html"):
            assert KEY_OVERRIDE in (reports / page).read_text(), page


def test_a_wrong_key_is_one_line_without_the_key(tmp_path, gold_answers, monkeypatch, capsys) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeServer(gold_answers, api_key="sk-the-right-key-0000") as server:
        code = main(
            [*RUN, f"engine.base_url={server.url}", f"out_dir={tmp_path / 'run'}", f"engine.api_key={KEY}"]
        )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and KEY not in err, err
    assert not (tmp_path / "run").exists()


def test_url_credentials_are_not_written(tmp_path, gold_answers, monkeypatch) -> None:
    out = tmp_path / "run"
    with FakeServer(gold_answers) as server:
        url = server.url.replace("http://", "http://bob:hunter2-secret@")
        argv = [*RUN, f"engine.base_url={url}", f"out_dir={out}"]
        monkeypatch.setattr(sys, "argv", ["main.py", *argv])
        assert main(argv) == 0
    assert files_containing("hunter2", out) == []
    assert "http://***@127.0.0.1" in (out / "config.yaml").read_text()


# ------------------------------------------------------------------------------------------------
# one writer per out_dir
# ------------------------------------------------------------------------------------------------
def test_a_second_lock_on_a_busy_out_dir_names_the_holder(tmp_path) -> None:
    first, second = RunDir(tmp_path / "out"), RunDir(tmp_path / "out")
    first.lock()
    with pytest.raises(RunDirBusy, match=f"pid {os.getpid()}"):
        second.lock()
    first.unlock()
    second.lock()  # released: free again
    second.unlock()


def test_the_lock_of_a_dead_process_is_not_stale(tmp_path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from longicl.rundir import RunDir; RunDir({str(out)!r}).lock(); print('ok', flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert holder.stdout.readline().strip() == "ok"
    with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"):
        RunDir(out).lock()
    holder.kill()
    holder.wait()
    assert (out / ".lock").read_text().strip() == str(holder.pid)  # the file stays; its lock went
    rundir = RunDir(out)
    rundir.lock()
    rundir.unlock()


def test_two_runs_on_one_out_dir_the_second_exits_2_the_first_completes(tmp_path, gold_answers) -> None:
    out = tmp_path / "out"
    limit = 6
    argv = [*RUN[:-1], f"limit={limit}", "engine.concurrency=1", f"out_dir={out}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    release = threading.Event()

    def held(body: dict) -> str:  # the first run's second request waits until the second run is done
        if len(server.requests) >= 2:
            release.wait(300)
        return gold_answers(body)

    with FakeServer(held) as server:
        argv.append(f"engine.base_url={server.url}")
        command = [sys.executable, str(ROOT / "main.py"), *argv]
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            records = out / "records" / "openseek-5.jsonl"
            deadline = time.monotonic() + 300
            while not (records.is_file() and records.read_text()):  # the first run is writing
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.05)
            second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        finally:
            release.set()
        first_out, first_err = first.communicate(timeout=300)
        queries = Counter(body["messages"][-1]["content"][-300:] for body in server.requests)
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and "Traceback" not in second.stderr
    assert first.returncode == 0, first_err
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert sorted(Counter(r["sample_id"] for r in rows).values()) == [1] * limit
    assert len(queries) == limit and set(queries.values()) == {1}  # every sample asked once


# ------------------------------------------------------------------------------------------------
# no sample stops a run
# ------------------------------------------------------------------------------------------------
DEEP_SUM = "def relu(x):\n    return " + "+".join(["x"] * 100_000) + "\n"
DEEP_UNARY = "def relu(x):\n    return " + "-" * 100_000 + "x\n"
HUGE = "import triton\n" + "y = 1\n" * 400_000


@pytest.mark.parametrize("code", [DEEP_SUM, DEEP_UNARY, HUGE, "def relu(x):\n    return (x +\n"])
def test_untrusted_code_never_raises_in_the_parent(code) -> None:
    fenced = f"```python\n{code}```"
    assert parse_module(code) is None or code is HUGE
    extract_code(fenced, wrapper="relu")
    signature_from_source(code)
    parse_signature("Write a wrapper function `relu`.", code)
    if code is not HUGE:
        result = check_candidate(code, "")
        assert result.stage is Stage.PARSE and result.kind == "syntax"


def test_an_exception_in_one_sample_is_recorded_and_the_run_goes_on(
    tmp_path, gold_answers, monkeypatch, capsys
):
    from longicl.annotators import IclAnnotator as Annotator

    read = Annotator.read

    def flaky(self, plan, completion):
        if plan.sample.id == victim:
            raise RuntimeError("a bug in reply handling")
        return read(self, plan, completion)

    monkeypatch.setattr(Annotator, "read", flaky)
    out = tmp_path / "run"
    with FakeServer(gold_answers) as server:
        from conftest import compose

        from longicl.runner import prepare_tasks, settings_from_config
        from longicl.tokens import TokenCounter

        settings = settings_from_config(compose("task=5", "split=dev", "limit=3"))
        victim = prepare_tasks(settings, TokenCounter(None))[0].samples[1].id
        code = main([*RUN, f"engine.base_url={server.url}", f"out_dir={out}"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err and "Traceback" not in captured.out
    rows = {
        r["sample_id"]: r
        for r in map(json.loads, (out / "records" / "openseek-5.jsonl").read_text().splitlines())
    }
    assert len(rows) == 3 and rows[victim]["error"].startswith("RuntimeError: a bug in reply handling")
    assert rows[victim]["prediction"] == ""
    assert all(not r["error"] for sid, r in rows.items() if sid != victim)
    predictions = [json.loads(line) for line in (out / "openseek-5.jsonl").read_text().splitlines()]
    assert [p["prediction"] == "" for p in predictions].count(True) == 1
    log = (out / "logs" / "run.log").read_text()
    assert "Traceback" in log and "a bug in reply handling" in log and victim in log
    assert json.loads((out / "run.json").read_text())["missing_predictions"] == 1


def test_hostile_task8_replies_complete_without_a_traceback(tmp_path) -> None:
    """Truncated, deeply nested and huge modules for task 8, from a server in another process."""
    script = tmp_path / "hostile_server.py"
    script.write_text(
        "import itertools, sys, time\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from fake_server import FakeServer\n"
        f"replies = itertools.cycle([{DEEP_SUM!r}, {DEEP_UNARY!r}, {HUGE[:200_000]!r}, 'import triton\\ndef relu(x):\\n    return (x'])\n"
        "server = FakeServer(lambda body: '```python\\n' + next(replies) + '```', count_tokens=False).start()\n"
        "print(server.url, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = server.stdout.readline().strip()
        done = subprocess.run(
            [sys.executable, str(ROOT / "main.py"), "progress=false", f"data_dir={DATA_DIR}", "task=8"]
            + ["split=test", "limit=4", "kernels.reference=false", "kernels.repair_rounds=1"]
            + [f"engine.base_url={url}", f"out_dir={tmp_path / 'run'}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    finally:
        server.kill()
        server.wait()
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    rows = (tmp_path / "run" / "records" / "openseek-8.jsonl").read_text().splitlines()
    assert len(rows) == 4

"""api_test.py / longicl.apicheck against the fake OpenAI-compatible server (real HTTP, no model)."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_server import PROBE_MARKER, FakeServer, ProbeAnswers

from longicl import apicheck
from longicl.apicheck import (
    APICHECK_MARKER,
    NEEDLE_TEMPLATE,
    build_haystack,
    filler_paragraph,
    split_reasoning,
)
from longicl.engines.local import free_port
from longicl.tokens import TokenCounter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


@pytest.fixture
def probe_server() -> Iterator[FakeServer]:
    with FakeServer(ProbeAnswers(), thinking="field") as server:
        yield server


def _rows(out: str) -> dict[str, str]:
    """check name -> PASS/WARN/FAIL/SKIP, from the printed table."""
    rows = {}
    for line in out.splitlines():
        match = re.match(r"^(.+?)\s{2,}(PASS|WARN|FAIL|SKIP)\s", line)
        if match:
            rows[match.group(1).strip()] = match.group(2)
    return rows


CAPABILITY_ROWS = {
    "logprobs",
    "constrained decoding",
    "chat_template_kwargs",
    "stop sequences",
    "tokenize endpoint",
    "context length",
    "cached tokens",
}


def test_probe_contract_matches_the_fake_server() -> None:
    assert PROBE_MARKER == APICHECK_MARKER
    assert APICHECK_MARKER in apicheck.SYSTEM_PROMPT
    needle = NEEDLE_TEMPLATE.format(passphrase="amber-1234")
    assert re.search(r"The secret passphrase is ([\w-]+)\.", needle).group(1) == "amber-1234"


def test_haystack_is_deterministic_and_sized(counter: TokenCounter) -> None:
    first = build_haystack(counter, 5_000)
    second = build_haystack(counter, 5_000)
    assert first == second
    assert 4_900 <= first.tokens <= 5_300
    at = first.text.index(NEEDLE_TEMPLATE.format(passphrase=first.passphrase))
    assert 0.5 < at / len(first.text) < 0.7  # planted at ~60 % depth
    random.seed(0)
    untouched = random.getstate()
    three, four = filler_paragraph(random.Random(3)), filler_paragraph(random.Random(4))
    assert random.getstate() == untouched  # only the given rng is drawn from, so its seed decides the text
    assert three != four and three.count(".") == 8 and three.endswith(".")


@pytest.mark.parametrize(
    ("content", "field", "reasoning", "answer"),
    [
        ("42", None, "", "42"),
        ("<think>\nadd them\n</think>\n\n42", None, "add them", "42"),
        ("add them\n</think>\n\n42", None, "add them", "42"),
        ("42", "add them", "add them", "42"),
        ("<think>\n\n</think>\n\n42", None, "", "42"),
    ],
)
def test_split_reasoning(content: str, field: str | None, reasoning: str, answer: str) -> None:
    assert split_reasoning(content, field) == (reasoning, answer)


def test_all_checks_pass_against_the_fake_server(probe_server: FakeServer, capsys) -> None:
    code = apicheck.main(["--base-url", probe_server.url, "--concurrency", "4"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = _rows(out)
    assert (
        set(rows)
        == {
            "models",
            "chat, thinking off",
            "chat, thinking on",
            "structured choice",
            "long context",
            "prefix cache",
            "throughput",
        }
        | CAPABILITY_ROWS
    )
    assert set(rows.values()) == {"PASS"}
    assert "PASS: all 7 checks passed" in out and "degraded" not in out
    bodies = probe_server.requests
    structured = [b for b in bodies if b.get("structured_outputs") == {"choice": ["positive", "negative"]}]
    # asked as the run's label requests are: a choice constraint, top logprobs, the template's stop
    assert len(structured) == 1
    assert structured[0]["logprobs"] is True and structured[0]["top_logprobs"] == 5
    assert structured[0]["stop"] == ["\n\nInput:"] and "response_format" not in structured[0]
    assert {b["chat_template_kwargs"]["enable_thinking"] for b in bodies} == {True, False}
    long_prompt = max(bodies, key=lambda b: len(b["messages"][-1]["content"]))
    assert 95_000 <= TokenCounter().count(long_prompt["messages"][-1]["content"]) <= 101_000
    assert sum(1 for b in bodies if b.get("ignore_eos")) == 4


def test_inline_thinking_passes_too(capsys) -> None:
    with FakeServer(ProbeAnswers(), thinking="inline", count_tokens=False) as server:
        code = apicheck.main(["--base-url", server.url, "--quick"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "inline <think>" in out


def test_quick_skips_the_heavy_probes(probe_server: FakeServer, capsys) -> None:
    code = apicheck.main(["--base-url", probe_server.url, "--quick"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = _rows(out)
    assert rows["long context"] == rows["prefix cache"] == rows["throughput"] == "SKIP"
    assert rows["models"] == rows["structured choice"] == "PASS"
    assert len(probe_server.requests) == 3  # two chats and one structured request


def test_a_server_that_cannot_think_warns_and_fails_when_strict(capsys) -> None:
    with FakeServer(ProbeAnswers(), count_tokens=False) as server:  # thinking="none": never reasons
        code = apicheck.main(["--base-url", server.url, "--quick"])
        out = capsys.readouterr().out
        assert code == 0 and _rows(out)["chat, thinking on"] == "WARN"
        assert "no reasoning came back" in out and "1 with warnings" in out
        code = apicheck.main(["--base-url", server.url, "--quick", "--strict"])
    assert code == 1
    assert _rows(capsys.readouterr().out)["chat, thinking on"] == "FAIL"


def test_an_empty_answer_fails(capsys) -> None:
    with FakeServer(lambda body: "", count_tokens=False) as server:
        code = apicheck.main(["--base-url", server.url, "--quick"])
    rows = _rows(capsys.readouterr().out)
    assert code == 1 and rows["chat, thinking off"] == rows["chat, thinking on"] == "FAIL"


def test_short_context_server_fails_the_length_check(capsys) -> None:
    with FakeServer(ProbeAnswers(), thinking="field", max_model_len=32768, count_tokens=False) as server:
        code = apicheck.main(["--base-url", server.url, "--quick"])
        out = capsys.readouterr().out
        assert code == 1
        assert "max_model_len 32,768 < 131,072" in out
        assert _rows(out)["chat, thinking off"] == "PASS"  # the model is served; the rest still runs
        assert apicheck.main(["--base-url", server.url, "--quick", "--min-model-len", "32768"]) == 0


def test_unknown_model_fails_every_check(probe_server: FakeServer, capsys) -> None:
    code = apicheck.main(["--base-url", probe_server.url, "--quick", "--model", "Nope-1B"])
    out = capsys.readouterr().out
    assert code == 1
    rows = _rows(out)
    assert rows["models"] == rows["chat, thinking off"] == "FAIL"
    assert probe_server.requests == []


def test_prefix_cache_by_latency_when_cached_tokens_are_not_reported(capsys) -> None:
    cfg = dict(thinking="field", report_cached_tokens=False)
    with FakeServer(ProbeAnswers(), prefill_s_per_1k=0.02, **cfg) as server:
        checker = apicheck.ApiChecker(apicheck.ApiCheckConfig(base_url=server.url, prefix_tokens=20_000))
        checker.check_models()
        result = checker.check_prefix_cache()
        checker.close()
    assert result.status == "PASS", result.detail
    assert result.data["cached"] is None and result.data["ratio"] < 0.5
    with FakeServer(ProbeAnswers(), latency_s=0.3, count_tokens=False, **cfg) as server:
        checker = apicheck.ApiChecker(apicheck.ApiCheckConfig(base_url=server.url, prefix_tokens=5_000))
        checker.check_models()
        result = checker.check_prefix_cache()
        checker.close()
    assert result.status == "FAIL", result.detail  # same latency twice and no cached_tokens: no evidence


def test_script_runs_quick_against_the_fake_server(probe_server: FakeServer) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "api_test.py"), "--base-url", probe_server.url, "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS: all 4 checks passed" in proc.stdout


def test_closed_port_exits_2_with_one_line() -> None:
    port = free_port()  # bound then released: nothing listens there
    proc = subprocess.run(
        [sys.executable, str(ROOT / "api_test.py"), "--base-url", f"http://127.0.0.1:{port}/v1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: no server answers at") and "Traceback" not in proc.stderr


def test_llama_cpp_python_degrades_and_the_capability_table_says_how(capsys) -> None:
    """The llama-cpp-python-like fake: the run's capability record, learnt as the run learns it."""
    with FakeServer(ProbeAnswers(), llama_cpp=True, count_tokens=False) as server:
        code = apicheck.main(["--base-url", server.url, "--quick"])
        captured = capsys.readouterr()
        bodies = list(server.requests)
        strict = apicheck.main(["--base-url", server.url, "--quick", "--strict"])
        strict_out = capsys.readouterr().out
    out = captured.out
    assert code == 0, out + captured.err
    rows = _rows(out)
    assert rows["models"] == "WARN" and "(llama-cpp-python): the server reports no context length" in out
    assert rows["chat, thinking off"] == "PASS" and rows["chat, thinking on"] == "WARN"
    assert rows["structured choice"] == "PASS"  # through response_format, the JSON string unwrapped
    assert "answer 'positive' (response_format json_object with a schema)" in out
    assert {name: rows[name] for name in CAPABILITY_ROWS} == {
        "logprobs": "WARN",
        "constrained decoding": "PASS",
        "chat_template_kwargs": "WARN",
        "stop sequences": "PASS",
        "tokenize endpoint": "PASS",
        "context length": "WARN",
        "cached tokens": "WARN",
    }
    assert "not supported, degraded: logprobs unavailable: label scores off" in out
    assert "not supported, degraded: chat_template_kwargs unavailable: thinking switch ignored" in out
    assert "not supported, degraded: cached_tokens unavailable: prefix-cache hits not reported" in out
    assert "degraded: a run against this server goes on without logprobs, chat_template_kwargs" in out
    assert "PASS: all 4 checks passed (2 with warnings: models, chat, thinking on)" in out
    # the refused logprobs once, then the same request without them: learnt, not retried as is
    assert len(bodies) == 4
    assert bodies[2]["logprobs"] is True and "logprobs" not in bodies[3]
    assert bodies[3]["response_format"] == {
        "type": "json_object",
        "schema": {"type": "string", "enum": ["positive", "negative"]},
    }
    assert bodies[3]["stop"] == ["\n\nInput:"]
    assert not any("chat_template_kwargs" in b or "structured_outputs" in b for b in bodies)
    # --strict fails the checks' warnings, never the capability table's degradations
    assert strict == 1
    strict_rows = _rows(strict_out)
    assert strict_rows["models"] == strict_rows["chat, thinking on"] == "FAIL"
    assert strict_rows["logprobs"] == "WARN" and strict_rows["structured choice"] == "PASS"


def test_capabilities_are_not_probed_when_the_model_is_not_served(probe_server: FakeServer, capsys) -> None:
    assert apicheck.main(["--base-url", probe_server.url, "--quick", "--model", "Nope-1B"]) == 1
    rows = _rows(capsys.readouterr().out)
    assert {rows[name] for name in CAPABILITY_ROWS} == {"SKIP"}


def test_the_api_key_is_never_printed(capsys) -> None:
    key = "sk-longicl-test-0123456789abcdef"
    with FakeServer(ProbeAnswers(), llama_cpp=True, count_tokens=False) as server:
        code = apicheck.main(["--base-url", server.url, "--quick", "--api-key", key])
    captured = capsys.readouterr()
    assert code == 0
    assert key not in captured.out + captured.err


def test_the_tokenize_row_asks_the_route_model_tokenizer_server_uses(monkeypatch, capsys) -> None:
    with FakeServer(ProbeAnswers(), count_tokens=False) as server:
        assert apicheck.main(["--base-url", server.url, "--quick"]) == 0
        assert server.tokenize_calls == 1
        out = capsys.readouterr().out
        assert _rows(out)["tokenize endpoint"] == "PASS" and "/tokenize (vllm shape)" in out
        import longicl.tokens

        monkeypatch.setattr(longicl.tokens, "SERVER_TOKENIZE", (longicl.tokens.SERVER_TOKENIZE[2],))
        assert apicheck.main(["--base-url", server.url, "--quick"]) == 0  # degraded, not failed
    out = capsys.readouterr().out
    assert _rows(out)["tokenize endpoint"] == "WARN"
    assert "not supported, degraded: no tokenize route answers: model.tokenizer=server unavailable" in out


def test_server_text_reaches_the_terminal_inert(capsys) -> None:
    hostile = "\x1b]0;TITLE\x07\x1b[31mRED\x9b2J\x00"
    with FakeServer(ProbeAnswers(), thinking="field", model=hostile, count_tokens=False) as server:
        apicheck.main(["--base-url", server.url, "--quick"])
        apicheck.main(["--base-url", server.url, "--quick", "--model", hostile + "-missing"])
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "RED" in printed and "\\x1b]0;TITLE\\x07" in printed  # shown, as visible escapes
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", printed), repr(printed)


def test_one_line_messages_carry_no_terminal_controls() -> None:
    from longicl.errors import inert, one_line

    assert (
        one_line("\x1b]52;c;ZWNobw==\x07\x1b[2Kfake: all good")
        == "\\x1b]52;c;ZWNobw==\\x07\\x1b[2Kfake: all good"
    )
    assert inert("table\n\tcell \x85 \u202e") == "table\n\tcell \\x85 \u202e"

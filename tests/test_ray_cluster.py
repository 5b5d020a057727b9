"""engine=ray on a real multi-node Ray cluster: a head and two worker nodes, each its own raylet
on this machine (``ray.cluster_utils.Cluster``). A worker node is removed while the run goes on;
the run completes and every sample is answered exactly once.

The run is ``python main.py`` in its own process, joining the cluster through ``RAY_ADDRESS`` as
docs/serving.md shows. The head has no CPU for work (as a cluster's head often is), so the
stream's queue, its read task and its HTTP actors live on the two workers, and the removed one
takes some of them (and the rows they hold) with it. Small on purpose (one CPU a worker, a dozen
samples): it proves that the streams survive a lost node (rows lost with it come back as lost and
are asked again), not throughput. Every wait is bounded, and the cluster is always shut down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT
from fake_server import FakeServer, KnownAnswers

ray = pytest.importorskip("ray", reason="engine=ray needs the [ray] extra: pip install -e '.[ray]'")
pytest.importorskip("aiohttp", reason="engine=ray needs the [ray] extra: pip install -e '.[ray]'")

from test_declared_tasks import gold_policy, mood_task  # noqa: E402

pytestmark = pytest.mark.ray
SAMPLES = 12
MEMORY = {"object_store_memory": 80 * 1024**2}
#: the whole run, from the cluster's start (a bound, not a timing: the test fails, never hangs)
RUN_S = 240


def _records(path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def test_a_worker_node_removed_mid_run_and_every_sample_answered_once(tmp_path, monkeypatch):
    import ray._private.utils
    from ray.cluster_utils import Cluster

    # A test cluster writes its address to /tmp/ray/ray_current_cluster, which outlives it and
    # sends every later ray.init() without an address (other tests, other users) to a dead one.
    monkeypatch.setattr(ray._private.utils, "write_ray_address", lambda *args, **kwargs: None)
    task_file = mood_task(tmp_path, unlabelled=SAMPLES)
    out = tmp_path / "out"
    records = out / "records" / "tweet-mood.jsonl"
    removed = threading.Event()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **MEMORY}
    )
    try:
        workers = [cluster.add_node(num_cpus=1, **MEMORY) for _ in range(2)]
        cluster.wait_for_nodes(timeout=120)
        policy = gold_policy(task_file)
        assert isinstance(policy, KnownAnswers)
        with FakeServer(policy, latency_s=0.3) as server:
            command = [
                sys.executable,
                str(ROOT / "main.py"),
                "progress=false",
                f"task={task_file}",
                "split=test",
                "engine=ray",
                "engine.concurrency=2",
                "engine.timeout=5",
                "engine.ray.reply_grace=15",
                "engine.max_retries=6",
                "engine.backoff_initial=0.05",
                "engine.backoff_max=0.5",
                "engine.ray.actors=2",
                "engine.ray.rows_per_actor=2",
                "engine.ray.requests_per_row=1",
                f"engine.base_url={server.url}",
                f"out_dir={out}",
            ]
            env = {**os.environ, "RAY_ADDRESS": cluster.address}
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )

            def remove_a_worker() -> None:
                deadline = time.monotonic() + RUN_S
                while _records(records) < 3 and process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                if process.poll() is None and _records(records) < SAMPLES:
                    cluster.remove_node(workers[0])
                    removed.set()

            remover = threading.Thread(target=remove_a_worker, daemon=True)
            remover.start()
            try:
                _, stderr = process.communicate(timeout=RUN_S)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate(timeout=30)
                pytest.fail(
                    f"the run did not end within {RUN_S} s after the cluster started:\n{stderr[-3000:]}"
                )
            finally:
                if process.poll() is None:  # the test was stopped: the run never outlives it
                    process.kill()
                    process.wait(30)
            remover.join(30)
        assert removed.is_set(), "the run ended before a worker node could be removed"
        assert process.returncode == 0, stderr[-3000:]
        assert len(cluster.list_all_nodes()) == 2
        lines = [json.loads(line) for line in records.read_text().splitlines()]
        assert len(lines) == SAMPLES == len({r["sample_id"] for r in lines})  # one record each
        assert all(not r.get("error") and not r.get("unanswered") for r in lines)
        assert sum(policy.asked.values()) >= SAMPLES
        predictions = [json.loads(line) for line in (out / "tweet-mood.jsonl").read_text().splitlines()]
        assert len(predictions) == SAMPLES == len({p["tweet_id"] for p in predictions})
        assert {p["prediction"] for p in predictions} == {"fine"}
        run_json = json.loads((out / "run.json").read_text())
        assert run_json["missing_predictions"] == 0
    finally:
        cluster.shutdown()

"""engine=ray on a real multi-node Ray cluster: a head and two worker nodes, each its own raylet
on this machine (``ray.cluster_utils.Cluster``). A worker node is removed while the run goes on;
the run completes and every sample is answered exactly once.

Small on purpose (one CPU a node, a dozen samples): it proves that the streams survive a lost
node (rows lost with it come back as lost and are asked again), not throughput.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import compose
from fake_server import FakeServer

ray = pytest.importorskip("ray", reason="engine=ray needs the [ray] extra: pip install -e '.[ray]'")
pytest.importorskip("aiohttp", reason="engine=ray needs the [ray] extra: pip install -e '.[ray]'")

from longicl.runner import run  # noqa: E402

pytestmark = pytest.mark.ray
SAMPLES = 12
NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}


def _records(path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.mark.skip(
    reason="unfinished (issue 22): after the worker node is removed the run did not end within 10 min on "
    "the 2-core machine; the first version failed with NoServerLeft (lost rows counted against the server), "
    "since fixed (lost rows do not count; a stream that loses a row is abandoned), not yet seen to pass"
)
def test_a_worker_node_removed_mid_run_and_every_sample_answered_once(tmp_path, gold_answers):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    workers = [cluster.add_node(**NODE) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    removed = threading.Event()
    records = tmp_path / "records" / "openseek-5.jsonl"
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 3

        def remove_a_worker() -> None:
            deadline = time.monotonic() + 240
            while _records(records) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            cluster.remove_node(workers[0])
            removed.set()

        with FakeServer(gold_answers, latency_s=0.2) as server:
            killer = threading.Thread(target=remove_a_worker, daemon=True)
            killer.start()
            result = run(
                compose(
                    "task=5",
                    "split=dev",
                    f"limit={SAMPLES}",
                    "engine=ray",
                    "engine.concurrency=2",
                    "engine.timeout=5",
                    "engine.ray.reply_grace=5",
                    "engine.max_retries=6",
                    "engine.backoff_initial=0.05",
                    "engine.backoff_max=0.5",
                    "engine.ray.actors=2",
                    "engine.ray.rows_per_actor=2",
                    f"engine.base_url={server.url}",
                    f"out_dir={tmp_path}",
                )
            )
            killer.join(60)
        assert removed.is_set()
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        assert result.missing == 0
        lines = [json.loads(line) for line in records.read_text().splitlines()]
        assert len(lines) == SAMPLES == len({r["sample_id"] for r in lines})  # each sample once
        predictions = (tmp_path / "openseek-5.jsonl").read_text().splitlines()
        ids = [json.loads(line)["test_sample_id"] for line in predictions]
        assert len(ids) == SAMPLES == len(set(ids))
        run_json = json.loads((tmp_path / "run.json").read_text())
        assert run_json["tasks"]["openseek-5"]["accuracy"] == 1.0
    finally:
        ray.shutdown()
        cluster.shutdown()

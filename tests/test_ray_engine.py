"""engine=ray: the same requests, records and predictions as engine=openai, through Ray Data.

Runs a local Ray (2 CPUs, a small object store, no dashboard) once for the module. The vLLM mode
needs GPUs: only its processor config is built and checked here; it is never run.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, compose, sigint_default
from fake_server import FakeServer
from test_multiserver import DyingServer

ray = pytest.importorskip("ray", reason="engine=ray needs the [ray] extra: pip install -e '.[ray]'")
pytest.importorskip("aiohttp", reason="engine=ray needs the [ray] extra: pip install -e '.[ray]'")

from longicl.engines.local import free_port  # noqa: E402
from longicl.engines.ray_engine import RayEngine  # noqa: E402
from longicl.runner import run  # noqa: E402

pytestmark = pytest.mark.ray

FAST = [
    "engine.backoff_initial=0.05",
    "engine.backoff_max=0.5",
    "engine.ray.actors=1",
    "engine.ray.rows_per_actor=8",
]
#: record fields that say how a request travelled, not what it asked or answered
TRANSPORT = ("latency_s", "server", "attempts", "notes")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=96 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def _records(out: Path) -> dict[str, dict]:
    records = {}
    for path in sorted((out / "records").glob("openseek-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            for request in record["requests"]:
                for key in TRANSPORT:
                    request.pop(key, None)
                # Which request of a task reaches the server first, and so prefills its static
                # block, is a race under any engine: the cached count is compared as a share below.
                (request.get("usage") or {}).pop("prompt_tokens_details", None)
            records[f"{record['task']}/{record['sample_id']}"] = record
    return records


def _predictions(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.glob("openseek-*.jsonl"))}


def test_same_requests_predictions_and_records_as_the_openai_engine(tmp_path, gold_answers):
    common = ["task=all", "split=dev", "limit=2", "kernels.dev_gold=false"]
    # A server each: the fake server counts a static block as cached once it has seen it.
    with FakeServer(gold_answers) as server:
        native = run(compose(*common, f"engine.base_url={server.url}", f"out_dir={tmp_path / 'native'}"))
        native_bodies = sorted(json.dumps(b, sort_keys=True) for b in server.requests)
    with FakeServer(gold_answers) as server:
        rayed = run(
            compose(
                *common, "engine=ray", *FAST, f"engine.base_url={server.url}", f"out_dir={tmp_path / 'ray'}"
            )
        )
        ray_bodies = sorted(json.dumps(b, sort_keys=True) for b in server.requests)
    assert native.missing == rayed.missing == 0
    assert ray_bodies == native_bodies  # every body, byte for byte once keys are sorted
    assert _predictions(tmp_path / "ray") == _predictions(tmp_path / "native")
    assert _records(tmp_path / "ray") == _records(tmp_path / "native")
    run_json = json.loads((tmp_path / "ray" / "run.json").read_text())
    executions = run_json["engine"]["executions"]
    assert run_json["engine"]["name"] == "ray" and len(executions) == 1  # one stream for the server
    assert executions[0]["rows"] == len(ray_bodies)
    for task_id in range(1, 8):
        assert run_json["tasks"][f"openseek-{task_id}"]["accuracy"] == 1.0
    cached = [
        q["usage"]["prompt_tokens_details"]["cached_tokens"]
        for path in (tmp_path / "ray" / "records").glob("openseek-*.jsonl")
        for line in path.read_text().splitlines()
        for q in json.loads(line)["requests"]
    ]
    assert sum(cached) > 0  # the static blocks were served from the (fake) prefix cache
    # the engine's Ray Data settings went into its own datasets, not the process's context
    context = ray.data.DataContext.get_current()
    assert context.target_max_block_size != 1 and context.max_errored_blocks != -1


def test_each_task_on_one_server_and_a_dying_server_hands_over(tmp_path, gold_answers):
    dying = DyingServer(gold_answers, die_after=5)
    with dying, FakeServer(gold_answers) as healthy:
        result = run(
            compose(
                "task=[1,2,3,5]",
                "split=dev",
                "limit=3",
                "engine=ray",
                *FAST,
                f"engine.base_url=[{dying.url},{healthy.url}]",
                f"out_dir={tmp_path}",
            )
        )
        served = {
            url: Counter(b["messages"][0]["content"] for b in x.requests)
            for url, x in ((dying.url, dying), (healthy.url, healthy))
        }
    assert dying.dead.is_set()
    assert result.missing == 0  # the run completes
    assert served[dying.url] and served[healthy.url]
    run_json = json.loads((tmp_path / "run.json").read_text())
    pool = run_json["engine"]["pool"]
    assert not pool["servers"][dying.url]["up"] and pool["moves"]
    moved = {m["task"] for m in pool["moves"]}
    for task_id in (1, 2, 3, 5):
        name = f"openseek-{task_id}"
        assert run_json["tasks"][name]["accuracy"] == 1.0, name
        if name not in moved:  # prefix affinity: a task that did not move stayed on one server
            assert len(run_json["tasks"][name]["servers"]) == 1, name
    for path in (tmp_path).glob("openseek-*.jsonl"):
        ids = [json.loads(line)["test_sample_id"] for line in path.read_text().splitlines()]
        assert len(ids) == 3 == len(set(ids))  # every sample exactly once


def test_a_failed_row_is_recorded_and_asked_again_on_resume(tmp_path, gold_answers):
    args = [
        "task=2",
        "split=dev",
        "limit=3",
        "engine=ray",
        *FAST,
        "engine.max_retries=0",
        f"out_dir={tmp_path}",
    ]
    with FakeServer(gold_answers) as server:
        url = server.url
        down = run(
            compose(*args, f"engine.base_url={url}", "engine.ray.actors=1", "engine.connect_timeout=0.5")
        )
        assert down.missing == 0
        # Every request now answers 500: each row fails, is recorded with its error, and the run ends.
        server.faults.rate, server.faults.kinds = 1.0, ("http500",)
        failed = run(compose(*args, "overwrite=true", f"engine.base_url={url}"))
        errors = [json.loads(line)["error"] for line in (tmp_path / "records" / "openseek-2.jsonl").open()]
        assert failed.missing == 3 and all(errors)
        server.faults.rate = 0.0
        server.requests.clear()
        resumed = run(compose(*args, f"engine.base_url={url}"))
        assert resumed.missing == 0 and len(server.requests) == 3  # only the failed ones, once each
        server.requests.clear()
        again = run(compose(*args, f"engine.base_url={url}"))
        assert again.missing == 0 and server.requests == []  # finished samples are never asked again


def test_an_interrupted_run_resumes_without_asking_finished_samples_again(tmp_path, gold_answers):
    """main.py with engine=ray in its own process (its own local Ray), stopped by SIGINT mid-run,
    then the same command again: the finished samples are kept and never sent again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import DATA_DIR

    out = tmp_path / "out"
    with FakeServer(gold_answers, latency_s=0.3) as server:
        command = [
            sys.executable,
            str(ROOT / "main.py"),
            "progress=false",
            f"data_dir={DATA_DIR}",
            "task=[4,5]",
            "split=dev",
            "limit=10",
            "engine=ray",
            *FAST,
            "engine.concurrency=2",
            "+engine.ray.init.num_cpus=2",
            f"engine.base_url={server.url}",
            f"out_dir={out}",
        ]
        env = {**os.environ, "RAY_ADDRESS": ""}  # its own Ray, not this test process's
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=sigint_default,
        )
        deadline = time.monotonic() + 180
        while _lines(out) < 4:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no records within 180 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, stderr
        assert "interrupted: finished samples are kept; run the same command again to resume" in stderr
        finished = _lines(out)
        assert 4 <= finished < 20
        server.requests.clear()
        rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert len(server.requests) == 20 - finished  # only the samples without a record
    run_json = json.loads((out / "run.json").read_text())
    for name in ("openseek-4", "openseek-5"):
        assert run_json["tasks"][name]["accuracy"] == 1.0 and run_json["tasks"][name]["n"] == 10


def _lines(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (out / "records").glob("openseek-*.jsonl"))


def test_vllm_mode_processor_config_carries_the_serving_settings():
    """Built, not run: no GPU and no vLLM here."""
    engine = RayEngine.from_config(
        ray={"mode": "vllm", "vllm": {"llm_config": str(ROOT / "llm_config.yaml"), "replicas": 4}}
    )
    config = engine.processor_config()
    assert type(config).__name__ == "vLLMEngineProcessorConfig"
    kwargs = config.engine_kwargs
    rope = kwargs["hf_overrides"]["rope_parameters"]
    assert rope["rope_type"] == "yarn" and rope["factor"] == 4.0
    assert rope["original_max_position_embeddings"] == 32768
    assert kwargs["max_model_len"] == 131072 and kwargs["enable_prefix_caching"] is True
    assert config.model_source.endswith("Qwen3-4B") and "served_model_name" not in kwargs
    assert config.concurrency == 4 and config.should_continue_on_error is True
    assert engine.model == "Qwen3-4B"
    assert engine.describe()["vllm"]["engine_kwargs"]["max_model_len"] == 131072


class _RecordingQueue:
    def __init__(self) -> None:
        self.items: list = []

    async def put_async(self, item) -> None:
        self.items.append(item)


@pytest.mark.parametrize("mode", ["http", "vllm"])
def test_waiting_requests_travel_in_rows_of_one_static_block(mode):
    """HTTP: up to requests_per_row requests of one static block per Ray Data row, sent together.
    vLLM: a row per request (the engine batches them), the same grouping per block of rows."""
    import asyncio

    from longicl.engines.ray_engine import _Stream

    settings = {"mode": mode, "requests_per_row": 3}
    if mode == "vllm":
        settings["vllm"] = {"llm_config": str(ROOT / "llm_config.yaml")}
    engine = RayEngine.from_config(base_url="http://127.0.0.1:9/v1", ray=settings)
    stream = _Stream("target", _RecordingQueue())
    # eight requests of two static blocks, arriving interleaved
    stream.waiting = [(key, "block-b" if key % 2 else "block-a", f"body-{key}") for key in range(8)]

    async def feed_once() -> None:
        feeder = asyncio.ensure_future(engine.streams.feed(stream))
        stream.wake.set()
        await asyncio.sleep(0.05)
        feeder.cancel()

    asyncio.run(feed_once())
    blocks = stream.queue.items
    keys = [[row["keys"] for row in block] for block in blocks]
    if mode == "http":
        assert keys == [[[0, 2, 4]], [[6]], [[1, 3, 5]], [[7]]]
    else:
        assert keys == [[[0], [2], [4]], [[6]], [[1], [3], [5]], [[7]]]
    for block in blocks:
        for row in block:
            assert row["payload"] == [f"body-{key}" for key in row["keys"]]
    assert stream.rows == 8


def test_a_rows_replies_reach_their_requests_and_a_short_reply_fails_them_all():
    import asyncio

    from longicl.engines.ray_stream import _Stream
    from longicl.engines.ray_stream import resolve as resolve_row

    async def resolve(reply: str) -> list:
        loop = asyncio.get_running_loop()
        stream = _Stream("target", None)
        stream.pending = {key: loop.create_future() for key in (4, 5)}
        resolve_row(stream, [5, 4], reply)
        return [stream.pending[4].result(), stream.pending[5].result()]

    answered = asyncio.run(
        resolve(json.dumps([{"status": 200, "text": "five"}, {"status": 200, "text": "four"}]))
    )
    assert answered == [({"status": 200, "text": "four"}, None), ({"status": 200, "text": "five"}, None)]
    for broken in ("[1]", "not json", "7", json.dumps({"four": 1, "five": 2})):
        outcomes = asyncio.run(resolve(broken))
        assert all(reply is None and why.startswith("unreadable reply") for reply, why in outcomes)


def test_vllm_rows_carry_the_request_and_come_back_as_a_completion():
    """The vLLM mode's pre/postprocess maps, on the row shapes its stages read and write (not run)."""
    from longicl.engines.policy import ANSWER
    from longicl.engines.ray_transports import read_vllm_reply
    from longicl.engines.ray_transports import vllm_reply as _vllm_reply
    from longicl.engines.ray_transports import vllm_row as _vllm_row

    engine = RayEngine.from_config(
        ray={"mode": "vllm", "vllm": {"llm_config": str(ROOT / "llm_config.yaml")}}
    )
    body = json.dumps(
        {"messages": [{"role": "user", "content": "Input: 1\nOutput:"}], "sampling_params": {"max_tokens": 8}}
    )
    assert _vllm_row({"keys": [7], "payload": [body]}) == json.loads(body)
    out = _vllm_reply(
        {
            "keys": [7],
            "generated_text": "fine",
            "finish_reason": "stop",
            "num_input_tokens": 120,
            "num_generated_tokens": 2,
            "metrics": {"num_cached_tokens": 100},
        }
    )
    assert out["keys"] == [7]
    (reply,) = json.loads(out["reply"])
    outcome = read_vllm_reply(reply)
    completion = outcome.completion
    assert outcome.kind == ANSWER and completion.text == "fine" and completion.finish_reason == "stop"
    assert completion.usage == {
        "prompt_tokens": 120,
        "completion_tokens": 2,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    assert engine.model == "Qwen3-4B"
    # an empty reply is a fact for the policy (asked again once, then the model's answer), and an
    # inference error a server error (retried)
    assert read_vllm_reply({**reply, "text": " "}).completion.text == " "
    failed = read_vllm_reply({**reply, "error": "CUDA out of memory"})
    assert failed.kind == "status" and failed.status == 500


def test_an_execution_is_restarted_every_restart_rows_and_no_row_is_lost(tmp_path, gold_answers, monkeypatch):
    """The driver's state per execution grows with its rows: after ray.restart_rows requests a
    fresh execution takes the new ones while the retired one finishes its own, and the retired
    one's queue (an actor, a process of its own) is gone once it has."""
    from ray.util.queue import Queue

    queue_actors = []
    made = Queue.__init__

    def remembered(self, *args, **kwargs):
        made(self, *args, **kwargs)
        queue_actors.append(self.actor)

    monkeypatch.setattr(Queue, "__init__", remembered)
    with FakeServer(gold_answers) as server:
        result = run(
            compose(
                "task=5",
                "split=dev",
                "limit=9",
                "engine=ray",
                *FAST,
                "engine.concurrency=3",
                "engine.ray.restart_rows=3",
                f"engine.base_url={server.url}",
                f"out_dir={tmp_path}",
            )
        )
        sent = len(server.requests)
    assert result.missing == 0 and sent == 9  # nothing lost or asked twice across the restarts
    executions = json.loads((tmp_path / "run.json").read_text())["engine"]["executions"]
    assert len(executions) >= 3 and sum(e["rows"] for e in executions) == sent
    assert all(e["rows"] <= 3 + 2 for e in executions)  # a retired one takes what already waited
    run_json = json.loads((tmp_path / "run.json").read_text())
    assert run_json["tasks"]["openseek-5"]["accuracy"] == 1.0
    assert len(queue_actors) == len(executions)
    for actor in queue_actors:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.qsize.remote(), timeout=30)


def test_no_address_is_ray_address_else_a_new_local_ray_never_a_stale_cluster_file(monkeypatch):
    from longicl.engines.ray_engine import ray_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address(None) == "local"  # not ray.init()'s fallback to /tmp/ray/ray_current_cluster
    assert ray_address("auto") == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_address(None) == "10.0.0.1:6379"
    assert ray_address("ray://head:10001") == "ray://head:10001"


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("http://head:8265", "dashboard"),  # job submission's address, not the cluster's
        ("head:70000", "not host:port"),
        ("head", "not host:port"),
        ("a..b:6379", "no Ray cluster answers"),  # a name that cannot even be encoded
    ],
)
def test_a_cluster_address_that_cannot_be_one_is_refused_in_one_line(address, words):
    from longicl.engines.ray_engine import check_ray_address
    from longicl.errors import UsageError

    check_ray_address("auto", 1)  # Ray finds the cluster itself; nothing to check
    with pytest.raises(UsageError, match=words):
        check_ray_address(address, 1)


def test_a_cluster_address_nothing_answers_at_is_one_line_after_the_servers_are_checked(tmp_path):
    """``ray.init`` retries a head it cannot reach for minutes, and ``ray://`` without Ray Client
    installed was a traceback: both are one line and exit 2. The servers are probed first, so a
    server that is down is named before anything of Ray starts."""
    import subprocess
    import sys

    port = free_port()  # bound then released: nothing listens there
    dead = f"http://127.0.0.1:{port}/v1"
    with FakeServer(lambda body: "Sad") as server:
        cases = [(server.url, a) for a in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}", "head")]
        for url, address in [*cases, (dead, f"127.0.0.1:{port}")]:
            done = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "main.py"),
                    "engine=ray",
                    "task=5",
                    "split=dev",
                    "limit=2",
                    f"engine.base_url={url}",
                    f"engine.ray.address={address}",
                    f"out_dir={tmp_path / 'out'}",
                    "engine.connect_timeout=2",
                    "progress=false",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=tmp_path,
            )
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
            expected = "engine.ray.address=" if url == server.url else "no OpenAI-compatible server answers"
            assert expected in lines[0], lines


class _ListQueue:
    """A stand-in for a stream's Ray queue: what the feeder puts, kept; or every put failing
    (its actor died with its node)."""

    def __init__(self, fails: bool = False) -> None:
        self.items: list = []
        self.fails = fails

    async def put_async(self, item) -> None:
        if self.fails:
            raise RuntimeError("ActorDiedError: the queue's node is gone")
        self.items.append(item)


def _streams_with(queue: _ListQueue, deadline: float):
    import asyncio

    from longicl.engines.ray_stream import Streams, _Stream

    streams = Streams(
        dataset=None,
        queue_items=1,
        requests_per_row=1,
        row_per_request=False,
        reply_deadline=deadline,
        restart_rows=100,
    )
    stream = _Stream("target", queue)
    stream.feeder = asyncio.ensure_future(streams.feed(stream))
    streams.current["target"] = stream
    return streams, stream


def test_a_rows_deadline_counts_from_its_execution_being_up_and_a_lost_row_ends_the_stream():
    """Actors starting slowly are not a lost row: before the first reply a request waits one more
    deadline. Once up, a row not back within the deadline is lost, and its execution is abandoned
    and told to end (its end marker), so that it gives its actors back."""
    import asyncio

    from longicl.engines.ray_stream import _END, resolve

    async def go():
        streams, stream = _streams_with(_ListQueue(), deadline=0.5)

        def first_reply() -> None:  # later than one deadline: the execution was starting
            (rows,) = stream.queue.items
            resolve(stream, rows[0]["keys"], json.dumps([{"status": 200, "text": "ok"}]))

        asyncio.get_running_loop().call_later(0.7, first_reply)
        first = await streams.send("target", "block", "{}")
        second = await streams.send("target", "block", "{}")  # never answered
        await asyncio.sleep(0)  # the end marker goes in
        return streams, stream, first, second

    streams, stream, first, second = asyncio.run(go())
    assert first == ({"status": 200, "text": "ok"}, None)
    assert second == (None, "no reply from the Ray Data stream within 0.5 s")
    assert stream.ended.startswith("abandoned") and "target" not in streams.current
    assert stream.queue.items[-1] == _END
    assert streams.executions == [{"target": "target", "rows": 2, "ended": stream.ended}]


def test_a_stream_whose_queue_died_fails_its_requests_at_once():
    """The feeder's put fails (the queue's actor went with its node): the stream is abandoned and
    its requests come back lost now (the policy asks them again), not after the deadline."""
    import asyncio

    async def go():
        streams, stream = _streams_with(_ListQueue(fails=True), deadline=30)
        return stream, await streams.send("target", "block", "{}")

    stream, (reply, why) = asyncio.run(go())
    assert reply is None and why == stream.ended
    assert why.startswith("abandoned: its queue failed: RuntimeError: ActorDiedError")


def test_a_blocks_replies_are_read_from_the_processors_data_column_without_the_bodies():
    """The driver reads back only the reply fields of each row (never the request bodies that
    travelled with it) and runs the postprocess itself; a vLLM row that failed inside the engine
    still comes back to its requests, as an error."""
    import pyarrow as pa

    from longicl.engines.policy import STATUS
    from longicl.engines.ray_stream import _Stream, replies_of
    from longicl.engines.ray_transports import http_reply, read_vllm_reply, vllm_reply

    read: list[dict] = []

    def postprocess(row: dict) -> dict:
        read.append(row)
        return http_reply(row)

    stream = _Stream("target", None, fields=("keys", "http_response"), postprocess=postprocess)
    rows = [
        {"keys": [3, 1], "payload": ["body-3", "body-1"], "http_response": "[3, 1]"},
        {"keys": [2], "payload": ["body-2"], "http_response": "[2]"},
    ]
    block = pa.Table.from_pylist([{"__data": row} for row in rows])
    assert replies_of(block, stream) == [([3, 1], "[3, 1]"), ([2], "[2]")]
    assert all("payload" not in row for row in read) and len(read) == 2

    fields = ("keys", "generated_text", "finish_reason", "__inference_error__")
    stream = _Stream("target", None, fields=fields, postprocess=vllm_reply)
    failed = {"keys": [9], "payload": ["body-9"], "generated_text": None, "__inference_error__": "OOM"}
    ((keys, reply),) = replies_of(pa.Table.from_pylist([{"__data": failed}]), stream)
    assert keys == [9]
    (entry,) = json.loads(reply)
    outcome = read_vllm_reply(entry)
    assert outcome.kind == STATUS and "OOM" in outcome.message


def test_the_http_stages_sessions_share_one_connection_pool_and_keep_it_open():
    """Ray's HTTP stage opens a session per row: the sessions of one actor share its pool (kept
    alive across rows) and closing a session leaves the pool open for the next row."""
    import asyncio

    from longicl.engines.ray_stream import EnvelopeSession

    async def go():
        first = EnvelopeSession(timeout_s=5, connect_s=5, keepalive_s=2)
        second = EnvelopeSession(timeout_s=5, connect_s=5, keepalive_s=2)
        pool = first.connector
        shared = pool is second.connector
        await first.close()
        await second.close()
        third = EnvelopeSession(timeout_s=5, connect_s=5, keepalive_s=2)
        kept = third.connector is pool and not pool.closed
        await third.close()
        return shared, kept

    assert asyncio.run(go()) == (True, True)


def test_a_reply_naming_rays_own_batch_column_reaches_its_request_as_text():
    """Ray's HTTP stage refuses a response that contains ``__idx_in_batch`` (``in`` on what
    ``json()`` returns: a substring test on our envelope's text), dropping the whole row: one
    model reply quoting that name would stall the row's requests until their deadline. The
    envelope's text never contains the name, and decodes to the reply as the server sent it."""
    import asyncio

    from ray.llm._internal.batch.stages.http_request_stage import HttpRequestUDF

    from longicl.engines.ray_stream import _BATCH_COLUMN, _Envelope

    assert _BATCH_COLUMN == HttpRequestUDF.IDX_IN_BATCH_COLUMN

    hostile = f'{{"choices": [{{"message": {{"content": "Sad {HttpRequestUDF.IDX_IN_BATCH_COLUMN}"}}}}]}}'
    outcomes = [{"status": 200, "text": hostile}, {"status": 200, "text": "\\__idx_in_batch\\"}]
    text = asyncio.run(_Envelope(outcomes).json())
    assert HttpRequestUDF.IDX_IN_BATCH_COLUMN not in text
    assert json.loads(text) == outcomes

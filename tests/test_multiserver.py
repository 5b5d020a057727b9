"""Several servers: each task on one server (prefix affinity), work spread, failover when one dies."""

import asyncio
import importlib.util
import json
import threading
from collections import Counter
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT, compose
from fake_server import FakeServer

from longicl.engines.servers import NoServerLeft, ServerPool
from longicl.runner import run


class DyingServer(FakeServer):
    """Answers ``die_after`` chat requests, then dies: every later request, and every request on
    a kept-alive connection, is dropped, and the listening socket is closed (connections refused).
    """

    def __init__(self, answer, *, die_after: int, **kwargs) -> None:
        super().__init__(answer, **kwargs)
        self.die_after = die_after
        self.dead = threading.Event()
        self.answered = 0
        self._count = threading.Lock()
        fake = self

        class Handler(self.httpd.RequestHandlerClass):
            def do_GET(self) -> None:
                if fake.dead.is_set():
                    return self._drop()
                super().do_GET()

            def do_POST(self) -> None:
                with fake._count:
                    fake.answered += 1
                    alive = fake.answered <= fake.die_after
                if not alive:
                    fake.die()
                if fake.dead.is_set():
                    return self._drop()
                super().do_POST()

        self.httpd.RequestHandlerClass = Handler

    def die(self) -> None:
        if not self.dead.is_set():
            self.dead.set()
            threading.Thread(target=self.stop, daemon=True).start()

    def stop(self) -> None:
        if not getattr(self, "_stopped", False):
            self._stopped = True
            super().stop()


def main(argv: list[str]) -> int:
    """``python main.py <argv>``, in this process."""
    spec = importlib.util.spec_from_file_location("longicl_main_py", ROOT / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _prediction_ids(out: Path) -> dict[str, list[str]]:
    return {
        p.stem: [json.loads(line)["test_sample_id"] for line in p.read_text().splitlines()]
        for p in sorted(out.glob("openseek-*.jsonl"))
    }


# ------------------------------------------------------------------------------------------------
# the pool on its own
# ------------------------------------------------------------------------------------------------
def test_assignment_balances_expected_work_and_keeps_task_order():
    pool = ServerPool(["http://a/v1", "http://b/v1"], concurrency=4)
    lanes = pool.assign({"t1": 30.0, "t2": 30.0, "t3": 40.0, "t4": 10.0, "t5": 10.0})
    assert sorted(sum(pool.work[t] for t in lane) for lane in lanes) == [60.0, 60.0]
    assert all(lane == sorted(lane) for lane in lanes)  # each server runs its tasks in the given order
    assert {pool.route(t).url for t in lanes[0]} == {"http://a/v1"}


def test_a_task_whose_server_is_taken_out_moves_and_stays_together():
    pool = ServerPool(["http://a/v1", "http://b/v1", "http://c/v1"], concurrency=4, say=lambda _: None)
    pool.assign({"t1": 5.0, "t2": 3.0, "t3": 1.0})
    a = pool.route("t1")
    pool.take_out(a, "test")
    moved = pool.route("t1")
    assert moved is not a and moved.up and pool.route("t1") is moved
    assert pool.moves == [{"task": "t1", "from": a.url, "to": moved.url}]
    for server in pool.healthy:
        pool.take_out(server, "test")
    with pytest.raises(NoServerLeft, match="http://a/v1 test"):
        pool.route("t2")


def test_consecutive_connection_failures_take_a_server_out():
    pool = ServerPool(["http://a/v1"], concurrency=1, max_failures_in_row=3)
    server = pool.route("t")

    async def fail(n: int) -> None:
        for _ in range(n):
            await pool.unreachable(server, "connection refused")

    asyncio.run(fail(2))
    pool.answered(server)  # an answer in between resets the count
    asyncio.run(fail(2))
    assert server.up
    asyncio.run(fail(1))
    assert not server.up and "3 requests in a row" in server.reason


# ------------------------------------------------------------------------------------------------
# whole runs over two fake servers
# ------------------------------------------------------------------------------------------------
def test_each_task_goes_to_one_server_and_both_servers_work(tmp_path, gold_answers):
    with FakeServer(gold_answers) as one, FakeServer(gold_answers) as two:
        result = run(
            compose(
                "task=all",
                "split=dev",
                "limit=4",
                "kernels.dev_gold=false",
                f"engine.base_url=[{one.url},{two.url}]",
                f"out_dir={tmp_path}",
            )
        )
        # A task is known to the server by its system message (definition and answer format).
        served = {
            url: Counter(b["messages"][0]["content"] for b in x.requests)
            for url, x in ((one.url, one), (two.url, two))
        }
    assert result.missing == 0
    assert served[one.url] and served[two.url]  # both servers got work
    assert not set(served[one.url]) & set(served[two.url])  # no task on both
    assert len(set(served[one.url]) | set(served[two.url])) == 8
    run_json = json.loads((tmp_path / "run.json").read_text())
    for task_id in range(1, 9):
        task = run_json["tasks"][f"openseek-{task_id}"]
        assert len(task["servers"]) == 1 and sum(task["servers"].values()) == task["requests"]
        if task_id <= 7:
            assert task["accuracy"] == 1.0
    pool = run_json["engine"]["pool"]
    assert all(s["up"] for s in pool["servers"].values()) and pool["moves"] == []


def test_a_server_dying_mid_run_hands_its_tasks_to_the_other(tmp_path, gold_answers):
    dying = DyingServer(gold_answers, die_after=6)
    with dying, FakeServer(gold_answers) as healthy:
        result = run(
            compose(
                "task=[1,2,3,4,5,6,7]",
                "split=dev",
                "limit=4",
                "engine.concurrency=2",
                "engine.backoff_initial=0.05",
                "engine.backoff_max=0.5",
                f"engine.base_url=[{dying.url},{healthy.url}]",
                f"out_dir={tmp_path}",
            )
        )
    assert dying.dead.is_set()
    assert result.missing == 0
    run_json = json.loads((tmp_path / "run.json").read_text())
    for task_id in range(1, 8):
        assert run_json["tasks"][f"openseek-{task_id}"]["accuracy"] == 1.0, task_id
    ids = _prediction_ids(tmp_path)
    assert sorted(ids) == [f"openseek-{i}" for i in range(1, 8)]
    assert all(len(v) == 4 and len(set(v)) == 4 for v in ids.values())  # every sample exactly once
    pool = run_json["engine"]["pool"]
    assert not pool["servers"][dying.url]["up"] and pool["servers"][healthy.url]["up"]
    assert pool["moves"] and {m["to"] for m in pool["moves"]} == {healthy.url}
    moved = {m["task"] for m in pool["moves"]}
    for name in moved:  # the moved tasks were finished by the healthy server
        assert run_json["tasks"][name]["servers"].get(healthy.url)


def test_when_every_server_is_gone_the_run_stops_keeps_its_records_and_exits_3(
    tmp_path, gold_answers, capsys
):
    args = ["progress=false", f"data_dir={DATA_DIR}", "task=5", "split=dev", "limit=8"]
    args += ["engine.concurrency=1", "engine.backoff_initial=0.05", f"out_dir={tmp_path}"]
    with DyingServer(gold_answers, die_after=3) as dying:
        code = main([*args, f"engine.base_url={dying.url}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len(err) == 1 and err[0].startswith(f"error: no server left: {dying.url}"), err
    assert "run the same command again to resume" in err[0]
    records = (tmp_path / "records" / "openseek-5.jsonl").read_text().splitlines()
    assert len(records) == 3 and not (tmp_path / "openseek-5.jsonl").exists()
    with FakeServer(gold_answers) as server:  # a new server: the run resumes where it stopped
        assert main([*args, f"engine.base_url={server.url}"]) == 0
        assert len(server.requests) == 5
    assert len(_prediction_ids(tmp_path)["openseek-5"]) == 8


def test_a_server_down_at_start_is_left_out_with_a_warning(tmp_path, gold_answers, capsys):
    with FakeServer(gold_answers) as server:
        code = main(
            ["progress=false", f"data_dir={DATA_DIR}", "task=5", "split=dev", "limit=2"]
            + [f"engine.base_url=[http://127.0.0.1:9/v1,{server.url}]", f"out_dir={tmp_path}"]
        )
        assert len(server.requests) == 2
    assert code == 0
    assert (
        "warning: server http://127.0.0.1:9/v1 taken out (did not answer at start" in capsys.readouterr().err
    )
    pool = json.loads((tmp_path / "run.json").read_text())["engine"]["pool"]
    assert not pool["servers"]["http://127.0.0.1:9/v1"]["up"]

"""The review round trip against a real Label Studio (``make test-integration``, marker ``integration``).

Label Studio is heavy (Django and ~100 packages), so it lives in its own venv and this test is
left out of ``make test``: it runs when ``LABEL_STUDIO_BIN`` names its ``label-studio`` command
(``make test-integration`` installs one into ``.venv-label-studio``). It starts Label Studio on
127.0.0.1 with SQLite in a temporary directory, creates a project with the exported labelling
config, imports the exported tasks, posts an annotation through the API, exports the project as
JSON and imports that export back into the run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import httpx
import pytest
from conftest import compose
from fake_server import FakeServer, NoisyAnswers

from longicl.engines.local import free_port
from longicl.review.cli import main
from longicl.rundir import RunDir
from longicl.runner import run
from longicl.tasks import TASKS

pytestmark = pytest.mark.integration
TOKEN = "longicl-review-test-token"


@pytest.fixture
def label_studio(tmp_path):
    binary = os.environ.get("LABEL_STUDIO_BIN") or shutil.which("label-studio")
    if not binary:
        pytest.skip("no label-studio command: set LABEL_STUDIO_BIN (make test-integration installs one)")
    port = free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "ls-data"),
        "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    }
    log = (tmp_path / "label-studio.log").open("w")
    process = subprocess.Popen(
        [
            binary, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
            "--username", "reviewer@example.com", "--password", "review-pass-1", "--user-token", TOKEN,
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"label-studio exited: {(tmp_path / 'label-studio.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("label-studio did not answer /health within 300 s")
        yield httpx.Client(base_url=url, headers={"Authorization": f"Token {TOKEN}"}, timeout=60)
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=60)
        log.close()


def test_round_trip_through_a_real_label_studio(label_studio, tmp_path, gold_answers):
    labels = {t.id: t.labels for t in TASKS.values() if t.labels}
    run_dir = tmp_path / "run"
    with FakeServer(NoisyAnswers(gold_answers, labels, seed=1)) as server:
        run(compose("task=5", "split=dev", "limit=6", f"engine.base_url={server.url}", f"out_dir={run_dir}"))
    exported = tmp_path / "review.json"
    assert main(["export", str(run_dir), "--format", "label-studio", "-o", str(exported)]) == 0
    client = label_studio
    project = client.post(
        "/api/projects",
        json={"title": "longicl openseek-5", "label_config": (tmp_path / "review.config.xml").read_text()},
    )
    assert project.status_code == 201, project.text
    project_id = project.json()["id"]
    imported = client.post(f"/api/projects/{project_id}/import", json=json.loads(exported.read_text()))
    assert imported.status_code == 201, imported.text
    tasks = client.get("/api/tasks", params={"project": project_id}).json()
    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
    assert len(tasks) == 6
    target = tasks[0]
    before = RunDir(run_dir).all_records("openseek-5")[target["data"]["sample_id"]]
    flipped = "Not sad" if before["prediction"] == "Sad" else "Sad"
    annotation = client.post(
        f"/api/tasks/{target['id']}/annotations",
        json={
            "result": [
                {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [flipped]}}
            ]
        },
    )
    assert annotation.status_code == 201, annotation.text
    export = client.get(f"/api/projects/{project_id}/export", params={"exportType": "JSON"})
    assert export.status_code == 200, export.text
    done = tmp_path / "export.json"
    done.write_bytes(export.content)
    assert main(["import", str(run_dir), str(done)]) == 0
    after = RunDir(run_dir).all_records("openseek-5")
    assert after[target["data"]["sample_id"]]["prediction"] == flipped
    assert after[target["data"]["sample_id"]]["answered_by"] == "human"
    assert sum(1 for r in after.values() if r.get("answered_by") == "human") == 1
    rows = [json.loads(x) for x in (run_dir / "openseek-5.jsonl").read_text().splitlines()]
    assert {r["test_sample_id"]: r["prediction"] for r in rows}[target["data"]["sample_id"]] == flipped

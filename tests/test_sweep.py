"""Sweeps: a hydra multirun over settings on dev, then `longicl.sweep select` writes best.yaml."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONF_DIR, DATA_DIR, ROOT
from fake_server import FakeServer, GoldAnswers

from longicl.cli import compose_config
from longicl.runner import settings_from_config
from longicl.sweep import find_runs, main, select
from longicl.tasks import TASKS


class HashedAnswers:
    """Gold or a wrong label, decided by a hash of the whole prompt (deterministic per request)."""

    def __init__(self) -> None:
        self.gold = GoldAnswers(DATA_DIR, styles=False)

    def __call__(self, body: dict) -> str:
        answer = self.gold(body)
        labels = (body.get("structured_outputs") or {}).get("choice") or [answer]
        digest = hashlib.sha256(json.dumps(body["messages"]).encode()).digest()[0]
        if digest % 10 < 7 or len(labels) < 2:
            return answer
        return [label for label in labels if label != answer][digest % (len(labels) - 1)]


def _run_json(path: Path, tasks: dict, *, method: dict | None = None, split: str = "dev") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    doc = {
        "config": {"seed": 0, "dev_size": None, "selection": {"name": "hybrid"}, "method": method or {}},
        "split": split,
        "tasks": {
            name: {
                "split": split,
                "n": 20,
                "requests": entry.get("requests", 20),
                "accuracy": entry["accuracy"],
                "prompt_tokens": {"min": 1, "median": entry["prompt"], "max": 1},
                "selection": {
                    "name": entry.get("strategy", "hybrid"),
                    "static_tokens": entry["prompt"] - 1000,
                    "dynamic_tokens": 1200,
                },  # fmt: skip
                "method": "icl",
                **({"calibration": entry["calibration"]} if "calibration" in entry else {}),
            }
            for name, entry in tasks.items()
        },
    }
    (path / "run.json").write_text(json.dumps(doc))
    return path


def test_selection_rule_accuracy_then_prompt_tokens(tmp_path):
    _run_json(tmp_path / "a", {"openseek-5": {"accuracy": 0.9, "prompt": 40_000}})
    _run_json(tmp_path / "b", {"openseek-5": {"accuracy": 0.9, "prompt": 32_000, "strategy": "bm25"}})
    # as accurate and shorter prompts, but five requests per sample: 160,000 tokens per sample
    _run_json(
        tmp_path / "c",
        {"openseek-5": {"accuracy": 0.9, "prompt": 31_000, "requests": 100}, "openseek-6": {"accuracy": 0.7, "prompt": 1}},
        method={"self_consistency": 5},
    )  # fmt: skip
    _run_json(tmp_path / "d", {"openseek-6": {"accuracy": 0.8, "prompt": 50_000}})
    _run_json(tmp_path / "e", {"openseek-6": {"accuracy": 0.99, "prompt": 1}}, split="test")
    best, warnings = select(find_runs([tmp_path]))
    assert best[5].run == (tmp_path / "b").resolve() and best[5].selection["name"] == "bm25"
    assert best[6].run == (tmp_path / "d").resolve() and best[6].accuracy == 0.8
    assert warnings == []


def test_a_fitted_calibration_competes_with_its_cross_fitted_accuracy(tmp_path):
    calibration = {
        "best": "bias",
        "bias_accuracy_cv": 0.93,
        "raw_accuracy": 0.9,
        "written": "calibration.json",
    }
    run = _run_json(
        tmp_path / "cal", {"openseek-5": {"accuracy": 0.9, "prompt": 40_000, "calibration": calibration}}
    )
    (run / "calibration.json").write_text("{}")
    _run_json(tmp_path / "plain", {"openseek-5": {"accuracy": 0.92, "prompt": 32_000}})
    best, _ = select(find_runs([tmp_path]))
    assert best[5].calibration == "bias" and best[5].accuracy == 0.93
    assert best[5].method["calibration"] == str((run / "calibration.json").resolve())
    assert best[5].method["calibration_mode"] == "bias"


def test_a_calibration_file_named_by_another_run_json_is_never_chosen(tmp_path, capsys):
    # another person's run dir must not choose the file the next run loads: only the run's own
    # calibration.json, inside that run dir, is accepted
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    runs = {}
    for name, written in (
        ("abs", str(outside)),
        ("up", "../outside.json"),
        ("sub", "x/calibration.json"),
        ("typed", ["calibration.json"]),
    ):  # fmt: skip
        calibration = {"best": "batch", "batch_accuracy": 1.0, "written": written}
        runs[name] = _run_json(
            tmp_path / name, {"openseek-5": {"accuracy": 0.5, "prompt": 10, "calibration": calibration}}
        )
        (runs[name] / "calibration.json").write_text("{}")
        (runs[name] / "x").mkdir()
        (runs[name] / "x" / "calibration.json").write_text("{}")
    # a calibration.json that is a link out of the run dir is not the run's own file either
    link = _run_json(
        tmp_path / "link",
        {
            "openseek-5": {
                "accuracy": 0.5,
                "prompt": 10,
                "calibration": {"best": "batch", "batch_accuracy": 1.0},
            }
        },
    )
    (link / "calibration.json").symlink_to(outside)
    output = tmp_path / "best.yaml"
    assert main(["select", *map(str, [*runs.values(), link]), "-o", str(output)]) == 0
    err = capsys.readouterr().err
    text = output.read_text()
    assert "outside.json" not in text and "x/calibration.json" not in text
    assert (
        "calibration: null" in text and "bias" not in text and "batch" not in text.split("sweep_selection")[1]
    )
    assert err.count("warning:") >= 5 and "calibration" in err and "Traceback" not in err


def test_non_finite_accuracies_are_not_candidates(tmp_path, capsys):
    _run_json(tmp_path / "nan", {"openseek-5": {"accuracy": float("nan"), "prompt": 10}})
    _run_json(tmp_path / "inf", {"openseek-5": {"accuracy": float("inf"), "prompt": 10}})
    calibration = {"best": "batch", "batch_accuracy": float("nan"), "written": "calibration.json"}
    cal = _run_json(
        tmp_path / "cal", {"openseek-5": {"accuracy": 0.4, "prompt": 10, "calibration": calibration}}
    )
    (cal / "calibration.json").write_text("{}")
    _run_json(tmp_path / "good", {"openseek-5": {"accuracy": 0.5, "prompt": 10}})
    best, _ = select(find_runs([tmp_path]))
    assert best[5].run == (tmp_path / "good").resolve() and best[5].accuracy == 0.5
    # only non-finite runs: nothing to choose, one line, nothing written
    output = tmp_path / "best.yaml"
    assert main(["select", str(tmp_path / "nan"), str(tmp_path / "inf"), "-o", str(output)]) == 2
    assert "Traceback" not in capsys.readouterr().err and not output.exists()


@pytest.mark.parametrize(
    ("field", "mutate"),
    [
        ("n", lambda doc, t: t.update(n="abc")),
        ("accuracy", lambda doc, t: t.update(accuracy="x")),
        ("accuracy", lambda doc, t: t.update(accuracy=True)),
        ("prompt_tokens", lambda doc, t: t.update(prompt_tokens=[1])),
        ("prompt_tokens", lambda doc, t: t.update(prompt_tokens={"median": "x"})),
        ("requests", lambda doc, t: t.update(requests="x")),
        ("selection", lambda doc, t: t.update(selection=["a"])),
        ("calibration", lambda doc, t: t.update(calibration="x")),
        ("calibration", lambda doc, t: t.update(calibration={"best": "batch", "batch_accuracy": "x"})),
        ("config.method", lambda doc, t: doc["config"].update(method=[1])),
        ("config.selection", lambda doc, t: doc["config"].update(selection="x")),
        ("tasks.../../etc/passwd", lambda doc, t: doc["tasks"].update({"../../etc/passwd": dict(t)})),
        ("tasks./etc/x.yaml", lambda doc, t: doc["tasks"].update({"/etc/x.yaml": dict(t)})),
    ],
)
def test_wrongly_typed_run_json_fields_are_one_line_naming_the_field(tmp_path, capsys, field, mutate):
    run = _run_json(tmp_path / "r", {"openseek-5": {"accuracy": 0.9, "prompt": 10}})
    (run / "calibration.json").write_text("{}")
    doc = json.loads((run / "run.json").read_text())
    mutate(doc, doc["tasks"]["openseek-5"])
    (run / "run.json").write_text(json.dumps(doc))
    output = tmp_path / "best.yaml"
    assert main(["select", str(run), "-o", str(output)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str((run / "run.json").resolve()) in err and field in err, err
    assert not output.exists()


def test_unreadable_inputs_are_usage_errors(tmp_path, capsys):
    assert main(["select", str(tmp_path / "missing")]) == 2
    assert "no such run.json" in capsys.readouterr().err
    _run_json(tmp_path / "t", {"openseek-5": {"accuracy": 0.9, "prompt": 1}}, split="test")
    assert main(["select", str(tmp_path), "-o", str(tmp_path / "best.yaml")]) == 2
    assert "split=dev" in capsys.readouterr().err


def test_a_run_json_that_is_not_a_run_summary_is_a_usage_error(tmp_path, capsys):
    for n, text in enumerate(("[1, 2]", '{"tasks": [1]}', '{"config": 3, "tasks": {}}')):
        (tmp_path / str(n)).mkdir()
        (tmp_path / str(n) / "run.json").write_text(text)
        assert main(["select", str(tmp_path / str(n))]) == 2
        err = capsys.readouterr().err
        assert "run.json" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_hydra_sweep_over_two_settings_produces_a_loadable_best_yaml(tmp_path):
    sweep = tmp_path / "sweep"
    with FakeServer(HashedAnswers(), count_tokens=False) as server:
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "main.py"),
                "-m",
                "progress=false",
                f"data_dir={DATA_DIR}",
                "task=[5,6]",
                "split=dev",
                "limit=10",
                f"engine.base_url={server.url}",
                "method.self_consistency=1,3",
                f"out_dir={sweep}/${{hydra:job.num}}",
                f"hydra.sweep.dir={tmp_path / 'multirun'}",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=180,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/run.json"))}
    assert sorted(runs) == ["0", "1"]  # ${hydra:job.num} resolved per job
    assert [runs[k]["config"]["method"]["self_consistency"] for k in ("0", "1")] == [1, 3]

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    output = conf / "method" / "best.yaml"
    assert main(["select", str(sweep), "-o", str(output)]) == 0
    doc = yaml.safe_load(output.read_text())
    assert output.read_text().startswith("# @package _global_")
    for name in ("openseek-5", "openseek-6"):
        task_id = TASKS[int(name.split("-")[1])].id
        entries = {k: run["tasks"][name] for k, run in runs.items()}
        cost = {k: e["prompt_tokens"]["median"] * e["requests"] / e["n"] for k, e in entries.items()}
        winner = min(entries, key=lambda k: (-entries[k]["accuracy"], cost[k], k))
        chosen = doc["sweep_selection"][str(task_id)]
        if chosen["calibration"] is None:  # a calibrated candidate may beat both raw runs
            assert chosen["run"] == str((sweep / winner).resolve())
            assert chosen["accuracy"] == round(entries[winner]["accuracy"], 6)
            expected_k = runs[winner]["config"]["method"]["self_consistency"]
            assert doc["method"]["per_task"][str(task_id)]["self_consistency"] == expected_k
        else:
            assert chosen["accuracy"] >= max(e["accuracy"] for e in entries.values())

    # the preset loads through hydra and carries each task's winner
    cfg = compose_config(conf, ["method=best", f"data_dir={DATA_DIR}", "task=[5,6]"])
    settings = settings_from_config(cfg)
    assert settings.method.name == "best"
    for task_id in (5, 6):
        expected = doc["method"]["per_task"][str(task_id)]["self_consistency"]
        assert settings.method.for_task(TASKS[task_id]).self_consistency == expected
        assert (
            settings.budget_for(TASKS[task_id]).static_tokens
            == doc["selection"]["per_task"][str(task_id)]["static_tokens"]
        )

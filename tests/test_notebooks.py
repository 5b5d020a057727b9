"""The notebooks: committed clean, and executed headless end to end with small CPU parameters."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

from longicl import notebooks

NOTEBOOK_FILES = [ROOT / "notebooks" / f"{name}.ipynb" for name in notebooks.NOTEBOOKS]
COMMON = {"values_path"}
EXPECTED = {
    "01_data_overview": {"tasks", "budgets", "data_dir"},
    "02_context_strategies": {
        "engine",
        "base_url",
        "tasks",
        "split",
        "limit",
        "budgets",
        "strategies",
        "out_dir",
    },
    "03_error_analysis": {"engine", "base_url", "tasks", "split", "limit", "run_dir", "out_dir"},
    "04_submission": {
        "engine",
        "base_url",
        "tasks",
        "limit",
        "dev_limit",
        "use_best",
        "out_dir",
        "report_dir",
    },
}


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]
    declared = notebooks.declared_parameters(path)
    assert EXPECTED[path.stem] | COMMON <= set(declared)
    for name, info in declared.items():
        assert "=" not in info["help"], name  # papermill's own reader skips such lines
    assert "longicl import analysis" in "\n".join(c.source for c in code)


def test_parameters_and_kernel_helpers(tmp_path):
    assert notebooks.parse_parameter("tasks=[2, 5]") == ("tasks", [2, 5])
    assert notebooks.parse_parameter("limit=null") == ("limit", None)
    assert notebooks.parse_parameter("base_url=http://h:1/v1") == ("base_url", "http://h:1/v1")
    with pytest.raises(ValueError):
        notebooks.parse_parameter("no value")
    assert notebooks.notebook_path("02").name == "02_context_strategies.ipynb"
    assert notebooks.notebook_path("notebooks/04_submission.ipynb").stem == "04_submission"
    with pytest.raises(ValueError):
        notebooks.notebook_path("05")
    chosen = notebooks.parameters_for(
        "03_error_analysis",
        {"limit": {}, "out_dir": {}, "values_path": {}},
        {"limit": 3, "budgets": [1]},
        out_dir=tmp_path / "nb",
        runs_dir=tmp_path / "runs",
    )
    assert chosen == {
        "limit": 3,
        "values_path": str(tmp_path / "nb" / "03_error_analysis.values.json"),
        "out_dir": str(tmp_path / "runs" / "03_error_analysis"),
    }
    assert notebooks._runs_this_python(["python", "-m", "ipykernel_launcher"])
    assert notebooks._runs_this_python([sys.executable, "-m", "ipykernel_launcher"])
    assert not notebooks._runs_this_python(["/opt/other/bin/python", "-m", "ipykernel_launcher"])


def test_make_notebooks_leaves_the_projects_report_alone(tmp_path):
    """Notebook 04 writes a report; `make notebooks` must not overwrite reports/technical_report.*
    (make demo's): the executed copy's report goes under the notebooks' own output directory."""
    path = ROOT / "notebooks" / "04_submission.ipynb"
    declared = notebooks.declared_parameters(path)
    chosen = notebooks.parameters_for("04_submission", declared, {}, out_dir=tmp_path / "nb", runs_dir=None)
    assert chosen["report_dir"] == str(tmp_path / "nb" / "report")
    given = notebooks.parameters_for(
        "04_submission", declared, {"report_dir": "x"}, out_dir=tmp_path / "nb", runs_dir=None
    )
    assert given["report_dir"] == "x"
    default = declared["report_dir"]["default"]  # JupyterLab's run, outside make notebooks
    assert default != '"reports"' and default.startswith('"reports/notebooks/'), default


def test_a_private_kernel_spec_runs_this_python(monkeypatch, tmp_path):
    from jupyter_client.kernelspec import KernelSpecManager

    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    name = notebooks.ensure_kernel("no-such-kernel")
    assert name == notebooks.PRIVATE_KERNEL
    spec = KernelSpecManager().get_kernel_spec(name)
    assert spec.argv[0] == sys.executable


def test_unknown_parameters_are_refused(tmp_path):
    assert notebooks.main(["01", "-o", str(tmp_path), "-p", "no_such_parameter=1"]) == 2
    assert notebooks.main(["07"]) == 2


def test_all_notebooks_execute_with_cpu_parameters(tmp_path):
    """What `make notebooks` does, on a small slice: every notebook runs top to bottom."""
    pytest.importorskip("papermill")
    out, runs, reports = tmp_path / "executed", tmp_path / "runs", tmp_path / "reports"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "longicl.notebooks",
            "-o",
            str(out),
            "--runs",
            str(runs),
            "-p",
            "tasks=[1, 5]",
            "-p",
            "limit=2",
            "-p",
            "dev_limit=2",
            "-p",
            "budgets=[32000]",
            "-p",
            "strategies=[bm25, hybrid]",
            "-p",
            f"report_dir={reports}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    index = json.loads((out / "index.json").read_text())
    assert set(index["notebooks"]) == set(notebooks.NOTEBOOKS)
    for name in notebooks.NOTEBOOKS:
        executed = nbformat.read(str(out / f"{name}.ipynb"), as_version=4)
        errors = [
            o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
        ]
        assert not errors, (name, errors)
        assert any(c.outputs for c in executed.cells if c.cell_type == "code"), name
        values = json.loads((out / f"{name}.values.json").read_text())
        assert values["notebook"] == name
    overview = json.loads((out / "01_data_overview.values.json").read_text())
    assert overview["tasks"] == ["openseek-1", "openseek-5"] and len(overview["fits"]) == 2
    strategies = json.loads((out / "02_context_strategies.values.json").read_text())
    assert strategies["engine"] == "dryrun" and {p["strategy"] for p in strategies["points"]} == {
        "bm25",
        "hybrid",
    }
    submission = json.loads((out / "04_submission.values.json").read_text())
    assert (reports / "technical_report.md").is_file() and (reports / "technical_report.html").is_file()
    assert submission["report"] == str(reports / "technical_report.html")
    markdown = (reports / "technical_report.md").read_text(encoding="utf-8")
    assert "## Context strategies: cost and accuracy" in markdown  # values of notebook 02 were read
    assert Path(submission["dev_run"]).is_relative_to(runs) and Path(submission["test_run"]).is_relative_to(
        runs
    )


def test_notebook_03_shows_no_empty_confidence_panels_on_its_cpu_default(tmp_path):
    """The default CPU engine (classical) gives no confidences: the three confidence cells say so
    and why, instead of drawing "no confidences" placeholder panels."""
    from conftest import compose
    from IPython.display import Markdown

    from longicl import analysis as an
    from longicl.runner import run

    out = tmp_path / "classical"
    run(compose("engine=classical", "task=5", "split=dev", "limit=4", f"out_dir={out}"))
    loaded = an.load_run(out)
    assert not an.has_quality(loaded)
    nb = nbformat.read(str(ROOT / "notebooks" / "03_error_analysis.ipynb"), as_version=4)
    kinds = ("figure_confidence_histogram", "figure_reliability", "figure_coverage_accuracy")
    cells = [c.source for c in nb.cells if c.cell_type == "code" and any(k in c.source for k in kinds)]
    assert len(cells) == 3
    for source in cells:
        shown = eval(source, {"an": an, "Markdown": Markdown, "run": loaded})  # noqa: S307 - our notebook
        assert isinstance(shown, Markdown) and "No confidences" in shown.data, source

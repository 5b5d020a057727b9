"""The command line as users meet it: one line and exit 2 for their mistakes, nothing written."""

import json
import re
import shutil
import subprocess
import sys

import pytest
from conftest import DATA_DIR, ROOT


def main(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "progress=false", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def _broken_data(tmp_path, mutate) -> str:
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    path = data / "openseek-5_semeval_2018_task1_tweet_sadness_detection.json"
    doc = json.loads(path.read_text())
    text = mutate(doc)
    path.write_text(text if isinstance(text, str) else json.dumps(doc))
    return str(data)


def _drop(key):
    def mutate(doc):
        del doc[key]

    return mutate


def _dup_ids(doc):
    doc["examples"][1]["id"] = doc["examples"][0]["id"]


def _no_output(doc):
    del doc["examples"][3]["output"]


BROKEN_DATA = {
    "not json": lambda doc: "{oops",
    "no examples": _drop("examples"),
    "no test_samples": _drop("test_samples"),
    "no Definition": _drop("Definition"),
    "duplicate ids": _dup_ids,
    "example without output": _no_output,
}


@pytest.mark.parametrize("case", sorted(BROKEN_DATA))
def test_broken_data_gives_one_line_exit_2_and_no_output(tmp_path, case):
    data_dir = _broken_data(tmp_path, BROKEN_DATA[case])
    out = tmp_path / "out"
    done = main("engine=dryrun", "task=all", f"data_dir={data_dir}", f"out_dir={out}")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "openseek-5" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["data_dir=/nonexistent/dir"], "data directory not found"),
        (["task=9"], "unknown task"),
        (["limit=-1"], "limit=-1"),
        (["limit=abc"], "limit"),
        (["split=train"], "split"),
        (["engine.base_url=not-a-url"], "not an http(s) URL"),
        (["engine=nosuch"], "nosuch"),
        (["nosuchkey=1"], "nosuchkey"),
        (["selection=knn"], "knn"),
        (["max_prompt_tokens=131000"], "max_model_len"),
        (["engine.concurrency=0"], "concurrency"),
    ],
)
def test_bad_overrides_give_one_line_exit_2_and_no_output(tmp_path, overrides, words):
    out = tmp_path / "out"
    base = [f"data_dir={DATA_DIR}", f"out_dir={out}"]
    done = main(*base, *overrides)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert words in lines[0]
    assert not out.exists()


def test_unreachable_server_names_the_url_and_the_readme(tmp_path):
    out = tmp_path / "out"
    done = main("task=5", "limit=2", "engine.base_url=http://127.0.0.1:9/v1", f"out_dir={out}")
    assert done.returncode == 2
    assert "http://127.0.0.1:9/v1" in done.stderr and "README" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_dry_run_from_another_directory(tmp_path):
    done = main("engine=dryrun", "task=1", "split=dev", "limit=2", f"out_dir={tmp_path / 'o'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "openseek-1" in done.stdout


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["engin=classical"], "did you mean engine"),
        (["selection.nme=bm25"], "did you mean selection.name"),
        # a key of another option of the group: said so, never "did you mean" the key itself
        (
            ["engine=dryrun", "engine.timeout=10"],
            "engine.timeout is not a setting of engine=dryrun (its settings: engine.name, engine.concurrency)",
        ),
        (
            ["engine=classical", "engine.api_key=x"],
            "engine.api_key is not a setting of engine=classical (its settings: ",
        ),
        (["engine=dryrun", "engine.model=x"], "engine.model is not a setting of engine=dryrun ("),
        (["selection=bm2"], "did you mean bm25"),
        (["method=best"], "python -m longicl.sweep select"),
    ],
)
def test_typos_get_a_did_you_mean_and_method_best_says_a_sweep_comes_first(tmp_path, overrides, words):
    out = tmp_path / "out"
    done = main(f"out_dir={out}", *overrides)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr
    assert "+engin" not in lines[0] and "Could not" not in lines[0]
    assert not out.exists()


def test_main_help_lists_the_settings_with_their_defaults():
    done = main("--help")
    assert done.returncode == 0, done.stderr
    for words in ("task", "split", "engine.base_url", "classical, dryrun, local, openai", "README.md"):
        assert words in done.stdout
    assert "Powered by Hydra" not in done.stdout
    # the sweep example runs as printed: one out_dir per job; the default out_dir as written
    assert "-m selection=hybrid,bm25 split=dev out_dir='outputs/sweep/${hydra:job.num}'" in done.stdout
    assert re.search(r"out_dir +outputs/\$\{split\}", done.stdout), done.stdout


def test_the_longicl_command_dispatches_to_each_tool():
    from longicl import console

    done = subprocess.run(
        [sys.executable, "-m", "longicl", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0 and all(name in done.stdout for name in console.COMMANDS)
    for name in console.COMMANDS:
        assert callable(console.entry(name))
    done = subprocess.run(
        [sys.executable, "-m", "longicl", "tasks", "check", str(ROOT / "examples" / "tweet-mood.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.rstrip().endswith("ok"), done.stderr
    typo = subprocess.run(
        [sys.executable, "-m", "longicl", "reprt"], capture_output=True, text=True, timeout=120
    )
    assert typo.returncode == 2 and "did you mean report" in typo.stderr


def test_pyproject_declares_the_longicl_console_script():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"longicl": "longicl.console:main"}


def test_the_readme_uses_one_form_of_command():
    """The README states once how to use the venv, then every command is `longicl SUBCOMMAND` (or a
    make target); no mix of `python -m longicl.x`, `python main.py` and `.venv/bin/python`."""
    import re

    from longicl import console

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "source .venv/bin/activate" in readme.split("## What this is")[0]
    assert ".venv/bin/python" not in readme
    assert not re.search(r"python main\.py \w", readme)
    modules = set(re.findall(r"python -m (longicl[\w.]*)", readme))
    assert modules <= {"longicl.kernels.check"}, modules  # the checker is a tool of task 8's extra
    used = set(re.findall(r"(?<!from )\blongicl ([a-z]\w*)", readme))
    assert {"run", "tasks", "review", "report"} <= used <= set(console.COMMANDS), used - set(console.COMMANDS)


def _make_n(target: str, tmp_path) -> str:
    """The commands `make TARGET` would run in a fresh clone (a venv that does not exist yet)."""
    done = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}", f"OUT={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_targets_install_what_they_need_and_keep_the_report(tmp_path):
    import os

    demo = _make_n("demo", tmp_path)
    assert "pip install --quiet -e ." in demo
    assert not any(extra in demo for extra in ("[kernels]", "[ray]", "[dev", "torch", "triton"))
    lines = demo.splitlines()
    mood = next(i for i, line in enumerate(lines) if "tweet-mood.yaml" in line)
    report_line = next(i for i, line in enumerate(lines) if "longicl report" in line)
    assert mood < report_line and "demo-tweet-mood" in lines[report_line]  # the example is in the report
    test = _make_n("test", tmp_path)
    assert all(extra in test for extra in ("[dev,notebooks]", "[kernels]", "[ray]"))
    lab = _make_n("lab", tmp_path)
    assert "root_dir=reports/notebooks" in lab  # the executed copies
    assert ("--allow-root" in lab) == (os.getuid() == 0)
    assert "technical_report" not in _make_n("notebooks", tmp_path)


@pytest.mark.parametrize("name", ["review", "tasks", "sweep"])
def test_a_subcommands_help_names_the_longicl_command(name, capsys):
    """``longicl review --help`` (and tasks, sweep) shows the usage line a user types."""
    from longicl.console import main as longicl

    with pytest.raises(SystemExit) as done:
        longicl([name, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: longicl {name}")

"""method.py (the competition's interface) builds exactly the requests main.py sends."""

import importlib.util

import pytest
from conftest import ROOT, compose
from fake_server import FakeServer

from longicl.runner import prepare_tasks, settings_from_config
from longicl.tasks import TASKS
from longicl.tokens import TokenCounter


@pytest.fixture(scope="module")
def method():
    spec = importlib.util.spec_from_file_location("method", ROOT / "method.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PRESETS = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))


@pytest.fixture
def preset(method, request):
    """method.py configured with ``method=<preset>``, restored afterwards."""
    overrides = [f"method={request.param}"]
    saved = list(method.OVERRIDES)
    method.OVERRIDES[:] = overrides
    method.settings.cache_clear()
    method._builder.cache_clear()
    yield request.param
    method.OVERRIDES[:] = saved
    method.settings.cache_clear()
    method._builder.cache_clear()


@pytest.mark.parametrize("preset", PRESETS, indirect=True)
@pytest.mark.parametrize("task", sorted(TASKS))
def test_same_examples_and_messages_as_the_runner(method, preset, task):
    """Per preset and task: the runner's examples, messages and token count (thinking included)."""
    settings = settings_from_config(compose(f"task={task}", "split=dev", "limit=1", f"method={preset}"))
    (task_run,) = prepare_tasks(settings, TokenCounter())
    pool = [{"id": ex.id, "input": ex.input, "output": [ex.output]} for ex in task_run.split.pool]
    for sample in task_run.samples:
        plan = task_run.builder.plan(sample)
        chosen = method.select_examples(pool, task_run.data.definition, sample.input)
        assert [ex.id for ex in chosen] == list(plan.demo_ids)
        assert method.build_prompt(task_run.data.definition, sample.input) == plan.messages()
        builder = method._builder(task, method._POOLS[task_run.spec.name])
        assert builder.enable_thinking == settings.method.for_task(task_run.spec).enable_thinking
        assert builder.plan(method.Example("query", sample.input)).prompt_tokens == plan.prompt_tokens


def test_annotate_through_a_server(method, gold_answers, monkeypatch):
    task_run = prepare_tasks(settings_from_config(compose("task=5", "split=dev", "limit=2")), TokenCounter())[
        0
    ]
    with FakeServer(gold_answers) as server:
        monkeypatch.setattr(method, "OVERRIDES", [f"engine.base_url={server.url}"])
        method.settings.cache_clear()
        sample = task_run.samples[0]
        messages = method.build_prompt(task_run.data.definition, sample.input)
        assert method.annotate(messages) == sample.output
    method.settings.cache_clear()


def test_unknown_description_is_a_usage_error(method):
    from longicl.errors import UsageError

    with pytest.raises(UsageError):
        method.task_for("Translate French to German.")


def test_task_option_sets_the_task_so_a_small_window_works_as_in_main(method, monkeypatch):
    """``method.py --task 5 engine=local …`` ran with task=all, so task 8's long answers did not fit
    engine=local's 8,192-token window ("lower max_prompt_tokens to at most 0"); main.py task=5 ran."""
    small = ["max_model_len=8192", "max_prompt_tokens=7680", "min_icl_tokens=3000"]
    assert method.command_overrides(5, small) == ["task=5", *small]
    assert method.command_overrides(5, ["task=6", *small]) == ["task=6", *small]
    monkeypatch.setattr(method, "OVERRIDES", method.command_overrides(5, small))
    method.settings.cache_clear()
    try:
        assert [spec.id for spec in method.settings().tasks] == [5]
        assert method.settings().max_prompt_tokens == 7680
    finally:
        method.settings.cache_clear()


@pytest.mark.parametrize("engine", ["classical", "dryrun"])
def test_an_engine_without_a_language_model_is_refused_in_one_line(engine, tmp_path):
    """``method.py --task 5 engine=classical`` scored 0.000 and exited 0: nothing answered the prompts."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "method.py"), "--task", "5", "--limit", "2", f"engine={engine}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"engine={engine} gives no language-model answer" in lines[0], done.stderr
    assert "dev accuracy" not in done.stdout and list(tmp_path.iterdir()) == []

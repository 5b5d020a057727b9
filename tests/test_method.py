"""method.py (the competition's interface) builds exactly the requests main.py sends."""

import importlib.util

import pytest
from conftest import ROOT, compose
from fake_server import FakeServer

from longicl.runner import prepare_tasks, settings_from_config
from longicl.tokens import TokenCounter


@pytest.fixture(scope="module")
def method():
    spec = importlib.util.spec_from_file_location("method", ROOT / "method.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_examples_and_messages_as_the_runner(method):
    task_run = prepare_tasks(settings_from_config(compose("task=6", "split=dev", "limit=3")), TokenCounter())[
        0
    ]
    pool = [{"id": ex.id, "input": ex.input, "output": [ex.output]} for ex in task_run.split.pool]
    for sample in task_run.samples:
        plan = task_run.builder.plan(sample)
        chosen = method.select_examples(pool, task_run.data.definition, sample.input)
        assert [ex.id for ex in chosen] == list(plan.demo_ids)
        assert method.build_prompt(task_run.data.definition, sample.input) == plan.messages()


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

"""Every registered task resolves, through the registries, to a metric, an annotator and a reader."""

import pytest

from longicl.annotators import ANNOTATORS, IclAnnotator, KernelAnnotator, annotator_for
from longicl.metrics import TASK_METRICS, metric_for, score
from longicl.parse import READERS, normalise, reader_for
from longicl.records import MethodLabel, task_method
from longicl.tasks import TASKS, AnswerKind


@pytest.mark.parametrize("spec", list(TASKS.values()), ids=lambda s: s.name)
def test_every_task_resolves_to_a_metric_an_annotator_and_a_normaliser(spec):
    assert metric_for(spec) is TASK_METRICS[spec.metric]
    assert annotator_for(spec) is ANNOTATORS[spec.annotator]
    assert reader_for(spec) is READERS[spec.answer_kind]
    gold = (spec.labels or ("1",))[0]
    assert isinstance(normalise(spec, gold), str)
    assert score(spec, gold, gold) in (1.0, None)


def test_every_answer_kind_has_a_reader():
    assert set(READERS) == set(AnswerKind)


def test_task_8_is_annotated_by_the_kernel_annotator_and_judged_by_running():
    assert annotator_for(TASKS[8]) is KernelAnnotator and annotator_for(TASKS[5]) is IclAnnotator
    assert score(TASKS[8], "x = 1", "x = 1") is None
    assert list(metric_for(TASKS[8]).task_summary([])) == ["kernels"]
    assert metric_for(TASKS[1]).task_summary([]) == {}


@pytest.mark.parametrize(
    "label, answered_by, side_models, pure",
    [
        ("icl", "icl", (), True),
        ("icl+program", "icl", ("program",), False),
        ("icl+classifier+program", "icl", ("classifier", "program"), False),
        ("icl+kernel_check", "icl", (), True),
        ("retrieval", "retrieval", ("retrieval",), False),
    ],
)
def test_method_labels_parse_back_to_what_answered(label, answered_by, side_models, pure):
    parsed = MethodLabel.parse(label)
    assert str(parsed) == label and parsed.answered_by == answered_by
    assert parsed.side_models == side_models and parsed.pure_icl is pure


def test_task_method_from_records():
    icl = MethodLabel("icl")
    kernel = [{"method": "icl+kernel_check", "vote": None}]
    assert task_method(kernel, icl).method == "icl+kernel_check" and task_method(kernel, icl).pure_icl
    classical = [{"method": "program", "vote": {}}, {"method": "program", "vote": {}}]
    found = task_method(classical, icl)
    assert (found.method, found.pure_icl, found.side_models) == ("program", False, ["program"])
    dry = [{"method": "icl+program", "vote": None}]
    found = task_method(dry, MethodLabel("icl", ("program",)))
    assert (found.method, found.pure_icl) == ("icl+program", False)


def test_settings_take_their_defaults_from_the_yaml_only():
    from longicl.annotators import MethodSettings
    from longicl.config_values import load_defaults
    from longicl.errors import UsageError

    yaml = load_defaults("method")
    settings = MethodSettings.defaults()
    assert settings.structured_outputs is yaml["structured_outputs"] and settings.logprobs == yaml["logprobs"]
    with pytest.raises(UsageError, match="is not set"):
        MethodSettings.from_config({"name": "partial"}, check_environment=False)
    old = {k: v for k, v in yaml.items() if k not in ("structured_outputs", "logprobs")}  # an older run
    filled = MethodSettings.from_config(old, check_environment=False, fill_missing=True)
    assert filled == settings


@pytest.mark.parametrize("key", ["max_model_len", "max_prompt_tokens", "seed", "out_dir", "progress"])
def test_run_settings_have_no_code_defaults(key):
    from conftest import compose
    from omegaconf import OmegaConf

    from longicl.errors import UsageError
    from longicl.runner import settings_from_config

    conf = OmegaConf.to_container(compose("task=5"), resolve=True)
    del conf[key]
    with pytest.raises(UsageError, match=rf"^{key} is not set \(conf/config.yaml sets it\)$"):
        settings_from_config(conf)


def test_a_selection_without_a_budget_key_names_it():
    from conftest import compose
    from omegaconf import OmegaConf

    from longicl.errors import UsageError
    from longicl.runner import settings_from_config
    from longicl.tasks import TASKS

    conf = OmegaConf.to_container(compose("task=5"), resolve=True)
    del conf["selection"]["margin_tokens"]
    with pytest.raises(UsageError, match="selection.margin_tokens is not set"):
        settings_from_config(conf).budget_for(TASKS[5])


@pytest.mark.parametrize(
    ("label", "answered_by", "involves"),
    [
        ("icl", True, True),
        ("icl+program", True, True),
        ("classifier+icl", False, True),
        ("program", False, False),
    ],
)
def test_method_labels_say_whether_the_language_model_took_part(label, answered_by, involves):
    parsed = MethodLabel.parse(label)
    assert str(parsed) == label
    assert (parsed.by_language_model, parsed.involves_language_model) == (answered_by, involves)

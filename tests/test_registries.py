"""Every registered task resolves, through the registries, to a metric, an annotator and a reader."""

import pytest

from longicl.annotators import IclAnnotator, KernelAnnotator, annotator_for
from longicl.metrics import metric_for, score
from longicl.parse import READERS, normalise, reader_for
from longicl.records import MethodLabel, task_method
from longicl.tasks import TASKS, AnswerKind

#: what each answer kind is read, judged and annotated by (a gold answer parses back to itself)
GOLD = {
    AnswerKind.LABEL: None,  # the task's first label
    AnswerKind.INTEGER: "42",
    AnswerKind.INT_LIST: "[1, 2, 3]",
    AnswerKind.TEXT: "the answer",
    AnswerKind.CODE: "def f():\n    return 1",
}


@pytest.mark.parametrize("spec", list(TASKS.values()), ids=lambda s: s.name)
def test_every_task_resolves_to_a_metric_an_annotator_and_a_reader(spec):
    by_running = spec.answer_kind is AnswerKind.CODE
    assert metric_for(spec).string_match is not by_running
    assert annotator_for(spec) is (KernelAnnotator if by_running else IclAnnotator)
    gold = GOLD[spec.answer_kind] or spec.labels[0]
    parsed = reader_for(spec).parse(
        spec, f"Answer: {gold}" if not by_running else f"```python\n{gold}\n```", None
    )
    assert parsed.ok and normalise(spec, parsed.value) == normalise(spec, gold)
    if by_running:
        assert score(spec, gold, gold) is None
    else:
        assert score(spec, gold, gold) == 1.0 and score(spec, "", gold) == 0.0


def test_every_answer_kind_has_a_reader():
    assert set(READERS) == set(AnswerKind)


def test_task_8_is_annotated_by_the_kernel_annotator_and_judged_by_running():
    assert annotator_for(TASKS[8]) is KernelAnnotator and annotator_for(TASKS[5]) is IclAnnotator
    assert score(TASKS[8], "x = 1", "x = 1") is None
    assert list(metric_for(TASKS[8]).task_summary().result()) == ["kernels"]
    assert metric_for(TASKS[1]).task_summary().result() == {}


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


# ------------------------------------------------------------------------------------------------
# the one Registry every choice by name goes through
# ------------------------------------------------------------------------------------------------
def test_registry_lookup_names_and_the_one_unknown_error():
    from longicl.errors import UsageError
    from longicl.registry import Registry

    things = Registry("thing", {"a": 1, "b": 2})
    things.add("c", 3)
    assert things.names() == ("a", "b", "c") and list(things) == ["a", "b", "c"] and len(things) == 3
    assert "b" in things and "z" not in things and ["unhashable"] not in things
    assert things.get("b") == 2
    with pytest.raises(UsageError, match=r"^where: unknown thing: 'z'; known: a, b, c$"):
        things.get("z", where="where")


def test_lazy_entries_are_imported_only_when_asked_for(tmp_path, monkeypatch):
    import sys

    from longicl.errors import UsageError
    from longicl.registry import Registry

    (tmp_path / "lazy_module_for_test.py").write_text("VALUE = 7\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    things = Registry("thing", lazy={"seven": "lazy_module_for_test:VALUE", "gone": "no_such_module_xyz:X"})
    assert "lazy_module_for_test" not in sys.modules and things.names() == ("seven", "gone")
    assert things.available("seven") and not things.available("gone") and not things.available("z")
    assert things.target("seven") == "lazy_module_for_test:VALUE"
    assert "lazy_module_for_test" not in sys.modules
    assert things.get("seven") == 7
    with pytest.raises(ModuleNotFoundError):
        things.get("gone")
    with pytest.raises(ValueError, match="not 'module:attr'"):
        things.add_lazy("bad", "no colon")
    with pytest.raises(UsageError, match="unknown thing"):
        things.get(None)


def test_registry_recognises_a_file_by_asking_each_entry():
    from longicl.registry import Registry

    class Odd:
        @staticmethod
        def recognises(n):
            return n % 2 == 1

    class Big:
        @staticmethod
        def recognises(n):
            return n > 10

    formats = Registry("format", {"plain": object(), "odd": Odd, "big": Big})
    assert (formats.recognises(3), formats.recognises(13), formats.recognises(12), formats.recognises(2)) == (
        "odd",
        "odd",
        "big",
        None,
    )


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (
            lambda: __import__("longicl.engines").engines.build_engine({"name": "nosuch"}),
            "engine: unknown engine",
        ),
        (
            lambda: __import__("longicl.selection").selection.build_selector("nosuch", TASKS[5], [], []),
            "selection.name: unknown selection strategy",
        ),
    ],
)
def test_unknown_names_list_what_is_registered(build, words):
    from longicl.engines import ENGINES
    from longicl.errors import UsageError
    from longicl.selection import STRATEGIES

    with pytest.raises(UsageError, match=words) as caught:
        build()
    known = ENGINES if "engine" in words else STRATEGIES
    assert str(caught.value).endswith("known: " + ", ".join(known))


def test_unknown_annotator_and_metric_name_the_task_file():
    from dataclasses import replace

    from longicl.errors import DataError, UsageError
    from longicl.metrics import check_metric

    spec = replace(TASKS[5], annotator="nosuch", metric="nosuch")
    with pytest.raises(
        UsageError, match=r": annotator: unknown annotator: 'nosuch'; known: default, kernel$"
    ):
        annotator_for(spec)
    with pytest.raises(
        DataError, match=r": metric: unknown metric: 'nosuch'; known: exact_match, macro_f1, kernel_check$"
    ):
        check_metric(spec)


def test_every_registered_engine_is_named_by_the_unset_engine_error():
    from conftest import compose
    from omegaconf import OmegaConf

    from longicl.engines import ENGINES
    from longicl.errors import UsageError
    from longicl.runner import settings_from_config

    conf = OmegaConf.to_container(compose("task=5"), resolve=True)
    conf["engine"] = {}
    with pytest.raises(UsageError) as caught:
        settings_from_config(conf)
    assert {"ray", "local"} <= set(ENGINES) and all(name in str(caught.value) for name in ENGINES)


@pytest.mark.parametrize(
    ("doc", "name"),
    [
        ([{"data": {"text": "x"}}], "label-studio"),
        ({"records": [{"data": {}}]}, "label-studio"),
        ([{"fields": {"text": "x"}}], "argilla"),
        ({"records": [{"responses": {}}]}, "argilla"),
        ([{"other": 1}], None),
        ([], None),
        ("text", None),
        ([["list"]], None),
    ],
)
def test_review_exports_are_told_by_the_formats_themselves(doc, name):
    from longicl.review.cli import detect

    assert detect(doc) == name

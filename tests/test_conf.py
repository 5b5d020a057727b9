"""Defaults live only in the YAML under conf/: each settings class takes exactly the keys its file sets.

Every YAML under conf/ is read here and matched against the code that reads it, so that a key
added to a file without its reader (or a default added in code beside the file's) fails a test.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from pathlib import Path

import pytest
from conftest import compose
from omegaconf import OmegaConf

from longicl.config_values import load_defaults, load_main_defaults
from longicl.errors import UsageError
from longicl.paths import CONF_DIR

#: every YAML file under conf/ and what reads it; a new file must be added here
READERS = {
    "config.yaml": "settings_from_config (RunSettings)",
    "engine": "the engine classes (longicl.engines.ENGINES)",
    "kernels": "KernelSettings",
    "method": "MethodSettings",
    "prompt": "PromptTemplate",
    "selection": "RunSettings.budget_for / selection.STRATEGIES",
    "task_file": "longicl.tasks (a task file's missing keys)",
}


def _files(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _composed(*overrides: str) -> dict:
    return OmegaConf.to_container(compose("task=5", *overrides), resolve=True)


def test_every_yaml_under_conf_has_a_reader_here():
    found = {p.relative_to(CONF_DIR).parts[0] for p in CONF_DIR.rglob("*.yaml")}
    assert found == set(READERS)


# ------------------------------------------------------------------------------------------------
# conf/config.yaml: RunSettings
# ------------------------------------------------------------------------------------------------
RUN_KEYS = sorted(set(load_main_defaults()) - {"serve"})  # serve: read by longicl.serve.autostart


@pytest.mark.parametrize("key", RUN_KEYS)
def test_run_settings_need_every_key_of_config_yaml(key):
    from longicl.runner import settings_from_config

    conf = _composed()
    del conf[key]
    with pytest.raises(UsageError, match=rf"^{key} is not set \(conf/config.yaml sets it\)$"):
        settings_from_config(conf)


@pytest.mark.parametrize("key", sorted(load_main_defaults()["model"]))
def test_run_settings_need_every_model_key(key):
    from longicl.runner import settings_from_config

    conf = _composed()
    del conf["model"][key]
    with pytest.raises(UsageError, match=rf"^model\.{key} is not set"):
        settings_from_config(conf)


def test_code_constants_that_name_a_config_yaml_value_read_it():
    from longicl.apicheck.config import DEFAULT_MIN_MODEL_LEN
    from longicl.serve.lifecycle import DEFAULT_TIMEOUT
    from longicl.serve.process import DEFAULT_OUT_DIR

    main = load_main_defaults()
    assert (main["serve"]["timeout"], main["serve"]["out_dir"]) == (DEFAULT_TIMEOUT, DEFAULT_OUT_DIR)
    assert main["max_model_len"] == DEFAULT_MIN_MODEL_LEN
    assert set(main["serve"]) == {"autostart", "config", "profile", "out_dir", "timeout"}


# ------------------------------------------------------------------------------------------------
# conf/method: MethodSettings
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", _files("method"))
def test_method_presets_set_exactly_the_method_settings(preset):
    from longicl.annotators import MethodSettings

    method = _composed(f"method={preset}")["method"]
    assert set(method) == set(MethodSettings.__dataclass_fields__)
    MethodSettings.from_config(method, check_environment=False)
    with pytest.raises(UsageError, match="method.nosuch"):
        MethodSettings.from_config({**method, "nosuch": 1}, check_environment=False)
    for key in sorted(set(method) - {"per_task"})[:3]:
        with pytest.raises(UsageError, match=rf"method\.{key} is not set"):
            MethodSettings.from_config({k: v for k, v in method.items() if k != key}, check_environment=False)


# ------------------------------------------------------------------------------------------------
# conf/kernels: KernelSettings
# ------------------------------------------------------------------------------------------------
def test_kernel_settings_take_exactly_the_kernels_keys():
    from longicl.annotators import KernelSettings
    from longicl.annotators.settings import _flat

    kernels = load_defaults("kernels")
    assert set(_flat(kernels)) == set(KernelSettings.__dataclass_fields__)
    assert KernelSettings.from_config(kernels) == KernelSettings.defaults()
    with pytest.raises(UsageError, match="kernels.nosuch is not a kernel setting"):
        KernelSettings.from_config({**kernels, "nosuch": 1})
    with pytest.raises(UsageError, match="kernels.repair_rounds is not set"):
        KernelSettings.from_config({k: v for k, v in kernels.items() if k != "repair_rounds"})


def test_the_checker_defaults_are_the_kernels_yaml():
    from longicl.kernels import check

    yaml = load_defaults("kernels")["check"]
    params = inspect.signature(check.check_candidate).parameters
    got = {key: params[name].default for key, name in (("timeout", "timeout_s"), ("memory_mb",) * 2)}
    got |= {key: params[key].default for key in ("rtol", "atol", "device")}
    assert got == {key: yaml[key] for key in got}


# ------------------------------------------------------------------------------------------------
# conf/engine: the engine classes
# ------------------------------------------------------------------------------------------------
#: settings an engine sets itself from others (local: the server it starts)
SET_BY_THE_ENGINE = {"local": {"base_url", "model"}}


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``cls(...)``, following ``**options`` up to the base classes."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        for p in params:
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                found.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return found


def _engine_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The settings an engine class takes: its constructor's keywords (the transport's), and for an
    engine of the request policy, `PolicySettings`' fields in place of its ``policy`` argument."""
    from longicl.engines.policy import PolicySettings

    params = _parameters(cls)
    if params.pop("policy", None) is not None:
        params |= dict(inspect.signature(PolicySettings).parameters)
    return params


@pytest.mark.parametrize("name", _files("engine"))
def test_each_engine_takes_the_keys_of_its_yaml_and_no_code_defaults(name):
    from longicl.engines import ENGINES

    engine = _composed(f"engine={name}")["engine"]
    assert engine["name"] == name and name in ENGINES
    keys = set(engine) - {"name"}
    params = _engine_parameters(ENGINES.get(name))
    assert keys - set(params) == set(), "a key of the YAML that the engine does not take"
    required = {n for n, p in params.items() if p.default is p.empty}
    assert required - keys - SET_BY_THE_ENGINE.get(name, set()) == set(), "a setting no YAML gives"
    # a default in code for a key the YAML sets could drift from it; None means "read the YAML"
    repeated = {n: p.default for n, p in params.items() if n in keys and p.default not in (p.empty, None)}
    assert repeated == {}


POLICY_ENGINES = ("local", "openai", "ray")


def test_the_engines_of_the_request_policy_are_the_policy_engines():
    from longicl.engines import ENGINES
    from longicl.engines.policy import PolicyEngine

    policy = {name for name in _files("engine") if issubclass(ENGINES.get(name), PolicyEngine)}
    assert policy == set(POLICY_ENGINES)


@pytest.mark.parametrize("name", POLICY_ENGINES)
def test_policy_settings_are_the_policy_keys_of_each_yaml(name):
    """What an engine's YAML sets beside its transport's own settings is exactly `PolicySettings`."""
    from longicl.engines import ENGINES
    from longicl.engines.policy import PolicySettings

    engine = _composed(f"engine={name}")["engine"]
    transport = set(_parameters(ENGINES.get(name))) - {"policy"}
    policy_keys = set(engine) - {"name"} - transport
    fields = set(PolicySettings.__dataclass_fields__)
    assert policy_keys == fields - SET_BY_THE_ENGINE.get(name, set())
    assert all(
        f.default is f.default_factory is dataclasses.MISSING for f in dataclasses.fields(PolicySettings)
    )


@pytest.mark.parametrize("name", POLICY_ENGINES)
def test_policy_engines_name_a_missing_or_unknown_setting_in_one_line(name):
    from longicl.engines import build_engine

    section = _composed(f"engine={name}")["engine"]
    key = "timeout"
    with pytest.raises(UsageError, match=rf"^engine\.{key} is not set \(see conf/engine/{name}\.yaml\)$"):
        build_engine({k: v for k, v in section.items() if k != key})
    with pytest.raises(UsageError, match=rf"^engine\.nosuch is not a setting of engine={name}$"):
        build_engine({**section, "nosuch": 1})
    for own in SET_BY_THE_ENGINE.get(name, ()):
        with pytest.raises(UsageError, match=rf"^engine\.{own} is not a setting of engine={name}$"):
            build_engine({**section, own: "x"})


@pytest.mark.parametrize("name", ["dryrun"])
def test_engines_without_the_policy_reject_an_unknown_setting(name):
    from longicl.engines import build_engine

    section = _composed(f"engine={name}")["engine"]
    with pytest.raises(UsageError, match=rf"^engine\.nosuch is not a setting of engine={name}$"):
        build_engine({**section, "nosuch": 1})


# ------------------------------------------------------------------------------------------------
# conf/selection: the budget keys RunSettings reads
# ------------------------------------------------------------------------------------------------
SELECTION_KEYS = {"name", "static_tokens", "margin_tokens", "dynamic_tokens", "per_task"}


@pytest.mark.parametrize("preset", _files("selection"))
def test_selection_presets_set_exactly_the_keys_the_runner_reads(preset):
    from longicl.runner import settings_from_config
    from longicl.selection import STRATEGIES, SelectionSettings
    from longicl.tasks import TASKS

    conf = _composed(f"selection={preset}")
    assert set(conf["selection"]) == SELECTION_KEYS and conf["selection"]["name"] in STRATEGIES
    assert set(SelectionSettings.__dataclass_fields__) == SELECTION_KEYS
    assert settings_from_config(conf).selection == SelectionSettings.from_config(conf["selection"])
    with pytest.raises(UsageError, match=r"^selection\.nosuch is not a selection setting"):
        SelectionSettings.from_config({**conf["selection"], "nosuch": 1})
    settings_from_config(conf).budget_for(TASKS[5])
    for key in ("static_tokens", "margin_tokens", "dynamic_tokens"):
        broken = copy.deepcopy(conf)
        del broken["selection"][key]
        with pytest.raises(UsageError, match=rf"selection\.{key} is not set"):
            settings_from_config(broken).budget_for(TASKS[5])


# ------------------------------------------------------------------------------------------------
# conf/prompt: PromptTemplate
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", _files("prompt"))
def test_prompt_presets_set_the_template_texts_and_per_kind_overrides(preset):
    from longicl.prompt import PromptSettings, PromptTemplate
    from longicl.tasks import TASKS, AnswerKind

    prompt = _composed(f"prompt={preset}")["prompt"]
    fields = set(PromptTemplate.__dataclass_fields__)
    assert set(prompt) - {"name", "kinds"} == fields - {"followups"}  # followups: per kind only
    assert set(prompt) == set(PromptSettings.__dataclass_fields__)
    assert PromptSettings.from_config(prompt).as_dict() == prompt  # the fingerprint digests this
    with pytest.raises(UsageError, match=r"^prompt\.nosuch is not a prompt setting"):
        PromptSettings.from_config({**prompt, "nosuch": "x"})
    with pytest.raises(UsageError, match=r"^prompt\.header is not set"):
        PromptSettings.from_config({k: v for k, v in prompt.items() if k != "header"})
    for kind, entry in prompt["kinds"].items():
        AnswerKind(kind)
        assert set(entry or {}) <= fields, kind
    for spec in TASKS.values():
        PromptTemplate.from_config(prompt, spec)


# ------------------------------------------------------------------------------------------------
# conf/task_file: what a task file leaves out
# ------------------------------------------------------------------------------------------------
def test_a_task_file_without_the_optional_keys_gets_the_yaml(tmp_path: Path):
    from longicl.tasks import CONTRACT_KEYS, OPTIONAL_KEYS, TaskSpec, load_task_file

    yaml = load_defaults("task_file")
    assert set(yaml) <= set(CONTRACT_KEYS) | set(OPTIONAL_KEYS)
    data = tmp_path / "rows.jsonl"
    data.write_text('{"q": "a", "a": "b"}\n', encoding="utf-8")
    task = tmp_path / "t.yaml"
    task.write_text(
        "name: t\ndefinition: d\ndata: rows.jsonl\ninput: q\noutput_column: a\nanswer: text\n",
        encoding="utf-8",
    )
    spec = load_task_file(task)
    assert (spec.default_dev_size, spec.metric, spec.annotator) == (
        yaml["dev_size"],
        yaml["metric"],
        yaml["annotator"],
    )
    bare = TaskSpec(name="x", answer_kind=spec.answer_kind)
    assert (bare.default_dev_size, bare.metric, bare.annotator) == (
        yaml["dev_size"],
        yaml["metric"],
        yaml["annotator"],
    )

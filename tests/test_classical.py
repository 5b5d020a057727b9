"""The classical engine: exact programs, pool-trained classifiers, retrieval, the model cache, and
the engine end to end through the runner."""

from __future__ import annotations

import asyncio
import json
import pickle
from collections import Counter
from pathlib import Path

import pytest
import yaml

from longicl.classical import (
    PROGRAMS,
    NearestNeighbour,
    ProgramInputError,
    ProgramModel,
    TfidfClassifier,
    build_model,
)
from longicl.classical.programs import collatz_step, concatenate, min_abs_difference
from longicl.classical.text_models import split_count_query, split_pair
from longicl.cli import compose_config
from longicl.data import Example, load_task, split
from longicl.engines import build_engine
from longicl.engines.base import ChatRequest
from longicl.engines.classical import ClassicalEngine
from longicl.errors import UsageError
from longicl.metrics import score
from longicl.parse import parse_answer
from longicl.runner import run
from longicl.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data" / "openseek"
CONF_DIR = ROOT / "conf"


def _request(task_id: int, sample: Example) -> ChatRequest:
    return ChatRequest(task=TASKS[task_id], sample=sample, messages=[], max_tokens=1)


def _answer(engine: ClassicalEngine, task_id: int, sample: Example):
    return asyncio.run(engine.complete(_request(task_id, sample)))


# ------------------------------------------------------------------------------------------------
# programs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_id", [1, 3, 4])
def test_programs_are_exact_on_every_labelled_example(task_id):
    spec = TASKS[task_id]
    data = load_task(spec, DATA_DIR)
    program = PROGRAMS[spec.program]
    wrong = []
    for ex in data.examples:
        answer = program(ex.input)
        # exact as strings, and also through the parser and the metric the runner uses
        if answer != ex.output or score(spec, parse_answer(spec, answer).value, ex.output) != 1.0:
            wrong.append((ex.id, ex.input, answer, ex.output))
    assert not wrong, wrong[:5]
    for sample in data.test_samples:  # every test input is one the program can read
        assert parse_answer(spec, program(sample.input)).ok


def test_program_edge_cases():
    assert min_abs_difference("[5, 5, 9]") == "0"
    assert min_abs_difference("[-10, 7, 100]") == "17"
    assert min_abs_difference("[3, −4]") == "7"  # unicode minus, read leniently
    assert collatz_step("[0, 1, -3, -4, 7]") == "[0, 4, -8, -2, 22]"
    assert collatz_step("[]") == "[]"
    assert concatenate("['a', 'it,', \"don't\", '']") == "ait,don't"
    for bad_program, bad_input in ((min_abs_difference, "[4]"), (concatenate, "[1, 2]"), (concatenate, "no")):
        with pytest.raises(ProgramInputError):
            bad_program(bad_input)


def test_unreadable_program_input_falls_back_to_retrieval_and_says_so():
    pool = [Example("a", "['x', 'y']", "xy"), Example("b", "['cat', 'dog']", "catdog")]
    model = ProgramModel(program="concatenate").fit(TASKS[4], pool)
    assert model.predict("['p', 'q']").method == "program"
    guess = model.predict("cat and dog, not a list")
    assert (guess.answer, guess.method) == ("catdog", "retrieval") and "could not read" in guess.note
    with pytest.raises(ValueError, match="not one of"):
        ProgramModel(program="no_such_program")


# ------------------------------------------------------------------------------------------------
# classifiers and retrieval, trained on the dev split's pool
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dev_engine(tmp_path_factory) -> ClassicalEngine:
    return ClassicalEngine(cache_dir=tmp_path_factory.mktemp("classical-cache"))


def _dev_accuracy(engine: ClassicalEngine, task_id: int) -> tuple[float, float, set[str]]:
    spec = TASKS[task_id]
    parts = split(load_task(spec, DATA_DIR), "dev")
    asyncio.run(engine.prepare(spec, parts.pool))
    correct, methods = 0.0, set()
    for sample in parts.samples:
        completion = _answer(engine, task_id, sample)
        assert completion.error is None and completion.finish_reason == "stop" and completion.server is None
        methods.add(completion.method)
        correct += score(spec, parse_answer(spec, completion.text).value, sample.output) or 0.0
    top = Counter(ex.output for ex in parts.pool).most_common(1)[0][0]
    majority = sum(ex.output == top for ex in parts.samples) / len(parts.samples)
    return correct / len(parts.samples), majority, methods


@pytest.mark.parametrize(("task_id", "floor"), [(2, 0.55), (5, 0.66), (6, 0.69)])
def test_classifiers_beat_the_majority_label_on_dev(dev_engine, task_id, floor):
    accuracy, majority, methods = _dev_accuracy(dev_engine, task_id)
    assert methods == {"classifier"}
    assert accuracy > majority + 0.05, (accuracy, majority)
    assert accuracy >= floor, accuracy


def test_retrieval_answers_tasks_7_and_8_with_a_pool_output(dev_engine):
    for task_id in (7, 8):
        spec = TASKS[task_id]
        parts = split(load_task(spec, DATA_DIR), "dev")
        asyncio.run(dev_engine.prepare(spec, parts.pool))
        outputs = {ex.output for ex in parts.pool}
        for sample in parts.samples[:5]:
            completion = _answer(dev_engine, task_id, sample)
            assert completion.method == "retrieval" and completion.text in outputs


def test_nearest_neighbour_finds_the_near_duplicate():
    pool = [
        Example("1", "Category: RIVERS \nClue: It flows through Cairo", "the nile"),
        Example("2", "Category: CAPITALS \nClue: The capital of France", "paris"),
    ]
    model = NearestNeighbour().fit(TASKS[7], pool)
    assert model.predict("Category: RIVERS \nClue: This river flows through Cairo").answer == "the nile"


def test_input_readers():
    assert split_count_query("Sentence: 'A dog's bone'. Count the number of nouns in this sentence.") == (
        "A dog's bone",
        "nouns",
    )
    assert split_count_query("just words") == ("just words", "")
    assert split_pair("Sentence 1: Hi there. Sentence 2: Bye. Genre: travel.") == (
        "Hi there.",
        "Bye.",
        "travel",
    )


def test_a_single_label_pool_predicts_that_label():
    pool = [Example(str(i), f"text {i}", "Sad") for i in range(5)]
    assert TfidfClassifier().fit(TASKS[5], pool).predict("anything").answer == "Sad"


# ------------------------------------------------------------------------------------------------
# the cache
# ------------------------------------------------------------------------------------------------
def _small_pool(n: int = 300) -> tuple[Example, ...]:
    return split(load_task(TASKS[5], DATA_DIR), "dev").pool[:n]


def test_second_prepare_loads_the_cached_model(tmp_path):
    spec, pool = TASKS[5], _small_pool()
    first = ClassicalEngine(cache_dir=tmp_path)
    asyncio.run(first.prepare(spec, pool))
    path = first.cache_files[spec.name]
    assert path.is_file() and first.stats == {"fits": 1, "cache_hits": 0}
    written = path.stat().st_mtime_ns

    second = ClassicalEngine(cache_dir=tmp_path)
    asyncio.run(second.prepare(spec, pool))
    assert second.stats == {"fits": 0, "cache_hits": 1} and second.sources[spec.name] == "cache"
    assert path.stat().st_mtime_ns == written  # reused, not rewritten
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind
    probe = Example("q", "I can't stop crying, everything hurts")
    assert _answer(first, 5, probe).text == _answer(second, 5, probe).text


def test_a_changed_pool_or_setting_gets_its_own_cache_entry(tmp_path):
    spec, pool = TASKS[5], _small_pool()
    engine = ClassicalEngine(cache_dir=tmp_path)
    asyncio.run(engine.prepare(spec, pool))
    asyncio.run(engine.prepare(spec, pool[:-1]))
    relabelled = (
        *pool[:-1],
        Example(pool[-1].id, pool[-1].input, "Sad" if pool[-1].output != "Sad" else "Not sad"),
    )
    asyncio.run(engine.prepare(spec, relabelled))
    other = ClassicalEngine(cache_dir=tmp_path, models={"5": {"C": 1.0}})
    asyncio.run(other.prepare(spec, pool))
    assert engine.stats["fits"] == 3 and other.stats["fits"] == 1
    assert len(list(tmp_path.glob("*.pkl"))) == 4


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_object"])
def test_a_corrupt_cache_file_is_ignored_and_rebuilt(tmp_path, damage):
    spec, pool = TASKS[5], _small_pool(120)
    first = ClassicalEngine(cache_dir=tmp_path)
    asyncio.run(first.prepare(spec, pool))
    path = first.cache_files[spec.name]
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not a pickle at all")
    else:
        path.write_bytes(pickle.dumps({"key": "someone else's", "model": "nope"}))
    again = ClassicalEngine(cache_dir=tmp_path)
    asyncio.run(again.prepare(spec, pool))
    assert again.stats == {"fits": 1, "cache_hits": 0}
    third = ClassicalEngine(cache_dir=tmp_path)  # the rebuilt file is good again
    asyncio.run(third.prepare(spec, pool))
    assert third.stats == {"fits": 0, "cache_hits": 1}


def test_use_cache_false_writes_nothing(tmp_path):
    engine = ClassicalEngine(cache_dir=tmp_path / "never", use_cache=False)
    asyncio.run(engine.prepare(TASKS[1], _small_pool(10)))
    assert not (tmp_path / "never").exists()


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGICL_CACHE_DIR", str(tmp_path))
    assert ClassicalEngine().cache.directory == tmp_path / "classical"


# ------------------------------------------------------------------------------------------------
# the engine's settings and failures
# ------------------------------------------------------------------------------------------------
def test_the_engine_reads_its_defaults_from_the_yaml():
    """A side engine built from ``{"name": "classical"}`` alone must behave like engine=classical."""
    conf = yaml.safe_load((CONF_DIR / "engine" / "classical.yaml").read_text(encoding="utf-8"))
    bare = build_engine({"name": "classical"})
    assert isinstance(bare, ClassicalEngine) and bare.models == ClassicalEngine(models=conf["models"]).models
    assert bare.models == {str(k): v for k, v in conf["models"].items()}
    assert (bare.concurrency, bare.use_cache) == (conf["concurrency"], conf["use_cache"])


def test_model_choice_per_task():
    engine = ClassicalEngine(models={"5": {"kind": "nearest"}, "2": None, 7: {"k1": 2.0}})
    assert engine.model_settings(TASKS[1]) == {"kind": "program", "program": "min_abs_difference"}
    assert engine.model_settings(TASKS[5]) == {"kind": "nearest"}  # another kind replaces the default
    assert engine.model_settings(TASKS[2]) == {"kind": "tfidf"}  # dropped: automatic for a label set
    assert engine.model_settings(TASKS[7]) == {"kind": "nearest", "k1": 2.0}


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"cachedir": "x"}, "engine.cachedir"),
        ({"models": {"5": {"kind": "forest"}}}, "engine.models.5"),
        ({"models": {"5": {"classifier": "xgboost"}}}, "engine.models.5"),
        ({"models": {"6": {"gamma": 1}}}, "engine.models.6"),
        ({"models": {"2": "ridge"}}, "engine.models.2"),
    ],
)
def test_bad_settings_are_usage_errors(options, words):
    with pytest.raises(UsageError, match=words.replace(".", r"\.")):
        ClassicalEngine(**options)


def test_build_model_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="unknown classical model: .magic.; known: program"):
        build_model({"kind": "magic"})


def test_an_unprepared_task_is_an_error_completion_not_an_exception():
    completion = _answer(ClassicalEngine(), 3, Example("x", "[1, 2]"))
    assert completion.text is None and "not prepared" in completion.error


def test_a_failing_prediction_is_an_error_completion(tmp_path):
    engine = ClassicalEngine(cache_dir=tmp_path, models={"4": {"kind": "program", "fallback": False}})
    asyncio.run(engine.prepare(TASKS[4], [Example("a", "['x']", "x")]))
    good = _answer(engine, 4, Example("q", "['a', 'b']"))
    assert (good.text, good.method, good.finish_reason, good.server) == ("ab", "program", "stop", None)
    assert good.latency_s >= 0
    bad = _answer(engine, 4, Example("q", "not a list"))
    assert bad.text is None and "ProgramInputError" in bad.error


# ------------------------------------------------------------------------------------------------
# end to end: main's config -> runner -> classical engine -> files
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classical_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("classical-run")
    cache = tmp_path_factory.mktemp("classical-run-cache")
    cfg = compose_config(
        CONF_DIR,
        [
            "engine=classical",
            "task=[1,3,4,5,7]",
            "split=dev",
            "limit=6",
            "progress=false",
            f"data_dir={DATA_DIR}",
            f"out_dir={out}",
            f"engine.cache_dir={cache}",
        ],
    )
    return run(cfg), out, cache


def test_engine_end_to_end_through_the_runner(classical_run):
    result, out, cache = classical_run
    assert result.missing == 0
    tasks = result.summary["tasks"]
    for name in ("openseek-1", "openseek-3", "openseek-4"):
        assert tasks[name]["accuracy"] == 1.0 and tasks[name]["n"] == 6
    assert tasks["openseek-5"]["accuracy"] is not None and tasks["openseek-7"]["n"] == 6
    engine = json.loads((out / "run.json").read_text(encoding="utf-8"))["engine"]
    assert engine["name"] == "classical" and engine["fits"] == 5
    assert engine["models"]["openseek-5"]["settings"]["kind"] == "tfidf"
    assert len(list(cache.glob("*.pkl"))) == 5
    for name in ("openseek-1", "openseek-5"):
        lines = (out / "records" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]
        assert len(records) == 6 and all(r["parsed_ok"] and r["error"] is None for r in records)
        assert all(q["finish_reason"] == "stop" for r in records for q in r["requests"])


def test_records_say_which_classical_method_answered(classical_run):
    _, out, _ = classical_run
    methods = {}
    for name in ("openseek-1", "openseek-5", "openseek-7"):
        lines = (out / "records" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        methods[name] = {json.loads(line)["method"] for line in lines}
    assert methods == {"openseek-1": {"program"}, "openseek-5": {"classifier"}, "openseek-7": {"retrieval"}}

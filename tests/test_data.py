import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import DATA_DIR

from longicl.data import load_task, split
from longicl.errors import DataError, UsageError
from longicl.tasks import TASKS, get_task


def test_vendored_files_match_the_data_readme_checksums():
    readme = (DATA_DIR / "README.md").read_text()
    for spec in TASKS.values():
        digest = hashlib.sha256((DATA_DIR / spec.file).read_bytes()).hexdigest()
        assert re.search(rf"{re.escape(spec.file)} .*{digest}", readme), spec.file


@pytest.mark.parametrize("task_id, n_examples, n_test", [(1, 5500, 500), (5, 1899, 500), (8, 184, 166)])
def test_load_real_files(task_id, n_examples, n_test):
    data = load_task(get_task(task_id), DATA_DIR)
    assert len(data.examples) == n_examples and len(data.test_samples) == n_test
    assert data.definition and all(ex.output is not None for ex in data.examples)
    assert all(s.output is None for s in data.test_samples)


def _write(tmp_path: Path, doc) -> Path:
    spec = get_task(5)
    (tmp_path / spec.file).write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return tmp_path


GOOD = {
    "Definition": ["Say if it is sad."],
    "examples": [
        {"id": "a", "input": "x", "output": ["Sad"]},
        {"id": "b", "input": "y", "output": ["Not sad"]},
    ],
    "test_samples": [{"id": "t", "input": "z"}],
}


@pytest.mark.parametrize(
    "doc, message",
    [
        ("{not json", "invalid JSON at line 1"),
        ([1, 2], "top level must be a JSON object"),
        ({k: v for k, v in GOOD.items() if k != "Definition"}, "missing field 'Definition'"),
        ({k: v for k, v in GOOD.items() if k != "examples"}, "missing field 'examples'"),
        ({k: v for k, v in GOOD.items() if k != "test_samples"}, "missing field 'test_samples'"),
        ({**GOOD, "examples": []}, "'examples' is empty"),
        ({**GOOD, "examples": [{"id": "a", "input": "x"}]}, "examples[0].output is missing"),
        ({**GOOD, "examples": [{"id": "a", "input": 3, "output": ["Sad"]}]}, "examples[0].input"),
        ({**GOOD, "examples": [{"id": "", "input": "x", "output": ["Sad"]}]}, "examples[0].id"),
        ({**GOOD, "examples": [{"id": "a", "input": "x", "output": []}]}, "examples[0].output must be"),
        ({**GOOD, "test_samples": [{"id": "a", "input": "z"}]}, "test_samples[0].id 'a' duplicates"),
        ({**GOOD, "Definition": 7}, "'Definition' must be"),
    ],
)
def test_malformed_files_raise_one_line_naming_file_and_field(tmp_path, doc, message):
    with pytest.raises(DataError) as info:
        load_task(get_task(5), _write(tmp_path, doc))
    text = str(info.value)
    assert message in text and get_task(5).file in text and "\n" not in text


def test_missing_dir_and_file(tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        load_task(get_task(5), tmp_path / "nope")
    with pytest.raises(DataError, match="task file not found"):
        load_task(get_task(5), tmp_path)


def test_dev_split_is_stratified_deterministic_and_leak_free():
    data = load_task(get_task(5), DATA_DIR)
    dev = split(data, "dev", seed=0)
    assert len(dev.samples) == 200
    assert dev.samples == split(data, "dev", seed=0).samples
    assert dev.samples != split(data, "dev", seed=1).samples
    shares = Counter(s.output for s in dev.samples)
    whole = Counter(e.output for e in data.examples)
    for label in whole:
        assert abs(shares[label] / 200 - whole[label] / len(data.examples)) < 0.01
    held = {s.id for s in dev.samples} | {s.input for s in dev.samples}
    assert not any(e.id in held or e.input in held for e in dev.pool)
    order = [e.id for e in data.examples]
    assert [s.id for s in dev.samples] == sorted((s.id for s in dev.samples), key=order.index)


def test_dev_split_sizes_and_test_split():
    kernels = load_task(get_task(8), DATA_DIR)
    assert len(split(kernels, "dev").samples) == 40
    test = split(kernels, "test")
    assert test.pool == kernels.examples and test.samples == kernels.test_samples
    with pytest.raises(UsageError):
        split(kernels, "train")
    with pytest.raises(UsageError):
        split(kernels, "dev", dev_size=184)

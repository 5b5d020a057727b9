from collections import Counter

import pytest
from conftest import DATA_DIR

from longicl.data import Example, load_task, split
from longicl.errors import UsageError
from longicl.selection import STRATEGIES, BM25Index, PromptBudget, build_selector
from longicl.tasks import get_task

BUDGET = PromptBudget(static_tokens=3000, dynamic_tokens=600, min_icl_tokens=0, max_prompt_tokens=10_000)


@pytest.fixture(scope="module")
def sadness():
    data = load_task(get_task(5), DATA_DIR)
    parts = split(data, "dev")
    costs = [10 + len(ex.input) // 4 for ex in parts.pool]
    return data.spec, parts, costs


def test_registry_names_match_opencompass_style():
    assert set(STRATEGIES) == {"random", "balanced", "bm25", "hybrid", "centroid"}
    with pytest.raises(UsageError):
        build_selector("knn", get_task(5), [], [])


@pytest.mark.parametrize("name", ["random", "balanced", "hybrid"])
def test_static_blocks_are_deterministic_and_reach_the_budget(sadness, name):
    spec, parts, costs = sadness
    selector = build_selector(name, spec, parts.pool, costs, seed=3)
    block = selector.static_demos(BUDGET)
    assert block == build_selector(name, spec, parts.pool, costs, seed=3).static_demos(BUDGET)
    assert block != selector.static_demos(BUDGET, variant=1)
    target = BUDGET.static_tokens + (0 if name == "hybrid" else BUDGET.dynamic_tokens)
    total = sum(costs[i] for i in block)
    assert target <= total < target + max(costs)
    assert len(set(block)) == len(block)


def test_balanced_interleaves_labels_never_grouping_them(sadness):
    spec, parts, costs = sadness
    block = build_selector("balanced", spec, parts.pool, costs).static_demos(BUDGET)
    labels = [parts.pool[i].output for i in block]
    counts = Counter(labels)
    assert abs(counts["Sad"] - counts["Not sad"]) <= 1
    longest_run = max(
        len(run)
        for run in "".join("S" if x == "Sad" else "N" for x in labels)
        .replace("SN", "S N")
        .replace("NS", "N S")
        .split()
    )
    assert longest_run <= 2


def test_hybrid_static_block_keeps_pool_label_shares(sadness):
    spec, parts, costs = sadness
    block = build_selector("hybrid", spec, parts.pool, costs).static_demos(BUDGET)
    share = sum(parts.pool[i].output == "Sad" for i in block) / len(block)
    pool_share = sum(ex.output == "Sad" for ex in parts.pool) / len(parts.pool)
    assert abs(share - pool_share) < 0.03


def test_bm25_ranks_the_closest_text_first():
    index = BM25Index(["the cat sat on the mat", "dogs bark loudly", "a cat and a dog", "quantum physics"])
    assert list(index.ranked("cat on a mat")[:2]) == [0, 2]
    assert index.scores("zebra").sum() == 0


def test_dynamic_block_respects_budget_excludes_static_and_puts_best_last(sadness):
    spec, parts, costs = sadness
    selector = build_selector("hybrid", spec, parts.pool, costs)
    static = frozenset(selector.static_demos(BUDGET))
    query = parts.samples[0]
    dynamic = selector.dynamic_demos(query, BUDGET, static)
    assert dynamic and not static & set(dynamic)
    assert sum(costs[i] for i in dynamic) <= BUDGET.dynamic_tokens
    scores = selector.index.scores(query.input)
    assert scores[dynamic[-1]] == max(scores[i] for i in dynamic)
    assert query.id not in {parts.pool[i].id for i in dynamic}


def test_pure_bm25_fills_the_whole_budget_per_sample(sadness):
    spec, parts, costs = sadness
    selector = build_selector("bm25", spec, parts.pool, costs)
    assert selector.static_demos(BUDGET) == []
    chosen = selector.dynamic_demos(parts.samples[0], BUDGET, frozenset())
    total = sum(costs[i] for i in chosen)
    assert BUDGET.static_tokens + BUDGET.dynamic_tokens - max(costs) <= total <= 3600


def test_open_answer_tasks_fall_back_to_random_order():
    spec = get_task(7)
    pool = [Example(str(i), f"clue {i}", f"answer {i}") for i in range(50)]
    block = build_selector("balanced", spec, pool, [10] * 50).static_demos(PromptBudget(100, 0, 0, 1000))
    assert len(block) == 10 and block != list(range(10))

from collections import Counter

import pytest

from longicl.metrics import aggregate, score
from longicl.tasks import get_task


def test_score_exact_match_after_normalisation():
    assert score(get_task(5), "Not sad", "Not sad") == 1.0
    assert score(get_task(7), "Paris", "paris") == 1.0
    assert score(get_task(4), "abc", "aBc") == 0.0
    assert score(get_task(1), "", "3") == 0.0
    assert score(get_task(1), "3", None) is None
    assert score(get_task(8), "code", "code") is None


def _record(correct, parsed_ok=True, error=None, tokens=(31000, 500)):
    request = {"prompt_tokens": tokens[0], "icl_tokens": tokens[0] - 900, "uncached_tokens": tokens[1]}
    return {
        "correct": correct,
        "parsed_ok": parsed_ok,
        "error": error,
        "requests": [request],
        "method": "icl",
    }


def test_aggregate():
    rows = [_record(1.0), _record(0.0, parsed_ok=False), _record(0.0, error="timeout", tokens=(32000, 700))]
    m = aggregate(rows, seconds=2.5)
    assert m.n == 3 and abs(m.accuracy - 1 / 3) < 1e-9
    assert m.parse_failures == 1 and m.failed_requests == 1
    assert m.prompt_tokens.min == 31000 and m.prompt_tokens.max == 32000
    assert m.uncached_prompt_tokens.median == 500
    assert m.method == "icl" and m.requests == 3


def test_aggregate_without_gold_has_no_accuracy():
    assert aggregate([_record(None)], 1.0).accuracy is None


def test_human_decided_records_are_scored_with_the_models_answer():
    """A record from `longicl review import` counts with the model's answer; one from before
    ``model_correct`` was kept is scored again from ``model_prediction``."""
    spec = get_task(5)
    wrong, right = spec.labels
    human = {"answered_by": "human", "prediction": right, "gold": right, "correct": 1.0, "error": None}
    kept = {**_record(0.0), **human, "model_prediction": wrong, "model_correct": 0.0, "model_error": None}
    older = {**_record(0.0), **human, "model_prediction": wrong, "model_error": None}
    failed = {**_record(0.0), **human, "model_prediction": "", "model_correct": 0.0, "model_error": "timeout"}
    m = aggregate([kept, older, failed, _record(1.0)], 1.0, spec)
    assert m.accuracy == 0.25 and m.score == 0.25
    assert m.human_decided == 3 and m.failed_requests == 1


# ------------------------------------------------------------------------------------------------
# MetricsTally against the whole-list aggregate it replaced (kept here as the oracle)
# ------------------------------------------------------------------------------------------------
def _oracle_aggregate(records, seconds, spec=None):
    """`aggregate` as it was before `MetricsTally`: every record in a list, the model's answers
    re-built as dicts, `statistics.median` over lists, `f1_score` over one entry per sample."""
    import statistics

    from sklearn.metrics import f1_score

    from longicl.metrics import TASK_METRICS, Spread, TaskMetrics
    from longicl.parse import normalise
    from longicl.records import HUMAN

    def human_decided(record):
        return record.get("answered_by") == HUMAN

    def as_model_answered(record):
        if not human_decided(record):
            return record
        return {
            **record,
            "prediction": record.get("model_prediction") or "",
            "correct": record.get("model_correct"),
            "error": record.get("model_error"),
        }

    def spread(values):
        return Spread(min(values), float(statistics.median(values)), max(values)) if values else None

    def accuracy_of(rows):
        scored = [r["correct"] for r in rows if r.get("correct") is not None]
        return (sum(scored) / len(scored)) if scored and len(scored) == len(rows) else None

    def macro_f1(rows):
        if not rows or any(r.get("gold") is None for r in rows):
            return None
        gold = [normalise(spec, r["gold"]) for r in rows]
        predicted = [normalise(spec, r.get("prediction") or "") if r.get("prediction") else "" for r in rows]
        labels = [normalise(spec, label) for label in spec.labels or ()] or sorted(set(gold))
        return float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0))

    given = list(records)
    rows = []
    for record in given:
        model = as_model_answered(record)
        if model is not record and "model_correct" not in record and spec is not None:
            model["correct"] = score(spec, model["prediction"], record.get("gold"))
        rows.append(model)
    metric = spec.metric if spec is not None and spec.metric in TASK_METRICS else None
    number = {"exact_match": accuracy_of, "macro_f1": macro_f1}.get(metric, lambda rows: None)
    requests = [q for r in rows for q in r.get("requests", [])]
    methods = sorted({r.get("method", "icl") for r in rows})
    return TaskMetrics(
        n=len(rows),
        accuracy=accuracy_of(rows),
        parse_failures=sum(
            1 for r in rows if not r.get("error") and not r.get("unanswered") and r.get("parsed_ok") is False
        ),
        failed_requests=sum(1 for r in rows if r.get("error")),
        prompt_tokens=spread([q["prompt_tokens"] for q in requests if q.get("prompt_tokens")]),
        icl_tokens=spread([q["icl_tokens"] for q in requests if q.get("icl_tokens") is not None]),
        uncached_prompt_tokens=spread(
            [q["uncached_tokens"] for q in requests if q.get("uncached_tokens") is not None]
        ),
        requests=len(requests),
        seconds=round(seconds, 3),
        method="+".join(methods) if methods else "icl",
        score=number(rows) if spec is not None else None,
        human_decided=sum(1 for r in given if human_decided(r)),
    )


def _random_records(rng, spec, n):
    answers = [*(spec.labels or ("a", "b")), "", "garbage", " Not SAD "]
    records = []
    for i in range(n):
        gold = None if rng.random() < 0.02 else rng.choice(spec.labels or ("a", "b"))
        prediction = rng.choice(answers)
        record = {
            "sample_id": str(i),
            "index": i,
            "prediction": prediction,
            "parsed_ok": rng.choice([True, False, None]),
            "gold": gold,
            "correct": rng.choice([1.0, 0.0, None]) if rng.random() < 0.3 else score(spec, prediction, gold),
            "method": rng.choice(["icl", "icl", "icl+classifier", "program"]),
            "error": "timeout" if rng.random() < 0.1 else None,
            "requests": [
                {
                    "prompt_tokens": rng.choice([0, rng.randrange(100, 140)]),
                    "icl_tokens": rng.choice([None, rng.randrange(50, 90)]),
                    "uncached_tokens": rng.choice([None, rng.randrange(0, 30)]),
                }
                for _ in range(rng.randrange(0, 4))
            ],
        }
        if rng.random() < 0.1:
            record["unanswered"] = "cut"
        if rng.random() < 0.15:  # a review's import: the human's answer, the model's kept
            record.update(model_prediction=prediction, model_error=record["error"], answered_by="human")
            record.update(prediction=rng.choice(answers), error=None)
            if rng.random() < 0.5:
                record["model_correct"] = score(spec, prediction, gold)
        if rng.random() < 0.05:
            del record["method"]
        records.append(record)
    return records


@pytest.mark.parametrize("metric", ["exact_match", "macro_f1", "kernel_check", None])
@pytest.mark.parametrize("seed", range(6))
def test_the_tally_gives_the_same_numbers_as_the_whole_list_aggregate(metric, seed):
    import dataclasses
    import random

    from longicl.metrics import MetricsTally
    from longicl.records import SampleRecord

    rng = random.Random(seed)
    spec = None if metric is None else dataclasses.replace(get_task(5), metric=metric)
    if metric == "macro_f1" and seed % 2:
        spec = dataclasses.replace(spec, labels=None)  # labels from the golds
    records = _random_records(rng, spec or get_task(5), rng.choice([1, 2, 7, 200, 1500]))
    if seed >= 3:  # every sample with a gold: macro F1 is computed
        records = [r for r in records if r["gold"] is not None]
    expected = _oracle_aggregate(records, 1.23456, spec)
    tally = MetricsTally(spec)
    for record in records:
        tally.add(SampleRecord.from_dict(record))
    got = tally.result(1.23456)
    assert got == expected
    assert repr(got) == repr(expected)  # the same floats, digit for digit
    assert aggregate(records, 1.23456, spec) == expected  # the wrapper, over dicts
    if metric == "macro_f1" and seed >= 3:
        assert got.score is not None


def test_a_spread_of_counts_is_the_median_of_the_values():
    import statistics

    from longicl.metrics import Spread

    for values in ([5], [1, 2], [3, 1, 2], [4, 4, 1, 9], [7, 7, 7, 8], [2, 9, 9, 9, 1, 1]):
        spread = Spread.of(Counter(values))
        assert spread == Spread(min(values), float(statistics.median(values)), max(values))
    assert Spread.of(Counter()) is None and Spread.of([]) is None

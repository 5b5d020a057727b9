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

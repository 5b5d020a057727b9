"""Confidence, its calibration, agreement statistics and the pool audit (longicl.quality)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import compose
from fake_server import FakeServer, NoisyAnswers

from longicl.methods import calibration as cal
from longicl.methods.scoring import label_logprobs
from longicl.quality import agreement as ag
from longicl.quality import confidence_metrics as qm
from longicl.quality.audit import audit
from longicl.quality.confidence import AGREEMENT, BOTH, LOGPROB, Support, confidence, of_record
from longicl.quality.summary import task_quality
from longicl.rundir import RunDir
from longicl.runner import run
from longicl.tasks import TASKS


# ------------------------------------------------------------------------------------------------
# the label token and the confidence rule
# ------------------------------------------------------------------------------------------------
def _token(text: str, top: dict[str, float] | None = None) -> dict:
    return {"token": text, "logprob": (top or {}).get(text, -0.01), "top": top or {text: -0.01}}


def test_label_scores_are_read_where_the_label_is_generated_not_at_the_first_token():
    tokens = [
        _token("<"),
        _token("label"),
        _token(">"),
        _token("Not", {"Not": math.log(0.7), "Sad": math.log(0.3)}),
        _token(" sad"),
        _token("</"),
        _token("label"),
        _token(">"),
    ]
    assert label_logprobs(TASKS[5], tokens) is None  # the first token "<" is no label
    scores = label_logprobs(TASKS[5], tokens, answer="Not sad")
    assert scores is not None
    assert math.exp(scores["Not sad"]) == pytest.approx(0.7, abs=1e-6)
    # a token that carries text before the label (">Sad"): the lead is cut from it and its alternatives
    merged = [_token("Answer:"), _token(" >Y", {" >Y": math.log(0.6), " >N": math.log(0.4)})]
    scores = label_logprobs(TASKS[6], merged, answer="Y")
    assert math.exp(scores["Y"]) == pytest.approx(0.6, abs=1e-6)
    # reasoning before </think> is skipped even when it mentions the label
    thinking = [
        _token("Y", {"Y": 0.0}),
        _token("</think>"),
        _token("N", {"N": math.log(0.8), "Y": math.log(0.2)}),
    ]
    assert math.exp(label_logprobs(TASKS[6], thinking, answer="N")["N"]) == pytest.approx(0.8, abs=1e-6)


def test_confidence_rule_and_its_sources():
    lp = {"Sad": math.log(0.9), "Not sad": math.log(0.1)}
    assert confidence("Sad", [Support("Sad")]).value is None  # one unscored answer: no number
    assert confidence("Sad", [Support("Sad")]).source is None
    one = confidence("Sad", [Support("Sad", lp)])
    assert one.value == pytest.approx(0.9) and one.source == LOGPROB
    votes = [Support("Sad"), Support("Sad"), Support("Not sad"), Support("")]
    agree = confidence("Sad", votes)
    assert agree.value == pytest.approx(0.5) and agree.source == AGREEMENT
    both = confidence(
        "Sad", [Support("Sad", lp), Support("Not sad", {"Sad": math.log(0.4), "Not sad": math.log(0.6)})]
    )
    assert both.value == pytest.approx(0.65) and both.source == BOTH
    assert confidence("", [Support("", lp)]).value is None
    # keys compare answers in the metric's normalised form
    assert confidence("sad", [Support("Sad"), Support("SAD")], key=str.lower).value == 1.0


# ------------------------------------------------------------------------------------------------
# metrics and agreement
# ------------------------------------------------------------------------------------------------
def test_ece_reliability_coverage_and_auroc():
    conf = [0.9] * 10 + [0.6] * 10
    right = [1.0] * 9 + [0.0] + [1.0] * 6 + [0.0] * 4
    assert qm.ece(conf, right) == pytest.approx(0.0)
    assert qm.ece([1.0] * 4, [1.0, 0.0, 1.0, 0.0]) == pytest.approx(0.5)
    bins = qm.reliability(conf, right)
    assert sum(b.n for b in bins) == 20 and len(bins) == qm.BINS
    table = qm.coverage_accuracy(conf, right, [0.5, 1.0])
    assert table[0]["accuracy"] == pytest.approx(0.9) and table[0]["threshold"] == 0.9
    assert table[1]["accuracy"] == pytest.approx(0.75)
    assert qm.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert qm.auroc([0.5, 0.6], [1, 1]) is None


def test_fleiss_and_cohen_kappa():
    assert ag.fleiss_kappa([["a", "a", "a"], ["b", "b", "b"]]) == pytest.approx(1.0)
    # two raters, 4 samples, agreeing on half, categories balanced: observed 0.5, expected 0.5 -> 0
    assert ag.fleiss_kappa([["a", "a"], ["b", "b"], ["a", "b"], ["b", "a"]]) == pytest.approx(0.0)
    assert ag.fleiss_kappa([["a"], ["b"]]) is None
    assert ag.fleiss_kappa([["a", "a"], ["a", "a"]]) is None
    assert ag.cohen_kappa(["a", "b", "a", "b"], ["a", "b", "a", "b"]) == pytest.approx(1.0)


def test_confidence_map_is_monotone_and_round_trips_through_the_calibration_file(tmp_path):
    conf = [i / 40 for i in range(40)]
    right = [float(c > 0.5) for c in conf]
    fitted = cal.ConfidenceMap.fit(conf, right)
    assert fitted.apply(0.9) == pytest.approx(1.0) and fitted.apply(0.1) == pytest.approx(0.0)
    assert all(fitted.apply(a) <= fitted.apply(b) for a, b in zip(conf, conf[1:], strict=False))
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"openseek-7": {"confidence": fitted.to_dict()}}))
    cal._load_cached.cache_clear()
    assert cal.confidence_map(path, "openseek-7") == cal.ConfidenceMap.from_dict(fitted.to_dict(), "x")
    assert cal.confidence_map(path, "openseek-5") is None
    path.write_text(json.dumps({"openseek-7": {"confidence": {"method": "magic"}}}))
    cal._load_cached.cache_clear()
    with pytest.raises(cal.UsageError, match="openseek-7.confidence"):
        cal.load_file(path)


# ------------------------------------------------------------------------------------------------
# against the fake server with answer noise
# ------------------------------------------------------------------------------------------------
LABELS = {t.id: t.labels for t in TASKS.values() if t.labels}


@pytest.fixture(scope="module")
def noisy_quality(tmp_path_factory, gold_answers):
    """Task 5 (label scores, K=1) and task 1 (integers, agreement of K=3), dev, noisy answers."""
    out = {}
    policy = NoisyAnswers(gold_answers, LABELS, seed=3)
    with FakeServer(policy) as server:
        for name, overrides in {
            "logprob": ["task=5", "limit=60"],
            "agreement": ["task=1", "limit=40", "method.self_consistency=3"],
        }.items():
            path = tmp_path_factory.mktemp(name)
            run(compose(*overrides, "split=dev", f"engine.base_url={server.url}", f"out_dir={path}"))
            out[name] = path
    return out


@pytest.mark.parametrize(("kind", "task", "source"), [("logprob", 5, LOGPROB), ("agreement", 1, AGREEMENT)])
def test_confidence_separates_right_from_wrong_answers(noisy_quality, kind, task, source):
    spec = TASKS[task]
    records = list(RunDir(noisy_quality[kind]).all_records(spec.name).values())
    quality = task_quality(spec, records, "dev", noisy_quality[kind])
    conf = quality["confidence"]
    assert conf["with_confidence"] == len(records) and conf["sources"] == {source: len(records)}
    assert 0.0 < conf["accuracy"] < 1.0  # the noise made mistakes
    assert conf["auroc"] > 0.5  # better than chance
    assert sum(conf["histogram"]["counts"]) == len(records)
    assert [p["coverage"] for p in conf["coverage_accuracy"]] == list(qm.COVERAGES)
    written = json.loads((noisy_quality[kind] / "calibration.json").read_text())[spec.name]["confidence"]
    assert written["method"] == "isotonic" and written["dev_samples"] == len(records)
    if task == 1:
        assert quality["agreement"]["variants"]["k"] == 3
        assert quality["agreement"]["variants"]["fleiss_kappa"] is not None
    assert "cohen_kappa" in quality["agreement"]["vs_gold"]


def test_audit_lists_confident_contradictions_of_gold():
    spec = TASKS[5]
    lp = {"Sad": math.log(0.95), "Not sad": math.log(0.05)}
    records = [
        {
            "sample_id": "a",
            "prediction": "Sad",
            "gold": "Not sad",
            "vote": {},
            "requests": [{"answer": "Sad", "label_logprobs": lp}],
        },
        {
            "sample_id": "b",
            "prediction": "Sad",
            "gold": "Sad",
            "vote": {},
            "requests": [{"answer": "Sad", "label_logprobs": lp}],
        },
        {
            "sample_id": "c",
            "prediction": "Sad",
            "gold": "Not sad",
            "vote": {},
            "requests": [{"answer": "Sad"}],
        },
    ]
    suspects = audit(spec, records)
    assert [s.sample_id for s in suspects] == ["a"]
    assert suspects[0].confidence == pytest.approx(0.95) and suspects[0].gold == "Not sad"
    assert of_record(records[2]).value is None


def test_report_has_a_quality_section_with_figures_and_the_audit(noisy_quality, tmp_path):
    from longicl import analysis as an
    from longicl.report import build_report

    run_data = an.load_run(noisy_quality["logprob"])
    rows = an.quality_rows(run_data)
    assert rows.iloc[0]["task"] == "openseek-5" and rows.iloc[0]["AUROC"] > 0.5
    assert rows["AUROC"].dtype == "Float64" and rows["samples"].dtype == "Int64"
    written = build_report([noisy_quality["logprob"], noisy_quality["agreement"]], tmp_path)
    text = written.markdown.read_text()
    section = text[text.index("## Quality") :]
    assert "AUROC" in section and "Fleiss κ (variants)" in section and "Demo-pool audit" in section
    names = {p.name for p in written.figures}
    assert {"reliability_" in n for n in names} >= {True} and any(n.startswith("coverage_") for n in names)
    assert all(p.is_file() for p in written.figures)


def test_every_record_carries_its_confidence_and_a_test_run_applies_the_dev_map(
    noisy_quality, tmp_path, gold_answers
):
    records = list(RunDir(noisy_quality["logprob"]).all_records("openseek-5").values())
    assert all(r["confidence_source"] == LOGPROB and 0.0 <= r["confidence"] <= 1.0 for r in records)
    summary = json.loads((noisy_quality["agreement"] / "run.json").read_text())
    assert summary["tasks"]["openseek-1"]["quality"]["agreement"]["variants"]["k"] == 3
    cal._load_cached.cache_clear()
    with FakeServer(NoisyAnswers(gold_answers, LABELS, seed=3)) as server:
        run(
            compose(
                "task=5", "split=test", "limit=5", f"method.calibration={noisy_quality['logprob'] / 'calibration.json'}",
                f"engine.base_url={server.url}", f"out_dir={tmp_path}",
            )
        )  # fmt: skip
    mapping = cal.confidence_map(noisy_quality["logprob"] / "calibration.json", "openseek-5")
    for record in RunDir(tmp_path).all_records("openseek-5").values():
        assert record["confidence_source"] == f"{LOGPROB}|isotonic"
        assert record["confidence"] == pytest.approx(mapping.apply(record["confidence_raw"]), abs=1e-6)

"""The one-pass tallies (`QualityTally`, `MethodTally`, `KernelTally`) give, byte for byte, what the
list-based summaries gave, for every run up to their cap, and keep bounded state past it.

The reference oracle below is a copy of the list-based functions as they were before the tallies
(`task_quality`, `task_report`, `kernel_metrics` and the audit), kept only here.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from longicl.annotators import MethodSettings
from longicl.files import atomic_write_json
from longicl.kernels import execution_metrics as km
from longicl.methods import report as rp
from longicl.methods.calibration import MIN_CONFIDENCE_ROWS, ConfidenceMap, cross_fitted_confidence
from longicl.metrics import score
from longicl.parse import normalise
from longicl.quality import agreement as ag
from longicl.quality import confidence_metrics as qm
from longicl.quality import summary as qs
from longicl.quality.audit import THRESHOLD, Suspect
from longicl.quality.confidence import model_prediction, of_record
from longicl.records import AnyRecord, SampleRecord, as_record, task_method
from longicl.reservoir import Reservoir
from longicl.tasks import TASKS, TaskSpec


# ------------------------------------------------------------------------------------------------
# synthetic records
# ------------------------------------------------------------------------------------------------
def _answers(spec: TaskSpec) -> list[str]:
    return list(spec.labels) if spec.labels else ["3", "7", "12", "-1", "40"]


def _logprobs(rng: random.Random, labels: Sequence[str]) -> dict[str, float]:
    weights = [rng.random() + 0.01 for _ in labels]
    total = sum(weights)
    return {label: round(float(np.log(w / total)), 6) for label, w in zip(labels, weights, strict=True)}


def _record(
    rng: random.Random, spec: TaskSpec, index: int, split: str, k: int, mapped: bool = False
) -> dict[str, Any]:
    answers = _answers(spec)
    gold = rng.choice(answers) if split == "dev" else None
    record: dict[str, Any] = {
        "task": spec.name,
        "sample_id": f"s{index % 97 if rng.random() < 0.1 else index}",  # a few repeated ids
        "index": index,
    }
    if rng.random() < 0.06:  # nothing answered (a dry run, a failure)
        record.update(
            prediction="",
            parsed_ok=None,
            parse_error=None,
            gold=gold,
            correct=None,
            method="icl",
            error="failed" if rng.random() < 0.5 else None,
            requests=[],
            vote=None,
            confidence=None,
            confidence_source=None,
        )
        return record
    variants = k if rng.random() < 0.9 else max(1, k - 1)  # some rows with fewer variants
    requests = []
    for variant in range(variants):
        answer = rng.choice(answers) if rng.random() < 0.9 else ""
        scored = spec.is_closed and rng.random() < 0.8
        request = {
            "variant": variant,
            "parsed": answer,
            "answer": answer,
            "label_logprobs": _logprobs(rng, answers) if scored else None,
            "calibrated_logprobs": None,
            "error": None if answer or rng.random() < 0.5 else "boom",
        }
        if rng.random() < 0.05:
            del request["variant"]
        requests.append(request)
    given = [q["answer"] for q in requests if q["answer"]]
    prediction = max(sorted(set(given)), key=given.count) if given else ""
    vote: dict[str, Any] = {"tie_break": rng.random() < 0.2}
    if rng.random() < 0.9:
        vote["agreement"] = rng.choice([1.0, 1, 0.5, round(2 / 3, 6), rng.random()])
    if rng.random() < 0.5:
        vote["side"] = [{"source": "classifier", "answer": rng.choice(answers + [""])}]
        if rng.random() < 0.3:
            vote["side"].append({"source": "program", "answer": rng.choice(answers)})
    method = rng.choice(["icl", "icl", "icl+classifier", "icl+program", None])
    record.update(
        prediction=prediction,
        parsed_ok=bool(prediction),
        parse_error=None,
        gold=gold,
        correct=(float(normalise(spec, prediction) == normalise(spec, gold)) if prediction else 0.0)
        if gold is not None
        else None,
        method=method,
        error=None,
        requests=requests,
        vote=vote,
    )
    if method is None:
        del record["method"]
    kind = 0.6 if mapped else rng.random()  # mapped: every confidence went through a map
    if kind < 0.55:  # a stored confidence, from a small set (ties) or continuous
        value = rng.choice([0.5, 0.9, 1.0, round(rng.random(), 6)])
        record.update(confidence=value, confidence_source=rng.choice(["logprob", "agreement"]))
    elif kind < 0.7:  # a confidence map applied: the raw value kept beside it
        raw = round(rng.random(), 6)
        record.update(confidence=round(min(1.0, raw * 1.1), 6), confidence_source="agreement|isotonic")
        record["confidence_raw"] = raw
    elif kind < 0.8:
        record.update(confidence=None, confidence_source=None)
    # else: an older record without confidence fields (computed from its requests)
    record["decided_by"] = "text"
    if rng.random() < 0.2:
        record["calibration"] = {"mode": rng.choice(["batch", "bias"])}
    if rng.random() < 0.3:
        record["program"] = {key: rng.random() < 0.5 for key in ("usable", "agreed", "replaced")}
    if rng.random() < 0.08:  # a human decided it (longicl review import)
        human = rng.choice(answers)
        record.update(
            model_prediction=prediction,
            model_correct=record["correct"],
            model_error=None,
            answered_by="human",
            human={"answer": human, "annotator": "a"},
            prediction=human,
        )
    return record


def _records(
    seed: int, spec: TaskSpec, n: int, split: str, k: int, mapped: bool = False
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [_record(rng, spec, i, split, k, mapped) for i in range(n)]


def _kernel_record(rng: random.Random, index: int) -> dict[str, Any]:
    record = {"task": "openseek-8", "sample_id": f"k{index}", "index": index, "prediction": ""}
    if rng.random() < 0.15:
        return record
    record["prediction"] = "code" if rng.random() < 0.8 else ""
    candidates = [
        {
            "source": rng.choice(["triton", "torch"]),
            "passed": rng.random() < 0.5,
            "seconds": round(rng.random() * 3, 3) if rng.random() < 0.9 else None,
            "against_reference": rng.random() < 0.5,
        }
        for _ in range(rng.randint(0, 3))
    ]
    kernel: dict[str, Any] = {
        "final": rng.choice(["triton", "torch", "fallback"]),
        "stage": rng.choice(["passed", "compile", "call", "compare", None]),
        "kind": rng.choice(["triton", None, "torch"]),
        "callable": rng.random() < 0.6,
        "agrees": rng.choice([True, False, None]),
        "uses_triton": rng.random() < 0.5,
        "reference_passed": rng.random() < 0.5,
        "candidates": candidates,
    }
    if rng.random() < 0.5:
        kernel["repair_rounds"] = rng.randint(0, 3)
    if rng.random() < 0.5:
        kernel["reference"] = {"seconds": round(rng.random(), 3)}
    if rng.random() < 0.6:
        kernel["gold"] = {
            "passed": rng.random() < 0.7,
            "callable": rng.random() < 0.8,
            "stage": rng.choice(["passed", "call"]),
            "kind": rng.choice(["triton", None]),
            "cuda_shim_used": rng.random() < 0.2,
        }
        if rng.random() < 0.8:
            kernel["vs_gold"] = {
                "agrees": rng.choice([True, False]),
                "callable": rng.random() < 0.5,
                "stage": "compare",
            }
    record["kernel"] = kernel
    return record


def _settings(k: int, **changes: Any) -> MethodSettings:
    return MethodSettings.defaults(self_consistency=k, **changes)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=False)


def _feed(tally: Any, records: Iterable[AnyRecord]) -> Any:
    for record in records:
        tally.add(record)
    return tally.result()


SPECS = {"label": TASKS[5], "exact_match": TASKS[1], "macro_f1": replace(TASKS[6], metric="macro_f1")}
# ------------------------------------------------------------------------------------------------
# the tallies against the oracle
# ------------------------------------------------------------------------------------------------
CASES = [
    (seed, *case[:4], len(case) > 4)
    for seed, case in enumerate(
        [
            ("label", "dev", 1, False),
            ("label", "dev", 3, True),
            ("label", "test", 3, False),
            ("exact_match", "dev", 1, True),
            ("exact_match", "dev", 5, False),
            ("exact_match", "test", 2, True),
            ("macro_f1", "dev", 3, False),
            ("label", "dev", 2, False),
            ("exact_match", "dev", 3, True, True),
            ("label", "dev", 1, False, True),
        ]
    )
]


def _method_settings(kind: str, k: int) -> MethodSettings:
    if kind == "exact_match":
        return _settings(k, use_program=True)
    return _settings(k, logprobs=5, classical_voter=k == 2)


@pytest.mark.parametrize(("seed", "kind", "split", "k", "typed", "mapped"), CASES)
def test_quality_tally_is_task_quality_byte_for_byte(tmp_path, seed, kind, split, k, typed, mapped):
    spec = SPECS[kind]
    records = _records(seed, spec, 150 + 40 * seed, split, k, mapped)
    fed = [SampleRecord.from_dict(r) for r in records] if typed else records
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    for d in (old_dir, new_dir):
        d.mkdir()
        (d / "calibration.json").write_text('{"other": {"use": "none"}, "' + spec.name + '": {"x": 1}}')
    expected = old_task_quality(spec, records, split, old_dir)
    got = _feed(qs.QualityTally(spec, split, new_dir), fed)
    assert _dumps(got) == _dumps(expected)
    assert (new_dir / "calibration.json").read_bytes() == (old_dir / "calibration.json").read_bytes()
    assert qs.task_quality(spec, records, split, None) == old_task_quality(spec, records, split, None)
    if split == "dev" and spec.metric == "exact_match":  # the case exercised what it is about
        assert expected["confidence"].get("written") and "auroc" in expected["confidence"]
        assert expected["audit"]["suspects"]
        assert "ece_applied" in expected["confidence"] or not mapped


@pytest.mark.parametrize(("seed", "kind", "split", "k", "typed", "mapped"), CASES)
def test_method_tally_is_task_report_byte_for_byte(tmp_path, seed, kind, split, k, typed, mapped):
    spec = SPECS[kind]
    records = _records(seed, spec, 150 + 40 * seed, split, k, mapped)
    fed = [SampleRecord.from_dict(r) for r in records] if typed else records
    settings = _method_settings(kind, k)
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    for d in (old_dir, new_dir):
        d.mkdir()
        (d / "calibration.json").write_text('{"' + spec.name + '": {"confidence": {"method": "isotonic"}}}')
    expected = old_task_report(spec, records, settings, old_dir, split)
    got = _feed(rp.MethodTally(spec, settings, new_dir, split), fed)
    assert _dumps(got) == _dumps(expected)
    assert (new_dir / "calibration.json").read_bytes() == (old_dir / "calibration.json").read_bytes()
    by_id = {r["sample_id"]: r for r in records}
    assert _dumps(rp.task_report(spec, by_id, settings, new_dir, split)) == _dumps(
        old_task_report(spec, by_id, settings, old_dir, split)
    )


def test_the_cases_reach_what_they_check(tmp_path):
    """Label biases fitted, self-consistency with per-variant accuracy, program counts: the
    comparisons above are not of empty reports."""
    spec = SPECS["label"]
    report = old_task_report(
        spec, _records(1, spec, 230, "dev", 3), _settings(3, logprobs=5), tmp_path, "dev"
    )
    assert report["calibration"]["written"] and report["self_consistency"]["variant_accuracy"]
    spec = SPECS["exact_match"]
    report = old_task_report(
        spec, _records(4, spec, 310, "dev", 5), _settings(5, use_program=True), tmp_path, "dev"
    )
    assert report["program"]["checked"] and report["method"]
    quality = old_task_quality(SPECS["label"], _records(7, SPECS["label"], 430, "dev", 2), "dev", None)
    assert {"variants", "vs_classifier", "vs_program", "vs_gold"} <= set(quality["agreement"])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("samples", [True, False])
def test_kernel_tally_is_kernel_metrics_byte_for_byte(seed, samples):
    rng = random.Random(seed)
    records = [_kernel_record(rng, i) for i in range(20 + 60 * seed)]
    expected = old_kernel_metrics(records, samples=samples)
    assert _dumps(_feed(km.KernelTally(samples=samples), map(SampleRecord.from_dict, records))) == _dumps(
        expected
    )
    assert _dumps(km.kernel_metrics(records, samples=samples)) == _dumps(expected)
    assert _dumps(km.kernel_metrics([])) == _dumps(old_kernel_metrics([]))


# ------------------------------------------------------------------------------------------------
# the cap
# ------------------------------------------------------------------------------------------------
CAP = 40


@pytest.fixture
def small_cap(monkeypatch):
    monkeypatch.setattr(qs, "CURVE_SAMPLE", CAP)
    monkeypatch.setattr(km, "CURVE_SAMPLE", CAP)
    monkeypatch.setattr(rp, "CALIBRATION_SAMPLE", CAP)


def test_up_to_the_cap_the_tallies_are_exact(tmp_path, small_cap):
    spec = SPECS["label"]
    records = [r for r in _records(11, spec, 200, "dev", 3) if r["vote"] is not None][:CAP]
    assert len(records) == CAP
    assert _dumps(_feed(qs.QualityTally(spec, "dev"), records)) == _dumps(
        old_task_quality(spec, records, "dev")
    )
    settings = _settings(3, logprobs=5)
    got = _feed(rp.MethodTally(spec, settings, tmp_path, "dev"), records)
    assert _dumps(got) == _dumps(old_task_report(spec, records, settings, tmp_path, "dev"))
    rng = random.Random(3)
    kernels: list[dict[str, Any]] = []
    while True:  # as many records as make at most CAP checks
        record = _kernel_record(rng, len(kernels))
        if old_kernel_metrics([*kernels, record])["check_seconds"]["checks"] > CAP:
            break
        kernels.append(record)
    assert old_kernel_metrics(kernels)["check_seconds"]["checks"] >= CAP - 6
    assert _dumps(_feed(km.KernelTally(), kernels)) == _dumps(old_kernel_metrics(kernels))


def test_past_the_cap_state_stays_bounded_and_outputs_say_sampled(tmp_path, small_cap):
    spec = SPECS["label"]
    records = _records(12, spec, CAP * 3, "dev", 3)
    answered = [r for r in records if r["vote"] is not None]
    quality = qs.QualityTally(spec, "dev", tmp_path)
    for record in records:
        quality.add(record)
    assert len(quality.points) <= CAP < quality.points.seen
    assert quality.values is None and all(
        v.ordered is None or len(v.ordered) <= CAP for v in quality.variants.values()
    )
    out = quality.result()
    assert out["confidence"]["sampled"] == CAP and out["confidence"]["samples"] == len(answered)
    gold = [r for r in answered if of_record(r).value is not None]
    # counts stay exact past the cap
    assert out["confidence"]["with_confidence"] == len(gold)
    assert sum(out["confidence"]["histogram"]["counts"]) == len(gold)
    exact = old_task_quality(spec, records, "dev")
    assert out["agreement"]["variants"]["samples"] == exact["agreement"]["variants"]["samples"]
    assert out["agreement"]["vs_gold"] == exact["agreement"]["vs_gold"]
    assert out["confidence"]["accuracy"] == exact["confidence"]["accuracy"]
    assert out["audit"] == exact["audit"]
    assert out["agreement"]["variants"]["fleiss_kappa"] == pytest.approx(
        exact["agreement"]["variants"]["fleiss_kappa"]
    )
    written = json.loads((tmp_path / "calibration.json").read_text())[spec.name]["confidence"]
    assert written["sampled"] == CAP and written["dev_samples"] == len(gold)
    # the same stream gives the same sample
    assert _dumps(_feed(qs.QualityTally(spec, "dev"), records)) == _dumps(
        _feed(qs.QualityTally(spec, "dev"), records)
    )

    settings = _settings(3, logprobs=5)
    method = rp.MethodTally(spec, settings, tmp_path, "dev")
    for record in records:
        method.add(record)
    assert len(method.kept) <= CAP < method.kept.seen
    report = method.result()["calibration"]
    assert report["sampled"] == CAP
    exact_report = old_task_report(spec, records, settings, tmp_path, "dev")["calibration"]
    assert report["scored_requests"] == exact_report["scored_requests"]

    rng = random.Random(5)
    kernel = km.KernelTally()
    for i in range(CAP * 3):
        kernel.add(_kernel_record(rng, i))
    assert len(kernel.check_seconds) <= CAP and len(kernel.listed) <= CAP
    metrics = kernel.result()
    assert metrics["check_seconds"]["sampled"] == CAP and metrics["check_seconds"]["checks"] > CAP
    assert len(metrics["samples"]) == metrics["samples_listed"] == CAP < metrics["checked"]


def test_a_reservoir_keeps_order_and_is_uniform_enough():
    reservoir: Reservoir[int] = Reservoir(5)
    for i in range(5):
        reservoir.add(i)
    assert reservoir.items() == [0, 1, 2, 3, 4] and not reservoir.sampled
    counts = Counter()
    for seed in range(400):
        r = Reservoir(5, seed=seed)
        for i in range(50):
            r.add(i)
        kept = r.items()
        assert kept == sorted(kept) and len(kept) == 5 and r.sampled
        counts.update(i // 10 for i in kept)
    # each tenth of the stream is kept about equally often (2000 picks, 400 expected per tenth)
    assert all(300 < counts[d] < 500 for d in range(5))
    with pytest.raises(ValueError):
        Reservoir(0)


def test_cohen_kappa_from_counts_is_scikit_learns():
    """Past `DENSE_ANSWERS` distinct answers Cohen's kappa comes from the counts (an exact
    fraction), not scikit-learn's square matrix: the same number on the same pairs."""
    from sklearn.metrics import cohen_kappa_score

    rng = random.Random(7)
    for answers in (2, 5, 40, 300):
        a = [str(rng.randrange(answers)) for _ in range(2_000)]
        b = [x if rng.random() < 0.6 else str(rng.randrange(answers)) for x in a]
        pairs = Counter(zip(a, b, strict=True))
        assert qs._sparse_cohen_kappa(pairs, len(a)) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert qs._sparse_cohen_kappa(Counter({("x", "x"): 5}), 5) is None


def test_an_open_answer_dev_task_keeps_small_count_tables_and_no_square_matrix(monkeypatch):
    """Thousands of distinct long answers (a free-text task on dev): the model-vs-gold table
    holds digests, not the answers, and scikit-learn's confusion matrix (the square of the
    distinct answers: 60 GB at 20,000) is never built."""
    import sklearn.metrics

    spec = TASKS[7]
    assert spec.metric == "exact_match"
    distinct = qs.DENSE_ANSWERS + 500

    def refused(*args, **kwargs):
        raise AssertionError("a dense confusion matrix over every distinct answer")

    monkeypatch.setattr(sklearn.metrics, "cohen_kappa_score", refused)
    tally = qs.QualityTally(spec, "dev")
    for i in range(distinct):
        answer = f"answer {i} " + "x" * 2_000
        gold = answer if i % 3 else f"gold {i} " + "y" * 2_000
        tally.add(
            SampleRecord.from_dict(
                {
                    "task": spec.name,
                    "sample_id": f"s{i}",
                    "index": i,
                    "prediction": answer,
                    "gold": gold,
                    "requests": [{"variant": 0, "answer": answer, "parsed": answer}],
                    "vote": {"agreement": 1.0},
                    "confidence": 0.5,
                    "confidence_source": "agreement",
                }
            )
        )
    assert max(len(x) for pair in tally.vs_gold for x in pair) <= qs.LONGEST_KEPT_ANSWER + 1
    kappa = tally.result()["agreement"]["vs_gold"]["cohen_kappa"]
    assert 0.6 < kappa < 0.7  # two thirds agree, almost no agreement by chance


# ------------------------------------------------------------------------------------------------
# the reference oracle: the list-based functions as they were (copied, kept only here)
# ------------------------------------------------------------------------------------------------
def audit(spec: TaskSpec, records: Iterable[AnyRecord], threshold: float = THRESHOLD) -> list[Suspect]:
    """Dev records whose model answer contradicts gold with confidence >= ``threshold``, most
    confident first (one row per sample id; the most confident when several runs saw it)."""
    best: dict[str, Suspect] = {}
    for record in map(as_record, records):
        gold = record.gold
        answer = model_prediction(record)
        if gold is None or not answer or score(spec, answer, gold) != 0.0:
            continue
        conf = of_record(record)
        # the calibrated value when one was applied
        value = (record.confidence or {}).get("confidence", conf.value)
        if value is None or float(value) < threshold:
            continue
        suspect = Suspect(spec.name, str(record.sample_id), str(gold), answer, float(value), str(conf.source))
        if suspect.sample_id not in best or best[suspect.sample_id].confidence < suspect.confidence:
            best[suspect.sample_id] = suspect
    return sorted(best.values(), key=lambda s: (-s.confidence, s.sample_id))


def old_task_quality(
    spec: TaskSpec,
    records: Sequence[AnyRecord] | Mapping[str, AnyRecord],
    split: str,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The ``quality`` entry of one task in run.json (see the module docstring)."""
    rows = [
        r
        for r in map(as_record, records.values() if isinstance(records, Mapping) else records)
        if r.vote is not None
    ]
    if not rows:
        return {}

    def key(answer: str) -> str:
        return normalise(spec, answer)

    confidences = [(r, of_record(r, key)) for r in rows]
    scored = [(r, c) for r, c in confidences if c.value is not None]
    values = [float(c.value) for _, c in scored]
    out: dict[str, Any] = {
        "confidence": {
            "samples": len(rows),
            "with_confidence": len(scored),
            "sources": dict(sorted(Counter(str(c.source) for _, c in scored).items())),
            "mean": _round(float(np.mean(values))) if values else None,
            "histogram": _histogram(values),
        }
    }
    gold_rows = [(r, c) for r, c in scored if r.gold is not None and spec.metric == "exact_match"]
    if split == "dev" and gold_rows:
        correct = [score(spec, model_prediction(r), r.gold) or 0.0 for r, _ in gold_rows]
        raw = [float(c.value) for _, c in gold_rows]
        out["confidence"].update(_dev_numbers(raw, correct, gold_rows))
        if out_dir is not None and len(raw) >= MIN_CONFIDENCE_ROWS:
            fitted = ConfidenceMap.fit(raw, correct)
            _merge_confidence_map(Path(out_dir) / qs.CALIBRATION_FILE, spec.name, fitted, len(raw))
            out["confidence"]["written"] = qs.CALIBRATION_FILE
    out["agreement"] = _agreement(spec, rows, split, key)
    if split == "dev":
        suspects = audit(spec, rows, THRESHOLD)
        out["audit"] = {"threshold": THRESHOLD, "suspects": [s.to_dict() for s in suspects]}
    return out


def _dev_numbers(
    raw: list[float], correct: list[float], gold_rows: Sequence[tuple[SampleRecord, Any]]
) -> dict[str, Any]:
    numbers: dict[str, Any] = {
        "auroc": _round(qm.auroc(raw, correct)),
        "accuracy": _round(float(np.mean(correct))),
        "ece_raw": _round(qm.ece(raw, correct)),
        "reliability_raw": qm.bins_as_dicts(qm.reliability(raw, correct)),
        "coverage_accuracy": [
            {k: _round(v) for k, v in p.items()} for p in qm.coverage_accuracy(raw, correct)
        ],
    }
    if len(raw) >= MIN_CONFIDENCE_ROWS:
        calibrated = cross_fitted_confidence(raw, correct)
        numbers["ece_calibrated_cv"] = _round(qm.ece(calibrated, correct))
        numbers["reliability_calibrated_cv"] = qm.bins_as_dicts(qm.reliability(calibrated, correct))
    stored = [r.confidence or {} for r, _ in gold_rows]
    applied = [s.get("confidence") for s in stored]
    if any("|" in str(s.get("confidence_source") or "") for s in stored) and None not in applied:
        numbers["ece_applied"] = _round(qm.ece([float(v) for v in applied], correct))
    return numbers


def _agreement(spec: TaskSpec, rows: Sequence[SampleRecord], split: str, key) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ratings = ag.variant_ratings(rows, key)
    if ratings and len(ratings[0]) >= 2:
        out["variants"] = {
            "k": len(ratings[0]),
            "samples": len(ratings),
            "fleiss_kappa": _round(ag.fleiss_kappa(ratings)),
        }
    for source, (mine, theirs) in sorted(ag.side_pairs(rows, key).items()):
        out[f"vs_{source}"] = {
            "samples": len(mine),
            "cohen_kappa": _round(ag.cohen_kappa(mine, theirs)),
            "agreement": _round(float(np.mean([a == b for a, b in zip(mine, theirs, strict=True)]))),
        }
    if split == "dev" and spec.metric == "exact_match":
        pairs = [(key(model_prediction(r)), key(str(r.gold))) for r in rows if r.gold is not None]
        if pairs:
            mine, gold = [p[0] for p in pairs], [p[1] for p in pairs]
            out["vs_gold"] = {"samples": len(pairs), "cohen_kappa": _round(ag.cohen_kappa(mine, gold))}
    return out


def _histogram(values: Sequence[float]) -> dict[str, list]:
    counts, edges = np.histogram(values, bins=qs.HISTOGRAM_BINS, range=(0.0, 1.0))
    return {"edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}


def _merge_confidence_map(path: Path, task: str, fitted: ConfidenceMap, samples: int) -> None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc = doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        doc = {}
    entry = dict(doc.get(task) or {})
    entry["confidence"] = {**fitted.to_dict(), "dev_samples": samples}
    doc[task] = entry
    atomic_write_json(path, dict(sorted(doc.items())))


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def old_task_report(
    spec: TaskSpec,
    records: Sequence[AnyRecord] | Mapping[str, AnyRecord],
    method_settings: MethodSettings,
    out_dir: str | Path,
    split: str,
) -> dict[str, Any]:
    """The method part of one task's run.json entry (see the module docstring): its answer label,
    its method settings and what the techniques that ran did."""
    lines = list(records.values()) if isinstance(records, Mapping) else list(records)
    rows = [as_record(r) for r in lines]
    settings = method_settings.for_task(spec)
    side_models = settings.side_models(spec)
    label = task_method([r.to_dict() for r in rows], settings.method_label(spec))
    report: dict[str, Any] = {
        "method": label.method,
        "pure_icl": label.pure_icl,
        "side_models": label.side_models,
        "method_settings": settings.summary(spec),
    }
    answered = [r for r in rows if r.vote is not None]
    if answered and (settings.self_consistency > 1 or side_models):
        report["self_consistency"] = _consistency(spec, answered, settings.self_consistency)
    if settings.use_program and spec.program:
        report["program"] = _program_counts(answered)
    if spec.is_closed and settings.logprobs:
        report["calibration"] = _calibration(spec, answered, settings, Path(out_dir), split)
    return report


def _consistency(spec: TaskSpec, rows: Sequence[SampleRecord], k: int) -> dict[str, Any]:
    votes = [r.vote or {} for r in rows]  # every row voted (task_report)
    agreement = [v["agreement"] for v in votes if v.get("agreement") is not None]
    out: dict[str, Any] = {
        "k": k,
        "mean_agreement": _mean(agreement),
        "unanimous": _mean([float(a >= 1.0) for a in agreement]),
        "ties_broken": sum(1 for v in votes if v.get("tie_break")),
        "unreadable_requests": sum(
            1 for r in rows for q in r.request_entries if not q.get("answer") and not q.get("error")
        ),
    }
    if any(r.correct is not None for r in rows):
        per_variant: dict[int, list[float]] = {}
        for r in rows:
            for q in r.request_entries:
                verdict = score(spec, q.get("parsed") or "", r.gold)
                if verdict is not None:
                    per_variant.setdefault(int(q.get("variant", 0)), []).append(verdict)
        out["variant_accuracy"] = {str(v): _mean(s) for v, s in sorted(per_variant.items())}
    return out


def _program_counts(rows: Sequence[SampleRecord]) -> dict[str, int]:
    verdicts = [r.program for r in rows if r.program]
    return {
        "checked": len(verdicts),
        "usable": sum(1 for v in verdicts if v.get("usable")),
        "agreed": sum(1 for v in verdicts if v.get("agreed")),
        "replaced": sum(1 for v in verdicts if v.get("replaced")),
    }


def _calibration(
    spec: TaskSpec,
    rows: Sequence[SampleRecord],
    settings: MethodSettings,
    out_dir: Path,
    split: str,
) -> dict[str, Any]:
    labels = list(spec.labels or ())
    applied = sorted({r.calibration["mode"] for r in rows if r.calibration})
    out: dict[str, Any] = {
        "applied": applied[0] if len(applied) == 1 else (applied or None),
        "file": settings.calibration if applied else None,
        "scored_requests": sum(1 for r in rows for q in r.request_entries if q.get("label_logprobs")),
        "requests": sum(len(r.requests) for r in rows),
    }
    gold_rows = [r for r in rows if r.gold is not None and r.correct is not None]
    if split != "dev" or not gold_rows:
        return out
    data = [
        rp.cal.Row(int(r.index), int(q.get("variant", 0)), q["label_logprobs"], normalise(spec, r.gold))
        for r in gold_rows
        for q in r.request_entries
        if q.get("label_logprobs")
    ]
    if len(data) < rp.MIN_CALIBRATION_ROWS:
        out["note"] = f"too few scored requests ({len(data)}) to fit a calibration"
        return out

    def accuracy(scores: Mapping[tuple[int, int], Mapping[str, float]] | None) -> float:
        hits = []
        for r in gold_rows:
            by_variant = None
            if scores is not None:
                by_variant = {
                    int(q.get("variant", 0)): scores[(int(r.index), int(q.get("variant", 0)))]
                    for q in r.request_entries
                    if (int(r.index), int(q.get("variant", 0))) in scores
                }
            hits.append(score(spec, rp.revote(spec, settings, r, by_variant), r.gold) or 0.0)
        return sum(hits) / len(hits)

    batch = rp.cal.fit(labels, "batch", data)
    in_sample = {(row.sample, row.variant): batch.apply(row.logprobs, row.variant) for row in data}
    accuracies = {
        "none": accuracy(None),
        "batch": accuracy(in_sample),
        "bias": accuracy(rp.cal.cross_fitted(labels, "bias", data)),
    }
    simplicity = {"none": 2, "batch": 1, "bias": 0}
    use = max(accuracies, key=lambda mode: (round(accuracies[mode], 12), simplicity[mode]))
    bias = rp.cal.fit(labels, "bias", data)
    entry = {
        "labels": labels,
        "use": use,
        "modes": {"batch": batch.to_dict(), "bias": bias.to_dict()},
        "dev": {
            "samples": len(gold_rows),
            "scored_requests": len(data),
            "raw_accuracy": accuracies["none"],
            "batch_accuracy": accuracies["batch"],
            "bias_accuracy_cv": accuracies["bias"],
            "vote": settings.vote,
            "self_consistency": settings.self_consistency,
        },
    }
    rp._merge_file(out_dir / qs.CALIBRATION_FILE, spec.name, entry)
    out.update(
        {
            "raw_accuracy": accuracies["none"],
            "batch_accuracy": accuracies["batch"],
            "bias_accuracy_cv": accuracies["bias"],
            "best": use,
            "written": qs.CALIBRATION_FILE,
        }
    )
    return out


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def _rate(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def old_kernel_metrics(records: Iterable[AnyRecord], *, samples: bool = True) -> dict[str, Any]:
    """Checker-measured rates over one task's records; records without ``kernel`` (dry run,
    another annotator) count in ``n`` but not in the rates' numerators."""
    rows = [as_record(r) for r in records]
    n = len(rows)
    kernels = [r.kernel or {} for r in rows]
    checked = [k for k in kernels if k]
    callable_ = sum(1 for k in checked if k.get("callable"))
    agrees = sum(1 for k in checked if k.get("agrees") is True)
    passed = sum(1 for k in checked if k.get("stage") == "passed")
    with_reference = sum(1 for k in checked if (k.get("candidates") or [{}])[-1].get("against_reference"))
    triton_passed = sum(
        1
        for k in checked
        if any(c.get("passed") for c in k.get("candidates") or [] if c.get("source") == "triton")
    )
    first_try = sum(1 for k in checked if (k.get("candidates") or [{}])[0].get("passed"))
    check_seconds = [
        float(c.get("seconds") or 0.0)
        for k in checked
        for c in [*(k.get("candidates") or []), k.get("reference") or {}]
        if c
    ]
    out: dict[str, Any] = {
        "n": n,
        "checked": len(checked),
        "with_code": sum(1 for r in rows if r.prediction),
        "callable": callable_,
        "call_rate": _rate(callable_, n),
        "agrees": agrees,
        "agree_rate": _rate(agrees, n),
        "agree_rate_checked": _rate(agrees, with_reference),
        "passed": passed,
        "passed_rate": _rate(passed, n),
        "uses_triton": sum(1 for k in checked if k.get("uses_triton")),
        "triton_passed_first_try": first_try,
        "triton_passed_any_round": triton_passed,
        "reference_passed": sum(1 for k in checked if k.get("reference_passed")),
        "final": dict(Counter(k.get("final", "none") for k in checked).most_common()),
        "stages": dict(Counter(k.get("stage") for k in checked).most_common()),
        "kinds": dict(Counter(k.get("kind") or "none" for k in checked).most_common()),
        "repair_rounds": dict(sorted(Counter(str(k.get("repair_rounds", 0)) for k in checked).items())),
        "check_seconds": {
            "total": round(sum(check_seconds), 1),
            "median": round(statistics.median(check_seconds), 3) if check_seconds else None,
            "checks": len(check_seconds),
        },
    }
    golds = [k["gold"] for k in checked if k.get("gold")]
    if golds:
        gold_ok = sum(1 for g in golds if g.get("passed"))
        vs_gold = [k["vs_gold"] for k in checked if k.get("vs_gold")]
        matched = sum(1 for v in vs_gold if v.get("agrees") is True)
        out["gold"] = {
            "checked": len(golds),
            "callable": sum(1 for g in golds if g.get("callable")),
            "callable_rate": _rate(sum(1 for g in golds if g.get("callable")), len(golds)),
            "passed": gold_ok,
            "stages": dict(Counter(g.get("stage") for g in golds).most_common()),
            "kinds": dict(Counter(g.get("kind") or "none" for g in golds).most_common()),
            "cuda_shim_used": sum(1 for g in golds if g.get("cuda_shim_used")),
        }
        out["vs_gold"] = {
            "checked": len(vs_gold),
            "callable": sum(1 for v in vs_gold if v.get("callable")),
            "agrees": matched,
            "agree_rate": _rate(matched, gold_ok),  # among samples whose gold passed
            "stages": dict(Counter(v.get("stage") for v in vs_gold).most_common()),
        }
    if samples:
        out["samples"] = [
            {
                "sample_id": r.sample_id,
                "final": k.get("final"),
                "callable": k.get("callable"),
                "agrees": k.get("agrees"),
                "stage": k.get("stage"),
                "kind": k.get("kind"),
                **({"gold_agrees": (k.get("vs_gold") or {}).get("agrees")} if k.get("gold") else {}),
            }
            for r, k in zip(rows, kernels, strict=True)
            if k
        ]
    return out

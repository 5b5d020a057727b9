"""Methods on top of ICL (longicl.methods): constrained decoding, label scoring, calibration,
self-consistency, thinking, program verification and the classical voter.

Everything that talks to a model goes through real HTTP to the fake server with the real
``openai`` client; the classical engine is stood in for by small `Engine`s defined here until
``longicl.engines.classical`` exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import math
import random
import re

import pytest
from conftest import DATA_DIR, compose
from fake_server import FakeServer, FixedAnswer, GoldAnswers

from longicl.annotators import IclAnnotator as Annotator
from longicl.annotators import MethodSettings, build_request
from longicl.annotators.side_models import SideEngine, SideModels
from longicl.data import Example
from longicl.engines.base import ChatRequest, Completion, Engine
from longicl.engines.openai_compat import OpenAIEngine
from longicl.errors import UsageError
from longicl.methods import calibration as cal
from longicl.methods import structured
from longicl.methods.report import task_report
from longicl.methods.scoring import label_logprobs
from longicl.methods.thinking import followup_request, unfinished_thinking
from longicl.methods.voting import Vote, rule_for, vote
from longicl.parse import parse_answer
from longicl.runner import prepare_tasks, run, settings_from_config
from longicl.tasks import TASKS
from longicl.tokens import TokenCounter

TASK5_LABELS = ["Sad", "Not sad"]


# ------------------------------------------------------------------------------------------------
# answer policies for the fake server
# ------------------------------------------------------------------------------------------------
def _request_rng(seed: int, body: dict) -> random.Random:
    """Seeded per request: the whole prompt (so each variant of a sample draws independently)."""
    content = "".join(m.get("content") or "" for m in body.get("messages", []))
    return random.Random(hashlib.sha256(f"{seed}\0{content}".encode()).hexdigest())


class NoisyLabels:
    """Right with probability ``accuracy``, else a uniformly drawn wrong label; per request."""

    def __init__(self, accuracy: float, seed: int = 0) -> None:
        self.gold = GoldAnswers(DATA_DIR, styles=False)
        self.accuracy = accuracy
        self.seed = seed

    def __call__(self, body: dict) -> str:
        answer = self.gold(body)
        labels = (body.get("structured_outputs") or {}).get("choice") or TASK5_LABELS
        rng = _request_rng(self.seed, body)
        if rng.random() < self.accuracy:
            return answer
        return rng.choice([label for label in labels if label != answer])


class BiasedScores:
    """Task 5 with informative but biased label scores: logit(Sad) = ±1.5 + noise + 1.5."""

    bias = 1.5

    def __init__(self, seed: int = 0) -> None:
        self.gold = GoldAnswers(DATA_DIR, styles=False)
        self.seed = seed

    def p_sad(self, body: dict) -> float:
        truth = 1.5 if self.gold(body) == "Sad" else -1.5
        logit = truth + _request_rng(self.seed, body).gauss(0.0, 1.0) + self.bias
        return 1 / (1 + math.exp(-logit))

    def __call__(self, body: dict) -> str:
        return "Sad" if self.p_sad(body) > 0.5 else "Not sad"

    def logprobs(self, text: str, body: dict, choices: list[str] | None) -> dict | None:
        if not body.get("logprobs"):
            return None
        p = self.p_sad(body)
        top = [{"token": "Sad", "logprob": math.log(p)}, {"token": "Not", "logprob": math.log(1 - p)}]
        first = top[0] if text == "Sad" else top[1]
        return {"content": [{"token": first["token"], "logprob": first["logprob"], "top_logprobs": top}]}


class OracleEngine(Engine):
    """Stands in for the classical engine: answers every sample with its gold output."""

    name = "oracle"

    def __init__(self, method: str) -> None:
        self.method = method
        self.gold = {}
        for path in DATA_DIR.glob("openseek-*.json"):
            for example in json.loads(path.read_text(encoding="utf-8"))["examples"]:
                self.gold[example["input"]] = example["output"][0]
        self.prepared: list[str] = []

    async def prepare(self, spec, pool) -> None:
        self.prepared.append(spec.name)

    async def complete(self, request: ChatRequest) -> Completion:
        return Completion(text=self.gold[request.sample.input], method=self.method)


# ------------------------------------------------------------------------------------------------
# constrained decoding
# ------------------------------------------------------------------------------------------------
def test_structured_output_fields_are_vllm_current_names():
    # vLLM removed guided_choice/guided_regex in 0.12.0; a misspelt field is silently ignored.
    assert structured.DEFAULT_STYLE == "structured_outputs"
    assert structured.FIELD_STYLES["structured_outputs"] == {
        kind: ("structured_outputs", kind) for kind in ("choice", "regex", "json", "grammar")
    }
    assert structured.structured_outputs_for(TASKS[5]) == {"structured_outputs": {"choice": TASK5_LABELS}}
    assert structured.structured_outputs_for(TASKS[6], "guided") == {"guided_choice": ["Y", "N"]}
    for task_id in (2, 5, 6):
        (kind, value) = structured.constraint_for(TASKS[task_id])
        assert kind == "choice" and value == list(TASKS[task_id].labels)
    for task_id in (4, 7, 8):
        assert structured.structured_outputs_for(TASKS[task_id]) is None


@pytest.mark.parametrize("task_id", [1, 3])
def test_format_regexes_accept_every_gold_answer(task_id):
    kind, pattern = structured.constraint_for(TASKS[task_id])
    assert kind == "regex"
    path = next(DATA_DIR.glob(f"openseek-{task_id}_*.json"))
    outputs = [e["output"][0] for e in json.loads(path.read_text(encoding="utf-8"))["examples"]]
    assert all(re.fullmatch(pattern, o) for o in outputs)
    assert not re.fullmatch(pattern, "The answer is 3")


def test_dry_run_requests_carry_exactly_the_label_set(tmp_path):
    run(compose("engine=dryrun", "task=[2,5,6,7]", "split=test", "limit=2", f"out_dir={tmp_path}"))
    for task_id in (2, 5, 6):
        for line in (tmp_path / "requests" / f"openseek-{task_id}.jsonl").read_text().splitlines():
            body = json.loads(line)["body"]
            assert body["structured_outputs"] == {"choice": list(TASKS[task_id].labels)}
    body = json.loads((tmp_path / "requests" / "openseek-7.jsonl").read_text().splitlines()[0])["body"]
    assert "structured_outputs" not in body


def test_request_bodies_carry_constraints_logprobs_and_thinking_settings(tmp_path, gold_answers):
    with FakeServer(gold_answers, thinking="field", count_tokens=False) as server:
        result = run(
            compose(
                "task=[1,5,7]",
                "split=dev",
                "limit=2",
                "method=thinking",
                "method.per_task.7.enable_thinking=false",
                f"engine.base_url={server.url}",
                f"out_dir={tmp_path}",
            )
        )
        bodies = list(server.requests)
    assert result.summary["mean_accuracy"] == 1.0
    by_task = {}
    for body in bodies:
        system = body["messages"][0]["content"]
        task = next(t for t in (1, 5, 7) if _definition(t) in system)
        by_task.setdefault(task, []).append(body)
    for body in by_task[5]:
        assert body["structured_outputs"] == {"choice": TASK5_LABELS}
        assert body["logprobs"] is True and body["top_logprobs"] == 10
        assert body["chat_template_kwargs"] == {"enable_thinking": True}
        assert (body["temperature"], body["top_p"], body["top_k"], body["min_p"]) == (0.6, 0.95, 20, 0.0)
        assert body["max_tokens"] == 4096 + 64
    for body in by_task[1]:
        assert body["structured_outputs"] == {"regex": structured.INTEGER_REGEX}
        assert "logprobs" not in body
    for body in by_task[7]:  # the per-task override: thinking off, greedy, no constraint
        assert body["chat_template_kwargs"] == {"enable_thinking": False}
        assert body["temperature"] == 0.0 and "top_k" not in body and "structured_outputs" not in body
        assert body["max_tokens"] == 128
    task5 = result.summary["tasks"]["openseek-5"]
    assert task5["method_settings"]["enable_thinking"] is True and task5["pure_icl"] is True
    assert result.summary["tasks"]["openseek-7"]["method_settings"]["enable_thinking"] is False


def _definition(task_id: int) -> str:
    path = next(DATA_DIR.glob(f"openseek-{task_id}_*.json"))
    return json.loads(path.read_text(encoding="utf-8"))["Definition"][0][:60]


# ------------------------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------------------------
def test_per_task_settings_merge_and_errors_name_the_setting():
    method = MethodSettings.from_config(
        {
            "sampling": {"temperature": 0.0, "seed": 3},
            "self_consistency": 1,
            "per_task": {
                "5": {"self_consistency": 5, "sampling": {"temperature": 0.7}},
                "6": {"logprobs": None},
            },
        },
        fill_missing=True,  # the other keys from conf/method/default.yaml
    )
    five = method.for_task(TASKS[5])
    assert five.self_consistency == 5 and five.sampling == {"temperature": 0.7, "seed": 3}
    assert five.sampling_for(2)["seed"] == 5  # each variant its own seed
    assert method.for_task(TASKS[6]).self_consistency == 1
    for bad, words in [
        ({"self_consistency": 0}, "method.self_consistency"),
        ({"logprobs": 50}, "method.logprobs"),
        ({"vote": "mean"}, "method.vote"),
        ({"per_task": {"9": {"self_consistency": 2}}}, "method.per_task.9"),
        ({"per_task": {"5": {"extra_body": {}}}}, "method.per_task.5.extra_body"),
        ({"per_task": {"5": {"self_consistency": "x"}}}, "method.per_task.5.self_consistency"),
        ({"structured_outputs_style": "guided_v0"}, "structured_outputs_style"),
        ({"calibration": "/nonexistent/calibration.json"}, "method.calibration"),
    ]:
        with pytest.raises(UsageError, match=re.escape(words)):
            MethodSettings.from_config(bad, fill_missing=True)


def test_side_models_fail_before_running_when_their_engine_is_unknown():
    with pytest.raises(UsageError, match="side_engine"):
        settings_from_config(compose("method=icl_programs", "method.side_engine.name=nosuch", "task=1"))


# ------------------------------------------------------------------------------------------------
# label scoring
# ------------------------------------------------------------------------------------------------
def test_label_scores_from_first_answer_token():
    tokens = [
        {"token": "<think>", "logprob": 0.0, "top": {}},
        {"token": "</think>", "logprob": 0.0, "top": {}},
        {"token": "\n\n", "logprob": 0.0, "top": {}},
        {"token": "Not", "logprob": math.log(0.6), "top": {"Not": math.log(0.6), " Sad": math.log(0.3), "sad": math.log(0.05)}},
    ]  # fmt: skip
    scores = label_logprobs(TASKS[5], tokens)
    assert scores is not None
    assert math.isclose(math.exp(scores["Not sad"]), 0.6 / 0.95, rel_tol=1e-6)
    assert math.isclose(math.exp(scores["Sad"]), 0.35 / 0.95, rel_tol=1e-6)
    # a label missing from the top-k gets the leftover mass, capped at the smallest listed one
    only = label_logprobs(
        TASKS[6],
        [{"token": "Y", "logprob": math.log(0.7), "top": {"Y": math.log(0.7), "The": math.log(0.2)}}],
    )
    assert math.isclose(math.exp(only["N"]) / math.exp(only["Y"]), 0.1 / 0.7, rel_tol=1e-6)
    # digits are single tokens; "t" (two/three) is ambiguous and ignored
    two = label_logprobs(
        TASKS[2], [{"token": "2", "logprob": -0.1, "top": {"2": -0.1, "3": -2.5, "t": -3.0}}]
    )
    assert max(two, key=two.get) == "2" and set(two) == set(TASKS[2].labels)
    assert label_logprobs(TASKS[5], [{"token": "<", "logprob": -0.1, "top": {"<": -0.1}}]) is None
    assert label_logprobs(TASKS[7], tokens) is None


def test_label_scores_only_where_the_answer_is_generated():
    """An echoed "Output:" and a JSON string's opening quote come before the answer: the label
    alternatives listed at those positions are not a choice of label and must not be read."""
    echo = [
        {"token": "Output", "logprob": -0.1, "top": {"Output": -0.1, "Sad": math.log(0.3)}},
        {"token": ":", "logprob": -0.01, "top": {":": -0.01}},
        {"token": " Not", "logprob": math.log(0.8), "top": {" Not": math.log(0.8), " Sad": math.log(0.2)}},
        {"token": " sad", "logprob": -0.01, "top": {" sad": -0.01}},
    ]
    scores = label_logprobs(TASKS[5], echo, "Output:")
    assert math.isclose(math.exp(scores["Not sad"]), 0.8, rel_tol=1e-6)
    quoted = [{"token": '"', "logprob": 0.0, "top": {'"': 0.0}}] + echo[2:]
    assert math.isclose(math.exp(label_logprobs(TASKS[5], quoted)["Not sad"]), 0.8, rel_tol=1e-6)
    # Without the echo, a first token that only starts like the prefix is the answer itself.
    other = [{"token": "N", "logprob": math.log(0.9), "top": {"N": math.log(0.9), "Y": math.log(0.1)}}]
    assert max(label_logprobs(TASKS[6], other, "No:").items(), key=lambda kv: kv[1])[0] == "N"


# ------------------------------------------------------------------------------------------------
# voting
# ------------------------------------------------------------------------------------------------
def _lp(p_sad: float) -> dict[str, float]:
    return {"Sad": math.log(p_sad), "Not sad": math.log(1 - p_sad)}


def test_majority_and_probability_votes():
    votes = [Vote("Sad", 0), Vote("Not sad", 1), Vote("Sad", 2), Vote("", 3)]
    result = vote(votes, "majority")
    assert result.answer == "Sad" and result.tally == {"Sad": 2.0, "Not sad": 1.0}
    assert math.isclose(result.agreement, 2 / 3)
    # soft voting: two lukewarm "Sad" votes lose to one confident "Not sad"
    soft = [Vote("Sad", 0, label_logprobs=_lp(0.55)), Vote("Sad", 1, label_logprobs=_lp(0.55)),
            Vote("Not sad", 2, label_logprobs=_lp(0.01))]  # fmt: skip
    assert vote(soft, "majority").answer == "Sad"
    assert vote(soft, "probability").answer == "Not sad"
    assert rule_for("auto", soft) == "probability" and rule_for("auto", votes) == "majority"
    assert vote([Vote(""), Vote("", 1)], "majority").answer == ""
    # answers count as equal under the key (the metric's normalisation)
    assert vote([Vote("Paris", 0), Vote("paris", 1), Vote("Rome", 2)], key=str.lower).answer == "Paris"


def test_ties_break_by_summed_logprob_then_variant_zero():
    tied = [Vote("Not sad", 0, label_logprobs=_lp(0.4)), Vote("Sad", 1, label_logprobs=_lp(0.9))]
    result = vote(tied, "majority")
    assert result.answer == "Sad" and result.tie_break == "logprob"
    plain = [Vote("Not sad", 1), Vote("Sad", 0), Vote("Sad", 2), Vote("Not sad", 3)]
    result = vote(plain, "majority")
    assert result.answer == "Sad" and result.tie_break == "variant"
    # a side voter (variant -1) never wins a tie against the model's own variant 0
    side = [Vote("Not sad", 0), Vote("Sad", -1, source="classifier")]
    assert vote(side, "majority").answer == "Not sad"
    # the same votes in any order give the same answer
    assert vote(list(reversed(plain)), "majority").answer == "Sad"


# ------------------------------------------------------------------------------------------------
# calibration
# ------------------------------------------------------------------------------------------------
def _biased_rows(n: int, seed: int = 1) -> list[cal.Row]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        gold = "Sad" if rng.random() < 0.5 else "Not sad"
        logit = (1.5 if gold == "Sad" else -1.5) + rng.gauss(0, 1) + 2.0
        p = 1 / (1 + math.exp(-logit))
        rows.append(cal.Row(i, 0, _lp(p), gold))
    return rows


def _accuracy(rows, scores) -> float:
    return sum(max(s, key=s.get) == r.gold for r, s in zip(rows, scores, strict=True)) / len(rows)


def test_calibration_removes_a_label_bias():
    rows = _biased_rows(400)
    raw = _accuracy(rows, [r.logprobs for r in rows])
    batch = cal.fit(TASK5_LABELS, "batch", rows)
    bias = cal.fit(TASK5_LABELS, "bias", rows)
    assert raw < 0.75
    assert _accuracy(rows, [batch.apply(r.logprobs, 0) for r in rows]) > raw + 0.1
    assert _accuracy(rows, [bias.apply(r.logprobs, 0) for r in rows]) > raw + 0.1
    # the fitted bias undoes the +2 log-odds towards "Sad" (centred: b(Sad) - b(Not sad) ~ -2)
    offset = bias.bias["*"]["Sad"] - bias.bias["*"]["Not sad"]
    assert -2.6 < offset < -1.4
    crossed = cal.cross_fitted(TASK5_LABELS, "bias", rows)
    assert set(crossed) == {(r.sample, 0) for r in rows}
    assert _accuracy(rows, [crossed[(r.sample, 0)] for r in rows]) > raw + 0.1
    # per-variant biases when a variant has enough rows, the pooled one otherwise
    two = rows + [cal.Row(r.sample, 1, _lp(0.5), r.gold) for r in rows[:30]]
    fitted = cal.fit(TASK5_LABELS, "batch", two)
    assert set(fitted.bias) == {"*", "0", "1"}
    assert fitted.apply(_lp(0.5), 7) == pytest.approx(
        cal.normalise({k: v + fitted.bias["*"][k] for k, v in _lp(0.5).items()})
    )


def test_calibration_file_is_checked(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"openseek-5": {"labels": TASK5_LABELS, "use": "sideways"}}))
    with pytest.raises(UsageError, match="not a mode"):
        cal.load_file(path)
    entry = {"labels": ["Y", "N"], "use": "none"}
    with pytest.raises(UsageError, match="do not match"):
        cal.from_entry(entry, TASK5_LABELS)


def test_dev_run_fits_calibration_and_a_later_run_applies_it(tmp_path):
    policy = BiasedScores(seed=0)
    dev, later = tmp_path / "dev", tmp_path / "later"
    with FakeServer(policy, count_tokens=False) as server:
        common = ("task=5", "split=dev", "limit=60", f"engine.base_url={server.url}")
        first = run(compose(*common, f"out_dir={dev}"))
        report = first.summary["tasks"]["openseek-5"]["calibration"]
        assert report["scored_requests"] == 60 and report["applied"] is None
        assert report["bias_accuracy_cv"] >= report["raw_accuracy"] + 0.05
        assert report["batch_accuracy"] >= report["raw_accuracy"] + 0.05
        saved = json.loads((dev / "calibration.json").read_text())["openseek-5"]
        assert saved["use"] in ("batch", "bias") and saved["labels"] == TASK5_LABELS
        second = run(compose(*common, f"out_dir={later}", f"method.calibration={dev / 'calibration.json'}"))
    task = second.summary["tasks"]["openseek-5"]
    assert task["calibration"]["applied"] == saved["use"]
    assert task["accuracy"] >= report["raw_accuracy"] + 0.05
    records = [json.loads(x) for x in (later / "records" / "openseek-5.jsonl").read_text().splitlines()]
    changed = [r for r in records if r["prediction"] != r["calibration"]["raw_prediction"]]
    assert changed and all(r["requests"][0]["calibrated_logprobs"] for r in records)


# ------------------------------------------------------------------------------------------------
# self-consistency
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def noisy_runs(tmp_path_factory):
    """task 5, 60 dev samples, a server right 70% of the time per request: K=1 and K=5."""
    out = {}
    with FakeServer(NoisyLabels(0.7, seed=0), count_tokens=False) as server:
        for k in (1, 5):
            path = tmp_path_factory.mktemp(f"sc{k}")
            start = len(server.requests)
            result = run(
                compose(
                    "task=5",
                    "split=dev",
                    "limit=60",
                    f"method.self_consistency={k}",
                    f"engine.base_url={server.url}",
                    f"out_dir={path}",
                )
            )
            out[k] = (result, path, server.requests[start:])
    return out


def test_self_consistency_beats_a_single_prompt_on_a_noisy_server(noisy_runs):
    single = noisy_runs[1][0].summary["tasks"]["openseek-5"]
    five = noisy_runs[5][0].summary["tasks"]["openseek-5"]
    # The majority of 5 independent binary votes, each right with p=0.7, is right with p=0.837
    # (binomial); one vote with p=0.7. On 60 samples the standard errors are ~0.05 and ~0.06; over
    # 23 policy seeds K=5 scored 0.78-0.90 (mean 0.85) and K=1 0.58-0.80 (mean 0.70).
    assert five["accuracy"] >= single["accuracy"] + 0.04, (single["accuracy"], five["accuracy"])
    assert five["accuracy"] >= 0.75
    assert five["requests"] == 300 and single["requests"] == 60
    consistency = five["self_consistency"]
    assert consistency["k"] == 5 and set(consistency["variant_accuracy"]) == {"0", "1", "2", "3", "4"}


def test_self_consistency_prompts_keep_the_icl_floor_and_share_each_static_block(noisy_runs):
    result, path, bodies = noisy_runs[5]
    records = [json.loads(x) for x in (path / "records" / "openseek-5.jsonl").read_text().splitlines()]
    assert len(records) == 60
    for record in records:
        assert sorted(q["variant"] for q in record["requests"]) == [0, 1, 2, 3, 4]
        assert all(q["icl_tokens"] >= 30_000 and q["prompt_tokens"] >= 30_000 for q in record["requests"])
        assert len(record["vote"]["tally"]) >= 1
    static = json.loads((path / "records" / "openseek-5.static.json").read_text())["variants"]
    assert sorted(static) == ["0", "1", "2", "3", "4"] and len({v["sha256"] for v in static.values()}) == 5
    # the static text of each variant opens exactly its 60 requests, byte for byte
    settings = settings_from_config(compose("task=5", "split=dev", "limit=60", "method.self_consistency=5"))
    builder = prepare_tasks(settings, TokenCounter())[0].builder
    texts = {v: builder.static_block(v).text for v in range(5)}
    assert {v: builder.static_block(v).sha256 for v in range(5)} == {
        int(k): s["sha256"] for k, s in static.items()
    }
    users = [b["messages"][-1]["content"] for b in bodies]
    assert len(users) == 300
    for variant, text in texts.items():
        assert sum(u.startswith(text) for u in users) == 60, variant
    assert all(b["seed"] == json.loads(json.dumps(b))["seed"] for b in bodies)
    assert {b["seed"] for b in bodies} == {0, 1, 2, 3, 4}  # seed offset per variant


# ------------------------------------------------------------------------------------------------
# thinking follow-up
# ------------------------------------------------------------------------------------------------
def _annotator(server_url: str, task: str, method: MethodSettings, *overrides: str):
    settings = settings_from_config(compose(f"task={task}", "split=dev", "limit=4", *overrides))
    task_run = prepare_tasks(settings, TokenCounter())[0]
    engine = OpenAIEngine.from_config(base_url=server_url, max_retries=0)
    return Annotator(task_run.spec, task_run.builder, engine, method), task_run, engine


def test_unfinished_thinking_gets_one_followup(gold_answers):
    assert unfinished_thinking(Completion(text=None, reasoning="Let me", finish_reason="length"))
    assert unfinished_thinking(Completion(text="<think>\nLet me", finish_reason="length"))
    assert not unfinished_thinking(Completion(text="<think>x</think>Sad", finish_reason="length"))
    assert not unfinished_thinking(Completion(text=None, reasoning="x", finish_reason="stop"))
    method = MethodSettings.defaults(
        enable_thinking=True,
        thinking_budget=256,
        thinking_followup=True,
        structured_outputs=True,
        max_tokens={**MethodSettings.defaults().max_tokens, "label": 64},
    )
    with FakeServer(gold_answers, count_tokens=False) as server:
        annotator, task_run, engine = _annotator(server.url, "5", method)

        async def go():
            await engine.start()
            plan = task_run.builder.plan(task_run.samples[0])
            cut = Completion(text=None, reasoning="The tweet mentions", finish_reason="length")
            request = followup_request(annotator.request(plan), cut, 64)
            assert request.messages[-1] == {
                "role": "assistant",
                "content": "<think>\nThe tweet mentions\n</think>\n\n",
            }
            assert request.extra_body["continue_final_message"] is True
            assert "structured_outputs" not in request.extra_body
            merged = await annotator._follow_up(plan, cut)
            await engine.aclose()
            return merged

        merged = asyncio.run(go())
        body = server.requests[-1]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["max_tokens"] == 64 and body["messages"][-1]["role"] == "assistant"
    assert parse_answer(task_run.spec, merged.text).value == task_run.samples[0].output
    assert merged.reasoning == "The tweet mentions" and "follow-up" in merged.notes[-1]


# ------------------------------------------------------------------------------------------------
# program verification and the classical voter
# ------------------------------------------------------------------------------------------------
def _annotate_all(annotator: Annotator, engine: Engine, samples) -> list[dict]:
    async def go():
        await engine.start()
        try:
            return [await annotator.annotate(s, i) for i, s in enumerate(samples)]
        finally:
            await annotator.aclose()
            await engine.aclose()

    return asyncio.run(go())


def test_program_verification_replaces_wrong_answers_and_says_so(tmp_path):
    method = MethodSettings.defaults(use_program=True, structured_outputs=True)
    with FakeServer(FixedAnswer("7"), count_tokens=False) as server:
        annotator, task_run, engine = _annotator(server.url, "1", method)
        program = OracleEngine("program")
        annotator.side = SideModels(
            annotator.settings,
            task_run.spec,
            SideEngine({}, task_run.spec, task_run.split.pool, engine=program),
        )
        records = _annotate_all(annotator, engine, task_run.samples)
    assert program.prepared == ["openseek-1"]  # prepared once, on the pool
    assert all(r["correct"] == 1.0 and r["method"] == "icl+program" for r in records)
    for r in records:
        assert r["program"]["model_answer"] == "7"
        assert r["program"]["replaced"] == (r["gold"] != "7") and r["program"]["agreed"] == (r["gold"] == "7")
    report = task_report(task_run.spec, records, method, tmp_path, "dev")
    assert report["method"] == "icl+program" and report["pure_icl"] is False
    assert report["side_models"] == ["program"]
    assert report["program"]["replaced"] == sum(r["gold"] != "7" for r in records)


def test_a_side_answer_that_is_not_a_program_never_replaces(tmp_path):
    method = MethodSettings.defaults(use_program=True)
    with FakeServer(FixedAnswer("7"), count_tokens=False) as server:
        annotator, task_run, engine = _annotator(server.url, "1", method)
        side = SideEngine({}, task_run.spec, task_run.split.pool, engine=OracleEngine("retrieval"))
        annotator.side = SideModels(annotator.settings, task_run.spec, side)
        records = _annotate_all(annotator, engine, task_run.samples[:2])
    assert all(r["prediction"] == "7" and not r["program"]["replaced"] for r in records)


def test_classical_voter_joins_the_vote_and_marks_the_run(tmp_path):
    method = MethodSettings.defaults(
        classical_voter=True, classical_weight=1.5, structured_outputs=True, logprobs=5
    )
    with FakeServer(FixedAnswer("Not sad"), count_tokens=False) as server:
        annotator, task_run, engine = _annotator(server.url, "5", method)
        side = SideEngine({}, task_run.spec, task_run.split.pool, engine=OracleEngine("classifier"))
        annotator.side = SideModels(annotator.settings, task_run.spec, side)
        records = _annotate_all(annotator, engine, task_run.samples)
    assert all(r["correct"] == 1.0 and r["method"] == "icl+classifier" for r in records)
    assert all(r["vote"]["side"][0]["source"] == "classifier" for r in records)
    report = task_report(task_run.spec, records, method, tmp_path, "dev")
    assert report["pure_icl"] is False and report["side_models"] == ["classifier"]
    # at equal weight a lone side vote cannot overturn the model (variant 0 wins the tie)
    assert vote([Vote("Not sad", 0), Vote("Sad", -1, "classifier", 1.0)]).answer == "Not sad"


needs_classical = pytest.mark.skipif(
    importlib.util.find_spec("longicl.engines.classical") is None,
    reason="longicl.engines.classical not written yet",
)


@needs_classical
def test_icl_programs_preset_end_to_end(tmp_path):
    with FakeServer(FixedAnswer("7"), count_tokens=False) as server:
        result = run(
            compose(
                "task=[1,5]",
                "split=dev",
                "limit=6",
                "method=icl_programs",
                f"+method.side_engine.cache_dir={tmp_path / 'cache'}",
                f"engine.base_url={server.url}",
                f"out_dir={tmp_path / 'out'}",
            )  # fmt: skip
        )
    task = result.summary["tasks"]["openseek-1"]
    assert (
        task["method"] == "icl+program" and task["pure_icl"] is False and task["side_models"] == ["program"]
    )
    assert task["accuracy"] == 1.0 and task["program"]["checked"] == 6 and task["program"]["usable"] == 6
    records = [
        json.loads(x) for x in (tmp_path / "out" / "records" / "openseek-1.jsonl").read_text().splitlines()
    ]
    assert (
        sum(r["program"]["replaced"] for r in records)
        == task["program"]["replaced"]
        == sum(r["gold"] != "7" for r in records)
    )
    # task 5 has no program: it stays pure ICL under the same preset
    assert result.summary["tasks"]["openseek-5"]["method"] == "icl"
    assert result.summary["tasks"]["openseek-5"]["pure_icl"] is True


@needs_classical
def test_classical_voter_through_the_runner(tmp_path):
    with FakeServer(NoisyLabels(0.7, seed=1), count_tokens=False) as server:
        result = run(
            compose(
                "task=5",
                "split=dev",
                "limit=10",
                "method.classical_voter=true",
                "method.self_consistency=2",
                f"+method.side_engine.cache_dir={tmp_path / 'cache'}",
                f"engine.base_url={server.url}",
                f"out_dir={tmp_path / 'out'}",
            )  # fmt: skip
        )
    task = result.summary["tasks"]["openseek-5"]
    assert task["method"] == "icl+classifier" and task["pure_icl"] is False
    assert task["side_models"] == ["classifier"] and task["requests"] == 20
    records = [
        json.loads(x) for x in (tmp_path / "out" / "records" / "openseek-5.jsonl").read_text().splitlines()
    ]
    assert all(r["vote"]["side"][0]["source"] == "classifier" for r in records)


def test_build_request_is_what_method_py_sends():
    sample = Example("x", "I feel so down today")
    method = MethodSettings.defaults(structured_outputs=True, logprobs=3)
    request = build_request(TASKS[5], method, [{"role": "user", "content": "hi"}], sample)
    assert request.extra_body["structured_outputs"] == {"choice": TASK5_LABELS}
    assert request.logprobs == 3
    assert build_request(TASKS[7], method, [], sample).logprobs is None

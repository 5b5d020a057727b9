"""Task 8 generation: KernelAnnotator against the fake OpenAI-compatible server, with the real checker.

Every LLM call goes over real HTTP to ``fake_server.FakeServer`` through the real ``openai`` client;
the answer policies below play the model (a correct module, a broken first answer then a fix, a
module that never agrees). Tests that run the checker need torch and triton (``kernels`` marker);
a module that cannot define the wanted wrapper or does not parse is failed without a process, which
keeps most of these tests at one or two checker runs (about 3 s each on a CPU).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CONF_DIR, ROOT, compose
from fake_server import FakeServer, FixedAnswer
from omegaconf import OmegaConf

from longicl.annotators import KernelAnnotator, KernelSettings
from longicl.engines import build_engine
from longicl.engines.dryrun import DryRunEngine
from longicl.errors import UsageError
from longicl.kernels.candidates import Candidate, static_signature_failure
from longicl.kernels.check import CheckResult, Stage
from longicl.kernels.execution_metrics import kernel_metrics
from longicl.kernels.extract import extract_code
from longicl.kernels.signature import parse_wrapper_info
from longicl.runner import TaskRun, prepare_tasks, settings_from_config
from longicl.tokens import TokenCounter

CANDIDATES = Path(__file__).resolve().parent / "kernel_candidates"
MIN_ICL = 15_000
DIV, RELU = 1, 23  # test-sample indices of div and relu (tests/kernel_candidates/*_task.txt)


def source(name: str) -> str:
    path = CANDIDATES / f"{name}.py"
    return (path if path.exists() else path.with_suffix(".txt")).read_text(encoding="utf-8")


def chatty(code: str) -> str:
    """An answer the way a chat model writes one: prose, a fenced module, more prose."""
    return f"Here is the implementation.\n\n```python\n{code}```\n\nThe wrapper launches the kernel."


def last_user(body: dict) -> str:
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def is_reference_request(body: dict) -> bool:
    return "do not write Triton this time" in last_user(body)


class Model:
    """Plays the model: ``kernel`` for the task's query, ``reference`` for the reference query,
    ``repair(last_user_text)`` for a repair turn (None: answer ``kernel`` again)."""

    def __init__(
        self, kernel: str, reference: str, repair: Callable[[str], str | None] | None = None
    ) -> None:
        self.kernel, self.reference, self.repair = kernel, reference, repair

    def __call__(self, body: dict) -> str:
        if len(body["messages"]) > 2:  # a repair turn: original messages + assistant + checker report
            fixed = self.repair(last_user(body)) if self.repair else None
            return chatty(fixed or self.kernel)
        return chatty(self.reference if is_reference_request(body) else self.kernel)


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


@pytest.fixture(scope="module")
def test_run(counter: TokenCounter) -> tuple[Any, TaskRun]:
    settings = settings_from_config(compose("task=8", "split=test", "limit=30"))
    (task_run,) = prepare_tasks(settings, counter)
    return settings, task_run


def kernel_settings(tmp_path: Path, **changes: Any) -> KernelSettings:
    return KernelSettings.defaults(device="cpu", timeout_s=60, cache_dir=str(tmp_path / "cache"), **changes)


def annotate(
    server: FakeServer,
    settings: Any,
    task_run: TaskRun,
    indices: list[int],
    kernels: KernelSettings,
    request_logger: Callable[[Any, Any], None] | None = None,
) -> list[dict]:
    engine = build_engine({**settings.engine.as_dict(), "base_url": server.url, "max_retries": 1})
    annotator = KernelAnnotator(
        task_run.spec,
        task_run.builder,
        engine,
        settings.method,
        request_logger=request_logger,
        kernels=kernels,
    )

    async def go() -> list[dict]:
        await engine.start()
        try:
            return [await annotator.annotate(task_run.samples[i], i) for i in indices]
        finally:
            await annotator.aclose()
            await engine.aclose()

    return asyncio.run(go())


def demonstrations(body: dict) -> str:
    """The first user message up to the end of its last demonstration (each ends with a fence)."""
    content = body["messages"][1]["content"]
    return content[: content.rindex("\n```\n\n") + 5]


def assert_icl_floor(record: dict, server: FakeServer, counter: TokenCounter) -> None:
    assert record["requests"], record
    for log in record["requests"]:
        assert log["icl_tokens"] >= MIN_ICL, (log["role"], log["icl_tokens"])
    for body in server.requests:  # what was really sent: the demonstrations precede the query
        assert counter.count(demonstrations(body)) >= MIN_ICL


# ------------------------------------------------------------------------------------------------
# the pipeline against the fake server (checker runs for real)


@pytest.mark.kernels
def test_correct_module_is_checked_against_the_reference(test_run, counter, tmp_path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    settings, task_run = test_run
    with FakeServer(Model(source("div_triton"), source("div_torch"))) as server:
        (record,) = annotate(server, settings, task_run, [DIV], kernel_settings(tmp_path))
    kernel = record["kernel"]
    assert kernel["final"] == "triton" and kernel["tier"] == "triton", kernel
    assert kernel["callable"] and kernel["agrees"] is True and kernel["stage"] == "passed"
    assert kernel["reference_passed"] and kernel["candidates"][0]["against_reference"]
    assert kernel["repair_rounds"] == 0 and kernel["uses_triton"]
    assert record["prediction"] == source("div_triton") and record["error"] is None
    assert [q["role"] for q in record["requests"]] == ["kernel", "reference"]
    assert len(server.requests) == 2
    assert_icl_floor(record, server, counter)
    # Both requests share everything up to the query: system message and demonstrations.
    kernel_body, reference_body = sorted(server.requests, key=is_reference_request)
    assert kernel_body["messages"][0] == reference_body["messages"][0]
    assert demonstrations(kernel_body) == demonstrations(reference_body)
    assert reference_body["max_tokens"] < kernel_body["max_tokens"]


@pytest.mark.kernels
def test_broken_first_answer_is_repaired_from_the_checker_report(test_run, counter, tmp_path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    settings, task_run = test_run
    seen: list[str] = []

    def repair(report: str) -> str | None:
        seen.append(report)
        return source("div_triton") if "SyntaxError" in report else None

    model = Model(source("syntax_error"), source("div_torch"), repair)
    with FakeServer(model) as server:
        (record,) = annotate(server, settings, task_run, [DIV], kernel_settings(tmp_path))
    kernel = record["kernel"]
    assert kernel["repair_rounds"] == 1 and kernel["final"] == "triton_repaired_1", kernel
    first, repaired = kernel["candidates"]
    assert first["stage"] == "parse" and first["kind"] == "syntax"
    assert repaired["passed"] and repaired["agrees"] is True
    assert record["prediction"] == source("div_triton")
    assert [q["role"] for q in record["requests"]] == ["kernel", "reference", "repair_1"]
    # The repair turn: the original two messages, the broken module, then the checker's own error.
    (body,) = [b for b in server.requests if len(b["messages"]) == 4]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert "def div(" in body["messages"][2]["content"]
    assert first["error"].split(" (line")[0] in seen[0] and "`parse`" in seen[0]
    assert_icl_floor(record, server, counter)


@pytest.mark.kernels
def test_never_agreeing_triton_falls_back_to_the_running_reference(test_run, counter, tmp_path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    settings, task_run = test_run
    with FakeServer(Model(source("div_wrong_math"), source("div_torch"))) as server:
        (record,) = annotate(server, settings, task_run, [DIV], kernel_settings(tmp_path, repair_rounds=1))
    kernel = record["kernel"]
    assert [c["kind"] for c in kernel["candidates"]] == ["mismatch", "mismatch"]
    assert all(c["callable"] and c["agrees"] is False for c in kernel["candidates"])
    assert kernel["final"] == "reference" and kernel["tier"] == "reference", kernel
    assert kernel["callable"] and kernel["agrees"] is None and not kernel["uses_triton"]
    assert record["prediction"] == source("div_torch") and record["error"] is None
    repair_body = next(b for b in server.requests if len(b["messages"]) == 4)
    assert "independent PyTorch implementation" in last_user(repair_body)
    assert_icl_floor(record, server, counter)


@pytest.mark.kernels
def test_fixed_module_over_five_samples_keeps_every_prediction(test_run, tmp_path) -> None:
    """One fixed correct module (it defines ``div``) for five samples that ask for five wrappers:
    nothing crashes, every sample keeps the module as its prediction, and the sample that asks for
    ``div`` gets a module the checker calls; the others fail at the signature without a process."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    from longicl.kernels.check import check_candidate

    settings, task_run = test_run
    module = source("div_triton")
    with FakeServer(FixedAnswer(chatty(module))) as server:
        records = annotate(server, settings, task_run, list(range(5)), kernel_settings(tmp_path))
    assert [r["prediction"] for r in records] == [module] * 5
    assert all(r["error"] is None and r["parsed_ok"] for r in records)
    by_final = {r["index"]: r["kernel"]["final"] for r in records}
    assert by_final[DIV] == "triton"
    assert all(by_final[i] == "triton_failed" for i in by_final if i != DIV)
    others = [r for r in records if r["index"] != DIV]
    assert all(r["kernel"]["stage"] == "signature" and r["kernel"]["repair_rounds"] == 2 for r in others)
    assert len(server.requests) == 5 * 2 + 4 * 2  # kernel + reference each, two repairs for four
    verdict = check_candidate(records[DIV]["prediction"], task_run.samples[DIV].input, device="cpu")
    assert verdict.callable
    metrics = kernel_metrics(records)
    assert metrics["n"] == 5 and metrics["with_code"] == 5 and metrics["callable"] == 1
    assert metrics["final"] == {"triton_failed": 4, "triton": 1}


@pytest.mark.kernels
def test_main_task8_limit5_writes_code_predictions(tmp_path) -> None:
    """`main.py task=8 split=test limit=5` against a server returning a fixed correct module."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    from longicl import runner

    module = source("div_triton")
    with FakeServer(FixedAnswer(chatty(module))) as server:
        result = runner.run(
            compose(
                "task=8",
                "split=test",
                "limit=5",
                f"engine.base_url={server.url}",
                f"out_dir={tmp_path / 'out'}",
                "kernels.check.device=cpu",
                f"kernels.cache_dir={tmp_path / 'cache'}",
            )
        )
    assert result.missing == 0 and result.submission is not None
    rows = [json.loads(x) for x in (tmp_path / "out" / "openseek-8.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(r["prediction"] == module for r in rows)
    task = result.summary["tasks"]["openseek-8"]
    assert task["kernels"]["callable"] == 1 and task["kernels"]["with_code"] == 5


@pytest.mark.kernels
def test_dev_sample_is_checked_against_its_gold(counter, tmp_path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    settings = settings_from_config(compose("task=8", "split=dev"))
    (task_run,) = prepare_tasks(settings, counter)
    # A dev sample whose gold (an elementwise cos kernel) runs in the Triton interpreter.
    index = next(
        i for i, s in enumerate(task_run.samples) if s.id.endswith("f8f700ef89624ae5b2408f04c3b02dfc")
    )
    sample = task_run.samples[index]
    kernels = kernel_settings(tmp_path, reference=False)
    with FakeServer(FixedAnswer(chatty(sample.output or ""))) as server:
        (record,) = annotate(server, settings, task_run, [index], kernels)
    kernel = record["kernel"]
    assert kernel["gold"]["passed"] and kernel["gold"]["cached"] is False, kernel["gold"]
    assert kernel["vs_gold"]["agrees"] is True and kernel["final"] == "triton"
    assert kernel["reference"] is None and len(server.requests) == 1
    annotator = KernelAnnotator(
        task_run.spec, task_run.builder, DryRunEngine(), settings.method, kernels=kernels
    )
    again = asyncio.run(annotator.gold_check(sample))  # from .cache/kernels, no process
    assert again is not None and again["cached"] is True and again["stage"] == "passed"
    metrics = kernel_metrics([record])
    assert metrics["gold"]["callable_rate"] == 1.0 and metrics["vs_gold"]["agree_rate"] == 1.0


# ------------------------------------------------------------------------------------------------
# no checker process needed


def test_dry_run_logs_kernel_and_reference_requests_with_the_icl_floor(test_run) -> None:
    settings, task_run = test_run
    logged: list = []
    annotator = KernelAnnotator(
        task_run.spec,
        task_run.builder,
        DryRunEngine(),
        settings.method,
        request_logger=lambda request, plan: logged.append((request, plan)),
        kernels=KernelSettings.defaults(),
    )
    record = asyncio.run(annotator.annotate(task_run.samples[DIV], DIV))
    assert [q["role"] for q in record["requests"]] == ["kernel", "reference"]
    assert len(logged) == 2 and all(plan.icl_tokens >= MIN_ICL for _, plan in logged)
    (_, kernel_plan), (reference_request, reference_plan) = logged
    assert reference_plan.static.sha256 == kernel_plan.static.sha256
    assert reference_plan.dynamic_ids == kernel_plan.dynamic_ids
    assert "`div`" in reference_request.messages[1]["content"]
    assert reference_request.max_tokens == KernelSettings.defaults().reference_max_tokens


def test_syntax_errors_and_missing_wrappers_fail_without_a_process(test_run, tmp_path) -> None:
    """A fixed answer with a syntax error: both the kernel and the reference fail at parse, the
    repair rounds run, and the record keeps the broken code as its answer (nothing better)."""
    settings, task_run = test_run
    broken = source("syntax_error")
    with FakeServer(FixedAnswer(chatty(broken))) as server:
        (record,) = annotate(server, settings, task_run, [RELU], kernel_settings(tmp_path))
    kernel = record["kernel"]
    assert [c["stage"] for c in kernel["candidates"]] == ["parse"] * 3
    assert kernel["final"] == "triton_failed" and kernel["tier"] == "any_code"
    assert kernel["reference"]["stage"] == "parse" and not kernel["reference_passed"]
    assert record["prediction"] == extract_code(chatty(broken), wrapper="relu")
    assert all(c["seconds"] < 1 for c in kernel["candidates"])
    assert len(server.requests) == 2 + 2


def test_repair_requests_go_through_the_request_logger(test_run, tmp_path) -> None:
    """Every request the annotator sends, repairs included, passes the request logger first; the
    logged request is the one the server got, and the record's token counts are the request's."""
    settings, task_run = test_run
    logged: list = []
    with FakeServer(FixedAnswer(chatty(source("syntax_error")))) as server:
        (record,) = annotate(
            server,
            settings,
            task_run,
            [RELU],
            kernel_settings(tmp_path, reference=False),
            request_logger=lambda request, plan: logged.append((request, plan)),
        )
    assert [q["role"] for q in record["requests"]] == ["kernel", "repair_1", "repair_2"]
    assert len(logged) == len(server.requests) == 3
    assert [request.messages for request, _ in logged] == [body["messages"] for body in server.requests]
    assert [len(request.messages) for request, _ in logged] == [2, 4, 4]
    for (request, plan), log in zip(logged, record["requests"], strict=True):
        assert request.prompt_tokens == log["prompt_tokens"] and plan.sample.id == record["sample_id"]
        assert log["uncached_tokens"] == request.prompt_tokens - plan.shared_prefix_tokens
    assert logged[1][0].prompt_tokens > logged[0][0].prompt_tokens  # the repair turns are counted


def test_static_signature_failure() -> None:
    relu = parse_wrapper_info((CANDIDATES / "relu_task.txt").read_text(encoding="utf-8"))
    assert relu is not None
    failed = static_signature_failure(source("div_triton"), relu)
    assert failed is not None and failed.stage is Stage.SIGNATURE and "div" in (failed.error or "")
    for fine in (
        source("relu_triton"),
        "import torch\nrelu = torch.relu\n",
        "from torch import relu\n",
        "from torch.nn.functional import *\n",  # cannot tell: the checker decides
        "try:\n    from fast import relu\nexcept ImportError:\n    def relu(x): return x\n",
    ):
        assert static_signature_failure(fine, relu) is None, fine
    assert static_signature_failure("def f(:", relu) is None  # parse errors are the checker's
    assert static_signature_failure(source("div_triton"), None) is None


def _candidate(source_: str, round_: int, stage: Stage, *, callable_: bool = False) -> Candidate:
    result = CheckResult(stage, callable=callable_, agrees=None if stage is Stage.PASSED else False)
    return Candidate(source_, round_, f"# {source_} {round_}\n", result)


def test_fallback_order(test_run) -> None:
    settings, task_run = test_run
    annotator = KernelAnnotator(
        task_run.spec, task_run.builder, DryRunEngine(), settings.method, kernels=KernelSettings.defaults()
    )
    reference = _candidate("reference", 0, Stage.PASSED, callable_=True)
    mismatching = [_candidate("triton", 0, Stage.AGREE, callable_=True), _candidate("triton", 1, Stage.RUN)]
    chosen, tier = annotator.choose(mismatching, reference)
    assert chosen is reference and tier == "reference" and chosen.label == "reference"
    repaired = [*mismatching, _candidate("triton", 2, Stage.PASSED, callable_=True)]
    chosen, tier = annotator.choose(repaired, reference)
    assert chosen is repaired[2] and chosen.label == "triton_repaired_2"
    annotator.kernels = KernelSettings.defaults(fallback=("triton", "callable", "reference"))
    chosen, tier = annotator.choose(mismatching, reference)
    assert chosen is mismatching[0] and tier == "callable" and chosen.label == "triton_callable"
    annotator.kernels = KernelSettings.defaults()
    failed_reference = _candidate("reference", 0, Stage.RUN)
    chosen, tier = annotator.choose([_candidate("triton", 0, Stage.IMPORT)], failed_reference)
    assert tier == "any_code" and chosen is not None and chosen.label == "triton_failed"
    chosen, tier = annotator.choose([], failed_reference)
    assert tier == "reference_code" and chosen is failed_reference
    assert annotator.choose([], None) == (None, None)


def test_kernel_settings_from_config() -> None:
    conf = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "kernels" / "default.yaml"))
    assert KernelSettings.from_config(conf) == KernelSettings.defaults()  # the file and the defaults agree
    changed = KernelSettings.from_config(
        {"repair_rounds": 0, "check": {"timeout": 5, "device": "cpu"}}, fill_missing=True
    )
    assert changed.repair_rounds == 0 and changed.timeout_s == 5.0 and changed.device == "cpu"
    assert changed.memory_mb == KernelSettings.defaults().memory_mb  # filled from the YAML
    with pytest.raises(UsageError, match="kernels.atol is not set"):
        KernelSettings.from_config({"repair_rounds": 0})  # no default outside conf/
    for bad in (
        {"repair_rounds": -1},
        {"fallback": ["triton", "best"]},
        {"check": {"device": "tpu"}},
        {"check": {"timeout": 0}},
        {"reference": "yes"},
        {"reference_query": "no input placeholder"},
        {"retries": 3},
    ):
        with pytest.raises(UsageError):
            KernelSettings.from_config(bad, fill_missing=True)
    assert KernelSettings.defaults(cache_dir="x/y").cache_path() == ROOT / "x" / "y"


def test_kernel_metrics_from_records() -> None:
    def row(final: str, stage: str, callable_: bool, agrees: bool | None, against: bool) -> dict:
        candidate = {"source": "triton", "passed": stage == "passed", "against_reference": against}
        return {
            "sample_id": final,
            "prediction": "code",
            "kernel": {
                "final": final,
                "stage": stage,
                "kind": None if stage == "passed" else "mismatch",
                "callable": callable_,
                "agrees": agrees,
                "candidates": [candidate],
                "reference": None,
                "repair_rounds": 0,
            },
        }

    records = [
        row("triton", "passed", True, True, True),
        row("triton_callable", "agree", True, False, True),
        row("reference", "passed", True, None, False),
        {"sample_id": "dry", "prediction": ""},
    ]
    m = kernel_metrics(records)
    assert (m["n"], m["checked"], m["callable"], m["agrees"], m["passed"]) == (4, 3, 3, 1, 2)
    assert m["call_rate"] == 0.75 and m["agree_rate"] == 0.25 and m["agree_rate_checked"] == 0.5
    assert m["final"] == {"triton": 1, "triton_callable": 1, "reference": 1}
    assert [s["sample_id"] for s in m["samples"]] == ["triton", "triton_callable", "reference"]
    assert "gold" not in m and kernel_metrics([])["call_rate"] is None


# ------------------------------------------------------------------------------------------------
# the centroid static block


def test_centroid_static_block_follows_the_split(test_run, counter) -> None:
    import numpy as np

    from longicl.data import load_task
    from longicl.selection.centroid import CentroidSelector
    from longicl.selection.hybrid import HybridSelector
    from longicl.tasks import TASKS

    _, task_run = test_run
    builder = task_run.builder
    data = load_task(TASKS[8], ROOT / "data" / "openseek")
    budget = builder.budget
    pool, costs = builder.pool, builder.costs
    centroid = CentroidSelector(TASKS[8], pool, costs, 0)
    centroid.observe(data.test_samples)
    chosen = centroid.static_demos(budget)
    assert sum(costs[i] for i in chosen) >= budget.static_tokens >= MIN_ICL
    assert len(set(chosen)) == len(chosen)
    again = CentroidSelector(TASKS[8], pool, costs, 0)
    again.observe(data.test_samples)
    assert again.static_demos(budget) == chosen  # deterministic: one block for every sample
    assert again.static_demos(budget, 1) != chosen  # a self-consistency variant differs
    relevance = centroid.relevance()
    assert relevance[chosen[-1]] >= np.median(relevance)  # the most relevant sits nearest the query
    random_block = HybridSelector(TASKS[8], pool, costs, 0).static_demos(budget)
    assert relevance[chosen].mean() > relevance[random_block].mean()
    assert len(chosen) > len(random_block)  # shorter examples: more operations shown
    # Closed label sets keep hybrid's label-stratified block.
    labels = TASKS[5]
    pool5 = [type(pool[0])(f"s{i}", f"text {i}", labels.labels[i % 2]) for i in range(40)]
    closed = CentroidSelector(labels, pool5, [10] * 40, 0)
    closed.observe(pool5[:5])
    hybrid_budget = type(budget)(100, 0, 100, 1000)
    assert closed.static_demos(hybrid_budget) == HybridSelector(labels, pool5, [10] * 40, 0).static_demos(
        hybrid_budget
    )

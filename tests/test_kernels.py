"""Task 8 tooling: code extraction, wrapper signatures, and the sandboxed kernel checker.

Extraction and signature tests are pure Python. Checker tests (marked ``kernels``) need torch and
triton (the ``[kernels]`` extra) and run hand-written candidates from ``tests/kernel_candidates``
(correct Triton, correct PyTorch, wrong maths, wrong signature, syntax error, infinite loop,
unbounded allocation, network call, write outside the working directory) against real test-sample
descriptions; each must be classified correctly within its timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from longicl.kernels.extract import extract_code, fenced_blocks, strip_thinking
from longicl.kernels.signature import (
    WrapperSignature,
    input_plans,
    parse_signature,
    parse_wrapper_info,
    signature_from_source,
)

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = Path(__file__).resolve().parent / "kernel_candidates"
TASK_FILE = ROOT / "data" / "openseek" / "openseek-8_kernel_generation.json"


def task(name: str) -> str:
    return (CANDIDATES / f"{name}_task.txt").read_text(encoding="utf-8")


def candidate(name: str) -> str:
    path = CANDIDATES / f"{name}.py"
    if not path.exists():  # modules that must not parse are kept as .txt, out of the linters' way
        path = path.with_suffix(".txt")
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------
# extract_code

KERNEL = """import triton
import triton.language as tl

@triton.jit
def k(x_ptr):
    pass

def add(x, y):
    return x + y
"""


def test_extract_prefers_the_block_that_defines_the_wrapper() -> None:
    answer = (
        "Here is a helper:\n```python\nimport torch\nHELPER = 1\n" + "# padding\n" * 30 + "```\n"
        "and the solution:\n```python\n" + KERNEL + "```\nDone."
    )
    assert extract_code(answer, wrapper="add") == KERNEL
    assert extract_code(answer) == KERNEL  # @triton.jit beats a longer block without a kernel


def test_extract_drops_thinking_blocks() -> None:
    answer = "<think>\n```python\ndef wrong():\n    pass\n```\n</think>\n```python\n" + KERNEL + "```"
    assert extract_code(answer) == KERNEL
    # The opening tag was in the prompt: everything before the closing tag is reasoning.
    assert extract_code("let me think\n```python\nx = 1\n```\n</think>\n```py\n" + KERNEL + "```") == KERNEL
    # Cut short while thinking: no answer.
    assert extract_code("<think>\nI could write\n```python\ndef f(): pass\n```") is None
    assert strip_thinking("a<think>b</think>c<THINK>d") == "ac"


def test_extract_untagged_and_unclosed_fences() -> None:
    assert extract_code("```\n" + KERNEL + "```") == KERNEL
    assert extract_code("Answer:\n```python\n" + KERNEL) == KERNEL  # truncated reply, fence never closed
    assert extract_code("~~~python\n" + KERNEL + "~~~") == KERNEL
    # Blocks in other languages are ignored.
    assert extract_code("```bash\npip install triton\n```\n```python\n" + KERNEL + "```") == KERNEL
    assert [tag for tag, _ in fenced_blocks("```json\n{}\n```\n```\nx\n```")] == ["json", ""]


def test_extract_bare_module_trims_prose() -> None:
    answer = (
        "Sure! Here is the implementation.\n\n" + KERNEL + "\nThis kernel adds two tensors.\nHope it helps!"
    )
    assert extract_code(answer) == KERNEL
    assert extract_code(KERNEL) == KERNEL
    assert extract_code("Note: the kernel uses BLOCK = 128 lanes.\n" + KERNEL + "\nThat's all.") == KERNEL
    assert extract_code("I cannot help with that.") is None
    assert extract_code("") is None
    assert extract_code("<think>only thoughts</think>") is None


def test_extract_bare_module_that_never_parses_is_returned_for_the_checker() -> None:
    code = extract_code("import torch\ndef f(:\n    pass\n")
    assert code is not None and code.startswith("import torch")


# ------------------------------------------------------------------------------------------------
# Signatures


def test_parse_div_signature() -> None:
    sig = parse_wrapper_info(task("div"))
    assert sig is not None and sig.name == "div"
    assert [p.name for p in sig.positional] == ["input", "other"]
    assert [p.name for p in sig.keyword_only] == ["rounding_mode", "out"]
    assert [p.name for p in sig.required] == ["input", "other"]
    assert sig.param("other").type == "tensor"  # "Tensor or Number": the first alternative
    assert sig.param("rounding_mode").type == "str" and sig.param("rounding_mode").default == "None"


def test_parse_softmax_and_relu_signatures() -> None:
    soft = parse_wrapper_info(task("softmax"))
    assert soft is not None and soft.name == "softmax"
    assert [(p.name, p.type, p.required) for p in soft.params] == [
        ("input", "tensor", True),
        ("dim", "int", True),
        ("dtype", "dtype", False),
    ]
    relu = parse_wrapper_info(task("relu"))
    assert relu is not None and relu.name == "relu"
    assert relu.param("inplace").type == "bool" and not relu.param("inplace").required


def _wrapped(info: str, description: str = "Does something.") -> str:
    return f"Functional Description: {description}\nWrapper Entry Information: {info}\nMath: y = f(x)\n"


def test_parse_varied_formats() -> None:
    sig = parse_wrapper_info(
        _wrapped(
            "def fused_bmm(input1, input2, p=0.5, training=True, *, out=None) -> Tensor\n"
            "- **input1** (Tensor): First input, of shape (B, N, M).\n"
            "- **input2** (Tensor): Second input, of shape `(B, M, P)`.\n"
            "Shape: - Output: (B, N, P)."
        )
    )
    assert sig is not None and sig.name == "fused_bmm"
    assert sig.param("input1").shape == ("B", "N", "M") and sig.param("input2").shape == ("B", "M", "P")
    assert sig.param("training").type == "bool" and sig.output_shape == ("B", "N", "P")

    annotated = parse_wrapper_info(
        _wrapped("def gelu_conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, "
                 "stride: Union[int, Tuple[int, int]] = 1, approximate: str = 'none') -> Tensor")
    )  # fmt: skip
    assert annotated is not None
    assert [(p.name, p.type) for p in annotated.params] == [
        ("input", "tensor"), ("weight", "tensor"), ("bias", "tensor"), ("stride", "int"), ("approximate", "str"),
    ]  # fmt: skip

    dotted = parse_wrapper_info(
        _wrapped("def linalg.svd(A, full_matrices=True, *, driver=None) -> (Tensor, Tensor)")
    )
    assert dotted is not None and dotted.name == "svd" and dotted.qualname == "linalg.svd"
    assert dotted.aliases() == ["svd", "linalg_svd"]

    stars = parse_wrapper_info(_wrapped("rand(*size, *, generator=None, dtype=None) -> Tensor"))
    assert stars is not None and stars.params[0].kind == "var_positional"

    headless = parse_wrapper_info(
        _wrapped("A (Tensor), B (Tensor), *, left (bool, optional), out (Tensor, optional)")
    )
    assert headless is not None and headless.name is None and headless.source == "args_only"
    assert [p.name for p in headless.required] == ["A", "B"]
    assert headless.param("left").kind == "keyword_only"

    assert parse_wrapper_info("Functional Description: nothing else") is None


def test_signature_from_source_skips_kernels_and_tests() -> None:
    code = (
        "import triton\n@triton.jit\ndef kern(x): pass\n"
        "def rowwise(x: torch.Tensor, scale: float = 2.0, *, inplace=False): pass\n"
        "def test_rowwise(): pass\n"
    )
    sig = signature_from_source(code)
    assert sig is not None and sig.name == "rowwise" and sig.source == "code"
    assert [(p.name, p.type, p.required) for p in sig.params] == [
        ("x", "tensor", True),
        ("scale", "float", False),
        ("inplace", "bool", False),
    ]
    assert signature_from_source("def broken(:") is None
    # Example-style prose that names the wrapper picks it even when it is not the last def.
    prose = "The Python function 'rowwise' is a wrapper that launches the kernel."
    two = code + "def helper(y): pass\n"
    picked = parse_signature(prose, two)
    assert picked is not None and picked.name == "rowwise"


def test_signature_round_trips_through_json() -> None:
    sig = parse_wrapper_info(task("div"))
    assert sig is not None
    again = WrapperSignature.from_dict(json.loads(json.dumps(sig.to_dict())))
    assert again == sig


def test_input_plans_use_shape_hints_consistently() -> None:
    sig = parse_wrapper_info(
        _wrapped(
            "fused(input1, input2, normalized_shape, dropout_p=0.5, training=True) -> Tensor; "
            "input1 (Tensor): of shape (B, N, M); input2 (Tensor): of shape (B, M, P); "
            "normalized_shape (int): size of the last dimension."
        )
    )
    assert sig is not None
    plans = input_plans(sig)
    assert [p.name for p in plans] == ["hinted", "square", "vector", "batched3", "batched4"]
    hinted = {a.name: a for a in plans[0].args}
    b, n, m = hinted["input1"].shape
    assert hinted["input2"].shape[:2] == [b, m]  # the shared symbols got the same sizes
    assert hinted["normalized_shape"].value == m
    assert plans[0].optional_kwargs == {"training": False}
    assert [a.shape for a in plans[1].args if a.type == "tensor"] == [[8, 8], [8, 8]]


def test_input_plans_pick_value_domains() -> None:
    sqrt = parse_wrapper_info(_wrapped("sqrt(input, *, out=None) -> Tensor"))
    chol = parse_wrapper_info(
        _wrapped("cholesky(A, *, upper=False) -> Tensor; A (Tensor): of shape (*, n, n)")
    )
    assert sqrt is not None and chol is not None
    assert input_plans(sqrt)[0].args[0].domain == "positive"
    assert input_plans(chol)[0].args[0].domain == "spd" and input_plans(chol)[0].args[0].shape == [4, 4]


@pytest.mark.skipif(not TASK_FILE.exists(), reason="task 8 data not present")
def test_parse_rate_over_the_test_samples() -> None:
    samples = json.loads(TASK_FILE.read_text(encoding="utf-8"))["test_samples"]
    sigs = [parse_wrapper_info(s["input"]) for s in samples]
    assert len(samples) == 166
    assert all(s is not None for s in sigs)  # every sample yields a signature
    named = [s for s in sigs if s is not None and s.name]
    assert len(named) >= 164  # two samples document arguments without naming the function
    assert sum(1 for s in sigs if s is not None and s.fully_typed) >= 160


# ------------------------------------------------------------------------------------------------
# The checker (needs torch + triton)

# (candidate, task, reference, expected stage, expected kind, timeout, memory_mb)
CASES: dict[str, tuple[str, str, str | None, str, str | None, float, int]] = {
    "div_triton_vs_torch": ("div_triton", "div", "div_torch", "passed", None, 40, 4096),
    "div_triton_alone": ("div_triton", "div", None, "passed", None, 40, 4096),
    "div_torch_alone": ("div_torch", "div", None, "passed", None, 40, 4096),
    "div_wrong_math": ("div_wrong_math", "div", "div_torch", "agree", "mismatch", 40, 4096),
    "div_wrong_signature": ("div_wrong_signature", "div", "div_torch", "signature", "signature", 40, 4096),
    "div_wrong_name": ("div_wrong_name", "div", None, "signature", "signature", 40, 4096),
    "syntax_error": ("syntax_error", "div", None, "parse", "syntax", 40, 4096),
    "infinite_loop": ("infinite_loop", "div", None, "run", "timeout", 8, 4096),
    "unbounded_alloc": ("unbounded_alloc", "div", None, "run", "memory", 40, 2048),
    "network_call": ("network_call", "div", None, "run", "network", 40, 4096),
    "write_outside": ("write_outside", "div", None, "run", "filesystem", 40, 4096),
    "spawn_process": ("spawn_process", "div", None, "run", "process", 40, 4096),
    "write_inside": ("write_inside", "div", None, "passed", None, 40, 4096),
    "relu_triton_cuda_style": ("relu_triton", "relu", "relu_torch", "passed", None, 40, 4096),
    "relu_wrong_math": ("relu_wrong_math", "relu", "relu_torch", "agree", "mismatch", 40, 4096),
    "softmax_triton_vs_torch": ("softmax_triton", "softmax", "softmax_torch", "passed", None, 40, 4096),
    "softmax_wrong_math": ("softmax_wrong_math", "softmax", "softmax_torch", "agree", "mismatch", 40, 4096),
}


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, float, Path]]:
    """Every case checked once, two at a time (the machine has two cores)."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    from longicl.kernels.check import check_candidate

    outside = tmp_path_factory.mktemp("outside") / "escaped.txt"

    def run(item: tuple[str, tuple]) -> tuple[str, tuple[object, float, Path]]:
        name, (cand, task_name, ref, _stage, _kind, timeout, memory_mb) = item
        code = candidate(cand).replace("__TARGET__", str(outside))
        result = check_candidate(
            code,
            task(task_name),
            candidate(ref) if ref else None,
            timeout_s=timeout,
            memory_mb=memory_mb,
            device="cpu",
        )
        return name, (result, timeout, outside)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, CASES.items()))


@pytest.mark.kernels
@pytest.mark.parametrize("case", list(CASES))
def test_candidate_is_classified(case: str, checked: dict) -> None:
    result, timeout, outside = checked[case]
    _cand, _task, ref, stage, kind, _timeout, _mem = CASES[case]
    assert result.stage.value == stage, result.to_dict()
    assert result.kind == kind, result.to_dict()
    assert result.seconds < timeout + 15  # killed promptly (the margin covers a busy machine)
    if stage == "passed":
        assert result.callable and result.error is None
        assert result.agrees is (True if ref else None)
    if kind == "mismatch":
        assert result.callable and result.agrees is False
    if case == "write_outside":
        assert not outside.exists()
    if case == "relu_triton_cuda_style":
        assert result.cuda_shim_used  # `assert input.is_cuda` / device="cuda" ran on the CPU


@pytest.mark.kernels
def test_cli_prints_one_json_object(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    cmd = [sys.executable, "-m", "longicl.kernels.check", str(CANDIDATES / "div_torch.py"),
           "--task-input", str(CANDIDATES / "div_task.txt"), "--timeout", "40", "--device", "cpu"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["stage"] == "passed" and data["callable"] is True and data["passed"] is True
    assert "Warning" not in proc.stderr


def test_cli_bad_input_exits_2_without_traceback(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "longicl.kernels.check",
        str(tmp_path / "missing.py"),
        "--task-input",
        "x.txt",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    bad_timeout = subprocess.run(
        [*cmd[:3], str(CANDIDATES / "div_torch.py"), "--timeout", "abc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_timeout.returncode == 2 and "Traceback" not in bad_timeout.stderr


def test_syntax_errors_and_empty_code_never_start_a_process() -> None:
    from longicl.kernels.check import Stage, check_candidate

    broken = check_candidate(candidate("syntax_error"), task("div"))
    assert broken.stage is Stage.PARSE and broken.kind == "syntax" and broken.seconds < 1
    empty = check_candidate(None, task("div"))
    assert empty.stage is Stage.PARSE and empty.kind == "empty"


def test_gold_report_tallies_the_checker_verdicts(tmp_path: Path, monkeypatch) -> None:
    """check_gold_examples counts stages, kinds, callable, passed and CUDA shims over the verdicts,
    and lists one row per example (its id first, the log left out)."""
    from longicl.kernels import check

    verdicts = {
        "a": check.CheckResult(check.Stage.PASSED, callable=True, agrees=True, kind="triton", log="x"),
        "b": check.CheckResult(check.Stage.PASSED, callable=True, kind="torch", cuda_shim_used=True),
        "c": check.CheckResult(check.Stage.RUN, error="boom"),
    }
    examples = [{"id": i, "input": i, "output": [f"# {i}"]} for i in verdicts]
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps({"examples": examples}), encoding="utf-8")
    monkeypatch.setattr(check, "parse_signature", lambda task_input, gold: None)
    monkeypatch.setattr(check, "check_candidate", lambda code, task_input, **_: verdicts[task_input])
    report = check.check_gold_examples(task_file, workers=2)
    assert (report.total, report.callable, report.passed, report.cuda_shim_used) == (3, 2, 2, 1)
    assert report.stages == {"passed": 2, check.Stage.RUN.value: 1}
    assert report.kinds == {"triton": 1, "torch": 1, "none": 1}
    assert [r["id"] for r in report.results] == ["a", "b", "c"]
    assert report.results[2]["error"] == "boom" and all("log" not in r for r in report.results)

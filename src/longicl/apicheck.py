"""Check a running OpenAI-compatible server (vLLM / FlagScale) before a long annotation run.

``python api_test.py [--quick]`` runs these checks and prints a PASS/FAIL table; exit code 0 only
when every check that ran passed, 1 when one failed, 2 when no server answers (one line on stderr):

- ``models``: ``/v1/models`` lists the model and reports ``max_model_len`` >= the configured length
  (``llm_config.yaml``'s, or ``--min-model-len``); ``/health`` is reported alongside;
- ``chat, thinking off`` / ``chat, thinking on``: a short question with
  ``chat_template_kwargs.enable_thinking`` false, then true; the answer must be right, with no
  reasoning in the first case and some reasoning (``reasoning`` / ``reasoning_content`` field, or an
  inline ``<think>`` block) in the second;
- ``structured choice``: a ``structured_outputs: {"choice": [...]}`` constraint; the answer must be
  exactly one of the choices;
- ``long context`` (skipped by ``--quick``): ~100K tokens of deterministic filler (counted with the
  Qwen tokenizer) with one planted passphrase at 60 % depth; the answer must contain it;
- ``prefix cache`` (skipped by ``--quick``): the same ~30K-token prefix twice (a fresh random nonce
  first, so the first request is always cold). Passes when the second request reports
  ``usage.prompt_tokens_details.cached_tokens > 0`` (needs ``--enable-prompt-tokens-details``), or,
  when the server reports no cached tokens, when the second request took less than half as long as
  the first: a 30K-token prefill costs far more than decoding a few tokens, so only a cache hit
  explains such a drop;
- ``throughput`` (skipped by ``--quick``): N concurrent ~1K-token requests of 256 output tokens
  (``ignore_eos``), reporting output and prompt tokens per second; passes when all N succeed.

Probe prompts carry the marker ``APICHECK_MARKER`` in their system message and state the planted
fact as ``NEEDLE_TEMPLATE``; the test suite's fake server (``tests/fake_server.py``,
``ProbeAnswers``) recognises exactly these to answer like a model would.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI, OpenAI

from longicl.errors import EXIT_USAGE, UsageError, one_line

DEFAULT_BASE_URL = "http://127.0.0.1:2026/v1"
DEFAULT_MIN_MODEL_LEN = 131072
APICHECK_MARKER = "longicl-apicheck"
SYSTEM_PROMPT = f"You are answering the {APICHECK_MARKER} server checks. Follow the instructions exactly."
ARITHMETIC_PROMPT = "What is 17 + 25? Reply with the number only."
ARITHMETIC_ANSWER = "42"
CHOICE_PROMPT = (
    "Is the sentiment of this review positive or negative?\n"
    'Review: "I loved every minute of this film, the best evening in months."\n'
    "Reply with one word."
)
CHOICES = ("positive", "negative")
NEEDLE_TEMPLATE = "The secret passphrase is {passphrase}."
NEEDLE_QUESTION = "What is the secret passphrase stated in the text above? Reply with the passphrase only."
PREFIX_QUESTIONS = ("Reply with the single word OK.", "Reply with the single word DONE.")
THROUGHPUT_QUESTION = "Summarise the text above in about two hundred words."
EXIT_FAILED = 1

_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.S | re.I)


class ServerUnreachable(UsageError):
    """No OpenAI-compatible server answers at the base URL."""


@dataclass
class ApiCheckConfig:
    base_url: str = DEFAULT_BASE_URL
    model: str | None = None  # None: llm_config.yaml's served name if listed, else the first listed
    min_model_len: int | None = None  # None: llm_config.yaml's max_model_len (default profile)
    quick: bool = False
    concurrency: int = 8
    timeout: float = 600.0
    api_key: str = "EMPTY"
    long_tokens: int = 100_000
    prefix_tokens: int = 30_000
    throughput_prompt_tokens: int = 1_000
    throughput_max_tokens: int = 256
    thinking_max_tokens: int = 4096
    config: str = "llm_config.yaml"
    profile: str = "default"
    tokenizer_path: str | None = None
    strict: bool = False  # count WARN (a served, well-formed but wrong answer) as FAIL


@dataclass
class CheckResult:
    name: str
    status: str  # PASS, WARN (protocol fine, the model's answer not), FAIL or SKIP
    detail: str
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"


# ------------------------------------------------------------------------------------------------
# deterministic filler
# ------------------------------------------------------------------------------------------------
_SUBJECTS = (
    "The archivist",
    "A river pilot",
    "The night baker",
    "An old surveyor",
    "The harbour clerk",
    "A travelling tinker",
    "The lighthouse keeper",
    "A quiet botanist",
    "The village cartographer",
    "A retired signalman",
    "The orchard warden",
    "A young glassblower",
)
_VERBS = (
    "catalogued",
    "repainted",
    "measured",
    "carried",
    "described",
    "mended",
    "counted",
    "sketched",
    "weighed",
    "polished",
    "returned",
    "sorted",
)
_OBJECTS = (
    "the copper lanterns",
    "a crate of blue tiles",
    "the tidal charts",
    "several wool blankets",
    "the brass compass",
    "a basket of pears",
    "the winter ledgers",
    "a box of iron nails",
    "the painted oars",
    "a stack of slate shingles",
    "the linen maps",
    "a jar of amber honey",
)
_PLACES = (
    "near the north gate",
    "behind the grain mill",
    "beside the canal lock",
    "under the stone bridge",
    "at the end of the pier",
    "inside the clock tower",
    "along the market road",
    "by the salt marsh",
    "next to the ferry ramp",
    "in the chapel loft",
    "on the cliff path",
    "past the old quarry",
)
_TIMES = (
    "before dawn",
    "after the rain",
    "during the fair",
    "on a windy afternoon",
    "late in autumn",
    "at midsummer",
    "while the bells rang",
    "as the tide turned",
)
_WORDS = (
    "amber",
    "falcon",
    "juniper",
    "lantern",
    "meridian",
    "orchid",
    "quartz",
    "saffron",
    "tundra",
    "zephyr",
)


def filler_paragraph(rng: random.Random, sentences: int = 8) -> str:
    """One paragraph of plain, fact-free sentences, fully determined by ``rng``'s state."""
    parts = []
    for _ in range(sentences):
        parts.append(
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
            f"{rng.choice(_PLACES)} {rng.choice(_TIMES)}."
        )
    return " ".join(parts)


def build_filler(counter: Any, target_tokens: int, seed: int = 0) -> tuple[list[str], int]:
    """Paragraphs of filler totalling at least ``target_tokens`` tokens (same seed, same text)."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    total = 0
    while total < target_tokens:
        batch = [filler_paragraph(rng) for _ in range(64)]
        for paragraph, n in zip(batch, counter.count_many(batch), strict=True):
            if total >= target_tokens:
                break
            paragraphs.append(paragraph)
            total += n + 1  # + the newline joining paragraphs (an upper bound)
    return paragraphs, total


@dataclass(frozen=True)
class Haystack:
    text: str
    passphrase: str
    tokens: int  # of the text alone


def build_haystack(counter: Any, target_tokens: int, seed: int = 0, depth: float = 0.6) -> Haystack:
    """~``target_tokens`` tokens of filler with ``NEEDLE_TEMPLATE`` planted at ``depth`` (0 start, 1 end)."""
    rng = random.Random(f"needle-{seed}")
    passphrase = f"{rng.choice(_WORDS)}-{rng.randint(1000, 9999)}"
    needle = NEEDLE_TEMPLATE.format(passphrase=passphrase)
    paragraphs, _ = build_filler(counter, max(0, target_tokens - counter.count(needle)), seed)
    at = min(len(paragraphs), max(0, round(len(paragraphs) * depth)))
    paragraphs.insert(at, needle)
    text = "\n".join(paragraphs)
    return Haystack(text, passphrase, counter.count(text))


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def split_reasoning(content: str | None, reasoning_field: str | None) -> tuple[str, str]:
    """``(reasoning, answer)`` from a reply: the separate reasoning field, or inline ``<think>`` blocks."""
    from longicl.parse import strip_reasoning

    text = content or ""
    inline = " ".join(m.strip() for m in _THINK_BLOCK.findall(text))
    lowered = text.lower()
    if not inline and "</think>" in lowered and "<think>" not in lowered:
        inline = text[: lowered.index("</think>")].strip()  # the template opened <think> itself
    reasoning = (reasoning_field or "").strip() or inline
    return reasoning, strip_reasoning(text)


def _reasoning_field(message: Any) -> str | None:
    extra = getattr(message, "model_extra", None) or {}
    value = extra.get("reasoning") or extra.get("reasoning_content")
    return str(value) if value else None


def _error(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {one_line(str(exc), 160)}"
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        return f"connection error: {one_line(str(exc), 120)}"
    return f"{type(exc).__name__}: {one_line(str(exc), 160)}"


def _configured(cfg: ApiCheckConfig) -> tuple[str | None, int | None]:
    """(served model name, max_model_len) from llm_config.yaml, or Nones when it cannot be read."""
    try:
        from longicl.serve import load_spec

        spec = load_spec(cfg.config, cfg.profile)
    except UsageError:
        return None, None
    return spec.served_model_name, spec.max_model_len


def list_models(base_url: str, timeout: float, api_key: str = "EMPTY") -> tuple[list[dict[str, Any]], str]:
    """``(models, health)`` from ``/v1/models`` and ``/health``; ``ServerUnreachable`` if nothing answers."""
    url = base_url.rstrip("/")
    root = url[: -len("/v1")] if url.endswith("/v1") else url
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), headers=headers
        ) as client:
            listing = client.get(f"{url}/models")
            try:
                health_status = client.get(f"{root}/health").status_code
                health = f"/health {health_status}"
            except httpx.HTTPError as exc:
                health = f"/health {type(exc).__name__}"
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise ServerUnreachable(
            f"no server answers at {base_url} ({type(exc).__name__}); start one with "
            "`python -m longicl.serve start` (see docs/serving.md)"
        ) from None
    except httpx.HTTPError as exc:
        raise ServerUnreachable(
            f"{base_url}/models failed: {type(exc).__name__}: {one_line(str(exc), 120)}"
        ) from None
    if listing.status_code != 200:
        raise ServerUnreachable(
            f"{base_url}/models answered HTTP {listing.status_code}; not an OpenAI-compatible server?"
        )
    try:
        data = listing.json().get("data") or []
    except (ValueError, AttributeError):
        raise ServerUnreachable(f"{base_url}/models did not answer JSON") from None
    return [m for m in data if isinstance(m, dict)], health


# ------------------------------------------------------------------------------------------------
# the checks
# ------------------------------------------------------------------------------------------------
class ApiChecker:
    def __init__(self, cfg: ApiCheckConfig) -> None:
        self.cfg = cfg
        self.model = cfg.model or ""
        self.max_model_len: int | None = None
        self.served = False
        self.client = OpenAI(base_url=cfg.base_url, api_key=cfg.api_key, max_retries=0, timeout=cfg.timeout)
        self._counter: Any = None

    @property
    def counter(self) -> Any:
        if self._counter is None:
            from longicl.tokens import TokenCounter

            self._counter = TokenCounter(self.cfg.tokenizer_path)
        return self._counter

    def close(self) -> None:
        self.client.close()

    def chat(
        self, messages: list[dict], max_tokens: int, thinking: bool = False, **extra: Any
    ) -> tuple[Any, float]:
        body = {"chat_template_kwargs": {"enable_thinking": thinking}, **extra}
        started = time.monotonic()
        response = self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0.0,
            extra_body=body,
        )
        return response, time.monotonic() - started

    @staticmethod
    def messages(user: str) -> list[dict]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    # -- (a) ---------------------------------------------------------------------------------------
    def check_models(self) -> CheckResult:
        started = time.monotonic()
        models, health = list_models(self.cfg.base_url, self.cfg.timeout, self.cfg.api_key)
        ids = [str(m.get("id")) for m in models]
        configured_name, configured_len = _configured(self.cfg)
        wanted = (
            self.cfg.model or (configured_name if configured_name in ids else None) or (ids[0] if ids else "")
        )
        self.model = wanted
        seconds = time.monotonic() - started
        if not ids:
            return CheckResult("models", "FAIL", f"/v1/models lists no model; {health}", seconds)
        if wanted not in ids:
            return CheckResult(
                "models", "FAIL", f"{wanted!r} is not served (served: {', '.join(ids)}); {health}", seconds
            )
        self.served = True
        entry = models[ids.index(wanted)]
        reported = entry.get("max_model_len")
        self.max_model_len = int(reported) if isinstance(reported, int) else None
        minimum = self.cfg.min_model_len if self.cfg.min_model_len is not None else configured_len
        if minimum is None:
            minimum = DEFAULT_MIN_MODEL_LEN
        if self.max_model_len is None:
            ok = minimum <= 0
            detail = f"{wanted}: the server reports no max_model_len (need >= {minimum:,}); {health}"
        else:
            ok = self.max_model_len >= minimum
            sign = ">=" if ok else "<"
            detail = f"{wanted}, max_model_len {self.max_model_len:,} {sign} {minimum:,}; {health}"
        return CheckResult("models", "PASS" if ok else "FAIL", detail, seconds, {"models": ids})

    # -- (b) ---------------------------------------------------------------------------------------
    def check_chat(self, thinking: bool) -> CheckResult:
        name = f"chat, thinking {'on' if thinking else 'off'}"
        max_tokens = self.cfg.thinking_max_tokens if thinking else 32
        try:
            response, seconds = self.chat(self.messages(ARITHMETIC_PROMPT), max_tokens, thinking=thinking)
        except openai.OpenAIError as exc:
            return CheckResult(name, "FAIL", _error(exc))
        choice = response.choices[0]
        reasoning, answer = split_reasoning(choice.message.content, _reasoning_field(choice.message))
        right = ARITHMETIC_ANSWER in answer
        if thinking:
            ok = right and bool(reasoning)
            if not reasoning:
                why = "no reasoning came back (is chat_template_kwargs passed to the template?)"
            elif not right:
                why = f"wrong or missing answer after reasoning (finish_reason={choice.finish_reason})"
            else:
                where = "reasoning field" if _reasoning_field(choice.message) else "inline <think>"
                why = f"{len(reasoning):,} chars of reasoning ({where})"
        else:
            ok = right and not reasoning
            why = (
                "reasoning present although thinking was off"
                if reasoning
                else ("" if right else "wrong answer")
            )
        detail = f"answer {one_line(answer, 30)!r}" + (f"; {why}" if why else "")
        # The server did its part when it answered: a wrong sum or missing reasoning says more
        # about the model (or a server without a reasoning parser) than about the API.
        status = "PASS" if ok else ("WARN" if answer.strip() and not self.cfg.strict else "FAIL")
        return CheckResult(name, status, detail, seconds)

    # -- (c) ---------------------------------------------------------------------------------------
    def check_structured(self) -> CheckResult:
        name = "structured choice"
        try:
            response, seconds = self.chat(
                self.messages(CHOICE_PROMPT), 16, structured_outputs={"choice": list(CHOICES)}
            )
        except openai.OpenAIError as exc:
            return CheckResult(name, "FAIL", _error(exc))
        text = (response.choices[0].message.content or "").strip()
        ok = text in CHOICES
        detail = f"answer {text!r}" + (
            "" if ok else f" is not one of {list(CHOICES)} (structured_outputs ignored?)"
        )
        return CheckResult(name, "PASS" if ok else "FAIL", detail, seconds)

    # -- (d) ---------------------------------------------------------------------------------------
    def long_context_target(self) -> int:
        target = self.cfg.long_tokens
        if self.max_model_len:
            target = min(target, self.max_model_len - 64 - 512)  # room for the answer and template tokens
        return max(1_000, target)

    def check_long_context(self) -> CheckResult:
        name = "long context"
        target = self.long_context_target()
        overhead = self.counter.count_chat(self.messages("\n\n" + NEEDLE_QUESTION))
        haystack = build_haystack(self.counter, target - overhead)
        messages = self.messages(f"{haystack.text}\n\n{NEEDLE_QUESTION}")
        counted = self.counter.count_chat(messages)
        try:
            response, seconds = self.chat(messages, 64)
        except openai.OpenAIError as exc:
            return CheckResult(name, "FAIL", f"{counted:,} prompt tokens: {_error(exc)}")
        _, answer = split_reasoning(response.choices[0].message.content, None)
        usage = response.usage
        prompt_tokens = getattr(usage, "prompt_tokens", None) or counted
        ok = haystack.passphrase.lower() in answer.lower()
        detail = f"{prompt_tokens:,} prompt tokens; " + (
            "planted passphrase returned"
            if ok
            else f"expected {haystack.passphrase!r}, got {one_line(answer, 40)!r}"
        )
        return CheckResult(name, "PASS" if ok else "FAIL", detail, seconds, {"prompt_tokens": prompt_tokens})

    # -- (e) ---------------------------------------------------------------------------------------
    def check_prefix_cache(self) -> CheckResult:
        name = "prefix cache"
        nonce = secrets.token_hex(8)  # a prefix never sent before: the first request is cold
        paragraphs, _ = build_filler(self.counter, self.cfg.prefix_tokens, seed=1)
        prefix = f"Document {nonce}.\n" + "\n".join(paragraphs)
        timings: list[float] = []
        usages: list[Any] = []
        for question in PREFIX_QUESTIONS:
            try:
                response, seconds = self.chat(self.messages(f"{prefix}\n\n{question}"), 8)
            except openai.OpenAIError as exc:
                return CheckResult(name, "FAIL", _error(exc))
            timings.append(seconds)
            usages.append(response.usage)
        ratio = timings[1] / timings[0] if timings[0] > 0 else 1.0
        details = getattr(usages[1], "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None) if details is not None else None
        prompt_tokens = getattr(usages[1], "prompt_tokens", None) or 0
        if cached:
            ok, how = True, f"cached_tokens {cached:,} of {prompt_tokens:,}"
        elif cached is None:
            ok, how = ratio < 0.5, "no cached_tokens reported (--enable-prompt-tokens-details off?)"
        else:
            ok, how = ratio < 0.5, "cached_tokens 0"
        detail = f"2nd request {ratio:.2f}x the 1st ({timings[1]:.2f}s vs {timings[0]:.2f}s); {how}"
        return CheckResult(
            name, "PASS" if ok else "FAIL", detail, sum(timings), {"ratio": ratio, "cached": cached}
        )

    # -- (f) ---------------------------------------------------------------------------------------
    def check_throughput(self) -> CheckResult:
        name = "throughput"
        n = max(1, self.cfg.concurrency)
        paragraphs, _ = build_filler(self.counter, self.cfg.throughput_prompt_tokens, seed=2)
        body = "\n".join(paragraphs)
        prompts = [f"Request {i} {secrets.token_hex(4)}.\n{body}\n\n{THROUGHPUT_QUESTION}" for i in range(n)]
        started = time.monotonic()
        outcomes = asyncio.run(self._concurrent(prompts))
        wall = time.monotonic() - started
        done = [o for o in outcomes if not isinstance(o, BaseException)]
        completion = sum(getattr(o.usage, "completion_tokens", 0) or 0 for o in done)
        prompt = sum(getattr(o.usage, "prompt_tokens", 0) or 0 for o in done)
        ok = len(done) == n and completion > 0
        detail = (
            f"{len(done)}/{n} ok; {completion / wall:,.0f} output tok/s, {prompt / wall:,.0f} prompt tok/s "
            f"({completion:,} + {prompt:,} tokens in {wall:.1f}s)"
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            detail += f"; first error: {_error(errors[0])}"
        return CheckResult(name, "PASS" if ok else "FAIL", detail, wall, {"output_tok_s": completion / wall})

    async def _concurrent(self, prompts: list[str]) -> list[Any]:
        client = AsyncOpenAI(
            base_url=self.cfg.base_url, api_key=self.cfg.api_key, max_retries=0, timeout=self.cfg.timeout
        )
        try:

            async def one(prompt: str) -> Any:
                return await client.chat.completions.create(
                    model=self.model,
                    messages=self.messages(prompt),
                    max_tokens=self.cfg.throughput_max_tokens,
                    temperature=0.0,
                    extra_body={"chat_template_kwargs": {"enable_thinking": False}, "ignore_eos": True},
                )

            return await asyncio.gather(*(one(p) for p in prompts), return_exceptions=True)
        finally:
            await client.close()


def run_checks(
    cfg: ApiCheckConfig, on_result: Callable[[CheckResult], None] | None = None
) -> list[CheckResult]:
    """Run every check in order; ``ServerUnreachable`` when the server does not answer at all."""
    checker = ApiChecker(cfg)
    results: list[CheckResult] = []

    def record(result: CheckResult) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    try:
        models = checker.check_models()
        record(models)
        steps: list[tuple[str, Callable[[], CheckResult], bool]] = [
            ("chat, thinking off", lambda: checker.check_chat(False), False),
            ("chat, thinking on", lambda: checker.check_chat(True), False),
            ("structured choice", checker.check_structured, False),
            ("long context", checker.check_long_context, True),
            ("prefix cache", checker.check_prefix_cache, True),
            ("throughput", checker.check_throughput, True),
        ]
        for name, step, heavy in steps:
            if heavy and cfg.quick:
                record(CheckResult(name, "SKIP", "--quick"))
            elif not checker.served:
                record(CheckResult(name, "FAIL", "not run: the model is not served"))
            else:
                started = time.monotonic()
                try:
                    result = step()
                except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
                    result = CheckResult(name, "FAIL", _error(exc))
                if not result.seconds:
                    result.seconds = time.monotonic() - started
                record(result)
    finally:
        checker.close()
    return results


def format_table(results: list[CheckResult]) -> str:
    rows = [("check", "result", "seconds", "detail")]
    rows += [(r.name, r.status, f"{r.seconds:.2f}", r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(
            [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]), row[3]]
        ).rstrip()
        for row in rows
    )


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="api_test.py",
        description="Check a running OpenAI-compatible server (vLLM/FlagScale) for the longicl pipeline.",
    )
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL, help="default: %(default)s")
    parser.add_argument(
        "--model", default=None, help="default: llm_config.yaml's served name, else the first listed"
    )
    parser.add_argument(
        "--min-model-len", type=int, default=None, help="default: llm_config.yaml's max_model_len"
    )
    parser.add_argument(
        "--quick", action="store_true", help="skip the long-context, prefix-cache and throughput probes"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="throughput probe: concurrent requests")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument("--long-tokens", type=int, default=100_000, help="long-context probe size in tokens")
    parser.add_argument("--prefix-tokens", type=int, default=30_000, help="prefix-cache probe prefix size")
    parser.add_argument("--config", default="llm_config.yaml", help="serve config for the defaults")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--api-key", default="EMPTY")
    parser.add_argument("--tokenizer-path", default=None, help="model directory for exact token counts")
    parser.add_argument(
        "--strict", action="store_true", help="count warnings (wrong answers of a working server) as failures"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.concurrency < 1 or args.timeout <= 0:
        print("error: --concurrency must be >= 1 and --timeout > 0", file=sys.stderr)
        return EXIT_USAGE
    cfg = ApiCheckConfig(
        base_url=args.base_url.rstrip("/"),
        model=args.model,
        min_model_len=args.min_model_len,
        quick=args.quick,
        concurrency=args.concurrency,
        timeout=args.timeout,
        api_key=args.api_key,
        long_tokens=args.long_tokens,
        prefix_tokens=args.prefix_tokens,
        config=args.config,
        profile=args.profile,
        tokenizer_path=args.tokenizer_path,
        strict=args.strict,
    )

    def progress(result: CheckResult) -> None:  # on stderr while the heavy probes run; table at the end
        print(f"  {result.name}: {result.status} ({result.seconds:.1f}s)", file=sys.stderr, flush=True)

    try:
        results = run_checks(cfg, progress)
    except UsageError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"server: {cfg.base_url}" + (" (--quick)" if cfg.quick else ""))
    print(format_table(results))
    failed = [r.name for r in results if r.status == "FAIL"]
    warned = [r.name for r in results if r.status == "WARN"]
    ran = sum(r.status != "SKIP" for r in results)
    warnings = f" ({len(warned)} with warnings: {', '.join(warned)})" if warned else ""
    print(
        f"FAIL: {len(failed)} of {ran} checks failed ({', '.join(failed)})"
        if failed
        else f"PASS: all {ran} checks passed{warnings}"
    )
    return EXIT_FAILED if failed else 0

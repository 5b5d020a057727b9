"""The checks, one method each, run in order by `run_checks`; `format_table` prints them."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import openai
from openai import AsyncOpenAI, OpenAI

from longicl.apicheck.config import (
    ARITHMETIC_ANSWER,
    ARITHMETIC_PROMPT,
    CAPABILITIES,
    CHECKS,
    CHOICE_PROMPT,
    CHOICE_STOP,
    CHOICE_TOP_LOGPROBS,
    CHOICES,
    DEFAULT_MIN_MODEL_LEN,
    NEEDLE_QUESTION,
    PREFIX_QUESTIONS,
    SYSTEM_PROMPT,
    THROUGHPUT_QUESTION,
    ApiCheckConfig,
    CheckResult,
)
from longicl.apicheck.filler import build_filler, build_haystack
from longicl.engines import capabilities as caps_table
from longicl.engines.capabilities import DEGRADED, MECHANISMS, NO_CONSTRAINT, Capabilities
from longicl.engines.probe import HTTP_STATUS, MALFORMED, UNREACHABLE, Probe, probe
from longicl.errors import ServerUnreachable, UsageError, one_line
from longicl.reasoning import reasoning_field, split_reasoning
from longicl.tokens import ServerTokenizer


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
    found = _probe(base_url, timeout, api_key)
    return list(found.entries), found.health


def _probe(base_url: str, timeout: float, api_key: str) -> Probe:
    """The one server probe (`longicl.engines.probe`); ``ServerUnreachable`` if nothing answers."""
    found = probe(base_url, timeout, api_key)
    if found.failure == UNREACHABLE:
        raise ServerUnreachable(
            f"no server answers at {base_url} ({found.error}); start one with "
            "`python -m longicl.serve start` (see docs/serving.md)"
        )
    if found.failure == HTTP_STATUS:
        raise ServerUnreachable(
            f"{base_url}/models answered HTTP {found.status_code}; not an OpenAI-compatible server?"
        )
    if found.failure == MALFORMED:
        raise ServerUnreachable(f"{base_url}/models did not answer JSON")
    return found


class ApiChecker:
    def __init__(self, cfg: ApiCheckConfig) -> None:
        self.cfg = cfg
        self.model = cfg.model or ""
        self.max_model_len: int | None = None
        self.served = False
        # The run's own capability record (`longicl.engines.capabilities`): started from the probe
        # by `check_models`, then shaping every request and learning from refusals, as the engine's.
        self.caps: Capabilities = caps_table.from_models({}, None)
        self.logprobs_returned: bool | None = None  # by the structured check, which asks for them
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

    def request(
        self, messages: list[dict], max_tokens: int, thinking: bool, sampling: dict[str, Any], extra: dict
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(kwargs, extra_body)`` of one chat request, shaped to the server as the engine shapes its own."""
        kwargs = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
        kwargs.update(sampling)
        extra_body = {"chat_template_kwargs": {"enable_thinking": thinking}, **extra}
        self.caps.shape(kwargs, extra_body)
        return kwargs, extra_body

    def chat(
        self,
        messages: list[dict],
        max_tokens: int,
        thinking: bool = False,
        sampling: dict[str, Any] | None = None,
        **extra: Any,
    ) -> tuple[Any, float]:
        """One answer. A refusal naming an unsupported parameter switches that capability off
        (`Capabilities.learn`, as in the run) and the request goes again without it."""
        for _ in range(_MAX_LEARNT):
            kwargs, extra_body = self.request(messages, max_tokens, thinking, sampling or {}, extra)
            started = time.monotonic()
            try:
                response = self.client.chat.completions.create(extra_body=extra_body or None, **kwargs)
            except openai.APIStatusError as exc:
                if self.caps.learn(one_line(exc, 300)) is None:
                    raise
                continue
            seconds = time.monotonic() - started
            usage = response.usage.model_dump(exclude_none=True) if response.usage else None
            self.caps.saw_usage(usage)
            return response, seconds
        raise openai.OpenAIError(f"still refused after {_MAX_LEARNT} requests without unsupported parameters")

    @staticmethod
    def messages(user: str) -> list[dict]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    # -- (a) ---------------------------------------------------------------------------------------
    def check_models(self) -> CheckResult:
        started = time.monotonic()
        found = _probe(self.cfg.base_url, self.cfg.timeout, self.cfg.api_key)
        models, health = list(found.entries), found.health
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
        self.caps = caps_table.from_probe(found, wanted)
        self.max_model_len = self.caps.context_length  # max_model_len, or llama.cpp's /props n_ctx
        minimum = self.cfg.min_model_len if self.cfg.min_model_len is not None else configured_len
        if minimum is None:
            minimum = DEFAULT_MIN_MODEL_LEN
        served = f"{wanted} ({self.caps.kind})"
        if self.max_model_len is None:
            # Not a reason to stop a run (a prompt the server refuses as too long is shrunk), but
            # nothing here says the configured length fits.
            status = "PASS" if minimum <= 0 else self._warn()
            detail = f"{served}: the server reports no context length (need >= {minimum:,}); {health}"
        else:
            ok = self.max_model_len >= minimum
            status = "PASS" if ok else "FAIL"
            detail = (
                f"{served}, max_model_len {self.max_model_len:,} {'>=' if ok else '<'} {minimum:,}; {health}"
            )
        return CheckResult("models", status, detail, seconds, {"models": ids})

    def _warn(self) -> str:
        """WARN, or FAIL under ``--strict``."""
        return "FAIL" if self.cfg.strict else "WARN"

    # -- (b) ---------------------------------------------------------------------------------------
    def check_chat(self, thinking: bool) -> CheckResult:
        name = f"chat, thinking {'on' if thinking else 'off'}"
        max_tokens = self.cfg.thinking_max_tokens if thinking else 32
        try:
            response, seconds = self.chat(self.messages(ARITHMETIC_PROMPT), max_tokens, thinking=thinking)
        except openai.OpenAIError as exc:
            return CheckResult(name, "FAIL", _error(exc))
        choice = response.choices[0]
        reasoning, answer = split_reasoning(choice.message.content, reasoning_field(choice.message))
        right = ARITHMETIC_ANSWER in answer
        if thinking:
            ok = right and bool(reasoning)
            if not reasoning and not self.caps.chat_template_kwargs:
                why = f"no reasoning came back; not supported, degraded: {DEGRADED['chat_template_kwargs']}"
            elif not reasoning:
                why = "no reasoning came back (is chat_template_kwargs passed to the template?)"
            elif not right:
                why = f"wrong or missing answer after reasoning (finish_reason={choice.finish_reason})"
            else:
                where = "reasoning field" if reasoning_field(choice.message) else "inline <think>"
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
        status = "PASS" if ok else (self._warn() if answer.strip() else "FAIL")
        return CheckResult(name, status, detail, seconds)

    # -- (c) ---------------------------------------------------------------------------------------
    def check_structured(self) -> CheckResult:
        """A request shaped as the run's label requests are: a choice constraint, logprobs, a stop."""
        name = "structured choice"
        sampling = {"logprobs": True, "top_logprobs": CHOICE_TOP_LOGPROBS, "stop": list(CHOICE_STOP)}
        try:
            response, seconds = self.chat(
                self.messages(CHOICE_PROMPT),
                16,
                sampling=sampling,
                structured_outputs={"choice": list(CHOICES)},
            )
        except openai.OpenAIError as exc:
            return CheckResult(name, "FAIL", _error(exc))
        choice = response.choices[0]
        self.logprobs_returned = bool(getattr(choice, "logprobs", None) and choice.logprobs.content)
        text = (self.caps.unwrap(choice.message.content, True) or "").strip()
        ok = text in CHOICES
        how = MECHANISMS.get(self.caps.constrained, DEGRADED["constrained"])
        if ok:
            return CheckResult(name, "PASS", f"answer {text!r} ({how})", seconds)
        if self.caps.constrained == NO_CONSTRAINT:  # the run parses free text: degraded, not broken
            detail = f"answer {text!r}; not supported, degraded: {how}"
            return CheckResult(name, self._warn() if text else "FAIL", detail, seconds)
        detail = f"answer {text!r} is not one of {list(CHOICES)} ({how} ignored?)"
        return CheckResult(name, "FAIL", detail, seconds)

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
                kwargs, extra_body = self.request(
                    self.messages(prompt), self.cfg.throughput_max_tokens, False, {}, {"ignore_eos": True}
                )
                return await client.chat.completions.create(extra_body=extra_body or None, **kwargs)

            return await asyncio.gather(*(one(p) for p in prompts), return_exceptions=True)
        finally:
            await client.close()

    # -- the capability table ----------------------------------------------------------------------
    def capability_results(self) -> list[CheckResult]:
        """The run's capability table for this server: PASS when a capability is used, WARN
        "not supported, degraded: <what the run does instead>"; a run goes on either way."""
        if not self.served:
            return [
                CheckResult(row.name, "SKIP", "not probed: the model is not served", section=CAPABILITIES)
                for row in self.caps.rows()
            ]
        results = []
        for row in self.caps.rows():
            if row.supported is None:
                status, detail = "SKIP", row.detail
            elif not row.supported:
                status, detail = "WARN", f"not supported, degraded: {row.detail}"
            elif row.name == "logprobs" and self.logprobs_returned is False:
                status, detail = "WARN", "asked for, none returned: label scores off"
            else:
                status, detail = "PASS", row.detail
            if row.name == "tokenize endpoint":  # asked, as model.tokenizer=server asks it
                status, detail = self._tokenize_route()
            results.append(CheckResult(row.name, status, detail, section=CAPABILITIES))
        return results

    def _tokenize_route(self) -> tuple[str, str]:
        """The route ``model.tokenizer=server`` counts through (`longicl.tokens.ServerTokenizer`)."""
        try:
            tokenizer = ServerTokenizer(
                self.cfg.base_url, self.model, self.cfg.api_key, timeout=min(self.cfg.timeout, 30.0)
            )
        except UsageError:
            return (
                "WARN",
                "not supported, degraded: no tokenize route answers: model.tokenizer=server unavailable",
            )
        tokenizer.close()
        return "PASS", f"{tokenizer.route.path} ({tokenizer.route.name} shape), for model.tokenizer=server"


_MAX_LEARNT = 6  # requests of one check: each refusal learnt switches one capability off


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
        results += checker.capability_results()  # after the checks: what they learnt included
    finally:
        checker.close()
    return results


def format_table(results: list[CheckResult]) -> str:
    """The checks as a table, then the capability table."""
    checks = [r for r in results if r.section == CHECKS]
    capabilities = [r for r in results if r.section == CAPABILITIES]
    rows = [("check", "result", "seconds", "detail")]
    rows += [(r.name, r.status, f"{r.seconds:.2f}", r.detail) for r in checks]
    tables = [_table(rows, numbers=True)]
    if capabilities:
        rows = [("capability", "result", "detail")] + [(r.name, r.status, r.detail) for r in capabilities]
        tables.append(f"\n{_table(rows, numbers=False)}")
    return "\n".join(tables)


def _table(rows: list[tuple[str, ...]], numbers: bool) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        if numbers:  # the seconds column, right-aligned
            cells[-1] = row[-2].rjust(widths[-1])
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)

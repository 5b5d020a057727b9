"""Check a running OpenAI-compatible server (vLLM / FlagScale) before a long annotation run.

``python api_test.py [--quick]`` runs these checks and prints a PASS/FAIL table; exit code 0 only
when every check that ran passed, 1 when one failed, 2 when no server answers (one line on stderr):

- ``models``: ``/v1/models`` lists the model and reports ``max_model_len`` >= the configured length
  (``llm_config.yaml``'s, or ``--min-model-len``); ``/health`` is reported alongside;
- ``chat, thinking off`` / ``chat, thinking on``: a short question with
  ``chat_template_kwargs.enable_thinking`` false, then true; the answer must be right, with no
  reasoning in the first case and some reasoning (``reasoning`` / ``reasoning_content`` field, or an
  inline ``<think>`` block) in the second;
- ``structured choice``: shaped as the run's label requests: a ``structured_outputs: {"choice": [...]}``
  constraint (translated to the server's own mechanism), ``top_logprobs`` and the template's stop
  sequence; the answer must be exactly one of the choices (WARN when the server has no constrained
  decoding at all and answered free text);
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

After the checks, the capability table: the run's own record (`longicl.engines.capabilities`,
built from the same probe by ``from_probe``; every chat request of the checks is shaped by it and
a refusal naming an unsupported parameter is learnt, as the engine does), one row per capability:
PASS when used, WARN "not supported, degraded: <what the run does instead>", SKIP when unknown. A
degraded capability never changes the exit code.

Probe prompts carry the marker ``APICHECK_MARKER`` in their system message and state the planted
fact as ``NEEDLE_TEMPLATE``; the test suite's fake server (``tests/fake_server.py``,
``ProbeAnswers``) recognises exactly these to answer like a model would.

Reads top to bottom: `config` (prompts, settings, a result), `filler` (deterministic text and
a needle), `server_checks` (one method per check, `run_checks`, the table), `cli`. Whether the server
answers at all is asked through the one probe, `longicl.engines.probe`.
"""

from __future__ import annotations

from longicl.apicheck.cli import build_parser, main
from longicl.apicheck.config import (
    APICHECK_MARKER,
    ARITHMETIC_ANSWER,
    ARITHMETIC_PROMPT,
    CHOICE_PROMPT,
    CHOICES,
    DEFAULT_BASE_URL,
    DEFAULT_MIN_MODEL_LEN,
    NEEDLE_QUESTION,
    NEEDLE_TEMPLATE,
    PREFIX_QUESTIONS,
    SYSTEM_PROMPT,
    THROUGHPUT_QUESTION,
    ApiCheckConfig,
    CheckResult,
)
from longicl.apicheck.filler import Haystack, build_filler, build_haystack, filler_paragraph
from longicl.apicheck.server_checks import ApiChecker, format_table, list_models, run_checks
from longicl.errors import ExitCode, ServerUnreachable
from longicl.reasoning import split_reasoning

EXIT_FAILED = ExitCode.FAILED

__all__ = [
    "APICHECK_MARKER",
    "ARITHMETIC_ANSWER",
    "ARITHMETIC_PROMPT",
    "CHOICES",
    "CHOICE_PROMPT",
    "DEFAULT_BASE_URL",
    "DEFAULT_MIN_MODEL_LEN",
    "EXIT_FAILED",
    "NEEDLE_QUESTION",
    "NEEDLE_TEMPLATE",
    "PREFIX_QUESTIONS",
    "SYSTEM_PROMPT",
    "THROUGHPUT_QUESTION",
    "ApiCheckConfig",
    "ApiChecker",
    "CheckResult",
    "Haystack",
    "ServerUnreachable",
    "build_filler",
    "build_haystack",
    "build_parser",
    "filler_paragraph",
    "format_table",
    "list_models",
    "main",
    "run_checks",
    "split_reasoning",
]

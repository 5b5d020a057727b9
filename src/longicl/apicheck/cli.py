"""``python api_test.py [--quick]``: the command line of the server checks."""

from __future__ import annotations

import argparse
import sys

from longicl.apicheck.config import CAPABILITIES, CHECKS, DEFAULT_BASE_URL, ApiCheckConfig, CheckResult
from longicl.apicheck.server_checks import format_table, run_checks
from longicl.credentials import redact_text, resolve_api_key
from longicl.errors import ExitCode, UsageError, inert, run_command


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
    parser.add_argument("--api-key", default=None, help="default: $OPENAI_API_KEY, else EMPTY")
    parser.add_argument("--tokenizer-path", default=None, help="model directory for exact token counts")
    parser.add_argument(
        "--strict", action="store_true", help="count warnings (wrong answers of a working server) as failures"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _run(args))


def _config(args: argparse.Namespace) -> ApiCheckConfig:
    if args.concurrency < 1 or args.timeout <= 0:
        raise UsageError("--concurrency must be >= 1 and --timeout > 0")
    return ApiCheckConfig(
        base_url=args.base_url.rstrip("/"),
        model=args.model,
        min_model_len=args.min_model_len,
        quick=args.quick,
        concurrency=args.concurrency,
        timeout=args.timeout,
        api_key=resolve_api_key(args.api_key),  # sent, never printed (see longicl.credentials)
        long_tokens=args.long_tokens,
        prefix_tokens=args.prefix_tokens,
        config=args.config,
        profile=args.profile,
        tokenizer_path=args.tokenizer_path,
        strict=args.strict,
    )


def _progress(result: CheckResult) -> None:  # on stderr while the heavy probes run; table at the end
    print(inert(f"  {result.name}: {result.status} ({result.seconds:.1f}s)"), file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    results = run_checks(cfg, _progress)
    print(inert(f"server: {redact_text(cfg.base_url)}") + (" (--quick)" if cfg.quick else ""))
    print(inert(redact_text(format_table(results))))  # model names and messages come from the server
    checks = [r for r in results if r.section == CHECKS]
    failed = [r.name for r in checks if r.status == "FAIL"]
    warned = [r.name for r in checks if r.status == "WARN"]
    ran = sum(r.status != "SKIP" for r in checks)
    warnings = f" ({len(warned)} with warnings: {', '.join(warned)})" if warned else ""
    degraded = [r.name for r in results if r.section == CAPABILITIES and r.status == "WARN"]
    if degraded:  # never a failure: a run goes on without them (see the capability table)
        print(f"degraded: a run against this server goes on without {', '.join(degraded)}")
    print(
        f"FAIL: {len(failed)} of {ran} checks failed ({', '.join(failed)})"
        if failed
        else f"PASS: all {ran} checks passed{warnings}"
    )
    return ExitCode.FAILED if failed else ExitCode.OK

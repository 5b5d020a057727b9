"""``python -m longicl.serve start|stop|status|command``."""

from __future__ import annotations

import argparse

from longicl.engines.probe import probe
from longicl.errors import ExitCode, run_command
from longicl.serve.command import shell_command, vllm_argv
from longicl.serve.lifecycle import DEFAULT_TIMEOUT, start_server, status_lines, stop_server
from longicl.serve.process import DEFAULT_GRACE, DEFAULT_OUT_DIR
from longicl.serve.spec import DEFAULT_CONFIG, DEFAULT_PROFILE, load_spec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m longicl.serve",
        description="Start, stop and inspect the local vLLM server described by llm_config.yaml.",
    )
    parser.add_argument("action", choices=("start", "stop", "status", "command"))
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="serve config (default: %(default)s)")
    parser.add_argument(
        "--profile", default=DEFAULT_PROFILE, help="a key of `profiles:` (default: %(default)s)"
    )
    parser.add_argument(
        "--out-dir", default=DEFAULT_OUT_DIR, help="pid, state and log (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="start: seconds to wait for /health"
    )
    parser.add_argument(
        "--grace", type=float, default=DEFAULT_GRACE, help="stop: seconds between SIGTERM and SIGKILL"
    )
    parser.add_argument("--launcher", default="auto", choices=("auto", "vllm", "flagscale"))
    parser.add_argument("--skip-gpu-check", action="store_true", help="start even when no GPU is detected")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.action == "stop":
        print(stop_server(args.out_dir, args.grace))
        return ExitCode.OK
    spec = load_spec(args.config, args.profile)
    if args.action == "command":
        print(shell_command(vllm_argv(spec), spec.envs))
        return ExitCode.OK
    if args.action == "status":
        answers, lines = status_lines(spec, args.out_dir)
        print("\n".join(lines))
        return ExitCode.OK if answers else ExitCode.NOT_ANSWERING
    if probe(spec.base_url).answers:
        print(f"a server already answers at {spec.base_url}; nothing started")
        return ExitCode.OK
    handle = start_server(
        spec,
        args.out_dir,
        timeout=args.timeout,
        launcher=args.launcher,
        check_gpu=not args.skip_gpu_check,
        progress=print,
    )
    print(f"ready: {spec.base_url} (pid {handle.pid}); stop with `python -m longicl.serve stop`")
    return ExitCode.OK

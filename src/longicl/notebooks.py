"""Execute the project's notebooks headless with papermill.

    python -m longicl.notebooks                       # all four, CPU parameters (the notebooks' defaults)
    python -m longicl.notebooks 02 03 -p limit=10      # some of them, with parameters
    python -m longicl.notebooks -p engine=openai -p base_url=http://gpu-box:2026/v1   # the real study

Executed copies go to ``reports/notebooks/<name>.ipynb`` (``-o`` to change), with the values each
notebook records for the report in ``<name>.values.json`` beside it and a summary of the
execution in ``index.json``. A ``-p key=value`` (value read as YAML: ``[2,5]``, ``null``, ``10``)
goes to every selected notebook that declares ``key`` in its ``parameters`` cell; a key no
selected notebook declares is an error. ``--runs DIR`` puts each notebook's run directories under
``DIR/<name>`` instead of the notebooks' own ``out_dir`` defaults.

The kernel is the Python running this command (the project's ``.venv``): papermill is given a
kernel spec that resolves to ``sys.executable``, so nothing has to be registered with
``ipykernel install`` first.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longicl.credentials import redact, redact_text, withhold_api_key
from longicl.errors import ExitCode, UsageError, run_command
from longicl.files import atomic_write_json
from longicl.paths import PROJECT_ROOT

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
DEFAULT_OUT = PROJECT_ROOT / "reports" / "notebooks"
NOTEBOOKS = ("01_data_overview", "02_context_strategies", "03_error_analysis", "04_submission")
PRIVATE_KERNEL = "longicl-python"

EXIT_FAILED = ExitCode.FAILED
EXIT_USAGE = ExitCode.USAGE


@dataclass
class Execution:
    """What happened to one notebook."""

    name: str
    output: Path
    values: Path
    parameters: dict[str, Any]
    seconds: float
    error: str | None = None
    finished: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


# ------------------------------------------------------------------------------------------------
# kernel
# ------------------------------------------------------------------------------------------------
def _runs_this_python(argv: Sequence[str]) -> bool:
    """Whether a kernel spec's command starts this interpreter (jupyter_client maps ``python``,
    ``python3`` and ``python3.X`` to ``sys.executable``)."""
    if not argv:
        return False
    first = argv[0]
    major, minor = sys.version_info[:2]
    if first in {"python", f"python{major}", f"python{major}.{minor}"}:
        return True
    return os.path.abspath(first) == os.path.abspath(sys.executable)


def ensure_kernel(preferred: str = "python3") -> str:
    """A kernel name papermill can start that runs ``sys.executable``.

    ``preferred`` is used when its spec already runs this interpreter (the ``.venv``'s own
    ``python3`` spec, installed with ipykernel, does). Otherwise a private spec is written to a
    temporary directory put first on ``JUPYTER_PATH`` for this process and its children.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(preferred)
        if _runs_this_python(spec.argv):
            return preferred
    except NoSuchKernel:
        pass
    root = Path(tempfile.mkdtemp(prefix="longicl-jupyter-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    spec_dir = root / "kernels" / PRIVATE_KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python (longicl .venv)",
                "language": "python",
            }
        ),
        encoding="utf-8",
    )
    previous = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(root) + (os.pathsep + previous if previous else "")
    return PRIVATE_KERNEL


# ------------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------------
def notebook_path(name: str) -> Path:
    """``01``, ``01_data_overview`` or ``01_data_overview.ipynb`` -> the notebook's path."""
    key = Path(name).name.removesuffix(".ipynb")
    matches = [n for n in NOTEBOOKS if n == key or n.split("_")[0] == key]
    if len(matches) != 1:
        raise ValueError(f"unknown notebook {name!r}: choose from {', '.join(NOTEBOOKS)}")
    return NOTEBOOK_DIR / f"{matches[0]}.ipynb"


def parse_parameter(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``[2, 5]``, ``null``, ``10``, ``text``)."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise ValueError(f"parameter {text!r} is not key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def declared_parameters(path: Path) -> dict[str, dict[str, str]]:
    """``{name: {"default": source, "help": comment}}`` of a notebook's ``parameters`` cell.

    Read with ``json`` and ``ast`` (``--list`` works without the notebooks extra; papermill's own
    line-based reader skips lines with a second ``=``).
    """
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        cells = list(notebook["cells"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{path}: not a readable notebook") from None
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        if "parameters" not in (cell.get("metadata") or {}).get("tags", []):
            continue
        source = cell.get("source") or ""
        source = "".join(source) if isinstance(source, list) else str(source)
        lines = source.splitlines()
        declared: dict[str, dict[str, str]] = {}
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            last = lines[(node.end_lineno or node.lineno) - 1]
            comment = last[node.end_col_offset or 0 :].strip().removeprefix("#").strip()
            for target in targets:
                if isinstance(target, ast.Name):
                    declared[target.id] = {
                        "default": ast.get_source_segment(source, value) or "",
                        "help": comment,
                    }
        return declared
    return {}


def parameters_for(
    name: str,
    declared: Mapping[str, Any],
    given: Mapping[str, Any],
    *,
    out_dir: Path,
    runs_dir: Path | None,
) -> dict[str, Any]:
    """The parameters injected into notebook ``name``: given ones it declares, plus paths."""
    chosen = {k: v for k, v in given.items() if k in declared}
    if "values_path" in declared:
        chosen["values_path"] = str(out_dir / f"{name}.values.json")
    if "notebook_values" in declared and "notebook_values" not in given:
        chosen["notebook_values"] = str(out_dir)
    if "report_dir" in declared and "report_dir" not in given:  # never make demo's reports/technical_report
        chosen["report_dir"] = str(out_dir / "report")
    if runs_dir is not None and "out_dir" in declared and "out_dir" not in given:
        chosen["out_dir"] = str(runs_dir / name)
    return chosen


def withhold_secrets(given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` without an API key: an ``…api_key=KEY`` in a list of hydra overrides goes to
    ``$OPENAI_API_KEY`` of this process, which the kernels inherit and the engines read
    (`longicl.credentials.withhold_api_key`). papermill writes parameters into the executed
    notebook (its parameters cell and metadata), ``index.json`` keeps them and the console prints
    them: a key must never be one."""
    kept: dict[str, Any] = {}
    for key, value in given.items():
        if isinstance(value, list):
            value = [item for item in value if not isinstance(item, str) or withhold_api_key([item])]
        kept[key] = value
    return kept


# ------------------------------------------------------------------------------------------------
# execution
# ------------------------------------------------------------------------------------------------
def execute(
    names: Sequence[str] = NOTEBOOKS,
    *,
    out_dir: Path = DEFAULT_OUT,
    parameters: Mapping[str, Any] | None = None,
    runs_dir: Path | None = None,
    timeout: float | None = None,
    kernel: str | None = None,
    log_output: bool = False,
) -> list[Execution]:
    """Execute ``names`` in order; a failing notebook is recorded and the next one still runs."""
    import papermill

    given = dict(parameters or {})
    paths = [notebook_path(n) for n in names]
    declared = {p.stem: declared_parameters(p) for p in paths}
    unknown = sorted(set(given) - {k for d in declared.values() for k in d})
    if unknown:
        raise ValueError(
            f"parameter(s) {', '.join(unknown)} not declared by "
            f"{', '.join(declared)}; declared: {', '.join(sorted({k for d in declared.values() for k in d}))}"
        )
    kernel_name = kernel or ensure_kernel()
    out_dir.mkdir(parents=True, exist_ok=True)
    done: list[Execution] = []
    for path in paths:
        name = path.stem
        chosen = parameters_for(name, declared[name], given, out_dir=out_dir, runs_dir=runs_dir)
        output = out_dir / f"{name}.ipynb"
        shown = redact_text(json.dumps(chosen, default=str))
        print(f"[notebooks] {name}: {shown}", file=sys.stderr, flush=True)
        started = time.monotonic()
        error = None
        try:
            papermill.execute_notebook(
                str(path),
                str(output),
                parameters=chosen,
                kernel_name=kernel_name,
                cwd=str(path.parent),
                progress_bar=False,
                log_output=log_output,
                execution_timeout=timeout,
                report_mode=False,
                # ipykernel warns at every start that its local TCP transport is unencrypted
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        except Exception as exc:  # noqa: BLE001 - papermill raises many types; keep going
            error = redact_text(_short_error(exc))
        seconds = time.monotonic() - started
        status = "ok" if error is None else f"FAILED: {error}"
        print(f"[notebooks] {name}: {status} in {seconds:.1f}s -> {output}", file=sys.stderr, flush=True)
        finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        done.append(
            Execution(name, output, out_dir / f"{name}.values.json", chosen, seconds, error, finished)
        )
    _write_index(out_dir, done, kernel_name)
    return done


def _short_error(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    evalue = getattr(exc, "evalue", None)
    cell = getattr(exc, "exec_count", None)
    if ename:
        return f"cell {cell}: {ename}: {evalue}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}"


def _write_index(out_dir: Path, done: Sequence[Execution], kernel_name: str) -> None:
    index_path = out_dir / "index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    notebooks = dict(index.get("notebooks") or {})
    for item in done:
        notebooks[item.name] = {
            "executed": item.finished,
            "output": item.output.name,
            "values": item.values.name if item.values.is_file() else None,
            "parameters": redact(item.parameters),
            "seconds": round(item.seconds, 1),
            "ok": item.ok,
            "error": item.error,
        }
    atomic_write_json(
        index_path,
        {"python": sys.executable, "kernel": kernel_name, "notebooks": dict(sorted(notebooks.items()))},
    )


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m longicl.notebooks",
        description="Execute the notebooks headless with papermill (CPU parameters by default).",
    )
    parser.add_argument(
        "names", nargs="*", help=f"notebooks to run (default: all): {', '.join(NOTEBOOKS)}, or 01..04"
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter for every selected notebook that declares KEY (VALUE read as YAML)",
    )
    parser.add_argument(
        "-o", "--out", type=Path, default=DEFAULT_OUT, help="executed copies and values (reports/notebooks)"
    )
    parser.add_argument("--runs", type=Path, default=None, help="run directories go under RUNS/<notebook>")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per cell (default: none)")
    parser.add_argument("--kernel", default=None, help="kernel name (default: one that runs this Python)")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    parser.add_argument("--list", action="store_true", help="list the notebooks and their parameters")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _run(args))


#: what executing a notebook imports, all from the [notebooks] extra
NOTEBOOK_TOOLS = ("papermill", "nbformat", "jupyter_client")


def require_notebook_tools() -> None:
    """One line (exit 2) naming the extra when a tool to execute notebooks is not installed."""
    import importlib

    for module in NOTEBOOK_TOOLS:
        try:
            importlib.import_module(module)
        except ImportError:
            raise UsageError(
                f"executing notebooks needs {module}, from the [notebooks] extra: "
                "pip install -e '.[notebooks]' (or make notebooks)"
            ) from None


def _run(args: argparse.Namespace) -> int:
    try:
        names = [notebook_path(n).stem for n in args.names] if args.names else list(NOTEBOOKS)
        given = withhold_secrets(dict(parse_parameter(p) for p in args.param))
    except ValueError as exc:
        raise UsageError(redact_text(str(exc))) from None
    if args.list:
        for name in names:
            print(name)
            for key, info in declared_parameters(notebook_path(name)).items():
                print(f"    {key} = {info.get('default')}  {info.get('help') or ''}".rstrip())
        return 0
    require_notebook_tools()
    started = time.monotonic()
    try:
        done = execute(
            names,
            out_dir=args.out.resolve(),
            parameters=given,
            runs_dir=args.runs.resolve() if args.runs else None,
            timeout=args.timeout,
            kernel=args.kernel,
            log_output=args.log_output,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    total = time.monotonic() - started
    for item in done:
        print(f"{item.name:<24} {'ok' if item.ok else 'FAILED':<7} {item.seconds:7.1f}s  {item.output}")
    print(f"{'total':<24} {'':<7} {total:7.1f}s")
    failed = [d for d in done if not d.ok]
    for item in failed:
        print(f"error: {item.name}: {item.error} (executed copy: {item.output})", file=sys.stderr)
    return ExitCode.FAILED if failed else ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())

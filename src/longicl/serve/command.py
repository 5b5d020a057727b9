"""Command lines: ``vllm serve`` flags from engine arguments, and a FlagScale-loadable config."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from longicl.serve.spec import ServeSpec, vllm_entry

FLAGSCALE_MODEL_NAME = "qwen3"  # `flagscale serve MODEL_NAME YAML`: the name only picks a default yaml


def engine_flags(args: dict[str, Any]) -> list[str]:
    """``vllm serve`` flags for engine args (``model`` excluded): FlagScale's mapping, with JSON kept whole."""
    flags: list[str] = []
    for key, value in args.items():
        if key == "model" or value is None:
            continue
        name = key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, dict):
            flags += [f"--{name}", json.dumps(value)]
        elif isinstance(value, list | tuple):
            flags.append(f"--{name}")
            flags += [str(v) for v in value]
        elif isinstance(value, str) and value.lstrip().startswith("{"):
            flags += [f"--{name}", json.dumps(json.loads(value))]  # normalised spacing
        else:
            flags += [f"--{name}", str(value)]
    return flags


def vllm_argv(spec: ServeSpec, executable: str = "vllm") -> list[str]:
    return [executable, "serve", spec.model, *engine_flags(spec.engine_args)]


def shell_command(argv: Iterable[str], envs: dict[str, str] | None = None) -> str:
    """One shell-quoted line, with ``NAME=value`` assignments in front for the environment."""
    prefix = [f"{k}={shlex.quote(v)}" for k, v in (envs or {}).items()]
    return " ".join([*prefix, shlex.join(list(argv))])


def write_flagscale_config(spec: ServeSpec, out_dir: str | Path) -> Path:
    """A FlagScale-loadable copy of the config with this profile merged in and everything resolved."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    document = json.loads(json.dumps(spec.document))  # deep copy of plain data
    document.pop("profiles", None)
    entry = vllm_entry(document, spec.config_path)
    entry.pop("engine_args_specific", None)
    entry["engine_args"] = {
        key: json.dumps(value) if isinstance(value, dict) else value
        for key, value in spec.engine_args.items()
        if value is not None
    }
    experiment = document.setdefault("experiment", {})
    experiment["exp_dir"] = str(out / "flagscale")
    document.setdefault("hydra", {}).setdefault("run", {})["dir"] = str(out / "flagscale" / "hydra")
    path = out / f"flagscale_{spec.profile}.yaml"
    OmegaConf.save(OmegaConf.create(document), path)
    return path

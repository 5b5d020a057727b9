"""``llm_config.yaml`` read into a `ServeSpec`: one profile's vLLM engine arguments and environment.

``llm_config.yaml`` is a FlagScale serve config (hydra): ``serve[0].engine_args`` become ``vllm serve``
flags the way FlagScale builds them; an extra top-level ``profiles:`` mapping is merged over those
arguments (``null`` removes a key).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from longicl.errors import ExitCode, UsageError
from longicl.paths import PROJECT_ROOT

DEFAULT_CONFIG = "llm_config.yaml"
DEFAULT_PROFILE = "default"


class ServeError(UsageError):
    """The server could not be started or stopped (exit code 1 from the ``serve`` command)."""

    exit_code = ExitCode.FAILED


@dataclass(frozen=True)
class ServeSpec:
    """One profile of ``llm_config.yaml``, resolved: the vLLM engine arguments and the environment."""

    config_path: Path
    profile: str
    engine_args: dict[str, Any]
    envs: dict[str, str]
    document: dict[str, Any] = field(repr=False)  # the whole resolved file (for FlagScale)

    @property
    def model(self) -> str:
        return str(self.engine_args["model"])

    @property
    def port(self) -> int:
        return int(self.engine_args.get("port") or 8000)

    @property
    def host(self) -> str:
        return str(self.engine_args.get("host") or "")

    @property
    def served_model_name(self) -> str:
        name = self.engine_args.get("served_model_name")
        if isinstance(name, list | tuple):
            name = name[0] if name else None
        return str(name) if name else self.model

    @property
    def max_model_len(self) -> int | None:
        value = self.engine_args.get("max_model_len")
        return int(value) if value is not None else None

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    def yarn(self) -> dict[str, Any] | None:
        """The YaRN ``rope_parameters`` (or legacy ``rope_scaling``) of ``hf_overrides``, if any."""
        overrides = self.engine_args.get("hf_overrides")
        if isinstance(overrides, str):
            overrides = json.loads(overrides)
        if not isinstance(overrides, dict):
            return None
        rope = overrides.get("rope_parameters") or overrides.get("rope_scaling")
        if isinstance(rope, dict) and (rope.get("rope_type") or rope.get("type")) == "yarn":
            return rope
        return None


def load_spec(config: str | Path = DEFAULT_CONFIG, profile: str = DEFAULT_PROFILE) -> ServeSpec:
    """Read ``config``, merge ``profiles[profile]`` over the vLLM entry's engine args, resolve ``${…}``."""
    path = Path(config)
    if not path.is_file() and not path.is_absolute() and (PROJECT_ROOT / path).is_file():
        path = PROJECT_ROOT / path  # run from another directory of an editable checkout
    if not path.is_file():
        raise UsageError(f"{path}: no such serve config (see docs/serving.md)")
    try:
        document = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OmegaConfBaseException, OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the serve config ({' '.join(str(exc).split())})") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path}: not a mapping")
    entry = vllm_entry(document, path)
    args = dict((entry.get("engine_args_specific") or {}).get("vllm") or {})
    args.update(entry.get("engine_args") or {})  # FlagScale: common engine_args win over specific ones
    profiles = document.get("profiles") or {}
    if profile != DEFAULT_PROFILE and profile not in profiles:
        names = ", ".join(sorted({DEFAULT_PROFILE, *profiles})) or DEFAULT_PROFILE
        raise UsageError(f"profile {profile!r} is not in {path}; profiles: {names}")
    for key, value in (profiles.get(profile) or {}).items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = value
    if not args.get("model"):
        raise UsageError(f"{path}: serve[].engine_args.model is empty")
    envs = {
        str(k): str(v)
        for k, v in ((document.get("experiment") or {}).get("envs") or {}).items()
        if v is not None
    }
    spec = ServeSpec(path, profile, args, envs, document)
    _validate(spec)
    return spec


def vllm_entry(document: dict[str, Any], path: Path) -> dict[str, Any]:
    entries = document.get("serve")
    if isinstance(entries, dict):
        entries = [entries]
    for entry in entries or []:
        if isinstance(entry, dict) and (
            entry.get("engine") == "vllm" or entry.get("serve_id") == "vllm_model"
        ):
            return entry
    raise UsageError(f"{path}: no `serve:` entry with `engine: vllm`")


def _validate(spec: ServeSpec) -> None:
    where = f"{spec.config_path} (profile {spec.profile})"
    try:
        int(spec.engine_args.get("port") or 8000)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: port={spec.engine_args.get('port')!r} is not a number") from None
    for key, value in spec.engine_args.items():
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{where}: {key} is not valid JSON ({exc.msg})") from None
    rope = spec.yarn()
    if rope and spec.max_model_len:
        try:
            reach = float(rope["factor"]) * int(rope["original_max_position_embeddings"])
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{where}: YaRN needs factor and original_max_position_embeddings") from None
        if spec.max_model_len > reach:
            raise UsageError(
                f"{where}: max_model_len={spec.max_model_len} exceeds YaRN's reach "
                f"(factor x original_max_position_embeddings = {reach:.0f})"
            )


# ------------------------------------------------------------------------------------------------

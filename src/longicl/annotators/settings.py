"""The annotators' settings: ``method`` (how requests are made and answers decided, hydra group
``method/``) and task 8's ``kernels`` (hydra group ``kernels/``).

`MethodSettings` is the validated, typed view of ``conf/method/*.yaml`` (docs/methods.md explains
every key); ``for_task`` applies a task's ``per_task`` entry. `KernelSettings` is the same for
``conf/kernels/default.yaml`` (docs/kernels.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from longicl.config_values import as_int, load_defaults
from longicl.engines import check_available
from longicl.errors import UsageError
from longicl.kernels.check import FAILURE_KINDS
from longicl.kernels.sandbox import ISOLATIONS
from longicl.methods.calibration import MODES as CALIBRATION_MODES
from longicl.methods.calibration import load_calibration
from longicl.methods.structured import FIELD_STYLES, constraint_for
from longicl.methods.voting import RULES
from longicl.paths import PROJECT_ROOT
from longicl.records import ICL, MethodLabel
from longicl.tasks import TASKS, AnswerKind, TaskSpec, per_task_entry

#: keys a ``method.per_task.<id>`` entry may override (null: take the task-independent value)
PER_TASK_KEYS = (
    "enable_thinking",
    "sampling",
    "thinking_sampling",
    "max_tokens",
    "thinking_budget",
    "thinking_followup",
    "structured_outputs",
    "logprobs",
    "self_consistency",
    "vote",
    "calibration",
    "calibration_mode",
    "use_program",
    "classical_voter",
    "classical_weight",
)
_MERGED_KEYS = ("sampling", "thinking_sampling", "max_tokens")  # per-task entries update these dicts
MAX_TOP_LOGPROBS = 20  # vLLM's default --max-logprobs
_NULLABLE = ("logprobs", "calibration")  # null is a value of these (off), not "take the default"


@dataclass(frozen=True)
class MethodSettings:
    """How requests are made and answers decided (hydra group ``method/``, see docs/methods.md)."""

    enable_thinking: bool
    sampling: Mapping[str, Any]  # thinking off
    max_tokens: Mapping[str, int]  # per answer kind
    extra_body: Mapping[str, Any]
    name: str
    thinking_sampling: Mapping[str, Any]  # thinking on ({}: ``sampling``)
    thinking_budget: int  # tokens of reasoning allowed on top of max_tokens when thinking
    thinking_followup: bool  # one follow-up request when the budget ends the reasoning
    structured_outputs: bool  # constrain answers (closed labels, integer formats)
    structured_outputs_style: str
    logprobs: int | None  # top_logprobs per token for closed-label tasks (label scoring)
    self_consistency: int  # prompts per sample, one per static-block variant
    vote: str  # majority | probability | auto (probability when every vote has logprobs)
    calibration: str | None  # calibration.json of a dev run, applied to label scores
    calibration_mode: str  # auto (the file's choice) | bias | batch | none
    use_program: bool  # tasks with a program (1, 3, 4): the program checks/replaces answers
    classical_voter: bool  # closed-label tasks: the classical classifier votes too
    classical_weight: float
    side_engine: Mapping[str, Any]
    per_task: Mapping[str, Mapping[str, Any]]

    @classmethod
    def defaults(cls, **changes: Any) -> MethodSettings:
        """``conf/method/default.yaml`` (the only home of these defaults) with ``changes``; for
        notebooks and tests (no environment check)."""
        return cls.from_config({**load_defaults("method"), **changes}, check_environment=False)

    @classmethod
    def from_config(
        cls,
        cfg: Mapping[str, Any],
        *,
        check_environment: bool = True,
        tasks: Sequence[TaskSpec] = (),
        fill_missing: bool = False,
    ) -> MethodSettings:
        """Validate the ``method`` config; every problem is one `UsageError` naming the setting.

        ``per_task`` keys are the challenge's task ids (or names) and the names of ``tasks`` (the
        run's declared tasks). ``check_environment`` also checks that the side engine can be
        imported and that the calibration file is readable (off when reading the config of an
        earlier run, whose declared tasks are not known here: any key is accepted then);
        ``fill_missing`` takes keys an earlier run's config lacks from ``conf/method/default.yaml``."""
        raw = dict(cfg or {})
        if fill_missing:
            defaults = load_defaults("method")
            given = {k: v for k, v in raw.items() if v is not None or k in _NULLABLE}
            if isinstance(given.get("max_tokens"), Mapping):  # an answer kind added since
                given["max_tokens"] = {**defaults["max_tokens"], **given["max_tokens"]}
            raw = {**defaults, **given}
        per_task_raw = raw.pop("per_task", None) or {}
        if not isinstance(per_task_raw, Mapping):
            raise UsageError("method.per_task must map task ids to settings")
        per_task: dict[str, dict[str, Any]] = {}
        by_key = {key: spec for spec in (*TASKS.values(), *tasks) for key in spec.config_keys}
        for task_id, entry in per_task_raw.items():
            key = str(task_id)
            if key not in by_key and check_environment:
                raise UsageError(
                    f"method.per_task.{key}: not a task id (1..{max(TASKS)}) or the name of a task of this run"
                )
            entry = {k: v for k, v in dict(entry or {}).items() if v is not None}
            unknown = sorted(set(entry) - set(PER_TASK_KEYS))
            if unknown:
                raise UsageError(
                    f"method.per_task.{key}.{unknown[0]} cannot be set per task; one of: {', '.join(PER_TASK_KEYS)}"
                )
            if entry:
                per_task[key] = entry
        values = _coerce(raw, "method")
        missing = sorted(set(cls.__dataclass_fields__) - {"per_task"} - set(values))
        if missing:
            raise UsageError(
                f"method.{missing[0]} is not set (conf/method/default.yaml sets every method key)"
            )
        base = cls(**values, per_task=per_task)
        # for_task validates the merged values
        resolved = {key: base.for_task(by_key[key]) for key in per_task if key in by_key}
        if not check_environment:
            return base
        for key, settings in [("", base), *resolved.items()]:
            where = f"method.per_task.{key}" if key else "method"
            if settings.needs_side_engine:
                check_available(settings.side_engine, f"{where}.use_program/classical_voter")
            if settings.calibration:
                load_calibration(settings.calibration)
        return base

    def for_task(self, spec: TaskSpec) -> MethodSettings:
        """These settings with ``per_task[<id or name>]`` applied (and ``per_task`` emptied)."""
        entry = per_task_entry(self.per_task, spec)
        if not entry:
            return replace(self, per_task={}) if self.per_task else self
        merged: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k != "per_task"}
        for key, value in entry.items():
            if key in _MERGED_KEYS and isinstance(value, Mapping):
                merged[key] = {**dict(merged[key]), **dict(value)}
            else:
                merged[key] = value
        return MethodSettings(**_coerce(merged, f"method.per_task.{spec.config_keys[0]}"), per_task={})

    @property
    def needs_side_engine(self) -> bool:
        return self.use_program or self.classical_voter

    def max_tokens_for(self, spec: TaskSpec) -> int:
        """The answer's own budget; `request_max_tokens` adds the thinking budget."""
        return int(self.max_tokens[spec.answer_kind.value])

    def request_max_tokens(self, spec: TaskSpec) -> int:
        return self.max_tokens_for(spec) + (self.thinking_budget if self.enable_thinking else 0)

    def sampling_for(self, variant: int = 0) -> dict[str, Any]:
        """The thinking or non-thinking sampling; a ``seed`` is offset by the variant."""
        sampling = dict(
            self.thinking_sampling if self.enable_thinking and self.thinking_sampling else self.sampling
        )
        if variant and isinstance(sampling.get("seed"), int):
            sampling["seed"] += variant
        return sampling

    def longest_request(self, specs: Sequence[TaskSpec]) -> int:
        """The most tokens any request of ``specs`` may generate (for the context-length check)."""
        return max((self.for_task(spec).request_max_tokens(spec) for spec in specs), default=0)

    def method_label(self, spec: TaskSpec) -> MethodLabel:
        """What a language model's answers to ``spec`` are labelled: ``icl`` plus the side models."""
        return MethodLabel(ICL, tuple(self.side_models(spec)))

    def side_models(self, spec: TaskSpec) -> list[str]:
        """The side models these settings add to ``spec``'s answers, in the order they act."""
        return [
            name
            for name, wanted in (
                ("classifier", self.classical_voter and spec.is_closed),
                ("program", self.use_program and bool(spec.program)),
            )
            if wanted
        ]

    def summary(self, spec: TaskSpec) -> dict[str, Any]:
        """What run.json records of the method as applied to ``spec``."""
        constraint = constraint_for(spec) if self.structured_outputs else None
        return {
            "name": self.name,
            "enable_thinking": self.enable_thinking,
            "thinking_budget": self.thinking_budget if self.enable_thinking else None,
            "sampling": self.sampling_for(0),
            "max_tokens": self.request_max_tokens(spec),
            "structured_outputs": None if constraint is None else {constraint[0]: constraint[1]},
            "logprobs": self.logprobs if spec.is_closed else None,
            "self_consistency": self.self_consistency,
            "vote": self.vote,
            "calibration": self.calibration if spec.is_closed else None,
            "use_program": bool(self.use_program and spec.program),
            "classical_voter": bool(self.classical_voter and spec.is_closed),
        }


def _coerce(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Typed constructor arguments of `MethodSettings` from a config mapping."""
    known = {f for f in MethodSettings.__dataclass_fields__ if f != "per_task"}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise UsageError(f"{where}.{key} is not a method setting")
        if value is None and key not in _NULLABLE:
            continue
        out[key] = value
    for key in (
        "enable_thinking",
        "thinking_followup",
        "structured_outputs",
        "use_program",
        "classical_voter",
    ):
        if key in out and not isinstance(out[key], bool):
            raise UsageError(f"{where}.{key}={out[key]!r} must be true or false")
    for key in ("sampling", "thinking_sampling", "extra_body", "side_engine"):
        if key in out:
            if not isinstance(out[key], Mapping):
                raise UsageError(f"{where}.{key} must be a mapping")
            out[key] = dict(out[key])
    if "max_tokens" in out:
        if not isinstance(out["max_tokens"], Mapping):
            raise UsageError(f"{where}.max_tokens must map answer kinds to token counts")
        out["max_tokens"] = {
            str(k): as_int(v, f"{where}.max_tokens.{k}", minimum=1) for k, v in out["max_tokens"].items()
        }
        absent = [kind.value for kind in AnswerKind if kind.value not in out["max_tokens"]]
        if absent:
            raise UsageError(f"{where}.max_tokens.{absent[0]} is not set (one budget per answer kind)")
    if "thinking_budget" in out:
        out["thinking_budget"] = as_int(out["thinking_budget"], f"{where}.thinking_budget", minimum=0)
    if "self_consistency" in out:
        out["self_consistency"] = as_int(out["self_consistency"], f"{where}.self_consistency", minimum=1)
    if out.get("logprobs") is not None:
        out["logprobs"] = as_int(out["logprobs"], f"{where}.logprobs", minimum=0) or None
        if out["logprobs"] is not None and out["logprobs"] > MAX_TOP_LOGPROBS:
            raise UsageError(f"{where}.logprobs={out['logprobs']}: at most {MAX_TOP_LOGPROBS} (vLLM's limit)")
    if "vote" in out and out["vote"] not in ("auto", *RULES):
        raise UsageError(f"{where}.vote={out['vote']!r} is not one of: auto, {', '.join(RULES)}")
    if "calibration_mode" in out and out["calibration_mode"] not in ("auto", *CALIBRATION_MODES):
        raise UsageError(
            f"{where}.calibration_mode={out['calibration_mode']!r} is not one of: auto, {', '.join(CALIBRATION_MODES)}"
        )
    if "structured_outputs_style" in out:
        style = str(out["structured_outputs_style"])
        if style not in FIELD_STYLES:
            raise UsageError(
                f"{where}.structured_outputs_style={style!r} is not one of: {', '.join(FIELD_STYLES)}"
            )
    if "classical_weight" in out:
        try:
            out["classical_weight"] = float(out["classical_weight"])
        except (TypeError, ValueError):
            raise UsageError(
                f"{where}.classical_weight={out['classical_weight']!r} is not a number"
            ) from None
        if out["classical_weight"] < 0:
            raise UsageError(f"{where}.classical_weight must not be negative")
    if out.get("calibration") is not None:
        out["calibration"] = str(out["calibration"])
    if "name" in out:
        out["name"] = str(out["name"])
    return out


# ------------------------------------------------------------------------------------------------
# task 8's settings (hydra group ``kernels/``)
# ------------------------------------------------------------------------------------------------
#: The answer tiers ``kernels.fallback`` may list, best first by default:
FALLBACK_TIERS = {
    "triton": "a Triton candidate that passed (agrees with a passing reference, or runs alone)",
    "reference": "the PyTorch reference, when it passed on its own (runs, right wrapper, finite outputs)",
    "callable": "the Triton candidate that got furthest among those that ran (wrong shape or values)",
    "any_code": "the furthest-reaching Triton candidate with any code (it did not run)",
    "reference_code": "the reference's code, even though it did not pass",
}

_RENAMED = {"timeout": "timeout_s", "max_parallel": "max_parallel_checks"}  # kernels.check.<key>


@dataclass(frozen=True)
class KernelSettings:
    """Task-8 settings (hydra group ``kernels/``, ``conf/kernels/default.yaml``)."""

    reference: bool  # ask for a PyTorch reference and test the Triton module against it
    reference_max_tokens: int  # the reference's answer budget (thinking budget added on top)
    repair_rounds: int  # repair turns after a failed check (0: none)
    fallback: tuple[str, ...]  # answer tiers, best first (FALLBACK_TIERS)
    no_repair_kinds: tuple[str, ...]  # failures a new answer cannot fix here
    timeout_s: float  # checker wall clock per check (torch/triton import included)
    memory_mb: int
    device: str  # auto | cpu | cuda
    sandbox: str  # auto | bwrap | unshare | none (longicl.kernels.sandbox.ISOLATIONS)
    rtol: float
    atol: float
    max_parallel_checks: int  # checker processes at once, over all samples in flight
    feedback_chars: int  # checker error text kept in a repair turn
    dev_gold: bool  # dev split: check the gold module (cached) and the answer against it
    cache_dir: str  # relative paths are under the project root

    @classmethod
    def defaults(cls, **changes: Any) -> KernelSettings:
        """``conf/kernels/default.yaml`` (the only home of these defaults), with ``changes``."""
        return replace(cls.from_config(load_defaults("kernels")), **changes)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, *, fill_missing: bool = False) -> KernelSettings:
        """Validate the ``kernels`` config; every problem is one `UsageError` naming the setting.

        ``fill_missing`` takes keys an older config lacks from ``conf/kernels/default.yaml``."""
        raw = _flat(cfg)
        if fill_missing:
            raw = {**_flat(load_defaults("kernels")), **raw}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            hint = (
                " (task 8's prompt texts are prompt.kinds.code.followups.*)" if "query" in unknown[0] else ""
            )
            raise UsageError(
                f"kernels.{unknown[0]} is not a kernel setting; one of: {', '.join(sorted(known))}{hint}"
            )
        missing = sorted(known - set(raw))
        if missing:
            raise UsageError(f"kernels.{missing[0]} is not set (conf/kernels/default.yaml sets every key)")
        out: dict[str, Any] = {}
        for key in ("reference", "dev_gold"):
            if key in raw:
                if not isinstance(raw[key], bool):
                    raise UsageError(f"kernels.{key}={raw[key]!r} must be true or false")
                out[key] = raw[key]
        for key, minimum in (
            ("reference_max_tokens", 1),
            ("repair_rounds", 0),
            ("memory_mb", 256),
            ("max_parallel_checks", 1),
            ("feedback_chars", 100),
        ):
            if key in raw:
                out[key] = as_int(raw[key], f"kernels.{key}", minimum=minimum)
        for key in ("timeout_s", "rtol", "atol"):
            if key in raw:
                try:
                    out[key] = float(raw[key])
                except (TypeError, ValueError):
                    raise UsageError(f"kernels.{key}={raw[key]!r} is not a number") from None
                if out[key] < 0 or (key == "timeout_s" and out[key] == 0):
                    raise UsageError(f"kernels.{key}={raw[key]} must be positive")
        if "device" in raw:
            if raw["device"] not in ("auto", "cpu", "cuda"):
                raise UsageError(f"kernels.device={raw['device']!r} is not one of: auto, cpu, cuda")
            out["device"] = raw["device"]
        if "sandbox" in raw:
            if raw["sandbox"] not in ISOLATIONS:
                raise UsageError(f"kernels.sandbox={raw['sandbox']!r} is not one of: {', '.join(ISOLATIONS)}")
            out["sandbox"] = raw["sandbox"]
        if "fallback" in raw:
            tiers = _strings(raw["fallback"], "kernels.fallback")
            bad = [t for t in tiers if t not in FALLBACK_TIERS]
            if bad or not tiers:
                raise UsageError(
                    f"kernels.fallback={list(tiers)}: tiers are {', '.join(FALLBACK_TIERS)} (at least one)"
                )
            out["fallback"] = tuple(dict.fromkeys(tiers))
        if "no_repair_kinds" in raw:
            kinds = _strings(raw["no_repair_kinds"], "kernels.no_repair_kinds")
            bad = [k for k in kinds if k not in FAILURE_KINDS]
            if bad:
                raise UsageError(
                    f"kernels.no_repair_kinds: {bad[0]!r} is not one of: {', '.join(FAILURE_KINDS)}"
                )
            out["no_repair_kinds"] = tuple(kinds)
        if "cache_dir" in raw:
            out["cache_dir"] = str(raw["cache_dir"])
        return cls(**out)

    def cache_path(self) -> Path:
        path = Path(self.cache_dir).expanduser()
        return path if path.is_absolute() else PROJECT_ROOT / path

    def check_options(self) -> dict[str, Any]:
        """Keyword arguments of `check_candidate` (also part of the gold cache key)."""
        return {
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "device": self.device,
            "sandbox": self.sandbox,
            "rtol": self.rtol,
            "atol": self.atol,
        }


def _flat(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``kernels`` config with its ``check`` mapping flattened into setting names; nulls dropped."""
    raw = {k: v for k, v in dict(cfg or {}).items() if v is not None}
    raw.pop("name", None)
    check = raw.pop("check", None) or {}
    if not isinstance(check, Mapping):
        raise UsageError("kernels.check must be a mapping")
    for key, value in dict(check).items():
        if value is not None:
            raw[_RENAMED.get(key, key)] = value
    return raw


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.strip("[]").split(",") if part.strip()]
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{name} must be a list of names")
    return tuple(value)

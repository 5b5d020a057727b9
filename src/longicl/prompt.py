"""From demonstrations to chat messages, with exact-by-parts token accounting.

Layout of every request (the static part first, the query last)::

    system:  task definition + answer-format instruction
    user:    header
             static demonstrations    <- byte-identical for every sample of the task
             dynamic demonstrations   <- this sample's nearest neighbours
             query (format reminder + "Input: ...")

Templates come from the hydra group ``prompt/`` (see ``conf/prompt/default.yaml``); the answer
kind of the task picks the format instruction and, where set, its own demo/query templates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

from longicl.config_values import exact_keys
from longicl.data import Example
from longicl.errors import UsageError
from longicl.selection import PromptBudget, build_selector
from longicl.tasks import TaskSpec
from longicl.tokens import TokenCounter


@dataclass(frozen=True)
class PromptTexts:
    """The texts of one prompt style (see ``conf/prompt/default.yaml`` for their placeholders)."""

    system: str
    header: str
    demo: str
    separator: str
    query: str
    format_instruction: str


@dataclass(frozen=True)
class PromptSettings(PromptTexts):
    """A run's ``prompt`` section (``conf/prompt/<name>.yaml``, the only home of its defaults): the
    texts of one prompt style, and per answer kind (``kinds.<kind>``) the texts that differ."""

    name: str
    stop: Any  # auto | null | a list of strings (see `stop_sequences`)
    kinds: Mapping[str, Mapping[str, Any] | None]

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> PromptSettings:
        """Exactly the keys of a prompt preset: one missing or unknown is one `UsageError` line."""
        exact_keys(section, _PROMPT_KEYS, "prompt", "conf/prompt/<name>.yaml")
        return cls(**{key: section[key] for key in _PROMPT_KEYS})

    def as_dict(self) -> dict[str, Any]:
        """The section as the config gave it (its digest is part of a run's fingerprint)."""
        return {key: getattr(self, key) for key in _PROMPT_KEYS}

    def template_for(self, spec: TaskSpec) -> PromptTemplate:
        return PromptTemplate.from_config(self, spec)


_PROMPT_KEYS = tuple(f.name for f in fields(PromptSettings))


@dataclass(frozen=True)
class PromptTemplate(PromptTexts):
    """The texts of one prompt style, already specialised to one task's answer kind."""

    # Where a reply that runs on into a new demonstration is cut (see `stop_sequences`).
    stop: tuple[str, ...] = ()
    # Texts of further turns an annotator may send (task 8: the reference and repair queries).
    followups: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: PromptSettings | Mapping[str, Any], spec: TaskSpec) -> PromptTemplate:
        """The template of ``spec``'s answer kind under the prompt settings ``cfg``."""
        if not isinstance(cfg, PromptSettings):
            cfg = PromptSettings.from_config(cfg)
        kind_cfg = (cfg.kinds or {}).get(spec.answer_kind.value) or {}

        def pick(key: str) -> str:
            value = kind_cfg.get(key, getattr(cfg, key))
            if not isinstance(value, str):
                raise UsageError(f"prompt.{key} must be a string (answer kind {spec.answer_kind.value})")
            return value

        labels = ", ".join(f'"{label}"' for label in spec.labels or ())
        instruction = pick("format_instruction").format(labels=labels)
        demo, separator = pick("demo"), pick("separator")
        stop = kind_cfg.get("stop", cfg.stop)
        followups = kind_cfg.get("followups") or {}
        if not isinstance(followups, Mapping) or not all(isinstance(v, str) for v in followups.values()):
            raise UsageError(f"prompt.kinds.{spec.answer_kind.value}.followups must map names to texts")
        return cls(
            system=pick("system"),
            header=pick("header"),
            demo=demo,
            separator=separator,
            query=pick("query"),
            format_instruction=instruction,
            stop=stop_sequences(stop, demo, separator, spec),
            followups=dict(followups),
        )

    @property
    def input_prefix(self) -> str:
        """What a demonstration starts with before its input (``Input:``)."""
        return self.demo.split("{input}", 1)[0].strip()

    @property
    def answer_prefix(self) -> str:
        """The last line before a demonstration's output (``Output:``), which replies often echo."""
        before = self.demo.split("{output}", 1)[0] if "{output}" in self.demo else ""
        lines = before.rstrip(" \t").splitlines()
        return lines[-1].strip() if lines and "{input}" not in lines[-1] else ""

    def render_system(self, definition: str) -> str:
        return self.system.format(definition=definition, format_instruction=self.format_instruction)

    def render_demo(self, example: Example) -> str:
        """One demonstration with its trailing separator, as it appears in the prompt."""
        return self.demo.format(input=example.input, output=example.output) + self.separator

    def render_query(self, sample: Example) -> str:
        return self.query.format(input=sample.input, format_instruction=self.format_instruction)


def stop_sequences(setting: object, demo: str, separator: str, spec: TaskSpec) -> tuple[str, ...]:
    """The stop sequences of ``prompt.stop``: ``auto`` derives one from the template, the start
    of a new demonstration (separator + the demo's text before ``{input}``, e.g. ``"\\n\\nInput:"``),
    so that a weak or base model that goes on writing demonstrations is cut; null: none (the
    code template sets none: a stop string could cut a program); a list: those strings."""
    if setting is None or setting is False:
        return ()
    if setting == "auto":
        lead = demo.split("{input}", 1)[0].rstrip(" \t")
        marker = separator + lead
        if not lead.strip() or not marker.strip():
            raise UsageError(
                f"prompt.stop=auto: the demo template of {spec.name} has no text before {{input}}"
            )
        return (marker,)
    if isinstance(setting, str):
        setting = [setting]
    if not isinstance(setting, list | tuple) or not all(isinstance(s, str) and s for s in setting):
        raise UsageError(f"prompt.stop={setting!r} must be auto, null or a list of non-empty strings")
    return tuple(setting)


@dataclass(frozen=True)
class StaticBlock:
    """The shared demonstrations of one task (one per self-consistency variant)."""

    variant: int
    demo_ids: tuple[str, ...]
    indices: tuple[int, ...]
    text: str  # header + demonstrations, exactly as sent
    demo_tokens: int  # tokens of the demonstrations alone (counts toward the ICL floor)
    tokens: int  # tokens of ``text``
    sha256: str


@dataclass(frozen=True)
class PromptPlan:
    """Everything one request will contain, plus its token accounting."""

    task: str
    sample: Example
    static: StaticBlock
    dynamic_ids: tuple[str, ...]
    dynamic_text: str
    query_text: str
    system_text: str
    prompt_tokens: int  # whole prompt as the server sees it (chat template included)
    icl_tokens: int  # static + dynamic demonstrations
    shared_prefix_tokens: int  # tokens identical across the task's requests (cacheable)
    stop: tuple[str, ...] = ()  # the template's stop sequences (sent unless thinking is on)

    @property
    def uncached_tokens(self) -> int:
        """Prompt tokens not shared with another request of the same task (new prefill)."""
        return self.prompt_tokens - self.shared_prefix_tokens

    @property
    def demo_ids(self) -> tuple[str, ...]:
        return self.static.demo_ids + self.dynamic_ids

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system_text},
            {"role": "user", "content": self.static.text + self.dynamic_text + self.query_text},
        ]


@dataclass
class ContextBuilder:
    """Builds prompt plans for the samples of one task from its demonstration pool."""

    spec: TaskSpec
    definition: str
    pool: Sequence[Example]
    template: PromptTemplate
    counter: TokenCounter
    budget: PromptBudget
    strategy: str  # these three come from the run's settings (`build_context`): no code defaults
    seed: int
    enable_thinking: bool
    queries: Sequence[Example] = ()  # the run's unlabelled samples, for strategies that use them
    _static: dict[tuple[int, int | None], StaticBlock] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.demo_texts = [self.template.render_demo(ex) for ex in self.pool]
        self.costs = self.counter.count_many(self.demo_texts)
        self.selector = build_selector(self.strategy, self.spec, self.pool, self.costs, self.seed)
        self.selector.observe(self.queries)
        self.system_text = self.template.render_system(self.definition)
        # Fixed template tokens: system message, the user message's wrapper, the generation prompt.
        self._fixed_tokens = (
            self.counter.message_overhead("system")
            + self.counter.count(self.system_text)
            + self.counter.message_overhead("user")
            + self.counter.generation_overhead(self.enable_thinking)
        )
        # Everything up to and including the static block is shared; the user message's closing
        # "<|im_end|>\n" and the generation prompt come after the query, so they are not.
        self._tail_tokens = self.counter.generation_overhead(
            self.enable_thinking
        ) + self.counter.count_special("<|im_end|>\n")

    def static_block(self, variant: int = 0, ceiling: int | None = None) -> StaticBlock:
        """The shared block for ``variant``; ``ceiling`` shrinks it (never below the ICL floor)."""
        key = (variant, ceiling)
        if key not in self._static:
            budget = self.budget
            if ceiling is not None:
                budget = _replace_budget(budget, static_tokens=max(ceiling, self.spec.min_icl_tokens))
            indices = self.selector.static_demos(budget, variant)
            demos = "".join(self.demo_texts[i] for i in indices)
            text = self.template.header + demos if indices else ""
            self._static[key] = StaticBlock(
                variant=variant,
                demo_ids=tuple(self.pool[i].id for i in indices),
                indices=tuple(indices),
                text=text,
                demo_tokens=self.counter.count(demos) if demos else 0,
                tokens=self.counter.count(text) if text else 0,
                sha256=hashlib.sha256(text.encode()).hexdigest(),
            )
        return self._static[key]

    def plan(
        self,
        sample: Example,
        variant: int = 0,
        *,
        dynamic_ceiling: int | None = None,
        static_ceiling: int | None = None,
    ) -> PromptPlan:
        static = self.static_block(variant, static_ceiling)
        budget = (
            self.budget
            if dynamic_ceiling is None
            else _replace_budget(self.budget, dynamic_tokens=max(0, dynamic_ceiling))
        )
        dynamic = self.selector.dynamic_demos(sample, budget, frozenset(static.indices))
        query_text = self.template.render_query(sample)
        header = self.template.header if dynamic and not static.text else ""
        dynamic_tokens = sum(self.costs[i] for i in dynamic)
        query_tokens = self.counter.count(query_text)
        header_tokens = self.counter.count(header) if header else 0
        prompt_tokens = self._fixed_tokens + static.tokens + header_tokens + dynamic_tokens + query_tokens
        icl_tokens = static.demo_tokens + dynamic_tokens
        # Drop the least similar neighbours (placed first) while the prompt is over its ceiling.
        while prompt_tokens > self.budget.max_prompt_tokens and dynamic:
            dropped = dynamic.pop(0)
            prompt_tokens -= self.costs[dropped]
            icl_tokens -= self.costs[dropped]
        if prompt_tokens > self.budget.max_prompt_tokens:
            raise UsageError(
                f"{self.spec.name}: sample {sample.id} needs {prompt_tokens} prompt tokens even without "
                f"per-sample demonstrations, above max_prompt_tokens={self.budget.max_prompt_tokens}; "
                "lower selection.static_tokens"
            )
        if icl_tokens < self.spec.min_icl_tokens:
            raise UsageError(
                f"{self.spec.name}: only {icl_tokens} tokens of demonstrations for sample {sample.id}, "
                f"below the rule's {self.spec.min_icl_tokens}; raise selection.static_tokens "
                f"(now {self.budget.static_tokens}) or selection.dynamic_tokens"
            )
        return PromptPlan(
            task=self.spec.name,
            sample=sample,
            static=static,
            dynamic_ids=tuple(self.pool[i].id for i in dynamic),
            dynamic_text=header + "".join(self.demo_texts[i] for i in dynamic),
            query_text=query_text,
            system_text=self.system_text,
            prompt_tokens=prompt_tokens,
            icl_tokens=icl_tokens,
            shared_prefix_tokens=prompt_tokens
            - (header_tokens + dynamic_tokens + query_tokens + self._tail_tokens),
            stop=self.template.stop,
        )


class ContextSettings(Protocol):
    """What `build_context` reads of a run's settings (`longicl.runner.RunSettings` has it all)."""

    prompt: PromptSettings
    seed: int

    def strategy_for(self, spec: TaskSpec) -> str: ...

    def budget_for(self, spec: TaskSpec) -> PromptBudget: ...

    def thinking_for(self, spec: TaskSpec) -> bool: ...


def build_context(
    spec: TaskSpec,
    definition: str,
    pool: Sequence[Example],
    settings: ContextSettings,
    counter: TokenCounter,
    *,
    queries: Sequence[Example] = (),
) -> ContextBuilder:
    """The prompt builder of one task under a run's settings: its template, budget, selection
    strategy and thinking flag as they apply to ``spec`` (per-task overrides included). The runner
    and ``method.py`` both build through here, so they send the same prompts."""
    return ContextBuilder(
        spec=spec,
        definition=definition,
        pool=pool,
        template=settings.prompt.template_for(spec),
        counter=counter,
        budget=settings.budget_for(spec),
        strategy=settings.strategy_for(spec),
        seed=settings.seed,
        enable_thinking=settings.thinking_for(spec),
        queries=queries,
    )


def _replace_budget(budget: PromptBudget, **changes: int) -> PromptBudget:
    return replace(budget, **changes)

"""What the checks send and expect, their settings, and one check's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from longicl.config_values import load_main_defaults

DEFAULT_BASE_URL = "http://127.0.0.1:2026/v1"
DEFAULT_MIN_MODEL_LEN = int(
    load_main_defaults()["max_model_len"]
)  # conf/config.yaml's, without llm_config.yaml
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
# The structured check asks for what the run's label requests ask for: top log-probabilities and the
# stop sequence the default prompt template gives (see `longicl.prompt.stop_sequences`).
CHOICE_TOP_LOGPROBS = 5
CHOICE_STOP = ("\n\nInput:",)
NEEDLE_TEMPLATE = "The secret passphrase is {passphrase}."
NEEDLE_QUESTION = "What is the secret passphrase stated in the text above? Reply with the passphrase only."
PREFIX_QUESTIONS = ("Reply with the single word OK.", "Reply with the single word DONE.")
THROUGHPUT_QUESTION = "Summarise the text above in about two hundred words."


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


# The two tables of the output (`CheckResult.section`).
CHECKS = "checks"  # the probes: PASS, WARN (protocol fine, the model's answer not), FAIL or SKIP
CAPABILITIES = "capabilities"  # the capability table: PASS, WARN (not supported, degraded) or SKIP


@dataclass
class CheckResult:
    name: str
    status: str  # PASS, WARN (protocol fine, the model's answer not), FAIL or SKIP
    detail: str
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
    section: str = CHECKS

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"

"""The one reading of a reply's reasoning: a separate field, or inline ``<think>`` blocks.

Servers with a reasoning parser (vLLM ``--reasoning-parser qwen3``) return the reasoning in a
field of its own (``reasoning_content``, or ``reasoning`` in newer versions); others leave it in
the text as ``<think>…</think>``, or only ``…</think>`` when the chat template opened the block
in the prompt, or an unclosed ``<think>…`` when the reply was cut short while thinking.
"""

from __future__ import annotations

import re
from typing import Any

_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.S | re.I)


def reasoning_field(message: Any) -> str | None:
    """The separate reasoning field of an OpenAI-client chat message, if the server sent one."""
    extra = getattr(message, "model_extra", None) or {}
    return extra.get("reasoning_content") or extra.get("reasoning")


def strip_reasoning(text: str) -> str:
    """Remove thinking: closed ``<think>`` blocks, and everything before a lone ``</think>``."""
    text = _THINK_BLOCK.sub("", text)
    lowered = text.lower()
    if "</think>" in lowered:
        text = text[lowered.rindex("</think>") + len("</think>") :]
    elif "<think>" in lowered:  # opened but never closed: the answer never came
        text = text[: lowered.index("<think>")]
    return text.strip()


def inline_reasoning(text: str) -> str:
    """The reasoning left in the text: closed blocks, else before a lone ``</think>``, else after an unclosed ``<think>``."""
    closed = _THINK_BLOCK.findall(text)
    if closed:  # possibly empty, as Qwen3's template writes with thinking off
        return " ".join(m.strip() for m in closed).strip()
    lowered = text.lower()
    if "</think>" in lowered:  # the template opened <think> itself
        return text[: lowered.index("</think>")].strip()
    if "<think>" in lowered:  # cut short while thinking
        return text[lowered.index("<think>") + len("<think>") :].strip()
    return ""


def split_reasoning(content: str | None, field: str | None) -> tuple[str, str]:
    """``(reasoning, answer)`` of a reply: the separate field wins over inline blocks."""
    text = content or ""
    return (field or "").strip() or inline_reasoning(text), strip_reasoning(text)

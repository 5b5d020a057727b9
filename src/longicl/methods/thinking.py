"""Qwen3 thinking with a token budget, and the optional follow-up when the budget runs out.

With thinking on, a request may generate ``method.thinking_budget`` tokens of reasoning on top
of the answer's own ``max_tokens``. A reply that stops on the length limit before ``</think>``
has no answer. By default that is recorded as a parse failure ("no answer after the reasoning").
With ``method.thinking_followup=true`` one follow-up request continues the same conversation:
the assistant turn so far (the reasoning, closed with ``</think>``) is sent back as a final
assistant message that the server continues (vLLM's ``continue_final_message=true`` with
``add_generation_prompt=false``), with the answer's own token budget. The prompt before that is
unchanged, so the prefix cache still serves the static block.
"""

from __future__ import annotations

from typing import Any

from longicl.engines.base import ChatRequest, Completion
from longicl.reasoning import split_reasoning


def unfinished_thinking(completion: Completion) -> bool:
    """True when the reply hit its length limit while still reasoning."""
    if completion.error is not None or completion.finish_reason != "length":
        return False
    text = completion.text or ""
    if "<think>" in text and "</think>" not in text:
        return True
    return bool(completion.reasoning) and not text.strip()


def reasoning_of(completion: Completion) -> str:
    """The reasoning text, whether the server split it off or left it inline."""
    return split_reasoning(completion.text, completion.reasoning)[0]


def followup_request(request: ChatRequest, completion: Completion, max_tokens: int) -> ChatRequest:
    """The request that asks for the answer after the reasoning of ``completion``."""
    closed = f"<think>\n{reasoning_of(completion)}\n</think>\n\n"
    extra_body: dict[str, Any] = {
        key: value
        for key, value in request.extra_body.items()
        if key not in ("structured_outputs", "guided_choice", "guided_regex")
    }
    extra_body["continue_final_message"] = True
    extra_body["add_generation_prompt"] = False
    return ChatRequest(
        task=request.task,
        sample=request.sample,
        messages=[*request.messages, {"role": "assistant", "content": closed}],
        max_tokens=max_tokens,
        sampling=dict(request.sampling),
        extra_body=extra_body,
        logprobs=request.logprobs,
        prompt_tokens=request.prompt_tokens,
        affinity=request.affinity,
    )


def merge(first: Completion, followup: Completion) -> Completion:
    """The thinking reply and its follow-up as one completion (reasoning kept, answer from the follow-up)."""
    return Completion(
        text=followup.text,
        finish_reason=followup.finish_reason,
        reasoning=reasoning_of(first),
        usage=first.usage,
        latency_s=first.latency_s + followup.latency_s,
        attempts=first.attempts + followup.attempts,
        error=followup.error,
        server=followup.server or first.server,
        logprobs=followup.logprobs,
        method=first.method,
        notes=[
            *first.notes,
            "thinking budget exhausted before </think>; asked once more for the answer"
            f" (follow-up usage: {followup.usage})",
            *followup.notes,
        ],
    )

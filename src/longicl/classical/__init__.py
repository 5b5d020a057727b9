"""Annotators that need no language model: exact programs, text classifiers, nearest neighbours.

They back ``engine=classical`` (`longicl.engines.classical`): a CPU floor to compare in-context
learning with, and a side model for program verification and voting (`longicl.methods`).
Every model is trained on the run's demonstration pool only, never on the samples it annotates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from longicl.classical.base import ClassicalModel, NotFittedError, Prediction, pool_digest
from longicl.classical.cache import ModelCache, cache_key
from longicl.classical.programs import PROGRAMS, ProgramInputError, ProgramModel
from longicl.classical.retrieval import NearestNeighbour
from longicl.classical.text_models import PairGenreClassifier, TfidfClassifier, TokenCountRegressor
from longicl.registry import Registry

MODELS: Registry[type[ClassicalModel]] = Registry(
    "classical model",
    {
        cls.kind: cls
        for cls in (ProgramModel, TfidfClassifier, TokenCountRegressor, PairGenreClassifier, NearestNeighbour)
    },
)


def build_model(settings: Mapping[str, Any]) -> ClassicalModel:
    """An unfitted model from ``{"kind": ..., **hyperparameters}``; ValueError names what is wrong."""
    options = dict(settings)
    kind = options.pop("kind", None)
    if kind not in MODELS:
        raise ValueError(str(MODELS.unknown(kind, where="kind")))
    cls = MODELS.get(kind)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"kind={kind}: {exc}") from None


__all__ = [
    "MODELS",
    "PROGRAMS",
    "ClassicalModel",
    "ModelCache",
    "NearestNeighbour",
    "NotFittedError",
    "PairGenreClassifier",
    "Prediction",
    "ProgramInputError",
    "ProgramModel",
    "TfidfClassifier",
    "TokenCountRegressor",
    "build_model",
    "cache_key",
    "pool_digest",
]

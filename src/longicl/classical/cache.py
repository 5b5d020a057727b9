"""A directory of fitted models, one pickle per (task, model settings, pool).

The key is a sha256 over the cache format version, the scikit-learn and numpy versions, the
task, the model's settings and the pool's digest (ids, inputs and outputs), so a changed pool or hyperparameter never meets an
old model. Files are written atomically (a temporary file in the same directory, then a
rename), so a crash leaves either the old file or the new one. A file that cannot be read
back (truncated, from another version of the code, not a model) is ignored and rebuilt.

The pickles are this project's own files: never point ``cache_dir`` at files from elsewhere,
since unpickling runs code.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import sklearn

from longicl.classical.base import ClassicalModel

CACHE_FORMAT = 1  # bump when fitted state changes shape, so old pickles are never read


def cache_key(task: str, settings: dict[str, Any], pool_sha256: str) -> str:
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "libraries": [sklearn.__version__, numpy.__version__],  # pickles do not travel across them
            "task": task,
            "settings": settings,
            "pool": pool_sha256,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class ModelCache:
    directory: Path

    def path(self, task: str, kind: str, key: str) -> Path:
        return self.directory / f"{task}-{kind}-{key[:24]}.pkl"

    def load(self, path: Path, key: str) -> ClassicalModel | None:
        """The model stored under ``key`` at ``path``; None if absent, unreadable or not it."""
        try:
            with path.open("rb") as handle:
                stored = pickle.load(handle)
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - any unreadable file means "rebuild"
            return None
        if not isinstance(stored, dict) or stored.get("key") != key:
            return None
        model = stored.get("model")
        return model if isinstance(model, ClassicalModel) else None

    def save(self, path: Path, key: str, model: ClassicalModel) -> None:
        """Write atomically; a cache that cannot be written only costs the next run a refit."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        except OSError:
            return
        try:
            with os.fdopen(fd, "wb") as handle:
                pickle.dump({"key": key, "model": model}, handle, protocol=pickle.HIGHEST_PROTOCOL)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except Exception:  # noqa: BLE001 - e.g. a full disk: keep going without the cache
            Path(temp).unlink(missing_ok=True)

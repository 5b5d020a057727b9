"""``main.py serve.autostart=true``: start the configured server when none answers, for one run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from longicl.engines.probe import probe
from longicl.errors import UsageError
from longicl.serve.lifecycle import DEFAULT_TIMEOUT, start_server
from longicl.serve.process import DEFAULT_OUT_DIR, ServerHandle
from longicl.serve.spec import DEFAULT_CONFIG, DEFAULT_PROFILE, load_spec

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0", "::1", "::", ""}


def ensure_server(cfg: Any, progress: Callable[[str], None] | None = None) -> ServerHandle | None:
    """Start the configured server when ``serve.autostart`` is true and nothing answers yet.

    Returns the handle of a server started here (call ``stop()`` when the run ends), or None when
    autostart is off, the engine is not ``openai``, or a server already answers. Raises ``UsageError``
    (one line) when a server is needed but cannot be started: no vllm, no GPU, no model, URL mismatch.
    """
    serve_cfg = _get(cfg, "serve") or {}
    if not _get(serve_cfg, "autostart"):
        return None
    engine = _get(cfg, "engine") or {}
    if _get(engine, "name") != "openai":
        return None
    base_url = _get(engine, "base_url")
    if isinstance(base_url, list | tuple) or (base_url is not None and not isinstance(base_url, str)):
        urls = list(base_url)
        if len(urls) != 1:
            raise UsageError("serve.autostart=true starts one local server; engine.base_url lists several")
        base_url = urls[0]
    spec = load_spec(
        _get(serve_cfg, "config") or DEFAULT_CONFIG, _get(serve_cfg, "profile") or DEFAULT_PROFILE
    )
    url = str(base_url or spec.base_url).rstrip("/")
    if probe(url).answers:
        return None
    parsed = urlparse(url)
    if (parsed.hostname or "") not in _LOCAL_HOSTS or (parsed.port or 80) != spec.port:
        raise UsageError(
            f"serve.autostart=true, but engine.base_url={url} is not the local server {spec.base_url} "
            f"described by {spec.config_path}"
        )
    say = progress or (lambda msg: print(f"serve.autostart: {msg}", file=sys.stderr, flush=True))
    try:
        return start_server(
            spec,
            _get(serve_cfg, "out_dir") or DEFAULT_OUT_DIR,
            timeout=float(_get(serve_cfg, "timeout") or DEFAULT_TIMEOUT),
            progress=say,
        )
    except UsageError as exc:  # ServeError included: the same class, with where it came from
        raise type(exc)(f"serve.autostart: {exc}") from None


def _get(node: Any, key: str) -> Any:
    if node is None:
        return None
    getter = getattr(node, "get", None)
    return getter(key) if callable(getter) else getattr(node, key, None)

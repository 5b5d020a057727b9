"""The one server probe: does an OpenAI-compatible server answer, what does it serve, is it healthy.

Read-only GETs (``/v1/models``, ``/health``), never a chat request, so probing leaves what a
server receives for the annotation itself unchanged. Used by the OpenAI engine (start and health
checks), ``longicl.serve`` (wait until ready, status) and ``api_test.py`` (the ``models`` check);
the engine and ``api_test.py`` build their capability record from it
(`longicl.engines.capabilities.from_probe`).

- `probe` / `probe_async`: ``GET /v1/models`` decides; ``GET /health`` is reported alongside
  (vLLM answers 200 there only while its engine is alive; other servers may have no such route).
  A server that states its context size elsewhere (llama.cpp's ``llama-server``: ``GET /props``,
  see `CONTEXT_ROUTES`) is asked there too.
- `healthy`: the health check after a failed request: ``/health``, or ``/v1/models`` on a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from typing import Any

import httpx

# Why a probe found no usable server (``Probe.failure``).
UNREACHABLE = "unreachable"  # no connection, or it timed out
HTTP_STATUS = "status"  # /v1/models answered an error status
MALFORMED = "malformed"  # /v1/models answered something that is not a model list
NO_MODEL = "no_model"  # a model list without a model

# Servers whose /v1/models lacks max_model_len but state the context size at another route:
# the first model's owned_by -> (GET route below the server root, keys leading to the value)
CONTEXT_ROUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "llamacpp": ("/props", ("default_generation_settings", "n_ctx")),
}


@dataclass(frozen=True)
class Probe:
    """What ``GET /v1/models`` (and ``/health``) at one base URL said."""

    answers: bool
    detail: str  # one human line: "answers (models: …)" or why not
    models: tuple[str, ...] = ()
    max_model_len: int | None = None  # of the first listed model, when the server says (vLLM does)
    health: str = ""  # "/health 200", "/health 404", "/health ConnectError"
    failure: str | None = None  # UNREACHABLE, HTTP_STATUS, MALFORMED or NO_MODEL when not answering
    status_code: int | None = None  # of /v1/models
    error: str | None = None  # the exception type name when it did not answer at all
    entries: tuple[dict[str, Any], ...] = ()  # the model entries as listed (extra fields kept)
    context_length: int | None = None  # max_model_len, else what a `CONTEXT_ROUTES` route says

    def entry(self, model: str) -> dict[str, Any]:
        for item in self.entries:
            if str(item.get("id")) == model:
                return item
        return {}


def root_url(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port`` (where ``/health``, ``/tokenize`` live)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, 10.0))


def _read(listing: httpx.Response, health: str) -> Probe:
    """The probe result from the ``/v1/models`` answer."""
    if listing.status_code != 200:
        return Probe(
            False,
            f"/v1/models answered HTTP {listing.status_code}",
            health=health,
            failure=HTTP_STATUS,
            status_code=listing.status_code,
        )
    try:
        data = listing.json().get("data") or []
        entries = tuple(m for m in data if isinstance(m, dict))
        models = tuple(str(m.get("id")) for m in entries)
    except (ValueError, AttributeError, TypeError):
        return Probe(
            False, "/v1/models did not answer JSON", health=health, failure=MALFORMED, status_code=200
        )
    if not models:
        return Probe(False, "/v1/models lists no model", health=health, failure=NO_MODEL, status_code=200)
    max_len = entries[0].get("max_model_len")
    max_len = max_len if isinstance(max_len, int) and not isinstance(max_len, bool) else None
    health_note = "" if health.endswith(" 200") else f", {health}"
    length = f", max_model_len {max_len:,}" if max_len is not None else ""
    return Probe(
        True,
        f"answers (models: {', '.join(models)}{length}{health_note})",
        models,
        max_len,
        health=health,
        status_code=200,
        entries=entries,
        context_length=max_len,
    )


def _context_route(found: Probe) -> str | None:
    """The route to ask for the context size, when /v1/models did not state it."""
    if not found.answers or found.context_length is not None:
        return None
    route = CONTEXT_ROUTES.get(str(found.entries[0].get("owned_by") or "").lower())
    return route[0] if route else None


def _with_context(found: Probe, answer: httpx.Response | None) -> Probe:
    """``found`` with the context size read from a `CONTEXT_ROUTES` answer (unchanged if none)."""
    if answer is None or answer.status_code != 200:
        return found
    owner = str(found.entries[0].get("owned_by") or "").lower()
    value: Any = answer
    try:
        value = answer.json()
        for key in CONTEXT_ROUTES[owner][1]:
            value = value.get(key)
    except (ValueError, AttributeError):
        return found
    if not isinstance(value, int) or isinstance(value, bool):
        return found
    return replace(found, context_length=value)


def _unreachable(exc: BaseException) -> Probe:
    name = type(exc).__name__
    return Probe(False, f"no answer ({name})", failure=UNREACHABLE, error=name)


def probe(base_url: str, timeout: float = 3.0, api_key: str | None = None) -> Probe:
    """Does an OpenAI-compatible server answer ``GET /v1/models`` at ``base_url``? Never raises."""
    url = base_url.rstrip("/")
    try:
        with httpx.Client(timeout=_timeout(timeout), headers=_headers(api_key)) as client:
            listing = client.get(f"{url}/models")
            try:
                health = f"/health {client.get(f'{root_url(url)}/health').status_code}"
            except httpx.HTTPError as exc:
                health = f"/health {type(exc).__name__}"
            found = _read(listing, health)
            route = _context_route(found)
            if route:
                with contextlib.suppress(httpx.HTTPError):
                    return _with_context(found, client.get(f"{root_url(url)}{route}"))
    except httpx.HTTPError as exc:
        return _unreachable(exc)
    return found


async def probe_async(base_url: str, timeout: float = 3.0, api_key: str | None = None) -> Probe:
    """`probe` for async callers (the engine's start)."""
    url = base_url.rstrip("/")
    try:
        async with httpx.AsyncClient(timeout=_timeout(timeout), headers=_headers(api_key)) as client:
            listing = await client.get(f"{url}/models")
            try:
                health = f"/health {(await client.get(f'{root_url(url)}/health')).status_code}"
            except httpx.HTTPError as exc:
                health = f"/health {type(exc).__name__}"
            found = _read(listing, health)
            route = _context_route(found)
            if route:
                with contextlib.suppress(httpx.HTTPError):
                    return _with_context(found, await client.get(f"{root_url(url)}{route}"))
    except httpx.HTTPError as exc:
        return _unreachable(exc)
    return found


async def healthy(
    base_url: str,
    *,
    api_key: str | None,
    timeout: float,
    tries: int,
    backoff_initial: float,
    backoff_max: float,
) -> bool:
    """The health check of a server that just failed a request.

    ``GET /health`` (vLLM answers 200 only while its engine is alive); a server without that
    route (404) is asked ``GET /v1/models`` instead. Tried ``tries`` times, backing off.
    """
    url = base_url.rstrip("/")
    for attempt in range(tries):
        if attempt:
            await asyncio.sleep(min(backoff_max, backoff_initial * 2 ** (attempt - 1)))
        try:
            async with httpx.AsyncClient(timeout=timeout, headers=_headers(api_key)) as http:
                answer = await http.get(f"{root_url(url)}/health")
                if answer.status_code == 404:
                    answer = await http.get(f"{url}/models")
            if answer.status_code == 200:
                return True
        except httpx.HTTPError:
            continue
    return False

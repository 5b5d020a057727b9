"""Secrets a run sends but never writes: the API key and credentials inside URLs.

The key comes from ``engine.api_key``, else ``$OPENAI_API_KEY``, else ``EMPTY`` (what vLLM accepts
when it was started without ``--api-key``). Every writer of settings or messages (the run's
``config.yaml`` and ``run.json``, its log, the report's reproduction command, one-line errors)
passes its text through this module, which

- replaces a configured key by the placeholder ``$OPENAI_API_KEY`` (so a reproduced command reads
  the key from the environment of whoever runs it);
- replaces the user and password of a URL (``http://user:pass@host``) by ``***``;
- replaces every secret seen so far in this process (keys, URL credentials) by ``***`` wherever it
  appears, so a library's error message that quotes one is safe to print and to record.

Nothing here imports the rest of the package: every layer may use it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

ENV_KEY = "OPENAI_API_KEY"
NO_KEY = "EMPTY"  # the key a server without authentication accepts
KEY_PLACEHOLDER = f"${ENV_KEY}"
REDACTED = "***"

_UNSET = (None, "", NO_KEY, KEY_PLACEHOLDER)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@?#'\"]+)@")
_KEY_ARGUMENT = re.compile(
    r"(?P<name>(?:^|\s)[+~]{0,2}(?:[\w.]+\.)?api_key=)(?P<value>'[^']*'|\"[^\"]*\"|\S+)"
)
_KEY_FLAG = re.compile(r"(?P<name>--api[-_]key(?:=|\s+))(?P<value>'[^']*'|\"[^\"]*\"|\S+)")
_seen: set[str] = set()


def resolve_api_key(value: object) -> str:
    """The key to send: ``value`` if it is set, else ``$OPENAI_API_KEY``, else ``EMPTY``.

    ``EMPTY`` (the config default) and the placeholder ``$OPENAI_API_KEY`` (from a reproduced
    command whose shell did not expand it) count as unset."""
    text = None if value is None else str(value).strip()
    if text in _UNSET:
        text = os.environ.get(ENV_KEY, "").strip()
    key = text or NO_KEY
    remember(key)
    return key


def remember(secret: str | None, *, minimum: int = 8) -> None:
    """From now on, ``secret`` is replaced by ``***`` in everything redacted in this process.

    A string shorter than ``minimum`` could occur in model output by chance (predictions are read
    back from the records), so it is only redacted where settings are written."""
    if secret and secret not in _UNSET and len(secret) >= minimum:
        _seen.add(secret)


def redact_text(text: str) -> str:
    """``text`` without any remembered secret and without the credentials of any URL in it."""
    text = _replace_seen(text)
    if "@" in text:
        text = _URL_USERINFO.sub(_redact_userinfo, text)
    return text


def _redact_userinfo(match: re.Match[str]) -> str:
    remember(match["userinfo"] + "@", minimum=4)  # "user:pass@" is specific even when short
    return match["scheme"] + REDACTED + "@"


def redact_secrets(value: Any) -> Any:
    """``value`` (JSON-like) with every remembered secret replaced; nothing else is touched.

    For records, whose texts are model output: a URL a model writes stays as it is. Returns
    ``value`` itself when no secret is known (the common case costs nothing)."""
    if not _seen:
        return value
    return _walk(value, _replace_seen)


def redact(value: Any) -> Any:
    """``value`` (JSON-like: a config, a run summary) with every secret replaced.

    A mapping's ``api_key`` that is set becomes the placeholder ``$OPENAI_API_KEY``; every string
    goes through :func:`redact_text`."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if key == "api_key" and item not in _UNSET:
                remember(str(item))
                out[key] = KEY_PLACEHOLDER
            else:
                out[redact(key)] = redact(item)  # keys too: servers are keyed by their URL
        return out
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_command(command: str | Sequence[str]) -> str:
    """A command line (a string or ``sys.argv``) safe to record: ``…api_key=$OPENAI_API_KEY``."""
    text = command if isinstance(command, str) else " ".join(command)
    for pattern in (_KEY_ARGUMENT, _KEY_FLAG):
        text = pattern.sub(lambda m: _key_argument(m), text)
    return redact_text(text)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """An argument list safe to record: ``--api-key $OPENAI_API_KEY``, secrets in values hidden."""
    import shlex

    return shlex.split(redact_command(shlex.join(list(argv))))


_KEY_OVERRIDE = re.compile(r"^[+~]{0,2}(?:[\w.]+\.)?api_key=(?P<value>.*)$", re.S)


def withhold_api_key(overrides: Sequence[str]) -> list[str]:
    """``overrides`` without any ``…api_key=KEY``: the key goes to ``$OPENAI_API_KEY`` of this
    process (and the processes it starts), where the engines read it (`resolve_api_key`).

    For the writers that are not ours: hydra writes its overrides into ``multirun.yaml``,
    ``.hydra/overrides.yaml`` and prints them; papermill writes a notebook's parameters into the
    executed copy. A key they never see is a key they never write. An unset value (``EMPTY``, the
    placeholder) is dropped the same way; the last key given wins, as on hydra's command line."""
    kept = []
    for override in overrides:
        match = _KEY_OVERRIDE.match(str(override))
        if match is None:
            kept.append(override)
            continue
        value = match["value"].strip().strip("'\"")
        if value not in _UNSET:
            remember(value)
            os.environ[ENV_KEY] = value
    return kept


#: The user:password part of a URL in an override's value.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s,'\"]+)@")
USERINFO_ENV = "LONGICL_URL_USERINFO_{}"


def withhold_url_credentials(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with each URL's ``user:password@`` replaced by an OmegaConf interpolation of
    an environment variable of this process (``${oc.env:LONGICL_URL_USERINFO_0}``) holding it.

    hydra writes and prints the overrides as given (``multirun.yaml``, ``.hydra/``, its job
    lines); the job's config resolves the interpolation to the same URL when it is read."""
    names: dict[str, str] = {}

    def swap(match: re.Match[str]) -> str:
        userinfo = match["userinfo"]
        if userinfo not in names:
            names[userinfo] = USERINFO_ENV.format(len(names))
            os.environ[names[userinfo]] = userinfo
            remember(userinfo)
            remember(userinfo.partition(":")[2])
        return f"{match['scheme']}${{oc.env:{names[userinfo]}}}@"

    kept = []
    for override in overrides:
        name, sep, value = str(override).partition("=")
        kept.append(name + sep + _URL_USERINFO.sub(swap, value) if sep else override)
    return kept


def shell_override(override: str) -> str:
    """A hydra override as a shell word; the key's placeholder stays unquoted, for the shell to expand."""
    import shlex

    name, _, value = override.partition("=")
    if name.lstrip("+~").endswith("api_key") and value.strip("'\"") == KEY_PLACEHOLDER:
        return f"{name}={KEY_PLACEHOLDER}"
    return shlex.quote(override)


def _key_argument(match: re.Match[str]) -> str:
    value = match["value"].strip("'\"")
    if value in _UNSET:
        return match[0]
    remember(value)
    return match["name"] + KEY_PLACEHOLDER


def _replace_seen(text: str) -> str:
    for secret in sorted(_seen, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED + "@" if secret.endswith("@") else REDACTED)
    return text


def _walk(value: Any, change: Any) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, Mapping):
        return {_walk(key, change): _walk(item, change) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(item, change) for item in value]
    return value

"""Kept-alive connections end on the client's side first, for both HTTP clients.

A server closes a connection left idle past its own timeout (uvicorn, so vLLM and llama.cpp's
server: 5 s). A request sent on a pooled connection as the server closes it fails, and a Ray row's
requests fail together, which can take a server out. Each engine's client closes an idle
connection after ``keepalive`` (2 s in the YAML) and reuses it before that."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import CONF_DIR
from fake_server import MODEL, FakeServer
from omegaconf import OmegaConf

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def _connections_after_two_requests(send, gap_s: float, keepalive_s: float) -> int:
    """Connections a server with uvicorn's idle timeout (5 s) accepted for two requests ``gap_s``
    apart, sent by a client keeping idle connections ``keepalive_s``."""
    with FakeServer(lambda body: "ok", keepalive_s=5.0) as server:

        async def go() -> None:
            async with send(server.url, keepalive_s) as one:
                await one()
                await asyncio.sleep(gap_s)
                await one()

        asyncio.run(go())
        return server.connections


class _RaySession:
    """engine=ray's HTTP stage: a session per row over the actor's shared pool, used as Ray's
    ``HttpRequestUDF`` uses it (``async with await session.post(...)``)."""

    def __init__(self, url: str, keepalive_s: float) -> None:
        self.url, self.keepalive_s = f"{url}/chat/completions", keepalive_s

    async def __aenter__(self):
        return self.one

    async def one(self) -> None:
        from longicl.engines.ray_stream import EnvelopeSession

        session = EnvelopeSession(timeout_s=10, connect_s=5, keepalive_s=self.keepalive_s)
        try:
            async with await session.post(self.url, data=json.dumps([json.dumps(BODY)])) as envelope:
                [outcome] = json.loads(await envelope.json())
            assert outcome["status"] == 200, outcome
        finally:
            await session.close()

    async def __aexit__(self, *exc: object) -> None:
        from longicl.engines.ray_stream import shared_connector

        await shared_connector(self.keepalive_s).close()


class _OpenAIClient:
    """engine=openai's (and engine=local's) transport: the official client."""

    def __init__(self, url: str, keepalive_s: float) -> None:
        from longicl.engines.openai_compat import OpenAIClientTransport

        self.transport = OpenAIClientTransport("EMPTY", 10, 5, 16, keepalive_s)
        self.client = self.transport.client(url)

    async def __aenter__(self):
        return self.one

    async def one(self) -> None:
        reply = await self.client.chat.completions.create(**BODY)
        assert reply.choices[0].message.content == "ok"

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()


@pytest.mark.parametrize("client", [_RaySession, _OpenAIClient], ids=["ray", "openai"])
def test_an_idle_connection_is_reused_before_keepalive_and_closed_by_the_client_after(client):
    if client is _RaySession:
        pytest.importorskip("aiohttp")
    assert _connections_after_two_requests(client, gap_s=0.05, keepalive_s=0.5) == 1
    assert _connections_after_two_requests(client, gap_s=1.0, keepalive_s=0.5) == 2


@pytest.mark.parametrize(
    ("engine", "key"), [("openai", "keepalive"), ("local", "keepalive"), ("ray", "ray.keepalive")]
)
def test_every_engines_keepalive_is_below_the_servers_idle_timeout(engine, key):
    """uvicorn closes an idle connection after 5 s (vLLM and llama-cpp-python's server run it)."""
    section = OmegaConf.load(CONF_DIR / "engine" / f"{engine}.yaml")
    section = section.get("engine", section)
    assert 0 < OmegaConf.select(section, key) < 5

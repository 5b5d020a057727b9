"""Several OpenAI-compatible servers as one pool: which task goes where, and what happens when one dies.

- Assignment: tasks are spread over the servers by expected work (largest first, each onto the
  server with the least work so far). Every request of a task goes to the task's server, so that
  server's prefix cache holds the task's static block and no other server ever prefills it.
- Health: a connection error or timeout makes the pool probe the server (``probe``, e.g. GET
  /models, coalesced per server). A server whose probe fails, or that fails
  ``max_failures_in_row`` requests in a row with connection errors or timeouts and no answer in
  between, is taken out for the rest of the run. An HTTP answer, even an error status, shows the
  server is alive and resets the count.
- Failover: a task whose server was taken out moves, at its next request, to the healthy server
  with the least work; its other requests follow it there. With no healthy server left,
  `NoServerLeft` stops the run (the runner keeps the finished records).

Each server also has its own concurrency limit (``slots``), so a server that takes over a task
keeps the number of requests in flight it was given.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Probe = Callable[[str], Awaitable[bool]]


class NoServerLeft(RuntimeError):
    """Every server of the pool was taken out; the run cannot go on."""


@dataclass(eq=False)
class Server:
    url: str
    concurrency: int
    up: bool = True
    reason: str | None = None  # why it was taken out
    failures_in_row: int = 0  # connection errors and timeouts since its last answer
    answered: int = 0  # HTTP answers, whatever their status
    failed: int = 0  # connection errors and timeouts
    work: float = 0.0  # expected work of the tasks assigned to it
    tasks: list[str] = field(default_factory=list)
    slots: asyncio.Semaphore = field(init=False)
    _probing: asyncio.Future[bool] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.concurrency)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ServerPool:
    def __init__(
        self,
        urls: list[str],
        *,
        concurrency: int,
        max_failures_in_row: int = 8,
        probe: Probe | None = None,
        say: Callable[[str], None] = _stderr,
    ) -> None:
        self.servers = [Server(url, concurrency) for url in urls]
        self.max_failures_in_row = max_failures_in_row
        self.probe = probe
        self.say = say
        self.home: dict[str, Server] = {}  # task -> the server its requests go to
        self.work: dict[str, float] = {}
        self.moves: list[dict[str, str]] = []

    @property
    def healthy(self) -> list[Server]:
        return [s for s in self.servers if s.up]

    # -- assignment ----------------------------------------------------------------------------
    def assign(self, work: Mapping[str, float]) -> list[list[str]]:
        """Spread tasks over the healthy servers, balancing expected work.

        Returns one list of task names per server (in the order of ``work``): the tasks that
        server runs one after another. Servers without a task get none.
        """
        for name in sorted(work, key=lambda n: -work[n]):  # stable: equal work keeps the order given
            self._place(name, self._least_loaded(), work[name])
        return [[n for n in work if self.home[n] is s] for s in self.servers if s.tasks]

    def route(self, key: str) -> Server:
        """The server for ``key`` (a task): its assigned one, or, if that was taken out, a new one."""
        server = self.home.get(key)
        if server is not None and server.up:
            return server
        target = self._least_loaded()
        if server is not None:
            self.moves.append({"task": key, "from": server.url, "to": target.url})
            self.say(f"warning: {key} moves from {server.url} (taken out) to {target.url}")
        self._place(key, target, self.work.get(key, 0.0))
        return target

    def _least_loaded(self) -> Server:
        healthy = self.healthy
        if not healthy:
            raise NoServerLeft(
                "no server left: " + "; ".join(f"{s.url} {s.reason or 'down'}" for s in self.servers)
            )
        return min(healthy, key=lambda s: (s.work, len(s.tasks)))

    def _place(self, key: str, server: Server, work: float) -> None:
        old = self.home.get(key)
        if old is not None and key in old.tasks:
            old.tasks.remove(key)
            old.work -= self.work.get(key, 0.0)
        self.home[key] = server
        self.work[key] = work
        server.tasks.append(key)
        server.work += work

    # -- health --------------------------------------------------------------------------------
    def answered(self, server: Server) -> None:
        server.answered += 1
        server.failures_in_row = 0

    async def unreachable(self, server: Server, error: str) -> None:
        """Report a connection error or timeout; may take the server out (after a probe)."""
        server.failed += 1
        server.failures_in_row += 1
        if not server.up:
            return
        if server.failures_in_row >= self.max_failures_in_row:
            self.take_out(server, f"failed {server.failures_in_row} requests in a row (last: {error})")
            return
        if self.probe is not None and not await self._probe(server):
            self.take_out(server, f"failed its health check after: {error}")

    async def _probe(self, server: Server) -> bool:
        """One probe at a time per server; requests failing meanwhile share its result."""
        assert self.probe is not None
        if server._probing is None or server._probing.done():
            server._probing = asyncio.ensure_future(self.probe(server.url))
        try:
            return await asyncio.shield(server._probing)
        except Exception:  # noqa: BLE001 - a probe that breaks counts as a failed probe
            return False

    def take_out(self, server: Server, reason: str) -> None:
        if not server.up:
            return
        server.up, server.reason = False, reason
        left = len(self.healthy)
        if left:  # with none left, the run stops with `NoServerLeft`, which says it all
            self.say(f"warning: server {server.url} taken out ({reason}); {left} server(s) left")

    def describe(self) -> dict[str, Any]:
        return {
            "servers": {
                s.url: {
                    "up": s.up,
                    "reason": s.reason,
                    "tasks": list(s.tasks),
                    "answered": s.answered,
                    "connection_failures": s.failed,
                }
                for s in self.servers
            },
            "moves": list(self.moves),
        }

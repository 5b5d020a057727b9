"""The fake server stands in for vLLM's: where its own machinery would differ, the tests would measure it."""

from __future__ import annotations

import selectors
import socket
import time

from fake_server import FakeServer


def test_a_burst_of_connects_completes_while_the_server_has_not_accepted_them_yet(gold_answers):
    """A pool opening 256 connections at once (Ray's actors after an execution restart) must not
    lose connects to the listen backlog: Python's default of 5 dropped them (stalls, then
    ``ECONNRESET`` on the benchmark's pooled connections); uvicorn's is 2048. The server is not
    started, so nothing is accepted: every handshake the kernel completes waits in the backlog."""
    server = FakeServer(gold_answers)  # bound and listening, not serving
    selector = selectors.DefaultSelector()
    clients = []
    try:
        for _ in range(256):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", server.port))
            selector.register(client, selectors.EVENT_WRITE)
            clients.append(client)
        connected, deadline = set(), time.monotonic() + 5
        while len(connected) < len(clients) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.2):
                if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected.add(key.fileobj)
                selector.unregister(key.fileobj)
        assert len(connected) == len(clients)
    finally:
        selector.close()
        for client in clients:
            client.close()
        server.httpd.server_close()

"""A real gateway on loopback for the client tests, with the gateway tests' market.

``served`` starts the gateway app on 127.0.0.1 with port 0 (the seeded market
of tests/gateway/conftest.py: operator ``ops``, providers ``dc1``/``dc2``,
start-ups ``su1``/``su2``, issuer ``city``; ``su1`` holds voucher 1) and stops
it at the end of the test. ``sdk(account)`` opens an SDK client for an account.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from clients.sdk import Backoff, Client
from gateway.app import create_app
from tests.gateway.conftest import key, make_config, seed_market


class Served:
    """A running gateway, and SDK clients that are closed at the end."""

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.clients: list[Client] = []

    @property
    def app(self) -> web.Application:
        return self.server.app  # type: ignore[return-value]

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def sdk(self, account: str | None, *, url: str = "", **options: Any) -> Client:
        """An SDK client connected as ``account`` (None: anonymous), to ``url`` or the gateway."""
        options.setdefault("backoff", Backoff(initial=0.02, maximum=0.2, attempts=50))
        options.setdefault("seed", 7)
        options.setdefault("name", account or "anonymous")
        client = Client(url or self.url, key(account) if account else "", **options)
        await client.connect()
        self.clients.append(client)
        return client


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    app = create_app(make_config(), seed=seed_market)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    running = Served(server)
    try:
        yield running
    finally:
        for client in running.clients:
            await client.close()
        await server.close()

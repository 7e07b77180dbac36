"""A real gateway with the seeded demo market, on loopback, in a background thread.

``LiveGateway`` starts the aiohttp app from ``gateway.app.create_app`` on
``127.0.0.1`` port 0 (the system picks a free port) in a thread with its own
event loop, seeded with ``gateway.demo.demo_commands`` and the demo API keys.
``stop()`` (or leaving the ``with`` block) shuts it down the way the gateway
always stops: every WebSocket is closed, the service drains, the loop ends.

``run(coro)`` runs a coroutine on the gateway's loop and returns its result,
so a test can read the exchange's state between batches, or act as a client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Coroutine
from typing import Any

import aiohttp
from aiohttp import web

from gateway import app as gw
from gateway import demo
from gateway.config import BootstrapKey, GatewayConfig

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
CLIENT_TIMEOUT = 5.0


def demo_config() -> GatewayConfig:
    keys = [BootstrapKey(account_id=a, key=demo.demo_key(a)) for a in demo.demo_accounts()]
    # demo_flow=0: no demo traders, so what each test sees is what the seed made
    return GatewayConfig(
        host="127.0.0.1", port=0, api_keys=keys, demo=True, demo_flow=0, log_json=True
    )


class LiveGateway:
    """The demo gateway on a loopback port; ``url`` is its base URL once started."""

    def __init__(self, config: GatewayConfig | None = None) -> None:
        self.config = config or demo_config()
        self.url = ""
        self.app: web.Application | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="live-gateway", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self._ids = itertools.count(1)

    def __enter__(self) -> LiveGateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        self.run(self._start(), timeout=START_TIMEOUT)

    async def _start(self) -> None:
        self.app = gw.create_app(self.config, seed=demo.demo_commands)
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            if self._runner is not None:
                self.run(self._runner.cleanup(), timeout=STOP_TIMEOUT)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = CLIENT_TIMEOUT) -> Any:
        """Run ``coro`` on the gateway's loop; its result, or its exception."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # --- what the server holds ----------------------------------------------------

    def book(self, instrument_id: str) -> tuple[list[list[int]], list[list[int]]]:
        """The published book (bids, asks), best first, as the gateway holds it now."""

        async def read() -> tuple[list[list[int]], list[list[int]]]:
            assert self.app is not None
            snap = self.app[gw.ROUTER].marketdata.snapshot(instrument_id)
            return [list(x) for x in snap.bids], [list(x) for x in snap.asks]

        return self.run(read())

    def status(self, instrument_id: str) -> str:
        async def read() -> str:
            assert self.app is not None
            return str(self.app[gw.SERVICE].core.instruments[instrument_id].status)

        return self.run(read())

    def instruments(self) -> list[str]:
        async def read() -> list[str]:
            assert self.app is not None
            return sorted(self.app[gw.SERVICE].core.instruments)

        return self.run(read())

    def trades(self, instrument_id: str, limit: int) -> list[dict[str, int]]:
        """The newest ``limit`` trades of the instrument, newest first, as the server has them."""

        async def read() -> list[dict[str, int]]:
            assert self.app is not None
            md = self.app[gw.ROUTER].marketdata
            return [
                {"trade_id": t.trade_id, "price": t.price, "qty": t.qty}
                for t in md.trades(instrument_id, limit)
            ]

        return self.run(read())

    def open_interest(self, instrument_id: str) -> int:
        async def read() -> int:
            assert self.app is not None
            core = self.app[gw.SERVICE].core
            return self.app[gw.ROUTER].marketdata.open_interest(instrument_id, core.now)

        return self.run(read())

    # --- a test client ------------------------------------------------------------

    def request(self, account_id: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Send one request as ``account_id`` over a fresh WebSocket; the messages answering it.

        Waits for the first answer carrying the request's id, then for the
        execution reports that follow within a short quiet period (fills).
        """
        return self.run(self._request(account_id, message), timeout=CLIENT_TIMEOUT + 2)

    async def _request(self, account_id: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        request_id = f"test-{next(self._ids)}"
        answers: list[dict[str, Any]] = []
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{self.url}/ws", timeout=aiohttp.ClientWSTimeout(ws_close=2.0)) as ws,
        ):
            await ws.send_str(
                json.dumps({"type": "auth", "key": demo.demo_key(account_id), "id": "a"})
            )
            await ws.send_str(json.dumps({**message, "id": request_id}))
            async with asyncio.timeout(CLIENT_TIMEOUT):
                while not answers:
                    msg = json.loads((await ws.receive()).data)
                    if msg.get("id") == request_id:
                        answers.append(msg)
            # Fills of the same order follow its acknowledgement at once.
            while True:
                try:
                    async with asyncio.timeout(0.3):
                        frame = await ws.receive()
                except TimeoutError:
                    break
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    break
                msg = json.loads(frame.data)
                if msg.get("id") == request_id:
                    answers.append(msg)
        return answers

    def drop_connections(self) -> None:
        """Close every WebSocket from the server side, as a restart or a network cut would."""

        async def drop() -> None:
            assert self.app is not None
            self.app[gw.ROUTER].close_all(1001, "test: connection dropped")

        self.run(drop())

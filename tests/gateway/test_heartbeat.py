"""Heartbeats: the gateway's own task sends a ``heartbeat`` message and a WebSocket
ping; only messages from the client keep a connection open.

The clients here connect with ``autoping=False`` so that they see the server's
PING frames (and answer them only when a test says so).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
import msgspec
from aiohttp import WSMsgType

from gateway import protocol as p
from tests.gateway.conftest import H100, WAIT, Gateway, GatewayFactory, Traders

_ENDS = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


class Watcher:
    """A raw connection that records every frame: decoded messages, and ``"PING"``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, *, answer_pings: bool) -> None:
        self.ws = ws
        self.answer_pings = answer_pings
        self.frames: list[Any] = []
        self.pings = 0
        self.pongs_sent = 0

    @classmethod
    async def connect(cls, gateway: Gateway, *, answer_pings: bool = False) -> Watcher:
        ws = await gateway.http.ws_connect(gateway.url("/ws"), autoping=False)
        return cls(ws, answer_pings=answer_pings)

    async def next(self) -> WSMsgType:
        """Read one frame and record it; its type."""
        msg = await self.ws.receive(timeout=WAIT)
        if msg.type is WSMsgType.PING:
            assert msg.data == b"", msg  # the server's pings carry no payload
            self.pings += 1
            self.frames.append("PING")
            if self.answer_pings:
                await self.ws.pong(msg.data)
                self.pongs_sent += 1
        elif msg.type is WSMsgType.TEXT:
            self.frames.append(p.decode_message(msg.data))  # fails on a malformed frame
        else:
            assert msg.type in _ENDS, msg
        return msg.type

    async def read_until(self, pings: int) -> None:
        """Read until ``pings`` pings have arrived (fails if the connection ends first)."""
        while self.pings < pings:
            kind = await self.next()
            assert kind not in _ENDS, (kind, self.ws.close_code, self.frames[-5:])

    async def closed(self) -> int | None:
        """Read until the server closes; the close code (fails after ``WAIT`` seconds)."""
        async with asyncio.timeout(WAIT):  # pings keep coming: receive alone never times out
            while await self.next() not in _ENDS:
                pass
        return self.ws.close_code

    def pings_follow_heartbeats(self) -> bool:
        """Every ping came right after a ``heartbeat``: in queue order, not ahead of it."""
        frames = self.frames
        return all(
            i > 0 and isinstance(frames[i - 1], p.Heartbeat)
            for i, frame in enumerate(frames)
            if frame == "PING"
        )


async def test_the_server_sends_a_websocket_ping_and_a_heartbeat_each_beat(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(heartbeat_interval=0.05, idle_timeout=30)
    watcher = await Watcher.connect(gateway)
    await watcher.read_until(pings=3)
    assert isinstance(watcher.frames[0], p.Welcome)
    assert sum(isinstance(f, p.Heartbeat) for f in watcher.frames) >= 3
    assert watcher.pings_follow_heartbeats(), watcher.frames


async def test_frames_around_pings_stay_whole_while_orders_and_market_data_flow(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(
        heartbeat_interval=0.01, idle_timeout=WAIT, rate_limit=1e9, rate_burst=10**9
    )
    traders = await Traders.connect(gateway)  # autoping clients: a bad frame ends them
    watcher = await Watcher.connect(gateway)
    for request_id, channel in ((1, "book"), (2, "trades")):
        await watcher.ws.send_json(
            {"type": "subscribe", "id": request_id, "channel": channel, "instrument_id": H100}
        )
    reading = asyncio.create_task(watcher.read_until(pings=20))
    trades = 0
    while not reading.done() and trades < 2_000:
        await traders.trade(H100, 1_000 + 10 * (trades % 20), 8, "BUY" if trades % 2 else "SELL")
        trades += 1
    await asyncio.wait_for(reading, WAIT)
    # After the last ping, the stream goes on: a request is still answered in order.
    await watcher.ws.send_str('{"type": "ping", "id": 3}')
    async with asyncio.timeout(WAIT):
        while not (isinstance(watcher.frames[-1], p.Pong) and watcher.frames[-1].id == 3):
            assert await watcher.next() not in _ENDS
    frames = watcher.frames
    updates = [f for f in frames if isinstance(f, (p.BookSnapshot, p.BookUpdate))]
    assert isinstance(updates[0], p.BookSnapshot) and len(updates) > 1
    for before, update in itertools.pairwise(updates):
        if isinstance(update, p.BookUpdate):  # each follows the one before: none lost or torn
            assert update.seq == before.seq + 1, (before, update)
    assert watcher.pings >= 20 and any(isinstance(f, p.PublicTrade) for f in frames)
    # Pings came while market data was flowing, not only before or after it.
    first, last = frames.index(updates[1]), frames.index(updates[-1])
    assert "PING" in frames[first:last]
    assert watcher.pings_follow_heartbeats()


async def test_a_client_that_sends_nothing_is_closed_with_4001_after_pings(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(heartbeat_interval=0.05, idle_timeout=0.3)
    watcher = await Watcher.connect(gateway)  # reads, never answers a ping
    assert await watcher.closed() == p.CloseCode.IDLE_TIMEOUT
    assert watcher.pings >= 1


async def test_pongs_do_not_keep_a_connection_open_but_messages_do(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(heartbeat_interval=0.05, idle_timeout=0.5)
    ponging = await Watcher.connect(gateway, answer_pings=True)
    talking = await Watcher.connect(gateway, answer_pings=True)

    async def keep_talking() -> None:
        n = 0
        while not talking.ws.closed:
            n += 1
            await talking.ws.send_str(f'{{"type": "ping", "id": {n}}}')
            await asyncio.sleep(0.05)

    talker = asyncio.create_task(keep_talking())
    try:
        assert await ponging.closed() == p.CloseCode.IDLE_TIMEOUT
        assert ponging.pongs_sent >= 1  # it did answer, and was closed all the same
        # The other connection, which sent messages all along, outlived the idle timeout.
        await talking.read_until(pings=15)  # 15 beats of 0.05 s: longer than idle_timeout
        assert not talking.ws.closed
        assert any(isinstance(f, p.Pong) for f in talking.frames)
    finally:
        talker.cancel()


async def test_the_welcome_states_the_session_rules_in_integers(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(
        heartbeat_interval=0.05, idle_timeout=0.3, rate_limit=2.5, rate_burst=3
    )
    async with gateway.http.ws_connect(gateway.url("/ws")) as ws:
        raw = await asyncio.wait_for(ws.receive_str(), WAIT)
    welcome = msgspec.json.decode(raw)
    assert welcome["type"] == "welcome"
    rules = {k: welcome[k] for k in ("heartbeat_interval_ms", "idle_timeout_ms")}
    assert rules == {"heartbeat_interval_ms": 50, "idle_timeout_ms": 300}
    assert (welcome["rate_limit_per_minute"], welcome["rate_burst"]) == (150, 3)
    numbers = [v for v in welcome.values() if isinstance(v, int | float)]
    assert numbers and all(type(v) is int for v in numbers), welcome  # no float on the wire

"""Public market data over real sockets: book snapshot + updates with checksums,
trades, tickers, instrument status, and a slow consumer."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
import struct
import zlib
from typing import Any

import msgspec

from gateway import protocol as p
from gateway.app import ROUTER, SERVICE
from tests.gateway.conftest import (
    ASCEND,
    H100,
    Client,
    Gateway,
    GatewayFactory,
    Traders,
    trade_until,
)

SEED = 4242


def checksum(bids: dict[int, int], asks: dict[int, int], depth: int = 10) -> int:
    """The checksum as docs/protocol.md defines it, written out independently."""
    best_bids = sorted(bids.items(), reverse=True)[:depth]
    best_asks = sorted(asks.items())[:depth]
    text = (
        ",".join(f"{a}:{b}" for a, b in best_bids)
        + "|"
        + ",".join(f"{a}:{b}" for a, b in best_asks)
    )
    return zlib.crc32(text.encode("ascii"))


class BookCopy:
    """A client's copy of one book, rebuilt from a snapshot and updates."""

    def __init__(self) -> None:
        self.seq = -1
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.snapshots = 0

    def apply(self, message: Any) -> None:
        if isinstance(message, p.BookSnapshot):
            self.bids = dict(message.bids)
            self.asks = dict(message.asks)
            self.snapshots += 1
        elif isinstance(message, p.BookUpdate):
            assert message.seq == self.seq + 1, f"gap: {self.seq} -> {message.seq}"
            for side, levels in ((self.bids, message.bids), (self.asks, message.asks)):
                for price, qty in levels:
                    if qty:
                        side[price] = qty
                    else:
                        del side[price]
        else:
            return
        self.seq = message.seq
        assert checksum(self.bids, self.asks) == message.checksum, f"checksum at seq {self.seq}"


async def random_orders(clients: dict[str, Client], rng: random.Random, n: int) -> None:
    """``n`` seeded orders and cancels from start-ups and providers on H100."""
    open_ids: dict[str, list[int]] = {name: [] for name in clients}
    for i in range(n):
        name = rng.choice(sorted(clients))
        client = clients[name]
        if open_ids[name] and rng.random() < 0.25:
            order_id = open_ids[name].pop(rng.randrange(len(open_ids[name])))
            rid = await client.send("cancel_order", order_id=order_id)
            await client.expect((p.ExecutionReport, p.CancelReject), id=rid)  # type: ignore[arg-type]
            continue
        buying = name.startswith("su")
        price = 1000 + 10 * rng.randint(-15, 15) + (-60 if buying else 60)
        rid = await client.send(
            "new_order",
            client_order_id=f"r{i}",
            instrument_id=H100,
            side="BUY" if buying else "SELL",
            qty=8 * rng.randint(1, 6),
            price=price,
        )
        report = await client.expect(p.ExecutionReport, id=rid)
        if report.exec_type is p.ExecType.NEW:
            open_ids[name].append(report.order_id)


async def test_book_rebuilt_from_snapshot_and_updates_matches_checksum(gateway: Gateway) -> None:
    print(f"seed={SEED}")
    rng = random.Random(SEED)
    traders = {name: await gateway.connect(name) for name in ("su1", "su2", "dc1", "dc2")}
    await random_orders(traders, rng, 40)  # the book is not empty when the watcher joins
    watcher = await gateway.connect()  # anonymous: public data only
    await watcher.send("subscribe", channel="book", instrument_id=H100)
    await watcher.expect(p.Subscribed, channel=p.Channel.BOOK)
    book = BookCopy()
    book.apply(await watcher.expect(p.BookSnapshot))
    assert book.bids or book.asks
    await random_orders(traders, rng, 200)

    status, published = await gateway.get(f"/api/v1/book/{H100}")
    assert status == 200
    while book.seq < published["seq"]:
        book.apply(await watcher.expect((p.BookSnapshot, p.BookUpdate)))  # type: ignore[arg-type]
    assert book.seq == published["seq"]
    assert sorted(book.bids.items(), reverse=True) == [tuple(x) for x in published["bids"]]
    assert sorted(book.asks.items()) == [tuple(x) for x in published["asks"]]
    core_book = gateway.app[SERVICE].core.books[H100]
    assert sorted(book.bids.items(), reverse=True) == core_book.depth(p.Side.BUY, 20)
    assert sorted(book.asks.items()) == core_book.depth(p.Side.SELL, 20)
    assert book.snapshots == 1


async def test_trades_ticker_and_status(gateway: Gateway) -> None:
    watcher = await gateway.connect()
    for channel in ("trades", "ticker"):
        await watcher.send("subscribe", channel=channel, instrument_id=H100)
    await watcher.send("subscribe", channel="status")
    first = await watcher.expect(p.Ticker)
    assert first.volume_24h == 0 and first.status == "OPEN"
    infos = [m for m in watcher.seen if isinstance(m, p.InstrumentInfo)]
    infos += [await watcher.expect(p.InstrumentInfo) for _ in range(2 - len(infos))]
    assert {i.spec.instrument_id for i in infos} >= {H100}

    dc1 = await gateway.connect("dc1")
    su1 = await gateway.connect("su1")
    rid = await dc1.send(
        "new_order", client_order_id="s", instrument_id=H100, side="SELL", qty=16, price=2000
    )
    await dc1.expect(p.ExecutionReport, id=rid)
    rid = await su1.send(
        "new_order", client_order_id="b", instrument_id=H100, side="BUY", qty=8, price=2000
    )
    await su1.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.FILL)
    trade = await watcher.expect(p.PublicTrade)
    assert (trade.price, trade.qty, trade.aggressor) == (2000, 8, "BUY")
    ticker = await watcher.expect(p.Ticker, volume_24h=8)
    assert (ticker.last_price, ticker.vwap_24h, ticker.best_ask, ticker.best_ask_qty) == (
        2000,
        2000,
        2000,
        8,
    )
    assert not any("su1" in repr(m) or "dc1" in repr(m) for m in watcher.seen)

    ops = await gateway.connect("ops")
    rid = await ops.send("set_instrument_status", instrument_id=H100, status="HALTED")
    ack = await ops.expect(p.Ack, id=rid)
    assert ack.result == {"instrument_id": H100, "status": "HALTED"}
    change = await watcher.expect(p.InstrumentStatusChange, instrument_id=H100)
    assert (change.status, change.previous) == ("HALTED", "OPEN")
    rid = await su1.send(
        "new_order", client_order_id="late", instrument_id=H100, side="BUY", qty=8, price=2000
    )
    refused = await su1.expect(p.ExecutionReport, id=rid)
    assert refused.exec_type is p.ExecType.REJECTED and refused.reason == "MARKET_HALTED"
    await ops.send("set_instrument_status", instrument_id=H100, status="OPEN")
    await watcher.expect(p.InstrumentStatusChange, instrument_id=H100, status="OPEN")
    rid = await ops.send("set_instrument_status", instrument_id=H100, status="CLOSED")
    await ops.expect(p.Ack, id=rid)
    await watcher.expect(p.InstrumentStatusChange, instrument_id=H100, status="CLOSED")
    closed = await dc1.expect(
        p.ExecutionReport, client_order_id="s", exec_type=p.ExecType.CANCELLED
    )
    assert closed.reason == "MARKET_CLOSED" and closed.cum_qty == 8


async def test_ticker_carries_open_interest_until_delivery_ends(gateway: Gateway) -> None:
    watcher = await gateway.connect()
    for instrument_id in (H100, ASCEND):
        await watcher.send("subscribe", channel="ticker", instrument_id=instrument_id)
    first = await watcher.expect(p.Ticker, instrument_id=H100)
    assert first.open_interest == 0
    traders = await Traders.connect(gateway)
    await traders.trade(H100, 1500, 8, "BUY")
    await traders.trade(H100, 1500, 16, "SELL")
    ticker = await watcher.expect(p.Ticker, instrument_id=H100, open_interest=24)
    assert ticker.volume_24h == 24
    # The same figure as the operators' open-interest report: one definition.
    status, rows = await gateway.get("/api/v1/reports/open-interest", "ops")
    assert status == 200
    by_id = {r["instrument_id"]: r for r in rows}
    assert by_id[H100]["open_interest_gpu_hours"] == 24
    assert by_id[H100]["contracted_gpu_hours"] == 24
    assert by_id[ASCEND]["open_interest_gpu_hours"] == 0
    assert [
        m.open_interest
        for m in watcher.seen
        if isinstance(m, p.Ticker) and m.instrument_id == ASCEND
    ] == [0]

    # Time passes the end of the delivery window: delivered, so no longer open.
    service = gateway.app[SERVICE]
    spec = service.core.instruments[H100].spec
    service.clock = lambda: spec.delivery_end + 1
    ops = await gateway.connect("ops")
    rid = await ops.send("deposit", account_id="su2", amount=1)  # any command moves the clock
    await ops.expect(p.Ack, id=rid)
    closed = await watcher.expect(p.Ticker, instrument_id=H100, status="CLOSED")
    assert closed.open_interest == 0 and closed.ts > spec.delivery_end
    status, rows = await gateway.get("/api/v1/reports/open-interest", "ops")
    h100 = next(r for r in rows if r["instrument_id"] == H100)
    assert (h100["delivered"], h100["contracted_gpu_hours"], h100["open_interest_gpu_hours"]) == (
        True,
        24,
        0,
    )


class RawWebSocket:
    """A WebSocket client on a bare socket that reads only when told to.

    aiohttp's client reads the socket as fast as data comes, so it can never be
    a slow consumer; this one leaves the bytes in the kernel, with a small
    receive buffer, until ``read_all``.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> RawWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send(self, message: dict[str, Any]) -> None:
        payload = msgspec.json.encode(message)
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    async def read_all(self) -> tuple[list[Any], int, str]:
        """Every message until the server's close frame; (messages, code, reason)."""
        messages: list[Any] = []
        while True:
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(length)
            opcode = first & 0x0F
            if opcode == 0x1:
                messages.append(p.decode_message(payload))
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0]
                self.writer.close()
                return messages, code, payload[2:].decode()


async def test_slow_consumer_gets_conflated_book_then_is_disconnected(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(
        outbox_soft=4, outbox_hard=48, socket_send_buffer=4096, rate_limit=1e6, rate_burst=10**6
    )
    router = gateway.app[ROUTER]
    before = set(router.sessions)
    slow = await RawWebSocket.connect(gateway.server.host, gateway.server.port or 0)
    slow.send({"type": "subscribe", "channel": "book", "instrument_id": H100})
    slow.send({"type": "subscribe", "channel": "trades", "instrument_id": H100})
    dc1 = await gateway.connect("dc1")
    su1 = await gateway.connect("su1")
    slow_id = min(set(router.sessions) - before)  # connection ids grow; slow came first
    # Trade until the server gives up on the reader that never reads.
    await trade_until(dc1, su1, until=lambda: slow_id not in router.sessions)
    messages, code, reason = await slow.read_all()
    book = BookCopy()
    for message in messages:
        book.apply(message)  # every update follows its snapshot; every checksum holds
    assert code == p.CloseCode.SLOW_CONSUMER
    assert "slow consumer" in reason
    assert book.snapshots >= 2  # conflated: fresh snapshots replaced the backlog
    trades = [m for m in messages if isinstance(m, p.PublicTrade)]
    assert trades == sorted(trades, key=lambda t: t.trade_id)  # none reordered

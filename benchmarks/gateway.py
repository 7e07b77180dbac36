"""The WebSocket gateway under load, over loopback, server and clients in separate processes.

What it measures
----------------
(a) **Order entry.** The gateway runs in its own process (in-memory exchange,
    no journal, so the gateway is what is measured). Two client processes
    hold eight authenticated order-entry connections (each leaves the
    ``private`` channel, so it gets its execution reports only), four
    start-ups buying and four providers selling one instrument at one
    price, so most orders trade at once. First at peak: each connection
    keeps ``--window`` orders in flight and sends a new one whenever one is
    acknowledged, for ``--seconds``; ``orders_per_sec`` is acknowledgements
    per second (the median of ``--rounds`` runs). A client sends the orders
    that one read's answers call for in one write, as a client at this rate
    would. Then, on a fresh gateway, paced at half of ``orders_per_sec``
    (every 2 ms each client process writes the orders then due, one write a
    connection): ``ack_p50_ms`` and ``ack_p99_ms`` are the times from sending
    ``new_order`` to receiving its first execution report (``NEW``), at half
    the peak rate; ``peak_ack_p99_ms`` is the same at peak (all rounds),
    where it is mostly queueing. Every order has a fresh client order id; if
    any is rejected the script prints no figures and exits 1.
(b) **Echo baseline.** A bare aiohttp WebSocket server that sends every text
    frame straight back, in its own process, driven by the same clients with
    the same frames and window. ``echo_ratio`` = our orders per second / echo
    messages per second: the share of a do-nothing aiohttp server's message
    rate that the gateway keeps while decoding, checking, matching and
    reporting. Both servers run side by side; each round times the gateway
    and the echo server one after the other (alternating which goes first),
    so a round's ratio compares two rates measured seconds apart; the machine's
    load moves more than that between minutes. ``echo_ratio`` is the median
    of the rounds' ratios, ``echo_ratio_runs`` lists them.
(c) **Fan-out.** A fresh gateway; two client processes open ``--subscribers``
    anonymous connections that subscribe to the instrument's book and
    trades; then one buyer and one seller trade at ``--fanout-rate`` trades a
    second. For each trade, the latency to a subscriber is its receive time
    minus the trade's exchange timestamp (same machine, same clock);
    ``fanout_p99_ms`` is the 99th percentile over trades of the latency to
    the *last* subscriber that got it.

The workload is seeded (``SEED``); each phase warms up for one second before
it is timed. Server and clients share the machine's cores, so the figures are
a floor. The order-entry client processes run at a lower priority (nice
``CLIENT_NICE``), for both servers: on two cores they would otherwise take
turns with the server under test, and its latency would be the scheduler's
time slices; with it, the server runs whenever it has work, as it would with
its clients on other machines, and the clients get the rest. Runs in about
a minute and a half and ends with one JSON line; ``--quick`` (2-second
phases, one round, 500 subscribers) in about 20 seconds.

    python -m benchmarks.gateway [--seconds 6] [--rounds 3] [--subscribers 2000] [--quick]

``--in-process BATCHES`` measures nothing itself: it feeds the same order
frames straight into ``Dispatcher.receive`` for the eight accounts (sessions
whose transports only count bytes; 16 orders per session per batch, then the
loop turns until the exchange has applied them and the router has written
the answers) and exits. Run under ``valgrind --tool=cachegrind`` with
``BATCHES`` and with 0, the difference of the two instruction counts over
``BATCHES * 128`` is the gateway's instructions per order in process, a
figure that does not move with the machine's load (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from exchange import commands as c
from exchange.reference import InstrumentSpec, InstrumentStatus, Role, Tier

SEED = 8_080
INSTRUMENT = "H800-BENCH-STATE-W1"
HOUR = 3_600 * 10**9
BUYERS = [f"bench-su{i}" for i in range(4)]
SELLERS = [f"bench-dc{i}" for i in range(4)]
PRICE = 1_000
# The order-entry clients yield the CPU to the server they measure (see the module doc).
CLIENT_NICE = 10


def _use_fast_loop() -> str:
    """Use uvloop when it is installed (``pip install uvloop``); the loop's name."""
    if os.environ.get("SUANLI_BENCH_LOOP", "auto") == "asyncio":
        return "asyncio"
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def bench_key(account: str) -> str:
    return f"sk_{account}_bench-secret-{account}"


def bench_market(now: int) -> list[c.Command]:
    """Four start-ups with ample cash, four providers with ample capacity, one instrument."""
    S = c.SYSTEM
    out: list[c.Command] = [c.AdmitAccount(actor=S, account_id="ops", role=Role.OPERATOR)]
    out.append(
        c.ListInstrument(
            actor=S,
            spec=InstrumentSpec(
                instrument_id=INSTRUMENT,
                gpu_model="H800",
                domestic=False,
                hub="suzhou",
                tier=Tier.STATE,
                delivery_start=now + 240 * HOUR,
                delivery_end=now + 408 * HOUR,
                tick=5,
                lot=1,
            ),
        )
    )
    for buyer in BUYERS:
        out.append(c.AdmitAccount(actor=S, account_id=buyer, role=Role.STARTUP))
        out.append(c.Deposit(actor=S, account_id=buyer, amount=10**14))
    for seller in SELLERS:
        out.append(
            c.AdmitAccount(
                actor=S, account_id=seller, role=Role.PROVIDER, tier=Tier.STATE, hub="suzhou"
            )
        )
        out.append(
            c.RegisterCapacity(actor=S, provider=seller, instrument_id=INSTRUMENT, gpu_hours=10**11)
        )
    out.append(
        c.SetInstrumentStatus(actor=S, instrument_id=INSTRUMENT, status=InstrumentStatus.OPEN)
    )
    return out


# --- servers (each in its own process) ---------------------------------------------


def _serve_gateway(port_out: Connection) -> None:
    from gateway.app import create_app
    from gateway.config import BootstrapKey, GatewayConfig
    from gateway.session import SessionLimits

    config = GatewayConfig(
        port=0,
        api_keys=[BootstrapKey(account_id=a, key=bench_key(a)) for a in (*BUYERS, *SELLERS)],
        session=SessionLimits(
            rate_limit=1e9, rate_burst=10**9, idle_timeout=3_600, heartbeat_interval=60
        ),
        max_connections=100_000,
        # Checked on every order all the same; the stream's accounts rest more than this.
        max_open_orders_per_account=10**9,
    )
    _run(create_app(config, seed=bench_market), port_out)


def _serve_echo(port_out: Connection) -> None:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        await ws.send_str('{"type":"welcome"}')  # the drivers wait for a first message
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    _run(app, port_out)


def _run(app: web.Application, port_out: Connection) -> None:
    _use_fast_loop()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = runner.addresses[0][1]
        port_out.send(port)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(main())


def _start(target: Any) -> tuple[mp.Process, int]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(child,), daemon=True)
    process.start()
    port = parent.recv()
    return process, port


def _stop(process: mp.Process) -> None:
    process.terminate()
    process.join(10)


# --- order entry clients --------------------------------------------------------------


PONG = bytes((0x8A, 0x80)) + b"\x00\x00\x00\x00"  # a masked, empty pong frame


def take_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Cut every whole unmasked server frame off the front of ``buffer``.

    Returns (opcode, payload) pairs; a partial frame stays in the buffer.
    """
    frames: list[tuple[int, bytes]] = []
    pos = 0
    size = len(buffer)
    while size - pos >= 2:
        opcode = buffer[pos] & 0x0F
        length = buffer[pos + 1] & 0x7F
        head = 2
        if length == 126:
            if size - pos < 4:
                break
            length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
            head = 4
        elif length == 127:
            if size - pos < 10:
                break
            length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
            head = 10
        if size - pos < head + length:
            break
        frames.append((opcode, bytes(buffer[pos + head : pos + head + length])))
        pos += head + length
    del buffer[:pos]
    return frames


class _Answer(msgspec.Struct, gc=False):
    """The fields of any server message the drivers look at."""

    type: str
    id: int | None = None
    ts: int = 0
    trade_id: int = 0
    exec_type: str = ""


_answer = msgspec.json.Decoder(_Answer)


def _order_frame(account: str, n: int, request_id: int) -> str:
    side = "BUY" if account in BUYERS else "SELL"
    return (
        f'{{"type":"new_order","id":{request_id},"client_order_id":"{account}-{n}",'
        f'"instrument_id":"{INSTRUMENT}","side":"{side}","qty":1,"price":{PRICE}}}'
    )


class _Frames:
    """Client side of the WebSocket framing on a bare socket (RFC 6455).

    The drivers use it instead of an aiohttp client: on two cores the clients
    share the machine with the server, and a client that costs less leaves
    more for the server being measured. Echo server and gateway are driven by
    the same code.
    """

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers
        self.buffer = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.corked: list[bytes] | None = None  # frames held back by ``cork``

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        self.transport.write(  # type: ignore[union-attr]
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
            ).encode()
        )

    def send(self, message: bytes) -> None:
        """One masked text frame (a zero mask leaves the payload as it is)."""
        n = len(message)
        head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0xFE)) + n.to_bytes(2, "big")
        frame = head + b"\x00\x00\x00\x00" + message
        if self.corked is not None:
            self.corked.append(frame)
            return
        assert self.transport is not None
        self.transport.write(frame)

    def cork(self) -> None:
        """Hold frames from now on; ``uncork`` writes them all at once."""
        self.corked = []

    def uncork(self) -> None:
        frames, self.corked = self.corked, None
        if frames:
            assert self.transport is not None
            self.transport.write(b"".join(frames))

    def on_text(self, payload: bytes) -> None:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            assert buffer.startswith(b"HTTP/1.1 101"), bytes(buffer[:80])
            del buffer[: end + 4]
            self.upgraded = True
            self.opened.set_result(None)
        # What the answers in this read make the client send (at peak, an order for
        # each) goes out in one write, as a client would batch it: a write a frame
        # costs the client a system call each, on the cores the server is using.
        held = self.corked is None
        if held:
            self.cork()
        for opcode, payload in take_frames(buffer):
            if opcode == 0x1:
                self.on_text(payload)
            elif opcode == 0x9 and self.transport is not None:  # ping: answer with a pong
                self.transport.write(PONG)
        if held:
            self.uncork()

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


class _OrderEntry(_Frames):
    """One order-entry connection: sends orders, times each first answer with its id."""

    def __init__(self, port: int, account: str, authenticate: bool) -> None:
        headers = {"Authorization": f"Bearer {bench_key(account)}"} if authenticate else {}
        super().__init__(port, headers)
        self.account = account
        self.sent: dict[int, int] = {}  # request id -> send time, ns
        self.latencies: list[int] = []
        self.window = 0  # >0: send the next order whenever one is answered
        self.n = 0
        self.sending = False
        self.rejected = 0  # first answers that were REJECTED reports

    def order(self) -> None:
        self.n += 1
        self.sent[self.n] = time.perf_counter_ns()
        self.send(_order_frame(self.account, self.n, self.n).encode())

    def on_text(self, payload: bytes) -> None:
        answer = _answer.decode(payload)
        if answer.id is None:
            return
        started = self.sent.pop(answer.id, None)
        if started is not None:
            self.latencies.append(time.perf_counter_ns() - started)
            if answer.exec_type == "REJECTED":
                self.rejected += 1
            if self.window and self.sending:
                self.order()


async def _drive(
    conns: Sequence[_OrderEntry], *, window: int, rate: float, seconds: float, prefix: int
) -> list[int]:
    """Send orders on ``conns`` for ``seconds``, each window-limited or paced at ``rate``;
    every ack latency.

    Paced, one timer drives the process's connections: every 2 ms each writes the
    orders then due in one write. (A timer a connection cost the clients a wake-up
    each, on the cores the server is using.)
    """
    for conn in conns:
        conn.latencies = []
        conn.n = prefix
        conn.sending = True
        conn.window = 0 if rate else window
    end = time.perf_counter() + seconds
    if rate:
        interval = 0.002
        budget = 0.0
        next_tick = time.perf_counter()
        while time.perf_counter() < end:
            budget += rate * interval
            due = int(budget)
            budget -= due
            if due:
                for conn in conns:
                    conn.cork()
                    for _ in range(due):
                        conn.order()
                    conn.uncork()
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
    else:
        for conn in conns:
            for _ in range(window):
                conn.order()
        await asyncio.sleep(seconds)
    for conn in conns:
        conn.sending = False
    deadline = time.perf_counter() + 10
    while any(conn.sent for conn in conns) and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    for conn in conns:
        conn.sent.clear()
    return [x for conn in conns for x in conn.latencies]


def _client_process(
    port: int,
    accounts: Sequence[str],
    authenticate: bool,
    phases: Sequence[tuple[float, float, int]],
    first_phase: int,
    out: Connection,
    start: Any,
) -> None:
    """Run the phases (rate, seconds, window) on one connection per account; send results.

    Phase ``i`` numbers its orders from ``(first_phase + i + 1) * 10_000_000``, so
    every order a gateway ever gets has a fresh client order id.
    """
    _use_fast_loop()
    os.nice(CLIENT_NICE)

    async def main() -> tuple[list[list[int]], int]:
        loop = asyncio.get_running_loop()
        conns: list[_OrderEntry] = []
        for account in accounts:
            _, conn = await loop.create_connection(
                lambda account=account: _OrderEntry(port, account, authenticate),
                "127.0.0.1",
                port,
            )
            await conn.opened
            if authenticate:  # order entry only: execution reports, no private channel
                conn.send(b'{"type":"unsubscribe","channel":"private"}')
            conns.append(conn)
        await asyncio.sleep(0.2)  # the welcomes arrive
        out.send("ready")
        await loop.run_in_executor(None, start.wait)
        results = []
        for index, (rate, seconds, window) in enumerate(phases):
            latencies = await _drive(
                conns,
                window=window,
                rate=rate,
                seconds=seconds,
                prefix=(first_phase + index + 1) * 10_000_000,
            )
            results.append(latencies)
        for conn in conns:
            assert conn.transport is not None
            conn.transport.close()
        return results, sum(conn.rejected for conn in conns)

    out.send(asyncio.run(main()))


def _run_clients(
    port: int,
    authenticate: bool,
    phases: Sequence[tuple[float, float, int]],
    first_phase: int = 0,
) -> tuple[list[list[int]], int]:
    """Two client processes, four connections each: every ack latency (ns), per
    phase, and how many orders were rejected.

    A phase's rate is for all eight connections together. ``first_phase``: how
    many phases this server has run before (see ``_client_process``).
    """
    connections = len(BUYERS) + len(SELLERS)
    phases = [(rate / connections, seconds, window) for rate, seconds, window in phases]
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    pipes = []
    processes = []
    groups = ([*BUYERS[:2], *SELLERS[:2]], [*BUYERS[2:], *SELLERS[2:]])
    for group in groups:
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_client_process,
            args=(port, group, authenticate, phases, first_phase, child, start),
        )
        process.start()
        pipes.append(parent)
        processes.append(process)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    start.set()
    results = [pipe.recv() for pipe in pipes]
    for process in processes:
        process.join(30)
    latencies = [[x for r, _ in results for x in r[phase]] for phase in range(len(phases))]
    return latencies, sum(rejected for _, rejected in results)


def _percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


# --- fan-out ------------------------------------------------------------------------------


class _Subscriber(asyncio.Protocol):
    """A market-data subscriber on a bare socket: a WebSocket handshake, then frames
    parsed straight from ``data_received``. The benchmark's clients must cost far
    less than the server they measure; an aiohttp client per connection does not."""

    def __init__(self, port: int, worst: dict[int, int], ready: asyncio.Future[None]) -> None:
        self.port = port
        self.worst = worst
        self.ready = ready
        self.buffer = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def _send(self, message: bytes) -> None:
        assert self.transport is not None and len(message) < 126
        mask = b"\x00\x00\x00\x00"  # a zero mask leaves the payload as it is
        self.transport.write(bytes((0x81, 0x80 | len(message))) + mask + message)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            assert buffer.startswith(b"HTTP/1.1 101"), bytes(buffer[:80])
            del buffer[: end + 4]
            self.upgraded = True
            for channel in ("book", "trades"):
                self._send(
                    json.dumps(
                        {"type": "subscribe", "channel": channel, "instrument_id": INSTRUMENT}
                    ).encode()
                )
            if not self.ready.done():
                self.ready.set_result(None)
        for opcode, payload in take_frames(buffer):
            if opcode == 0x1:
                if b'"type":"trade"' in payload:
                    now = time.time_ns()
                    answer = _answer.decode(payload)
                    latency = now - answer.ts
                    if latency > self.worst.get(answer.trade_id, -1):
                        self.worst[answer.trade_id] = latency
            elif opcode == 0x9 and self.transport is not None:  # ping: answer with a pong
                self.transport.write(PONG)


def _subscriber_process(port: int, count: int, out: Connection, stop: Any) -> None:
    _use_fast_loop()

    async def main() -> dict[int, int]:
        loop = asyncio.get_running_loop()
        worst: dict[int, int] = {}
        transports = []
        for start in range(0, count, 100):
            batch = []
            for _ in range(start, min(count, start + 100)):
                ready: asyncio.Future[None] = loop.create_future()
                batch.append(ready)
                transport, _ = await loop.create_connection(
                    lambda ready=ready: _Subscriber(port, worst, ready), "127.0.0.1", port
                )
                transports.append(transport)
            await asyncio.gather(*batch)
        out.send("ready")
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for transport in transports:
            transport.close()
        return worst

    out.send(asyncio.run(main()))


async def _trade_flow(port: int, trades_per_sec: float, seconds: float) -> int:
    """One buyer and one seller trading one GPU-hour at a time; trades sent."""
    async with aiohttp.ClientSession() as session:
        buyer = await session.ws_connect(
            f"http://127.0.0.1:{port}/ws",
            headers={"Authorization": f"Bearer {bench_key(BUYERS[0])}"},
        )
        seller = await session.ws_connect(
            f"http://127.0.0.1:{port}/ws",
            headers={"Authorization": f"Bearer {bench_key(SELLERS[0])}"},
        )

        async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for _ in ws:
                pass

        drains = [asyncio.create_task(drain(ws)) for ws in (buyer, seller)]
        rng = random.Random(SEED)
        n = 0
        end = time.perf_counter() + seconds
        next_at = time.perf_counter()
        while time.perf_counter() < end:
            n += 1
            await seller.send_str(_order_frame(SELLERS[0], n, n))
            await buyer.send_str(_order_frame(BUYERS[0], n, n))
            next_at += rng.expovariate(trades_per_sec)
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.sleep(1.0)
        for ws in (buyer, seller):
            await ws.close()
        for task in drains:
            task.cancel()
        return n


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _fanout(
    subscribers: int, trades_per_sec: float, seconds: float, client_processes: int = 1
) -> dict[str, float]:
    server, port = _start(_serve_gateway)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    pipes = []
    processes = []
    try:
        for share in _shares(subscribers, client_processes):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_subscriber_process, args=(port, share, child, stop))
            process.start()
            pipes.append(parent)
            processes.append(process)
        for pipe in pipes:
            assert pipe.recv() == "ready"
        time.sleep(1.0)  # let the snapshots go out before the clock starts
        sent = asyncio.run(_trade_flow(port, trades_per_sec, seconds))
        time.sleep(1.0)
        stop.set()
        worst: dict[int, int] = {}
        counts: dict[int, int] = {}
        for pipe in pipes:
            for trade_id, latency in pipe.recv().items():
                counts[trade_id] = counts.get(trade_id, 0) + 1
                worst[trade_id] = max(worst.get(trade_id, 0), latency)
        for process in processes:
            process.join(30)
    finally:
        _stop(server)
    complete = [lat for tid, lat in worst.items() if counts[tid] == len(pipes)]
    return {
        "fanout_subscribers": subscribers,
        "fanout_trades": sent,
        "fanout_p50_ms": round(_percentile(complete, 0.50), 2),
        "fanout_p99_ms": round(_percentile(complete, 0.99), 2),
        "fanout_max_ms": round(max(complete) / 1e6, 2) if complete else float("nan"),
    }


# --- instructions per order, in process ---------------------------------------------------


class _CountingTransport:
    """A transport that takes every write and keeps only the byte count."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (16_384, 65_536)


def _in_process(batches: int, per_session: int = 16) -> None:
    """Order frames into ``Dispatcher.receive`` with no sockets (see the module doc)."""
    import gc
    import logging

    import structlog

    from exchange.core import ExchangeCore
    from exchange.service import ExchangeService
    from gateway import protocol as p
    from gateway.auth import KeyStore, Principal
    from gateway.dispatch import Dispatcher
    from gateway.marketdata import MarketData
    from gateway.metrics import Metrics
    from gateway.orders import OrderRegister
    from gateway.router import Router
    from gateway.session import Session, SessionLimits

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    async def main() -> None:
        service = ExchangeService(ExchangeCore())
        await service.start()
        for command in bench_market(time.time_ns()):
            await service.submit(command)
        metrics = Metrics()
        marketdata = MarketData(service.core)
        register = OrderRegister.from_core(service.core)
        router = Router(service, marketdata, register, metrics)
        dispatcher = Dispatcher(router, KeyStore(None), metrics)
        limits = SessionLimits(rate_limit=1e9, rate_burst=10**9)
        sessions = []
        for conn_id, account in enumerate((*BUYERS, *SELLERS), 1):
            session = Session(
                conn_id,
                None,  # type: ignore[arg-type]  # no WebSocket: the transport is written directly
                limits,
                marketdata,
                transport=_CountingTransport(),  # type: ignore[arg-type]
                on_pending=router.notify,
                on_close=router.detach,
            )
            router.attach(session)
            role = service.core.accounts[account].role
            dispatcher.login(session, Principal(account, role, "bench"))
            router.unsubscribe(session, p.Channel.PRIVATE, "")
            frames = [
                _order_frame(account, 10_000_000 + n, n + 1).encode()
                for n in range(batches * per_session)
            ]
            sessions.append((session, frames))
        gc.collect()
        gc.freeze()
        receive = dispatcher.receive
        for batch in range(batches):
            for session, frames in sessions:
                for frame in frames[batch * per_session : (batch + 1) * per_session]:
                    receive(session, frame)
            for _ in range(4):  # the batch task, then the flush
                await asyncio.sleep(0)
        await service.stop()
        rejected = sum(metrics.rejections.values())
        if rejected or service.queue_depth:
            raise SystemExit(f"{rejected} orders rejected, {service.queue_depth} left queued")

    asyncio.run(main())


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per phase")
    parser.add_argument("--window", type=int, default=64, help="orders in flight per connection")
    parser.add_argument("--rounds", type=int, default=3, help="peak and echo phases, alternated")
    parser.add_argument("--subscribers", type=int, default=2_000)
    parser.add_argument("--fanout-rate", type=float, default=20.0, help="trades per second")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2-second phases, 1 round, 500 subscribers",
    )
    parser.add_argument(
        "--in-process",
        type=int,
        metavar="BATCHES",
        help="no sockets: feed BATCHES batches of orders to the dispatcher, for cachegrind",
    )
    args = parser.parse_args(argv)
    if args.in_process is not None:
        _use_fast_loop()
        _in_process(args.in_process)
        return 0
    if args.quick:
        args.seconds, args.rounds, args.subscribers = 2.0, 1, 500
    loop = _use_fast_loop()
    started = time.perf_counter()
    warm = (0.0, 1.0, args.window)
    timed = (0.0, args.seconds, args.window)

    server, port = _start(_serve_gateway)
    echo, echo_port = _start(_serve_echo)
    peaks: list[float] = []
    echoes: list[float] = []
    ratios: list[float] = []
    peak_lat: list[int] = []
    half_lat: list[int] = []
    rejected = 0
    phases_run = 0  # on the gateway, so every order gets a fresh client order id
    try:
        for round_ in range(args.rounds):
            for target in ("gateway", "echo") if round_ % 2 == 0 else ("echo", "gateway"):
                if target == "gateway":
                    (_, lat), refused = _run_clients(port, True, [warm, timed], phases_run)
                    phases_run += 2
                    rejected += refused
                    peaks.append(len(lat) / args.seconds)
                    peak_lat.extend(lat)
                else:
                    (_, lat), _ = _run_clients(echo_port, False, [warm, timed])
                    echoes.append(len(lat) / args.seconds)
            ratios.append(peaks[-1] / echoes[-1])
            print(
                f"round {round_ + 1}: {peaks[-1]:,.0f} orders/s, echo {echoes[-1]:,.0f} "
                f"messages/s, ratio {ratios[-1]:.3f}",
                file=sys.stderr,
            )
        peak = statistics.median(peaks)
    finally:
        _stop(server)
        _stop(echo)
    # Latency at half of the reported peak, on a fresh gateway (as the fan-out is):
    # the rounds leave a million orders or more in memory, and what that costs is
    # the peak's business, not this figure's.
    server, port = _start(_serve_gateway)
    try:
        (_, half_lat), refused = _run_clients(
            port, True, [(peak / 2, 1.0, 10**9), (peak / 2, args.seconds, 10**9)]
        )
        rejected += refused
    finally:
        _stop(server)
    if rejected:
        print(
            f"{rejected} orders were rejected: the figures would not be of trading", file=sys.stderr
        )
        return 1

    fanout = _fanout(args.subscribers, args.fanout_rate, args.seconds)
    print(f"fan-out: {fanout}", file=sys.stderr)

    result = {
        "benchmark": "gateway",
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
        "loop": loop,
        "connections": 8,
        "window": args.window,
        "rounds": args.rounds,
        "orders_per_sec": round(peak),
        "half_peak_rate": round(len(half_lat) / args.seconds),
        "ack_p50_ms": round(_percentile(half_lat, 0.50), 3),
        "ack_p99_ms": round(_percentile(half_lat, 0.99), 3),
        "peak_ack_p50_ms": round(_percentile(peak_lat, 0.50), 3),
        "peak_ack_p99_ms": round(_percentile(peak_lat, 0.99), 3),
        "echo_msgs_per_sec": round(statistics.median(echoes)),
        "echo_ratio": round(statistics.median(ratios), 3),
        "echo_ratio_runs": [round(r, 3) for r in ratios],
        **fanout,
        "seed": SEED,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

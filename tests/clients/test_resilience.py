"""The SDK when messages go missing: the local book resynchronises by itself, and a
reconnect mid-stream neither loses nor duplicates an order.

Faults are injected two ways: the SDK's ``inbound`` hook drops or corrupts book
updates before the local book sees them, and a TCP proxy (tests/clients/proxy.py)
cuts the connection or swallows the server's answers. Seeds are fixed and
printed. Waits are bounded loops, never timed assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from clients.sdk import Backoff, BookWatcher, Client, ConnectionLost
from exchange.reference import Side
from gateway import protocol as p
from gateway.app import ROUTER, SERVICE
from tests.clients.conftest import Served
from tests.clients.proxy import Proxy
from tests.gateway.conftest import H100

SEED = 20_261_122


async def converge(client: Client, book: BookWatcher, served: Served, instrument_id: str) -> None:
    """Wait (bounded) until the local book has caught up with the published one."""
    feed = served.app[ROUTER].marketdata.feed(instrument_id)
    for _ in range(200):
        await client.ping()  # every message queued before the pong has been read
        if book.local.synced and book.local.seq == feed.seq:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await book.get()
    raise AssertionError(f"local book never caught up: {book.local.last_problem}")


def assert_same_book(book: BookWatcher, served: Served, instrument_id: str) -> None:
    feed = served.app[ROUTER].marketdata.feed(instrument_id)
    core_book = served.app[SERVICE].core.books[instrument_id]
    depth = served.app[ROUTER].marketdata.depth
    assert book.local.bids() == feed.bids == core_book.depth(Side.BUY, depth)
    assert book.local.asks() == feed.asks == core_book.depth(Side.SELL, depth)
    assert book.local.computed_checksum() == feed.checksum


async def random_orders(
    rng: random.Random, clients: dict[str, Client], n: int, instrument_id: str = H100
) -> list[str]:
    """``n`` seeded limit orders and cancels around 1,000 fen; the client order ids placed."""
    placed: list[tuple[str, str]] = []
    for _ in range(n):
        if placed and rng.random() < 0.2:
            who, coid = placed.pop(rng.randrange(len(placed)))
            with contextlib.suppress(Exception):  # it may have filled already
                await clients[who].cancel_order(client_order_id=coid)
            continue
        who = rng.choice(list(clients))
        side = Side.BUY if who.startswith("su") else Side.SELL
        offset = rng.randint(-5, 5) * 10
        price = 1_000 + (offset - 20 if side is Side.BUY else offset + 20)
        report = await clients[who].place_order(instrument_id, side, 8 * rng.randint(1, 4), price)
        placed.append((who, report.client_order_id))
    return [coid for _, coid in placed]


async def test_local_book_resynchronises_after_gaps_and_bad_checksums(served: Served) -> None:
    print(f"seed {SEED}")
    rng = random.Random(SEED)
    faults = {"dropped": 0, "corrupted": 0, "on": True}

    def inject(message: p.ServerMessage) -> p.ServerMessage | None:
        if faults["on"] and isinstance(message, p.BookUpdate):
            roll = rng.random()
            if roll < 0.08:
                faults["dropped"] += 1
                return None
            if roll < 0.12:
                faults["corrupted"] += 1
                return msgspec.structs.replace(message, checksum=message.checksum ^ 0x5A5A)
        return message

    traders = {a: await served.sdk(a) for a in ("su1", "su2", "dc1", "dc2")}
    with capture_logs() as logs:
        watcher = await served.sdk(None, inbound=inject)
        async with watcher.book(H100) as book:
            await book.synced()
            await random_orders(random.Random(SEED + 1), traders, 150)
            faults["on"] = False
            # One more change, so a gap at the very end is seen too.
            last = await traders["su1"].place_order(H100, Side.BUY, 8, 500)
            await traders["su1"].cancel_order(last.order_id)
            await converge(watcher, book, served, H100)
            assert_same_book(book, served, H100)
    print(faults, "resyncs", book.resyncs, "gaps", book.local.gaps)
    assert faults["dropped"] > 0 and faults["corrupted"] > 0
    assert book.local.mismatches >= 1 and book.local.gaps >= 1
    assert book.resyncs == book.local.mismatches + book.local.gaps
    resync_logs = [e for e in logs if e["event"] == "book_resync"]
    assert len(resync_logs) == book.resyncs
    assert {"instrument_id", "problem"} <= set(resync_logs[0])


async def wait_for(predicate: Any, what: str) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_reconnect_loses_and_duplicates_nothing(served: Served) -> None:
    print(f"seed {SEED}")
    rng = random.Random(SEED)
    proxy = Proxy("127.0.0.1", served.server.port or 0)
    await proxy.start()
    core = served.app[SERVICE].core
    register = served.app[ROUTER].register
    try:
        su = await served.sdk("su1", url=proxy.url)
        dc = await served.sdk("dc1")

        # 1. The order gets there, its answer does not: sent again with the same
        # client order id, refused as a duplicate, and reported as the first copy.
        proxy.hold()
        lost = asyncio.create_task(su.place_order(H100, Side.BUY, 8, 950, client_order_id="lost"))
        await wait_for(lambda: "lost" in core.accounts["su1"].client_order_ids, "order entered")
        proxy.cut()
        report = await lost
        assert report.order_id == core.accounts["su1"].client_order_ids["lost"]
        assert report.leaves_qty == 8 and su.reconnects == 1

        # 2. A resting order fills while the client is away: reconciled after.
        await su.place_order(H100, Side.BUY, 16, 960, client_order_id="rest")
        proxy.hold()
        await dc.place_order(H100, Side.SELL, 16, 960)
        proxy.cut()
        await wait_for(
            lambda: su.orders["rest"].ord_status is p.OrdStatus.FILLED, "fill reconciled"
        )
        assert su.orders["rest"].cum_qty == 16

        # 3. A stream of orders with the connection cut three times mid-stream.
        async with su.book(H100) as book:
            await book.synced()
            cuts = sorted(rng.sample(range(5, 45), 3))
            print("cuts after orders", cuts)
            coids: list[str] = []
            for i in range(50):
                side_rng = rng.random()
                if side_rng < 0.3:
                    await dc.place_order(H100, Side.SELL, 8, 970 + 10 * rng.randint(0, 3))
                coid = f"s-{i}"
                coids.append(coid)
                price = 940 + 10 * rng.randint(0, 4)
                placing = asyncio.create_task(
                    su.place_order(H100, Side.BUY, 8, price, client_order_id=coid)
                )
                if i in cuts:  # cut with the order in flight
                    await asyncio.sleep(0)
                    proxy.cut()
                report = await placing
                assert report.client_order_id == coid and report.order_id > 0
            assert su.reconnects == 2 + len(cuts)
            await converge(su, book, served, H100)
            assert_same_book(book, served, H100)

        # Nothing entered twice, nothing lost.
        mine = {s.client_order_id: s for s in register.orders.values() if s.account == "su1"}
        assert set(mine) == {"lost", "rest", *coids}
        assert len([s for s in register.orders.values() if s.account == "su1"]) == len(mine)
        await su.ping()
        await wait_for(lambda: not su._tasks, "reconciliation finished")
        for coid, state in mine.items():
            view = su.orders[coid]
            assert (view.order_id, view.cum_qty, view.leaves_qty, view.ord_status) == (
                state.order_id,
                state.cum_qty,
                state.leaves,
                state.status,
            ), coid
    finally:
        await proxy.close()


async def test_a_quiet_client_is_not_closed_as_idle() -> None:
    """The gateway closes connections silent for ``idle_timeout``; the SDK pings first."""
    from aiohttp.test_utils import TestServer

    from gateway.app import create_app
    from tests.gateway.conftest import make_config, seed_market

    app = create_app(make_config(idle_timeout=0.6, heartbeat_interval=0.2), seed=seed_market)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    served = Served(server)
    try:
        quiet = await served.sdk(None)
        async with quiet.book(H100) as book:
            await book.synced()
            for _ in range(10):  # three idle timeouts, saying nothing but pings
                await asyncio.sleep(0.2)
            assert quiet.reconnects == 0 and quiet.connected
    finally:
        for client in served.clients:
            await client.close()
        await server.close()


async def test_a_client_that_cannot_reconnect_gives_up_with_connection_lost(
    served: Served,
) -> None:
    proxy = Proxy("127.0.0.1", served.server.port or 0)
    await proxy.start()
    client = await served.sdk("su1", url=proxy.url, backoff=Backoff(initial=0.01, attempts=3))
    await proxy.close()  # the proxy stops listening: every attempt is refused
    with pytest.raises(ConnectionLost):
        await client.ping()
    with pytest.raises(ConnectionLost):
        await client.place_order(H100, Side.BUY, 8, 1_000)

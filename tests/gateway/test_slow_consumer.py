"""Slow consumers over real sockets: a client that reads keeps its connection
however large a snapshot it asked for; one that stops reading is closed with
4003; a book never goes back to an older state; conflations are counted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway import protocol as p
from gateway.app import METRICS, ROUTER
from gateway.session import Session
from tests.gateway.conftest import H100, Client, Gateway, GatewayFactory, key, trade_until
from tests.gateway.test_marketdata import BookCopy, RawWebSocket

FAST = {"rate_limit": 1e6, "rate_burst": 10**6}  # no test here is about the rate limit


class StalledClient(RawWebSocket):
    """A client that reads nothing until told to (see ``RawWebSocket``)."""

    async def read_until(self, done: Callable[[Any], bool]) -> list[Any]:
        """Every message up to and including the first that is ``done``."""
        messages: list[Any] = []
        async with asyncio.timeout(10):
            while not messages or not done(messages[-1]):
                first, second = await self.reader.readexactly(2)
                length = second & 0x7F
                if length >= 126:
                    width = 2 if length == 126 else 8
                    length = int.from_bytes(await self.reader.readexactly(width), "big")
                payload = await self.reader.readexactly(length)
                if first & 0x0F == 0x1:
                    messages.append(p.decode_message(payload))
                elif first & 0x0F == 0x8:
                    raise ConnectionError(f"closed: {payload!r}")
        return messages


Stalled = Callable[..., Any]


@pytest.fixture
async def stalled() -> AsyncIterator[Stalled]:
    """``await stalled(gateway, account=None)``: a connection that reads nothing
    (authenticated as ``account`` if given), and the server's session of it.
    Each is closed at the end of the test."""
    clients: list[StalledClient] = []

    async def connect(
        gateway: Gateway, account: str | None = None
    ) -> tuple[StalledClient, Session]:
        router = gateway.app[ROUTER]
        before = set(router.sessions)
        client = await StalledClient.connect(gateway.server.host, gateway.server.port or 0)
        clients.append(client)
        if account:
            client.send({"type": "auth", "key": key(account)})
        async with asyncio.timeout(10):
            while True:
                new = set(router.sessions) - before
                if new and (not account or router.sessions[min(new)].principal is not None):
                    return client, router.sessions[min(new)]
                await asyncio.sleep(0.005)

    yield connect
    for client in clients:
        client.writer.close()
        with contextlib.suppress(ConnectionError):
            await client.writer.wait_closed()


async def until(condition: Callable[[], bool]) -> None:
    """Wait for the server to get there (only a broken test times out)."""
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.002)


async def rest_orders(seller: Client, n: int) -> None:
    """``n`` sell orders of ``seller`` resting on the H100 book, none crossing
    (500 at a time: the seller reads its acknowledgements as they come)."""
    for i in range(n):
        await seller.send(
            "new_order",
            client_order_id=f"rest{i}",
            instrument_id=H100,
            side="SELL",
            qty=8,
            price=2_000 + 10 * (i % 50),
        )
        if i % 500 == 499 or i == n - 1:
            await seller.expect(p.ExecutionReport, client_order_id=f"rest{i}")
            seller.seen.clear()


HARD = 256  # outbox_hard where a test needs a connection to fall behind soon


async def small_queues(start_gateway: GatewayFactory, resting: int) -> tuple[Gateway, Client]:
    """A gateway with an ``outbox_hard`` of ``HARD`` and a 4 KB socket send buffer,
    and dc1's connection, with ``resting`` of its orders on the H100 book."""
    gateway = await start_gateway(outbox_hard=HARD, socket_send_buffer=4_096, **FAST)
    dc1 = await gateway.connect("dc1")
    await rest_orders(dc1, resting)
    return gateway, dc1


async def test_an_operator_reading_a_snapshot_longer_than_outbox_hard_keeps_its_connection(
    start_gateway: GatewayFactory,
) -> None:
    # The auditor's case: 6,000 open orders (outbox_hard is 4,096), an operator
    # reading the orders channel as fast as it can, one new order meanwhile.
    gateway = await start_gateway(**FAST)
    dc1 = await gateway.connect("dc1")
    await rest_orders(dc1, 6_000)
    ops = await gateway.connect("ops")
    rid = await ops.send("subscribe", channel="orders")
    await ops.expect(p.Subscribed, id=rid)
    su1 = await gateway.connect("su1")
    await su1.order("late", H100, "BUY", 8, 1_000)  # while the snapshot is on its way
    late = await ops.expect(p.ExecutionReport, client_order_id="late")
    assert late.exec_type == p.ExecType.NEW
    snapshot = [m for m in ops.seen if isinstance(m, p.ExecutionReport)][:-1]
    assert len(snapshot) == 6_000
    assert {r.exec_type for r in snapshot} == {p.ExecType.ORDER_STATUS}
    assert gateway.app[METRICS].disconnects[str(p.CloseCode.SLOW_CONSUMER)] == 0
    rid = await ops.send("ping")  # still connected, still answered
    await ops.expect(p.Pong, id=rid)


async def test_an_operator_that_stops_reading_after_a_snapshot_is_closed_4003(
    start_gateway: GatewayFactory, stalled: Stalled
) -> None:
    hard = HARD
    gateway, dc1 = await small_queues(start_gateway, resting=4 * hard)
    ops, session = await stalled(gateway, "ops")
    ops.send({"type": "subscribe", "channel": "orders"})
    await until(lambda: (p.Channel.ORDERS, "") in session.subscriptions)
    assert not session.closing  # a snapshot it asked for does not make it slow
    router = gateway.app[ROUTER]
    pushed = 0
    while session.conn_id in router.sessions and pushed < 4 * hard:
        pushed += 1  # each new order is one live report to the operator
        await dc1.order(f"live{pushed}", H100, "SELL", 8, 3_000)
    assert session.conn_id not in router.sessions, f"still connected after {pushed} reports"
    assert hard < pushed < 2 * hard  # outbox_hard live messages behind a stalled socket
    messages, code, reason = await ops.read_all()
    assert code == p.CloseCode.SLOW_CONSUMER and "slow consumer" in reason
    assert messages  # it had what the socket took before it stopped


async def book_behind(
    gateway: Gateway, stalled: Stalled
) -> tuple[StalledClient, Session, Client, Client]:
    """A stalled connection on H100's book and trades, with a conflation mark
    queued for the book; and the two clients that trade on H100."""
    slow, session = await stalled(gateway)
    slow.send({"type": "subscribe", "channel": "book", "instrument_id": H100})
    slow.send({"type": "subscribe", "channel": "trades", "instrument_id": H100})
    dc1 = await gateway.connect("dc1")
    su1 = await gateway.connect("su1")
    await trade_until(dc1, su1, until=lambda: ("book", H100) in session.marked)
    return slow, session, dc1, su1


async def test_a_book_subscribed_again_while_behind_never_goes_back_to_an_older_state(
    start_gateway: GatewayFactory, stalled: Stalled
) -> None:
    gateway = await start_gateway(outbox_soft=4, socket_send_buffer=4_096, **FAST)
    slow, session, dc1, su1 = await book_behind(gateway, stalled)
    subscription = (p.Channel.BOOK, H100)
    book = {"channel": "book", "instrument_id": H100}
    slow.send({"type": "unsubscribe", **book})
    await until(lambda: subscription not in session.subscriptions)
    slow.send({"type": "subscribe", **book})  # its snapshot: the book as it is now
    await until(lambda: subscription in session.subscriptions)
    await trade_until(dc1, su1, until=lambda: session.conflated > 100)  # the book moves on
    slow.send({"type": "ping", "id": 999})
    messages = await slow.read_until(lambda m: isinstance(m, p.Pong) and m.id == 999)
    seqs = [m.seq for m in messages if isinstance(m, (p.BookSnapshot, p.BookUpdate))]
    assert seqs == sorted(seqs), f"an older book after a newer one: {seqs}"
    resubscribed = next(
        i for i, m in enumerate(messages) if isinstance(m, p.Subscribed) and m.channel == "book"
    )
    copy = BookCopy()
    for message in messages[resubscribed + 1 :]:
        copy.apply(message)  # from the new snapshot on, every update follows; checksums hold
    assert copy.snapshots >= 2  # the subscription's snapshot, then a conflated one
    assert copy.seq == gateway.app[ROUTER].marketdata.feed(H100).seq


async def test_book_conflations_are_counted_in_the_metrics(
    start_gateway: GatewayFactory, stalled: Stalled
) -> None:
    gateway = await start_gateway(outbox_soft=4, socket_send_buffer=4_096, **FAST)
    _, session, dc1, su1 = await book_behind(gateway, stalled)
    await trade_until(dc1, su1, until=lambda: session.conflated > 50)
    metrics = gateway.app[METRICS]
    assert metrics.book_conflations == session.conflated  # the only book subscriber
    status, text = await gateway.get("/metrics")
    assert status == 200
    assert f"suanli_book_conflations_total {metrics.book_conflations}\n" in text


async def test_a_reader_behind_a_reply_keeps_its_connection_through_a_large_cancel_all(
    start_gateway: GatewayFactory, stalled: Stalled
) -> None:
    # A second connection of dc1, behind the answer to its mass_status, reads
    # some of it, then cancels all 2,048 orders: 8 times outbox_hard of reports
    # queue behind a socket that is still full, and they are a reply it asked for.
    hard = HARD
    gateway, _ = await small_queues(start_gateway, resting=8 * hard)
    slow, session = await stalled(gateway, "dc1")
    slow.send({"type": "mass_status", "id": 1})
    await until(lambda: session._backed_up)
    read = 0

    def enough(_: Any) -> bool:
        nonlocal read
        read += 1
        return read == 200

    await slow.read_until(enough)
    await until(session._reading)  # the server saw it read
    assert session._backed_up and len(session.outbox) > hard  # still behind
    slow.send({"type": "cancel_all", "id": 2})
    messages = await slow.read_until(lambda m: isinstance(m, p.CancelAllDone))
    assert messages[-1].cancelled == 8 * hard
    cancels = [
        m
        for m in messages
        if isinstance(m, p.ExecutionReport) and m.exec_type == p.ExecType.CANCELLED
    ]
    assert len(cancels) == 8 * hard and {m.id for m in cancels} == {2}
    assert gateway.app[METRICS].disconnects[str(p.CloseCode.SLOW_CONSUMER)] == 0

"""The SDK on connections that die badly, and requests whose answers are lost.

A connection that fails inside aiohttp, or that falls silent, is replaced; a
cancel, amend or cancel-all sent again after a reconnect answers with what the
first copy did; and reconciliation after a gateway restart settles every order
it can, even when the gateway has no report of some. Connections are broken
with the loopback proxy of tests/clients/proxy.py; waits are bounded loops.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from clients.sdk import Backoff, CancelRejected, Client
from exchange.reference import Side
from gateway import protocol as p
from gateway.app import ROUTER
from tests.clients.conftest import Served
from tests.clients.proxy import Proxy
from tests.gateway.conftest import H100, GatewayFactory, key, make_config, seed_market
from tests.gateway.conftest import start_gateway as start_gateway  # the fixture


async def wait_for(predicate: Callable[[], bool], what: str, tries: int = 500) -> None:
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
async def proxied(served: Served) -> Any:
    proxy = Proxy("127.0.0.1", served.server.port or 0)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_a_failure_inside_receive_is_a_lost_connection_not_the_end(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp answers a ping inside ``receive()``; on a socket the gateway has just
    closed, that pong raises instead of reporting a close."""
    client = await served.sdk("su1")
    ws = client._ws
    assert ws is not None
    receive = ws.receive

    async def pong_on_a_closing_socket(timeout: float | None = None) -> aiohttp.WSMessage:
        await receive(timeout)
        raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")

    monkeypatch.setattr(ws, "receive", pong_on_a_closing_socket)
    with capture_logs() as logs:
        await client.ping()  # its answer is the first message the patched receive takes
        await wait_for(lambda: client.reconnects == 1 and client.connected, "reconnected")
    assert client._failure is None
    assert isinstance(await client.ping(), p.Pong)
    events = [e["event"] for e in logs]
    assert "connection_failed" in events and "client_failed" not in events


async def test_a_silent_connection_is_taken_for_dead_and_replaced() -> None:
    """Nothing from the gateway for three heartbeat intervals: a half-open socket.
    The gateway still hears the client (its pings get through), so only the
    client can notice."""
    from aiohttp.test_utils import TestServer

    from gateway.app import create_app

    app = create_app(make_config(heartbeat_interval=0.1, idle_timeout=30), seed=seed_market)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    proxy = Proxy("127.0.0.1", server.port or 0)
    await proxy.start()
    running = Served(server)
    try:
        client = await running.sdk("su1", url=proxy.url)
        async with client.book(H100) as book:
            await book.synced()
            with capture_logs() as logs:
                proxy.hold()  # from now on the gateway's messages on this connection vanish
                await wait_for(lambda: client.reconnects == 1, "silent connection replaced")
                await book.synced()
            assert isinstance(await client.ping(), p.Pong)
        silent = [e for e in logs if e["event"] == "connection_silent"]
        assert len(silent) == 1 and silent[0]["seconds"] == pytest.approx(0.3)
        assert proxy.connections == 2
    finally:
        for client in running.clients:
            await client.close()
        await proxy.close()
        await server.close()


async def test_resent_cancels_and_amends_answer_with_what_the_first_copy_did(
    served: Served, proxied: Proxy
) -> None:
    su = await served.sdk("su1", url=proxied.url)
    dc = await served.sdk("dc1")
    placed = [
        await su.place_order(H100, Side.BUY, 16, 900 + 10 * i, client_order_id=f"g{i}")
        for i in range(7)
    ]
    register = served.app[ROUTER].register

    def status(coid: str) -> p.OrdStatus:
        state = register.find("su1", 0, coid)
        assert state is not None
        return state.status

    # Every request gets there; every answer is lost.
    proxied.hold()
    asked = [
        asyncio.create_task(su.cancel_order(placed[0].order_id)),
        asyncio.create_task(su.cancel_order(client_order_id="g1")),
        asyncio.create_task(su.amend_order(placed[2].order_id, qty=8)),
        asyncio.create_task(su.amend_order(client_order_id="g3", price=850)),
    ]
    await wait_for(lambda: status("g1") is p.OrdStatus.CANCELLED, "cancels taken")
    await wait_for(lambda: register.find("su1", 0, "g3").price == 850, "amends taken")  # type: ignore[union-attr]
    await dc.place_order(H100, Side.SELL, 16, 960)  # g6, the best bid, fills
    await wait_for(lambda: status("g6") is p.OrdStatus.FILLED, "g6 filled")
    too_late = asyncio.create_task(su.cancel_order(client_order_id="g6"))
    everything = asyncio.create_task(su.cancel_all(H100))  # g2 to g5
    await wait_for(lambda: status("g5") is p.OrdStatus.CANCELLED, "cancel-all taken")
    proxied.cut()

    by_id, by_coid, amended_qty, amended_price = await asyncio.gather(*asked)
    for report, coid in ((by_id, "g0"), (by_coid, "g1")):
        assert report.client_order_id == coid
        assert report.ord_status is p.OrdStatus.CANCELLED and report.reason == "REQUESTED"
    # Each amend took effect; a cancel-all then cancelled the order.
    assert (amended_qty.client_order_id, amended_qty.qty) == ("g2", 8)
    assert (amended_price.client_order_id, amended_price.price) == ("g3", 850)
    assert amended_qty.ord_status is p.OrdStatus.CANCELLED
    done = await everything
    assert done.cancelled == 4
    # A cancel refused because the order filled is still refused.
    with pytest.raises(CancelRejected) as refused:
        await too_late
    assert refused.value.code == "UNKNOWN_ORDER"
    assert su.reconnects == 1
    await wait_for(lambda: not su._tasks, "reconciled")
    assert {coid: r.ord_status for coid, r in su.orders.items()} == {
        **{f"g{i}": p.OrdStatus.CANCELLED for i in range(6)},
        "g6": p.OrdStatus.FILLED,
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_reconcile_after_a_restart_settles_every_order_it_can(
    start_gateway: GatewayFactory, tmp_path: Any
) -> None:
    data_dir = str(tmp_path / "data")
    first = await start_gateway(data_dir)
    proxy = Proxy("127.0.0.1", first.server.port or 0)
    await proxy.start()
    su = Client(
        proxy.url, key("su1"), backoff=Backoff(initial=0.02, maximum=0.1, attempts=500), seed=7
    )
    await su.connect()
    try:
        for coid, price in (("a", 1_000), ("b", 990), ("c", 960), ("d", 980)):
            await su.place_order(H100, Side.BUY, 16, price, client_order_id=coid)
        proxy.target = ("127.0.0.1", closed_port())
        proxy.cut()  # away: every attempt to reconnect is refused
        await wait_for(lambda: not su.connected, "disconnected")

        # While it is away: a fills, b is cancelled, then the gateway restarts.
        dc1 = await first.connect("dc1")
        await dc1.order("sell-a", H100, "SELL", 16, 1_000)
        other_session = await first.connect("su1")
        rid = await other_session.send("cancel_order", client_order_id="b")
        await other_session.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.CANCELLED)
        await first.server.close()
        second = await start_gateway(data_dir)
        # After the restart: d fills.
        dc1 = await second.connect("dc1")
        await dc1.order("sell-d", H100, "SELL", 16, 980)
        proxy.target = ("127.0.0.1", second.server.port or 0)

        with capture_logs() as logs:
            await wait_for(lambda: su.connected, "reconnected to the restarted gateway", 1_000)
            await wait_for(
                lambda: any(e["event"] == "orders_reconciled" for e in logs), "reconciled"
            )
        # a and b finished before the restart: no report is left of either.
        assert su.outcome_unknown == {"a", "b"}
        for coid in ("a", "b"):
            view = su.orders[coid]
            assert view.leaves_qty == 0 and view.reason == "ORDER_FINISHED_BEFORE_RESTART"
            assert view.ord_status is p.OrdStatus.CANCELLED and view.cum_qty == 0
        # d, after them in the batch, is still brought up to date; c is still open.
        assert su.orders["d"].ord_status is p.OrdStatus.FILLED and su.orders["d"].cum_qty == 16
        assert su.orders["c"].ord_status is p.OrdStatus.NEW
        done = [e for e in logs if e["event"] == "orders_reconciled"]
        assert done[0]["closed"] == 3 and done[0]["outcome_unknown"] == 2
    finally:
        await su.close()
        await proxy.close()

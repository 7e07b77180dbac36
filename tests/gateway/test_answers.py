"""Each request's answer reaches the connection that sent it, with its id.

The gateway hands the exchange each command with its origin (the connection
and the request), so two requests with the same content are answered each on
its own connection; a command the exchange could not apply is answered with an
``error``, and the connection goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog.testing

from exchange import commands as c
from exchange.events import Event
from gateway import app as gw
from gateway import protocol as p
from tests.gateway.conftest import H100, Gateway


async def test_equal_requests_from_two_connections_are_answered_each_on_its_own(
    gateway: Gateway,
) -> None:
    # Same account, same content, same ids: only the origin tells them apart.
    first = await gateway.connect("ops")
    second = await gateway.connect("ops")
    for _ in range(3):
        await first.send("deposit", id=7, account_id="su2", amount=5)
        await second.send("deposit", id=7, account_id="su2", amount=5)
    for client in (first, second):
        acks = [await client.expect(p.Ack, id=7) for _ in range(3)]
        assert [a.result["account_id"] for a in acks] == ["su2"] * 3
        rid = await client.send("ping")
        await client.expect(p.Pong, id=rid)
        assert len([m for m in client.seen if isinstance(m, p.Ack)]) == 3
    # Six deposits of 5, each applied once, each with its own answer.
    cashes = sorted(
        int(m.result["cash"]) for cl in (first, second) for m in cl.seen if isinstance(m, p.Ack)
    )
    assert cashes == [cashes[0] + 5 * i for i in range(6)]


async def test_a_new_order_answered_on_its_connection_only(gateway: Gateway) -> None:
    a = await gateway.connect("su1")
    b = await gateway.connect("su1")
    clients = {"a1": a, "b1": b}
    for (coid, client), price in zip(clients.items(), (900, 890), strict=True):
        order = {"instrument_id": H100, "side": "BUY", "qty": 8, "price": price}
        await client.send("new_order", id="same", client_order_id=coid, **order)
    for mine, client in clients.items():
        while {m.client_order_id for m in client.seen if isinstance(m, p.ExecutionReport)} != {
            "a1",
            "b1",
        }:
            await client.recv()
        reports = {m.client_order_id: m for m in client.seen if isinstance(m, p.ExecutionReport)}
        (other,) = set(clients) - {mine}
        # Its own report carries the request id; the other connection's, none.
        assert reports[mine].id == "same"
        assert reports[other].id is None


class _FailingJournal:
    def append(self, first_seq: int, commands: Sequence[c.Command]) -> None:
        raise OSError("disk full")


async def test_a_failed_journal_is_answered_unavailable_and_later_requests_too(
    gateway: Gateway,
) -> None:
    ops = await gateway.connect("ops")
    service = gateway.app[gw.SERVICE]
    service.journal = _FailingJournal()
    before = service.core.accounts["su2"].cash
    rid = await ops.send("deposit", account_id="su2", amount=5)
    error = await ops.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.UNAVAILABLE and "disk full" in error.text
    # The service now refuses at once; the answer is the same.
    rid = await ops.send("deposit", account_id="su2", amount=6)
    error = await ops.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.UNAVAILABLE
    assert service.core.accounts["su2"].cash == before
    status, health = await gateway.get("/healthz")
    assert status == 503 and health["status"] == "failed"


async def test_a_fault_in_the_exchange_is_an_internal_error_and_the_connection_goes_on(
    gateway: Gateway,
) -> None:
    ops = await gateway.connect("ops")
    core = gateway.app[gw.SERVICE].core

    def broken(command: c.Deposit, out: list[Event]) -> None:
        raise RuntimeError("core bug")

    handlers = core._handlers
    original = handlers[c.Deposit]
    handlers[c.Deposit] = broken
    try:
        with structlog.testing.capture_logs() as logs:
            rid = await ops.send("deposit", account_id="su2", amount=5)
            error = await ops.expect(p.Error, id=rid)
            await asyncio.sleep(0)
    finally:
        handlers[c.Deposit] = original
    assert error.code is p.ErrorCode.INTERNAL_ERROR
    assert "nothing was changed" in error.text
    assert any(e["event"] == "command_failed" and e["request"] == "deposit" for e in logs)
    rid = await ops.send("deposit", account_id="su2", amount=5)
    ack = await ops.expect(p.Ack, id=rid)
    assert ack.result["account_id"] == "su2"

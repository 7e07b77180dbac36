"""The life of orders over real sockets: entry, amend, cancel, fills, status."""

from __future__ import annotations

import typing

from exchange.events import Event
from gateway import protocol as p
from gateway.app import SERVICE
from tests.gateway.conftest import CASH, H100, Gateway, now_ns


async def test_order_life_new_amend_cancel(gateway: Gateway) -> None:
    su1 = await gateway.connect("su1")
    rid = await su1.send(
        "new_order", client_order_id="b1", instrument_id=H100, side="BUY", qty=80, price=1000
    )
    new = await su1.expect(p.ExecutionReport, id=rid)
    assert (new.exec_type, new.ord_status) == (p.ExecType.NEW, p.OrdStatus.NEW)
    assert (new.client_order_id, new.qty, new.leaves_qty, new.price) == ("b1", 80, 80, 1000)
    assert new.order_id > 0

    rid = await su1.send("amend_order", client_order_id="b1", qty=40)
    amended = await su1.expect(p.ExecutionReport, id=rid)
    assert amended.exec_type is p.ExecType.REPLACED
    assert (amended.qty, amended.leaves_qty, amended.order_id) == (40, 40, new.order_id)

    rid = await su1.send("amend_order", order_id=new.order_id, qty=44)
    reject = await su1.expect(p.CancelReject, id=rid)
    assert (reject.reason, reject.request) == ("OFF_LOT", "amend_order")
    assert reject.text == "quantity 44 is not a whole number of lots of 8 GPU-hours"
    rid = await su1.send("amend_order", client_order_id="b1", price=1003)
    reject = await su1.expect(p.CancelReject, id=rid)
    assert reject.text == "price 1003 fen is not a whole number of ticks of 10 fen"

    rid = await su1.send("order_status", client_order_id="b1")
    status = await su1.expect(p.ExecutionReport, id=rid)
    assert status.exec_type is p.ExecType.ORDER_STATUS
    assert status.ord_status is p.OrdStatus.NEW and status.qty == 40

    rid = await su1.send("mass_status")
    listed = await su1.expect(p.ExecutionReport, id=rid)
    assert listed.order_id == new.order_id
    done = await su1.expect(p.MassStatusDone, id=rid)
    assert done.count == 1

    rid = await su1.send("cancel_order", order_id=new.order_id)
    cancelled = await su1.expect(p.ExecutionReport, id=rid)
    assert cancelled.exec_type is p.ExecType.CANCELLED
    assert cancelled.ord_status is p.OrdStatus.CANCELLED
    assert (cancelled.leaves_qty, cancelled.reason) == (0, "REQUESTED")

    rid = await su1.send("cancel_order", order_id=new.order_id)
    reject = await su1.expect(p.CancelReject, id=rid)
    assert reject.reason == "UNKNOWN_ORDER" and reject.request == "cancel_order"

    rid = await su1.send("mass_status")
    done = await su1.expect(p.MassStatusDone, id=rid)
    assert done.count == 0


async def test_two_clients_trade_and_both_get_reports(gateway: Gateway) -> None:
    su1 = await gateway.connect("su1")
    dc1 = await gateway.connect("dc1", header=True)
    ask = await dc1.send(
        "new_order", client_order_id="s1", instrument_id=H100, side="SELL", qty=80, price=1500
    )
    resting = await dc1.expect(p.ExecutionReport, id=ask)
    assert resting.exec_type is p.ExecType.NEW

    bid = await su1.send(
        "new_order", client_order_id="b1", instrument_id=H100, side="BUY", qty=48, price=1600
    )
    ack = await su1.expect(p.ExecutionReport, id=bid, exec_type=p.ExecType.NEW)
    fill = await su1.expect(p.ExecutionReport, id=bid, exec_type=p.ExecType.FILL)
    assert ack.price == 1600
    assert (fill.last_price, fill.last_qty, fill.cum_qty, fill.leaves_qty) == (1500, 48, 48, 0)
    assert fill.ord_status is p.OrdStatus.FILLED
    assert fill.cash == 1500 * 48 and fill.voucher == 0
    contract = await su1.expect(p.Contract)
    assert (contract.buyer, contract.seller, contract.qty) == ("su1", "dc1", 48)
    balance = await su1.expect(p.Balance, account_id="su1")
    assert balance.cash == CASH - 1500 * 48
    assert balance.holdings == {H100: 48}

    part = await dc1.expect(
        p.ExecutionReport, order_id=resting.order_id, exec_type=p.ExecType.PARTIAL_FILL
    )
    assert part.id is None  # a fill of a resting order answers no request of dc1's
    assert (part.cum_qty, part.leaves_qty, part.cum_value) == (48, 32, 1500 * 48)
    assert part.ord_status is p.OrdStatus.PARTIALLY_FILLED
    assert part.trade_id == fill.trade_id == contract.contract_id
    seller_balance = await dc1.expect(p.Balance, account_id="dc1")
    assert seller_balance.cash == 1500 * 48
    # su1 never sees dc1's own report.
    assert not any(isinstance(m, p.ExecutionReport) and m.account == "dc1" for m in su1.seen)
    # A connection not on the private channel gets its reports, not the rest.
    order_entry = await gateway.connect("su1", private=False)
    rid = await order_entry.send(
        "new_order", client_order_id="b2", instrument_id=H100, side="BUY", qty=8, price=1500
    )
    await order_entry.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.FILL)
    await su1.expect(p.Contract, qty=8)
    rid = await order_entry.send("ping")
    await order_entry.expect(p.Pong, id=rid)
    assert not any(
        isinstance(m, p.Balance | p.Contract | p.VoucherBalance) for m in order_entry.seen
    )


async def test_ioc_remainder_and_gtd_expiry(gateway: Gateway) -> None:
    su1 = await gateway.connect("su1")
    rid = await su1.send(
        "new_order",
        client_order_id="ioc",
        instrument_id=H100,
        side="BUY",
        qty=8,
        price=1000,
        tif="IOC",
    )
    done = await su1.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.CANCELLED)
    assert done.reason == "IOC_REMAINDER" and done.cum_qty == 0

    expire_at = now_ns() + 300_000_000  # 0.3 s from now
    rid = await su1.send(
        "new_order",
        client_order_id="gtd",
        instrument_id=H100,
        side="BUY",
        qty=8,
        price=1000,
        tif="GTD",
        expire_at=expire_at,
    )
    await su1.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.NEW)
    expired = await su1.expect(
        p.ExecutionReport, client_order_id="gtd", exec_type=p.ExecType.EXPIRED
    )
    assert expired.ord_status is p.OrdStatus.EXPIRED and expired.id is None


async def test_cancel_all_per_instrument_and_everything(gateway: Gateway) -> None:
    dc1 = await gateway.connect("dc1")
    for n, instrument_id in enumerate((H100, H100, "ASCEND910B-SUZHOU-STATE-W1")):
        await dc1.order(f"s{n}", instrument_id, "SELL", 8, 2000 + 10 * n)
    rid = await dc1.send("cancel_all", instrument_id=H100)
    done = await dc1.expect(p.CancelAllDone, id=rid)
    assert done.cancelled == 2
    cancelled = [m for m in dc1.seen if isinstance(m, p.ExecutionReport) and m.id == rid]
    assert sorted(m.client_order_id for m in cancelled) == ["s0", "s1"]
    assert all(m.reason == "MASS_CANCEL" for m in cancelled)
    rid = await dc1.send("cancel_all")
    done = await dc1.expect(p.CancelAllDone, id=rid)
    assert done.cancelled == 1


async def test_reconnect_resubmit_same_client_order_id_is_not_filled_twice(
    gateway: Gateway,
) -> None:
    dc1 = await gateway.connect("dc1")
    rid = await dc1.send(
        "new_order", client_order_id="ask", instrument_id=H100, side="SELL", qty=160, price=1200
    )
    await dc1.expect(p.ExecutionReport, id=rid)

    su1 = await gateway.connect("su1")
    await su1.send(
        "new_order", client_order_id="once", instrument_id=H100, side="BUY", qty=80, price=1200
    )
    await su1.ws.close()  # the connection drops before the client reads its answer

    again = await gateway.connect("su1")
    rid = await again.send(
        "new_order", client_order_id="once", instrument_id=H100, side="BUY", qty=80, price=1200
    )
    rejected = await again.expect(p.ExecutionReport, id=rid)
    assert rejected.exec_type is p.ExecType.REJECTED
    assert rejected.reason == "DUPLICATE_CLIENT_ORDER_ID"
    rid = await again.send("order_status", client_order_id="once")
    status = await again.expect(p.ExecutionReport, id=rid)
    assert status.ord_status is p.OrdStatus.FILLED and status.cum_qty == 80

    code, contracts = await gateway.get("/api/v1/contracts", "su1")
    assert code == 200
    assert [(c["qty"], c["price"]) for c in contracts] == [(80, 1200)]
    core = gateway.app[SERVICE].core
    assert core.accounts["su1"].holdings == {H100: 80}


async def test_voucher_purchase_claim_and_settlement(gateway: Gateway) -> None:
    su1 = await gateway.connect("su1")
    dc1 = await gateway.connect("dc1")
    city = await gateway.connect("city")
    rid = await dc1.send(
        "new_order", client_order_id="s", instrument_id=H100, side="SELL", qty=80, price=1000
    )
    await dc1.expect(p.ExecutionReport, id=rid)
    rid = await su1.send(
        "new_order",
        client_order_id="vb",
        instrument_id=H100,
        side="BUY",
        qty=80,
        price=1000,
        voucher_id=1,
    )
    fill = await su1.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.FILL)
    assert fill.voucher == 80 * 1000 * 3_000 // 10_000  # 30%: state-run, foreign chip
    assert fill.cash + fill.voucher == 80 * 1000
    voucher = await su1.expect(p.VoucherBalance, voucher_id=1, spent=fill.voucher)
    assert voucher.balance == 1_000_000 - fill.voucher
    claim = await dc1.expect(p.Claim)
    assert (claim.amount, claim.issuer, claim.settled) == (fill.voucher, "city", False)
    issuer_view = await city.expect(p.Claim, claim_id=claim.claim_id)
    assert issuer_view.provider == "dc1"

    rid = await city.send("settle_claim", claim_id=claim.claim_id)
    ack = await city.expect(p.Ack, id=rid)
    assert ack.result == {"claim_id": claim.claim_id, "amount": fill.voucher}
    settled = await dc1.expect(p.Claim, claim_id=claim.claim_id, settled=True)
    assert settled.settled_at > 0
    balance = await dc1.expect(p.Balance, cash=80 * 1000)
    assert balance.account_id == "dc1"
    rid = await city.send("settle_claim", claim_id=claim.claim_id)
    again = await city.expect(p.Rejected, id=rid)
    assert again.reason == "CLAIM_SETTLED"


def test_no_event_class_is_subclassed_so_the_router_can_tell_them_apart_by_type() -> None:
    """``Router.on_command`` matches events with ``type(ev) is X``: an event that
    subclassed another would pass by its branch unhandled."""
    for kind in typing.get_args(Event):
        assert kind.__subclasses__() == [], kind

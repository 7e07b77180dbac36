"""Amend: what keeps queue priority, what loses it, and what an amend may cost.

Market: tick 10 fen, lot 8 GPU-hours; su1 and su2 start with 10,000,000 fen;
su1 holds voucher 1 (1,000,000 fen, 30% on state-run foreign-chip H100).
"""

from __future__ import annotations

from typing import Any

import msgspec

from exchange import commands as c
from exchange.book import Order, OrderState
from exchange.events import OrderAmended, OrderCancelled, Trade
from exchange.reasons import Reason
from exchange.records import Account
from exchange.reference import InstrumentStatus, Role, SelfTradePrevention, Side, TimeInForce
from tests.market import H100, HOUR, Market
from tests.test_orders import START_CASH, capacity, cash, depth, of, one, rejected


def amend(m: Market, who: str, order_id: int, **kw: Any) -> list[Any]:
    return m.apply(c.AmendOrder(actor=who, order_id=order_id, **kw))


def queue(m: Market, side: Side) -> list[int]:
    return [o.order_id for o in m.core.books[H100].orders(side)]


def test_reduce_keeps_priority() -> None:
    m = Market()
    m.sell("dc1", "s1", 16, 1000)  # 1
    m.sell("dc2", "s2", 8, 1000)  # 2
    amended = one(m.ok(c.AmendOrder(actor="dc1", order_id=1, qty=8)), OrderAmended)
    assert (amended.qty, amended.leaves, amended.price, amended.requeued) == (8, 8, 1000, False)
    assert capacity(m, "dc1") == (8_000 - 8, 8, 0)
    assert depth(m) == ([], [(1000, 16)])
    assert queue(m, Side.SELL) == [1, 2]
    # The proof: the next buy still meets dc1 first.
    trade = one(m.buy("su2", "b1", 8, 1000), Trade)
    assert (trade.seller, trade.sell_order_id) == ("dc1", 1)


def test_quantity_increase_loses_priority() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)  # 1
    m.sell("dc2", "s2", 8, 1000)  # 2
    amended = one(m.ok(c.AmendOrder(actor="dc1", order_id=1, qty=16)), OrderAmended)
    assert (amended.qty, amended.leaves, amended.requeued) == (16, 16, True)
    assert capacity(m, "dc1") == (8_000 - 16, 16, 0)
    assert queue(m, Side.SELL) == [2, 1]
    trade = one(m.buy("su2", "b1", 8, 1000), Trade)
    assert trade.seller == "dc2"


def test_price_change_loses_priority_even_at_an_existing_level() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1010)  # 1, earlier
    m.sell("dc2", "s2", 8, 1000)  # 2
    one(m.ok(c.AmendOrder(actor="dc1", order_id=1, price=1000)), OrderAmended)
    assert queue(m, Side.SELL) == [2, 1]
    assert depth(m) == ([], [(1000, 16)])
    trade = one(m.buy("su2", "b1", 8, 1000), Trade)
    assert trade.seller == "dc2"


def test_amend_back_and_forth_goes_to_the_back() -> None:
    m = Market()
    m.buy("su1", "b1", 8, 1000)  # 1
    m.buy("su2", "b2", 8, 1000)  # 2
    m.ok(c.AmendOrder(actor="su1", order_id=1, price=990))
    m.ok(c.AmendOrder(actor="su1", order_id=1, price=1000))
    assert queue(m, Side.BUY) == [2, 1]
    trade = one(m.sell("dc1", "s1", 8, 1000), Trade)
    assert trade.buyer == "su2"


def test_amend_by_client_order_id() -> None:
    m = Market()
    m.buy("su2", "b1", 16, 1000)
    amended = one(
        m.ok(c.AmendOrder(actor="su2", client_order_id="b1", qty=8, price=990)), OrderAmended
    )
    assert (amended.order_id, amended.qty, amended.price, amended.cash_reserved) == (
        1,
        8,
        990,
        7_920,
    )
    assert cash(m, "su2") == (START_CASH - 7_920, 7_920)


def test_buy_reduce_frees_cash_at_once() -> None:
    m = Market()
    m.buy("su2", "b1", 24, 1000)
    amended = one(amend(m, "su2", 1, qty=8), OrderAmended)
    assert amended.cash_reserved == 8_000
    assert cash(m, "su2") == (START_CASH - 8_000, 8_000)


def test_amend_qty_counts_what_is_filled() -> None:
    m = Market()
    m.buy("su2", "b1", 24, 1000)
    m.sell("dc1", "s1", 8, 1000)  # fills 8 of 24
    assert cash(m, "su2") == (START_CASH - 24_000, 16_000)
    amended = one(amend(m, "su2", 1, qty=16), OrderAmended)
    assert (amended.qty, amended.leaves, amended.requeued, amended.cash_reserved) == (
        16,
        8,
        False,
        8_000,
    )
    assert cash(m, "su2") == (START_CASH - 16_000, 8_000)
    # The new total may not be at or below what is already filled.
    assert rejected(amend(m, "su2", 1, qty=8)) is Reason.INVALID_QUANTITY


def test_amend_that_crosses_trades_at_once() -> None:
    m = Market()
    m.buy("su2", "b1", 16, 900)  # 1
    m.sell("dc1", "s1", 8, 1000)  # 2
    events = m.ok(c.AmendOrder(actor="su2", order_id=1, price=1000))
    assert [type(e) for e in events] == [OrderAmended, Trade]
    amended, trade = events
    assert (amended.requeued, amended.cash_reserved) == (True, 16_000)
    assert (trade.price, trade.qty, trade.aggressor, trade.buy_order_id, trade.seller) == (
        1000,
        8,
        Side.BUY,
        1,
        "dc1",
    )
    assert (trade.buy_leaves, trade.sell_leaves) == (8, 0)
    assert depth(m) == ([(1000, 8)], [])
    assert cash(m, "su2") == (START_CASH - 16_000, 8_000)
    assert cash(m, "dc1") == (8_000, 0)


def test_sell_amend_that_crosses_trades_at_the_bid() -> None:
    m = Market()
    m.buy("su2", "b1", 8, 1000)
    m.sell("dc1", "s1", 8, 1100)
    events = m.ok(c.AmendOrder(actor="dc1", order_id=2, price=950))
    trade = one(events, Trade)
    assert (trade.price, trade.aggressor) == (1000, Side.SELL)
    assert depth(m) == ([], [])
    assert 2 not in m.core.orders
    assert capacity(m, "dc1") == (8_000 - 8, 0, 8)


def test_amend_needs_the_cash_for_the_new_reservation() -> None:
    m = Market()
    m.buy("su2", "b1", 8, 1_000_000)  # 8,000,000 of 10,000,000
    assert rejected(amend(m, "su2", 1, qty=16)) is Reason.INSUFFICIENT_FUNDS
    assert rejected(amend(m, "su2", 1, price=1_250_010)) is Reason.INSUFFICIENT_FUNDS
    assert cash(m, "su2") == (2_000_000, 8_000_000)
    # Exactly what is free plus what the order holds is enough.
    amended = one(amend(m, "su2", 1, price=1_250_000), OrderAmended)
    assert amended.cash_reserved == START_CASH
    assert cash(m, "su2") == (0, START_CASH)


def test_amend_needs_free_capacity_for_a_larger_sell() -> None:
    m = Market()
    m.sell("dc1", "s1", 7_992, 1000)
    assert rejected(amend(m, "dc1", 1, qty=8_008)) is Reason.INSUFFICIENT_CAPACITY
    assert capacity(m, "dc1") == (8, 7_992, 0)
    one(amend(m, "dc1", 1, qty=8_000), OrderAmended)
    assert capacity(m, "dc1") == (0, 8_000, 0)


def test_post_only_amend_that_would_cross_is_refused() -> None:
    m = Market()
    m.buy("su2", "p1", 16, 900, post_only=True)
    m.sell("dc1", "s1", 8, 1000)
    assert rejected(amend(m, "su2", 1, price=1000)) is Reason.POST_ONLY_WOULD_CROSS
    assert depth(m) == ([(900, 16)], [(1000, 8)])
    # Reducing it, or moving it closer without crossing, is fine.
    assert one(amend(m, "su2", 1, qty=8), OrderAmended).requeued is False
    assert one(amend(m, "su2", 1, price=990), OrderAmended).requeued is True
    assert depth(m) == ([(990, 8)], [(1000, 8)])


def test_amend_validates_price_and_quantity() -> None:
    m = Market()
    m.buy("su2", "b1", 16, 1000)
    assert rejected(amend(m, "su2", 1, qty=12)) is Reason.OFF_LOT
    assert rejected(amend(m, "su2", 1, qty=0)) is Reason.INVALID_QUANTITY
    assert rejected(amend(m, "su2", 1, qty=10_000_008)) is Reason.INVALID_QUANTITY
    assert rejected(amend(m, "su2", 1, price=1005)) is Reason.OFF_TICK
    assert rejected(amend(m, "su2", 1, price=0)) is Reason.INVALID_PRICE
    assert rejected(amend(m, "su2", 1, price=-10)) is Reason.INVALID_PRICE
    assert rejected(amend(m, "su2", 9)) is Reason.UNKNOWN_ORDER
    assert rejected(amend(m, "su1", 1, qty=8)) is Reason.NOT_YOUR_ORDER
    assert m.core.orders[1].qty == 16


def test_amend_halted_only_takes_quantity_off_allowed_in_auction() -> None:
    m = Market(status=InstrumentStatus.AUCTION)
    m.buy("su2", "b1", 16, 1000)
    m.sell("dc1", "s1", 8, 900)
    # In the call the amend rests crossed, with no trade.
    events = m.ok(c.AmendOrder(actor="su2", order_id=1, price=1010))
    assert of(events, Trade) == []
    assert depth(m) == ([(1010, 16)], [(900, 8)])
    m.ok(c.SetInstrumentStatus(actor="ops", instrument_id=H100, status=InstrumentStatus.HALTED))
    # Halted: a new price, more, or the same is refused; less at the same price is a
    # partial cancel, and keeps the order's place.
    assert rejected(amend(m, "su2", 1, price=1000)) is Reason.MARKET_HALTED
    assert rejected(amend(m, "su2", 1, qty=24)) is Reason.MARKET_HALTED
    assert rejected(amend(m, "su2", 1, qty=16)) is Reason.MARKET_HALTED
    assert rejected(amend(m, "su2", 1, qty=8, price=1000)) is Reason.MARKET_HALTED
    amended = one(amend(m, "su2", 1, qty=8), OrderAmended)
    assert (amended.qty, amended.leaves, amended.requeued) == (8, 8, False)
    assert depth(m) == ([(1010, 8)], [(900, 8)])
    assert cash(m, "su2") == (START_CASH - 8 * 1010, 8 * 1010)


def test_voucher_buy_amend_recomputes_both_parts() -> None:
    m = Market()
    m.buy("su1", "v1", 16, 1000, voucher_id=1)
    voucher = m.core.vouchers[1]
    # 16,000 at 30%: 4,800 from the voucher, 11,200 in cash.
    assert (m.core.orders[1].cash_reserved, m.core.orders[1].voucher_reserved) == (11_200, 4_800)
    assert (voucher.balance, voucher.reserved) == (995_200, 4_800)
    amended = one(amend(m, "su1", 1, qty=8), OrderAmended)
    assert (amended.cash_reserved, amended.voucher_reserved) == (5_600, 2_400)
    assert (voucher.balance, voucher.reserved) == (997_600, 2_400)
    assert cash(m, "su1") == (START_CASH - 5_600, 5_600)
    trade = one(m.sell("dc1", "s1", 8, 1000), Trade)
    assert (trade.cash, trade.voucher) == (5_600, 2_400)
    assert (voucher.balance, voucher.reserved, voucher.spent) == (997_600, 0, 2_400)
    assert cash(m, "su1") == (START_CASH - 5_600, 0)


def test_amended_gtd_order_still_expires() -> None:
    m = Market()
    m.buy("su2", "g1", 8, 1000, tif=TimeInForce.GTD, expire_at=m.now + HOUR)
    m.ok(c.AmendOrder(actor="su2", order_id=1, price=990))
    events = m.advance(HOUR)
    cancelled = one(events, OrderCancelled)
    assert (cancelled.order_id, cancelled.price) == (1, 990)
    assert cash(m, "su2") == (START_CASH, 0)


def test_a_requeued_record_copies_every_field_but_price_and_size() -> None:
    """``Order.requeued`` lists the fields by hand: compare it with the record form,
    from a record whose every field differs from its default, so one left out shows."""
    state = OrderState(
        order_id=5,
        account="su1",
        client_order_id="b1",
        instrument_id=H100,
        side=Side.SELL,
        price=1000,
        qty=16,
        leaves=8,
        tif=TimeInForce.GTD,
        expire_at=123,
        post_only=True,
        min_qty=8,
        stp=SelfTradePrevention.CANCEL_BOTH,
        voucher_id=1,
        rate_bp=3000,
        cash_reserved=11,
        voucher_reserved=12,
        voucher_cap=13,
        seg_value=14,
        seg_voucher=15,
        priority=16,
        entered_at=17,
        live=False,
    )
    owner = Account(account_id="su1", role=Role.STARTUP)
    old = Order.from_state(state, owner)
    fresh = old.requeued(1010, 24, 24)
    assert fresh.state() == msgspec.structs.replace(state, price=1010, qty=24, leaves=24, live=True)
    assert fresh.owner is owner and old.state() == state

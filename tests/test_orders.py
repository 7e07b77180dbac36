"""Order entry: types, time in force, options, cancels and reservations.

Market: tick 10 fen, lot 8 GPU-hours; su1 and su2 start with 10,000,000 fen;
dc1 and dc2 hold 8,000 GPU-hours on each state-run instrument.
"""

from __future__ import annotations

from typing import Any, TypeVar

from exchange import commands as c
from exchange.core import NEVER
from exchange.events import Event, OrderAccepted, OrderCancelled, Rejected, Trade
from exchange.reasons import CancelReason, Reason
from exchange.reference import OrderType, Side, TimeInForce
from tests.market import ASCEND, H100, HOUR, T0, Market

E = TypeVar("E")

START_CASH = 10_000_000


def of(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def one(events: list[Event], kind: type[E]) -> E:
    found = of(events, kind)
    assert len(found) == 1, events
    return found[0]


def rejected(events: list[Event]) -> Reason:
    assert len(events) == 1 and isinstance(events[0], Rejected), events
    return events[0].reason


def cash(m: Market, who: str) -> tuple[int, int]:
    account = m.core.accounts[who]
    return account.cash, account.cash_reserved


def capacity(m: Market, who: str, instrument_id: str = H100) -> tuple[int, int, int]:
    account = m.core.accounts[who]
    return (
        account.capacity[instrument_id],
        account.capacity_reserved[instrument_id],
        account.capacity_sold[instrument_id],
    )


def depth(m: Market, instrument_id: str = H100) -> tuple[list[Any], list[Any]]:
    book = m.core.books[instrument_id]
    return book.depth(Side.BUY, 10), book.depth(Side.SELL, 10)


def market_order(m: Market, who: str, coid: str, side: Side, qty: int, **kw: Any) -> list[Event]:
    kw.setdefault("instrument_id", H100)
    kw.setdefault("tif", TimeInForce.IOC)
    return m.apply(
        c.NewOrder(
            actor=who,
            client_order_id=coid,
            side=side,
            qty=qty,
            order_type=OrderType.MARKET,
            **kw,
        )
    )


# --- limit orders --------------------------------------------------------------


def test_limit_buy_rests_and_reserves_price_times_qty() -> None:
    m = Market()
    accepted = one(m.buy("su2", "b1", 16, 1000), OrderAccepted)
    assert (accepted.order_id, accepted.cash_reserved, accepted.voucher_reserved) == (1, 16_000, 0)
    assert accepted.expire_at == NEVER
    order = m.core.orders[1]
    assert (order.price, order.leaves, order.cash_reserved) == (1000, 16, 16_000)
    assert cash(m, "su2") == (START_CASH - 16_000, 16_000)
    assert depth(m) == ([(1000, 16)], [])


def test_limit_sell_reserves_capacity() -> None:
    m = Market()
    accepted = one(m.sell("dc1", "s1", 24, 1200), OrderAccepted)
    assert (accepted.side, accepted.price, accepted.qty, accepted.cash_reserved) == (
        Side.SELL,
        1200,
        24,
        0,
    )
    assert capacity(m, "dc1") == (8_000 - 24, 24, 0)
    assert depth(m) == ([], [(1200, 24)])


def test_fill_at_resting_price_first_come_first_served() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)  # order 1
    m.sell("dc2", "s2", 8, 1000)  # order 2, same price, later
    events = m.buy("su2", "b1", 8, 1020)
    trade = one(events, Trade)
    assert (trade.price, trade.qty, trade.seller, trade.sell_order_id) == (1000, 8, "dc1", 1)
    assert (trade.buyer, trade.aggressor, trade.cash, trade.voucher) == ("su2", Side.BUY, 8_000, 0)
    assert (trade.buy_leaves, trade.sell_leaves) == (0, 0)
    # The buy reserved 8 * 1020 = 8,160 and spent 8,000: the 160 comes back.
    assert cash(m, "su2") == (START_CASH - 8_000, 0)
    assert cash(m, "dc1") == (8_000, 0)
    assert capacity(m, "dc1") == (8_000 - 8, 0, 8)
    assert m.core.accounts["su2"].holdings[H100] == 8
    assert depth(m) == ([], [(1000, 8)])
    assert [o.account for o in m.core.books[H100].orders(Side.SELL)] == ["dc2"]


def test_better_price_trades_before_earlier_arrival() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1010)
    m.sell("dc2", "s2", 8, 1000)
    trade = one(m.buy("su2", "b1", 8, 1010), Trade)
    assert (trade.seller, trade.price) == ("dc2", 1000)


def test_buy_sweeps_levels_at_each_resting_price() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    m.sell("dc2", "s2", 16, 1020)
    events = m.buy("su2", "b1", 24, 1030)
    trades = of(events, Trade)
    assert [(t.seller, t.price, t.qty, t.cash) for t in trades] == [
        ("dc1", 1000, 8, 8_000),
        ("dc2", 1020, 16, 16_320),
    ]
    assert cash(m, "su2") == (START_CASH - 24_320, 0)
    assert depth(m) == ([], [])


def test_sell_aggressor_trades_at_resting_bid() -> None:
    m = Market()
    m.buy("su1", "b1", 8, 1000)
    m.buy("su2", "b2", 8, 1050)
    trades = of(m.sell("dc1", "s1", 16, 990), Trade)
    assert [(t.buyer, t.price, t.aggressor) for t in trades] == [
        ("su2", 1050, Side.SELL),
        ("su1", 1000, Side.SELL),
    ]
    assert cash(m, "dc1") == (16_400, 0)
    assert cash(m, "su1") == (START_CASH - 8_000, 0)
    assert cash(m, "su2") == (START_CASH - 8_400, 0)


def test_partial_fill_at_better_price_keeps_the_rest_reserved_until_cancel() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    events = m.buy("su2", "b1", 16, 1050)
    assert one(events, OrderAccepted).cash_reserved == 16_800
    assert one(events, Trade).cash == 8_000
    # What the order could still spend stays held: 16,800 - 8,000.
    assert m.core.orders[2].cash_reserved == 8_800
    assert cash(m, "su2") == (START_CASH - 16_800, 8_800)
    assert depth(m) == ([(1050, 8)], [])
    cancelled = one(m.ok(c.CancelOrder(actor="su2", order_id=2)), OrderCancelled)
    assert (cancelled.leaves, cancelled.reason, cancelled.rested) == (
        8,
        CancelReason.REQUESTED,
        True,
    )
    assert cash(m, "su2") == (START_CASH - 8_000, 0)
    assert depth(m) == ([], [])


def test_sell_cancel_returns_capacity() -> None:
    m = Market()
    m.sell("dc1", "s1", 40, 1000)
    m.buy("su2", "b1", 16, 1000)
    assert capacity(m, "dc1") == (8_000 - 40, 24, 16)
    m.ok(c.CancelOrder(actor="dc1", client_order_id="s1"))
    assert capacity(m, "dc1") == (8_000 - 16, 0, 16)


# --- market orders -------------------------------------------------------------


def test_market_buy_reserves_at_protection_price_and_pays_resting_prices() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    m.sell("dc2", "s2", 16, 1100)
    events = market_order(m, "su2", "m1", Side.BUY, 16)
    accepted = one(events, OrderAccepted)
    assert (accepted.order_type, accepted.price, accepted.cash_reserved) == (
        OrderType.MARKET,
        1100,
        17_600,
    )
    assert [(t.seller, t.price, t.qty) for t in of(events, Trade)] == [
        ("dc1", 1000, 8),
        ("dc2", 1100, 8),
    ]
    assert of(events, OrderCancelled) == []
    assert cash(m, "su2") == (START_CASH - 16_800, 0)
    assert depth(m) == ([], [(1100, 8)])


def test_market_buy_larger_than_book_cancels_the_remainder() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    m.sell("dc2", "s2", 16, 1100)
    events = market_order(m, "su2", "m1", Side.BUY, 32)
    # Protection price: the worst price on the book, reached before the quantity runs out.
    assert one(events, OrderAccepted).cash_reserved == 32 * 1100
    assert sum(t.qty for t in of(events, Trade)) == 24
    cancelled = one(events, OrderCancelled)
    assert (cancelled.leaves, cancelled.reason, cancelled.rested) == (
        8,
        CancelReason.IOC_REMAINDER,
        False,
    )
    assert cash(m, "su2") == (START_CASH - 8_000 - 17_600, 0)
    assert depth(m) == ([], [])


def test_market_sell_hits_bids_down_to_protection_price() -> None:
    m = Market()
    m.buy("su1", "b1", 8, 900)
    m.buy("su2", "b2", 8, 950)
    events = market_order(m, "dc1", "m1", Side.SELL, 16)
    assert one(events, OrderAccepted).price == 900
    assert [(t.buyer, t.price) for t in of(events, Trade)] == [("su2", 950), ("su1", 900)]
    assert capacity(m, "dc1") == (8_000 - 16, 0, 16)
    assert cash(m, "dc1") == (14_800, 0)


def test_market_order_on_empty_side_is_refused() -> None:
    m = Market()
    m.buy("su1", "b1", 8, 900)  # the wrong side for a market buy
    assert rejected(market_order(m, "su2", "m1", Side.BUY, 8)) is Reason.NO_LIQUIDITY


def test_market_buy_needs_cash_for_its_protection_price() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1_000_000)
    m.sell("dc2", "s2", 8, 1_300_000)  # 8,000,000 + 10,400,000 > 10,000,000 at 1,300,000
    assert rejected(market_order(m, "su2", "m1", Side.BUY, 16)) is Reason.INSUFFICIENT_FUNDS
    accepted = one(market_order(m, "su2", "m2", Side.BUY, 8), OrderAccepted)
    assert accepted.cash_reserved == 8_000_000


def test_market_fok_kills_when_book_is_too_thin() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    events = market_order(m, "su2", "m1", Side.BUY, 16, tif=TimeInForce.FOK)
    assert one(events, OrderCancelled).reason is CancelReason.FOK_UNFILLED
    assert of(events, Trade) == []
    assert depth(m) == ([], [(1000, 8)])
    assert cash(m, "su2") == (START_CASH, 0)


# --- time in force --------------------------------------------------------------


def test_ioc_trades_what_it_can_and_never_rests() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    events = m.buy("su2", "b1", 16, 1000, tif=TimeInForce.IOC)
    assert one(events, Trade).qty == 8
    cancelled = one(events, OrderCancelled)
    assert (cancelled.leaves, cancelled.reason, cancelled.rested) == (
        8,
        CancelReason.IOC_REMAINDER,
        False,
    )
    assert events.index(one(events, Trade)) < events.index(cancelled)
    assert depth(m) == ([], [])
    assert cash(m, "su2") == (START_CASH - 8_000, 0)
    assert 2 not in m.core.orders


def test_ioc_that_fills_whole_is_not_cancelled() -> None:
    m = Market()
    m.sell("dc1", "s1", 16, 1000)
    events = m.buy("su2", "b1", 16, 1000, tif=TimeInForce.IOC)
    assert one(events, Trade).qty == 16
    assert of(events, OrderCancelled) == []


def test_fok_fills_whole_across_levels() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    m.sell("dc2", "s2", 8, 1010)
    events = m.buy("su2", "b1", 16, 1010, tif=TimeInForce.FOK)
    assert [(t.price, t.qty) for t in of(events, Trade)] == [(1000, 8), (1010, 8)]
    assert of(events, OrderCancelled) == []
    assert cash(m, "su2") == (START_CASH - 16_080, 0)


def test_fok_kill_changes_no_book_or_balance() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    m.sell("dc2", "s2", 8, 1010)
    before = (depth(m), cash(m, "su2"), cash(m, "dc1"), capacity(m, "dc1"), capacity(m, "dc2"))
    # 24 wanted, 16 on offer; and 16 wanted at 1000 where only 8 are on offer.
    for coid, qty, price in (("f1", 24, 1010), ("f2", 16, 1000)):
        events = m.buy("su2", coid, qty, price, tif=TimeInForce.FOK)
        assert [type(e) for e in events] == [OrderAccepted, OrderCancelled]
        cancelled = one(events, OrderCancelled)
        assert (cancelled.leaves, cancelled.reason, cancelled.rested) == (
            qty,
            CancelReason.FOK_UNFILLED,
            False,
        )
    after = (depth(m), cash(m, "su2"), cash(m, "dc1"), capacity(m, "dc1"), capacity(m, "dc2"))
    assert after == before
    assert m.core.contracts == {}


def test_gtd_order_expires_at_its_time() -> None:
    m = Market()
    accepted = one(
        m.buy("su2", "g1", 8, 1000, tif=TimeInForce.GTD, expire_at=T0 + HOUR), OrderAccepted
    )
    assert accepted.expire_at == T0 + HOUR
    assert m.core.next_deadline() == T0 + HOUR
    assert m.advance(HOUR - 1) == []
    assert depth(m) == ([(1000, 8)], [])
    events = m.advance(1)
    cancelled = one(events, OrderCancelled)
    assert (cancelled.order_id, cancelled.reason, cancelled.leaves, cancelled.rested) == (
        1,
        CancelReason.EXPIRED,
        8,
        True,
    )
    assert depth(m) == ([], [])
    assert cash(m, "su2") == (START_CASH, 0)


def test_gtd_expiry_fires_before_a_command_at_the_same_time() -> None:
    m = Market()
    m.buy("su2", "g1", 8, 1000, tif=TimeInForce.GTD, expire_at=T0 + HOUR)
    m.now = T0 + HOUR
    events = m.sell("dc1", "s1", 8, 1000)
    assert [type(e) for e in events] == [OrderCancelled, OrderAccepted]
    assert events[0].reason is CancelReason.EXPIRED
    assert depth(m) == ([], [(1000, 8)])


def test_gtd_partly_filled_expires_with_its_remainder() -> None:
    m = Market()
    m.buy("su2", "g1", 16, 1000, tif=TimeInForce.GTD, expire_at=T0 + HOUR)
    m.sell("dc1", "s1", 8, 1000)
    cancelled = one(m.advance(HOUR), OrderCancelled)
    assert cancelled.leaves == 8
    assert cash(m, "su2") == (START_CASH - 8_000, 0)


# --- options ---------------------------------------------------------------------


def test_post_only_that_would_cross_is_refused() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    before = cash(m, "su2")
    assert rejected(m.buy("su2", "p1", 8, 1000, post_only=True)) is Reason.POST_ONLY_WOULD_CROSS
    assert rejected(m.buy("su2", "p2", 8, 1100, post_only=True)) is Reason.POST_ONLY_WOULD_CROSS
    assert cash(m, "su2") == before
    accepted = one(m.buy("su2", "p3", 8, 990, post_only=True), OrderAccepted)
    assert accepted.post_only
    assert depth(m) == ([(990, 8)], [(1000, 8)])
    assert rejected(m.sell("dc2", "p4", 8, 990, post_only=True)) is Reason.POST_ONLY_WOULD_CROSS
    one(m.sell("dc2", "p5", 8, 1000, post_only=True), OrderAccepted)
    assert depth(m) == ([(990, 8)], [(1000, 16)])


def test_min_qty_met_trades_and_rests_the_rest() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    m.sell("dc2", "s2", 8, 1000)
    events = m.buy("su2", "b1", 24, 1000, min_qty=16)
    assert [(t.seller, t.qty) for t in of(events, Trade)] == [("dc1", 8), ("dc2", 8)]
    assert of(events, OrderCancelled) == []
    assert depth(m) == ([(1000, 8)], [])


def test_min_qty_unmet_cancels_without_trading() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    m.sell("dc2", "s2", 8, 1010)  # beyond the buy's limit: does not count
    events = m.buy("su2", "b1", 24, 1000, min_qty=16)
    cancelled = one(events, OrderCancelled)
    assert (cancelled.reason, cancelled.leaves, cancelled.rested) == (
        CancelReason.MIN_QTY_UNMET,
        24,
        False,
    )
    assert of(events, Trade) == []
    assert depth(m) == ([], [(1000, 8), (1010, 8)])
    assert cash(m, "su2") == (START_CASH, 0)


def test_min_qty_on_a_sell() -> None:
    m = Market()
    m.buy("su1", "b1", 8, 1000)
    events = m.sell("dc1", "s1", 16, 1000, min_qty=16)
    assert one(events, OrderCancelled).reason is CancelReason.MIN_QTY_UNMET
    assert capacity(m, "dc1") == (8_000, 0, 0)
    events = m.sell("dc1", "s2", 16, 1000, min_qty=8)
    assert one(events, Trade).qty == 8
    assert depth(m) == ([], [(1000, 8)])


# --- cancels ---------------------------------------------------------------------


def test_cancel_by_order_id_and_by_client_order_id() -> None:
    m = Market()
    m.buy("su2", "b1", 8, 1000)
    m.buy("su2", "b2", 16, 990)
    first = one(m.ok(c.CancelOrder(actor="su2", order_id=1)), OrderCancelled)
    assert (first.order_id, first.client_order_id, first.leaves) == (1, "b1", 8)
    second = one(m.ok(c.CancelOrder(actor="su2", client_order_id="b2")), OrderCancelled)
    assert (second.order_id, second.price, second.leaves, second.reason) == (
        2,
        990,
        16,
        CancelReason.REQUESTED,
    )
    assert depth(m) == ([], [])
    assert cash(m, "su2") == (START_CASH, 0)
    # Both are gone now.
    assert rejected(m.apply(c.CancelOrder(actor="su2", order_id=1))) is Reason.UNKNOWN_ORDER
    assert (
        rejected(m.apply(c.CancelOrder(actor="su2", client_order_id="b2"))) is Reason.UNKNOWN_ORDER
    )


def test_client_order_ids_are_per_account() -> None:
    m = Market()
    m.buy("su1", "same", 8, 1000)
    m.buy("su2", "same", 8, 990)
    cancelled = one(m.ok(c.CancelOrder(actor="su2", client_order_id="same")), OrderCancelled)
    assert (cancelled.account, cancelled.order_id) == ("su2", 2)
    assert depth(m) == ([(1000, 8)], [])


def test_filled_order_cannot_be_cancelled() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    m.buy("su2", "b1", 8, 1000)
    assert rejected(m.apply(c.CancelOrder(actor="dc1", order_id=1))) is Reason.UNKNOWN_ORDER


def test_another_accounts_order_cannot_be_cancelled() -> None:
    m = Market()
    m.buy("su1", "b1", 8, 1000)
    assert rejected(m.apply(c.CancelOrder(actor="su2", order_id=1))) is Reason.NOT_YOUR_ORDER
    # By client order id the other account's order is simply not found.
    assert (
        rejected(m.apply(c.CancelOrder(actor="su2", client_order_id="b1"))) is Reason.UNKNOWN_ORDER
    )
    assert depth(m) == ([(1000, 8)], [])


def test_operator_cancels_any_order() -> None:
    m = Market()
    m.buy("su1", "b1", 8, 1000)
    cancelled = one(m.ok(c.CancelOrder(actor="ops", order_id=1)), OrderCancelled)
    assert (cancelled.account, cancelled.reason) == ("su1", CancelReason.OPERATOR)
    assert cash(m, "su1") == (START_CASH, 0)


def _three_orders(m: Market) -> None:
    m.buy("su2", "a", 8, 1000)  # 1
    m.buy("su1", "b", 8, 990)  # 2
    m.buy("su2", "c", 8, 980, instrument_id=ASCEND)  # 3
    m.buy("su2", "d", 8, 970)  # 4


def test_cancel_all_own_orders_everywhere() -> None:
    m = Market()
    _three_orders(m)
    events = m.ok(c.CancelAll(actor="su2"))
    assert [(e.order_id, e.reason) for e in of(events, OrderCancelled)] == [
        (1, CancelReason.MASS_CANCEL),
        (3, CancelReason.MASS_CANCEL),
        (4, CancelReason.MASS_CANCEL),
    ]
    assert sorted(m.core.orders) == [2]
    assert cash(m, "su2") == (START_CASH, 0)


def test_cancel_all_own_orders_on_one_instrument() -> None:
    m = Market()
    _three_orders(m)
    events = m.ok(c.CancelAll(actor="su2", instrument_id=H100))
    assert [e.order_id for e in of(events, OrderCancelled)] == [1, 4]
    assert sorted(m.core.orders) == [2, 3]
    assert cash(m, "su2") == (START_CASH - 7_840, 7_840)


def test_operator_cancel_all_on_an_instrument_clears_everyone() -> None:
    m = Market()
    _three_orders(m)
    m.sell("dc1", "s", 8, 1100)  # 5
    events = m.ok(c.CancelAll(actor="ops", instrument_id=H100))
    assert [(e.order_id, e.account, e.reason) for e in of(events, OrderCancelled)] == [
        (1, "su2", CancelReason.OPERATOR),
        (2, "su1", CancelReason.OPERATOR),
        (4, "su2", CancelReason.OPERATOR),
        (5, "dc1", CancelReason.OPERATOR),
    ]
    assert sorted(m.core.orders) == [3]
    assert depth(m) == ([], [])
    assert capacity(m, "dc1") == (8_000, 0, 0)


def test_cancel_all_with_nothing_open_is_empty_not_an_error() -> None:
    m = Market()
    assert m.ok(c.CancelAll(actor="su2")) == []


# --- idempotent submission -------------------------------------------------------------


def test_duplicate_client_order_id_is_refused_and_not_entered_twice() -> None:
    m = Market()
    one(m.buy("su2", "once", 8, 1000), OrderAccepted)
    assert rejected(m.buy("su2", "once", 8, 1000)) is Reason.DUPLICATE_CLIENT_ORDER_ID
    assert depth(m) == ([(1000, 8)], [])
    assert cash(m, "su2") == (START_CASH - 8_000, 8_000)
    assert len(m.core.orders) == 1
    # Still refused once the first order is gone: the id names one submission forever.
    m.ok(c.CancelOrder(actor="su2", client_order_id="once"))
    assert rejected(m.buy("su2", "once", 8, 1000)) is Reason.DUPLICATE_CLIENT_ORDER_ID
    assert depth(m) == ([], [])


def test_refused_order_does_not_use_up_its_client_order_id() -> None:
    m = Market()
    assert rejected(m.buy("su2", "retry", 8, 1005)) is Reason.OFF_TICK
    one(m.buy("su2", "retry", 8, 1000), OrderAccepted)

"""Self-trade prevention: no account trades with itself, no voucher pays a related party.

Roles already keep one account off both sides (start-ups only buy, providers only
sell), so the live case is a voucher buy meeting a provider related to the buyer.
There the incoming order stops, whatever its mode: one account's order never
cancels another's. Here ``su1`` (voucher 1: 30% on H100) is related to ``dc1``;
``dc2`` is not.
"""

from __future__ import annotations

import pytest

from exchange import commands as c
from exchange.events import OrderAccepted, OrderCancelled, PartiesRelated, Trade
from exchange.reasons import CancelReason, Reason
from exchange.reference import SelfTradePrevention, Side, TimeInForce
from tests.market import H100, Market
from tests.test_orders import START_CASH, capacity, cash, depth, of, one, rejected

STP = SelfTradePrevention


def related_market() -> Market:
    m = Market()
    event = one(
        m.ok(c.RelateParties(actor="ops", account_a="su1", account_b="dc1")), PartiesRelated
    )
    assert (event.account_a, event.account_b) == ("su1", "dc1")
    return m


@pytest.mark.parametrize("stp", list(STP))
def test_a_voucher_buy_stops_at_a_related_offer_and_leaves_it_whatever_its_mode(
    stp: SelfTradePrevention,
) -> None:
    """No account's order cancels another's: the incoming order gives way."""
    m = related_market()
    m.sell("dc1", "s1", 8, 1000)  # 1, first in the queue
    m.sell("dc2", "s2", 8, 1000)  # 2
    events = m.buy("su1", "b1", 16, 1000, voucher_id=1, stp=stp)
    assert [type(e) for e in events] == [OrderAccepted, OrderCancelled]
    cancelled = one(events, OrderCancelled)
    assert (cancelled.order_id, cancelled.account, cancelled.reason, cancelled.rested) == (
        3,
        "su1",
        CancelReason.SELF_TRADE,
        False,
    )
    assert depth(m) == ([], [(1000, 16)])
    assert [o.account for o in m.core.books[H100].orders(Side.SELL)] == ["dc1", "dc2"]
    assert capacity(m, "dc1")[1:] == (8, 0)  # still reserved by its offer
    assert cash(m, "su1") == (START_CASH, 0)
    assert m.core.vouchers[1].balance == 1_000_000


def test_a_voucher_buy_trades_up_to_the_related_offer_then_stops() -> None:
    m = related_market()
    m.sell("dc2", "s2", 8, 1000)  # 1: unrelated, first
    m.sell("dc1", "s1", 8, 1010)  # 2: related, next level
    events = m.buy("su1", "b1", 16, 1010, voucher_id=1)
    trade = one(events, Trade)
    assert (trade.seller, trade.price, trade.voucher) == ("dc2", 1000, 2_400)
    assert one(events, OrderCancelled).account == "su1"
    assert depth(m) == ([], [(1010, 8)])
    assert cash(m, "su1") == (START_CASH - 5_600, 0)


def test_cancel_aggressor_keeps_the_resting_order() -> None:
    m = related_market()
    m.sell("dc2", "s2", 8, 1000)  # 1: unrelated, first
    m.sell("dc1", "s1", 8, 1000)  # 2: related
    events = m.buy("su1", "b1", 16, 1000, voucher_id=1, stp=STP.CANCEL_AGGRESSOR)
    assert [type(e) for e in events] == [OrderAccepted, Trade, OrderCancelled]
    assert one(events, Trade).seller == "dc2"
    cancelled = one(events, OrderCancelled)
    assert (cancelled.order_id, cancelled.leaves, cancelled.reason, cancelled.rested) == (
        3,
        8,
        CancelReason.SELF_TRADE,
        False,
    )
    assert depth(m) == ([], [(1000, 8)])
    assert [o.account for o in m.core.books[H100].orders(Side.SELL)] == ["dc1"]
    # su1 paid 5,600 cash and 2,400 voucher for the fill; the rest came back.
    assert cash(m, "su1") == (START_CASH - 5_600, 0)
    voucher = m.core.vouchers[1]
    assert (voucher.balance, voucher.reserved, voucher.spent) == (997_600, 0, 2_400)


def test_related_sell_meeting_a_resting_voucher_buy_stops_and_leaves_it() -> None:
    m = related_market()
    m.buy("su1", "b1", 8, 1000, voucher_id=1)  # 1
    m.buy("su2", "b2", 8, 990)  # 2
    events = m.sell("dc1", "s1", 8, 990)
    assert of(events, Trade) == []
    cancelled = one(events, OrderCancelled)
    assert (cancelled.order_id, cancelled.account, cancelled.rested) == (3, "dc1", False)
    assert depth(m) == ([(1000, 8), (990, 8)], [])
    assert capacity(m, "dc1") == (8_000, 0, 0)


def test_related_sell_with_cancel_aggressor_leaves_the_voucher_buy() -> None:
    m = related_market()
    m.buy("su1", "b1", 8, 1000, voucher_id=1)
    events = m.sell("dc1", "s1", 8, 1000, stp=STP.CANCEL_AGGRESSOR)
    cancelled = one(events, OrderCancelled)
    assert (cancelled.account, cancelled.rested) == ("dc1", False)
    assert depth(m) == ([(1000, 8)], [])
    assert capacity(m, "dc1") == (8_000, 0, 0)


def test_plain_buys_between_related_parties_still_trade() -> None:
    m = related_market()
    m.sell("dc1", "s1", 8, 1000)
    trade = one(m.buy("su1", "b1", 8, 1000), Trade)
    assert (trade.buyer, trade.seller, trade.cash, trade.voucher, trade.claim_id) == (
        "su1",
        "dc1",
        8_000,
        0,
        0,
    )
    m.buy("su1", "b2", 8, 1000)
    assert one(m.sell("dc1", "s2", 8, 1000), Trade).seller == "dc1"


def test_voucher_buy_from_an_unrelated_party_trades() -> None:
    m = Market()  # no relation at all
    m.sell("dc1", "s1", 8, 1000)
    trade = one(m.buy("su1", "b1", 8, 1000, voucher_id=1), Trade)
    assert (trade.seller, trade.voucher, trade.claim_id) == ("dc1", 2_400, 1)


def test_relation_goes_both_ways() -> None:
    m = Market()
    m.ok(c.RelateParties(actor="ops", account_a="dc1", account_b="su1"))
    m.sell("dc1", "s1", 8, 1000)
    events = m.buy("su1", "b1", 8, 1000, voucher_id=1)
    assert one(events, OrderCancelled).account == "su1"
    assert of(events, Trade) == []
    assert depth(m) == ([], [(1000, 8)])


def test_fok_counts_only_what_it_may_trade_and_kills_without_change() -> None:
    m = related_market()
    m.sell("dc1", "s1", 8, 1000)
    m.sell("dc2", "s2", 8, 1000)
    events = m.buy("su1", "f1", 16, 1000, voucher_id=1, tif=TimeInForce.FOK)
    assert one(events, OrderCancelled).reason is CancelReason.FOK_UNFILLED
    # The related order was not cancelled, since the FOK never matched.
    assert depth(m) == ([], [(1000, 16)])
    # However small: the related offer comes first, and it may neither trade nor go.
    events = m.buy("su1", "f2", 8, 1000, voucher_id=1, tif=TimeInForce.FOK)
    assert one(events, OrderCancelled).reason is CancelReason.FOK_UNFILLED
    assert depth(m) == ([], [(1000, 16)])


def test_fok_with_cancel_aggressor_stops_counting_at_the_conflict() -> None:
    m = related_market()
    m.sell("dc1", "s1", 8, 1000)  # related, first
    m.sell("dc2", "s2", 8, 1000)
    events = m.buy(
        "su1", "f1", 8, 1000, voucher_id=1, tif=TimeInForce.FOK, stp=STP.CANCEL_AGGRESSOR
    )
    assert one(events, OrderCancelled).reason is CancelReason.FOK_UNFILLED
    assert depth(m) == ([], [(1000, 16)])


def test_relating_needs_an_operator_and_two_accounts() -> None:
    m = Market()
    assert (
        rejected(m.apply(c.RelateParties(actor="su1", account_a="su1", account_b="dc1")))
        is Reason.NOT_PERMITTED
    )
    assert (
        rejected(m.apply(c.RelateParties(actor="ops", account_a="su1", account_b="su1")))
        is Reason.INVALID_FLAGS
    )
    assert (
        rejected(m.apply(c.RelateParties(actor="ops", account_a="su1", account_b="zz")))
        is Reason.UNKNOWN_ACCOUNT
    )

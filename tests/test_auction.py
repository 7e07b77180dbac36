"""The call auction: orders rest crossed, then one uncross at one price.

Market in AUCTION: tick 10 fen, lot 8 GPU-hours, no reference price;
su1 holds voucher 1 (30% on H100).
"""

from __future__ import annotations

import msgspec

from exchange import commands as c
from exchange.events import (
    AuctionUncrossed,
    Event,
    InstrumentStatusChanged,
    OrderAccepted,
    OrderCancelled,
    Trade,
)
from exchange.reasons import CancelReason, Reason
from exchange.reference import InstrumentStatus, OrderType, Side, TimeInForce
from tests.market import H100, Market, spec
from tests.test_orders import START_CASH, cash, depth, of, one, rejected

AUCTION = InstrumentStatus.AUCTION
OPEN = InstrumentStatus.OPEN


def auction_market() -> Market:
    return Market(status=AUCTION)


def set_status(m: Market, status: InstrumentStatus, instrument_id: str = H100) -> list[Event]:
    return m.ok(c.SetInstrumentStatus(actor="ops", instrument_id=instrument_id, status=status))


def uncross(m: Market, instrument_id: str = H100) -> tuple[AuctionUncrossed, list[Trade]]:
    events = set_status(m, OPEN, instrument_id)
    assert isinstance(events[0], InstrumentStatusChanged)
    return one(events, AuctionUncrossed), of(events, Trade)


def test_orders_rest_crossed_without_trading() -> None:
    m = auction_market()
    assert of(m.buy("su1", "b1", 8, 1000), Trade) == []
    assert of(m.sell("dc1", "s1", 8, 900), Trade) == []
    assert of(m.buy("su2", "b2", 8, 950, post_only=True), OrderAccepted)
    assert depth(m) == ([(1000, 8), (950, 8)], [(900, 8)])
    assert m.core.books[H100].crossed()
    assert m.core.contracts == {}


def test_only_resting_limit_orders_in_a_call() -> None:
    m = auction_market()
    m.sell("dc1", "s1", 8, 900)
    assert (
        rejected(m.buy("su1", "i", 8, 1000, tif=TimeInForce.IOC)) is Reason.NOT_ALLOWED_IN_AUCTION
    )
    assert (
        rejected(m.buy("su1", "f", 8, 1000, tif=TimeInForce.FOK)) is Reason.NOT_ALLOWED_IN_AUCTION
    )
    assert rejected(m.buy("su1", "q", 16, 1000, min_qty=8)) is Reason.NOT_ALLOWED_IN_AUCTION
    market = c.NewOrder(
        actor="su1",
        client_order_id="m",
        instrument_id=H100,
        side=Side.BUY,
        qty=8,
        order_type=OrderType.MARKET,
        tif=TimeInForce.IOC,
    )
    assert rejected(m.apply(market)) is Reason.NOT_ALLOWED_IN_AUCTION
    assert depth(m) == ([], [(900, 8)])


def test_uncross_at_the_price_that_trades_most() -> None:
    m = auction_market()
    m.buy("su1", "b1", 16, 1020)  # 1
    m.buy("su2", "b2", 8, 1000)  # 2
    m.sell("dc1", "s1", 8, 980)  # 3
    m.sell("dc2", "s2", 16, 1000)  # 4
    m.sell("dc1", "s3", 8, 1020)  # 5
    # Volume at 980: 8; at 1000: min(24, 24) = 24; at 1020: min(16, 32) = 16.
    uncrossed, trades = uncross(m)
    assert (uncrossed.price, uncrossed.volume) == (1000, 24)
    assert [(t.buy_order_id, t.sell_order_id, t.price, t.qty) for t in trades] == [
        (1, 3, 1000, 8),
        (1, 4, 1000, 8),
        (2, 4, 1000, 8),
    ]
    assert all(t.aggressor is None for t in trades)
    # su1 reserved 16 * 1020 = 16,320 and paid 16,000; su2 paid its limit.
    assert cash(m, "su1") == (START_CASH - 16_000, 0)
    assert cash(m, "su2") == (START_CASH - 8_000, 0)
    assert cash(m, "dc1") == (8_000, 0)
    assert cash(m, "dc2") == (16_000, 0)
    assert depth(m) == ([], [(1020, 8)])
    assert not m.core.books[H100].crossed()
    inst = m.core.instruments[H100]
    assert (inst.status, inst.last_price, inst.volume, inst.turnover) == (OPEN, 1000, 24, 24_000)


def test_tie_on_volume_goes_to_least_imbalance() -> None:
    m = auction_market()
    m.buy("su1", "b1", 8, 1000)
    m.buy("su2", "b2", 16, 990)
    m.sell("dc1", "s1", 8, 990)
    m.sell("dc2", "s2", 8, 1000)
    # Volume 8 at both 990 and 1000; imbalance |24 - 8| = 16 at 990, |8 - 16| = 8 at 1000.
    uncrossed, trades = uncross(m)
    assert (uncrossed.price, uncrossed.volume) == (1000, 8)
    assert [(t.buyer, t.seller, t.price) for t in trades] == [("su1", "dc1", 1000)]
    assert depth(m) == ([(990, 16)], [(1000, 8)])


def test_tie_with_no_reference_goes_to_the_lowest_price() -> None:
    m = auction_market()
    m.buy("su1", "b1", 8, 1000)
    m.sell("dc1", "s1", 8, 980)
    uncrossed, trades = uncross(m)
    assert (uncrossed.price, uncrossed.volume) == (980, 8)
    assert [t.price for t in trades] == [980]
    assert cash(m, "su1") == (START_CASH - 7_840, 0)


def _reference_instrument(m: Market, reference: int) -> str:
    instrument = msgspec.structs.replace(spec("H100-REF"), reference_price=reference)
    m.ok(c.ListInstrument(actor="ops", spec=instrument))
    m.ok(c.RegisterCapacity(actor="dc1", provider="dc1", instrument_id="H100-REF", gpu_hours=80))
    set_status(m, AUCTION, "H100-REF")
    m.buy("su1", "b1", 8, 1000, instrument_id="H100-REF")
    m.sell("dc1", "s1", 8, 980, instrument_id="H100-REF")
    return "H100-REF"


def test_tie_goes_to_the_price_nearest_the_reference() -> None:
    for reference, expected in ((1010, 1000), (1000, 1000), (990, 990), (960, 980)):
        m = auction_market()
        instrument_id = _reference_instrument(m, reference)
        uncrossed, trades = uncross(m, instrument_id)
        assert (reference, uncrossed.price) == (reference, expected)
        assert [t.price for t in trades] == [expected]


def test_a_price_between_resting_prices_can_leave_least_imbalance() -> None:
    m = auction_market()
    m.buy("su1", "b1", 8, 1000)
    m.buy("su2", "b2", 8, 980)
    m.sell("dc1", "s1", 8, 980)
    m.sell("dc2", "s2", 8, 1000)
    # Volume 8 at 980, 990 and 1000; imbalance 8 at 980 and 1000 but 0 at 990,
    # where no order rests.
    uncrossed, trades = uncross(m)
    assert (uncrossed.price, uncrossed.volume) == (990, 8)
    assert [(t.buyer, t.seller, t.price) for t in trades] == [("su1", "dc1", 990)]
    assert depth(m) == ([(980, 8)], [(1000, 8)])


def test_last_price_beats_the_reference_price() -> None:
    m = auction_market()
    instrument_id = "H100-REF"
    instrument = msgspec.structs.replace(spec(instrument_id), reference_price=980)
    m.ok(c.ListInstrument(actor="ops", spec=instrument))
    m.ok(c.RegisterCapacity(actor="dc1", provider="dc1", instrument_id=instrument_id, gpu_hours=80))
    set_status(m, OPEN, instrument_id)
    m.sell("dc1", "s0", 8, 1000, instrument_id=instrument_id)
    one(m.buy("su2", "b0", 8, 1000, instrument_id=instrument_id), Trade)
    set_status(m, InstrumentStatus.HALTED, instrument_id)
    set_status(m, AUCTION, instrument_id)
    m.buy("su1", "b1", 8, 1000, instrument_id=instrument_id)
    m.sell("dc1", "s1", 8, 980, instrument_id=instrument_id)
    uncrossed, _ = uncross(m, instrument_id)
    assert uncrossed.price == 1000


def test_all_fills_at_one_price_and_book_uncrossed_after() -> None:
    m = auction_market()
    for i, price in enumerate((1050, 1040, 1030, 1020, 1010)):
        m.buy("su1" if i % 2 else "su2", f"b{i}", 8, price)
    for i, price in enumerate((980, 990, 1000, 1010, 1020, 1060)):
        m.sell("dc1" if i % 2 else "dc2", f"s{i}", 8, price)
    # Demand at p = bids >= p; supply = asks <= p. At 1020: min(32, 40) = 32, and
    # at 1010: min(40, 32) = 32, both imbalance 8; no reference: the lower, 1010.
    uncrossed, trades = uncross(m)
    assert (uncrossed.price, uncrossed.volume) == (1010, 32)
    assert {t.price for t in trades} == {1010}
    assert sum(t.qty for t in trades) == 32
    book = m.core.books[H100]
    assert not book.crossed()
    assert depth(m) == ([(1010, 8)], [(1020, 8), (1060, 8)])
    # Continuous trading follows, at resting prices again.
    trade = one(m.buy("su2", "after", 8, 1020), Trade)
    assert (trade.price, trade.aggressor) == (1020, Side.BUY)


def test_uncross_fill_below_a_voucher_buys_limit() -> None:
    m = auction_market()
    m.buy("su1", "b1", 8, 1000, voucher_id=1)  # reserves 5,600 cash + 2,400 voucher
    m.sell("dc1", "s1", 8, 900)
    uncrossed, trades = uncross(m)
    assert uncrossed.price == 900
    (trade,) = trades
    # 7,200 at 30%: 2,160 from the voucher, 5,040 in cash; the rest comes back.
    assert (trade.price, trade.cash, trade.voucher, trade.claim_id) == (900, 5_040, 2_160, 1)
    assert cash(m, "su1") == (START_CASH - 5_040, 0)
    voucher = m.core.vouchers[1]
    assert (voucher.balance, voucher.reserved, voucher.spent) == (1_000_000 - 2_160, 0, 2_160)
    assert m.core.claims[1].amount == 2_160


def test_resting_remainder_partly_filled_in_the_call_releases_all_when_filled() -> None:
    m = auction_market()
    m.buy("su1", "b1", 16, 1000)
    m.sell("dc1", "s1", 8, 900)
    uncrossed, _ = uncross(m)
    assert uncrossed.price == 900
    assert cash(m, "su1") == (START_CASH - 16_000, 8_800)
    # Filled at its own price later: it held 800 more than it spends.
    one(m.sell("dc2", "s2", 8, 1000), Trade)
    assert cash(m, "su1") == (START_CASH - 7_200 - 8_000, 0)


def test_opening_an_uncrossed_book_trades_nothing() -> None:
    m = auction_market()
    m.buy("su1", "b1", 8, 900)
    m.sell("dc1", "s1", 8, 1000)
    uncrossed, trades = uncross(m)
    assert (uncrossed.price, uncrossed.volume) == (0, 0)
    assert trades == []
    assert depth(m) == ([(900, 8)], [(1000, 8)])


def test_self_trade_in_the_uncross_later_arrival_gives_way() -> None:
    m = auction_market()
    m.ok(c.RelateParties(actor="ops", account_a="su1", account_b="dc1"))
    m.sell("dc1", "s1", 8, 900)  # 1: earlier
    m.buy("su1", "b1", 8, 1000, voucher_id=1)  # 2: later, pays with a voucher
    m.buy("su2", "b2", 8, 950)  # 3
    events = set_status(m, OPEN)
    cancelled = one(events, OrderCancelled)
    assert (cancelled.order_id, cancelled.reason) == (2, CancelReason.SELF_TRADE)
    uncrossed = one(events, AuctionUncrossed)
    trade = one(events, Trade)
    assert (trade.buyer, trade.seller, trade.voucher) == ("su2", "dc1", 0)
    # Once su1 steps aside: bid 950 against ask 900, no reference: the lower price.
    assert (uncrossed.price, uncrossed.volume) == (900, 8)
    assert trade.price == uncrossed.price
    assert cash(m, "su1") == (START_CASH, 0)
    assert m.core.vouchers[1].balance == 1_000_000


def test_self_trade_in_the_uncross_price_is_the_price_of_the_fills() -> None:
    m = auction_market()
    m.ok(c.RelateParties(actor="ops", account_a="su1", account_b="dc1"))
    m.buy("su1", "b1", 8, 1000, voucher_id=1)  # 1
    m.sell("dc2", "s2", 8, 1000)  # 2
    m.sell("dc1", "s1", 8, 900)  # 3: related, later: gives way
    events = set_status(m, OPEN)
    assert one(events, OrderCancelled).order_id == 3
    trade = one(events, Trade)
    uncrossed = one(events, AuctionUncrossed)
    # Without dc1's ask only 1000 is left to trade at.
    assert (trade.seller, trade.price, trade.voucher) == ("dc2", 1000, 2_400)
    assert (uncrossed.price, uncrossed.volume) == (1000, 8)
    assert not m.core.books[H100].crossed()


def test_reopening_after_a_halted_call_uncrosses() -> None:
    m = auction_market()
    m.buy("su1", "b1", 8, 1000)
    m.sell("dc1", "s1", 8, 900)
    set_status(m, InstrumentStatus.HALTED)
    events = set_status(m, OPEN)
    # Continuous trading never runs on a crossed book.
    assert not m.core.books[H100].crossed()
    uncrossed = one(events, AuctionUncrossed)
    assert (uncrossed.price, uncrossed.volume) == (900, 8)
    assert [t.price for t in of(events, Trade)] == [900]
    assert depth(m) == ([], [])

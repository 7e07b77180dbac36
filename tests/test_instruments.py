"""Instruments: listing, status changes, halts, closing, and the delivery window."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from exchange import commands as c
from exchange.core import NEVER
from exchange.events import (
    Event,
    InstrumentListed,
    InstrumentStatusChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
)
from exchange.reasons import CancelReason, Reason
from exchange.reference import InstrumentStatus, Side, TimeInForce
from tests.market import ASCEND, COMMERCIAL, H100, HOUR, SYSTEM, T0, Market, spec
from tests.test_orders import START_CASH, capacity, cash, depth, of, one, rejected

S = InstrumentStatus
NEW = "A800-NINGXIA-STATE-W2"


def listing(**kw: Any) -> c.ListInstrument:
    return c.ListInstrument(actor="ops", spec=msgspec.structs.replace(spec(NEW), **kw))


def set_status(
    m: Market, status: InstrumentStatus, instrument_id: str = H100, actor: str = "ops"
) -> list[Event]:
    return m.apply(c.SetInstrumentStatus(actor=actor, instrument_id=instrument_id, status=status))


# --- listing ------------------------------------------------------------------------


def test_listing_starts_pre_open() -> None:
    m = Market()
    listed = one(m.ok(listing()), InstrumentListed)
    assert listed.spec.instrument_id == NEW
    inst = m.core.instruments[NEW]
    assert (inst.status, inst.last_price, inst.volume) == (S.PRE_OPEN, 0, 0)
    assert m.core.books[NEW].depth(Side.BUY, 5) == []
    assert rejected(m.buy("su1", "b1", 8, 1000, instrument_id=NEW)) is Reason.MARKET_NOT_OPEN
    assert rejected(m.sell("dc1", "s1", 8, 1000, instrument_id=NEW)) is Reason.MARKET_NOT_OPEN


BAD_LISTINGS = [
    ("tick zero", {"tick": 0}, Reason.INVALID_INSTRUMENT),
    ("tick negative", {"tick": -10}, Reason.INVALID_INSTRUMENT),
    ("lot zero", {"lot": 0}, Reason.INVALID_INSTRUMENT),
    ("max price below tick", {"max_price": 5}, Reason.INVALID_INSTRUMENT),
    ("max price huge", {"max_price": 10**15 + 10}, Reason.INVALID_INSTRUMENT),
    ("max qty below lot", {"max_qty": 4}, Reason.INVALID_INSTRUMENT),
    ("reference off tick", {"reference_price": 1005}, Reason.INVALID_INSTRUMENT),
    ("reference negative", {"reference_price": -10}, Reason.INVALID_INSTRUMENT),
    ("delivery starts now", {"delivery_start": T0}, Reason.INVALID_INSTRUMENT),
    ("delivery started", {"delivery_start": T0 - 1}, Reason.INVALID_INSTRUMENT),
    ("window empty", {"delivery_end": T0 + 240 * HOUR}, Reason.INVALID_INSTRUMENT),
    ("window backwards", {"delivery_end": T0 + HOUR}, Reason.INVALID_INSTRUMENT),
    ("empty id", {"instrument_id": ""}, Reason.INVALID_ID),
    ("long id", {"instrument_id": "X" * 65}, Reason.INVALID_ID),
    ("padded id", {"instrument_id": " A800"}, Reason.INVALID_ID),
    ("no gpu model", {"gpu_model": ""}, Reason.INVALID_ID),
    ("no hub", {"hub": ""}, Reason.INVALID_ID),
    ("taken id", {"instrument_id": H100}, Reason.DUPLICATE_ID),
]


@pytest.mark.parametrize(
    ("fields", "reason"), [b[1:] for b in BAD_LISTINGS], ids=[b[0] for b in BAD_LISTINGS]
)
def test_listing_validation(fields: dict[str, Any], reason: Reason) -> None:
    m = Market()
    before = dict(m.core.instruments)
    assert rejected(m.apply(listing(**fields))) is reason
    assert m.core.instruments == before


def test_limits_at_the_edge_are_accepted() -> None:
    m = Market()
    one(
        m.ok(listing(max_price=10, max_qty=8, delivery_start=T0 + 1, delivery_end=T0 + 2)),
        InstrumentListed,
    )


def test_only_operators_list() -> None:
    m = Market()
    for actor in ("su1", "dc1", "city", "nobody"):
        assert (
            rejected(m.apply(msgspec.structs.replace(listing(), actor=actor)))
            is Reason.NOT_PERMITTED
        )
    one(m.ok(msgspec.structs.replace(listing(), actor=SYSTEM)), InstrumentListed)


# --- status transitions ---------------------------------------------------------------

ALLOWED = {
    S.PRE_OPEN: {S.AUCTION, S.OPEN, S.CLOSED},
    S.AUCTION: {S.OPEN, S.HALTED, S.CLOSED},
    S.OPEN: {S.HALTED, S.CLOSED},
    S.HALTED: {S.OPEN, S.AUCTION, S.CLOSED},
    S.CLOSED: set(),
}
PATHS = {
    S.PRE_OPEN: [],
    S.AUCTION: [S.AUCTION],
    S.OPEN: [S.OPEN],
    S.HALTED: [S.OPEN, S.HALTED],
    S.CLOSED: [S.CLOSED],
}


@pytest.mark.parametrize("source", list(S))
@pytest.mark.parametrize("target", list(S))
def test_status_transitions(source: InstrumentStatus, target: InstrumentStatus) -> None:
    m = Market()
    m.ok(listing())
    for step in PATHS[source]:
        m.ok(c.SetInstrumentStatus(actor="ops", instrument_id=NEW, status=step))
    assert m.core.instruments[NEW].status is source
    events = set_status(m, target, NEW)
    if target in ALLOWED[source]:
        changed = one(events, InstrumentStatusChanged)
        assert (changed.previous, changed.status) == (source, target)
        assert m.core.instruments[NEW].status is target
    else:
        assert rejected(events) is Reason.INVALID_TRANSITION
        assert m.core.instruments[NEW].status is source


def test_status_change_needs_an_operator_and_a_known_instrument() -> None:
    m = Market()
    assert rejected(set_status(m, S.HALTED, actor="su1")) is Reason.NOT_PERMITTED
    assert rejected(set_status(m, S.HALTED, actor="dc1")) is Reason.NOT_PERMITTED
    assert rejected(set_status(m, S.HALTED, "NOPE")) is Reason.UNKNOWN_INSTRUMENT
    one(set_status(m, S.HALTED, actor=SYSTEM), InstrumentStatusChanged)


# --- halt -------------------------------------------------------------------------------


def test_halt_blocks_orders_and_amends_but_not_cancels() -> None:
    m = Market()
    m.buy("su1", "b1", 8, 1000)  # 1
    m.buy("su1", "b2", 8, 990)  # 2
    m.sell("dc1", "s1", 8, 1100)  # 3
    m.sell("dc1", "s2", 8, 1200)  # 4
    set_status(m, S.HALTED)
    assert rejected(m.buy("su2", "b3", 8, 1000)) is Reason.MARKET_HALTED
    assert rejected(m.sell("dc2", "s3", 8, 1000)) is Reason.MARKET_HALTED
    assert (
        rejected(m.apply(c.AmendOrder(actor="su1", order_id=1, qty=8, price=990)))
        is Reason.MARKET_HALTED
    )
    assert rejected(m.apply(c.AmendOrder(actor="dc1", order_id=3, qty=8))) is Reason.MARKET_HALTED
    # The book stays as it was.
    assert depth(m) == ([(1000, 8), (990, 8)], [(1100, 8), (1200, 8)])
    assert (
        one(m.ok(c.CancelOrder(actor="su1", order_id=1)), OrderCancelled).reason
        is CancelReason.REQUESTED
    )
    assert [e.order_id for e in of(m.ok(c.CancelAll(actor="dc1")), OrderCancelled)] == [3, 4]
    assert depth(m) == ([(990, 8)], [])
    # Other instruments trade on.
    one(m.buy("su2", "a1", 8, 1000, instrument_id=ASCEND), OrderAccepted)
    # Reopen: the rest is still there and trading resumes.
    set_status(m, S.OPEN)
    one(m.buy("su2", "b4", 8, 1000), OrderAccepted)
    assert (
        one(m.ok(c.AmendOrder(actor="su1", order_id=2, qty=8, price=980)), OrderAmended).price
        == 980
    )


# --- closing ------------------------------------------------------------------------------


def test_close_cancels_every_order_and_frees_everything() -> None:
    m = Market()
    m.buy("su1", "b1", 8, 1000)
    m.buy("su2", "b2", 16, 990, voucher_id=0)
    m.buy("su1", "v1", 8, 980, voucher_id=1)
    m.sell("dc1", "s1", 24, 1100)
    m.buy("su2", "a1", 8, 1000, instrument_id=ASCEND)
    events = set_status(m, S.CLOSED)
    changed = events[0]
    assert isinstance(changed, InstrumentStatusChanged)
    assert (changed.previous, changed.status) == (S.OPEN, S.CLOSED)
    cancelled = of(events, OrderCancelled)
    assert [(e.order_id, e.leaves) for e in cancelled] == [(1, 8), (2, 16), (3, 8), (4, 24)]
    assert all(e.reason is CancelReason.MARKET_CLOSED and e.rested for e in cancelled)
    assert depth(m) == ([], [])
    assert cash(m, "su1") == (START_CASH, 0)
    assert cash(m, "su2") == (START_CASH - 8_000, 8_000)  # its ASCEND order stays
    assert m.core.vouchers[1].balance == 1_000_000
    assert capacity(m, "dc1") == (8_000, 0, 0)
    assert sorted(m.core.orders) == [5]
    assert rejected(m.buy("su1", "b9", 8, 1000)) is Reason.MARKET_NOT_OPEN
    assert (
        rejected(
            m.apply(
                c.RegisterCapacity(actor="dc1", provider="dc1", instrument_id=H100, gpu_hours=8)
            )
        )
        is Reason.MARKET_NOT_OPEN
    )
    assert rejected(set_status(m, S.OPEN)) is Reason.INVALID_TRANSITION


def test_delivery_window_start_closes_the_instrument_and_expires_orders() -> None:
    m = Market()
    start = T0 + 240 * HOUR
    m.buy("su1", "b1", 8, 1000)
    # A GTD past the window's start only lasts until the window opens.
    gtd = one(
        m.buy("su2", "g1", 8, 990, tif=TimeInForce.GTD, expire_at=start + HOUR), OrderAccepted
    )
    assert gtd.expire_at == NEVER
    m.sell("dc3", "c1", 8, 1000, instrument_id=COMMERCIAL)
    assert m.core.next_deadline() == start
    assert m.advance(240 * HOUR - 1) == []
    events = m.advance(1)
    changed = of(events, InstrumentStatusChanged)
    assert sorted(e.instrument_id for e in changed) == sorted([H100, ASCEND, COMMERCIAL])
    assert all(e.status is S.CLOSED and e.previous is S.OPEN for e in changed)
    cancelled = of(events, OrderCancelled)
    assert sorted(e.order_id for e in cancelled) == [1, 2, 3]
    assert all(e.reason is CancelReason.EXPIRED for e in cancelled)
    assert m.core.orders == {}
    assert cash(m, "su1") == (START_CASH, 0)
    assert cash(m, "su2") == (START_CASH, 0)
    assert capacity(m, "dc3", COMMERCIAL) == (8_000, 0, 0)
    assert m.core.next_deadline() == NEVER
    assert rejected(m.buy("su1", "b2", 8, 1000)) is Reason.MARKET_NOT_OPEN


def test_delivery_start_closes_even_a_halted_or_pre_open_instrument() -> None:
    m = Market()
    window = {"delivery_start": T0 + HOUR, "delivery_end": T0 + 2 * HOUR}
    m.ok(listing(**window))
    m.ok(listing(instrument_id="HALTED-ONE", **window))
    set_status(m, S.OPEN, "HALTED-ONE")
    set_status(m, S.HALTED, "HALTED-ONE")
    events = m.advance(HOUR)
    assert sorted((e.instrument_id, e.previous) for e in of(events, InstrumentStatusChanged)) == [
        (NEW, S.PRE_OPEN),
        ("HALTED-ONE", S.HALTED),
    ]
    assert m.core.instruments[NEW].status is S.CLOSED
    assert m.core.instruments["HALTED-ONE"].status is S.CLOSED
    assert m.core.instruments[H100].status is S.OPEN


def test_closed_instrument_is_not_closed_again_at_delivery_start() -> None:
    m = Market()
    set_status(m, S.CLOSED)
    events = m.advance(240 * HOUR)
    assert sorted(e.instrument_id for e in of(events, InstrumentStatusChanged)) == sorted(
        [ASCEND, COMMERCIAL]
    )

"""Reference data: what is traded and who trades it.

Money is integer fen (CNY 0.01); quantities are integer GPU-hours; times are
integer nanoseconds since the Unix epoch, stamped by the service; voucher rates
are integer basis points (1/10000). No float ever touches money.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

MAX_ID_LEN: Final = 64


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"


class TimeInForce(enum.StrEnum):
    GTC = "GTC"  # good till cancelled (and never past the delivery window's start)
    IOC = "IOC"  # immediate or cancel
    FOK = "FOK"  # fill or kill
    GTD = "GTD"  # good till date: expire_at, or the delivery window's start if earlier


class SelfTradePrevention(enum.StrEnum):
    CANCEL_RESTING = "CANCEL_RESTING"  # the default: the resting order goes, matching goes on
    CANCEL_AGGRESSOR = "CANCEL_AGGRESSOR"  # the incoming order's remainder goes
    CANCEL_BOTH = "CANCEL_BOTH"


class Role(enum.StrEnum):
    STARTUP = "STARTUP"  # buys GPU-hours, may hold vouchers
    PROVIDER = "PROVIDER"  # a data centre: registers capacity and sells it
    OPERATOR = "OPERATOR"  # runs the platform
    ISSUER = "ISSUER"  # a city government running voucher programmes


class Tier(enum.StrEnum):
    STATE = "STATE"  # state-run data centre
    COMMERCIAL = "COMMERCIAL"


class InstrumentStatus(enum.StrEnum):
    PRE_OPEN = "PRE_OPEN"  # listed, no orders yet
    AUCTION = "AUCTION"  # call period: orders rest, nothing matches until the uncross
    OPEN = "OPEN"  # continuous trading
    HALTED = "HALTED"  # no new orders or amends; cancels allowed; the book stays
    CLOSED = "CLOSED"  # terminal: every resting order is cancelled


# Allowed status changes. Reopening after a halt may go through a call auction.
TRANSITIONS: dict[InstrumentStatus, frozenset[InstrumentStatus]] = {
    InstrumentStatus.PRE_OPEN: frozenset(
        {InstrumentStatus.AUCTION, InstrumentStatus.OPEN, InstrumentStatus.CLOSED}
    ),
    InstrumentStatus.AUCTION: frozenset(
        {InstrumentStatus.OPEN, InstrumentStatus.HALTED, InstrumentStatus.CLOSED}
    ),
    InstrumentStatus.OPEN: frozenset({InstrumentStatus.HALTED, InstrumentStatus.CLOSED}),
    InstrumentStatus.HALTED: frozenset(
        {InstrumentStatus.OPEN, InstrumentStatus.AUCTION, InstrumentStatus.CLOSED}
    ),
    InstrumentStatus.CLOSED: frozenset(),
}


class EligibilityBasis(enum.StrEnum):
    MIN_REVENUE = "MIN_REVENUE"  # the holder's attested yearly revenue reaches a minimum
    GOV_PROJECT = "GOV_PROJECT"  # the holder takes part in a named government project


# forbid_unknown_fields: a spec arrives inside requests (``list_instrument``),
# whose unknown fields are refused; a misspelt limit (``max_prce``) must be
# refused too, not listed with the default in its place. Journals and snapshots
# hold specs this Struct encoded, so they never carry an unknown field.
class InstrumentSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A delivery contract for GPU-hours of one GPU model, hub, tier and window."""

    instrument_id: str
    gpu_model: str  # e.g. "H100", "Ascend910B"
    domestic: bool  # a domestic chip; voucher rates may depend on it
    hub: str  # region or hub where the capacity sits
    tier: Tier  # state-run or commercial providers only
    delivery_start: int  # ns; trading stops and orders expire when delivery starts
    delivery_end: int  # ns
    tick: int  # price increment, fen per GPU-hour
    lot: int  # quantity increment, GPU-hours (e.g. one 8-GPU node for the window)
    max_price: int = 100_000_00  # fen per GPU-hour; a fat-finger limit
    max_qty: int = 10_000_000  # GPU-hours per order
    reference_price: int = 0  # auction tie-break before the first trade; 0 = none


class InstrumentState(msgspec.Struct, kw_only=True):
    """An instrument's record (``exchange.records.Instrument``), as snapshots store it."""

    spec: InstrumentSpec
    status: InstrumentStatus = InstrumentStatus.PRE_OPEN
    last_price: int = 0
    volume: int = 0  # GPU-hours traded since listing
    turnover: int = 0  # fen traded since listing
    trades: int = 0


class AccountState(msgspec.Struct, kw_only=True):
    """An account's record (``exchange.records.Account``), as snapshots store it."""

    account_id: str
    role: Role
    tier: Tier | None = None  # providers only
    hub: str = ""  # providers only
    revenue: int = 0  # attested yearly revenue, fen (voucher eligibility)
    projects: list[str] = msgspec.field(default_factory=list)  # government projects
    cash: int = 0
    cash_reserved: int = 0
    capacity: dict[str, int] = msgspec.field(default_factory=dict)
    capacity_reserved: dict[str, int] = msgspec.field(default_factory=dict)
    capacity_sold: dict[str, int] = msgspec.field(default_factory=dict)
    holdings: dict[str, int] = msgspec.field(default_factory=dict)
    related: set[str] = msgspec.field(default_factory=set)
    client_order_ids: dict[str, int] = msgspec.field(default_factory=dict)

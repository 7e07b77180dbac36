"""Events: what the core says happened, in the order it happened.

The core answers every command with a list of these frozen Structs. They are
the only output of the core; the gateway turns them into execution reports,
market data and private updates, and replay compares them byte for byte.
"""

from __future__ import annotations

import msgspec

from exchange.reasons import CancelReason, Reason
from exchange.reference import (
    InstrumentSpec,
    InstrumentStatus,
    OrderType,
    Role,
    Side,
    Tier,
    TimeInForce,
)


# gc=False: events hold only numbers, strings, enums and frozen specs and cannot
# change, so they can never be part of a reference cycle; leaving them out of the
# garbage collector's generations saves it walking every contract kept.
# ``ts`` and the fields of the three per-order events (OrderAccepted, Trade,
# OrderCancelled) may also be passed by position: the core builds those by
# position, the cheapest way to build a Struct. Everywhere else, keywords.
class _Event(msgspec.Struct, frozen=True, tag=True, gc=False):
    ts: int


class Rejected(_Event, frozen=True, kw_only=True):
    """A command was refused and changed nothing."""

    actor: str
    command: str  # the command's type name
    reason: Reason
    client_order_id: str = ""
    order_id: int = 0


class OrderAccepted(_Event, frozen=True):
    """An order passed every check and holds its reservation (execution report NEW).

    For a market order ``price`` is the protection price it was entered at: the
    worst price on the book that its quantity could reach.
    """

    order_id: int
    account: str
    client_order_id: str
    instrument_id: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price: int
    qty: int
    expire_at: int  # ns: the time it expires at the latest
    post_only: bool
    min_qty: int
    voucher_id: int
    cash_reserved: int
    voucher_reserved: int


class Trade(_Event, frozen=True):
    """One fill between a buy order and a sell order: a compute contract.

    ``trade_id`` is also the contract's id. ``aggressor`` is None for fills of a
    call auction's uncross. The buyer pays ``cash`` at once and ``voucher`` from
    the voucher; the seller gets the cash and, for the voucher part, claim
    ``claim_id`` on the issuer (0 when there is no voucher part).
    """

    trade_id: int
    instrument_id: str
    price: int
    qty: int
    aggressor: Side | None
    buy_order_id: int
    sell_order_id: int
    buyer: str
    seller: str
    buy_leaves: int
    sell_leaves: int
    cash: int
    voucher: int
    voucher_id: int
    claim_id: int


class OrderCancelled(_Event, frozen=True):
    """An order stopped working; ``leaves`` GPU-hours left it unfilled."""

    order_id: int
    account: str
    client_order_id: str
    instrument_id: str
    side: Side
    price: int
    leaves: int
    reason: CancelReason
    rested: bool  # it had been on the book (so the book changed)


class OrderAmended(_Event, frozen=True, kw_only=True):
    """An order changed; ``requeued`` says it lost its place in the queue."""

    order_id: int
    account: str
    client_order_id: str
    instrument_id: str
    side: Side
    price: int
    qty: int
    leaves: int
    requeued: bool
    cash_reserved: int
    voucher_reserved: int


class InstrumentListed(_Event, frozen=True, kw_only=True):
    spec: InstrumentSpec


class InstrumentStatusChanged(_Event, frozen=True, kw_only=True):
    instrument_id: str
    status: InstrumentStatus
    previous: InstrumentStatus


class AuctionUncrossed(_Event, frozen=True, kw_only=True):
    """A call auction ended; ``volume`` GPU-hours traded at the single ``price``."""

    instrument_id: str
    price: int
    volume: int


class AccountAdmitted(_Event, frozen=True, kw_only=True):
    account_id: str
    role: Role
    tier: Tier | None
    hub: str


class PartiesRelated(_Event, frozen=True, kw_only=True):
    account_a: str
    account_b: str


class CashMoved(_Event, frozen=True, kw_only=True):
    """A deposit (positive) or withdrawal (negative); ``cash`` is the free balance after."""

    account_id: str
    amount: int
    cash: int


class CapacityRegistered(_Event, frozen=True, kw_only=True):
    provider: str
    instrument_id: str
    gpu_hours: int
    capacity: int  # free capacity after


class ProgrammeCreated(_Event, frozen=True, kw_only=True):
    programme_id: str
    issuer: str
    expires_at: int


class VoucherIssued(_Event, frozen=True, kw_only=True):
    voucher_id: int
    programme_id: str
    issuer: str
    holder: str
    amount: int
    expires_at: int


class ClaimSettled(_Event, frozen=True, kw_only=True):
    claim_id: int
    issuer: str
    provider: str
    amount: int


Event = (
    Rejected
    | OrderAccepted
    | Trade
    | OrderCancelled
    | OrderAmended
    | InstrumentListed
    | InstrumentStatusChanged
    | AuctionUncrossed
    | AccountAdmitted
    | PartiesRelated
    | CashMoved
    | CapacityRegistered
    | ProgrammeCreated
    | VoucherIssued
    | ClaimSettled
)

"""Commands: everything that can change the exchange's state.

Each command is an immutable msgspec Struct tagged by its class name, so the
journal stores them and replays them exactly. ``actor`` is the authenticated
account that sends it (the gateway sets it, never the client) and ``ts`` is the
time the service stamped on it; the core reads no clock of its own. The actor
``SYSTEM`` is the service itself (bootstrap, timers) and acts as an operator;
no API key ever maps to it.
"""

from __future__ import annotations

import msgspec

from exchange.reference import (
    EligibilityBasis,
    InstrumentSpec,
    InstrumentStatus,
    OrderType,
    Role,
    SelfTradePrevention,
    Side,
    Tier,
    TimeInForce,
)

SYSTEM = "system"


# gc=False: a command holds numbers, strings, enums, a frozen spec and lists of
# strings, and cannot change, so it is never part of a reference cycle; the
# garbage collector need not track every command decoded or kept in a batch.
class _Command(msgspec.Struct, frozen=True, kw_only=True, tag=True, gc=False):
    actor: str
    ts: int = 0


# --- Operators -------------------------------------------------------------


class ListInstrument(_Command, frozen=True, kw_only=True):
    spec: InstrumentSpec


class SetInstrumentStatus(_Command, frozen=True, kw_only=True):
    """Move an instrument to a new status. AUCTION -> OPEN runs the uncross."""

    instrument_id: str
    status: InstrumentStatus


class AdmitAccount(_Command, frozen=True, kw_only=True):
    account_id: str
    role: Role
    tier: Tier | None = None  # required for providers
    hub: str = ""  # required for providers
    revenue: int = 0  # attested yearly revenue, fen
    projects: list[str] = []  # attested government projects


class RelateParties(_Command, frozen=True, kw_only=True):
    """Record that two accounts are related: vouchers never pay between them."""

    account_a: str
    account_b: str


class Deposit(_Command, frozen=True, kw_only=True):
    account_id: str
    amount: int  # fen


class Withdraw(_Command, frozen=True, kw_only=True):
    account_id: str
    amount: int  # fen, from free cash only


# --- Providers -------------------------------------------------------------


class RegisterCapacity(_Command, frozen=True, kw_only=True):
    """Add GPU-hours a provider can sell on one instrument (provider or operator)."""

    provider: str
    instrument_id: str
    gpu_hours: int


# --- Issuers ---------------------------------------------------------------


class CreateProgramme(_Command, frozen=True, kw_only=True):
    """A voucher programme. Rates are basis points of contract value."""

    programme_id: str
    name: str
    rate_state_domestic: int
    rate_state_foreign: int
    rate_commercial_domestic: int
    rate_commercial_foreign: int
    eligible_hubs: list[str] = []  # empty: every hub
    cap_per_holder_year: int  # fen issued to one holder in one calendar year
    budget: int  # fen issued in all
    expires_at: int  # ns; vouchers cannot pay at or after this time
    basis: EligibilityBasis
    min_revenue: int = 0  # MIN_REVENUE basis
    projects: list[str] = []  # GOV_PROJECT basis: any of these


class IssueVoucher(_Command, frozen=True, kw_only=True):
    """Issue a voucher backed by the issuer's cash, which moves into the voucher."""

    programme_id: str
    holder: str
    amount: int  # fen


class SettleClaim(_Command, frozen=True, kw_only=True):
    """The issuer pays a provider's claim: its value becomes the provider's cash."""

    claim_id: int


# --- Traders ---------------------------------------------------------------


class NewOrder(_Command, frozen=True, kw_only=True):
    client_order_id: str
    instrument_id: str
    side: Side
    qty: int  # GPU-hours
    price: int = 0  # fen per GPU-hour; ignored for market orders
    order_type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.GTC
    expire_at: int = 0  # ns; GTD only
    post_only: bool = False
    min_qty: int = 0  # minimum fill on entry, else the order is cancelled unfilled
    stp: SelfTradePrevention = SelfTradePrevention.CANCEL_RESTING
    voucher_id: int = 0  # buys only: pay part with this voucher


class CancelOrder(_Command, frozen=True, kw_only=True):
    """Cancel by order id, or by the actor's own client order id."""

    order_id: int = 0
    client_order_id: str = ""


class AmendOrder(_Command, frozen=True, kw_only=True):
    """Change an open order. ``qty`` is the new total quantity (filled included).

    Only a reduced quantity at the same price keeps queue priority.
    """

    order_id: int = 0
    client_order_id: str = ""
    qty: int | None = None
    price: int | None = None


class CancelAll(_Command, frozen=True, kw_only=True):
    """Cancel the actor's open orders, on one instrument or everywhere."""

    instrument_id: str = ""


# --- The service -----------------------------------------------------------


class AdvanceClock(_Command, frozen=True, kw_only=True):
    """Let time pass with no other command, so expiries fire on time."""


Command = (
    ListInstrument
    | SetInstrumentStatus
    | AdmitAccount
    | RelateParties
    | Deposit
    | Withdraw
    | RegisterCapacity
    | CreateProgramme
    | IssueVoucher
    | SettleClaim
    | NewOrder
    | CancelOrder
    | AmendOrder
    | CancelAll
    | AdvanceClock
)

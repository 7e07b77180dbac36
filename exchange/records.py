"""The core's live records of instruments and accounts.

Plain classes, so that compiled (see ``exchange.native``) their fields are C
struct members, read and written on the hot path with no lookup. Each has a
msgspec record form in ``exchange.reference`` (``InstrumentState``,
``AccountState``) with the same fields: snapshots store that.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from exchange.reference import (
    AccountState,
    InstrumentSpec,
    InstrumentState,
    InstrumentStatus,
    Role,
    Tier,
)
from exchange.tables import KeyMap

S = TypeVar("S", bound=msgspec.Struct)


def record_of(obj: object, record: type[S]) -> S:
    """``obj``'s fields as a ``record`` Struct with the same field names."""
    return record(**{name: getattr(obj, name) for name in record.__struct_fields__})


class Record:
    """A live record whose ``state()`` is its msgspec record form: equal states, equal records."""

    def state(self) -> msgspec.Struct:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.state() == other.state()

    def __repr__(self) -> str:
        state = self.state()
        return repr(state).replace(type(state).__name__, type(self).__name__, 1)


class Instrument(Record):
    """An instrument's spec and its live trading state.

    The spec's figures that every order checks are copied onto the instrument.
    """

    spec: InstrumentSpec
    status: InstrumentStatus
    last_price: int
    volume: int  # GPU-hours traded since listing
    turnover: int  # fen traded since listing
    trades: int
    # From the spec, for the hot path:
    instrument_id: str
    tick: int
    lot: int
    max_price: int
    max_qty: int
    delivery_start: int
    # Programme id -> its voucher rate here (0: it does not pay here), filled in
    # as orders name vouchers. A programme's rates and hubs never change.
    voucher_rates: dict[str, int]

    def __init__(
        self,
        *,
        spec: InstrumentSpec,
        status: InstrumentStatus = InstrumentStatus.PRE_OPEN,
        last_price: int = 0,
        volume: int = 0,
        turnover: int = 0,
        trades: int = 0,
    ) -> None:
        self.spec = spec
        self.status = status
        self.last_price = last_price
        self.volume = volume
        self.turnover = turnover
        self.trades = trades
        self.instrument_id = spec.instrument_id
        self.tick = spec.tick
        self.lot = spec.lot
        self.max_price = spec.max_price
        self.max_qty = spec.max_qty
        self.delivery_start = spec.delivery_start
        self.voucher_rates = {}

    def state(self) -> InstrumentState:
        return record_of(self, InstrumentState)

    @staticmethod
    def from_state(state: InstrumentState) -> Instrument:
        return Instrument(**msgspec.structs.asdict(state))


class Position:
    """One account's GPU-hours on one instrument.

    A provider's registered capacity is ``free``, ``reserved`` by open sell
    orders, or ``sold``; a start-up's bought GPU-hours are ``held``.
    """

    registered: bool  # a provider registered capacity here
    free: int
    reserved: int
    sold: int
    held: int

    def __init__(self) -> None:
        self.registered = False
        self.free = 0
        self.reserved = 0
        self.sold = 0
        self.held = 0


class Account(Record):
    """A participant's standing: role, attested facts, money and capacity.

    Cash is split into ``cash`` (free) and ``cash_reserved`` (held by open buy
    orders). GPU-hours are kept per instrument in ``positions``; the record
    form (``AccountState``) has them as four maps, read here through the
    properties of the same names: a provider's capacity, free, reserved by open
    sell orders, and sold, on each instrument it registered; a start-up's
    ``holdings``. Claims on issuers receivable are tracked on the claims
    themselves.
    """

    account_id: str
    role: Role
    tier: Tier | None  # providers only
    hub: str  # providers only
    revenue: int  # attested yearly revenue, fen (voucher eligibility)
    projects: list[str]  # government projects
    cash: int
    cash_reserved: int
    positions: dict[str, Position]  # instrument id -> position, in order of opening
    related: set[str]
    client_order_ids: KeyMap  # every order's, kept for good to refuse duplicates

    def __init__(
        self,
        *,
        account_id: str,
        role: Role,
        tier: Tier | None = None,
        hub: str = "",
        revenue: int = 0,
        projects: list[str] | None = None,
        cash: int = 0,
        cash_reserved: int = 0,
        capacity: dict[str, int] | None = None,
        capacity_reserved: dict[str, int] | None = None,
        capacity_sold: dict[str, int] | None = None,
        holdings: dict[str, int] | None = None,
        related: set[str] | None = None,
        client_order_ids: dict[str, int] | None = None,
    ) -> None:
        self.account_id = account_id
        self.role = role
        self.tier = tier
        self.hub = hub
        self.revenue = revenue
        self.projects = [] if projects is None else projects
        self.cash = cash
        self.cash_reserved = cash_reserved
        self.positions = {}
        for instrument_id, qty in (capacity or {}).items():
            position = self.position(instrument_id)
            position.registered = True
            position.free = qty
        for instrument_id, qty in (capacity_reserved or {}).items():
            self.position(instrument_id).reserved = qty
        for instrument_id, qty in (capacity_sold or {}).items():
            self.position(instrument_id).sold = qty
        for instrument_id, qty in (holdings or {}).items():
            self.position(instrument_id).held = qty
        self.related = set() if related is None else related
        self.client_order_ids = KeyMap(client_order_ids)

    def position(self, instrument_id: str) -> Position:
        """The position on an instrument, opened empty if there is none."""
        position = self.positions.get(instrument_id)
        if position is None:
            position = self.positions[instrument_id] = Position()
        return position

    # The record form's maps. Registering capacity puts an instrument in all
    # three capacity maps, and a first fill puts it in the holdings, which only
    # grow; a position says which it has had.
    @property
    def capacity(self) -> dict[str, int]:
        return {i: p.free for i, p in self.positions.items() if p.registered}

    @property
    def capacity_reserved(self) -> dict[str, int]:
        return {i: p.reserved for i, p in self.positions.items() if p.registered}

    @property
    def capacity_sold(self) -> dict[str, int]:
        return {i: p.sold for i, p in self.positions.items() if p.registered}

    @property
    def holdings(self) -> dict[str, int]:
        return {i: p.held for i, p in self.positions.items() if p.held}

    def state(self) -> AccountState:
        state = record_of(self, AccountState)
        return msgspec.structs.replace(state, client_order_ids=self.client_order_ids.as_dict())

    @staticmethod
    def from_state(state: AccountState) -> Account:
        return Account(**msgspec.structs.asdict(state))

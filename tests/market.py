"""A small seeded market for tests: one call builds the accounts and instruments.

``Market`` wraps an ``ExchangeCore`` with short-hand for common commands, and
keeps every command applied so a test can replay them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from exchange import commands as c
from exchange.core import ExchangeCore
from exchange.events import Event, Rejected
from exchange.reference import (
    EligibilityBasis,
    InstrumentSpec,
    InstrumentStatus,
    Role,
    Side,
    Tier,
)

T0 = 1_800_000_000_000_000_000  # ns, a fixed start time
HOUR = 3_600 * 10**9
SYSTEM = c.SYSTEM

H100 = "H100-SUZHOU-STATE-W1"
ASCEND = "ASCEND910B-SUZHOU-STATE-W1"
COMMERCIAL = "H100-SUZHOU-COMM-W1"


def spec(
    instrument_id: str = H100,
    *,
    gpu_model: str = "H100",
    domestic: bool = False,
    hub: str = "suzhou",
    tier: Tier = Tier.STATE,
    tick: int = 10,
    lot: int = 8,
    start_hours: int = 240,
) -> InstrumentSpec:
    return InstrumentSpec(
        instrument_id=instrument_id,
        gpu_model=gpu_model,
        domestic=domestic,
        hub=hub,
        tier=tier,
        delivery_start=T0 + start_hours * HOUR,
        delivery_end=T0 + (start_hours + 168) * HOUR,
        tick=tick,
        lot=lot,
    )


class Market:
    """An exchange with instruments, providers, start-ups, an issuer and vouchers.

    Accounts: providers ``dc1``, ``dc2`` (state-run, suzhou) and ``dc3``
    (commercial, suzhou); start-ups ``su1``, ``su2`` with 10,000,000 fen
    each; issuer ``city`` with 50,000,000 fen and programme ``sz`` (state
    30% foreign / 60% domestic, commercial 20% domestic, 0 foreign) ;
    operator ``ops``. Providers hold 8,000 GPU-hours of capacity on their
    instruments. ``su1`` holds voucher 1 worth 1,000,000 fen.
    """

    def __init__(self, *, status: InstrumentStatus = InstrumentStatus.OPEN) -> None:
        self.core = ExchangeCore()
        self.now = T0
        self.log: list[c.Command] = []
        self.apply(c.AdmitAccount(actor=SYSTEM, account_id="ops", role=Role.OPERATOR))
        for instrument in (
            spec(H100),
            spec(ASCEND, gpu_model="Ascend910B", domestic=True),
            spec(COMMERCIAL, tier=Tier.COMMERCIAL),
        ):
            self.apply(c.ListInstrument(actor="ops", spec=instrument))
        for provider, tier in (("dc1", Tier.STATE), ("dc2", Tier.STATE), ("dc3", Tier.COMMERCIAL)):
            self.apply(
                c.AdmitAccount(
                    actor="ops", account_id=provider, role=Role.PROVIDER, tier=tier, hub="suzhou"
                )
            )
        for startup in ("su1", "su2"):
            self.apply(
                c.AdmitAccount(
                    actor="ops", account_id=startup, role=Role.STARTUP, revenue=5_000_000_00
                )
            )
            self.apply(c.Deposit(actor="ops", account_id=startup, amount=10_000_000))
        self.apply(c.AdmitAccount(actor="ops", account_id="city", role=Role.ISSUER))
        self.apply(c.Deposit(actor="ops", account_id="city", amount=50_000_000))
        for provider, instruments in (
            ("dc1", (H100, ASCEND)),
            ("dc2", (H100, ASCEND)),
            ("dc3", (COMMERCIAL,)),
        ):
            for instrument_id in instruments:
                self.apply(
                    c.RegisterCapacity(
                        actor=provider,
                        provider=provider,
                        instrument_id=instrument_id,
                        gpu_hours=8_000,
                    )
                )
        self.apply(
            c.CreateProgramme(
                actor="city",
                programme_id="sz",
                name="Suzhou compute voucher",
                rate_state_domestic=6_000,
                rate_state_foreign=3_000,
                rate_commercial_domestic=2_000,
                rate_commercial_foreign=0,
                cap_per_holder_year=5_000_000,
                budget=20_000_000,
                expires_at=T0 + 1_000 * HOUR,
                basis=EligibilityBasis.MIN_REVENUE,
                min_revenue=1_000_000_00,
            )
        )
        self.apply(c.IssueVoucher(actor="city", programme_id="sz", holder="su1", amount=1_000_000))
        for instrument_id in (H100, ASCEND, COMMERCIAL):
            self.apply(
                c.SetInstrumentStatus(actor="ops", instrument_id=instrument_id, status=status)
            )

    def apply(self, command: c.Command) -> list[Event]:
        """Apply a command stamped with the market's clock."""
        if not command.ts:
            command = type(command)(**{**_fields(command), "ts": self.now})
        self.log.append(command)
        return self.core.apply(command)

    def ok(self, command: c.Command) -> list[Event]:
        """Apply a command that must not be rejected."""
        events = self.apply(command)
        assert not any(isinstance(e, Rejected) for e in events), events
        return events

    def buy(self, who: str, coid: str, qty: int, price: int, **kw: Any) -> list[Event]:
        kw.setdefault("instrument_id", H100)
        return self.apply(
            c.NewOrder(actor=who, client_order_id=coid, side=Side.BUY, qty=qty, price=price, **kw)
        )

    def sell(self, who: str, coid: str, qty: int, price: int, **kw: Any) -> list[Event]:
        kw.setdefault("instrument_id", H100)
        return self.apply(
            c.NewOrder(actor=who, client_order_id=coid, side=Side.SELL, qty=qty, price=price, **kw)
        )

    def advance(self, ns: int) -> list[Event]:
        self.now += ns
        return self.apply(c.AdvanceClock(actor=SYSTEM))


def _fields(command: c.Command) -> dict[str, Any]:
    return {name: getattr(command, name) for name in command.__struct_fields__}


def state_digest(core: ExchangeCore) -> bytes:
    """Every piece of the core's state as bytes, books in priority order.

    Two cores with equal digests hold the same books, queue order, balances,
    reservations, vouchers, claims, contracts and id counters.
    """
    books = {
        instrument_id: [
            [(o.order_id, o.price, o.leaves, o.priority) for o in book.orders(side)]
            for side in (Side.BUY, Side.SELL)
        ]
        for instrument_id, book in sorted(core.books.items())
    }
    return msgspec.msgpack.encode(
        {
            "now": core.now,
            "instruments": sorted((i, v.state()) for i, v in core.instruments.items()),
            "accounts": sorted((i, a.state()) for i, a in core.accounts.items()),
            "orders": sorted((i, o.state()) for i, o in core.orders.items()),
            "books": books,
            "programmes": sorted(core.programmes.items()),
            "vouchers": sorted(core.vouchers.items()),
            "claims": sorted(core.claims.items()),
            "contracts": sorted(core.contracts.items()),
            "counters": [
                core.next_order_id,
                core.next_trade_id,
                core.next_voucher_id,
                core.next_claim_id,
                core.next_priority,
                core.deposited,
            ],
            "expiries": sorted(core.expiries),
            "closings": sorted(core.closings),
        },
        order="deterministic",
    )

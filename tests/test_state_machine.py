"""The core against the reference model, with the ledger's invariants after every step.

A hypothesis ``RuleBasedStateMachine`` sends random commands to ``ExchangeCore``
and to the simple ``tests.reference_model.ReferenceExchange`` at once: limit and
market orders (GTC, GTD, IOC, FOK, post-only, minimum fill, every self-trade
prevention mode, vouchers, one defect at a time), cancels by id and client id,
cancel-all, amends, deposits and withdrawals, capacity, vouchers and claims,
related parties, status changes (call auctions and halts included) and time,
which expires orders, vouchers and instruments.

After every step (``@invariant``):

* ``agrees_with_model``: both answered with the same events (checked as each
  command is sent) and hold the same books in priority order, open orders with
  their leaves and reservations, balances, capacity, vouchers and claims;
* ``books_are_sound``: price-then-time priority on each side, level totals and
  cached best prices right, and no book crossed at rest while OPEN;
* ``money_is_conserved``: cash + reserved cash + voucher balances and
  reservations + open claims == deposits minus withdrawals; each voucher's
  ``amount == balance + reserved + spent``; reservations add up to the open
  orders' and cover what each buy can still spend; nothing negative;
* ``capacity_is_conserved``: per provider and instrument, free + reserved +
  sold == registered, reserved == open sell leaves, and sold == holdings ==
  contracts' quantity;
* ``time_is_kept``: no open order past its expiry, no instrument past its
  delivery start still trading.

At teardown the command log goes through msgpack (as the journal stores it) and
is replayed into a fresh core, which must say byte-identical events and end
with the same ``state_digest``.

The seed is fixed (``SEED``) and printed; a failure prints the shortest command
sequence hypothesis finds.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from exchange import commands as c
from exchange.core import ExchangeCore
from exchange.events import (
    CapacityRegistered,
    Event,
    OrderAccepted,
    Rejected,
    Trade,
    VoucherIssued,
)
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
from tests.market import HOUR, T0, state_digest
from tests.reference_model import ReferenceExchange

SEED = 20_240_611
SYSTEM = c.SYSTEM
H100, ASC, COM = "H100", "ASC", "COM"
INSTRUMENTS = (H100, ASC, COM)
STARTUPS = ("su1", "su2", "su3")
PROVIDERS = ("dc1", "dc2", "dc3", "dcb")
ISSUERS = ("city", "city2")
EVERYONE = (*STARTUPS, *PROVIDERS, *ISSUERS, "ops", SYSTEM, "nobody")
NEVER = 2**63 - 1

SPECS = {
    # state-run, foreign chip: closes late
    H100: InstrumentSpec(
        instrument_id=H100,
        gpu_model="H100",
        domestic=False,
        hub="suzhou",
        tier=Tier.STATE,
        delivery_start=T0 + 200 * HOUR,
        delivery_end=T0 + 400 * HOUR,
        tick=10,
        lot=8,
        max_price=150,
        max_qty=64,
        reference_price=60,
    ),
    # state-run, domestic chip: closes mid-run
    ASC: InstrumentSpec(
        instrument_id=ASC,
        gpu_model="Ascend910B",
        domestic=True,
        hub="suzhou",
        tier=Tier.STATE,
        delivery_start=T0 + 60 * HOUR,
        delivery_end=T0 + 100 * HOUR,
        tick=5,
        lot=4,
        max_price=80,
        max_qty=40,
    ),
    # commercial, foreign chip: programme "sz" pays nothing here
    COM: InstrumentSpec(
        instrument_id=COM,
        gpu_model="H100",
        domestic=False,
        hub="suzhou",
        tier=Tier.COMMERCIAL,
        delivery_start=T0 + 30 * HOUR,
        delivery_end=T0 + 50 * HOUR,
        tick=10,
        lot=8,
        max_price=150,
        max_qty=64,
        reference_price=100,
    ),
}


def _programme(
    actor: str, programme_id: str, rates: tuple[int, int, int, int], **kw: Any
) -> c.CreateProgramme:
    return c.CreateProgramme(
        actor=actor,
        ts=T0,
        programme_id=programme_id,
        name=programme_id,
        rate_state_domestic=rates[0],
        rate_state_foreign=rates[1],
        rate_commercial_domestic=rates[2],
        rate_commercial_foreign=rates[3],
        **kw,
    )


def setup_commands() -> list[c.Command]:
    """Accounts, instruments, capacity, programmes, vouchers and two related pairs."""
    out: list[c.Command] = [
        c.AdmitAccount(actor=SYSTEM, ts=T0, account_id="ops", role=Role.OPERATOR)
    ]
    out += [c.ListInstrument(actor="ops", ts=T0, spec=s) for s in SPECS.values()]
    for provider, tier, hub in (
        ("dc1", Tier.STATE, "suzhou"),
        ("dc2", Tier.STATE, "suzhou"),
        ("dc3", Tier.COMMERCIAL, "suzhou"),
        ("dcb", Tier.STATE, "beijing"),
    ):
        out.append(
            c.AdmitAccount(
                actor="ops", ts=T0, account_id=provider, role=Role.PROVIDER, tier=tier, hub=hub
            )
        )
    for startup, revenue, projects, cash in (
        ("su1", 500_000_00, [], 20_000),
        ("su2", 500_000_00, ["p1"], 20_000),
        ("su3", 0, [], 8_000),
    ):
        out.append(
            c.AdmitAccount(
                actor="ops",
                ts=T0,
                account_id=startup,
                role=Role.STARTUP,
                revenue=revenue,
                projects=projects,
            )
        )
        out.append(c.Deposit(actor="ops", ts=T0, account_id=startup, amount=cash))
    for issuer, cash in (("city", 200_000), ("city2", 50_000)):
        out.append(c.AdmitAccount(actor="ops", ts=T0, account_id=issuer, role=Role.ISSUER))
        out.append(c.Deposit(actor="ops", ts=T0, account_id=issuer, amount=cash))
    for provider, instrument_id, hours in (
        ("dc1", H100, 400),
        ("dc1", ASC, 200),
        ("dc2", H100, 400),
        ("dc2", ASC, 200),
        ("dc3", COM, 400),
    ):
        out.append(
            c.RegisterCapacity(
                actor=provider,
                ts=T0,
                provider=provider,
                instrument_id=instrument_id,
                gpu_hours=hours,
            )
        )
    out += [
        _programme(
            "city",
            "sz",
            (6_000, 3_000, 2_000, 0),
            cap_per_holder_year=5_000,
            budget=60_000,
            expires_at=T0 + 500 * HOUR,
            basis=EligibilityBasis.MIN_REVENUE,
            min_revenue=100_000_00,
        ),
        _programme(
            "city",
            "sh",
            (5_000, 5_000, 5_000, 5_000),
            cap_per_holder_year=10_000,
            budget=8_000,
            expires_at=T0 + 4 * HOUR,
            basis=EligibilityBasis.GOV_PROJECT,
            projects=["p1"],
        ),
        _programme(
            "city2",
            "bj",
            (5_000, 5_000, 5_000, 5_000),
            eligible_hubs=["beijing"],
            cap_per_holder_year=10_000,
            budget=30_000,
            expires_at=T0 + 500 * HOUR,
            basis=EligibilityBasis.MIN_REVENUE,
        ),
    ]
    for programme_id, holder, amount in (
        ("sz", "su1", 3_000),  # voucher 1: state and commercial-domestic
        ("sh", "su2", 2_000),  # voucher 2: expires at 4h, so its orders do too
        ("bj", "su1", 1_000),  # voucher 3: beijing only, ineligible here
        ("sz", "su1", 400),  # voucher 4: small, soon used up
        ("sz", "su2", 2_000),  # voucher 5
    ):
        issuer = "city2" if programme_id == "bj" else "city"
        out.append(
            c.IssueVoucher(
                actor=issuer, ts=T0, programme_id=programme_id, holder=holder, amount=amount
            )
        )
    for startup, provider in (("su1", "dc1"), ("su2", "dc2")):
        out.append(c.RelateParties(actor="ops", ts=T0, account_a=startup, account_b=provider))
    return out


def _describe(events: list[Event]) -> str:
    return "\n".join(f"    {e!r}" for e in events)


@seed(SEED)
class ExchangeMachine(RuleBasedStateMachine):
    """Random commands into the core and the reference model, compared step by step."""

    def __init__(self) -> None:
        super().__init__()
        self.core = ExchangeCore()
        self.model = ReferenceExchange()
        self.now = T0
        self.log: list[c.Command] = []
        self.answers: list[list[Event]] = []
        self.registered: Counter[tuple[str, str]] = Counter()
        self.known_orders: list[tuple[str, int, str]] = []  # (account, order id, client id)
        self.claim_ids: list[int] = []
        self.vouchers_of: dict[str, list[int]] = {s: [] for s in STARTUPS}
        self.next_coid = 0
        self.clean = True  # every command so far was applied without an exception

    # --- sending commands -----------------------------------------------------

    def send(self, command: c.Command) -> list[Event]:
        self.clean = False
        self.log.append(command)
        got = self.core.apply(command)
        want = self.model.apply(command)
        assert got == want, (
            f"core and reference model disagree on\n    {command!r}\n"
            f"core:\n{_describe(got)}\nmodel:\n{_describe(want)}"
        )
        self.answers.append(got)
        for event in got:
            if isinstance(event, OrderAccepted):
                self.known_orders.append((event.account, event.order_id, event.client_order_id))
            elif isinstance(event, CapacityRegistered):
                self.registered[event.provider, event.instrument_id] += event.gpu_hours
            elif isinstance(event, Trade) and event.claim_id:
                self.claim_ids.append(event.claim_id)
            elif isinstance(event, VoucherIssued):
                self.vouchers_of[event.holder].append(event.voucher_id)
        self.clean = True
        return got

    def fresh_coid(self) -> str:
        self.next_coid += 1
        return f"c{self.next_coid}"

    @initialize(
        com_status=st.sampled_from([InstrumentStatus.OPEN, InstrumentStatus.AUCTION]),
    )
    def setup(self, com_status: InstrumentStatus) -> None:
        """H100 trades continuously, ASC starts in a call auction, COM either."""
        for command in setup_commands():
            events = self.send(command)
            assert not any(isinstance(e, Rejected) for e in events), events
        for instrument_id, status in zip(
            INSTRUMENTS, [InstrumentStatus.OPEN, InstrumentStatus.AUCTION, com_status], strict=True
        ):
            self.send(
                c.SetInstrumentStatus(
                    actor="ops", ts=self.now, instrument_id=instrument_id, status=status
                )
            )

    # --- orders ---------------------------------------------------------------

    def _order_fields(self, data: st.DataObject, *, side: Side | None = None) -> dict[str, Any]:
        """A new order's fields, sensible (if not always affordable or allowed)."""
        if side is None:
            side = data.draw(st.sampled_from([Side.BUY, Side.SELL]), label="side")
        trading = [
            i
            for i in (H100, H100, ASC, COM)
            if self.core.instruments[i].status in (InstrumentStatus.OPEN, InstrumentStatus.AUCTION)
        ]
        if not trading or data.draw(st.integers(0, 9), label="anywhere") == 0:
            trading = [H100, H100, ASC, COM]
        instrument_id = data.draw(st.sampled_from(trading), label="inst")
        traders: tuple[str, ...]
        if side is Side.BUY:
            traders = STARTUPS
        else:  # mostly a provider with capacity on the instrument
            traders = (
                ("dc3", "dc3", "dc3", "dc1")
                if instrument_id == COM
                else ("dc1", "dc2") * 3 + ("dc3",)
            )
        actor = data.draw(st.sampled_from(traders), label="actor")
        spec = SPECS.get(instrument_id, SPECS[H100])
        middle = spec.max_price // spec.tick // 2
        # prices bunch around the middle, so books both build up and cross
        ticks = st.integers(middle - 3, middle + 3).map(lambda n: n * spec.tick)
        lots = st.integers(1, 5).map(lambda n: n * spec.lot)
        tifs = [TimeInForce.GTC] * 4 + [TimeInForce.GTD] * 2 + [TimeInForce.IOC, TimeInForce.FOK]
        expiries = [1, HOUR, 3 * HOUR, 30 * HOUR, 300 * HOUR]
        qty = data.draw(lots, label="qty")
        tif = data.draw(st.sampled_from(tifs), label="tif")
        expire_at = 0
        if tif is TimeInForce.GTD:
            expire_at = self.now + data.draw(st.sampled_from(expiries), label="expires_in")
        min_qty = 0
        if data.draw(st.integers(0, 7), label="use_min_qty") == 0:
            min_qty = min(qty, data.draw(st.integers(1, 3), label="min_lots") * spec.lot)
        post_only = data.draw(st.integers(0, 4), label="use_post_only") == 0
        if min_qty or tif in (TimeInForce.IOC, TimeInForce.FOK):
            post_only = False
        voucher_id = 0
        if side is Side.BUY:
            voucher_id = data.draw(st.sampled_from([0, *self.vouchers_of[actor]]), label="voucher")
        return {
            "actor": actor,
            "ts": self.now,
            "client_order_id": self.fresh_coid(),
            "instrument_id": instrument_id,
            "side": side,
            "qty": qty,
            "price": data.draw(ticks, label="price"),
            "tif": tif,
            "expire_at": expire_at,
            "post_only": post_only,
            "min_qty": min_qty,
            "stp": data.draw(st.sampled_from(list(SelfTradePrevention)), label="stp"),
            "voucher_id": voucher_id,
        }

    def _defect(self, data: st.DataObject, fields: dict[str, Any]) -> dict[str, Any]:
        """One thing wrong with an otherwise sensible order, to reach each refusal."""
        spec = SPECS[fields["instrument_id"]]
        lot, tick, qty = spec.lot, spec.tick, fields["qty"]
        gtd = {"tif": TimeInForce.GTD}
        ioc = {"tif": TimeInForce.IOC}
        market = {"order_type": OrderType.MARKET, "price": 0, "tif": TimeInForce.IOC}
        defects: list[dict[str, Any]] = [
            {"actor": data.draw(st.sampled_from(EVERYONE), label="anyone")},
            {"instrument_id": "NOPE"},
            {"qty": data.draw(st.sampled_from([0, -lot, lot + 1, 10 * spec.max_qty]))},
            {"price": data.draw(st.sampled_from([0, -tick, tick + 1, spec.max_price + tick]))},
            {**gtd, "expire_at": self.now + data.draw(st.sampled_from([-HOUR, 0]))},
            {"tif": TimeInForce.GTC, "expire_at": self.now + HOUR},
            {"min_qty": data.draw(st.sampled_from([-lot, lot + 1, qty + lot]))},
            {**ioc, "post_only": True, "min_qty": 0},
            {"post_only": True, "min_qty": lot, "tif": TimeInForce.GTC, "expire_at": 0},
            {"voucher_id": data.draw(st.sampled_from([99, 99, 1, 2, 4]), label="voucher")},
            {"client_order_id": data.draw(st.sampled_from(["", " x", "x" * 65, "a\tb"]))},
            {**market, "price": tick},
            {**market, "tif": TimeInForce.GTC},
            {**market, "post_only": True},
            {**market, "min_qty": lot},
        ]
        return data.draw(st.sampled_from(defects), label="defect")

    def _new_order(self, data: st.DataObject) -> None:
        kind = data.draw(
            st.sampled_from(
                ["buy", "buy", "sell", "sell", "sweep", "sweep", "market", "odd", "again"]
            ),
            label="kind",
        )
        if kind == "sweep":
            # Through the best opposite level: partial fills at better prices, then
            # the rest either rests or fills a resting order exactly.
            fields = self._order_fields(data)
            book = self.core.books.get(fields["instrument_id"])
            if book is not None:
                buying = fields["side"] is Side.BUY
                spec = SPECS[fields["instrument_id"]]
                best = book.best_ask if buying else book.best_bid
                if best:
                    through = data.draw(st.integers(0, 2), label="through") * spec.tick
                    fields["price"] = best + through if buying else max(best - through, spec.tick)
                    top = book.level(Side.SELL if buying else Side.BUY, best).total
                    extra = data.draw(st.integers(-1, 2), label="extra") * spec.lot
                    fields["qty"] = min(max(top + extra, spec.lot), spec.max_qty)
                    fields["min_qty"] = min(fields["min_qty"], fields["qty"])
        elif kind == "market":
            fields = self._order_fields(data)
            fields.update(
                order_type=OrderType.MARKET,
                price=0,
                tif=data.draw(st.sampled_from([TimeInForce.IOC, TimeInForce.FOK]), label="tif"),
                expire_at=0,
                post_only=False,
            )
        elif kind == "again" and self.known_orders:
            # An owner reusing a client order id: refused as a duplicate.
            owner, _, coid = self._pick_order(data)
            side = Side.BUY if owner in STARTUPS else Side.SELL
            fields = self._order_fields(data, side=side)
            fields.update(actor=owner, client_order_id=coid, voucher_id=0)
        elif kind == "odd":
            fields = self._order_fields(data)
            fields.update(self._defect(data, fields))
        else:
            fields = self._order_fields(data, side=Side.SELL if kind == "sell" else Side.BUY)
        self.send(c.NewOrder(**fields))

    # Four rules for one action: new orders are most of the traffic.
    @rule(data=st.data())
    def new_order(self, data: st.DataObject) -> None:
        self._new_order(data)

    @rule(data=st.data())
    def another_new_order(self, data: st.DataObject) -> None:
        self._new_order(data)

    @rule(data=st.data())
    def yet_another_new_order(self, data: st.DataObject) -> None:
        self._new_order(data)

    @rule(data=st.data())
    def still_another_new_order(self, data: st.DataObject) -> None:
        self._new_order(data)

    def _pick_order(self, data: st.DataObject) -> tuple[str, int, str]:
        """Mostly an open order; sometimes any order ever accepted."""
        open_orders = sorted(self.core.orders)
        if open_orders and data.draw(st.integers(0, 3), label="open") > 0:
            order = self.core.orders[data.draw(st.sampled_from(open_orders), label="order")]
            return order.account, order.order_id, order.client_order_id
        back = data.draw(st.integers(0, len(self.known_orders) - 1), label="pick")
        return self.known_orders[-1 - back]

    @precondition(lambda self: self.known_orders)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """Cancel one order (by id or client id, by its owner or not), or cancel-all."""
        if data.draw(st.integers(0, 3), label="all") == 0:
            actor = data.draw(st.sampled_from([*STARTUPS, *PROVIDERS[:3], "ops", SYSTEM]))
            instrument_id = data.draw(st.sampled_from(["", "", H100, ASC, COM, "NOPE"]))
            self.send(c.CancelAll(actor=actor, ts=self.now, instrument_id=instrument_id))
            return
        owner, order_id, coid = self._pick_order(data)
        actor = data.draw(st.sampled_from([owner, owner, owner, "ops", "su1", "dc2", SYSTEM]))
        by_coid = data.draw(st.booleans(), label="by_coid")
        self.send(
            c.CancelOrder(
                actor=actor,
                ts=self.now,
                order_id=0 if by_coid else order_id,
                client_order_id=coid if by_coid else "",
            )
        )

    @precondition(lambda self: self.known_orders)
    @rule(data=st.data())
    def amend(self, data: st.DataObject) -> None:
        owner, order_id, coid = self._pick_order(data)
        order = self.core.orders.get(order_id)
        spec = SPECS[order.instrument_id] if order else SPECS[H100]
        qty = data.draw(
            st.one_of(
                st.none(),
                st.integers(0, 6).map(lambda n: n * spec.lot),
                st.sampled_from([spec.lot + 1, 10_000]),
            ),
            label="new_qty",
        )
        price = data.draw(
            st.one_of(
                st.none(),
                st.integers(1, spec.max_price // spec.tick).map(lambda n: n * spec.tick),
                st.sampled_from([0, spec.tick + 1, 10_000]),
            ),
            label="new_price",
        )
        actor = data.draw(st.sampled_from([owner, owner, owner, owner, "ops", "su2"]))
        by_coid = data.draw(st.booleans(), label="by_coid")
        self.send(
            c.AmendOrder(
                actor=actor,
                ts=self.now,
                order_id=0 if by_coid else order_id,
                client_order_id=coid if by_coid else "",
                qty=qty,
                price=price,
            )
        )

    # --- cash, capacity, vouchers, relations ----------------------------------

    @rule(data=st.data())
    def back_office(self, data: st.DataObject) -> None:
        """Cash, capacity, vouchers, claims and related parties."""
        what = data.draw(
            st.sampled_from(["cash", "cash", "capacity", "relate", "voucher", "claim", "claim"]),
            label="what",
        )
        if what == "cash":
            withdraw = data.draw(st.booleans(), label="withdraw")
            self.send(
                (c.Withdraw if withdraw else c.Deposit)(
                    actor=data.draw(st.sampled_from(["ops", "ops", SYSTEM, "su1"]), label="actor"),
                    ts=self.now,
                    account_id=data.draw(
                        st.sampled_from([*STARTUPS, *PROVIDERS, *ISSUERS, "nobody"]), label="acct"
                    ),
                    amount=data.draw(
                        st.sampled_from([1, 500, 5_000, 30_000, 30_000, 0, -5, 10**15 + 1]),
                        label="amount",
                    ),
                )
            )
        elif what == "capacity":
            self.send(
                c.RegisterCapacity(
                    actor=data.draw(st.sampled_from([*PROVIDERS, "ops", "su1"]), label="actor"),
                    ts=self.now,
                    provider=data.draw(st.sampled_from([*PROVIDERS, "su1", "nobody"]), label="p"),
                    instrument_id=data.draw(st.sampled_from([*INSTRUMENTS, "NOPE"]), label="i"),
                    gpu_hours=data.draw(st.sampled_from([4, 8, 16, 80, 0, 3]), label="hours"),
                )
            )
        elif what == "relate":
            a, b = data.draw(
                st.sampled_from(
                    [("su1", "dc2"), ("su2", "dc1"), ("su2", "dc3"), ("su3", "dc2"), ("su1", "su1")]
                ),
                label="pair",
            )
            actor = data.draw(st.sampled_from(["ops", "ops", "su1"]), label="actor")
            self.send(c.RelateParties(actor=actor, ts=self.now, account_a=a, account_b=b))
        elif what == "voucher":
            actor, programme_id, holder = data.draw(
                st.sampled_from(
                    [
                        ("city", "sz", "su1"),
                        ("city", "sz", "su2"),
                        ("city", "sh", "su2"),
                        ("city", "sh", "su3"),
                        ("city2", "bj", "su1"),
                        ("city2", "sz", "su1"),
                        ("city", "nope", "su1"),
                        ("city", "sz", "dc1"),
                    ]
                ),
                label="issue",
            )
            amount = data.draw(st.integers(0, 10_000), label="amount")
            self.send(
                c.IssueVoucher(
                    actor=actor,
                    ts=self.now,
                    programme_id=programme_id,
                    holder=holder,
                    amount=amount,
                )
            )
        else:
            claim_id = 999  # unknown
            if self.claim_ids and data.draw(st.integers(0, 9), label="known") > 0:
                claim_id = data.draw(st.sampled_from(self.claim_ids), label="claim")
            actor = data.draw(st.sampled_from(["city", "city", "city", "city2", "dc1"]))
            self.send(c.SettleClaim(actor=actor, ts=self.now, claim_id=claim_id))

    @rule(data=st.data())
    def set_status(self, data: st.DataObject) -> None:
        """Mostly a transition the instrument allows; closing is rare."""
        instrument_id = data.draw(st.sampled_from([H100, H100, ASC, COM]), label="inst")
        if data.draw(st.booleans(), label="reopen"):  # prefer one that is not trading
            waiting = [
                i
                for i in INSTRUMENTS
                if self.core.instruments[i].status
                in (InstrumentStatus.HALTED, InstrumentStatus.AUCTION)
            ]
            instrument_id = data.draw(st.sampled_from(waiting or [instrument_id]), label="i")
        now = self.core.instruments[instrument_id].status
        # Trading spends most of its time OPEN; a no-op (refused) change is fine too.
        likely = {
            InstrumentStatus.OPEN: [InstrumentStatus.HALTED, InstrumentStatus.OPEN],
            InstrumentStatus.HALTED: [InstrumentStatus.OPEN, InstrumentStatus.AUCTION],
            InstrumentStatus.AUCTION: [InstrumentStatus.OPEN, InstrumentStatus.HALTED] * 2
            + [InstrumentStatus.AUCTION],
        }.get(now, [InstrumentStatus.OPEN])
        status = data.draw(
            st.sampled_from([*likely, *likely, *likely, *InstrumentStatus]), label="status"
        )
        actor = data.draw(st.sampled_from(["ops", "ops", "ops", "su1"]), label="actor")
        self.send(
            c.SetInstrumentStatus(
                actor=actor, ts=self.now, instrument_id=instrument_id, status=status
            )
        )

    @rule(
        step=st.sampled_from(
            [0, 1, HOUR, HOUR, 2 * HOUR, 5 * HOUR, "expiry", "expiry", "before expiry", "deadline"]
        ),
        actor=st.sampled_from([SYSTEM, SYSTEM, "ops", "su1"]),
    )
    def advance_clock(self, step: int | str, actor: str) -> None:
        """Let time pass: a fixed step, to an order's expiry (or just before), or to
        the next deadline of any kind, which may close an instrument."""
        if step == "deadline":
            deadline = self.core.next_deadline()
        else:
            expiries = [o.expire_at for o in self.core.orders.values() if o.expire_at != NEVER]
            deadline = min(expiries, default=NEVER)
        if isinstance(step, int):
            self.now += step
        elif deadline != NEVER:
            self.now = max(self.now, deadline - (step == "before expiry"))
        self.send(c.AdvanceClock(actor=actor, ts=self.now))

    # --- invariants -------------------------------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        core, model = self.core, self.model
        assert core.now == model.now
        assert core.deposited == model.deposited
        for instrument_id, inst in core.instruments.items():
            ref = model.instruments[instrument_id]
            assert (inst.status, inst.last_price) == (ref.status, ref.last_price), instrument_id
            for side in Side:
                got = [
                    (o.order_id, o.price, o.leaves, o.priority)
                    for o in core.books[instrument_id].orders(side)
                ]
                want = [
                    (o.order_id, o.price, o.leaves, o.arrival)
                    for o in model.side_in_priority(instrument_id, side)
                ]
                assert got == want, (instrument_id, side)
        assert {
            o.order_id: (
                o.account,
                o.instrument_id,
                o.side,
                o.price,
                o.qty,
                o.leaves,
                o.expire_at,
                o.cash_reserved,
                o.voucher_reserved,
            )
            for o in core.orders.values()
        } == {
            o.order_id: (
                o.account,
                o.instrument_id,
                o.side,
                o.price,
                o.qty,
                o.leaves,
                o.expire_at,
                o.cash_reserved,
                o.voucher_reserved,
            )
            for o in model.orders
        }
        for account_id, a in core.accounts.items():
            holder = model.accounts[account_id]
            assert (a.cash, a.cash_reserved) == (
                model.free_cash(account_id),
                model.cash_reserved(account_id),
            ), account_id
            for iid in INSTRUMENTS:
                assert (
                    a.capacity.get(iid, 0),
                    a.capacity_reserved.get(iid, 0),
                    a.capacity_sold.get(iid, 0),
                    a.holdings.get(iid, 0),
                ) == (
                    model.free_capacity(account_id, iid),
                    model.capacity_reserved(account_id, iid),
                    holder.sold.get(iid, 0),
                    holder.holdings.get(iid, 0),
                ), (account_id, iid)
        assert core.vouchers.keys() == model.vouchers.keys()
        for voucher_id, v in core.vouchers.items():
            assert (v.balance, v.reserved, v.spent) == (
                model.voucher_balance(voucher_id),
                model.voucher_reserved(voucher_id),
                model.vouchers[voucher_id].spent,
            ), voucher_id
        assert {k: (x.amount, x.provider, x.settled) for k, x in core.claims.items()} == {
            k: (x.amount, x.provider, x.settled) for k, x in model.claims.items()
        }

    @invariant()
    def books_are_sound(self) -> None:
        core = self.core
        on_books: set[int] = set()
        for instrument_id, book in core.books.items():
            for side in Side:
                orders = list(book.orders(side))
                sign = -1 if side is Side.BUY else 1
                keys = [(sign * o.price, o.priority) for o in orders]
                assert keys == sorted(keys), f"{instrument_id} {side}: not price then time"
                assert len({o.priority for o in orders}) == len(orders)
                levels = book.bids if side is Side.BUY else book.asks
                for price, level in levels.items():
                    live = list(level.live_orders())
                    assert live, f"empty level {price} kept"
                    assert level.count == len(live)
                    assert level.total == sum(o.leaves for o in live)
                    assert all(o.price == price and o.side is side for o in live)
                prices = [o.price for o in orders]
                best = book.best_bid if side is Side.BUY else book.best_ask
                assert best == (prices[0] if prices else 0), f"{instrument_id} {side} best"
                for o in orders:
                    assert core.orders.get(o.order_id) is o
                    assert o.instrument_id == instrument_id and o.leaves > 0
                    on_books.add(o.order_id)
            if core.instruments[instrument_id].status is InstrumentStatus.OPEN:
                assert not book.crossed(), f"{instrument_id} crossed at rest while OPEN"
            if core.instruments[instrument_id].status is InstrumentStatus.CLOSED:
                assert not book.bids and not book.asks
        assert on_books == set(core.orders)

    @invariant()
    def time_is_kept(self) -> None:
        """Nothing outlives its deadline: expired orders and due closings are gone."""
        core = self.core
        for o in core.orders.values():
            assert o.expire_at > core.now, f"order {o.order_id} outlived its expiry"
        for instrument_id, inst in core.instruments.items():
            if inst.spec.delivery_start <= core.now:
                assert inst.status is InstrumentStatus.CLOSED, instrument_id

    @invariant()
    def money_is_conserved(self) -> None:
        core = self.core
        cash = sum(a.cash + a.cash_reserved for a in core.accounts.values())
        vouchers = sum(v.balance + v.reserved for v in core.vouchers.values())
        claims = sum(x.amount for x in core.claims.values() if not x.settled)
        assert cash + vouchers + claims == core.deposited
        reserved_cash: Counter[str] = Counter()
        reserved_voucher: Counter[int] = Counter()
        for o in core.orders.values():
            if o.side is Side.BUY:
                reserved_cash[o.account] += o.cash_reserved
                reserved_voucher[o.voucher_id] += o.voucher_reserved
                # it holds enough for the most it can still spend
                assert o.cash_reserved + o.voucher_reserved >= o.price * o.leaves
                assert o.cash_reserved >= 0 and 0 <= o.voucher_reserved <= o.voucher_cap
            else:
                assert o.cash_reserved == o.voucher_reserved == 0
        for account_id, a in core.accounts.items():
            assert a.cash >= 0 and a.cash_reserved >= 0, account_id
            assert a.cash_reserved == reserved_cash[account_id], account_id
        spent_by_claims: Counter[int] = Counter()
        for x in core.claims.values():
            assert x.amount > 0
            spent_by_claims[x.voucher_id] += x.amount
        for voucher_id, v in core.vouchers.items():
            assert min(v.balance, v.reserved, v.spent) >= 0, voucher_id
            assert v.amount == v.balance + v.reserved + v.spent, voucher_id
            assert v.reserved == reserved_voucher[voucher_id], voucher_id
            assert v.spent == spent_by_claims[voucher_id], voucher_id
        for trade in core.contracts.values():
            assert trade.cash + trade.voucher == trade.price * trade.qty
            assert trade.cash >= 0 and trade.voucher >= 0 and trade.qty > 0

    @invariant()
    def capacity_is_conserved(self) -> None:
        core = self.core
        reserved_by_sells: Counter[tuple[str, str]] = Counter()
        for o in core.orders.values():
            if o.side is Side.SELL:
                reserved_by_sells[o.account, o.instrument_id] += o.leaves
        for instrument_id in core.instruments:
            sold = holdings = traded = 0
            for account_id, a in core.accounts.items():
                free = a.capacity.get(instrument_id, 0)
                reserved = a.capacity_reserved.get(instrument_id, 0)
                sold_here = a.capacity_sold.get(instrument_id, 0)
                held = a.holdings.get(instrument_id, 0)
                key = (account_id, instrument_id)
                assert min(free, reserved, sold_here, held) >= 0, key
                assert free + reserved + sold_here == self.registered[key], key
                assert reserved == reserved_by_sells[key], key
                sold += sold_here
                holdings += held
            for trade in core.contracts.values():
                if trade.instrument_id == instrument_id:
                    traded += trade.qty
            assert sold == holdings == traded, instrument_id

    def teardown(self) -> None:
        if not self.clean or not self.log:
            return  # a command raised; replaying it would only raise again
        wire = msgspec.msgpack.encode(self.log)
        replayed = msgspec.msgpack.Decoder(list[c.Command]).decode(wire)
        assert replayed == self.log
        fresh = ExchangeCore()
        encode = msgspec.msgpack.encode
        for command, answer in zip(replayed, self.answers, strict=True):
            assert encode(fresh.apply(command)) == encode(answer), command
        assert state_digest(fresh) == state_digest(self.core)


MACHINE_SETTINGS = settings(
    max_examples=160,
    stateful_step_count=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_core_matches_reference_model() -> None:
    print(f"hypothesis seed: {SEED} (tests/test_state_machine.py, ExchangeMachine)")
    run_state_machine_as_test(ExchangeMachine, settings=MACHINE_SETTINGS)

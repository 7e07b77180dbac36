"""The call auction's uncross, checked by brute force.

A small ``RuleBasedStateMachine`` collects limit orders on one instrument in
AUCTION (and amends and cancels some), then opens it, either straight from the
call or after a halt. At every open the test recomputes, from the book as it
stood, what the uncross must do:

* the volume traded is the largest ``min(demand(p), supply(p))`` over every
  price ``p`` on the tick grid between the lowest and highest order price, so no
  single price could have traded more;
* the published price trades that volume and wins the documented tie-breaks
  (least imbalance, then nearest the reference, then lowest) among the prices
  orders rest at;
* every fill is at that one price, bids and asks fill in price-time priority,
  and the book left behind is not crossed;
* orders of parties who may not trade (a voucher buyer and a related provider)
  give way before the price is set, and the volume is computed without them.

The core and ``tests.reference_model.ReferenceExchange`` also answer every
command with the same events here. The seed is fixed (``SEED``) and printed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

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
    AuctionUncrossed,
    Event,
    OrderCancelled,
    Rejected,
    Trade,
)
from exchange.reasons import CancelReason
from exchange.reference import (
    EligibilityBasis,
    InstrumentSpec,
    InstrumentStatus,
    Role,
    Side,
    Tier,
)
from tests.market import HOUR, T0
from tests.reference_model import ReferenceExchange

SEED = 424_242
SYSTEM = c.SYSTEM
CALL = "CALL"
TICK, LOT = 10, 8
BUYERS = ("su1", "su2")
SELLERS = ("dc1", "dc2")


@dataclass(frozen=True)
class Resting:
    order_id: int
    side: Side
    price: int
    leaves: int
    priority: int


def volume_at(orders: list[Resting], price: int) -> tuple[int, int]:
    """(demand, supply) at ``price``: bids at or above it, asks at or below it."""
    demand = sum(o.leaves for o in orders if o.side is Side.BUY and o.price >= price)
    supply = sum(o.leaves for o in orders if o.side is Side.SELL and o.price <= price)
    return demand, supply


def brute_force(orders: list[Resting], reference: int) -> tuple[int, int]:
    """(best volume over the whole tick grid, the documented price) for a book."""
    if not orders:
        return 0, 0
    prices = [o.price for o in orders]
    grid = range(min(prices), max(prices) + 1, TICK)
    best_volume = max(min(volume_at(orders, p)) for p in grid)
    if not best_volume:
        return 0, 0

    def rank(p: int) -> tuple[int, int, int, int]:
        demand, supply = volume_at(orders, p)
        distance = abs(p - reference) if reference else 0
        return (-min(demand, supply), abs(demand - supply), distance, p)

    return best_volume, min(grid, key=rank)


@seed(SEED)
class AuctionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = ExchangeCore()
        self.model = ReferenceExchange()
        self.coid = 0
        self.calls = 0

    def send(self, command: c.Command) -> list[Event]:
        got = self.core.apply(command)
        want = self.model.apply(command)
        assert got == want, (command, got, want)
        return got

    @initialize(
        reference=st.sampled_from([0, 0, 50, 120]),
        related=st.sampled_from([True, True, True, False]),
    )
    def setup(self, reference: int, related: bool) -> None:
        spec = InstrumentSpec(
            instrument_id=CALL,
            gpu_model="H800",
            domestic=False,
            hub="wuhu",
            tier=Tier.STATE,
            delivery_start=T0 + 1_000 * HOUR,
            delivery_end=T0 + 2_000 * HOUR,
            tick=TICK,
            lot=LOT,
            max_price=200,
            reference_price=reference,
        )
        setup: list[c.Command] = [
            c.AdmitAccount(actor=SYSTEM, ts=T0, account_id="ops", role=Role.OPERATOR),
            c.ListInstrument(actor="ops", ts=T0, spec=spec),
            c.AdmitAccount(actor="ops", ts=T0, account_id="city", role=Role.ISSUER),
            c.Deposit(actor="ops", ts=T0, account_id="city", amount=10**9),
            c.CreateProgramme(
                actor="city",
                ts=T0,
                programme_id="wh",
                name="Wuhu compute voucher",
                rate_state_domestic=5_000,
                rate_state_foreign=5_000,
                rate_commercial_domestic=5_000,
                rate_commercial_foreign=5_000,
                cap_per_holder_year=10**8,
                budget=10**8,
                expires_at=T0 + 5_000 * HOUR,
                basis=EligibilityBasis.MIN_REVENUE,
            ),
        ]
        for seller in SELLERS:
            setup.append(
                c.AdmitAccount(
                    actor="ops",
                    ts=T0,
                    account_id=seller,
                    role=Role.PROVIDER,
                    tier=Tier.STATE,
                    hub="wuhu",
                )
            )
            setup.append(
                c.RegisterCapacity(
                    actor=seller, ts=T0, provider=seller, instrument_id=CALL, gpu_hours=10**6
                )
            )
        for buyer in BUYERS:
            setup.append(c.AdmitAccount(actor="ops", ts=T0, account_id=buyer, role=Role.STARTUP))
            setup.append(c.Deposit(actor="ops", ts=T0, account_id=buyer, amount=10**9))
            setup.append(
                c.IssueVoucher(actor="city", ts=T0, programme_id="wh", holder=buyer, amount=10**5)
            )
        if related:  # su1's voucher orders may not trade with dc1
            setup.append(c.RelateParties(actor="ops", ts=T0, account_a="su1", account_b="dc1"))
        setup.append(
            c.SetInstrumentStatus(
                actor="ops", ts=T0, instrument_id=CALL, status=InstrumentStatus.AUCTION
            )
        )
        for command in setup:
            assert not any(isinstance(e, Rejected) for e in self.send(command)), command

    @property
    def status(self) -> InstrumentStatus:
        return self.core.instruments[CALL].status

    def resting(self) -> list[Resting]:
        book = self.core.books[CALL]
        return [
            Resting(o.order_id, o.side, o.price, o.leaves, o.priority)
            for side in Side
            for o in book.orders(side)
        ]

    @precondition(lambda self: self.status is InstrumentStatus.AUCTION)
    @rule(
        side=st.sampled_from(list(Side)),
        who=st.integers(0, 1),
        ticks=st.integers(1, 20),
        lots=st.integers(1, 6),
        voucher=st.booleans(),
    )
    def place(self, side: Side, who: int, ticks: int, lots: int, voucher: bool) -> None:
        self.coid += 1
        buying = side is Side.BUY
        events = self.send(
            c.NewOrder(
                actor=(BUYERS if buying else SELLERS)[who],
                ts=T0,
                client_order_id=f"a{self.coid}",
                instrument_id=CALL,
                side=side,
                qty=lots * LOT,
                price=ticks * TICK,
                voucher_id=who + 1 if buying and voucher else 0,
            )
        )
        assert not any(isinstance(e, Rejected | Trade) for e in events), events

    @precondition(lambda self: self.status is InstrumentStatus.AUCTION)
    @rule(
        side=st.sampled_from(list(Side)),
        who=st.integers(0, 1),
        ticks=st.integers(1, 20),
        lots=st.integers(1, 6),
        voucher=st.booleans(),
    )
    def place_another(self, side: Side, who: int, ticks: int, lots: int, voucher: bool) -> None:
        self.place(side, who, ticks, lots, voucher)

    @precondition(lambda self: self.status is InstrumentStatus.AUCTION and self.core.orders)
    @rule(data=st.data())
    def amend_or_cancel(self, data: st.DataObject) -> None:
        order = self.core.orders[data.draw(st.sampled_from(sorted(self.core.orders)))]
        if data.draw(st.booleans(), label="cancel"):
            self.send(c.CancelOrder(actor=order.account, ts=T0, order_id=order.order_id))
            return
        events = self.send(
            c.AmendOrder(
                actor=order.account,
                ts=T0,
                order_id=order.order_id,
                qty=order.qty - order.leaves + data.draw(st.integers(1, 6)) * LOT,
                price=data.draw(st.integers(1, 20)) * TICK,
            )
        )
        assert not any(isinstance(e, Rejected | Trade) for e in events), events

    @precondition(
        lambda self: self.status is InstrumentStatus.AUCTION and len(self.core.orders) > 3
    )
    @rule(via_halt=st.booleans())
    def open_market(self, via_halt: bool) -> None:
        """Open the call (directly, or halted first) and check the uncross."""
        before = {o.order_id: o for o in self.resting()}
        inst = self.core.instruments[CALL]
        reference = inst.last_price or inst.spec.reference_price
        if via_halt:
            self.send(
                c.SetInstrumentStatus(
                    actor="ops", ts=T0, instrument_id=CALL, status=InstrumentStatus.HALTED
                )
            )
        events = self.send(
            c.SetInstrumentStatus(
                actor="ops", ts=T0, instrument_id=CALL, status=InstrumentStatus.OPEN
            )
        )
        self.calls += 1
        uncrossed = [e for e in events if isinstance(e, AuctionUncrossed)]
        trades = [e for e in events if isinstance(e, Trade)]
        gave_way = [e for e in events if isinstance(e, OrderCancelled)]
        assert all(e.reason is CancelReason.SELF_TRADE for e in gave_way), gave_way
        for e in gave_way:  # only a voucher buyer and its related provider conflict
            order = before[e.order_id]
            assert e.account in ("su1", "dc1") and e.leaves == order.leaves
        # The book the price was set on: what rested, less those that gave way.
        priced = [o for i, o in before.items() if i not in {e.order_id for e in gave_way}]
        volume, price = brute_force(priced, reference)
        bids = [o.price for o in before.values() if o.side is Side.BUY]
        asks = [o.price for o in before.values() if o.side is Side.SELL]
        crossed = bool(bids and asks and max(bids) >= min(asks))
        # Opening a call always uncrosses; resuming after a halt only if it must.
        assert len(uncrossed) == (1 if crossed or not via_halt else 0), events
        if uncrossed:
            assert (uncrossed[0].price, uncrossed[0].volume) == (price, volume), (
                f"uncross {uncrossed[0]} but brute force says price {price} volume {volume}"
                f" on {priced} (reference {reference})"
            )
        assert sum(t.qty for t in trades) == volume
        assert all(t.price == price and t.aggressor is None for t in trades), trades
        # Price-time priority: on each side, filled orders form a prefix of the queue,
        # with at most the last of them partly filled.
        filled: Counter[int] = Counter()
        for t in trades:
            filled[t.buy_order_id] += t.qty
            filled[t.sell_order_id] += t.qty
        for side in Side:
            queue = sorted(
                (o for o in priced if o.side is side),
                key=lambda o: (-o.price if side is Side.BUY else o.price, o.priority),
            )
            fills = [filled[o.order_id] for o in queue]
            whole = [f == o.leaves for f, o in zip(fills, queue, strict=True)]
            first_short = whole.index(False) if False in whole else len(queue)
            assert not any(fills[first_short + 1 :]), (side, fills, queue)
        # Back to a call for the next round, if the test goes on.
        self.send(
            c.SetInstrumentStatus(
                actor="ops", ts=T0, instrument_id=CALL, status=InstrumentStatus.HALTED
            )
        )
        self.send(
            c.SetInstrumentStatus(
                actor="ops", ts=T0, instrument_id=CALL, status=InstrumentStatus.AUCTION
            )
        )

    @invariant()
    def uncrossed_unless_in_call(self) -> None:
        book = self.core.books[CALL]
        if self.status is not InstrumentStatus.AUCTION:
            assert not book.crossed()


AUCTION_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_uncross_maximises_volume_at_one_price() -> None:
    print(f"hypothesis seed: {SEED} (tests/test_auction_property.py, AuctionMachine)")
    run_state_machine_as_test(AuctionMachine, settings=AUCTION_SETTINGS)


def test_brute_force_agrees_with_a_worked_example() -> None:
    """The checker itself, on a book worked by hand."""
    orders = [
        Resting(1, Side.BUY, 100, 16, 1),
        Resting(2, Side.BUY, 90, 8, 2),
        Resting(3, Side.SELL, 80, 8, 3),
        Resting(4, Side.SELL, 90, 16, 4),
    ]
    # demand/supply: at 80 24/8, at 90 24/24, at 100 16/24 -> 24 at 90
    assert brute_force(orders, 0) == (24, 90)
    assert brute_force(orders[:1] + orders[3:], 0) == (16, 90)
    assert brute_force([orders[0]], 0) == (0, 0)

"""The demo market's own traders: a steady trickle of orders, so the demo is live.

``DemoFlow`` sends one order every ``1 / rate`` seconds (``demo_flow`` in the
configuration; 0 turns it off) from the demo's accounts, through the same
service as everyone else's, on an open instrument picked at random:

* a data centre offers one to three lots, one to four ticks above the mid;
* a start-up bids one to three lots, one to four ticks below it;
* or one of them takes: an IOC order of a lot or two at the far touch, which
  trades.

The mid is halfway between the middle of the touch and the instrument's
reference price, and within a tenth of that reference price, so the market
wanders but stays where the demo's tour expects it. The flow never uses
vouchers, so the vouchers a visitor spends in the tour are left alone; it
skips instruments that are not open (an operator's halt is respected). Once
a book holds more than ``max_resting`` of the flow's orders (an earlier
run's included), it cancels the oldest still open, so books stay the size
the seed gave them. A data centre whose free capacity on a book runs low
registers ``RESTOCK`` more GPU-hours, so a demo left running for days still
has sellers. Client order ids start with ``flow-`` and the start time, so
they never repeat across restarts of a durable demo. A refused order is
logged and the flow goes on.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable

import structlog

from exchange import commands as c
from exchange.events import Event, OrderAccepted, Rejected
from exchange.reference import InstrumentStatus, Side, TimeInForce
from exchange.service import ExchangeService
from gateway import demo

log = structlog.get_logger("gateway.demo_flow")

SEED = 20_241_129  # the flow's choices
PREFIX = "flow-"  # of the flow's client order ids, then the start time and a count
RESTOCK = demo.LOT * 4_000  # GPU-hours a data centre brings online when it runs low
DRIFT = 10  # the mid stays within reference price ± reference / DRIFT


class DemoFlow:
    """Orders from the demo's traders, one per ``step`` (module doc)."""

    def __init__(
        self,
        service: ExchangeService,
        *,
        rate: float,
        max_resting: int = 12,
        restock_below: int = demo.LOT * 100,
        seed: int = SEED,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.service = service
        self.interval = 1.0 / rate
        self.max_resting = max_resting
        self.restock_below = restock_below
        self.rng = random.Random(seed)
        self.prefix = f"{PREFIX}{clock():x}"
        self.sent = 0
        # instrument: (account, order id) of the flow's orders, oldest first; those
        # of an earlier run of a durable demo too, so they are cancelled in turn
        self.resting: dict[str, deque[tuple[str, int]]] = {}
        for order in sorted(service.core.orders.values(), key=lambda o: o.order_id):
            if order.client_order_id.startswith(PREFIX):
                queue = self.resting.setdefault(order.instrument_id, deque())
                queue.append((order.account, order.order_id))

    def mid(self, instrument_id: str) -> int:
        """The price the flow quotes around, on the instrument's tick."""
        reference = demo.INSTRUMENTS[instrument_id][4]
        book = self.service.core.books[instrument_id]
        bid, ask = book.best_bid, book.best_ask
        if bid and ask:
            mid = (bid + ask) // 2
        else:
            mid = bid + demo.TICK if bid else ask - demo.TICK if ask else reference
        mid = (mid + reference) // 2  # pulled back toward the reference: it wanders, not runs
        band = reference // DRIFT
        mid = min(max(mid, reference - band), reference + band)
        return mid - mid % demo.TICK

    def next_order(self) -> c.NewOrder | None:
        """The next order, or None if no instrument is open."""
        core = self.service.core
        open_ids = [
            i
            for i in demo.INSTRUMENTS
            if i in core.instruments and core.instruments[i].status is InstrumentStatus.OPEN
        ]
        if not open_ids:
            return None
        rng = self.rng
        instrument_id = rng.choice(open_ids)
        provider = demo.INSTRUMENTS[instrument_id][2]
        startup = rng.choice(list(demo.STARTUPS))
        book = core.books[instrument_id]
        move = rng.random()
        tif = TimeInForce.IOC
        if move < 0.25 and book.best_ask:  # a start-up takes the best offer
            actor, side, lots, price = startup, Side.BUY, rng.randint(1, 2), book.best_ask
        elif move < 0.4 and book.best_bid:  # the data centre hits the best bid
            actor, side, lots, price = provider, Side.SELL, rng.randint(1, 2), book.best_bid
        else:
            tif = TimeInForce.GTC
            mid = self.mid(instrument_id)
            ticks = demo.TICK * rng.randint(1, 4)
            if move < 0.7:  # the data centre offers above the mid
                actor, side, lots, price = provider, Side.SELL, rng.randint(1, 3), mid + ticks
            else:  # a start-up bids below it
                actor, side, lots = startup, Side.BUY, rng.randint(1, 3)
                price = max(demo.TICK, mid - ticks)
        self.sent += 1
        return c.NewOrder(
            actor=actor,
            client_order_id=f"{self.prefix}-{self.sent}",
            instrument_id=instrument_id,
            side=side,
            qty=demo.LOT * lots,
            price=price,
            tif=tif,
        )

    async def step(self) -> list[Event]:
        """Send one order (and cancel the book's oldest flow order if it holds too many)."""
        order = self.next_order()
        if order is None:
            return []
        if order.side is Side.SELL:
            await self._restock(order.actor, order.instrument_id)
        events = await self.service.submit(order)
        for ev in events:
            if isinstance(ev, Rejected):
                log.info("demo_order_refused", reason=ev.reason, account=order.actor)
            elif isinstance(ev, OrderAccepted) and order.tif is TimeInForce.GTC:
                resting = self.resting.setdefault(order.instrument_id, deque())
                resting.append((order.actor, ev.order_id))
                await self._trim(resting)
        return events

    async def _restock(self, provider: str, instrument_id: str) -> None:
        """A data centre whose free capacity runs low registers more, as a real one would."""
        position = self.service.core.accounts[provider].positions.get(instrument_id)
        if position is not None and position.free < self.restock_below:
            await self.service.submit(
                c.RegisterCapacity(
                    actor=c.SYSTEM,
                    provider=provider,
                    instrument_id=instrument_id,
                    gpu_hours=RESTOCK,
                )
            )

    async def _trim(self, resting: deque[tuple[str, int]]) -> None:
        """Forget orders that are done; cancel the oldest open ones beyond ``max_resting``."""
        open_orders = self.service.core.orders
        live = [entry for entry in resting if entry[1] in open_orders]
        resting.clear()
        resting.extend(live)
        while len(resting) > self.max_resting:
            account, order_id = resting.popleft()
            await self.service.submit(c.CancelOrder(actor=account, order_id=order_id))

    async def run(self) -> None:
        """Step every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the service stopped, say: try again next time
                log.warning("demo_flow_step_failed", exc_info=True)

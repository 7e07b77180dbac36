"""The demo market's own traders (``gateway.demo_flow``).

The flow is stepped by hand on a seeded in-memory demo exchange: its orders
are all accepted, they trade, the books never cross, no voucher is used,
halted instruments are left alone, and each book holds at most
``max_resting`` of its orders. Then a real demo gateway is checked to run the
flow by itself, and a still demo (``demo_flow = 0``) not to.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from exchange import commands as c
from exchange.core import ExchangeCore
from exchange.events import OrderAccepted, Rejected, Trade
from exchange.reference import InstrumentStatus, Side
from exchange.service import ExchangeService
from gateway import demo
from gateway.app import SERVICE, create_app
from gateway.config import GatewayConfig
from gateway.demo_flow import DRIFT, PREFIX, RESTOCK, DemoFlow

STEPS = 400
SEED = 7


@pytest.fixture
async def service() -> AsyncIterator[ExchangeService]:
    service = ExchangeService(ExchangeCore())
    await service.start()
    for command in demo.demo_commands(time.time_ns()):
        await service.submit(command)
    yield service
    await service.stop()


def flow_orders(core: ExchangeCore) -> Counter[str]:
    """Open orders of the flow (of any run), by instrument."""
    return Counter(
        o.instrument_id for o in core.orders.values() if o.client_order_id.startswith(PREFIX)
    )


async def test_the_flow_trades_on_every_open_book_and_is_never_refused(
    service: ExchangeService,
) -> None:
    core = service.core
    flow = DemoFlow(service, rate=1.0, max_resting=6, seed=SEED)
    trades: Counter[str] = Counter()
    accepted = 0
    for step in range(STEPS):
        events = await flow.step()
        refused = [e for e in events if isinstance(e, Rejected)]
        assert not refused, f"step {step}, seed {SEED}: {refused}"
        accepted += sum(isinstance(e, OrderAccepted) for e in events)
        for e in events:
            if isinstance(e, Trade):
                trades[e.instrument_id] += 1
                assert e.voucher == 0 and e.voucher_id == 0
        for instrument_id, book in core.books.items():
            assert not book.crossed(), f"{instrument_id} crossed at step {step}"
        assert max(flow_orders(core).values(), default=0) <= 6
    assert accepted == STEPS
    open_books = {i for i in demo.INSTRUMENTS if i != demo.AUCTION}
    assert set(trades) == open_books, trades
    assert demo.AUCTION not in flow_orders(core)


async def test_a_restarted_flow_cancels_the_orders_an_earlier_run_left(
    service: ExchangeService,
) -> None:
    first = DemoFlow(service, rate=1.0, max_resting=6, seed=SEED, clock=lambda: 1)
    for _ in range(150):
        await first.step()
    left = sum(flow_orders(service.core).values())
    assert left > 6  # spread over the books
    second = DemoFlow(service, rate=1.0, max_resting=2, seed=SEED + 1, clock=lambda: 2)
    assert sum(len(q) for q in second.resting.values()) == left
    for _ in range(150):
        await second.step()
    assert max(flow_orders(service.core).values()) <= 2


async def test_the_mid_stays_near_the_reference_price(service: ExchangeService) -> None:
    flow = DemoFlow(service, rate=1.0, seed=SEED)
    for _ in range(STEPS):
        await flow.step()
    for instrument_id, spec in demo.INSTRUMENTS.items():
        reference = spec[4]
        mid = flow.mid(instrument_id)
        assert abs(mid - reference) <= reference // DRIFT
        assert mid % demo.TICK == 0


async def test_a_halted_book_gets_no_flow_orders(service: ExchangeService) -> None:
    halted = "H800-SUZHOU-STATE-W1"
    await service.submit(
        c.SetInstrumentStatus(actor="ops", instrument_id=halted, status=InstrumentStatus.HALTED)
    )
    flow = DemoFlow(service, rate=1.0, seed=SEED)
    placed: Counter[str] = Counter()
    for _ in range(100):
        events = await flow.step()
        assert not [e for e in events if isinstance(e, Rejected)]
        placed.update(e.instrument_id for e in events if isinstance(e, OrderAccepted))
    assert sum(placed.values()) == 100
    assert halted not in placed


def registered(core: ExchangeCore, provider: str, instrument_id: str) -> int:
    """GPU-hours a provider has registered on a book: free, reserved and sold."""
    position = core.accounts[provider].positions[instrument_id]
    return position.free + position.reserved + position.sold


async def test_a_data_centre_low_on_capacity_registers_more(service: ExchangeService) -> None:
    core = service.core
    books = [(p, i) for i, (_, _, p, _, _) in demo.INSTRUMENTS.items()]
    before = {book: registered(core, *book) for book in books}
    flow = DemoFlow(service, rate=1.0, seed=SEED, restock_below=10**12)  # always low
    sells: Counter[tuple[str, str]] = Counter()
    for _ in range(50):
        for e in await flow.step():
            if isinstance(e, OrderAccepted) and e.side is Side.SELL:
                sells[(e.account, e.instrument_id)] += 1
    assert sells
    for book in books:
        assert registered(core, *book) == before[book] + sells[book] * RESTOCK


async def _run_demo(flow_rate: float) -> tuple[int, int]:
    """Start a demo gateway in memory; its sequence number at start and about 1.5 s later."""
    config = GatewayConfig(port=0, demo=True, demo_flow=flow_rate)
    app = create_app(config, seed=demo.demo_commands)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        service = app[SERVICE]
        start = service.seq
        await asyncio.sleep(1.5)
        async with aiohttp.ClientSession() as http, http.get(server.make_url("/healthz")) as resp:
            assert resp.status == 200
        return start, service.seq
    finally:
        await server.close()


async def test_a_demo_gateway_runs_its_traders() -> None:
    start, later = await _run_demo(20.0)
    assert later > start + 5  # about 30 orders at 20 a second, some with a cancel


async def test_a_still_demo_has_no_traders() -> None:
    start, later = await _run_demo(0.0)
    assert later == start

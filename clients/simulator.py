"""A market simulator: agents that act like Suanli's users, each over its own SDK connection.

``simulate(url, operator_key, SimulationConfig(...))`` sets up a small market
through the ordinary protocol (an operator key is all it needs), runs it for a
bounded time and number of orders, and returns a report.

The market (names carry a run tag, so runs do not collide):

* **Instruments** (listed and opened by the simulator): H800 at a state-run
  Suzhou centre, domestic Ascend 910B at a state-run Ningxia hub, and H20 at
  commercial Shanghai clusters.
* **Data centres** (state-run and commercial) each hold capacity on one
  instrument at a cost per GPU-hour. Each keeps one resting offer, priced at a
  mark-up over cost that falls as the run goes on (repriced with ``amend``),
  never below cost.
* **Start-ups** each want a number of GPU-hours of one instrument, value each
  at a price, and have a cash budget. Each keeps one resting bid that rises
  towards its value, never above it. Some hold vouchers from one of two cities
  (Shanghai and Shenzhen), which pay part of each contract.
* **Noisy traders**: a start-up that buys small lots at about the market price
  whatever its value, and a commercial data centre that sells small lots the
  same way, whatever its cost.

The report: trades, volume and VWAP by instrument; voucher spend by issuer;
each start-up's savings from vouchers; the allocative efficiency (realised
over maximum surplus, computed by ``clients.efficiency`` from the agents'
values and costs, not from the exchange's figures); and conservation checks
that compare the exchange's balances, vouchers and claims with the contracts.
Seeded: the market and every agent's choices come from ``seed`` (the order in
which agents' messages interleave depends on the network).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from clients.efficiency import Demand, Fill, Supply, efficiency, max_surplus, realised_surplus
from clients.sdk import Backoff, Client, Refused, SuanliError
from exchange.reference import (
    EligibilityBasis,
    InstrumentSpec,
    InstrumentStatus,
    Role,
    Side,
    Tier,
    TimeInForce,
)
from gateway import protocol as p

log = structlog.get_logger("clients.simulator")

HOUR = 3_600 * 10**9
DAY = 24 * HOUR
TICK = 5  # fen
LOT = 8  # GPU-hours


class SimulationConfig(msgspec.Struct, frozen=True, kw_only=True):
    seed: int = 1
    seconds: float = 20.0  # the trading phase lasts at most this long
    max_orders: int = 2_000  # and places at most this many orders in all
    startups: int = 8
    step: tuple[float, float] = (0.05, 0.3)  # seconds between an agent's actions
    tag: str = ""  # prefix of every name the run creates; default: sim<seed>-<random>


class Market(msgspec.Struct, frozen=True):
    """One simulated instrument: its spec and a base price (fen per GPU-hour)."""

    key: str
    gpu_model: str
    domestic: bool
    hub: str
    tier: Tier
    base: int


MARKETS = (
    Market("H800-SUZHOU-STATE", "H800", False, "suzhou", Tier.STATE, 1_800),
    Market("ASCEND910B-NINGXIA-STATE", "Ascend910B", True, "ningxia", Tier.STATE, 950),
    Market("H20-SHANGHAI-COMM", "H20", False, "shanghai", Tier.COMMERCIAL, 700),
)

# City programmes: (city, rates sd/sf/cd/cf in basis points).
CITIES = (("shanghai", (5_000, 3_000, 3_000, 2_000)), ("shenzhen", (6_000, 4_000, 4_000, 2_000)))


class Agent:
    """A participant with its own connection and a seeded random source."""

    def __init__(self, name: str, role: Role, rng: random.Random, instrument_id: str) -> None:
        self.name = name
        self.role = role
        self.rng = rng
        self.instrument_id = instrument_id
        self.client: Client | None = None
        self.orders_placed = 0
        self.refusals: dict[str, int] = defaultdict(int)

    async def step(self, sim: Simulation) -> None:
        raise NotImplementedError


class DataCentre(Agent):
    def __init__(
        self,
        name: str,
        rng: random.Random,
        market: Market,
        instrument_id: str,
        capacity: int,
        cost: int,
    ) -> None:
        super().__init__(name, Role.PROVIDER, rng, instrument_id)
        self.market = market
        self.capacity = capacity
        self.cost = cost
        self.offer = ""  # client order id of the resting offer

    def price(self, progress: float) -> int:
        markup = 1.0 + 0.35 * (1.0 - progress) + self.rng.uniform(0.0, 0.05)
        return max(_ceil_tick(self.cost), _ceil_tick(int(self.cost * markup)))

    async def step(self, sim: Simulation) -> None:
        client = self.client
        assert client is not None
        resting = client.orders.get(self.offer) if self.offer else None
        price = self.price(sim.progress())
        if resting is not None and resting.leaves_qty > 0 and resting.ord_status in p.OPEN_STATUSES:
            if resting.price != price:
                await client.amend_order(resting.order_id, price=price)
            return
        sold_or_offered = sum(
            r.cum_qty for r in client.orders.values() if r.instrument_id == self.instrument_id
        )
        left = self.capacity - sold_or_offered
        if left < LOT:
            return
        qty = min(left, LOT * self.rng.randint(2, 12)) // LOT * LOT
        if not sim.take_order():
            return
        report = await client.place_order(self.instrument_id, Side.SELL, qty, price)
        self.orders_placed += 1
        self.offer = report.client_order_id


class StartUp(Agent):
    def __init__(
        self,
        name: str,
        rng: random.Random,
        instrument_id: str,
        qty: int,
        value: int,
        budget: int,
        revenue: int,
    ) -> None:
        super().__init__(name, Role.STARTUP, rng, instrument_id)
        self.qty = qty
        self.value = value
        self.budget = budget
        self.revenue = revenue
        self.voucher_id = 0
        self.voucher_city = ""
        self.bid = ""

    def price(self, progress: float) -> int:
        share = 0.7 + 0.3 * progress + self.rng.uniform(0.0, 0.05)
        return min(_floor_tick(self.value), _floor_tick(int(self.value * share)))

    def bought(self) -> int:
        assert self.client is not None
        return sum(
            r.cum_qty for r in self.client.orders.values() if r.instrument_id == self.instrument_id
        )

    async def step(self, sim: Simulation) -> None:
        client = self.client
        assert client is not None
        resting = client.orders.get(self.bid) if self.bid else None
        price = self.price(sim.progress())
        if resting is not None and resting.leaves_qty > 0 and resting.ord_status in p.OPEN_STATUSES:
            if price > resting.price:
                await client.amend_order(resting.order_id, price=price)
            return
        left = self.qty - self.bought()
        spent = sum(r.cum_value for r in client.orders.values())
        affordable = (self.budget - spent) // max(price, 1) // LOT * LOT
        qty = min(left, affordable, LOT * self.rng.randint(2, 10))
        if qty < LOT or not sim.take_order():
            return
        report = await client.place_order(
            self.instrument_id, Side.BUY, qty, price, voucher_id=self.voucher_id
        )
        self.orders_placed += 1
        self.bid = report.client_order_id


class NoisyBuyer(StartUp):
    """Buys small lots at about the best offer, whatever its own value."""

    async def step(self, sim: Simulation) -> None:
        client = self.client
        assert client is not None
        best_ask = sim.best_ask.get(self.instrument_id, 0)
        if not best_ask or self.bought() >= self.qty or not sim.take_order():
            return
        price = best_ask + TICK * self.rng.randint(-2, 2)
        qty = min(LOT * self.rng.randint(1, 3), (self.qty - self.bought()) // LOT * LOT)
        if qty < LOT or price <= 0:
            return
        await client.place_order(self.instrument_id, Side.BUY, qty, price, tif=TimeInForce.IOC)
        self.orders_placed += 1


class NoisySeller(DataCentre):
    """Sells small lots at about the best bid, whatever its own cost."""

    async def step(self, sim: Simulation) -> None:
        client = self.client
        assert client is not None
        best_bid = sim.best_bid.get(self.instrument_id, 0)
        sold = sum(r.cum_qty for r in client.orders.values())
        if not best_bid or sold >= self.capacity or not sim.take_order():
            return
        price = best_bid + TICK * self.rng.randint(-2, 2)
        qty = min(LOT * self.rng.randint(1, 3), (self.capacity - sold) // LOT * LOT)
        if qty < LOT or price <= 0:
            return
        await client.place_order(self.instrument_id, Side.SELL, qty, price, tif=TimeInForce.IOC)
        self.orders_placed += 1


def _ceil_tick(price: int) -> int:
    return -(-price // TICK) * TICK


def _floor_tick(price: int) -> int:
    return price // TICK * TICK


class Simulation:
    """Builds the market, runs the agents, and writes the report."""

    def __init__(
        self,
        url: str,
        operator_key: str,
        config: SimulationConfig,
        progress: Callable[[float, int], None] | None = None,
    ) -> None:
        self.url = url
        self.operator_key = operator_key
        self.config = config
        self.rng = random.Random(config.seed)
        self.tag = config.tag or f"sim{config.seed}-{uuid.uuid4().hex[:4]}"
        self.on_progress = progress
        self.instruments: dict[str, Market] = {}
        self.agents: list[Agent] = []
        self.issuers: dict[str, str] = {}  # city -> issuer account
        self.best_bid: dict[str, int] = {}
        self.best_ask: dict[str, int] = {}
        self.orders = 0
        self.started = 0.0
        self.clients: list[Client] = []

    # --- bounds ---------------------------------------------------------------

    def progress(self) -> float:
        elapsed = time.monotonic() - self.started
        return min(1.0, elapsed / self.config.seconds) if self.config.seconds else 1.0

    def take_order(self) -> bool:
        """Count one more order; False once the run's order budget is spent."""
        if self.orders >= self.config.max_orders:
            return False
        self.orders += 1
        return True

    # --- set-up -----------------------------------------------------------------

    def _name(self, what: str) -> str:
        return f"{self.tag}-{what}"

    def _plan(self, now: int) -> list[InstrumentSpec]:
        specs = []
        start = now - now % DAY + 14 * DAY
        for market in MARKETS:
            instrument_id = self._name(market.key).upper()
            self.instruments[instrument_id] = market
            specs.append(
                InstrumentSpec(
                    instrument_id=instrument_id,
                    gpu_model=market.gpu_model,
                    domestic=market.domestic,
                    hub=market.hub,
                    tier=market.tier,
                    delivery_start=start,
                    delivery_end=start + 7 * DAY,
                    tick=TICK,
                    lot=LOT,
                    max_price=20_000,
                    reference_price=market.base,
                )
            )
        rng = self.rng
        ids = list(self.instruments)
        for n, instrument_id in enumerate(ids):
            market = self.instruments[instrument_id]
            sellers = 2 if market.tier is Tier.STATE and n == 0 else 1
            for k in range(sellers):
                cost = _floor_tick(int(market.base * rng.uniform(0.6, 0.95)))
                tier = "state" if market.tier is Tier.STATE else "comm"
                self.agents.append(
                    DataCentre(
                        self._name(f"{market.hub}-{tier}-dc{k + 1}"),
                        random.Random(rng.getrandbits(64)),
                        market,
                        instrument_id,
                        LOT * rng.randint(40, 120),
                        cost,
                    )
                )
        for k in range(self.config.startups):
            instrument_id = ids[k % len(ids)]
            market = self.instruments[instrument_id]
            qty = LOT * rng.randint(10, 60)
            value = _floor_tick(int(market.base * rng.uniform(0.7, 1.4)))
            agent = StartUp(
                self._name(f"startup{k + 1}"),
                random.Random(rng.getrandbits(64)),
                instrument_id,
                qty,
                value,
                budget=qty * value,
                revenue=rng.choice((5_000_000_00, 20_000_000_00)),
            )
            if rng.random() < 0.6:
                agent.voucher_city = rng.choice(CITIES)[0]
            self.agents.append(agent)
        noisy_market = self.instruments[ids[-1]]
        noisy_value = _floor_tick(int(noisy_market.base * rng.uniform(0.6, 1.0)))
        self.agents.append(
            NoisyBuyer(
                self._name("noisy-buyer"),
                random.Random(rng.getrandbits(64)),
                ids[-1],
                LOT * 30,
                noisy_value,
                budget=LOT * 30 * noisy_market.base * 2,
                revenue=5_000_000_00,
            )
        )
        self.agents.append(
            NoisySeller(
                self._name("noisy-seller"),
                random.Random(rng.getrandbits(64)),
                noisy_market,
                ids[-1],
                LOT * 30,
                _floor_tick(int(noisy_market.base * rng.uniform(0.8, 1.2))),
            )
        )
        return specs

    async def _connect(self, key: str, name: str) -> Client:
        client = Client(
            self.url,
            key,
            backoff=Backoff(initial=0.1, maximum=1.0, attempts=20),
            seed=self.rng.getrandbits(32),
            name=name,
        )
        await client.connect()
        self.clients.append(client)
        return client

    async def setup(self, ops: Client) -> None:
        now = time.time_ns()
        specs = self._plan(now)
        for spec in specs:
            await ops.list_instrument(spec)
        for city, rates in CITIES:
            issuer = self._name(f"{city}-gov")
            self.issuers[city] = issuer
            await ops.admit_account(issuer, Role.ISSUER)
            await ops.deposit(issuer, 100_000_000_00)
            key = (await ops.issue_api_key(issuer)).key
            gov = await self._connect(key, issuer)
            await gov.create_programme(
                self._name(f"{city}-voucher"),
                f"{city.title()} compute voucher (simulated)",
                rate_state_domestic=rates[0],
                rate_state_foreign=rates[1],
                rate_commercial_domestic=rates[2],
                rate_commercial_foreign=rates[3],
                cap_per_holder_year=50_000_000_00,
                budget=90_000_000_00,
                expires_at=now + 365 * DAY,
                basis=EligibilityBasis.MIN_REVENUE,
                min_revenue=1_000_000_00,
            )
        for agent in self.agents:
            if isinstance(agent, DataCentre):
                await ops.admit_account(
                    agent.name, Role.PROVIDER, tier=agent.market.tier, hub=agent.market.hub
                )
                await ops.register_capacity(agent.instrument_id, agent.capacity, agent.name)
            elif isinstance(agent, StartUp):
                await ops.admit_account(agent.name, Role.STARTUP, revenue=agent.revenue)
                await ops.deposit(agent.name, agent.budget)
            key = (await ops.issue_api_key(agent.name)).key
            agent.client = await self._connect(key, agent.name)
        govs = {c.account_id: c for c in self.clients}
        for agent in self.agents:
            if isinstance(agent, StartUp) and agent.voucher_city:
                issuer = self.issuers[agent.voucher_city]
                amount = agent.budget // 4
                agent.voucher_id = await govs[issuer].issue_voucher(
                    self._name(f"{agent.voucher_city}-voucher"), agent.name, amount
                )
        for spec in specs:
            await ops.set_instrument_status(spec.instrument_id, InstrumentStatus.OPEN)

    # --- running --------------------------------------------------------------------

    async def _watch(self, ops: Client) -> None:
        """Keep best prices for the noisy traders, from the tickers."""
        subs = [ops.ticker(i) for i in self.instruments]
        async with contextlib.AsyncExitStack() as stack:
            for sub in subs:
                await stack.enter_async_context(sub)

            async def follow(sub: Any) -> None:
                async for t in sub:
                    self.best_bid[t.instrument_id] = t.best_bid
                    self.best_ask[t.instrument_id] = t.best_ask

            await asyncio.gather(*(follow(s) for s in subs))

    async def _run_agent(self, agent: Agent, deadline: float) -> None:
        low, high = self.config.step
        while time.monotonic() < deadline and self.orders < self.config.max_orders:
            await asyncio.sleep(agent.rng.uniform(low, high))
            try:
                await agent.step(self)
            except Refused as exc:
                agent.refusals[exc.code] += 1
            except SuanliError as exc:
                log.warning("agent_error", agent=agent.name, error=repr(exc))

    async def run(self) -> dict[str, Any]:
        ops = await self._connect(self.operator_key, "simulator-operator")
        try:
            if ops.role is not Role.OPERATOR:
                # The code the gateway would give each operator request, refused up front.
                raise Refused(
                    p.ErrorCode.NOT_PERMITTED.value, "simulate needs an operator's API key"
                )
            await self.setup(ops)
            watcher = asyncio.create_task(self._watch(ops))
            self.started = time.monotonic()
            deadline = self.started + self.config.seconds
            runners = [asyncio.create_task(self._run_agent(a, deadline)) for a in self.agents]
            while not all(r.done() for r in runners):
                await asyncio.wait(runners, timeout=0.25)
                if self.on_progress is not None:
                    self.on_progress(self.progress(), self.orders)
            for r in runners:
                r.result()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            for agent in self.agents:
                assert agent.client is not None
                with contextlib.suppress(SuanliError):
                    await agent.client.cancel_all()
            return await self.report(ops)
        finally:
            for client in self.clients:
                await client.close()

    # --- the report ------------------------------------------------------------------

    def demands(self) -> list[Demand]:
        return [
            Demand(agent=a.name, instrument_id=a.instrument_id, qty=a.qty, value=a.value)
            for a in self.agents
            if isinstance(a, StartUp)
        ]

    def supplies(self) -> list[Supply]:
        return [
            Supply(agent=a.name, instrument_id=a.instrument_id, qty=a.capacity, cost=a.cost)
            for a in self.agents
            if isinstance(a, DataCentre)
        ]

    async def report(self, ops: Client) -> dict[str, Any]:
        names = {a.name for a in self.agents}
        contracts = [c for c in await ops.every_contract() if c.instrument_id in self.instruments]
        balances = {b.account_id: b for b in await ops.all_balances() if b.account_id in names}
        vouchers = {v.voucher_id: v for v in await ops.vouchers() if v.holder in names}
        claims = [c for c in await ops.claims() if c.provider in names]

        by_instrument: dict[str, dict[str, int]] = {
            i: {"trades": 0, "volume": 0, "turnover": 0} for i in self.instruments
        }
        for c in contracts:
            row = by_instrument[c.instrument_id]
            row["trades"] += 1
            row["volume"] += c.qty
            row["turnover"] += c.price * c.qty
        for row in by_instrument.values():
            row["vwap"] = row["turnover"] // row["volume"] if row["volume"] else 0

        spend_by_issuer: dict[str, int] = defaultdict(int)
        savings: dict[str, int] = defaultdict(int)
        for c in contracts:
            if c.voucher:
                spend_by_issuer[vouchers[c.voucher_id].issuer] += c.voucher
                savings[c.buyer] += c.voucher

        demands, supplies = self.demands(), self.supplies()
        fills = [
            Fill(
                buyer=c.buyer,
                seller=c.seller,
                instrument_id=c.instrument_id,
                qty=c.qty,
                price=c.price,
            )
            for c in contracts
        ]
        best = max_surplus(demands, supplies)
        realised = realised_surplus(fills, demands, supplies)
        surplus = {
            i: {
                "realised": realised.get(i, 0),
                "maximum": best.get(i, 0),
                "efficiency": round(efficiency(realised.get(i, 0), best.get(i, 0)), 4),
            }
            for i in self.instruments
        }
        total_realised = sum(realised.values())
        total_max = sum(best.values())

        checks = self._checks(contracts, balances, vouchers, claims, spend_by_issuer)
        agents = [
            {
                "agent": a.name,
                "kind": type(a).__name__,
                "instrument_id": a.instrument_id,
                "qty": a.qty if isinstance(a, StartUp) else getattr(a, "capacity", 0),
                "value": a.value if isinstance(a, StartUp) else None,
                "cost": a.cost if isinstance(a, DataCentre) else None,
                "voucher_id": a.voucher_id if isinstance(a, StartUp) else 0,
                "orders": a.orders_placed,
                "refusals": dict(a.refusals),
            }
            for a in self.agents
        ]
        return {
            "tag": self.tag,
            "seed": self.config.seed,
            "seconds": self.config.seconds,
            "orders": self.orders,
            "trades": len(contracts),
            "volume_gpu_hours": sum(c.qty for c in contracts),
            "by_instrument": by_instrument,
            "voucher_spend_by_issuer": dict(sorted(spend_by_issuer.items())),
            "startup_voucher_savings": dict(sorted(savings.items())),
            "surplus": surplus,
            "realised_surplus": total_realised,
            "maximum_surplus": total_max,
            "efficiency": round(efficiency(total_realised, total_max), 4),
            "checks": checks,
            "ok": all(c["ok"] for c in checks),
            "agents": agents,
            "contracts": [msgspec.to_builtins(c) for c in contracts],
        }

    def _checks(
        self,
        contracts: list[p.Contract],
        balances: dict[str, p.Balance],
        vouchers: dict[int, p.VoucherBalance],
        claims: list[p.Claim],
        spend_by_issuer: dict[str, int],
    ) -> list[dict[str, Any]]:
        checks: list[dict[str, Any]] = []

        def check(name: str, ok: bool, detail: str = "") -> None:
            checks.append({"check": name, "ok": ok, "detail": detail})

        bad = [c.contract_id for c in contracts if c.cash + c.voucher != c.price * c.qty]
        check("each contract: cash + voucher = price x qty", not bad, f"bad: {bad[:5]}")

        sold: dict[tuple[str, str], int] = defaultdict(int)
        bought: dict[tuple[str, str], int] = defaultdict(int)
        cash_paid: dict[str, int] = defaultdict(int)
        cash_received: dict[str, int] = defaultdict(int)
        for c in contracts:
            sold[(c.seller, c.instrument_id)] += c.qty
            bought[(c.buyer, c.instrument_id)] += c.qty
            cash_paid[c.buyer] += c.cash
            cash_received[c.seller] += c.cash
        wrong = []
        for agent in self.agents:
            b = balances.get(agent.name)
            if b is None:
                wrong.append(f"{agent.name}: no balance")
                continue
            if isinstance(agent, DataCentre):
                i = agent.instrument_id
                if b.capacity_sold.get(i, 0) != sold[(agent.name, i)]:
                    wrong.append(f"{agent.name}: sold {b.capacity_sold.get(i, 0)}")
                total = b.capacity.get(i, 0) + b.capacity_reserved.get(i, 0)
                if total + b.capacity_sold.get(i, 0) != agent.capacity:
                    wrong.append(f"{agent.name}: capacity not conserved")
                if b.cash != cash_received[agent.name]:
                    wrong.append(f"{agent.name}: cash {b.cash} != {cash_received[agent.name]}")
            elif isinstance(agent, StartUp):
                i = agent.instrument_id
                if b.holdings.get(i, 0) != bought[(agent.name, i)]:
                    wrong.append(f"{agent.name}: holds {b.holdings.get(i, 0)}")
                if b.cash + b.cash_reserved + cash_paid[agent.name] != agent.budget:
                    wrong.append(f"{agent.name}: cash not conserved")
        check(
            "balances: capacity, holdings and cash agree with the contracts",
            not wrong,
            "; ".join(wrong[:5]),
        )

        spent: dict[int, int] = defaultdict(int)
        for c in contracts:
            if c.voucher_id:
                spent[c.voucher_id] += c.voucher
        mismatched = [
            v.voucher_id
            for v in vouchers.values()
            if v.spent != spent[v.voucher_id] or v.amount != v.balance + v.reserved + v.spent
        ]
        check("vouchers: spent = voucher parts of contracts", not mismatched, f"{mismatched}")

        claimed: dict[str, int] = defaultdict(int)
        for claim in claims:
            claimed[claim.issuer] += claim.amount
        check(
            "claims on each issuer = voucher spend on it",
            dict(claimed) == {k: v for k, v in spend_by_issuer.items() if v},
            f"claims {dict(claimed)} spend {dict(spend_by_issuer)}",
        )
        over = [
            a.name
            for a in self.agents
            if isinstance(a, StartUp)
            and not isinstance(a, NoisyBuyer)
            and bought[(a.name, a.instrument_id)] > a.qty
        ]
        check("no start-up bought more than it wanted", not over, f"{over}")
        return checks


async def simulate(
    url: str,
    operator_key: str,
    config: SimulationConfig,
    progress: Callable[[float, int], None] | None = None,
) -> dict[str, Any]:
    """Run one simulation against the gateway at ``url``; the report.

    Raises ``Refused`` with ``NOT_PERMITTED`` if ``operator_key`` is not an operator's.
    """
    return await Simulation(url, operator_key, config, progress).run()

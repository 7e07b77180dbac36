"""Matching-engine throughput and latency on a seeded mixed order stream.

What it measures
----------------
One seeded stream of commands over three instruments, eight start-ups and six
providers, against a book that already rests around each instrument's mid
price:

* about 60% resting limit orders (GTC, priced behind the touch),
* about 25% cancels of resting orders,
* about 15% marketable orders (IOC limits a few ticks through the touch, large
  enough to take several resting orders),
* a voucher on one buy in five.

The stream runs through three engines, each on a fresh book, with the same
orders and cancels in the same sequence:

``core``
    ``ExchangeCore.apply`` on pre-built ``NewOrder``/``CancelOrder`` commands:
    validation, risk and reservations, vouchers and claims, matching, and the
    full event list of every command. ``commands_per_sec`` is its throughput.
``ceiling``
    A bare price-time book defined in this file (a dict of price levels, a
    sorted list of prices, a deque per level; no ledger, no events, no
    checks). It is about as fast as a Python book can be, so
    ``ceiling_ratio`` = core / ceiling shows what the exchange's extra work
    costs.
``peer``
    ``akhil4n-orderbook`` from PyPI (benchmark-only dependency), the fastest
    pure-Python order book we found, driven with the same orders and cancels
    (an IOC is its ``add_limit_order`` plus a cancel of any remainder).
    ``peer_ratio`` = core commands per second / peer operations per second.

Method
------
Commands, ceiling orders and peer orders are all built before the clock
starts; building them is not timed, and neither is setting up a fresh engine
with the seed book for each run. First an untimed pass of the whole stream
through the core checks it (below); it and one untimed pass through the
ceiling and the peer are the warm-up. Then come ``--repeats`` timed runs of the
whole stream per engine, interleaved (core, ceiling, peer, core, ...) so that
drift on a shared machine hits all of them alike. A timed run reads the clocks
once before and once after the loop, nothing per command; the garbage
collector stays on, as in service, after a collection before each run.

Throughput figures are commands per second of the process's **CPU time**
(``time.process_time``), from the **best** run of each engine; medians and
the best wall-clock figure are reported too. On an idle machine CPU time and
wall time agree for this single-threaded loop; on a busy shared one, CPU time
leaves out the time the process waited for a CPU, so it is the steadier
measure of the work. Compare ratios between engines rather than absolute
figures between machines or runs.

Latency is a separate pass on a fresh core, with a ``perf_counter_ns`` pair
around each ``apply``: wall-clock time, including the timer's own overhead
(well under a microsecond) and any time the process was descheduled.

The checking pass fails the run, so a broken stream cannot be benchmarked
silently: no command may be rejected, there must be many trades and they must
agree with the ceiling book's in count and volume, some must use a voucher,
and the orders left resting must be exactly the ceiling book's.
``events_sha256`` is a digest of every event of the stream (msgpack); two
versions of the core that behave alike give the same digest.

``--source`` also times the core's sources interpreted, beside the installed
(normally mypyc-compiled, see ``exchange.native``) core, and reports the
speed-up; ``build`` says which one ``commands_per_sec`` measured.

``--baseline REV`` also times the core as it was at git revision ``REV``
(``exchange/core.py``, ``book.py`` and ``events.py`` from that revision,
loaded beside the current ones and timed interleaved with them) and reports
whether its events are byte-identical to the current core's.

Run ``python -m benchmarks.engine`` (under a minute when the machine is idle)
or ``--quick`` (a few seconds). Progress goes to stderr; the last line of
stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
import types
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from exchange import commands as c
from exchange import native
from exchange.core import ExchangeCore
from exchange.events import Event, Rejected, Trade
from exchange.reference import (
    EligibilityBasis,
    InstrumentSpec,
    InstrumentStatus,
    Role,
    Side,
    Tier,
    TimeInForce,
)

SEED = 20_250_601
T0 = 1_800_000_000_000_000_000  # ns
HOUR = 3_600 * 10**9
STEP = 1_000  # ns between commands: every command moves the clock
TICK = 10  # fen per GPU-hour
LOT = 8  # GPU-hours: one 8-GPU node-hour

# instrument id, GPU model, domestic chip, tier, mid price (fen per GPU-hour), share of flow
INSTRUMENTS = (
    ("H100-SUZHOU-STATE-W1", "H100", False, Tier.STATE, 2_000, 0.5),
    ("ASCEND910B-SUZHOU-STATE-W1", "Ascend910B", True, Tier.STATE, 1_200, 0.3),
    ("H100-SUZHOU-COMM-W1", "H100", False, Tier.COMMERCIAL, 2_200, 0.2),
)
STARTUPS = tuple(f"su{i}" for i in range(1, 9))
PROVIDERS = {Tier.STATE: ("dc1", "dc2", "dc3", "dc4"), Tier.COMMERCIAL: ("dc5", "dc6")}
SEED_LEVELS = 20  # per side and instrument, before the stream starts
REST_QTY_LOTS = (1, 1, 1, 2, 2, 3, 4, 5, 8, 10)

# Kinds of stream operation.
ADD, TAKE, CANCEL = 0, 1, 2


class Op(NamedTuple):
    """One operation of the stream, independent of any engine."""

    kind: int
    inst: int  # index into INSTRUMENTS
    oid: int  # the stream's order number (1, 2, ...); for CANCEL, the order cancelled
    account: str  # who sends it (for CANCEL, the order's owner)
    buy: bool = False
    price: int = 0
    qty: int = 0
    voucher: bool = False


# --- the ceiling: a bare price-time book ---------------------------------------

# A ceiling order is a list [leaves, oid, price, buy]; leaves 0 means done or cancelled.


class CeilingLevel:
    __slots__ = ("live", "queue")

    def __init__(self) -> None:
        self.live = 0
        self.queue: deque[list[Any]] = deque()


class CeilingBook:
    """Price-time priority and nothing else: no ledger, no checks, no events.

    Each side is a dict from price to level plus an ascending list of its
    prices; a level is a deque in arrival order. A cancel marks the order dead
    (O(1)) and the dead order is skipped when it reaches the front. Only the
    number of fills and their volume are counted.
    """

    __slots__ = ("ask_prices", "asks", "bid_prices", "bids", "orders", "trades", "volume")

    def __init__(self) -> None:
        self.bids: dict[int, CeilingLevel] = {}
        self.asks: dict[int, CeilingLevel] = {}
        self.bid_prices: list[int] = []  # ascending: the best bid is last
        self.ask_prices: list[int] = []  # ascending: the best ask is first
        self.orders: dict[int, list[Any]] = {}
        self.trades = 0
        self.volume = 0

    def limit(self, order: list[Any]) -> None:
        """A GTC limit order: trade what crosses, rest the remainder."""
        self.ioc(order)
        if order[0]:
            price = order[2]
            if order[3]:
                levels, prices = self.bids, self.bid_prices
            else:
                levels, prices = self.asks, self.ask_prices
            level = levels.get(price)
            if level is None:
                level = levels[price] = CeilingLevel()
                insort(prices, price)
            level.queue.append(order)
            level.live += 1
            self.orders[order[1]] = order

    def ioc(self, order: list[Any]) -> None:
        """Trade what crosses; the remainder is left in ``order[0]``."""
        qty, _, limit, buy = order
        if buy:
            levels, prices = self.asks, self.ask_prices
        else:
            levels, prices = self.bids, self.bid_prices
        trades = volume = 0
        while qty and prices:
            best = prices[0] if buy else prices[-1]
            if (best > limit) if buy else (best < limit):
                break
            level = levels[best]
            queue = level.queue
            while qty:
                resting = queue[0]
                leaves = resting[0]
                if not leaves:  # cancelled
                    queue.popleft()
                    continue
                trades += 1
                if leaves > qty:
                    resting[0] = leaves - qty
                    volume += qty
                    qty = 0
                    break
                qty -= leaves
                volume += leaves
                resting[0] = 0
                queue.popleft()
                del self.orders[resting[1]]
                level.live -= 1
                if not level.live:
                    del levels[best]
                    if buy:
                        del prices[0]
                    else:
                        prices.pop()
                    break
        order[0] = qty
        self.trades += trades
        self.volume += volume

    def cancel(self, oid: int) -> None:
        order = self.orders.pop(oid)
        order[0] = 0
        price = order[2]
        if order[3]:
            levels, prices = self.bids, self.bid_prices
        else:
            levels, prices = self.asks, self.ask_prices
        level = levels[price]
        level.live -= 1
        if not level.live:
            del levels[price]
            del prices[bisect_left(prices, price)]


# --- the seeded stream -------------------------------------------------------------


def _rest_price(rng: random.Random, book: CeilingBook, buy: bool, mid: int) -> int:
    """A price behind the touch: some ticks from mid, never crossing."""
    offset = (1 + int(rng.expovariate(1 / 5))) * TICK
    if buy:
        price = mid - offset
        if book.ask_prices and price >= book.ask_prices[0]:
            price = book.ask_prices[0] - TICK
    else:
        price = mid + offset
        if book.bid_prices and price <= book.bid_prices[-1]:
            price = book.bid_prices[-1] + TICK
    return max(price, TICK)


def build_stream(n: int, seed: int) -> tuple[list[Op], list[Op]]:
    """The seed book's orders and then ``n`` stream operations, both seeded.

    The stream is simulated on ceiling books as it is drawn, so a cancel always
    names an order that still rests and a marketable order is priced from the
    real touch.
    """
    rng = random.Random(seed)
    books = [CeilingBook() for _ in INSTRUMENTS]
    mids = [mid for *_, mid, _share in INSTRUMENTS]
    weights = [share for *_, share in INSTRUMENTS]
    live: list[list[int]] = [[] for _ in INSTRUMENTS]  # oids, pruned lazily
    owners: dict[int, str] = {}
    next_oid = 1

    def order(kind: int, inst: int, buy: bool, price: int, qty: int) -> Op:
        nonlocal next_oid
        oid = next_oid
        next_oid += 1
        if buy:
            account = rng.choice(STARTUPS)
            voucher = rng.random() < 0.2
        else:
            account = rng.choice(PROVIDERS[INSTRUMENTS[inst][3]])
            voucher = False
        owners[oid] = account
        entry = [qty, oid, price, buy]
        if kind == ADD:
            books[inst].limit(entry)
            live[inst].append(oid)
        else:
            books[inst].ioc(entry)
        return Op(kind, inst, oid, account, buy, price, qty, voucher)

    seed_ops = []
    for inst, mid in enumerate(mids):
        for level in range(1, SEED_LEVELS + 1):
            for buy in (True, False):
                for _ in range(rng.randint(1, 3)):
                    price = mid - level * TICK if buy else mid + level * TICK
                    qty = LOT * rng.choice(REST_QTY_LOTS)
                    seed_ops.append(order(ADD, inst, buy, price, qty))

    ops = []
    while len(ops) < n:
        inst = rng.choices(range(len(INSTRUMENTS)), weights)[0]
        book = books[inst]
        if rng.random() < 0.02:  # the mid drifts, within 30 ticks of its start
            start = INSTRUMENTS[inst][4]
            drifted = mids[inst] + rng.choice((-TICK, TICK))
            mids[inst] = min(max(drifted, start - 30 * TICK), start + 30 * TICK)
        draw = rng.random()
        if draw < 0.25:
            oids = live[inst]
            while oids:
                i = rng.randrange(len(oids))
                oid = oids[i]
                oids[i] = oids[-1]
                oids.pop()
                if oid in book.orders:
                    book.cancel(oid)
                    ops.append(Op(CANCEL, inst, oid, owners[oid]))
                    break
            continue  # nothing rests on this instrument: draw again
        buy = rng.random() < 0.5
        if draw < 0.40:
            touch = book.ask_prices[:1] if buy else book.bid_prices[-1:]
            if not touch:
                continue
            price = touch[0] + 3 * TICK if buy else touch[0] - 3 * TICK
            ops.append(order(TAKE, inst, buy, price, LOT * rng.randint(2, 16)))
        else:
            price = _rest_price(rng, book, buy, mids[inst])
            ops.append(order(ADD, inst, buy, price, LOT * rng.choice(REST_QTY_LOTS)))
    return seed_ops, ops


# --- the core ------------------------------------------------------------------


def setup_commands() -> tuple[list[c.Command], dict[str, int]]:
    """Accounts, instruments, capacity, cash and vouchers, all opened for trading."""
    sys_ = c.SYSTEM
    out: list[c.Command] = []
    for inst_id, model, domestic, tier, _mid, _share in INSTRUMENTS:
        spec = InstrumentSpec(
            instrument_id=inst_id,
            gpu_model=model,
            domestic=domestic,
            hub="suzhou",
            tier=tier,
            delivery_start=T0 + 240 * HOUR,
            delivery_end=T0 + 408 * HOUR,
            tick=TICK,
            lot=LOT,
        )
        out.append(c.ListInstrument(actor=sys_, spec=spec))
    for tier, providers in PROVIDERS.items():
        for p in providers:
            out.append(
                c.AdmitAccount(
                    actor=sys_, account_id=p, role=Role.PROVIDER, tier=tier, hub="suzhou"
                )
            )
            for inst_id, _m, _d, inst_tier, _mid, _s in INSTRUMENTS:
                if inst_tier is tier:
                    capacity = LOT * 10**9  # GPU-hours: never the limit here
                    out.append(
                        c.RegisterCapacity(
                            actor=p, provider=p, instrument_id=inst_id, gpu_hours=capacity
                        )
                    )
    for s in STARTUPS:
        out.append(c.AdmitAccount(actor=sys_, account_id=s, role=Role.STARTUP, revenue=10**10))
        out.append(c.Deposit(actor=sys_, account_id=s, amount=10**14))
    out.append(c.AdmitAccount(actor=sys_, account_id="city", role=Role.ISSUER))
    out.append(c.Deposit(actor=sys_, account_id="city", amount=10**15))
    out.append(
        c.CreateProgramme(
            actor="city",
            programme_id="sz",
            name="Suzhou compute voucher",
            rate_state_domestic=6_000,
            rate_state_foreign=3_000,
            rate_commercial_domestic=2_000,
            rate_commercial_foreign=1_000,
            cap_per_holder_year=10**13,
            budget=10**14,
            expires_at=T0 + 1_000 * HOUR,
            basis=EligibilityBasis.MIN_REVENUE,
            min_revenue=10**8,
        )
    )
    vouchers = {}
    for i, s in enumerate(STARTUPS, start=1):
        out.append(c.IssueVoucher(actor="city", programme_id="sz", holder=s, amount=10**12))
        vouchers[s] = i  # the core numbers vouchers 1, 2, ... (checked in build_core_stream)
    for inst_id, *_ in INSTRUMENTS:
        out.append(
            c.SetInstrumentStatus(actor=sys_, instrument_id=inst_id, status=InstrumentStatus.OPEN)
        )
    return [_stamp(cmd, T0) for cmd in out], vouchers


def _stamp(command: c.Command, ts: int) -> c.Command:
    return msgspec.structs.replace(command, ts=ts)


def core_commands(
    ops: Sequence[Op], vouchers: dict[str, int], first_order_id: int, ts: int
) -> list[c.Command]:
    """Pre-built commands for the core; a stream order ``oid`` gets core id ``first + oid - 1``."""
    out: list[c.Command] = []
    for op in ops:
        ts += STEP
        inst_id = INSTRUMENTS[op.inst][0]
        if op.kind == CANCEL:
            out.append(c.CancelOrder(actor=op.account, ts=ts, order_id=first_order_id + op.oid - 1))
            continue
        out.append(
            c.NewOrder(
                actor=op.account,
                ts=ts,
                client_order_id=f"o{op.oid}",
                instrument_id=inst_id,
                side=Side.BUY if op.buy else Side.SELL,
                qty=op.qty,
                price=op.price,
                tif=TimeInForce.IOC if op.kind == TAKE else TimeInForce.GTC,
                voucher_id=vouchers[op.account] if op.voucher else 0,
            )
        )
    return out


class CoreStream(NamedTuple):
    setup: list[c.Command]  # everything before the clock starts, the seed book included
    stream: list[c.Command]  # the timed commands
    first_order_id: int


def build_core_stream(seed_ops: list[Op], ops: list[Op]) -> CoreStream:
    setup, vouchers = setup_commands()
    probe = ExchangeCore()
    for command in setup:
        if any(isinstance(e, Rejected) for e in probe.apply(command)):
            raise SystemExit(f"set-up command rejected: {command}")
    if sorted(probe.vouchers) != sorted(vouchers.values()):
        raise SystemExit("voucher ids differ from the ones the stream assumes")
    first = probe.next_order_id
    seed = core_commands(seed_ops, vouchers, first, T0)
    stream = core_commands(ops, vouchers, first, T0 + STEP * len(seed))
    return CoreStream(setup + seed, stream, first)


def fresh_core(core_type: type[ExchangeCore], setup: list[c.Command]) -> ExchangeCore:
    core = core_type()
    for command in setup:
        core.apply(command)
    return core


class Timing(NamedTuple):
    cpu: float  # seconds of this process's CPU time
    wall: float  # seconds of wall-clock time


def time_core(core_type: type[ExchangeCore], cs: CoreStream) -> Timing:
    core = fresh_core(core_type, cs.setup)
    apply = core.apply
    stream = cs.stream
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    for command in stream:
        apply(command)
    return Timing(time.process_time() - c0, time.perf_counter() - w0)


class LatencyPass(NamedTuple):
    latencies_ns: list[int]
    events: list[Event]
    core: ExchangeCore


def latency_pass(core_type: type[ExchangeCore], cs: CoreStream) -> LatencyPass:
    core = fresh_core(core_type, cs.setup)
    apply = core.apply
    clock = time.perf_counter_ns
    latencies: list[int] = []
    events: list[Event] = []
    gc.collect()
    for command in cs.stream:
        t0 = clock()
        out = apply(command)
        t1 = clock()
        latencies.append(t1 - t0)
        events.extend(out)
    return LatencyPass(latencies, events, core)


def events_digest(events: list[Event]) -> str:
    return hashlib.sha256(msgspec.msgpack.encode(events)).hexdigest()


# --- the ceiling and the peer, driven by the same operations ---------------------------

Job = list[tuple[Callable[[Any], Any], Any]]


def ceiling_job(seed_ops: list[Op], ops: list[Op]) -> tuple[list[CeilingBook], Job]:
    """Fresh ceiling books holding the seed book, and the stream as (method, argument)."""
    books = [CeilingBook() for _ in INSTRUMENTS]
    for op in seed_ops:
        books[op.inst].limit([op.qty, op.oid, op.price, op.buy])
    job: Job = []
    for op in ops:
        book = books[op.inst]
        if op.kind == CANCEL:
            job.append((book.cancel, op.oid))
        else:
            fn = book.limit if op.kind == ADD else book.ioc
            job.append((fn, [op.qty, op.oid, op.price, op.buy]))
    return books, job


def peer_job(seed_ops: list[Op], ops: list[Op]) -> tuple[list[Any], Job]:
    """Fresh ``akhil4n-orderbook`` books holding the seed book, and the stream."""
    import orderbook as peer

    books = [peer.OrderBook() for _ in INSTRUMENTS]
    peer_ids: dict[int, str] = {}
    bid, ask = peer.OrderSide.BID, peer.OrderSide.ASK

    def make(op: Op) -> Any:
        o = peer.Order(side=bid if op.buy else ask, price=op.price, original_quantity=op.qty)
        peer_ids[op.oid] = o.order_id
        return o

    def ioc_for(book: Any) -> Callable[[Any], None]:
        add, cancel = book.add_limit_order, book.cancel_order

        def ioc(o: Any) -> None:
            add(o)
            if o.remaining_quantity:
                cancel(o.order_id)

        return ioc

    iocs = [ioc_for(book) for book in books]
    for op in seed_ops:
        books[op.inst].add_limit_order(make(op))
    job: Job = []
    for op in ops:
        book = books[op.inst]
        if op.kind == CANCEL:
            job.append((book.cancel_order, peer_ids[op.oid]))
        elif op.kind == ADD:
            job.append((book.add_limit_order, make(op)))
        else:
            job.append((iocs[op.inst], make(op)))
    return books, job


def time_job(job: Job) -> Timing:
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    for fn, arg in job:
        fn(arg)
    return Timing(time.process_time() - c0, time.perf_counter() - w0)


# --- checks --------------------------------------------------------------------------


def check(
    lp: LatencyPass, cs: CoreStream, ceiling: list[CeilingBook], ops: list[Op]
) -> dict[str, int]:
    """Fail loudly unless the core ran the stream as intended; return its counts."""
    rejected = [e for e in lp.events if isinstance(e, Rejected)]
    if rejected:
        raise SystemExit(f"{len(rejected)} commands rejected, first: {rejected[0]}")
    trades = [e for e in lp.events if isinstance(e, Trade)]
    volume = sum(t.qty for t in trades)
    ceiling_trades = sum(b.trades for b in ceiling)
    ceiling_volume = sum(b.volume for b in ceiling)
    if len(trades) < len(ops) // 20:
        raise SystemExit(f"only {len(trades)} trades: the stream does not trade")
    if (len(trades), volume) != (ceiling_trades, ceiling_volume):
        raise SystemExit(
            f"core traded {len(trades)} fills / {volume} GPU-hours, "
            f"the ceiling book {ceiling_trades} / {ceiling_volume}"
        )
    voucher_trades = sum(1 for t in trades if t.voucher)
    if not voucher_trades:
        raise SystemExit("no trade used a voucher")
    resting = {oid - cs.first_order_id + 1 for oid in lp.core.orders}
    ceiling_resting = {oid for b in ceiling for oid in b.orders}
    if resting != ceiling_resting:
        raise SystemExit("the core and the ceiling book rest different orders")
    return {
        "trades": len(trades),
        "volume": volume,
        "voucher_trades": voucher_trades,
        "resting_at_end": len(resting),
    }


# --- the run -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "msgspec": msgspec.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# Loaded together, so they use each other; dependencies first.
HOT = ("tables", "events", "records", "book", "auction", "core")


def load_core(rev: str | None) -> type[ExchangeCore]:
    """``ExchangeCore`` from the sources of git ``rev``, or from the working tree if None.

    The modules are loaded from ``.py`` text beside the installed ones, under
    another package name, so they run as interpreted Python even when the
    installed core is compiled.
    """
    root = Path(__file__).resolve().parent.parent
    package = "_core_" + re.sub(r"\W", "_", rev or "source")  # HEAD~3: a valid name
    pkg = types.ModuleType(package)
    pkg.__path__ = []
    sys.modules[package] = pkg
    for name in HOT:
        if rev is None:
            source = (root / "exchange" / f"{name}.py").read_text()
        else:
            git = ["git", "show", f"{rev}:exchange/{name}.py"]
            shown = subprocess.run(git, cwd=root, capture_output=True, text=True)
            if shown.returncode:  # not there yet at that revision
                continue
            source = shown.stdout
        for dependency in HOT:
            source = source.replace(
                f"from exchange.{dependency} import", f"from {package}.{dependency} import"
            )
        module = types.ModuleType(f"{package}.{name}")
        sys.modules[module.__name__] = module
        exec(compile(source, f"{rev or 'source'}:exchange/{name}.py", "exec"), module.__dict__)
    core_type: type[ExchangeCore] = sys.modules[f"{package}.core"].ExchangeCore
    return core_type


def percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run: 20,000 commands")
    parser.add_argument("--commands", type=int, help="stream length (default 100,000)")
    parser.add_argument("--repeats", type=int, help="timed runs per engine (default 7)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--baseline", metavar="REV", help="also time the core at git REV")
    parser.add_argument("--no-peer", action="store_true", help="skip akhil4n-orderbook")
    parser.add_argument(
        "--source",
        action="store_true",
        help="also time the core's sources interpreted (when the installed core is compiled)",
    )
    args = parser.parse_args(argv)
    n = args.commands or (20_000 if args.quick else 100_000)
    repeats = args.repeats or (3 if args.quick else 7)

    def say(*parts: object) -> None:
        print(*parts, file=sys.stderr, flush=True)

    seed_ops, ops = build_stream(n, args.seed)
    kinds = [sum(1 for op in ops if op.kind == k) for k in (ADD, CANCEL, TAKE)]
    buys = [op for op in ops if op.kind != CANCEL and op.buy]
    say(
        f"stream: seed {args.seed}, {len(seed_ops)} seed orders, {n} commands: "
        f"{kinds[0] / n:.1%} resting, {kinds[1] / n:.1%} cancels, {kinds[2] / n:.1%} "
        f"marketable; vouchers on {sum(op.voucher for op in buys) / len(buys):.1%} of buys"
    )
    cs = build_core_stream(seed_ops, ops)

    # Check the stream on the current core. This pass (and the ceiling's and the
    # peer's first passes) also warms up the interpreter; none of them is timed.
    ceiling_books, ceiling_ops = ceiling_job(seed_ops, ops)
    for fn, arg in ceiling_ops:
        fn(arg)
    checked = latency_pass(ExchangeCore, cs)
    counts = check(checked, cs, ceiling_books, ops)
    digest = events_digest(checked.events)
    del checked
    say(f"checked: {counts}, events sha256 {digest[:16]}")

    engines: dict[str, Callable[[], Timing]] = {"core": lambda: time_core(ExchangeCore, cs)}
    source_digest = None
    if args.source:
        source = load_core(None)
        source_digest = events_digest(latency_pass(source, cs).events)
        say(f"source: events identical: {source_digest == digest}")
        engines["source"] = lambda: time_core(source, cs)
    baseline_digest = None
    if args.baseline:
        baseline = load_core(args.baseline)
        baseline_digest = events_digest(latency_pass(baseline, cs).events)
        say(f"baseline {args.baseline}: events identical: {baseline_digest == digest}")
        engines["baseline"] = lambda: time_core(baseline, cs)
    engines["ceiling"] = lambda: time_job(ceiling_job(seed_ops, ops)[1])
    peer_books: list[Any] = []
    if not args.no_peer:

        def run_peer() -> Timing:
            books, job = peer_job(seed_ops, ops)
            peer_books[:] = books
            return time_job(job)

        run_peer()  # warm-up
        engines["peer"] = run_peer

    # Interleaved timed runs.
    times: dict[str, list[Timing]] = {name: [] for name in engines}
    for r in range(repeats):
        for name, run in engines.items():
            times[name].append(run())
        say(
            f"run {r + 1}/{repeats}, per CPU second (wall): "
            + ", ".join(
                f"{k} {n / v[-1].cpu:,.0f} ({n / v[-1].wall:,.0f})" for k, v in times.items()
            )
        )
    lp = latency_pass(ExchangeCore, cs)
    latencies = sorted(lp.latencies_ns)

    best = {name: n / min(t.cpu for t in ts) for name, ts in times.items()}
    median = {name: n / statistics.median(t.cpu for t in ts) for name, ts in times.items()}
    best_wall = {name: n / min(t.wall for t in ts) for name, ts in times.items()}
    result: dict[str, Any] = {
        "benchmark": "engine",
        "seed": args.seed,
        "commands": n,
        "repeats": repeats,
        "statistic": "best of repeats, CPU time",
        "build": native.build(),
        "commands_per_sec": round(best["core"]),
        "commands_per_sec_median": round(median["core"]),
        "commands_per_sec_wall": round(best_wall["core"]),
        "p50_us": round(percentile(latencies, 0.50) / 1000, 2),
        "p99_us": round(percentile(latencies, 0.99) / 1000, 2),
        "p999_us": round(percentile(latencies, 0.999) / 1000, 2),
        **counts,
        "events_sha256": digest,
        "ceiling_commands_per_sec": round(best["ceiling"]),
        "ceiling_ratio": round(best["core"] / best["ceiling"], 3),
        "ceiling_ratio_median": round(median["core"] / median["ceiling"], 3),
    }
    if not args.no_peer:
        result |= {
            "peer": "akhil4n-orderbook==0.1.1",
            "peer_ops_per_sec": round(best["peer"]),
            "peer_ratio": round(best["core"] / best["peer"], 3),
            "peer_ratio_median": round(median["core"] / median["peer"], 3),
            "peer_trades": sum(len(b.trade_log) for b in peer_books),
        }
    if args.source:
        result |= {
            "source_commands_per_sec": round(best["source"]),
            "speedup_vs_source": round(best["core"] / best["source"], 3),
            "speedup_vs_source_median": round(median["core"] / median["source"], 3),
            "source_events_identical": source_digest == digest,
        }
    if args.baseline:
        result |= {
            "baseline": args.baseline,
            "baseline_commands_per_sec": round(best["baseline"]),
            "speedup_vs_baseline": round(best["core"] / best["baseline"], 3),
            "speedup_vs_baseline_median": round(median["core"] / median["baseline"], 3),
            "baseline_events_identical": baseline_digest == digest,
        }
    result["machine"] = machine()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Reports and per-account reads of the HTTP API, and the specs operators list.

* A misspelt field inside a ``list_instrument`` spec is refused like any other
  unknown field: nothing is listed with a default in its place.
* An operator's ``?account=`` naming no account is a 404, not an empty list.
* The price index, kept from a cursor over the core's contracts, answers exactly
  what a recomputation over every contract answers: at every horizon, as more
  trades arrive, across UTC day boundaries, and after a restart.
"""

from __future__ import annotations

import datetime
import random
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from exchange import commands as c
from exchange.core import ExchangeCore
from exchange.events import Trade
from exchange.reference import InstrumentSpec, InstrumentStatus, TimeInForce
from gateway import protocol as p
from gateway.app import ROUTER, SERVICE
from gateway.marketdata import DAY_NS, MarketData, PriceIndex
from tests.gateway.conftest import H100, Gateway, GatewayFactory, Traders, now_ns
from tests.market import HOUR, T0, Market, spec

SEED = 20240611

# --- reference data: unknown fields inside a spec ---------------------------------------


def _spec_fields(instrument_id: str, **extra: Any) -> dict[str, Any]:
    now = now_ns()
    return {
        "instrument_id": instrument_id,
        "gpu_model": "H800",
        "domestic": False,
        "hub": "suzhou",
        "tier": "STATE",
        "delivery_start": now + 240 * HOUR,
        "delivery_end": now + 408 * HOUR,
        "tick": 10,
        "lot": 8,
        **extra,
    }


async def test_a_misspelt_spec_field_is_refused_and_nothing_is_listed(gateway: Gateway) -> None:
    ops = await gateway.connect("ops")
    rid = await ops.send("list_instrument", spec=_spec_fields("H800-TYPO", max_prce=5_000))
    error = await ops.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.UNKNOWN_FIELD
    assert "max_prce" in error.text and "$.spec" in error.text, error.text
    status, body = await gateway.get("/api/v1/instruments/H800-TYPO")
    assert (status, body["error"]) == (404, "UNKNOWN_INSTRUMENT")
    assert "H800-TYPO" not in gateway.app[SERVICE].core.instruments

    rid = await ops.send("list_instrument", spec=_spec_fields("H800-OK", max_price=5_000))
    await ops.expect(p.Ack, id=rid)
    status, body = await gateway.get("/api/v1/instruments/H800-OK")
    assert status == 200 and body["spec"]["max_price"] == 5_000


def _structs(info: msgspec.inspect.Type, seen: set[type]) -> set[type]:
    """Every Struct class reachable from ``info``, through fields, unions and containers."""
    if isinstance(info, msgspec.inspect.StructType):
        if info.cls in seen:
            return seen
        seen.add(info.cls)
        for field in info.fields:
            _structs(field.type, seen)
    for attr in ("types", "item_type", "item_types", "key_type", "value_type"):
        inner = getattr(info, attr, ())
        for one in inner if isinstance(inner, tuple) else (inner,):
            _structs(one, seen)
    return seen


def test_every_struct_inside_a_request_refuses_unknown_fields() -> None:
    """Not only the requests: every Struct nested in one (a spec), now or when one is added."""
    found = _structs(msgspec.inspect.type_info(p.Request), set())
    assert InstrumentSpec in found
    assert [k.__name__ for k in found if not k.__struct_config__.forbid_unknown_fields] == []


# --- per-account reads: an unknown account ----------------------------------------------

PER_ACCOUNT = (
    "/api/v1/account",
    "/api/v1/orders",
    "/api/v1/orders?status=all",
    "/api/v1/contracts",
    "/api/v1/vouchers",
    "/api/v1/claims",
)


async def test_an_operator_naming_no_account_gets_404(gateway: Gateway) -> None:
    traders = await Traders.connect(gateway)
    await traders.trade(H100, 1000, 8, "BUY")
    for path in PER_ACCOUNT:
        sep = "&" if "?" in path else "?"
        status, body = await gateway.get(f"{path}{sep}account=ghost", "ops")
        assert (status, body) == (
            404,
            {"error": "UNKNOWN_ACCOUNT", "text": "no account 'ghost'"},
        ), path
        # A real account still reads, and anyone else naming another is still refused.
        status, body = await gateway.get(f"{path}{sep}account=su2", "ops")
        assert status == 200, (path, body)
        status, body = await gateway.get(f"{path}{sep}account=ghost", "su1")
        assert (status, body["error"]) == (403, "NOT_PERMITTED"), path
    status, contracts = await gateway.get("/api/v1/contracts?account=su2", "ops")
    assert [x["buyer"] for x in contracts] == ["su2"]


# --- the price index --------------------------------------------------------------------


def _day(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts // 10**9, tz=datetime.UTC).date().isoformat()


def recomputed(core: ExchangeCore, horizon: int) -> list[dict[str, Any]]:
    """The index as the gateway computed it before it kept one: every contract read,
    those after ``horizon`` summed per UTC day and GPU model."""
    trades: list[Trade] = [t for t in core.contracts.values() if t.ts > horizon]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for trade in sorted(trades, key=lambda t: (t.ts, t.trade_id)):
        model = core.instruments[trade.instrument_id].spec.gpu_model
        key = (_day(trade.ts), model)
        row = rows.get(key)
        if row is None:
            row = rows[key] = {
                "date": key[0],
                "gpu_model": model,
                "open": trade.price,
                "high": trade.price,
                "low": trade.price,
                "close": trade.price,
                "trades": 0,
                "volume_gpu_hours": 0,
                "turnover": 0,
            }
        row["high"] = max(row["high"], trade.price)
        row["low"] = min(row["low"], trade.price)
        row["close"] = trade.price
        row["trades"] += 1
        row["volume_gpu_hours"] += trade.qty
        row["turnover"] += trade.price * trade.qty
    out = []
    for key in sorted(rows):
        row = rows[key]
        row["vwap"] = row["turnover"] // row["volume_gpu_hours"]
        out.append(row)
    return out


LONG = ("H100-LONG", "H100"), ("A800-LONG", "A800"), ("ASCEND-LONG", "Ascend910B")


def _long_market() -> Market:
    """The test market plus three instruments delivered in 60 days, with room to
    trade a few thousand times."""
    market = Market()
    for instrument_id, model in LONG:
        market.ok(
            c.ListInstrument(
                actor="ops", spec=spec(instrument_id, gpu_model=model, start_hours=60 * 24)
            )
        )
        for provider in ("dc1", "dc2"):
            market.ok(
                c.RegisterCapacity(
                    actor="ops", provider=provider, instrument_id=instrument_id, gpu_hours=10**7
                )
            )
        market.ok(
            c.SetInstrumentStatus(
                actor="ops", instrument_id=instrument_id, status=InstrumentStatus.OPEN
            )
        )
    for startup in ("su1", "su2"):
        market.ok(c.Deposit(actor="ops", account_id=startup, amount=10**12))
    return market


def _trade_burst(market: Market, rng: random.Random, n: int) -> None:
    """``n`` rounds of: sellers rest a few asks, a buyer sweeps some of them (several
    fills at one time stamp, at different prices)."""
    for _ in range(n):
        instrument_id = rng.choice(LONG)[0]
        for k in range(rng.randint(1, 3)):
            market.sell(
                rng.choice(("dc1", "dc2")),
                f"s{len(market.log)}-{k}",
                8 * rng.randint(1, 4),
                10 * rng.randint(90, 130),
                instrument_id=instrument_id,
            )
        market.buy(
            rng.choice(("su1", "su2")),
            f"b{len(market.log)}",
            8 * rng.randint(1, 12),
            10 * rng.randint(95, 135),
            instrument_id=instrument_id,
            tif=TimeInForce.IOC,
        )


def _horizons(core: ExchangeCore, rng: random.Random) -> list[int]:
    """Horizons that cut the history everywhere that matters: on and next to trade
    times, on and next to midnights, before everything and after everything."""
    stamps = sorted({t.ts for t in core.contracts.values()})
    picked = rng.sample(stamps, min(len(stamps), 40))
    out = {0, core.now, core.now - DAY_NS, core.now - 30 * DAY_NS}
    for ts in picked:
        midnight = ts // DAY_NS * DAY_NS
        out.update({ts, ts - 1, ts + 1, midnight, midnight - 1, midnight + 1})
    return sorted(out)


def test_price_index_agrees_with_a_recomputation_as_trades_arrive() -> None:
    print(f"seed={SEED}")
    rng = random.Random(SEED)
    market = _long_market()
    index = PriceIndex(market.core)  # seeded from the contracts so far (none)
    for step in range(40):
        # Mostly hours, sometimes minutes (same day), sometimes days (a gap).
        market.advance(rng.choice((60 * 10**9, 5 * HOUR, 11 * HOUR, 2 * DAY_NS + HOUR)))
        _trade_burst(market, rng, rng.randint(1, 12))
        if step % 5 == 4:
            for horizon in _horizons(market.core, rng):
                assert index.rows(horizon) == recomputed(market.core, horizon), (step, horizon)
    core = market.core
    days = {_day(t.ts) for t in core.contracts.values()}
    assert len(days) >= 10 and len(core.contracts) >= 500, (len(days), len(core.contracts))
    # A new index seeded from the whole history agrees with the one kept along.
    fresh = PriceIndex(core)
    for horizon in _horizons(core, rng):
        assert fresh.rows(horizon) == index.rows(horizon) == recomputed(core, horizon)


def test_price_index_cuts_a_busy_day_anywhere() -> None:
    """Hundreds of fills of one model on one day, with the horizon inside them: the
    part of the day after the horizon is summed from checkpoints, and its high and
    low come from the running extremes, all exactly."""
    print(f"seed={SEED}")
    rng = random.Random(SEED)
    market = _long_market()
    index = PriceIndex(market.core)
    start = (T0 // DAY_NS + 1) * DAY_NS  # the next midnight
    market.advance(start - market.now)
    for _ in range(900):  # within the day: at most 900 * 90 s
        market.advance(rng.randint(1, 90) * 10**9)
        _trade_burst(market, rng, 1)
    core = market.core
    per_model = Counter(
        core.instruments[t.instrument_id].spec.gpu_model for t in core.contracts.values()
    )
    assert min(per_model.values()) > PriceIndex.CHECKPOINT, per_model
    assert len({t.ts // DAY_NS for t in core.contracts.values()}) == 1
    stamps = sorted({t.ts for t in core.contracts.values()})
    for ts in [stamps[0], *rng.sample(stamps, 150), stamps[-1]]:
        for horizon in (ts - 1, ts):
            assert index.rows(horizon) == recomputed(core, horizon), horizon


def test_price_index_catches_up_a_slice_at_a_time() -> None:
    market = _long_market()
    index = PriceIndex(market.core)
    _trade_burst(market, random.Random(SEED), 50)
    behind = market.core.next_trade_id - index.next_id
    assert behind > 10
    slices = 1
    while index.catch_up(10):
        slices += 1
    assert slices == -(-behind // 10) and index.next_id == market.core.next_trade_id
    assert not index.catch_up(10)
    assert index.rows(0) == recomputed(market.core, 0)


def test_marketdata_seeds_the_index_from_the_contracts_at_start() -> None:
    market = _long_market()
    _trade_burst(market, random.Random(SEED), 20)
    md = MarketData(market.core)
    assert md.price_index.next_id == market.core.next_trade_id  # read at start, not later
    assert md.price_index.rows(0) == recomputed(market.core, 0)


async def _index(gateway: Gateway, days: int | None = None) -> list[dict[str, Any]]:
    query = "" if days is None else f"?days={days}"
    status, body = await gateway.get(f"/api/v1/reports/price-index{query}")
    assert status == 200, body
    assert isinstance(body, list)
    return body


async def test_http_price_index_is_the_recomputation(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    first = await start_gateway(str(tmp_path / "data"))
    traders = await Traders.connect(first)
    assert await _index(first) == []
    for i in range(3):
        await traders.trade(H100, 1000 + 10 * i, 8, "BUY")
    core = first.app[SERVICE].core
    for days in (None, 1, 30):
        horizon = core.now - (days or 30) * DAY_NS
        assert await _index(first, days) == recomputed(core, horizon)
    (row,) = await _index(first)
    assert (row["trades"], row["open"], row["close"], row["vwap"]) == (3, 1000, 1020, 1010)
    for i in range(2):  # more trades after the index was read
        await traders.trade(H100, 990 - 10 * i, 16, "SELL")
    assert await _index(first) == recomputed(core, core.now - 30 * DAY_NS)
    (row,) = await _index(first)
    assert (row["trades"], row["low"], row["close"]) == (5, 980, 980)
    before = await _index(first)
    await first.server.close()

    second = await start_gateway(str(tmp_path / "data"))  # seeded from the contracts
    index = second.app[ROUTER].marketdata.price_index
    assert index.next_id == second.app[SERVICE].core.next_trade_id
    assert await _index(second) == before

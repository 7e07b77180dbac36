"""The simulator: a short seeded run finishes, its conservation checks hold, and its
figures agree with the exchange's own records and with an independent calculation
of allocative efficiency done here."""

from __future__ import annotations

from collections import defaultdict
from itertools import accumulate
from typing import Any

from clients.efficiency import Demand, Supply, max_surplus
from clients.simulator import SimulationConfig, simulate
from gateway.app import SERVICE
from tests.clients.conftest import Served
from tests.gateway.conftest import key

SEED = 4_242


def best_surplus_by_quantity(values: list[int], costs: list[int]) -> int:
    """Max over every traded quantity q of (top q unit values - bottom q unit costs).

    One unit is one GPU-hour. Not the greedy walk of clients.efficiency: every q
    is tried, with prefix sums of the sorted unit values and costs.
    """
    top = [0, *accumulate(sorted(values, reverse=True))]
    bottom = [0, *accumulate(sorted(costs))]
    return max(top[q] - bottom[q] for q in range(min(len(values), len(costs)) + 1))


def test_max_surplus_matches_the_brute_force_on_small_cases() -> None:
    demands = [
        Demand(agent="a", instrument_id="X", qty=3, value=10),
        Demand(agent="b", instrument_id="X", qty=2, value=7),
        Demand(agent="c", instrument_id="X", qty=4, value=3),
    ]
    supplies = [
        Supply(agent="s", instrument_id="X", qty=4, cost=5),
        Supply(agent="t", instrument_id="X", qty=5, cost=2),
    ]
    values = [10] * 3 + [7] * 2 + [3] * 4
    costs = [5] * 4 + [2] * 5
    assert max_surplus(demands, supplies) == {"X": best_surplus_by_quantity(values, costs)}
    assert max_surplus(demands, supplies)["X"] == 3 * (10 - 2) + 2 * (7 - 2)  # 34


async def test_a_short_seeded_run(served: Served) -> None:
    print(f"seed {SEED}")
    config = SimulationConfig(
        seed=SEED, seconds=2.0, startups=5, step=(0.02, 0.08), max_orders=400, tag="t"
    )
    report = await simulate(served.url, key("ops"), config)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not failed and report["ok"]
    assert report["orders"] <= 400
    assert report["trades"] > 0

    core = served.app[SERVICE].core
    instruments = set(report["by_instrument"])
    contracts = [t for t in core.contracts.values() if t.instrument_id in instruments]
    assert len(contracts) == report["trades"]

    # Trades, volume and VWAP by instrument, from the exchange's own counters.
    for instrument_id, row in report["by_instrument"].items():
        inst = core.instruments[instrument_id]
        assert (row["trades"], row["volume"], row["turnover"]) == (
            inst.trades,
            inst.volume,
            inst.turnover,
        )
        assert row["vwap"] == (inst.turnover // inst.volume if inst.volume else 0)

    # Voucher spend by issuer, from the vouchers and claims in the core.
    spend: dict[str, int] = defaultdict(int)
    for claim in core.claims.values():
        if claim.provider.startswith("t-"):
            spend[claim.issuer] += claim.amount
    assert report["voucher_spend_by_issuer"] == dict(spend)
    savings: dict[str, int] = defaultdict(int)
    for t in contracts:
        if t.voucher:
            savings[t.buyer] += t.voucher
    assert report["startup_voucher_savings"] == dict(savings)
    assert sum(savings.values()) == sum(spend.values())

    # Efficiency, independently: unit values and costs from the agents, trades from the core.
    agents: list[dict[str, Any]] = report["agents"]
    value = {(a["agent"], a["instrument_id"]): a["value"] for a in agents if a["value"] is not None}
    cost = {(a["agent"], a["instrument_id"]): a["cost"] for a in agents if a["cost"] is not None}
    realised_total = 0
    maximum_total = 0
    for instrument_id in instruments:
        realised = sum(
            (value[(t.buyer, instrument_id)] - cost[(t.seller, instrument_id)]) * t.qty
            for t in contracts
            if t.instrument_id == instrument_id
        )
        units_v = [
            a["value"]
            for a in agents
            if a["instrument_id"] == instrument_id and a["value"] is not None
            for _ in range(a["qty"])
        ]
        units_c = [
            a["cost"]
            for a in agents
            if a["instrument_id"] == instrument_id and a["cost"] is not None
            for _ in range(a["qty"])
        ]
        maximum = best_surplus_by_quantity(units_v, units_c)
        assert report["surplus"][instrument_id]["realised"] == realised
        assert report["surplus"][instrument_id]["maximum"] == maximum
        assert realised <= maximum
        realised_total += realised
        maximum_total += maximum
    assert report["realised_surplus"] == realised_total
    assert report["maximum_surplus"] == maximum_total
    assert report["efficiency"] == round(realised_total / maximum_total, 4)

"""Allocative efficiency: the surplus a market realised over the most it could have.

Each buyer wants up to ``qty`` GPU-hours of one instrument and values each at
``value`` fen; each seller can deliver up to ``qty`` GPU-hours at ``cost`` fen
each. Instruments are separate goods. Vouchers are transfers from a city to a
start-up and change who pays, not what the trade is worth, so they do not enter
the surplus.

* **Maximum surplus** of an instrument: give the GPU-hours to the highest
  values from the lowest costs while value exceeds cost. With divisible
  quantities and unit values this greedy walk down the demand curve and up the
  supply curve is optimal (it is the area between the two curves left of
  their crossing). O(n log n) for n buyers and sellers.
* **Realised surplus**: for every trade, ``(buyer's value - seller's cost) *
  qty``. It can be negative (a noisy trader buying above its value).

Everything is integer fen; the efficiency ratio is the only float and is
for display.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import msgspec


class Demand(msgspec.Struct, frozen=True, kw_only=True):
    agent: str
    instrument_id: str
    qty: int  # GPU-hours wanted at most
    value: int  # fen per GPU-hour


class Supply(msgspec.Struct, frozen=True, kw_only=True):
    agent: str
    instrument_id: str
    qty: int  # GPU-hours deliverable at most
    cost: int  # fen per GPU-hour


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    buyer: str
    seller: str
    instrument_id: str
    qty: int
    price: int


def max_surplus(demands: Iterable[Demand], supplies: Iterable[Supply]) -> dict[str, int]:
    """The largest total surplus achievable per instrument, in fen."""
    bids: dict[str, list[tuple[int, int]]] = defaultdict(list)
    asks: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for d in demands:
        bids[d.instrument_id].append((d.value, d.qty))
    for s in supplies:
        asks[s.instrument_id].append((s.cost, s.qty))
    out: dict[str, int] = {}
    for instrument_id in sorted(bids.keys() | asks.keys()):
        demand = sorted(bids[instrument_id], reverse=True)
        supply = sorted(asks[instrument_id])
        total = 0
        i = j = 0
        left_d = demand[0][1] if demand else 0
        left_s = supply[0][1] if supply else 0
        while i < len(demand) and j < len(supply) and demand[i][0] > supply[j][0]:
            qty = min(left_d, left_s)
            total += (demand[i][0] - supply[j][0]) * qty
            left_d -= qty
            left_s -= qty
            if left_d == 0:
                i += 1
                left_d = demand[i][1] if i < len(demand) else 0
            if left_s == 0:
                j += 1
                left_s = supply[j][1] if j < len(supply) else 0
        out[instrument_id] = total
    return out


def realised_surplus(
    fills: Iterable[Fill], demands: Iterable[Demand], supplies: Iterable[Supply]
) -> dict[str, int]:
    """The surplus the fills realised per instrument, by the agents' own values and costs.

    A fill whose buyer or seller has no declared value or cost (someone outside
    the simulation) is left out.
    """
    values = {(d.agent, d.instrument_id): d.value for d in demands}
    costs = {(s.agent, s.instrument_id): s.cost for s in supplies}
    out: dict[str, int] = defaultdict(int)
    for f in fills:
        value = values.get((f.buyer, f.instrument_id))
        cost = costs.get((f.seller, f.instrument_id))
        if value is None or cost is None:
            continue
        out[f.instrument_id] += (value - cost) * f.qty
    return dict(out)


def efficiency(realised: int, maximum: int) -> float:
    """Realised over maximum surplus (1.0 when nothing could be gained)."""
    return realised / maximum if maximum else 1.0

"""An instrument feed's last-day figures and trade history, without sockets.

The feed keeps what grows with every fill in ``array`` columns (see
gateway.marketdata); these tests drive it with a seeded stream of fills and
check it, after every step, against sums over a plain list of the same fills.
"""

from __future__ import annotations

import gc
import random

from gateway.marketdata import DAY_NS, InstrumentFeed

SEED = 20251129
T0 = 1_800_000_000 * 10**9


def test_last_day_figures_match_a_plain_window_after_every_fill_and_prune() -> None:
    rng = random.Random(SEED)
    feed = InstrumentFeed("X")
    fills: list[tuple[int, int, int]] = []
    now = T0
    for step in range(6_000):
        now += rng.choice((1, 10**9, 60 * 10**9, 3_600 * 10**9))  # bursts and gaps
        price, qty = rng.randrange(900, 1_100, 5), rng.randrange(1, 9)
        feed.add(now, price, qty)
        fills.append((now, price, qty))
        if step % 7 == 0:
            now += rng.choice((0, 12 * 3_600 * 10**9))  # sometimes half a day passes
            feed.prune(now)
            live = [f for f in fills if f[0] > now - DAY_NS]
            assert feed.trades_24h == len(live), f"seed {SEED} step {step}"
            assert feed.volume_24h == sum(q for _, _, q in live), f"seed {SEED} step {step}"
            assert feed.turnover_24h == sum(p * q for _, p, q in live), f"seed {SEED} step {step}"
            assert (feed.last_price, feed.last_qty) == fills[-1][1:]
    # Expired entries were dropped from the columns, not only skipped.
    assert len(feed.tape_ts) < len(fills)
    assert len(feed.tape_ts) - feed.tape_head == feed.trades_24h


def test_a_collection_visits_none_of_the_entries_of_the_growing_columns() -> None:
    feed = InstrumentFeed("X")
    for i in range(1_000):
        feed.add(T0 + i, 1_000, 1)
        feed.trade_ids.append(i + 1)
    for column in (feed.trade_ids, feed.tape_ts, feed.tape_price, feed.tape_qty):
        # What the collector traverses of a column: its type alone, not its 1,000 entries
        # (a list would give every one of them).
        assert len(column) == 1_000
        assert gc.get_referents(column) == [type(column)]

"""The call auction's uncrossing price.

An instrument in AUCTION collects orders without matching them. When it opens,
everything crossed trades at one price on the tick grid: the price that
maximises matched volume; among those, the one that leaves the least imbalance
between demand and supply; then the one nearest the reference (the last traded
price, or the instrument's reference price before the first trade); then the
lowest.

Demand and supply only change at prices where orders rest, so between two
neighbouring resting prices every tick has the same volume and imbalance: the
interior of each gap is stood for by its one tick nearest the reference (or
its lowest, with no reference). Ranking the resting prices and those stand-ins
finds the best price on the whole grid.

Cost: O(L log L) in the number of price levels between the best ask and the
best bid.
"""

from __future__ import annotations

from exchange.book import OrderBook


def uncross_price(book: OrderBook, reference: int, tick: int) -> tuple[int, int]:
    """(price, volume) of the uncross; (0, 0) when the book is not crossed."""
    if not book.crossed():
        return 0, 0
    low, high = book.best_ask, book.best_bid
    resting = sorted({*book.bid_prices.irange(low, high), *book.ask_prices.irange(low, high)})
    # Supply at p: asks priced at or below p; no ask is below the best ask.
    # Demand at p: bids priced at or above p; no bid is above the best bid.
    supply: list[int] = []
    running = 0
    for p in resting:
        level = book.asks.get(p)
        if level is not None:
            running += level.total
        supply.append(running)
    demand = [0] * len(resting)
    running = 0
    for i in range(len(resting) - 1, -1, -1):
        level = book.bids.get(resting[i])
        if level is not None:
            running += level.total
        demand[i] = running
    # (price, demand, supply) for every resting price and every gap's stand-in.
    candidates = [(p, demand[i], supply[i]) for i, p in enumerate(resting)]
    for i in range(len(resting) - 1):
        first, last = resting[i] + tick, resting[i + 1] - tick
        if first <= last:
            inside = min(max(reference, first), last) if reference else first
            candidates.append((inside, demand[i + 1], supply[i]))

    def rank(candidate: tuple[int, int, int]) -> tuple[int, int, int, int]:
        price, wanted, offered = candidate
        distance = abs(price - reference) if reference else 0
        return (-min(wanted, offered), abs(wanted - offered), distance, price)

    price, wanted, offered = min(candidates, key=rank)
    return price, min(wanted, offered)

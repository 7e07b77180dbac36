"""The call auction's uncrossing price.

An instrument in AUCTION collects orders without matching them. When it opens,
everything crossed trades at one price: the price that maximises matched
volume; among those, the one that leaves the least imbalance between demand and
supply; then the one nearest the reference (the last traded price, or the
instrument's reference price before the first trade); then the lowest. Only
prices at which some order rests are candidates, which is enough: the volume
function only changes at those prices.

Cost: O(L log L) in the number of price levels between the best ask and the
best bid.
"""

from __future__ import annotations

from exchange.book import OrderBook


def uncross_price(book: OrderBook, reference: int) -> tuple[int, int]:
    """(price, volume) of the uncross; (0, 0) when the book is not crossed."""
    if not book.crossed():
        return 0, 0
    low, high = book.best_ask, book.best_bid
    candidates = sorted({*book.bid_prices.irange(low, high), *book.ask_prices.irange(low, high)})
    # Supply at p: asks priced at or below p; no ask is below the best ask.
    # Demand at p: bids priced at or above p; no bid is above the best bid.
    supply: list[int] = []
    running = 0
    for p in candidates:
        level = book.asks.get(p)
        if level is not None:
            running += level.total
        supply.append(running)
    demand = [0] * len(candidates)
    running = 0
    for i in range(len(candidates) - 1, -1, -1):
        level = book.bids.get(candidates[i])
        if level is not None:
            running += level.total
        demand[i] = running

    def rank(i: int) -> tuple[int, int, int, int]:
        volume = min(demand[i], supply[i])
        distance = abs(candidates[i] - reference) if reference else 0
        return (-volume, abs(demand[i] - supply[i]), distance, candidates[i])

    best = min(range(len(candidates)), key=rank)
    return candidates[best], min(demand[best], supply[best])

"""The order book of one instrument, and the rules it keeps.

Rules
-----
* **Priority is price, then time.** A better price always trades first; at one
  price, the order that reached the level first trades first. "Time" is the
  core's own arrival counter (``Order.priority``), never a clock, so replay
  reproduces the same queue.
* **Trades happen at the resting order's price** in continuous trading, and at
  the single uncrossing price in a call auction.
* **Amend.** Reducing the quantity at the same price keeps the order's place.
  Any other change (a new price, a larger quantity) takes it out and puts it
  back at the end of its new level, as a new arrival; a new price that crosses
  trades at once, like a new order.
* **Self-trade prevention.** An account never trades with itself, and a buy
  that pays with a voucher never trades with a provider related to the buyer
  (the voucher may not pay a related party). The incoming order's mode decides
  what goes: the resting order (default), the incoming order, or both.
* **At rest the book is never crossed** once continuous trading runs: every
  best bid is below every best ask. During a call auction orders rest without
  matching, and the uncross leaves the book uncrossed again.
* **Reservations** are the ledger's concern (see ``exchange.core``): a resting
  buy holds cash and voucher value for all it could still spend, a resting sell
  holds the capacity it could still deliver.

Structure and cost
------------------
Each side keeps a dict from price to ``Level`` and a sorted list of its
prices. A level is a FIFO deque of orders; a cancelled order is marked dead and
left in the deque, to be dropped when it reaches the front, so cancel is O(1)
apart from the level itself disappearing. With ``L`` price levels on a side:

=====================  ==========================================
add (existing level)   O(1)
add (new level)        O(log L)
cancel                 O(1); O(log L) when the level empties
reduce quantity        O(1)
best bid / ask         O(1) (cached)
match one fill         O(1) amortised; O(log L) per level emptied
depth, top N levels    O(N)
=====================  ==========================================
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import msgspec
from sortedcontainers import SortedList

from exchange.reference import SelfTradePrevention, Side, TimeInForce


class Order(msgspec.Struct, kw_only=True):
    """An open order and the reservation it holds.

    A buy holds ``cash_reserved`` and ``voucher_reserved``; a sell holds
    ``leaves`` GPU-hours of capacity. ``voucher_cap``, ``seg_value`` and
    ``seg_voucher`` carry the voucher arithmetic of ``exchange.vouchers``:
    the cap reserved at entry (or at the last amend), and the value filled and
    voucher used since then.
    """

    order_id: int
    account: str
    client_order_id: str
    instrument_id: str
    side: Side
    price: int
    qty: int
    leaves: int
    tif: TimeInForce
    expire_at: int
    post_only: bool = False
    min_qty: int = 0
    stp: SelfTradePrevention = SelfTradePrevention.CANCEL_RESTING
    voucher_id: int = 0
    rate_bp: int = 0
    cash_reserved: int = 0
    voucher_reserved: int = 0
    voucher_cap: int = 0
    seg_value: int = 0
    seg_voucher: int = 0
    priority: int = 0
    entered_at: int = 0
    live: bool = True


class Level:
    """Orders at one price, in arrival order. ``total`` counts live leaves only."""

    __slots__ = ("count", "price", "queue", "total")

    def __init__(self, price: int) -> None:
        self.price = price
        self.total = 0
        self.count = 0
        self.queue: deque[Order] = deque()

    def front(self) -> Order:
        """The first live order. Call only when ``count > 0``."""
        queue = self.queue
        order = queue[0]
        while not order.live:
            queue.popleft()
            order = queue[0]
        return order

    def live_orders(self) -> Iterator[Order]:
        return (o for o in self.queue if o.live)


class OrderBook:
    """Both sides of one instrument's book. The core does the matching."""

    __slots__ = ("ask_prices", "asks", "best_ask", "best_bid", "bid_prices", "bids")

    def __init__(self) -> None:
        self.bids: dict[int, Level] = {}
        self.asks: dict[int, Level] = {}
        self.bid_prices = SortedList()
        self.ask_prices = SortedList()
        self.best_bid = 0  # 0: no bids
        self.best_ask = 0  # 0: no asks

    def add(self, order: Order) -> None:
        """Append a live order at the back of its price level."""
        price = order.price
        levels = self.bids if order.side is Side.BUY else self.asks
        level = levels.get(price)
        if level is None:
            level = levels[price] = Level(price)
            if order.side is Side.BUY:
                self.bid_prices.add(price)
                if price > self.best_bid:
                    self.best_bid = price
            else:
                self.ask_prices.add(price)
                if not self.best_ask or price < self.best_ask:
                    self.best_ask = price
        level.queue.append(order)
        level.total += order.leaves
        level.count += 1

    def remove(self, order: Order) -> None:
        """Take a live order out of the book; its leaves leave the level total."""
        order.live = False
        levels = self.bids if order.side is Side.BUY else self.asks
        level = levels[order.price]
        level.total -= order.leaves
        level.count -= 1
        if level.count == 0:
            self.drop_level(order.side, order.price)

    def drop_level(self, side: Side, price: int) -> None:
        """Forget an empty level and refresh the cached best price."""
        if side is Side.BUY:
            del self.bids[price]
            prices = self.bid_prices
            prices.remove(price)
            if price == self.best_bid:
                self.best_bid = prices[-1] if prices else 0
        else:
            del self.asks[price]
            prices = self.ask_prices
            prices.remove(price)
            if price == self.best_ask:
                self.best_ask = prices[0] if prices else 0

    def level_prices(self, side: Side) -> Iterator[int]:
        """Prices of one side from the best outwards."""
        prices: Iterator[int] = (
            reversed(self.bid_prices) if side is Side.BUY else iter(self.ask_prices)
        )
        return prices

    def level(self, side: Side, price: int) -> Level:
        return (self.bids if side is Side.BUY else self.asks)[price]

    def depth(self, side: Side, n: int) -> list[tuple[int, int]]:
        """The top ``n`` levels of one side as (price, total GPU-hours)."""
        levels = self.bids if side is Side.BUY else self.asks
        out: list[tuple[int, int]] = []
        for price in self.level_prices(side):
            if len(out) == n:
                break
            out.append((price, levels[price].total))
        return out

    def orders(self, side: Side) -> Iterator[Order]:
        """Every live order of one side, in priority order."""
        levels = self.bids if side is Side.BUY else self.asks
        for price in self.level_prices(side):
            yield from levels[price].live_orders()

    def crossed(self) -> bool:
        return bool(self.best_bid and self.best_ask and self.best_bid >= self.best_ask)

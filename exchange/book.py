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
* **Self-trade prevention.** An account never trades with itself: the
  incoming order's mode decides what goes, the resting order (default), the
  incoming order, or both. A buy that pays with a voucher never trades with a
  provider related to the buyer either (the voucher may not pay a related
  party); there the incoming order stops, whatever its mode, and the related
  party's resting order stays: no account's order cancels another's.
* **At rest the book is never crossed** once continuous trading runs: every
  best bid is below every best ask. During a call auction orders rest without
  matching, and the uncross leaves the book uncrossed again.
* **Reservations** are the ledger's concern (see ``exchange.core``): a resting
  buy holds cash and voucher value for all it could still spend, a resting sell
  holds the capacity it could still deliver.

Structure and cost
------------------
Each side keeps a dict from price to ``Level`` and a sorted list of its
prices (``Prices``: a flat list searched by bisection). A level is a FIFO queue
of orders; a cancelled order is marked dead and left in the queue, to be
dropped when it reaches the front, so cancel is O(1) apart from the level
itself disappearing. With ``L`` price levels on a side:

=====================  ==========================================
add (existing level)   O(1)
add (new level)        O(log L), plus an O(L) memmove
cancel                 O(1); as above when the level empties
reduce quantity        O(1)
best bid / ask         O(1) (cached)
match one fill         O(1) amortised; as above per level emptied
depth, top N levels    O(N)
=====================  ==========================================

The memmove shifts at most ``L`` pointers in C. A book has tens to hundreds of
levels a side, where that costs less than the bookkeeping of a balanced or
chunked structure such as ``sortedcontainers.SortedList``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import Final

import msgspec

from exchange.records import Account, Record, record_of
from exchange.reference import SelfTradePrevention, Side, TimeInForce

_BUY: Final = Side.BUY  # reading an enum member through its class costs a lookup each time


class OrderState(msgspec.Struct, kw_only=True, gc=False):
    """An ``Order`` as a record: how snapshots store it."""

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


class Order(Record):
    """An open order and the reservation it holds.

    A buy holds ``cash_reserved`` and ``voucher_reserved``; a sell holds
    ``leaves`` GPU-hours of capacity. ``voucher_cap``, ``seg_value`` and
    ``seg_voucher`` carry the voucher arithmetic of ``exchange.vouchers``:
    the cap reserved at entry (or at the last amend), and the value filled and
    voucher used since then.

    A plain class, not a msgspec Struct: compiled (see ``exchange._native``),
    its fields are C struct members, read and written with no lookup.
    ``OrderState`` is its record form. ``owner`` is the account that entered
    it: a reference the record form keeps as the account's id.
    """

    owner: Account

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
    post_only: bool
    min_qty: int
    stp: SelfTradePrevention
    voucher_id: int
    rate_bp: int
    cash_reserved: int
    voucher_reserved: int
    voucher_cap: int
    seg_value: int
    seg_voucher: int
    priority: int
    entered_at: int
    live: bool

    def __init__(
        self,
        owner: Account,
        *,
        order_id: int,
        account: str,
        client_order_id: str,
        instrument_id: str,
        side: Side,
        price: int,
        qty: int,
        leaves: int,
        tif: TimeInForce,
        expire_at: int,
        post_only: bool = False,
        min_qty: int = 0,
        stp: SelfTradePrevention = SelfTradePrevention.CANCEL_RESTING,
        voucher_id: int = 0,
        rate_bp: int = 0,
        cash_reserved: int = 0,
        voucher_reserved: int = 0,
        voucher_cap: int = 0,
        seg_value: int = 0,
        seg_voucher: int = 0,
        priority: int = 0,
        entered_at: int = 0,
        live: bool = True,
    ) -> None:
        self.owner = owner
        self.order_id = order_id
        self.account = account
        self.client_order_id = client_order_id
        self.instrument_id = instrument_id
        self.side = side
        self.price = price
        self.qty = qty
        self.leaves = leaves
        self.tif = tif
        self.expire_at = expire_at
        self.post_only = post_only
        self.min_qty = min_qty
        self.stp = stp
        self.voucher_id = voucher_id
        self.rate_bp = rate_bp
        self.cash_reserved = cash_reserved
        self.voucher_reserved = voucher_reserved
        self.voucher_cap = voucher_cap
        self.seg_value = seg_value
        self.seg_voucher = seg_voucher
        self.priority = priority
        self.entered_at = entered_at
        self.live = live

    def state(self) -> OrderState:
        return record_of(self, OrderState)

    def requeued(self, price: int, qty: int, leaves: int) -> Order:
        """A fresh live record of this order with a new price and size: an
        amend that loses priority re-enters it, and the old record stays dead
        in its queue. (Its priority is for the caller to set.)"""
        return Order(
            self.owner,
            order_id=self.order_id,
            account=self.account,
            client_order_id=self.client_order_id,
            instrument_id=self.instrument_id,
            side=self.side,
            price=price,
            qty=qty,
            leaves=leaves,
            tif=self.tif,
            expire_at=self.expire_at,
            post_only=self.post_only,
            min_qty=self.min_qty,
            stp=self.stp,
            voucher_id=self.voucher_id,
            rate_bp=self.rate_bp,
            cash_reserved=self.cash_reserved,
            voucher_reserved=self.voucher_reserved,
            voucher_cap=self.voucher_cap,
            seg_value=self.seg_value,
            seg_voucher=self.seg_voucher,
            priority=self.priority,
            entered_at=self.entered_at,
            live=True,
        )

    @staticmethod
    def from_state(state: OrderState, owner: Account) -> Order:
        return Order(owner, **msgspec.structs.asdict(state))


class Level:
    """Orders at one price, in arrival order. ``total`` counts live leaves only.

    ``queue[head:]`` is the queue: the front moves by an index, and the list is
    compacted once the part behind the front is as long as the rest. (A list,
    not a deque: compiled, its append and indexing are direct calls.)
    """

    __slots__ = ("count", "head", "price", "queue", "total")

    def __init__(self, price: int) -> None:
        self.price = price
        self.total = 0
        self.count = 0
        self.queue: list[Order] = []
        self.head = 0

    def front(self) -> Order:
        """The first live order, dropping dead ones before it. Call only when ``count > 0``."""
        queue = self.queue
        head = self.head
        order = queue[head]
        while not order.live:
            head += 1
            order = queue[head]
        self.head = head
        return order

    def pop_front(self) -> None:
        """Drop the front order, which has just stopped being live."""
        head = self.head + 1
        if head >= 32 and head + head >= len(self.queue):
            del self.queue[:head]
            head = 0
        self.head = head

    def live_orders(self) -> Iterator[Order]:
        return (o for o in self.queue[self.head :] if o.live)


class Prices:
    """The prices of one side's levels, ascending, each once.

    The part of ``sortedcontainers.SortedList``'s interface that books and
    their readers use, over a flat list kept sorted by bisection.
    """

    __slots__ = ("_prices",)

    def __init__(self) -> None:
        self._prices: list[int] = []

    def _index(self, price: int) -> int:
        """Where ``price`` is or would go: bisection, written out so that,
        compiled, it compares machine integers rather than calling ``bisect``."""
        prices = self._prices
        lo = 0
        hi = len(prices)
        while lo < hi:
            mid = (lo + hi) >> 1
            if prices[mid] < price:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def add(self, price: int) -> None:
        self._prices.insert(self._index(price), price)

    def remove(self, price: int) -> None:
        """Remove ``price``; ValueError if it is not there."""
        prices = self._prices
        i = self._index(price)
        if i == len(prices) or prices[i] != price:
            raise ValueError(f"{price} is not in the prices")
        del prices[i]

    def lowest(self) -> int:
        """The lowest price; 0 if there is none."""
        prices = self._prices
        return prices[0] if prices else 0

    def highest(self) -> int:
        """The highest price; 0 if there is none."""
        prices = self._prices
        return prices[-1] if prices else 0

    def irange(self, minimum: int, maximum: int) -> Iterator[int]:
        """Prices from ``minimum`` to ``maximum``, both included, ascending."""
        prices = self._prices
        return iter(prices[bisect_left(prices, minimum) : bisect_right(prices, maximum)])

    def __getitem__(self, index: int) -> int:
        return self._prices[index]

    def __len__(self) -> int:
        return len(self._prices)

    def __iter__(self) -> Iterator[int]:
        return iter(self._prices)

    def __reversed__(self) -> Iterator[int]:
        return reversed(self._prices)

    def __contains__(self, price: object) -> bool:
        return price in self._prices

    def __repr__(self) -> str:
        return f"Prices({self._prices!r})"


class OrderBook:
    """Both sides of one instrument's book. The core does the matching."""

    __slots__ = ("ask_prices", "asks", "best_ask", "best_bid", "bid_prices", "bids")

    def __init__(self) -> None:
        self.bids: dict[int, Level] = {}
        self.asks: dict[int, Level] = {}
        self.bid_prices = Prices()
        self.ask_prices = Prices()
        self.best_bid = 0  # 0: no bids
        self.best_ask = 0  # 0: no asks

    def add(self, order: Order) -> None:
        """Append a live order at the back of its price level."""
        price = order.price
        if order.side is _BUY:
            level = self.bids.get(price)
            if level is None:
                level = self.bids[price] = Level(price)
                self.bid_prices.add(price)
                if price > self.best_bid:
                    self.best_bid = price
        else:
            level = self.asks.get(price)
            if level is None:
                level = self.asks[price] = Level(price)
                self.ask_prices.add(price)
                if not self.best_ask or price < self.best_ask:
                    self.best_ask = price
        level.queue.append(order)
        level.total += order.leaves
        level.count += 1

    def remove(self, order: Order) -> None:
        """Take a live order out of the book; its leaves leave the level total."""
        order.live = False
        price = order.price
        level = (self.bids if order.side is _BUY else self.asks)[price]
        level.total -= order.leaves
        level.count -= 1
        if level.count == 0:
            self.drop_level(order.side, price)

    def drop_level(self, side: Side, price: int) -> None:
        """Forget an empty level and refresh the cached best price."""
        if side is _BUY:
            del self.bids[price]
            self.bid_prices.remove(price)
            if price == self.best_bid:
                self.best_bid = self.bid_prices.highest()
        else:
            del self.asks[price]
            self.ask_prices.remove(price)
            if price == self.best_ask:
                self.best_ask = self.ask_prices.lowest()

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

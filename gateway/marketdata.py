"""Public market data derived from the core: L2 books, trades, tickers.

The published book of an instrument is the top ``depth`` price levels of each
side of ``core.books[instrument_id]``, aggregated (price, total GPU-hours). After
each batch of commands the router calls ``refresh`` for every instrument the
batch touched; it compares the new top levels with the published ones and, if
anything changed, bumps the instrument's sequence number and returns the
levels that changed (quantity 0: the level left the published book).

Rules a client can rely on
--------------------------
* ``seq`` counts the published changes of one instrument's book, by one, from
  the snapshot a subscriber received. A gap means a lost message: resubscribe.
* Applying an update to the book of ``seq - 1`` gives exactly the published
  book of ``seq`` (at most ``depth`` levels a side), so no trimming is needed.
* ``checksum`` is ``crc32`` of the ASCII string
  ``"<bid1 price>:<bid1 qty>,...|<ask1 price>:<ask1 qty>,..."`` over the best
  ``checksum_depth`` levels of each side, bids best first (highest price),
  asks best first (lowest price), as an unsigned 32-bit integer. An empty side
  is an empty string, so an empty book hashes ``"|"``.
* Snapshots are of the published book, never of a newer state, so the next
  update always applies to a snapshot.

Trade history and open interest
-------------------------------
Each instrument's feed keeps the trade id of every fill of the instrument
(the core's ``Trade`` events, which are its compute contracts, stay in
``core.contracts``), oldest first, so trade ids increase along the list. It
is built from ``core.contracts`` at start-up, so it survives restarts, then
appended to as fills happen. ``trades`` pages through it backwards by trade
id with a binary search. The feed also sums the GPU-hours contracted;
``open_interest`` is that sum until the delivery window ends, then 0: the one
definition of open interest, used by the ticker and the open-interest report.

What grows with every fill (the trade ids, the last day's tape) is kept in
``array`` columns of machine integers, whose entries the garbage collector
never visits: a list or deque of a million entries would make every full
collection visit each of them, a pause that grows with the exchange's age.

The daily price index
---------------------
``PriceIndex`` sums the fills per UTC day and GPU model, reading
``core.contracts`` from a cursor (the next trade id it has not read): it is
seeded from every contract at start-up, then catches up when it is read, so
a fill's path never touches it. A day's row for the fills after a horizon in
the middle of that day comes from checkpoints and running extremes (see
``_ModelDay``), so an answer costs its rows, not the trades behind them.

Cost: a refresh reads ``2 * depth`` levels and diffs two small dicts, O(depth).
A fill is O(1) amortised; a page of history O(log trades + limit). The price
index reads each contract once, O(1) amortised, and keeps 8 bytes a fill (plus
the running extremes, a few entries a day unless prices run one way all day);
an answer is O(rows), plus O(log trades + CHECKPOINT) a GPU model for the day
the horizon cuts.
"""

from __future__ import annotations

import bisect
import datetime
import itertools
import zlib
from array import array
from collections.abc import Iterator
from typing import Any, Final

from exchange.core import ExchangeCore
from exchange.events import Trade
from exchange.reference import InstrumentStatus, Side
from exchange.tables import IdTable
from gateway import protocol as p

DAY_NS = 86_400 * 10**9
MAX_PAGE = 1_000  # the most one page of a history holds (trades, orders, contracts)

Levels = list[tuple[int, int]]


def book_checksum(bids: Levels, asks: Levels, depth: int) -> int:
    """CRC32 of the best ``depth`` levels per side (format in the module doc)."""
    text = (
        ",".join(f"{price}:{qty}" for price, qty in bids[:depth])
        + "|"
        + ",".join(f"{price}:{qty}" for price, qty in asks[:depth])
    )
    return zlib.crc32(text.encode("ascii"))


def _changes(old: Levels, new: Levels, descending: bool) -> Levels:
    before = dict(old)
    after = dict(new)
    changed = [(price, qty) for price, qty in new if before.get(price) != qty]
    changed.extend((price, 0) for price in before if price not in after)
    changed.sort(reverse=descending)
    return changed


class InstrumentFeed:
    """The published state of one instrument."""

    __slots__ = (
        "asks",
        "bids",
        "checksum",
        "contracted",
        "instrument_id",
        "last_price",
        "last_qty",
        "seq",
        "snapshot_cache",
        "tape_head",
        "tape_price",
        "tape_qty",
        "tape_ts",
        "trade_ids",
        "trades_24h",
        "turnover_24h",
        "volume_24h",
    )

    def __init__(self, instrument_id: str) -> None:
        self.instrument_id = instrument_id
        self.seq = 0
        self.bids: Levels = []
        self.asks: Levels = []
        self.checksum = zlib.crc32(b"|")
        self.snapshot_cache: bytes | None = None
        # The last day's fills as columns (ts, price, qty); entries before
        # ``tape_head`` have left the window and are dropped in bulk.
        self.tape_ts = array("q")
        self.tape_price = array("q")
        self.tape_qty = array("q")
        self.tape_head = 0
        self.volume_24h = 0
        self.turnover_24h = 0
        self.trades_24h = 0
        self.last_price = 0
        self.last_qty = 0
        self.trade_ids = array("q")  # of every fill, oldest first (so increasing)
        self.contracted = 0  # GPU-hours of every fill

    def add(self, ts: int, price: int, qty: int) -> None:
        """A fill into the last day's figures (and the last price)."""
        self.tape_ts.append(ts)
        self.tape_price.append(price)
        self.tape_qty.append(qty)
        self.volume_24h += qty
        self.turnover_24h += price * qty
        self.trades_24h += 1
        self.last_price = price
        self.last_qty = qty

    def prune(self, now: int) -> None:
        """Drop the fills older than a day from the last day's figures."""
        ts = self.tape_ts
        head = self.tape_head
        end = len(ts)
        horizon = now - DAY_NS
        if head == end or ts[head] > horizon:
            return
        prices = self.tape_price
        qtys = self.tape_qty
        while head < end and ts[head] <= horizon:
            price = prices[head]
            qty = qtys[head]
            self.volume_24h -= qty
            self.turnover_24h -= price * qty
            self.trades_24h -= 1
            head += 1
        if head >= 1024 and head * 2 >= end:  # drop the expired entries, amortised O(1)
            del ts[:head]
            del prices[:head]
            del qtys[:head]
            head = 0
        self.tape_head = head


class MarketData:
    """Published books, trade tapes and tickers of every instrument."""

    def __init__(self, core: ExchangeCore, *, depth: int = 20, checksum_depth: int = 10) -> None:
        self.core = core
        self.depth = depth
        self.checksum_depth = checksum_depth
        self.feeds: dict[str, InstrumentFeed] = {}
        # Each account's contract ids, oldest first: arrays, whose ids the collector
        # never visits (a list of millions would be walked by every full collection).
        self.contract_ids: dict[str, array[int]] = {}
        for instrument_id in core.instruments:
            self.feed(instrument_id)
            self.refresh(instrument_id)
        # Every contract so far into the histories, the last day's into the tapes.
        horizon = core.now - DAY_NS
        for trade in sorted(core.contracts.values(), key=_trade_id):
            feed = self.feed(trade.instrument_id)
            feed.trade_ids.append(trade.trade_id)
            feed.contracted += trade.qty
            self.contract_ids.setdefault(trade.buyer, array("q")).append(trade.trade_id)
            if trade.seller != trade.buyer:
                self.contract_ids.setdefault(trade.seller, array("q")).append(trade.trade_id)
            if trade.ts > horizon:
                feed.add(trade.ts, trade.price, trade.qty)
        self.price_index = PriceIndex(core)

    def feed(self, instrument_id: str) -> InstrumentFeed:
        feed = self.feeds.get(instrument_id)
        if feed is None:
            feed = self.feeds[instrument_id] = InstrumentFeed(instrument_id)
        return feed

    def refresh(self, instrument_id: str) -> p.BookUpdate | None:
        """Publish the core's current top levels; the update, or None if unchanged."""
        book = self.core.books.get(instrument_id)
        if book is None:
            return None
        feed = self.feed(instrument_id)
        bids = book.depth(Side.BUY, self.depth)
        asks = book.depth(Side.SELL, self.depth)
        if bids == feed.bids and asks == feed.asks:
            return None
        bid_changes = _changes(feed.bids, bids, descending=True)
        ask_changes = _changes(feed.asks, asks, descending=False)
        feed.bids = bids
        feed.asks = asks
        feed.seq += 1
        feed.checksum = book_checksum(bids, asks, self.checksum_depth)
        feed.snapshot_cache = None
        return p.BookUpdate(
            instrument_id=instrument_id,
            seq=feed.seq,
            bids=bid_changes,
            asks=ask_changes,
            checksum=feed.checksum,
        )

    def snapshot(self, instrument_id: str) -> p.BookSnapshot:
        feed = self.feed(instrument_id)
        return p.BookSnapshot(
            instrument_id=instrument_id,
            seq=feed.seq,
            bids=list(feed.bids),
            asks=list(feed.asks),
            checksum=feed.checksum,
        )

    def snapshot_bytes(self, instrument_id: str) -> bytes:
        """The encoded snapshot, cached until the book next changes."""
        feed = self.feed(instrument_id)
        if feed.snapshot_cache is None:
            feed.snapshot_cache = p.encode(self.snapshot(instrument_id))
        return feed.snapshot_cache

    def record(self, ev: Trade) -> None:
        """Add a fill to its instrument's history, open interest and last-24-hours figures."""
        feed = self.feeds.get(ev.instrument_id)
        if feed is None:
            feed = self.feed(ev.instrument_id)
        ts = ev.ts
        price = ev.price
        qty = ev.qty
        trade_id = ev.trade_id
        feed.trade_ids.append(trade_id)
        feed.contracted += qty
        # The contract under its buyer and its seller (setdefault would build an array a call).
        by_account = self.contract_ids
        buyer = ev.buyer
        mine = by_account.get(buyer)
        if mine is None:
            mine = by_account[buyer] = array("q")
        mine.append(trade_id)
        seller = ev.seller
        mine = by_account.get(seller)
        if mine is None:
            mine = by_account[seller] = array("q")
        if seller != buyer:
            mine.append(trade_id)
        # feed.add, inline: a fill is on the hot path.
        tape_ts = feed.tape_ts
        tape_ts.append(ts)
        feed.tape_price.append(price)
        feed.tape_qty.append(qty)
        feed.volume_24h += qty
        feed.turnover_24h += price * qty
        feed.trades_24h += 1
        feed.last_price = price
        feed.last_qty = qty
        if tape_ts[feed.tape_head] <= ts - DAY_NS:
            feed.prune(ts)

    def contracts(self, account: str | None, limit: int, before: int) -> Iterator[Trade]:
        """Contracts of ``account`` (None: everyone's) with ids below ``before``, newest
        first, at most ``limit``; a page costs its own length, not the history's."""
        contracts = self.core.contracts
        if account is None:
            ids: Iterator[int] = contracts.below(before)
        else:
            mine = self.contract_ids.get(account, array("q"))
            end = bisect.bisect_left(mine, before)
            ids = reversed(mine[max(0, end - limit) : end])
        for trade_id in itertools.islice(ids, limit):
            yield contracts[trade_id]

    @staticmethod
    def public_trade(ev: Trade) -> p.PublicTrade:
        """A fill as public market data: no parties."""
        return p.PublicTrade(
            instrument_id=ev.instrument_id,
            trade_id=ev.trade_id,
            price=ev.price,
            qty=ev.qty,
            aggressor=ev.aggressor,
            ts=ev.ts,
        )

    def trades(self, instrument_id: str, limit: int, before: int | None = None) -> list[Trade]:
        """Up to ``limit`` fills of the instrument, newest first, with trade ids below
        ``before`` (None: the newest)."""
        ids = self.feed(instrument_id).trade_ids
        end = len(ids) if before is None else bisect.bisect_left(ids, before)
        contracts = self.core.contracts
        return [contracts[trade_id] for trade_id in reversed(ids[max(0, end - limit) : end])]

    def open_interest(self, instrument_id: str, now: int) -> int:
        """GPU-hours contracted and not yet delivered: every fill's, until the delivery
        window ends at ``delivery_end``; then 0."""
        inst = self.core.instruments.get(instrument_id)
        if inst is None or now >= inst.spec.delivery_end:
            return 0
        return self.feed(instrument_id).contracted

    def ticker(self, instrument_id: str, now: int) -> p.Ticker:
        feed = self.feed(instrument_id)
        feed.prune(now)
        inst = self.core.instruments.get(instrument_id)
        best_bid, best_bid_qty = feed.bids[0] if feed.bids else (0, 0)
        best_ask, best_ask_qty = feed.asks[0] if feed.asks else (0, 0)
        return p.Ticker(
            instrument_id=instrument_id,
            status=inst.status if inst else InstrumentStatus.CLOSED,
            best_bid=best_bid,
            best_bid_qty=best_bid_qty,
            best_ask=best_ask,
            best_ask_qty=best_ask_qty,
            last_price=feed.last_price or (inst.last_price if inst else 0),
            last_qty=feed.last_qty,
            volume_24h=feed.volume_24h,
            turnover_24h=feed.turnover_24h,
            vwap_24h=feed.turnover_24h // feed.volume_24h if feed.volume_24h else 0,
            trades_24h=feed.trades_24h,
            open_interest=self.open_interest(instrument_id, now),
            ts=now,
        )


def _trade_id(trade: Trade) -> int:
    return trade.trade_id


class _ModelDay:
    """The fills of one GPU model on one UTC day, in trade id order (which is time
    order: the core stamps each fill with its own clock, which never goes back).

    Besides the day's figures it keeps what the figures of a suffix of the day
    (the fills after a horizon inside it) need, in O(log n + CHECKPOINT):

    * ``ids``: the trade ids, to find where the suffix starts by time and read
      its first price;
    * ``marks``: volume and turnover before every ``CHECKPOINT``-th fill, so a
      suffix's sums are the day's minus a checkpoint's minus at most
      ``CHECKPOINT - 1`` fills;
    * ``high_at``/``high_price``: the fills no later fill reaches or passes, by
      index, prices falling; the suffix's high is the first at or after its
      start. ``low_at``/``low_price`` likewise for the low.
    """

    __slots__ = (
        "close",
        "high",
        "high_at",
        "high_price",
        "ids",
        "low",
        "low_at",
        "low_price",
        "marks",
        "open",
        "turnover",
        "volume",
    )

    def __init__(self) -> None:
        self.ids = array("q")
        self.marks: list[tuple[int, int]] = []  # (volume, turnover) before fill k * CHECKPOINT
        self.high_at = array("q")
        self.high_price = array("q")
        self.low_at = array("q")
        self.low_price = array("q")
        self.open = self.high = self.low = self.close = 0
        self.volume = 0
        self.turnover = 0  # a Python int: a day's fen may pass 2**63

    def add(self, trade_id: int, price: int, qty: int) -> None:
        n = len(self.ids)
        if n % PriceIndex.CHECKPOINT == 0:
            self.marks.append((self.volume, self.turnover))
        self.ids.append(trade_id)
        if n == 0:
            self.open = self.high = self.low = price
        elif price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.volume += qty
        self.turnover += price * qty
        at, prices = self.high_at, self.high_price
        while prices and prices[-1] <= price:
            at.pop()
            prices.pop()
        at.append(n)
        prices.append(price)
        at, prices = self.low_at, self.low_price
        while prices and prices[-1] >= price:
            at.pop()
            prices.pop()
        at.append(n)
        prices.append(price)

    def row(
        self, date: str, model: str, contracts: IdTable[Trade], horizon: int | None
    ) -> dict[str, Any] | None:
        """The row of the day's fills after ``horizon`` (None: all of them), or None
        if there are none."""
        ids = self.ids
        start = 0
        if horizon is not None:
            start = bisect.bisect_right(ids, horizon, key=lambda t: contracts[t].ts)
        n = len(ids)
        if start == n:
            return None
        if start == 0:
            first, high, low = self.open, self.high, self.low
            volume, turnover = self.volume, self.turnover
        else:
            mark = start // PriceIndex.CHECKPOINT
            volume, turnover = self.marks[mark]
            for i in range(mark * PriceIndex.CHECKPOINT, start):
                trade = contracts[ids[i]]
                volume += trade.qty
                turnover += trade.price * trade.qty
            volume = self.volume - volume
            turnover = self.turnover - turnover
            first = contracts[ids[start]].price
            high = self.high_price[bisect.bisect_left(self.high_at, start)]
            low = self.low_price[bisect.bisect_left(self.low_at, start)]
        return {
            "date": date,
            "gpu_model": model,
            "open": first,
            "high": high,
            "low": low,
            "close": self.close,
            "trades": n - start,
            "volume_gpu_hours": volume,
            "turnover": turnover,
            "vwap": turnover // volume,
        }


class PriceIndex:
    """The daily price index per GPU model, from executed trades (UTC days).

    Each row is one day and model: open, high, low and close (by time, then
    trade id), the number of fills, GPU-hours, fen and VWAP (``turnover //
    volume``). ``rows(horizon)`` covers the fills stamped after ``horizon``, so
    the first day may be cut part-way.

    The index reads ``core.contracts`` in trade id order from ``next_id``:
    ``catch_up`` reads what is new (a slice at a time, if asked), ``rows``
    first reads the rest. Trade ids are the core's counter, every one a contract.
    """

    CHECKPOINT: Final = 256  # fills between two of a day's sums (see ``_ModelDay``)

    def __init__(self, core: ExchangeCore) -> None:
        self.core = core
        self.next_id = 1  # the first trade id not yet read
        self._days: list[int] = []  # UTC day numbers with fills, increasing
        self._dates: list[str] = []  # each one's ISO date
        self._by_model: list[dict[str, _ModelDay]] = []  # each one's fills by GPU model
        self._model_of: dict[str, str] = {}  # instrument id -> GPU model
        self.catch_up()

    def catch_up(self, limit: int | None = None) -> bool:
        """Read the contracts made since the last read, at most ``limit`` of them;
        whether some are still unread."""
        end = self.core.next_trade_id
        stop = end if limit is None else min(end, self.next_id + limit)
        contracts = self.core.contracts
        for trade_id in range(self.next_id, stop):
            trade = contracts.get(trade_id)
            if trade is not None:
                self._add(trade)
        self.next_id = stop
        return stop < end

    def _add(self, trade: Trade) -> None:
        model = self._model_of.get(trade.instrument_id)
        if model is None:
            model = self.core.instruments[trade.instrument_id].spec.gpu_model
            self._model_of[trade.instrument_id] = model
        day = trade.ts // DAY_NS
        if not self._days or self._days[-1] != day:  # a later day: time never goes back
            self._days.append(day)
            date = datetime.datetime.fromtimestamp(day * 86_400, tz=datetime.UTC).date()
            self._dates.append(date.isoformat())
            self._by_model.append({})
        by_model = self._by_model[-1]
        fills = by_model.get(model)
        if fills is None:
            fills = by_model[model] = _ModelDay()
        fills.add(trade.trade_id, trade.price, trade.qty)

    def rows(self, horizon: int) -> list[dict[str, Any]]:
        """The index of the fills stamped after ``horizon``, by date then GPU model."""
        self.catch_up()
        contracts = self.core.contracts
        first_day = horizon // DAY_NS
        out: list[dict[str, Any]] = []
        for at in range(bisect.bisect_left(self._days, first_day), len(self._days)):
            cut = horizon if self._days[at] == first_day else None
            by_model = self._by_model[at]
            for model in sorted(by_model):
                row = by_model[model].row(self._dates[at], model, contracts, cut)
                if row is not None:
                    out.append(row)
        return out

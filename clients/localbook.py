"""A client's copy of one instrument's published L2 book.

The gateway publishes each book as a ``book_snapshot`` followed by
``book_update`` deltas (docs/protocol.md, gateway/marketdata.py). This module
follows that stream and proves, message by message, that its copy is right:

* A snapshot replaces the copy whole, whenever it comes (the gateway also
  sends one in place of updates a slow reader missed).
* An update must carry ``seq == copy.seq + 1``. An older one is stale (it was
  queued before the snapshot we hold) and is dropped; a newer one means a
  message was lost: the copy is a *gap*.
* After applying an update, the copy's checksum (the gateway's own
  ``book_checksum``, so there is one definition) must equal the update's. A
  mismatch means the copy is wrong.

On a gap or a mismatch ``apply`` answers ``RESYNC``: the owner asks the
gateway for a fresh snapshot (the SDK re-subscribes) and the book ignores
every update until that snapshot arrives. ``LocalBook`` does no I/O; it only
turns messages into state, so it is tested without sockets.

Cost: an update of ``k`` levels is O(k log d) for a book ``d`` levels deep;
the checksum reads ``2 * checksum_depth`` levels.
"""

from __future__ import annotations

import enum

from sortedcontainers import SortedDict

from gateway.marketdata import book_checksum
from gateway.protocol import BookSnapshot, BookUpdate

Levels = list[tuple[int, int]]


class Applied(enum.Enum):
    """What ``LocalBook.apply`` did with a message."""

    SNAPSHOT = "snapshot"  # the copy was replaced
    UPDATED = "updated"  # the update applied and its checksum matched
    STALE = "stale"  # an update older than the copy; dropped
    WAITING = "waiting"  # resynchronising: dropped until the next snapshot
    RESYNC = "resync"  # a gap or a checksum mismatch: ask for a snapshot now


class LocalBook:
    """The published book of one instrument, verified by sequence and checksum."""

    def __init__(self, instrument_id: str, *, checksum_depth: int = 10) -> None:
        self.instrument_id = instrument_id
        self.checksum_depth = checksum_depth
        self.seq = 0
        self.synced = False  # a snapshot has been applied and no gap seen since
        self.checksum = 0
        self.gaps = 0  # sequence gaps seen
        self.mismatches = 0  # checksum mismatches seen
        self.snapshots = 0  # snapshots applied
        self.last_problem = ""
        # price -> qty; bids keyed by -price so both sides iterate best first.
        self._bids: SortedDict = SortedDict()
        self._asks: SortedDict = SortedDict()

    # --- reading ------------------------------------------------------------------

    def bids(self, depth: int | None = None) -> Levels:
        """Bid levels ``(price, qty)``, best (highest) first."""
        items = self._bids.items() if depth is None else self._bids.items()[:depth]
        return [(-price, qty) for price, qty in items]

    def asks(self, depth: int | None = None) -> Levels:
        """Ask levels ``(price, qty)``, best (lowest) first."""
        items = self._asks.items() if depth is None else self._asks.items()[:depth]
        return list(items)

    def best_bid(self) -> tuple[int, int] | None:
        return (-self._bids.peekitem(0)[0], self._bids.peekitem(0)[1]) if self._bids else None

    def best_ask(self) -> tuple[int, int] | None:
        return self._asks.peekitem(0) if self._asks else None

    def computed_checksum(self) -> int:
        """The checksum of the copy as it is now."""
        return book_checksum(
            self.bids(self.checksum_depth), self.asks(self.checksum_depth), self.checksum_depth
        )

    # --- following the stream ----------------------------------------------------------

    def apply(self, message: BookSnapshot | BookUpdate) -> Applied:
        """Take one book message of this instrument; say what became of it."""
        if isinstance(message, BookSnapshot):
            self._bids.clear()
            self._asks.clear()
            self._set(message.bids, message.asks)
            self.seq = message.seq
            self.checksum = message.checksum
            self.snapshots += 1
            if self.computed_checksum() != message.checksum:
                self.mismatches += 1
                self.synced = False
                self.last_problem = f"snapshot seq {message.seq}: checksum mismatch"
                return Applied.RESYNC
            self.synced = True
            return Applied.SNAPSHOT
        if not self.synced:
            return Applied.WAITING
        if message.seq <= self.seq:
            return Applied.STALE
        if message.seq != self.seq + 1:
            self.gaps += 1
            self.synced = False
            self.last_problem = f"gap: expected seq {self.seq + 1}, got {message.seq}"
            return Applied.RESYNC
        self._set(message.bids, message.asks)
        self.seq = message.seq
        self.checksum = message.checksum
        if self.computed_checksum() != message.checksum:
            self.mismatches += 1
            self.synced = False
            self.last_problem = f"seq {message.seq}: checksum mismatch"
            return Applied.RESYNC
        return Applied.UPDATED

    def invalidate(self, why: str) -> None:
        """Drop updates until the next snapshot (say, after a reconnect)."""
        self.synced = False
        self.last_problem = why

    def _set(self, bids: Levels, asks: Levels) -> None:
        for price, qty in bids:
            if qty:
                self._bids[-price] = qty
            else:
                self._bids.pop(-price, None)
        for price, qty in asks:
            if qty:
                self._asks[price] = qty
            else:
                self._asks.pop(price, None)

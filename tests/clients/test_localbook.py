"""The local book on its own, with no sockets: snapshots, deltas, stale messages, gaps
and checksum mismatches, and random books against the gateway's checksum."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from clients.localbook import Applied, LocalBook
from gateway.marketdata import book_checksum
from gateway.protocol import BookSnapshot, BookUpdate

Levels = list[tuple[int, int]]
INSTRUMENT = "H100"


def snap(seq: int, bids: Levels, asks: Levels, depth: int = 10) -> BookSnapshot:
    return BookSnapshot(
        instrument_id=INSTRUMENT,
        seq=seq,
        bids=bids,
        asks=asks,
        checksum=book_checksum(bids, asks, depth),
    )


def update(seq: int, bids: Levels, asks: Levels, after: tuple[Levels, Levels]) -> BookUpdate:
    return BookUpdate(
        instrument_id=INSTRUMENT,
        seq=seq,
        bids=bids,
        asks=asks,
        checksum=book_checksum(after[0], after[1], 10),
    )


def test_snapshot_then_updates() -> None:
    book = LocalBook(INSTRUMENT)
    assert book.apply(update(1, [(100, 8)], [], ([(100, 8)], []))) is Applied.WAITING
    assert book.apply(snap(3, [(100, 8), (90, 16)], [(110, 8)])) is Applied.SNAPSHOT
    assert book.apply(update(3, [(100, 0)], [], ([(90, 16)], [(110, 8)]))) is Applied.STALE
    after = ([(95, 8), (90, 16)], [(110, 8)])
    assert book.apply(update(4, [(100, 0), (95, 8)], [], after)) is Applied.UPDATED
    assert (book.bids(), book.asks(), book.seq) == (after[0], after[1], 4)
    assert book.best_bid() == (95, 8) and book.best_ask() == (110, 8)


def test_a_gap_asks_for_a_snapshot_and_waits_for_it() -> None:
    book = LocalBook(INSTRUMENT)
    book.apply(snap(1, [(100, 8)], [(110, 8)]))
    gap = update(3, [(100, 16)], [], ([(100, 16)], [(110, 8)]))
    assert book.apply(gap) is Applied.RESYNC
    assert not book.synced and book.gaps == 1 and "expected seq 2" in book.last_problem
    assert book.apply(update(4, [], [], ([(100, 16)], [(110, 8)]))) is Applied.WAITING
    assert book.apply(snap(4, [(100, 16)], [(110, 8)])) is Applied.SNAPSHOT
    assert book.synced and book.bids() == [(100, 16)]


def test_a_checksum_mismatch_asks_for_a_snapshot() -> None:
    book = LocalBook(INSTRUMENT)
    book.apply(snap(1, [(100, 8)], [(110, 8)]))
    wrong = BookUpdate(instrument_id=INSTRUMENT, seq=2, bids=[(100, 16)], asks=[], checksum=12345)
    assert book.apply(wrong) is Applied.RESYNC
    assert book.mismatches == 1 and not book.synced
    bad_snapshot = BookSnapshot(instrument_id=INSTRUMENT, seq=2, bids=[(1, 1)], asks=[], checksum=1)
    assert book.apply(bad_snapshot) is Applied.RESYNC
    assert book.mismatches == 2


def diff(old: dict[int, int], new: dict[int, int]) -> Levels:
    changed = [(p, q) for p, q in new.items() if old.get(p) != q]
    changed += [(p, 0) for p in old if p not in new]
    return changed


side = st.dictionaries(st.integers(1, 60), st.integers(1, 50), max_size=25)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(side, side), min_size=1, max_size=15), st.integers(0, 2**32))
def test_random_books_follow_the_gateways_checksum(
    books: list[tuple[dict[int, int], dict[int, int]]], seed: int
) -> None:
    """Each state's delta from the previous one lands the copy on exactly that state."""
    rng = random.Random(seed)
    local = LocalBook(INSTRUMENT, checksum_depth=rng.randint(1, 10))
    depth = local.checksum_depth

    def levels(raw: dict[int, int], bid: bool) -> Levels:
        return sorted(raw.items(), reverse=bid)

    def split(bids: dict[int, int], asks: dict[int, int]) -> tuple[dict[int, int], dict[int, int]]:
        # Keep the book uncrossed: asks above every bid.
        top = max(bids, default=0)
        return bids, {p + top: q for p, q in asks.items()}

    prev_bids, prev_asks = split(*books[0])
    first = levels(prev_bids, True), levels(prev_asks, False)
    local.apply(
        BookSnapshot(
            instrument_id=INSTRUMENT,
            seq=1,
            bids=first[0],
            asks=first[1],
            checksum=book_checksum(first[0], first[1], depth),
        )
    )
    for seq, (raw_bids, raw_asks) in enumerate(books[1:], start=2):
        bids, asks = split(raw_bids, raw_asks)
        want = levels(bids, True), levels(asks, False)
        message = BookUpdate(
            instrument_id=INSTRUMENT,
            seq=seq,
            bids=diff(prev_bids, bids),
            asks=diff(prev_asks, asks),
            checksum=book_checksum(want[0], want[1], depth),
        )
        assert local.apply(message) is Applied.UPDATED
        assert (local.bids(), local.asks()) == want
        prev_bids, prev_asks = bids, asks

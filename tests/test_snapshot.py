"""Snapshots: exact round trips, behaviour after a restore, damaged files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from exchange import audit
from exchange import snapshot as sm
from exchange.commands import AmendOrder, Command
from exchange.core import ExchangeCore
from exchange.events import Event, Rejected
from exchange.native import PACKAGE_DIR
from exchange.reference import Side, TimeInForce
from exchange.snapshot import (
    NOT_STATE,
    STATE_ATTRS,
    SnapshotCorrupt,
    capture,
    load,
    restore,
)
from tests.journal_stream import stream
from tests.market import H100, Market, state_digest

SEEDS = (1, 2, 3)


def run(
    commands: list[Command], core: ExchangeCore | None = None
) -> tuple[ExchangeCore, list[list[Event]]]:
    core = core or ExchangeCore()
    return core, [core.apply(command) for command in commands]


@pytest.mark.parametrize("seed", SEEDS)
def test_restore_behaves_exactly_like_the_original(seed: int) -> None:
    """Cut a stream anywhere: the restored core answers the rest byte for byte alike."""
    print("seed", seed)
    commands = stream(seed, 3_000)
    for cut in (40, 700, 1_500, 2_400):
        original, _ = run(commands[:cut])
        data = capture(original, cut)
        seq, restored = load(data)
        assert seq == cut
        assert state_digest(restored) == state_digest(original)
        assert sm.digest(restored) == sm.digest(original)
        assert capture(restored, cut) == data or sm.digest(restored) == sm.digest(original)
        _, expected = run(commands[cut:], original)
        _, got = run(commands[cut:], restored)
        assert got == expected, (seed, cut)
        assert state_digest(restored) == state_digest(original)
        assert audit.problems(restored) == []


def test_queue_order_counters_and_heaps_survive() -> None:
    m = Market()
    for i, price in enumerate((1000, 1000, 1010, 1000)):
        assert not _rejected(m.buy("su1" if i % 2 else "su2", f"b{i}", 8, price))
    assert not _rejected(m.buy("su2", "gtd", 8, 990, tif=TimeInForce.GTD, expire_at=m.now + 5))
    # A price amend puts b0 at the back of its new level and leaves a dead entry behind.
    m.ok(AmendOrder(actor="su2", client_order_id="b0", price=1010))
    core = restore(capture(m.core, 99))
    book = core.books[H100]
    assert [o.client_order_id for o in book.orders(Side.BUY)] == ["b2", "b0", "b1", "b3", "gtd"]
    assert [o.priority for o in book.orders(Side.BUY)] == [
        o.priority for o in m.core.books[H100].orders(Side.BUY)
    ]
    assert core.expiries == m.core.expiries and core.closings == m.core.closings
    assert (core.next_order_id, core.next_priority) == (m.core.next_order_id, m.core.next_priority)
    assert core.orders[1] is book.bids[1010].queue[1]  # one object in the book and the index
    assert core.books[H100].best_bid == 1010


def test_the_format_stores_every_attribute_of_the_core() -> None:
    # Read from the source: the compiled core has no __dict__ to list.
    tree = ast.parse((PACKAGE_DIR / "core.py").read_text())
    (cls,) = (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ExchangeCore")
    (init,) = (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assigned = {
        target.attr
        for node in ast.walk(init)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    }
    assert assigned == STATE_ATTRS | NOT_STATE
    assert not STATE_ATTRS & NOT_STATE


@pytest.fixture
def snapshot_bytes() -> bytes:
    core, _ = run(stream(5, 500))
    return capture(core, 500)


@pytest.mark.parametrize("cut", [0, 10, 39, 40, 41, 1_000, -1])
def test_truncated_snapshot_is_corrupt(snapshot_bytes: bytes, cut: int) -> None:
    with pytest.raises(SnapshotCorrupt) as caught:
        load(snapshot_bytes[:cut], "snap")
    assert "snap" in str(caught.value)


@pytest.mark.parametrize("at", [0, 9, 17, 36, 40, 200, -5])
def test_flipped_byte_is_corrupt(snapshot_bytes: bytes, at: int) -> None:
    data = bytearray(snapshot_bytes)
    data[at] ^= 0x10
    with pytest.raises(SnapshotCorrupt, match="at byte"):
        load(bytes(data), "snap")


def test_files_are_named_by_seq_and_checked(tmp_path: Path, snapshot_bytes: bytes) -> None:
    path = sm.write_snapshot(tmp_path, 500, snapshot_bytes)
    assert path.name == "snapshot-00000000000000000500.snap"
    assert sm.list_snapshots(tmp_path) == [(500, path)]
    assert sm.read_snapshot(path)[0] == 500
    wrong = path.rename(tmp_path / sm.snapshot_name(400))
    with pytest.raises(SnapshotCorrupt, match="file name says 400"):
        sm.read_snapshot(wrong)
    assert not list(tmp_path.glob(".*.tmp"))


def _rejected(events: list[Event]) -> bool:
    return any(isinstance(e, Rejected) for e in events)

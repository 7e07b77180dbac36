"""Snapshots: the core's whole state at one sequence number, as bytes and back.

``capture(core, seq)`` turns every piece of an ``ExchangeCore``'s state into
bytes; ``load(data)`` gives back the sequence number and a core that behaves
exactly as the captured one would: same books and queue order (each price
level's live orders in their FIFO order), same dict orders, same expiry and
closing heaps as laid out in memory, same id and priority counters, balances,
reservations, vouchers, claims and contracts. A start loads the newest good
snapshot and replays the journal after its sequence number.

Only live orders are kept: a level's queue may also hold cancelled entries
waiting to be dropped when they reach the front (``exchange.book``), and those
change nothing the core can observe.

File format, version 1; little-endian, 40 bytes of header then the payload::

    magic        8s   b"SUANLISS"
    version      u16  FORMAT_VERSION
    flags        u16  0
    reserved     u32  0
    seq          u64  the last command applied to the captured state
    length       u64  payload bytes
    payload_crc  u32  CRC-32 of the payload
    header_crc   u32  CRC-32 of the 36 header bytes before it

The payload is msgpack of ``_StateV1``. Files are written to a temporary
name, fsynced and renamed, so a snapshot file is whole or absent; a damaged
one raises ``SnapshotCorrupt`` naming the file and byte offset, and the store
falls back to an older snapshot or to the journal alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import zlib
from pathlib import Path

import msgspec

from exchange.book import Level, Order, OrderBook, OrderState
from exchange.core import ExchangeCore
from exchange.events import Trade
from exchange.journal import PRIVATE_DIR, PRIVATE_FILE, sync_directory
from exchange.records import Account, Instrument
from exchange.reference import AccountState, InstrumentState, Side
from exchange.tables import IdTable
from exchange.vouchers import Programme, Voucher, VoucherClaim

FORMAT_VERSION = 1
MAGIC = b"SUANLISS"
_HEAD = struct.Struct("<8sHHIQQI")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _CRC.size  # 40
_NAME = re.compile(r"^snapshot-(\d{20})\.snap$")

# Every attribute of ExchangeCore that this format stores. A core that grows a
# new attribute must grow the format too: a test compares these sets with the
# attributes ``ExchangeCore.__init__`` sets (the compiled core has no ``vars``).
STATE_ATTRS = frozenset(
    {
        "now",
        "instruments",
        "books",
        "accounts",
        "orders",
        "programmes",
        "vouchers",
        "claims",
        "contracts",
        "deposited",
        "next_order_id",
        "next_trade_id",
        "next_voucher_id",
        "next_claim_id",
        "next_priority",
        "expiries",
        "closings",
    }
)
NOT_STATE = frozenset({"_handlers", "quiet"})  # rebuilt by ExchangeCore(); a mode


class SnapshotError(Exception):
    """A snapshot cannot be taken or used."""


class SnapshotCorrupt(SnapshotError):
    def __init__(self, path: Path | str, offset: int, detail: str) -> None:
        super().__init__(f"snapshot corrupt: {path} at byte {offset}: {detail}")
        self.path = path
        self.offset = offset
        self.detail = detail


class _Level(msgspec.Struct, array_like=True, frozen=True):
    price: int
    order_ids: list[int]  # live orders, front of the queue first


class _Book(msgspec.Struct, array_like=True, frozen=True):
    instrument_id: str
    bids: list[_Level]  # in the book's dict order
    asks: list[_Level]
    best_bid: int
    best_ask: int


class _StateV1(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    now: int
    instruments: list[InstrumentState]  # each list keeps its dict's order
    books: list[_Book]
    accounts: list[AccountState]
    orders: list[OrderState]
    programmes: list[Programme]
    vouchers: list[Voucher]
    claims: list[VoucherClaim]
    contracts: list[Trade]
    deposited: int
    next_order_id: int
    next_trade_id: int
    next_voucher_id: int
    next_claim_id: int
    next_priority: int
    expiries: list[tuple[int, int]]  # heap layout, as in memory
    closings: list[tuple[int, str]]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_StateV1)


def _levels(levels: dict[int, Level]) -> list[_Level]:
    return [
        _Level(price, [o.order_id for o in level.live_orders()]) for price, level in levels.items()
    ]


def _state(core: ExchangeCore, seq: int) -> _StateV1:
    return _StateV1(
        seq=seq,
        now=core.now,
        instruments=[inst.state() for inst in core.instruments.values()],
        books=[
            _Book(iid, _levels(book.bids), _levels(book.asks), book.best_bid, book.best_ask)
            for iid, book in core.books.items()
        ],
        accounts=[account.state() for account in core.accounts.values()],
        orders=[order.state() for order in core.orders.values()],
        programmes=list(core.programmes.values()),
        vouchers=list(core.vouchers.values()),
        claims=list(core.claims.values()),
        contracts=list(core.contracts.values()),
        deposited=core.deposited,
        next_order_id=core.next_order_id,
        next_trade_id=core.next_trade_id,
        next_voucher_id=core.next_voucher_id,
        next_claim_id=core.next_claim_id,
        next_priority=core.next_priority,
        expiries=list(core.expiries),
        closings=list(core.closings),
    )


def capture(core: ExchangeCore, seq: int) -> bytes:
    """The core's whole state after command ``seq``, as snapshot file bytes."""
    payload = _encoder.encode(_state(core, seq))
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, 0, 0, seq, len(payload), zlib.crc32(payload))
    return head + _CRC.pack(zlib.crc32(head)) + payload


def digest(core: ExchangeCore) -> str:
    """SHA-256 of the whole state in a canonical form: equal digests, equal cores.

    Sets and dict keys inside records are sorted; the order of the core's own
    dicts, which replay reproduces, is kept.
    """
    payload = msgspec.msgpack.encode(_state(core, 0), order="deterministic")
    return hashlib.sha256(payload).hexdigest()


def load(data: bytes, path: Path | str = "<bytes>") -> tuple[int, ExchangeCore]:
    """(seq, core) from snapshot bytes; ``SnapshotCorrupt`` if they are damaged."""
    if len(data) < HEADER_SIZE:
        raise SnapshotCorrupt(path, 0, f"header cut short ({len(data)} of {HEADER_SIZE} bytes)")
    magic, version, _flags, _reserved, seq, length, payload_crc = _HEAD.unpack_from(data, 0)
    (header_crc,) = _CRC.unpack_from(data, _HEAD.size)
    if magic != MAGIC:
        raise SnapshotCorrupt(path, 0, "not a Suanli snapshot (bad magic)")
    if zlib.crc32(data[: _HEAD.size]) != header_crc:
        raise SnapshotCorrupt(path, 0, "header checksum mismatch")
    if version != FORMAT_VERSION:
        raise SnapshotCorrupt(
            path, 8, f"snapshot format version {version}; this release reads {FORMAT_VERSION}"
        )
    if len(data) != HEADER_SIZE + length:
        raise SnapshotCorrupt(
            path, HEADER_SIZE, f"payload is {len(data) - HEADER_SIZE} bytes, header says {length}"
        )
    payload = memoryview(data)[HEADER_SIZE:]
    if zlib.crc32(payload) != payload_crc:
        raise SnapshotCorrupt(path, HEADER_SIZE, "payload checksum mismatch")
    try:
        state = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise SnapshotCorrupt(path, HEADER_SIZE, f"undecodable payload: {exc}") from exc
    if state.seq != seq:
        raise SnapshotCorrupt(path, HEADER_SIZE, f"payload is at {state.seq}, header says {seq}")
    try:
        return seq, _core(state)
    except (KeyError, ValueError) as exc:
        raise SnapshotCorrupt(path, HEADER_SIZE, f"inconsistent state: {exc!r}") from exc


def restore(data: bytes) -> ExchangeCore:
    """The core held in snapshot bytes (see ``load`` for its sequence number)."""
    return load(data)[1]


def _book(state: _Book, orders: dict[int, Order], placed: set[int]) -> OrderBook:
    book = OrderBook()
    sides = (
        (Side.BUY, state.bids, book.bids, book.bid_prices),
        (Side.SELL, state.asks, book.asks, book.ask_prices),
    )
    for side, saved_levels, levels, prices in sides:
        for saved in saved_levels:
            level = Level(saved.price)
            for order_id in saved.order_ids:
                order = orders[order_id]
                if (
                    order_id in placed
                    or order.price != saved.price
                    or order.side is not side
                    or order.instrument_id != state.instrument_id
                ):
                    raise ValueError(f"order {order_id} misplaced at {side} {saved.price}")
                placed.add(order_id)
                level.queue.append(order)
                level.total += order.leaves
            level.count = len(level.queue)
            if not level.count:
                raise ValueError(f"empty level at price {saved.price}")
            levels[saved.price] = level
            prices.add(saved.price)
    book.best_bid = book.bid_prices[-1] if book.bid_prices else 0
    book.best_ask = book.ask_prices[0] if book.ask_prices else 0
    if (book.best_bid, book.best_ask) != (state.best_bid, state.best_ask):
        raise ValueError(f"best prices of {state.instrument_id} do not match their levels")
    return book


def _core(state: _StateV1) -> ExchangeCore:
    core = ExchangeCore()
    core.accounts = {a.account_id: Account.from_state(a) for a in state.accounts}
    strays = [o.order_id for o in state.orders if o.account not in core.accounts]
    if strays:
        raise ValueError(f"orders of unknown accounts: {strays[:10]}")
    orders = {o.order_id: Order.from_state(o, core.accounts[o.account]) for o in state.orders}
    placed: set[int] = set()
    core.now = state.now
    core.instruments = {i.spec.instrument_id: Instrument.from_state(i) for i in state.instruments}
    core.books = {b.instrument_id: _book(b, orders, placed) for b in state.books}
    if placed != orders.keys():
        raise ValueError(f"orders not on any book: {sorted(orders.keys() - placed)[:10]}")
    core.orders = orders
    core.programmes = {p.programme_id: p for p in state.programmes}
    core.vouchers = {v.voucher_id: v for v in state.vouchers}
    core.claims = IdTable((c.claim_id, c) for c in state.claims)
    core.contracts = IdTable((t.trade_id, t) for t in state.contracts)
    core.deposited = state.deposited
    core.next_order_id = state.next_order_id
    core.next_trade_id = state.next_trade_id
    core.next_voucher_id = state.next_voucher_id
    core.next_claim_id = state.next_claim_id
    core.next_priority = state.next_priority
    core.expiries = list(state.expiries)
    core.closings = list(state.closings)
    return core


# --- files -----------------------------------------------------------------------


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.snap"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """(seq, path) of every snapshot file, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for entry in os.scandir(directory):
        match = _NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), Path(entry.path)))
    found.sort()
    return found


def _partial_name(path: Path) -> str:
    return f".{path.name}.tmp"


def write_snapshot(directory: Path, seq: int, data: bytes) -> Path:
    """Write captured bytes as ``snapshot-<seq>.snap``: whole or not at all."""
    directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    path = directory / snapshot_name(seq)
    tmp = directory / _partial_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_directory(directory)
    return path


def remove_partial_snapshots(directory: Path) -> list[Path]:
    """Delete what writers that died mid-write left (never a finished snapshot)."""
    partial = sorted(directory.glob(_partial_name(Path("snapshot-*.snap"))))
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def read_snapshot(path: Path) -> tuple[int, ExchangeCore]:
    """(seq, core) from a snapshot file; ``SnapshotCorrupt`` names the file if it is damaged."""
    seq, core = load(path.read_bytes(), path)
    match = _NAME.match(path.name)
    if match and int(match.group(1)) != seq:
        raise SnapshotCorrupt(
            path, 16, f"holds command {seq}, file name says {int(match.group(1))}"
        )
    return seq, core


__all__ = [
    "FORMAT_VERSION",
    "SnapshotCorrupt",
    "SnapshotError",
    "capture",
    "digest",
    "list_snapshots",
    "load",
    "read_snapshot",
    "restore",
    "snapshot_name",
    "write_snapshot",
]

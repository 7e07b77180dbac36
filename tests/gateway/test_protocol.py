"""The wire protocol without sockets: decoding, documents, checksums, limits."""

from __future__ import annotations

import random
import stat
import zlib
from pathlib import Path

import msgspec

from exchange.book import Order, OrderBook
from exchange.core import ExchangeCore
from exchange.reasons import CancelReason, Reason
from exchange.records import Account
from exchange.reference import Role, Side, TimeInForce
from gateway import protocol as p
from gateway.auth import PERMISSIONS, KeyStore
from gateway.marketdata import MarketData, book_checksum
from gateway.protocol_doc import render_protocol_md
from gateway.session import TokenBucket

DOCS = Path(__file__).resolve().parents[2] / "docs"
SEED = 1729


def test_committed_schema_is_the_generated_one() -> None:
    assert (DOCS / "protocol.schema.json").read_text() == p.json_schema_text(), (
        "run: python -m gateway.protocol_doc"
    )


def test_protocol_md_reference_is_the_generated_one() -> None:
    current = (DOCS / "protocol.md").read_text()
    assert render_protocol_md(current) == current, "run: python -m gateway.protocol_doc"
    for tag in (*p.REQUEST_TYPES, *p.SERVER_TYPES):
        assert f"`{tag}`" in current


def test_every_reason_has_text_and_every_request_a_permission() -> None:
    assert set(Reason) | set(CancelReason) <= set(p.REASON_TEXT)
    assert set(PERMISSIONS) == set(p.REQUEST_TYPES.values())
    assert set(p.CloseCode) <= set(p.CLOSE_REASONS) | {p.CloseCode.MESSAGE_TOO_BIG}


def test_every_request_type_decodes_or_names_its_missing_field() -> None:
    for tag, cls in p.REQUEST_TYPES.items():
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        decoded = p.decode_request(msgspec.json.encode({"type": tag, "id": tag}))
        if any(f.required for f in info.fields):
            assert isinstance(decoded, p.ProtocolError), tag
            assert (decoded.code, decoded.id) == (p.ErrorCode.MISSING_FIELD, tag)
        else:
            assert isinstance(decoded, cls) and decoded.id == tag
    order = p.NewOrder(id="a", client_order_id="c", instrument_id="i", side=Side.BUY, qty=8)
    assert p.decode_request(p.encode_request(order)) == order


def test_decode_errors_are_values_with_the_request_id() -> None:
    assert p.decode_request(b"{").code is p.ErrorCode.BAD_JSON  # type: ignore[union-attr]
    error = p.decode_request(b'{"type": "cancel_order", "id": "x", "order_id": "1"}')
    assert isinstance(error, p.ProtocolError)
    assert (error.code, error.id) == (p.ErrorCode.INVALID_FIELD, "x")
    error = p.decode_request(b'{"type": "new_order", "id": 9, "qty": 1}')
    assert isinstance(error, p.ProtocolError) and error.code is p.ErrorCode.MISSING_FIELD


def test_checksum_format() -> None:
    assert book_checksum([], [], 10) == zlib.crc32(b"|")
    bids = [(1000, 16), (990, 8)]
    asks = [(1010, 24)]
    assert book_checksum(bids, asks, 10) == zlib.crc32(b"1000:16,990:8|1010:24")
    assert book_checksum(bids, asks, 1) == zlib.crc32(b"1000:16|1010:24")


def _order(side: Side, price: int, leaves: int) -> Order:
    return Order(
        Account(account_id="a", role=Role.STARTUP),
        order_id=0,
        account="a",
        client_order_id="c",
        instrument_id="X",
        side=side,
        price=price,
        qty=leaves,
        leaves=leaves,
        tif=TimeInForce.GTC,
        expire_at=0,
    )


def test_updates_rebuild_the_published_book_exactly() -> None:
    """Random books: applying each update to the last published book gives the next."""
    print(f"seed={SEED}")
    rng = random.Random(SEED)
    core = ExchangeCore()
    book = OrderBook()
    core.books["X"] = book
    md = MarketData(core, depth=5, checksum_depth=3)
    copy: dict[Side, dict[int, int]] = {Side.BUY: {}, Side.SELL: {}}
    resting: list[Order] = []
    for step in range(2_000):
        if resting and rng.random() < 0.45:
            book.remove(resting.pop(rng.randrange(len(resting))))
        else:
            side = rng.choice((Side.BUY, Side.SELL))
            price = rng.randint(90, 100) if side is Side.BUY else rng.randint(101, 111)
            order = _order(side, price, rng.randint(1, 5))
            book.add(order)
            resting.append(order)
        update = md.refresh("X")
        if update is None:
            continue
        for side, levels in ((Side.BUY, update.bids), (Side.SELL, update.asks)):
            for price, qty in levels:
                if qty:
                    copy[side][price] = qty
                else:
                    del copy[side][price]
        bids = sorted(copy[Side.BUY].items(), reverse=True)
        asks = sorted(copy[Side.SELL].items())
        assert bids == book.depth(Side.BUY, 5), step
        assert asks == book.depth(Side.SELL, 5), step
        assert update.checksum == book_checksum(bids, asks, 3)
        assert update.seq == md.feed("X").seq


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] = 100.0  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3


def test_keys_are_stored_hashed_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    key = store.issue("su1", now=1)
    assert store.verify(key) == ("su1", key.split("_")[1])
    assert key.split("_")[2] not in path.read_text()  # the secret is never stored
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # hashes, but only the owner's
    again = KeyStore(path)
    assert again.verify(key) is not None
    assert again.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    again.revoke(key.split("_")[1])
    assert KeyStore(path).verify(key) is None

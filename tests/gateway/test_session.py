"""A session's output queue against a socket that stops taking bytes, or keeps
taking them."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiohttp import web

from benchmarks.gateway import take_frames
from gateway import protocol as p
from gateway.marketdata import MarketData
from gateway.metrics import Metrics
from gateway.session import Session, SessionLimits

LOW, HIGH = 16_384, 65_536
HARD = 48
REPORT = b'{"type":"execution_report"}' + b" " * 400  # about a report's size


class Socket:
    """A transport whose reader stopped: it buffers what it is given, and the
    kernel took only ``taken`` bytes of it, once (``taken`` < 0: all, always).
    ``read`` is the reader taking bytes again."""

    def __init__(self, taken: int) -> None:
        self.buffered = 0
        self.taken = taken
        self.aborted = False
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data
        if self.taken < 0:  # a reader that keeps up: the kernel takes it all
            return
        self.buffered += len(data)
        self.buffered -= min(self.taken, self.buffered)
        self.taken = 0

    def read(self, size: int = HIGH) -> None:
        self.buffered -= min(size, self.buffered)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return LOW, HIGH

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class Ws:
    async def close(self, *, code: int, message: bytes) -> None:
        pass


class Drain:
    """Stands in for the stream writer's ``drain``: returns once ``resume`` is
    called, as aiohttp's does when the transport resumes writing."""

    def __init__(self, error: Exception | None = None) -> None:
        self.waiting = 0
        self.error = error
        self._resumed = asyncio.Event()

    async def __call__(self) -> None:
        self.waiting += 1
        if self.error is not None:
            raise self.error
        await self._resumed.wait()
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()


class Book:
    """Stands in for MarketData: the published book is just its ``seq``."""

    def __init__(self) -> None:
        self.seq = 0

    def snapshot_bytes(self, instrument_id: str) -> bytes:
        return b"snapshot %d" % self.seq


async def _session(taken: int, marketdata: Any = None, **extra: Any) -> tuple[Session, Socket]:
    socket = Socket(taken)
    session = Session(
        1,
        cast(web.WebSocketResponse, Ws()),
        SessionLimits(outbox_soft=8, outbox_hard=HARD),
        cast(MarketData, marketdata),
        transport=cast(Any, socket),
        **extra,
    )
    session.start()
    return session, socket


async def _behind(taken: int = 0, marketdata: Any = None, **extra: Any) -> tuple[Session, Socket]:
    """A session whose socket filled up with a batch of 200 reports."""
    session, socket = await _session(taken, marketdata, **extra)
    for _ in range(200):
        session.send(REPORT)
    session.write_now()
    assert socket.buffered > LOW and session.outbox
    return session, socket


async def _written_more(socket: Socket, before: int) -> None:
    """Wait for the writer task to write again (it polls a drained socket)."""
    async with asyncio.timeout(5):
        while len(socket.written) == before:
            await asyncio.sleep(0.001)


async def test_a_reader_that_stops_is_closed_when_the_queue_grows_outbox_hard_past_its_low() -> (
    None
):
    # The socket took 5 KB of the write that filled it and nothing since: its
    # buffer sits below the high mark, above the low one, and never drains.
    session, socket = await _behind(taken=5_000)
    assert LOW < socket.buffered < HIGH
    for _ in range(HARD):  # what the batch left is being read; HARD more may wait
        session.send(REPORT)
    assert not session.closing
    session.send(REPORT)
    assert session.closing and session.close_code == p.CloseCode.SLOW_CONSUMER
    await session.wait_closed()


async def test_a_long_queue_behind_a_socket_that_drains_is_not() -> None:
    session, socket = await _session(taken=0)
    for _ in range(1_000):  # one batch can queue a thousand reports at once
        session.send(REPORT)
    assert not session.closing  # nothing was written yet: the socket is not full
    session.write_now()
    assert socket.buffered >= HIGH and session.outbox
    socket.buffered = 0  # the reader caught up
    await asyncio.sleep(0.05)  # the writer task sees it drained and writes the rest
    assert not session.closing and session.sent > 150
    session.abandon()
    await session.wait_closed()


async def test_a_reader_that_keeps_up_is_no_slow_consumer_however_long_its_reply() -> None:
    # A reply of 20 times outbox_hard fills the socket; live messages keep
    # coming behind it, HARD / 2 a batch, while the client reads all it gets.
    session, socket = await _session(taken=0)
    for _ in range(20 * HARD):
        session.send(REPORT)
    session.write_now()
    live = 0
    while session.outbox:
        for _ in range(HARD // 2):
            session.send(REPORT)
            live += 1
        session.write_now()  # the owner's write after a batch: the writer has it
        assert not session.closing, f"closed with {len(session.outbox)} queued, {live} live"
        before = len(socket.written)
        socket.read()
        await _written_more(socket, before)
    assert not session.closing and session.sent == 20 * HARD + live
    session.abandon()
    await session.wait_closed()


@pytest.mark.parametrize("reading", [True, False], ids=["reading", "stopped"])
async def test_a_snapshot_asked_for_while_behind_is_allowed_only_to_a_reader(
    reading: bool,
) -> None:
    session, socket = await _behind()
    for _ in range(HARD - 8):  # live messages queued before the snapshot count
        session.send(REPORT)
    if reading:
        socket.read(HIGH - LOW)  # the client took a socket's worth since the socket filled
    with session.reply():
        for _ in range(5 * HARD):
            session.send(REPORT)
    assert session.closing is not reading
    if reading:
        for _ in range(8):  # and so do those after it
            session.send(REPORT)
        assert not session.closing
        session.send(REPORT)
        assert session.closing and session.close_code == p.CloseCode.SLOW_CONSUMER
    await session.wait_closed()


async def test_a_client_that_stopped_reading_has_one_batch_of_snapshots_allowed() -> None:
    session, socket = await _behind()
    socket.read(HIGH - LOW)
    for _ in range(2):  # one batch: both allowed
        with session.reply():
            for _ in range(5 * HARD):
                session.send(REPORT)
    assert not session.closing
    session.write_now()  # the batch ends; the client has read nothing since
    with session.reply():
        for _ in range(HARD + 1):
            session.send(REPORT)
    assert session.closing and session.close_code == p.CloseCode.SLOW_CONSUMER
    await session.wait_closed()


async def test_a_book_subscribed_again_while_behind_never_goes_back_to_an_older_state() -> None:
    book = Book()
    session, socket = await _session(taken=0, marketdata=book)
    subscription = (p.Channel.BOOK, "X")
    session.subscriptions.add(subscription)
    session.send_book_snapshot("X", book.snapshot_bytes("X"))
    for _ in range(200):
        session.send(REPORT)
    session.write_now()  # the socket is full: the session is behind
    book.seq = 1
    assert session.send_book("X", b"update 1")  # conflated: a mark waits for the book
    # The client unsubscribes and subscribes again, as the router handles it.
    session.subscriptions.discard(subscription)
    session.subscriptions.add(subscription)
    session.send_book_snapshot("X", book.snapshot_bytes("X"))
    book.seq = 2
    assert session.send_book("X", b"update 2")  # conflated again, behind the snapshot
    async with asyncio.timeout(5):
        while session.outbox:
            socket.read()
            await asyncio.sleep(0.002)
    states = [
        int(payload.split()[1])
        for _, payload in take_frames(socket.written)
        if payload.startswith((b"snapshot", b"update"))
    ]
    assert states == [0, 1, 2]  # the mark queued before the resubscription was dropped
    session.abandon()
    await session.wait_closed()


async def test_every_message_goes_out_as_its_own_frame_in_order() -> None:
    session, socket = await _session(taken=-1)
    messages = [b"x" * size for size in (1, 125, 126, 3_000, 4_095)]
    for message in messages:
        session.send(message)
    session.write_now()  # messages only, all within the budget: framed in one pass
    session.send(b"y" * 70_000)  # above the budget and a two-byte length: one at a time
    session.ping()
    session.send(b"z")
    session.write_now()  # the big one spends the budget: the writer task sends the rest
    await asyncio.sleep(0.05)
    frames = take_frames(socket.written)
    assert frames == [
        *((0x1, m) for m in messages),
        (0x1, b"y" * 70_000),
        (0x9, b""),
        (0x1, b"z"),
    ]
    assert not socket.written and session.sent == len(messages) + 2
    session.abandon()
    await session.wait_closed()


async def test_a_backed_up_writer_writes_again_as_soon_as_the_socket_drains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Polling alone would not look again for a minute: only the drain wakes it.
    monkeypatch.setattr("gateway.session._DRAIN_POLL", 60.0)
    drain = Drain()
    session, socket = await _behind(drain=drain)
    await asyncio.sleep(0.01)
    assert drain.waiting == 1
    before = len(socket.written)
    socket.read(2 * HIGH)  # the reader caught up and the transport resumed writing
    drain.resume()
    await _written_more(socket, before)
    assert session.sent > 150 and not session.closing
    session.abandon()
    await session.wait_closed()


async def test_a_writer_whose_connection_is_lost_while_it_waits_stops_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.session._DRAIN_POLL", 60.0)
    session, socket = await _behind(drain=Drain(ConnectionResetError("reset")))
    writer = session._writer
    assert writer is not None
    async with asyncio.timeout(5):
        await asyncio.wait({writer})
    assert writer.exception() is None and socket.buffered > LOW
    session.abandon()
    await session.wait_closed()


async def test_messages_written_are_counted_for_metrics() -> None:
    metrics = Metrics()
    session, _ = await _session(taken=-1, metrics=metrics)
    for _ in range(7):
        session.send(REPORT)
    session.write_now()
    assert metrics.messages_sent == 7 == session.sent
    assert "\nsuanli_messages_sent_total 7\n" in metrics.render()
    session.abandon()
    await session.wait_closed()

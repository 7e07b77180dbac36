"""A session's output queue against a socket that stops taking bytes."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiohttp import web

from benchmarks.gateway import take_frames
from gateway import protocol as p
from gateway.marketdata import MarketData
from gateway.session import Session, SessionLimits

LOW, HIGH = 16_384, 65_536
REPORT = b'{"type":"execution_report"}' + b" " * 400  # about a report's size


class Socket:
    """A transport whose reader stopped: it buffers what it is given, and the
    kernel took only ``taken`` bytes of it, once (``taken`` < 0: all, always)."""

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


async def _session(taken: int) -> tuple[Session, Socket]:
    socket = Socket(taken)
    session = Session(
        1,
        cast(web.WebSocketResponse, Ws()),
        SessionLimits(outbox_soft=8, outbox_hard=48),
        cast(MarketData, None),
        transport=cast(Any, socket),
    )
    session.start()
    return session, socket


async def test_a_long_queue_behind_a_socket_just_under_its_high_mark_is_a_slow_consumer() -> None:
    # The socket took 5 KB of the write that filled it and nothing since: its
    # buffer sits below the high mark, above the low one, and never drains.
    session, socket = await _session(taken=5_000)
    for _ in range(200):
        session.send(REPORT)
    session.write_now()
    assert LOW < socket.buffered < HIGH and session.outbox
    for _ in range(48):
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

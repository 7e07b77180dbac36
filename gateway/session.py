"""One WebSocket connection: who it is, what it may send, what waits to go out.

A session owns an outbound queue. Everything sent to the client goes through
``send`` (in order); after each batch the owner calls ``write_now``, which puts
every queued frame into the socket in one write, and a writer task takes over
only while the socket is backed up. Two kinds of message are conflated, so a
slow reader gets the latest state instead of a growing backlog:

* **Book updates.** While the queue holds fewer than ``outbox_soft`` messages,
  updates are queued as they come. Beyond that, the session queues a *mark*
  for the instrument instead, drops every further update for it, and when the
  writer reaches the mark it sends a fresh ``book_snapshot`` of the book as
  published at that moment. The client's next update then follows that
  snapshot's ``seq``; it never sees a stale book. A new subscription's
  snapshot drops a mark still queued for the book (``send_book_snapshot``),
  which would otherwise send a newer book ahead of it.
* **Tickers.** Only the latest ticker of an instrument waits in the queue.

``ping`` queues a WebSocket ping control frame in the same queue, so it goes
out between whole frames and in order with the rest.

Messages that cannot be conflated (execution reports, trades, balances) are
never dropped. A slow consumer is one that does not read, not one that asked
for a lot. While the socket is backed up, the queue may grow at most
``outbox_hard`` messages above the lowest it has been since the socket filled
up. What was queued when it filled (a snapshot, a ``cancel_all``'s reports,
any burst) is thus the reply the client is reading, and a snapshot or a long
command answer it asks for while behind (``reply``) is added to that if it has
read a socket's worth since the last one was. A reader that keeps up keeps its connection however
large the reply and however many live messages queue behind it meanwhile (the
queue shrinks); a reader that stops, or reads slower than messages come, sees
its queue grow, and ``outbox_hard`` messages later the session closes with
``4003 slow consumer``.

Inbound, each request takes a token from a bucket (``rate_limit`` per second,
``rate_burst`` at most); a request with no token is dropped and answered with
``RATE_LIMITED``. Every refused frame counts as a strike; ``abuse_limit``
strikes within ``abuse_window`` seconds close the connection with ``4002``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator

import msgspec
import structlog
from aiohttp import web

from gateway import protocol as p
from gateway.auth import Principal
from gateway.marketdata import MarketData
from gateway.metrics import Metrics


class SessionLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-connection limits (see the module doc and docs/protocol.md)."""

    rate_limit: float = 200.0
    rate_burst: int = 400
    max_frame_bytes: int = 64 * 1024
    abuse_limit: int = 50
    abuse_window: float = 60.0
    outbox_soft: int = 256
    outbox_hard: int = 4096
    heartbeat_interval: float = 10.0
    idle_timeout: float = 30.0
    close_timeout: float = 2.0
    socket_send_buffer: int = 0  # bytes of kernel send buffer per connection; 0: the OS default


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("burst", "clock", "rate", "stamp", "tokens")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.stamp = clock()

    def take(self) -> bool:
        """Take a token now, if there is one."""
        return self.take_at(self.clock())

    def take_at(self, now: float) -> bool:
        """``take`` at ``now``, a reading of the bucket's clock the caller already has."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


_DRAIN_POLL = 0.01  # seconds between looks at a full transport buffer


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked, final WebSocket text frame (RFC 6455, section 5.2).

    The server writes its frames itself so that many can go out in one write;
    compression is off, so no extension bits are ever set.
    """
    if length < 126:
        return bytes((0x81, length))
    if length < 65_536:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


_SMALL_FRAME = 4096
_HEADERS = [text_frame_header(size) for size in range(_SMALL_FRAME)]  # made once, used per frame

# A queued item: encoded bytes to send, or a conflation mark (kind, instrument id).
_Item = bytes | tuple[str, str]
_BOOK = "book"
_TICKER = "ticker"
_PING = ("ping", "")  # a queued ping control frame (a mark, so it gets no text header)
_PING_FRAME = b"\x89\x00"  # final ping frame, empty payload, unmasked (RFC 6455, 5.5.2)


class Session:
    """State of one connection. Create it, ``start`` it, feed it, ``close`` it."""

    def __init__(
        self,
        conn_id: int,
        ws: web.WebSocketResponse,
        limits: SessionLimits,
        marketdata: MarketData,
        *,
        transport: asyncio.Transport,
        remote: str = "",
        on_pending: Callable[[Session], None] | None = None,
        on_close: Callable[[Session], None] | None = None,
        drain: Callable[[], Awaitable[None]] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.ws = ws
        self.limits = limits
        self.marketdata = marketdata
        self.remote = remote
        self.transport = transport
        self.principal: Principal | None = None
        self.subscriptions: set[tuple[p.Channel, str]] = set()
        self.log = structlog.get_logger("gateway.session").bind(conn_id=conn_id, remote=remote)
        self.outbox: deque[_Item] = deque()
        self.marked: set[tuple[str, str]] = set()
        self.latest_ticker: dict[str, bytes] = {}
        self.bucket = TokenBucket(limits.rate_limit, limits.rate_burst)
        self.strikes: deque[float] = deque()
        self.last_received = time.monotonic()
        self.closing = False
        self.close_code: int | None = None
        self.sent = 0
        self.conflated = 0
        self._wake = asyncio.Event()
        self._draining_for_close = False
        self._pending = False  # output queued and the owner told (on_pending)
        self._backed_up = False  # the writer task waits for the socket to drain
        # The queue length that makes a backed-up session a slow consumer (see ``send``).
        self._limit = limits.outbox_hard
        self._written = 0  # bytes given to the transport
        self._batch = 0  # write_now calls: replies of one batch share an allowance
        self._allowed_at = (0, -1)  # (bytes taken, batch) when a reply was last allowed
        self._on_pending = on_pending
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._on_close = on_close
        self._drain = drain
        self._metrics = metrics

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.conn_id}")

    def authenticate(self, principal: Principal) -> None:
        self.principal = principal
        self.log = self.log.bind(account=principal.account_id, role=principal.role.value)

    def close(self, code: int, reason: str = "", *, drain: bool = False) -> None:
        """Close the connection soon with ``code``.

        With ``drain`` the messages already queued go out first (an error that
        explains the close, say); without it they are dropped.
        """
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        if not drain:
            self.outbox.clear()
            self.marked.clear()
        text = reason or p.CLOSE_REASONS.get(code, "")  # type: ignore[call-overload]
        self.log.info("closing", code=code, reason=text)
        self._closer = asyncio.create_task(
            self._close(code, text, drain), name=f"ws-close-{self.conn_id}"
        )
        if self._on_close is not None:
            # Later, not now: the caller may be iterating over a set of sessions.
            asyncio.get_running_loop().call_soon(self._on_close, self)

    async def _close(self, code: int, reason: str, drain: bool) -> None:
        writer = self._writer
        try:
            if drain:
                self._draining_for_close = True
                self.write_now()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.limits.close_timeout):
                        while self.outbox and writer is not None and not writer.done():
                            await asyncio.sleep(_DRAIN_POLL)
            if writer is not None:
                writer.cancel()
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()), self.limits.close_timeout
            )
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.abort()

    def abandon(self) -> None:
        """The connection is gone: stop writing and drop the queue."""
        self.closing = True
        self.outbox.clear()
        self.marked.clear()
        if self._writer is not None:
            self._writer.cancel()

    async def wait_closed(self) -> None:
        """Wait for the writer and the closing handshake to finish."""
        for task in (self._writer, self._closer):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # --- outbound ----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue one encoded message; close the session if it cannot keep up.

        Cheap, as it runs for every report: the queue's length against
        ``_limit``, then the flag the writer sets while it waits for the
        socket. The writer keeps ``_limit`` at ``outbox_hard`` above the
        lowest the queue has been since the socket filled (see the module
        doc): a long queue alone is no sign of a slow reader, a queue that
        keeps growing behind a socket that takes no more is.
        """
        if self.closing:
            return
        outbox = self.outbox
        outbox.append(data)
        if len(outbox) > self._limit and self._backed_up:
            self.close(p.CloseCode.SLOW_CONSUMER)
            return
        if not self._pending:
            self._queued()

    def _queued(self) -> None:
        if not self._pending:
            self._pending = True
            if self._on_pending is not None:
                self._on_pending(self)
            else:
                asyncio.get_running_loop().call_soon(self.write_now)

    @contextlib.contextmanager
    def reply(self) -> Iterator[None]:
        """Queue, inside the block, a reply the client asked for (a snapshot, a
        long command answer such as a ``cancel_all``'s reports).

        While the socket is backed up, the reply raises the slow-consumer
        limit by its length if the client is reading: it has read a socket's
        worth (the transport's high minus low water mark) since the last reply
        was allowed, or that reply came in this same batch. Messages queued
        before or after it still count. A client that stops reading gets at
        most one batch of replies allowed: asking for snapshots cannot keep a
        stalled connection open, nor grow its queue without bound.
        """
        limit = self._limit
        before = len(self.outbox)
        self._limit = sys.maxsize  # not judged halfway through its own reply
        try:
            yield
        finally:
            if not self.closing:
                added = len(self.outbox) - before
                if self._backed_up and added > 0 and self._reading():
                    limit += added
                    self._allowed_at = (self._taken(), self._batch)
                self._limit = limit
                if len(self.outbox) > limit and self._backed_up:
                    self.close(p.CloseCode.SLOW_CONSUMER)

    def _taken(self) -> int:
        """Bytes of this session's frames the kernel has taken so far."""
        return self._written - self.transport.get_write_buffer_size()

    def _reading(self) -> bool:
        """Has the client read a socket's worth since the last reply was allowed
        (or is this reply in the same batch as that one)?"""
        taken, batch = self._allowed_at
        if batch == self._batch:
            return True
        low, high = self.transport.get_write_buffer_limits()
        return self._taken() - taken >= high - low

    def send_message(self, message: p.ServerMessage) -> None:
        self.send(p.encode(message))

    def send_book(self, instrument_id: str, data: bytes) -> bool:
        """Queue a book update, or a conflation mark if the session is behind.

        True if the update was conflated (the router counts them for
        ``suanli_book_conflations_total``).
        """
        if self.closing:
            return False
        key = (_BOOK, instrument_id)
        if key in self.marked:
            self.conflated += 1
            return True
        if len(self.outbox) >= self.limits.outbox_soft:
            self.marked.add(key)
            self.conflated += 1
            self.outbox.append(key)
            self._queued()
            return True
        self.outbox.append(data)
        self._queued()
        return False

    def send_book_snapshot(self, instrument_id: str, data: bytes) -> None:
        """Queue a subscription's book snapshot, the state its updates follow.

        A conflation mark still queued for the book (from an earlier
        subscription) is dropped first: resolved only when written, to the book
        as it is then, it would deliver a newer book ahead of this older one.
        """
        self._drop_mark((_BOOK, instrument_id))
        self.send(data)

    def send_ticker_snapshot(self, instrument_id: str, data: bytes) -> None:
        """Queue a subscription's first ticker (a queued ticker mark would be newer)."""
        if self._drop_mark((_TICKER, instrument_id)):
            self.latest_ticker.pop(instrument_id, None)
        self.send(data)

    def _drop_mark(self, mark: tuple[str, str]) -> bool:
        """Take a queued conflation mark out of the queue; False if none is queued.

        A search of the queue, but only on a subscription while behind.
        """
        if mark not in self.marked:
            return False
        self.marked.discard(mark)
        self.outbox.remove(mark)  # the one queued mark equal to it (see ``marked``)
        return True

    def send_ticker(self, instrument_id: str, data: bytes) -> None:
        """Queue a ticker; a ticker still waiting for this instrument is replaced."""
        if self.closing:
            return
        self.latest_ticker[instrument_id] = data
        key = (_TICKER, instrument_id)
        if key in self.marked:
            return
        self.marked.add(key)
        self.outbox.append(key)
        self._queued()

    def ping(self) -> None:
        """Queue a WebSocket ping (at most one waits at a time).

        The session writes its frames to the transport itself, so the ping
        joins the queue instead of going through aiohttp's writer (a coroutine
        a ping): it goes out whole, in order, in the same write as the frames
        before it, and waits with them while the socket is backed up.
        """
        if self.closing or _PING in self.marked:
            return
        self.marked.add(_PING)
        self.outbox.append(_PING)
        self._queued()

    def _resolve(self, mark: tuple[str, str]) -> bytes:
        """The latest state a conflation mark stands for (b"" if nothing is due)."""
        self.marked.discard(mark)
        kind, instrument_id = mark
        if kind == _BOOK:
            if (p.Channel.BOOK, instrument_id) not in self.subscriptions:
                return b""
            return self.marketdata.snapshot_bytes(instrument_id)
        return self.latest_ticker.pop(instrument_id, b"")

    def write_now(self) -> None:
        """Move queued messages into the socket, as far as it takes them, in one write.

        Every message is its own WebSocket text frame, but all the frames that
        are ready go to the transport together: one system call per connection
        per batch, with no task switch, which is most of the cost of fan-out.
        The owner calls this once after each batch (``on_pending`` told it
        there was output). If the transport's buffer passes its high-water
        mark, the rest waits in the queue (where conflation and the
        slow-consumer limit apply) and the writer task takes over until the
        socket drains. What is left of a batch that fills the socket from a
        standing start is what the client is now reading: from there on the
        queue may grow ``outbox_hard`` messages above its lowest (``_write``).
        """
        self._pending = False
        self._batch += 1
        if self._backed_up:
            return
        if self._write():  # the socket filled up with this batch, from a standing start
            self._limit = len(self.outbox) + self.limits.outbox_hard
            self._allowed_at = (self._taken(), -1)  # a later reply must show reading

    def _write(self) -> bool:
        """``write_now``'s write, also the writer task's once the socket drained;
        True if the socket is now backed up."""
        if self.closing and not self._draining_for_close:
            return False
        transport = self.transport
        if transport.is_closing():
            return False
        outbox = self.outbox
        high = transport.get_write_buffer_limits()[1]
        budget = high - transport.get_write_buffer_size()
        data = b""
        count = 0
        if not self.marked and outbox:  # only messages (every mark queued is in marked)
            sizes = list(map(len, outbox))
            if sum(sizes) <= budget and max(sizes) < _SMALL_FRAME:
                # The usual case, framed without a Python step a message: each
                # header, then each message, slotted in turn.
                framed: list[bytes] = [b""] * (2 * len(sizes))
                framed[0::2] = map(_HEADERS.__getitem__, sizes)
                framed[1::2] = outbox  # type: ignore[assignment]  # no marks: bytes alone
                outbox.clear()
                data = b"".join(framed)
                count = len(sizes)
        if outbox:
            chunks: list[bytes] = []
            take = outbox.popleft
            append = chunks.append
            headers = _HEADERS
            while outbox and budget > 0:
                item = take()
                if isinstance(item, tuple):  # a conflation mark, or a ping
                    if item is _PING:
                        self.marked.discard(_PING)
                        append(_PING_FRAME)
                        budget -= 2
                        continue
                    message = self._resolve(item)
                    if not message:
                        continue
                else:
                    message = item
                size = len(message)
                append(headers[size] if size < _SMALL_FRAME else text_frame_header(size))
                append(message)
                budget -= size
                count += 1
            data = b"".join(chunks)
        if data:
            transport.write(data)
            self._written += len(data)
            self.sent += count
            if self._metrics is not None:
                self._metrics.messages_sent += count
        # The limit follows the queue down, never up: a queue that shrinks is read.
        floor = len(outbox) + self.limits.outbox_hard
        if floor < self._limit:
            self._limit = floor
        if outbox:
            self._backed_up = True
            self._wake.set()
            return True
        return False

    async def _write_loop(self) -> None:
        """While the socket is backed up: wait for it to drain, then write again."""
        wake = self._wake
        transport = self.transport
        drain = self._drain
        while True:
            await wake.wait()
            wake.clear()
            while self._backed_up:
                if drain is not None:
                    # Returns when the transport resumes writing (at its low mark),
                    # or at once if it never paused: a write that ended just short
                    # of the high mark leaves a buffer that only polling sees drain.
                    try:
                        await drain()
                    except ConnectionError:
                        return
                if transport.is_closing():
                    return
                if transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[0]:
                    self._backed_up = False
                    self._write()
                else:
                    await asyncio.sleep(_DRAIN_POLL)

    # --- inbound -----------------------------------------------------------------------

    def received(self, now: float) -> None:
        self.last_received = now

    def strike(self, now: float) -> bool:
        """Count a refused frame; True if the connection has now abused the protocol."""
        strikes = self.strikes
        strikes.append(now)
        horizon = now - self.limits.abuse_window
        while strikes and strikes[0] < horizon:
            strikes.popleft()
        return len(strikes) >= self.limits.abuse_limit

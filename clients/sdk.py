"""The asyncio Python SDK: one authenticated connection to a Suanli gateway.

    async with Client("http://127.0.0.1:8080", api_key) as client:
        report = await client.place_order("H800-SUZHOU-STATE-W1", Side.BUY, 64, 1_800)
        async with client.book("H800-SUZHOU-STATE-W1") as book:
            async for copy in book:          # a verified LocalBook after each change
                print(copy.best_bid(), copy.best_ask())

Every message is a Struct of ``gateway.protocol``, the same the gateway
encodes; nothing here is a hand-written dict. Money is integer fen, quantities
integer GPU-hours, times integer nanoseconds.

Contract
--------
* ``async with Client(url, key)`` opens the WebSocket (the key goes in the
  handshake's ``Authorization`` header), waits for ``welcome`` and returns
  the client. Leaving the block closes it.
* Each request method sends one request with a fresh ``id`` and returns the
  answer carrying that ``id``. A refusal raises a ``Refused`` subclass whose
  ``code`` is the server's reason code, unchanged: ``OrderRejected`` (an
  execution report ``REJECTED``), ``CancelRejected``, ``CommandRejected`` (an
  operator, issuer or provider request), ``GatewayError`` (refused before the
  exchange, e.g. ``RATE_LIMITED``) and ``HttpError`` (an HTTP query).
* Subscriptions are async iterators of typed messages. ``book()`` keeps a
  ``LocalBook`` that checks every sequence number and checksum and
  re-subscribes by itself on a gap or mismatch (logged as ``book_resync``).
* A connection is dead when it drops, fails, or falls silent: the gateway
  sends a heartbeat every ``heartbeat_interval_ms`` (from ``welcome``), and
  three intervals without any message mean a half-open socket.
* Then the client reconnects with exponential backoff, re-subscribes every
  channel (books wait for their new snapshot), and sends again every request
  still waiting for an answer that is safe to repeat: orders with the *same*
  ``client_order_id``, so the exchange refuses a second copy
  (``DUPLICATE_CLIENT_ORDER_ID``) and the client then reports the first
  copy's state instead; cancels, amends and cancel-alls, whose second copy
  is refused or finds less to do when the first took effect, so the client
  looks up the order's state and answers with that (see each method); and
  queries. Requests that are not idempotent (deposits, vouchers, listings,
  keys) fail with ``ConnectionLost`` instead: their outcome must be checked,
  not guessed.
* After reconnecting, the client reconciles ``orders`` (its view of every
  order it placed) with a mass status, and an order status of each order
  that was open and is no longer, so fills made while it was away are not
  lost. An order that finished while it was away *and* before the gateway
  restarted has no report left (``ORDER_FINISHED_BEFORE_RESTART``): it is
  marked no longer working (``ord_status`` ``CANCELLED``, ``leaves_qty`` 0,
  that code as ``reason``) with the fills last reported, and its
  ``client_order_id`` is added to ``outcome_unknown``: its final fills are
  in the account's contracts.

Balances, vouchers, contracts, claims and trade history are read over HTTP
(``/api/v1/...``, gateway/reports.py) with the same key; histories a page at
a time, newest first (``contracts``, ``trade_history``; ``every_contract``
reads every page).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, Self, TypeVar

import aiohttp
import msgspec
import structlog

from clients.localbook import Applied, LocalBook
from exchange.reasons import CancelReason
from exchange.reference import (
    EligibilityBasis,
    InstrumentSpec,
    InstrumentStatus,
    OrderType,
    Role,
    SelfTradePrevention,
    Side,
    Tier,
    TimeInForce,
)
from gateway import protocol as p

log = structlog.get_logger("clients.sdk")

M = TypeVar("M")

# --- errors ---------------------------------------------------------------------------


class SuanliError(Exception):
    """Anything the SDK raises."""


class ConnectionLost(SuanliError):
    """The connection dropped before the answer came, and the request is not safe to repeat."""


class RequestTimeout(SuanliError):
    """No answer within the request timeout."""


class AuthFailed(SuanliError):
    """The gateway refused the API key."""


class Refused(SuanliError):
    """The server refused a request. ``code`` is its reason code, unchanged."""

    def __init__(self, code: str, text: str, message: Any = None) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.message = message


class GatewayError(Refused):
    """Refused by the gateway (``error``): ``code`` is a ``protocol.ErrorCode``."""


class OrderRejected(Refused):
    """A new order was rejected: ``code`` is an ``exchange.reasons.Reason``."""


class CancelRejected(Refused):
    """A cancel, amend or cancel-all was refused (``cancel_reject``)."""


class CommandRejected(Refused):
    """An operator, issuer or provider request was refused by the exchange (``rejected``)."""


class HttpError(Refused):
    """An HTTP query was refused (``code`` is the JSON body's ``error``)."""


# --- HTTP views -----------------------------------------------------------------------


class InstrumentView(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``GET /api/v1/instruments``."""

    spec: InstrumentSpec
    status: InstrumentStatus
    last_price: int
    volume: int
    turnover: int
    trades: int
    best_bid: int
    best_ask: int


class OrderView(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``GET /api/v1/orders``: an order as the gateway keeps it."""

    order_id: int
    account: str
    client_order_id: str
    instrument_id: str
    side: Side | None
    order_type: OrderType | None
    tif: TimeInForce | None
    price: int
    qty: int
    cum_qty: int
    cum_value: int
    leaves: int
    voucher_id: int
    expire_at: int
    status: p.OrdStatus
    reason: str
    ts: int


REPORTS = ("open-interest", "volume", "voucher-usage", "claims", "price-index")


# --- reconnecting ---------------------------------------------------------------------


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """Delays between reconnection attempts: ``initial * factor**n``, capped, with jitter."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.2  # each delay is multiplied by a random factor in [1 - j, 1 + j]
    attempts: int = 0  # give up after this many failed attempts in a row; 0: never

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * self.factor**attempt)
        return base * (1 + self.jitter * (2 * rng.random() - 1))


# Requests whose repetition cannot change anything twice.
_REPEATABLE = (
    p.NewOrder,  # same client_order_id: a second copy is refused by the exchange
    p.CancelOrder,
    p.AmendOrder,  # sets absolute quantity and price
    p.CancelAll,
    p.MassStatus,
    p.OrderStatus,
    p.Ping,
    p.Subscribe,
    p.Unsubscribe,
)
# Requests answered by several messages, ended by a final one.
_MULTI = (p.CancelAll, p.MassStatus)
# Frames after which a connection yields nothing more.
_ENDS = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)
# Heartbeat intervals of silence after which a connection is taken for dead.
_SILENT_HEARTBEATS = 3


class _Pending:
    __slots__ = ("future", "generation", "messages", "request", "resent")

    def __init__(self, request: p.Request) -> None:
        self.request = request
        self.future: asyncio.Future[list[p.ServerMessage]] = (
            asyncio.get_running_loop().create_future()
        )
        self.messages: list[p.ServerMessage] = []
        self.generation = -1  # the connection it was last sent on
        self.resent = False

    def feed(self, message: p.ServerMessage) -> None:
        if self.future.done():
            return
        self.messages.append(message)
        if isinstance(self.request, _MULTI) and isinstance(message, p.ExecutionReport):
            return
        self.future.set_result(self.messages)


# --- subscriptions --------------------------------------------------------------------


class Subscription(Generic[M]):
    """Messages of one channel (or the private stream), as an async iterator.

    Use it as an async context manager; leaving the block unsubscribes.
    Messages queue up until read; ``closed`` ends the iteration.
    """

    def __init__(
        self,
        client: Client,
        channel: p.Channel | None,
        instrument_id: str,
        accepts: Callable[[p.ServerMessage], bool],
    ) -> None:
        self.client = client
        self.channel = channel
        self.instrument_id = instrument_id
        self.accepts = accepts
        self._queue: deque[M] = deque()
        self._wake = asyncio.Event()
        self.closed = False

    def put(self, message: M) -> None:
        self._queue.append(message)
        self._wake.set()

    async def get(self) -> M:
        """The next message; raises ``StopAsyncIteration`` once closed and drained."""
        while not self._queue:
            if self.closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        return self._queue.popleft()

    def pending(self) -> list[M]:
        """Every message queued and not yet read (taken off the queue)."""
        out = list(self._queue)
        self._queue.clear()
        return out

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> M:
        return await self.get()

    async def __aenter__(self) -> Self:
        await self.client._open_subscription(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        await self.client._close_subscription(self)

    def on_reconnect(self) -> None:
        """The connection was replaced; the channel is being subscribed again."""


class BookWatcher(Subscription[LocalBook]):
    """A verified local copy of one instrument's book; iterating yields it after each change.

    The copy is updated as messages arrive, whether or not anyone iterates;
    iteration is conflated: a slow reader sees the latest copy once.
    """

    def __init__(self, client: Client, instrument_id: str, checksum_depth: int) -> None:
        super().__init__(
            client,
            p.Channel.BOOK,
            instrument_id,
            lambda m: (
                isinstance(m, p.BookSnapshot | p.BookUpdate) and m.instrument_id == instrument_id
            ),
        )
        self.local = LocalBook(instrument_id, checksum_depth=checksum_depth)
        self.resyncs = 0
        self._changed = False

    def put(self, message: Any) -> None:
        outcome = self.local.apply(message)
        if outcome is Applied.RESYNC:
            self.resyncs += 1
            self.client.log.warning(
                "book_resync",
                instrument_id=self.instrument_id,
                problem=self.local.last_problem,
                resyncs=self.resyncs,
            )
            self.client._resubscribe(self)
        elif outcome in (Applied.SNAPSHOT, Applied.UPDATED):
            self._changed = True
            self._wake.set()

    async def get(self) -> LocalBook:
        while not self._changed:
            if self.closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        self._changed = False
        return self.local

    async def synced(self, timeout: float = 10.0) -> LocalBook:
        """Wait until the copy is in sync (a snapshot applied, no gap since)."""
        async with asyncio.timeout(timeout):
            while not self.local.synced:
                await self.get()
        return self.local

    def on_reconnect(self) -> None:
        self.local.invalidate("reconnected")


def _channel_filter(channel: p.Channel, instrument_id: str) -> Callable[[p.ServerMessage], bool]:
    match channel:
        case p.Channel.TRADES:
            return lambda m: isinstance(m, p.PublicTrade) and m.instrument_id == instrument_id
        case p.Channel.TICKER:
            return lambda m: isinstance(m, p.Ticker) and m.instrument_id == instrument_id
        case p.Channel.BOOK:
            return lambda m: (
                isinstance(m, p.BookSnapshot | p.BookUpdate) and m.instrument_id == instrument_id
            )
        case p.Channel.STATUS:
            return lambda m: isinstance(m, p.InstrumentInfo | p.InstrumentStatusChange)
        case p.Channel.ORDERS:
            return lambda m: isinstance(m, p.ExecutionReport)
        case p.Channel.ACCOUNTS:
            return lambda m: isinstance(m, p.Balance)
        case p.Channel.VOUCHERS:
            return lambda m: isinstance(m, p.VoucherBalance | p.Claim)
    raise ValueError(f"unknown channel {channel!r}")


_PRIVATE = (p.ExecutionReport, p.Balance, p.VoucherBalance, p.Contract, p.Claim)


# --- the client -----------------------------------------------------------------------


def _urls(url: str) -> tuple[str, str]:
    """(HTTP base, WebSocket URL) from either form of the gateway's address."""
    url = url.rstrip("/")
    if url.endswith("/ws"):
        url = url[:-3]
    if url.startswith("ws://"):
        url = "http://" + url[5:]
    elif url.startswith("wss://"):
        url = "https://" + url[6:]
    elif "://" not in url:
        url = "http://" + url
    ws = "ws" + url[4:] if url.startswith("http") else url
    return url, ws + "/ws"


class Client:
    """One connection to the gateway, reconnecting by itself. See the module doc."""

    def __init__(
        self,
        url: str,
        api_key: str = "",
        *,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        request_timeout: float = 10.0,
        name: str = "",
        seed: int | None = None,
        inbound: Callable[[p.ServerMessage], p.ServerMessage | None] | None = None,
    ) -> None:
        self.http_url, self.ws_url = _urls(url)
        self.api_key = api_key
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.request_timeout = request_timeout
        self.inbound = inbound  # fault injection for tests: drop (None) or alter a message
        self.log = log.bind(client=name or "client", url=self.http_url)
        self.welcome: p.Welcome | None = None
        self.orders: dict[str, p.ExecutionReport] = {}  # own orders by client_order_id
        # Orders that finished out of sight, before a gateway restart: final fills unknown.
        self.outcome_unknown: set[str] = set()
        self.reconnects = 0
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._coid_prefix = uuid.uuid4().hex[:12]  # never seeded: ids must not repeat
        self._coids = itertools.count(1)
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._generation = 0
        self._connected = asyncio.Event()
        self._pending: dict[int, _Pending] = {}
        self._subscriptions: list[Subscription[Any]] = []
        self._reader: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._failure: BaseException | None = None

    # --- life cycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def account_id(self) -> str:
        return self.welcome.account_id if self.welcome else ""

    @property
    def role(self) -> Role | None:
        return self.welcome.role if self.welcome else None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def connect(self) -> None:
        """Open the connection and wait for ``welcome``."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._http = aiohttp.ClientSession(headers=headers)
        try:
            await self._open()
        except BaseException:
            await self._http.close()
            raise
        self._reader = asyncio.create_task(self._read_loop(), name="suanli-client-reader")
        self._pinger = asyncio.create_task(self._keepalive(), name="suanli-client-keepalive")

    async def _open(self) -> None:
        assert self._http is not None
        try:
            ws = await self._http.ws_connect(self.ws_url, heartbeat=None, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise AuthFailed("the gateway refused the API key") from exc
            raise
        try:
            first = await asyncio.wait_for(ws.receive(), self.request_timeout)
            if first.type is not aiohttp.WSMsgType.TEXT:
                raise SuanliError(f"expected welcome, got {first.type.name}")
            welcome = p.decode_message(first.data)
            if not isinstance(welcome, p.Welcome):
                raise SuanliError(f"expected welcome, got {type(welcome).__name__}")
        except BaseException:
            await ws.close()
            raise
        self.welcome = welcome
        self._ws = ws
        self._generation += 1
        self._connected.set()
        self.log.info(
            "connected",
            account=welcome.account_id,
            conn_id=welcome.conn_id,
            reconnects=self.reconnects,
        )

    async def _keepalive(self) -> None:
        """Ping often enough that the gateway never finds the connection idle."""
        while not self._closing:
            welcome = self.welcome
            interval = 10.0
            if welcome is not None:
                interval = min(welcome.heartbeat_interval_ms, welcome.idle_timeout_ms / 3) / 1000
            await asyncio.sleep(max(interval, 0.05))
            if self._connected.is_set():
                with contextlib.suppress(SuanliError):
                    await self.request(p.Ping())

    async def close(self) -> None:
        """Close the connection; pending requests fail with ``ConnectionLost``."""
        if self._closing:
            return
        self._closing = True
        for sub in list(self._subscriptions):
            sub.closed = True
            sub._wake.set()
        if self._ws is not None:
            await self._ws.close()
        for task in (self._reader, self._pinger):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_pending(lambda _: True, ConnectionLost("client closed"))
        if self._http is not None:
            await self._http.close()

    async def drop_connection(self) -> None:
        """Close the socket as if the network failed (for tests); the client reconnects."""
        if self._ws is not None:
            await self._ws.close()

    # --- reading ------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                ws = self._ws
                assert ws is not None
                await self._read(ws)
                self._connected.clear()
                await _release(ws)
                if self._closing:
                    return
                self.log.warning("connection_lost", code=ws.close_code)
                self._fail_pending(
                    lambda q: q.generation != -1 and not isinstance(q.request, _REPEATABLE),
                    ConnectionLost("the connection dropped before the answer; check the outcome"),
                )
                if not self.reconnect:
                    self._fail_pending(lambda _: True, ConnectionLost("connection closed"))
                    for sub in self._subscriptions:
                        sub.closed = True
                        sub._wake.set()
                    return
                await self._reconnect()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._failure = exc
            self.log.error("client_failed", error=repr(exc))
            self._fail_pending(lambda _: True, ConnectionLost(f"client failed: {exc!r}"))
            for sub in self._subscriptions:
                sub.closed = True
                sub._wake.set()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Dispatch one connection's messages until it closes, fails or falls silent."""
        while True:
            try:
                msg = await ws.receive(timeout=self._silence_limit())
            except TimeoutError:
                # The gateway sends a heartbeat every interval: a connection this
                # quiet is dead (a half-open socket would otherwise wait forever).
                self.log.warning("connection_silent", seconds=self._silence_limit())
                return
            except (aiohttp.ClientError, ConnectionError) as exc:
                # aiohttp answers a ping inside receive(); on a socket the peer has
                # already closed, that write raises rather than reporting a close.
                self.log.info("connection_failed", error=repr(exc))
                return
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    message = p.decode_message(msg.data)
                except msgspec.DecodeError as exc:
                    self.log.error("undecodable_message", error=str(exc))
                    continue
                self._dispatch(message)
            elif msg.type in _ENDS:
                return

    def _silence_limit(self) -> float | None:
        """Seconds without a message from the gateway after which the connection is dead."""
        if self.welcome is None or self.welcome.heartbeat_interval_ms <= 0:
            return None
        return _SILENT_HEARTBEATS * self.welcome.heartbeat_interval_ms / 1000

    async def _reconnect(self) -> None:
        attempt = 0
        while True:
            delay = self.backoff.delay(attempt, self._rng)
            self.log.info("reconnecting", attempt=attempt + 1, delay=round(delay, 3))
            await asyncio.sleep(delay)
            try:
                await self._open()
                break
            except AuthFailed:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, SuanliError) as exc:
                attempt += 1
                self.log.info("reconnect_failed", attempt=attempt, error=repr(exc))
                if self.backoff.attempts and attempt >= self.backoff.attempts:
                    raise ConnectionLost(f"gave up after {attempt} attempts") from exc
        self.reconnects += 1
        for sub in self._subscriptions:
            if sub.channel is not None:
                sub.on_reconnect()
                self._resubscribe(sub)
        for pending in list(self._pending.values()):
            pending.resent = pending.generation != -1
            self._spawn(self._send(pending))
        self._spawn(self._reconcile())

    def _dispatch(self, message: p.ServerMessage) -> None:
        if self.inbound is not None:
            altered = self.inbound(message)
            if altered is None:
                return
            message = altered
        if isinstance(message, p.ExecutionReport):
            self._track(message)
        request_id = getattr(message, "id", None)
        if isinstance(request_id, int):
            pending = self._pending.get(request_id)
            if pending is not None:
                pending.feed(message)
        for sub in self._subscriptions:
            if sub.accepts(message):
                sub.put(message)

    def _track(self, r: p.ExecutionReport) -> None:
        """Keep the latest report of each own order (one session's messages are in order)."""
        if r.account != self.account_id or not r.client_order_id:
            return
        known = self.orders.get(r.client_order_id)
        if r.exec_type is p.ExecType.REJECTED and known is not None:
            return  # a refused second copy says nothing of the first
        self.orders[r.client_order_id] = r

    # --- requests -------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, pending: _Pending) -> None:
        if self._closing:
            return
        generation = self._generation
        if pending.generation == generation or self._ws is None:
            return
        pending.generation = generation
        try:
            await self._ws.send_str(p.encode_request(pending.request).decode())
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            pending.generation = -1  # resent after the reconnect

    def _fail_pending(self, which: Callable[[_Pending], bool], error: SuanliError) -> None:
        for request_id, pending in list(self._pending.items()):
            if which(pending):
                del self._pending[request_id]
                if not pending.future.done():
                    pending.future.set_exception(error)

    async def request(self, request: p.Request) -> list[p.ServerMessage]:
        """Send ``request`` (its ``id`` is set here) and return every message answering it.

        The last message is the final answer; ``cancel_all`` and ``mass_status``
        also return the execution reports before it.
        """
        return (await self._exchange(request)).messages

    async def _exchange(self, request: p.Request) -> _Pending:
        if self._closing:
            raise ConnectionLost("client closed")
        if self._failure is not None:
            raise ConnectionLost(f"client failed: {self._failure!r}")
        request_id = next(self._ids)
        request = msgspec.structs.replace(request, id=request_id)
        pending = _Pending(request)
        self._pending[request_id] = pending
        try:
            async with asyncio.timeout(self.request_timeout):
                while not self._connected.is_set() and not pending.future.done():
                    # Reconnecting: wait for the connection, unless the request fails first.
                    connected = asyncio.ensure_future(self._connected.wait())
                    either: set[asyncio.Future[Any]] = {pending.future, connected}
                    try:
                        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        connected.cancel()
                if not pending.future.done():
                    await self._send(pending)  # a no-op if a reconnect already sent it
                await pending.future
            return pending
        except TimeoutError:
            raise RequestTimeout(
                f"no answer to {request.__struct_config__.tag} in {self.request_timeout} s"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    async def _answer(self, request: p.Request) -> p.ServerMessage:
        """The final answer to ``request``; refusals raised as typed errors."""
        messages = await self.request(request)
        answer = messages[-1]
        _raise_refusal(answer)
        return answer

    # --- orders ----------------------------------------------------------------------

    def next_client_order_id(self) -> str:
        """A fresh client order id: unique per client, so a retry is recognisable."""
        return f"{self._coid_prefix}-{next(self._coids)}"

    async def place_order(
        self,
        instrument_id: str,
        side: Side | str,
        qty: int,
        price: int = 0,
        *,
        order_type: OrderType | str = OrderType.LIMIT,
        tif: TimeInForce | str = TimeInForce.GTC,
        expire_at: int = 0,
        post_only: bool = False,
        min_qty: int = 0,
        stp: SelfTradePrevention | str = SelfTradePrevention.CANCEL_RESTING,
        voucher_id: int = 0,
        client_order_id: str = "",
    ) -> p.ExecutionReport:
        """Enter an order; its first execution report, ``NEW`` once accepted.

        What the order does on entry follows as further reports (fills, and the
        end of an IOC, FOK or market order): ``orders[client_order_id]`` holds
        the latest, ``private()`` streams them, ``order_status`` asks. Raises
        ``OrderRejected`` with the exchange's ``Reason``. If the
        connection drops, the order is sent again with the same client order
        id and the state of whichever copy the exchange took is returned.
        """
        coid = client_order_id or self.next_client_order_id()
        request = p.NewOrder(
            client_order_id=coid,
            instrument_id=instrument_id,
            side=Side(side),
            qty=qty,
            price=price,
            order_type=OrderType(order_type),
            tif=TimeInForce(tif),
            expire_at=expire_at,
            post_only=post_only,
            min_qty=min_qty,
            stp=SelfTradePrevention(stp),
            voucher_id=voucher_id,
        )
        pending = await self._exchange(request)
        answer = pending.messages[-1]
        if (
            isinstance(answer, p.ExecutionReport)
            and answer.exec_type is p.ExecType.REJECTED
            and pending.resent
        ):
            # Sent again after a reconnect: the first copy may have been taken
            # (refused now as DUPLICATE_CLIENT_ORDER_ID, or for a reason that
            # arose since). If the exchange knows the id, report that order.
            with contextlib.suppress(GatewayError):
                first = await self.order_status(client_order_id=coid)
                self.log.info("order_already_entered", client_order_id=coid)
                return first
        _raise_refusal(answer)
        assert isinstance(answer, p.ExecutionReport)
        return answer

    async def cancel_order(
        self, order_id: int = 0, *, client_order_id: str = ""
    ) -> p.ExecutionReport:
        """Cancel one open order; its ``CANCELLED`` report. Raises ``CancelRejected``.

        If the connection dropped and the cancel was sent again, the first copy
        may have cancelled the order already; the second is then refused, and
        the order's ``ORDER_STATUS`` report, showing it cancelled, is returned.
        """
        pending = await self._exchange(
            p.CancelOrder(order_id=order_id, client_order_id=client_order_id)
        )
        answer = pending.messages[-1]
        if pending.resent and isinstance(answer, p.CancelReject):
            status = await self._status_if_known(order_id, client_order_id)
            if status is not None and status.ord_status is p.OrdStatus.CANCELLED:
                return status
        _raise_refusal(answer)
        assert isinstance(answer, p.ExecutionReport)
        return answer

    async def amend_order(
        self,
        order_id: int = 0,
        *,
        client_order_id: str = "",
        qty: int | None = None,
        price: int | None = None,
    ) -> p.ExecutionReport:
        """Change an open order's total quantity and/or price; its ``REPLACED`` report.

        Sent again after a dropped connection and refused (the first copy took
        effect, then the order finished), the order's ``ORDER_STATUS`` report
        is returned when it carries the quantity and price asked for.
        """
        pending = await self._exchange(
            p.AmendOrder(order_id=order_id, client_order_id=client_order_id, qty=qty, price=price)
        )
        answer = pending.messages[-1]
        if pending.resent and isinstance(answer, p.CancelReject):
            status = await self._status_if_known(order_id, client_order_id)
            if status is not None and qty in (None, status.qty) and price in (None, status.price):
                return status
        _raise_refusal(answer)
        assert isinstance(answer, p.ExecutionReport)
        return answer

    async def cancel_all(self, instrument_id: str = "") -> p.CancelAllDone:
        """Cancel every open order of the account (on one instrument, or everywhere).

        If the connection dropped and the cancel-all was sent again, orders the
        first copy cancelled are not in the second's answer; those this client
        placed are looked up, and counted in ``cancelled`` when a cancel-all
        cancelled them.
        """
        was_open = {
            coid
            for coid, r in self.orders.items()
            if _is_open(r) and instrument_id in ("", r.instrument_id)
        }
        pending = await self._exchange(p.CancelAll(instrument_id=instrument_id))
        answer = pending.messages[-1]
        _raise_refusal(answer)
        assert isinstance(answer, p.CancelAllDone)
        if not pending.resent:
            return answer
        reported = {m.client_order_id for m in pending.messages if isinstance(m, p.ExecutionReport)}
        earlier = 0
        for coid in sorted(was_open - reported):
            status = await self._status_if_known(0, coid)
            if status is not None and status.reason == CancelReason.MASS_CANCEL:
                earlier += 1
        return msgspec.structs.replace(answer, cancelled=answer.cancelled + earlier)

    async def _status_if_known(
        self, order_id: int, client_order_id: str
    ) -> p.ExecutionReport | None:
        """The order's status report, or None if the gateway has none to give."""
        try:
            return await self.order_status(order_id, client_order_id=client_order_id)
        except GatewayError:
            return None

    async def open_orders(self, instrument_id: str = "") -> list[p.ExecutionReport]:
        """Every open order of the account (an operator: of everyone), oldest first."""
        messages = await self.request(p.MassStatus(instrument_id=instrument_id))
        _raise_refusal(messages[-1])
        return [m for m in messages if isinstance(m, p.ExecutionReport)]

    async def order_status(
        self, order_id: int = 0, *, client_order_id: str = ""
    ) -> p.ExecutionReport:
        """One order, open or finished, as an ``ORDER_STATUS`` report."""
        answer = await self._answer(
            p.OrderStatus(order_id=order_id, client_order_id=client_order_id)
        )
        assert isinstance(answer, p.ExecutionReport)
        return answer

    async def ping(self) -> p.Pong:
        answer = await self._answer(p.Ping())
        assert isinstance(answer, p.Pong)
        return answer

    async def _reconcile(self) -> None:
        """After a reconnect: bring ``orders`` up to date with the exchange."""
        if not self.orders:
            return  # nothing placed through this client (or anonymous): nothing to reconcile
        was_open = {coid for coid, r in self.orders.items() if _is_open(r)}
        try:
            still_open = {r.client_order_id for r in await self.open_orders()}
        except SuanliError as exc:
            self.log.warning("reconcile_failed", error=repr(exc))
            return
        unknown = 0
        for coid in sorted(was_open - still_open):
            try:
                await self.order_status(client_order_id=coid)
            except GatewayError as exc:
                # Each order on its own: one the gateway has no report of must not
                # leave the others as they were.
                if exc.code != p.ErrorCode.ORDER_FINISHED_BEFORE_RESTART:
                    self.log.warning("reconcile_order_failed", client_order_id=coid, error=exc.code)
                    continue
                unknown += 1
                self._finished_unreported(coid, exc.text)
            except SuanliError as exc:  # the connection went again: the next one reconciles
                self.log.warning("reconcile_failed", error=repr(exc))
                return
        self.log.info(
            "orders_reconciled",
            open=len(still_open),
            closed=len(was_open - still_open),
            outcome_unknown=unknown,
        )

    def _finished_unreported(self, coid: str, text: str) -> None:
        """Record that an order finished while the client was away and before the
        gateway restarted, which keeps no report of it: it no longer works
        (``leaves_qty`` 0), and its last fills are known only from the contracts."""
        last = self.orders[coid]
        self.orders[coid] = msgspec.structs.replace(
            last,
            exec_type=p.ExecType.ORDER_STATUS,
            ord_status=p.OrdStatus.CANCELLED,
            leaves_qty=0,
            reason=p.ErrorCode.ORDER_FINISHED_BEFORE_RESTART.value,
            text=text,
        )
        self.outcome_unknown.add(coid)

    # --- subscriptions ----------------------------------------------------------------

    def subscribe(self, channel: p.Channel | str, instrument_id: str = "") -> Subscription[Any]:
        """A channel's messages; use as ``async with client.subscribe(...) as sub``."""
        channel = p.Channel(channel)
        return Subscription(self, channel, instrument_id, _channel_filter(channel, instrument_id))

    def trades(self, instrument_id: str) -> Subscription[p.PublicTrade]:
        return self.subscribe(p.Channel.TRADES, instrument_id)

    def ticker(self, instrument_id: str) -> Subscription[p.Ticker]:
        return self.subscribe(p.Channel.TICKER, instrument_id)

    def watch_vouchers(self) -> Subscription[p.VoucherBalance | p.Claim]:
        """The ``vouchers`` channel. Operators: every voucher and claim, live;
        issuers: those of their own programmes."""
        return self.subscribe(p.Channel.VOUCHERS)

    def book(self, instrument_id: str) -> BookWatcher:
        """A verified local order book; ``async with client.book(id) as book``."""
        depth = self.welcome.checksum_depth if self.welcome else 10
        return BookWatcher(self, instrument_id, depth)

    def private(self) -> Subscription[Any]:
        """This account's execution reports, balances, vouchers, contracts and claims."""
        return Subscription(self, None, "", lambda m: isinstance(m, _PRIVATE))

    async def _open_subscription(self, sub: Subscription[Any]) -> None:
        self._subscriptions.append(sub)
        if sub.channel is None:
            return
        try:
            await self._answer(p.Subscribe(channel=sub.channel, instrument_id=sub.instrument_id))
        except BaseException:
            self._subscriptions.remove(sub)
            raise

    async def _close_subscription(self, sub: Subscription[Any]) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
        if sub.channel is None or self._closing or not self.connected:
            return
        still_wanted = any(
            s.channel == sub.channel and s.instrument_id == sub.instrument_id
            for s in self._subscriptions
        )
        if not still_wanted:
            with contextlib.suppress(SuanliError):
                await self._answer(
                    p.Unsubscribe(channel=sub.channel, instrument_id=sub.instrument_id)
                )

    def _resubscribe(self, sub: Subscription[Any]) -> None:
        """Ask for the channel again (a book: a fresh snapshot); answers are not awaited."""
        channel = sub.channel
        assert channel is not None

        async def again() -> None:
            with contextlib.suppress(SuanliError):
                await self.request(p.Subscribe(channel=channel, instrument_id=sub.instrument_id))

        self._spawn(again())

    # --- operators --------------------------------------------------------------------

    async def _ack(self, request: p.Request) -> p.Ack:
        answer = await self._answer(request)
        assert isinstance(answer, p.Ack)
        return answer

    async def list_instrument(self, spec: InstrumentSpec) -> p.Ack:
        return await self._ack(p.ListInstrument(spec=spec))

    async def set_instrument_status(
        self, instrument_id: str, status: InstrumentStatus | str
    ) -> p.Ack:
        return await self._ack(
            p.SetInstrumentStatus(instrument_id=instrument_id, status=InstrumentStatus(status))
        )

    async def halt(self, instrument_id: str) -> p.Ack:
        return await self.set_instrument_status(instrument_id, InstrumentStatus.HALTED)

    async def resume(self, instrument_id: str) -> p.Ack:
        return await self.set_instrument_status(instrument_id, InstrumentStatus.OPEN)

    async def admit_account(
        self,
        account_id: str,
        role: Role | str,
        *,
        tier: Tier | str | None = None,
        hub: str = "",
        revenue: int = 0,
        projects: list[str] | None = None,
    ) -> p.Ack:
        return await self._ack(
            p.AdmitAccount(
                account_id=account_id,
                role=Role(role),
                tier=Tier(tier) if tier else None,
                hub=hub,
                revenue=revenue,
                projects=projects or [],
            )
        )

    async def relate_parties(self, account_a: str, account_b: str) -> p.Ack:
        return await self._ack(p.RelateParties(account_a=account_a, account_b=account_b))

    async def issue_api_key(self, account_id: str) -> p.ApiKeyIssued:
        answer = await self._answer(p.IssueApiKey(account_id=account_id))
        assert isinstance(answer, p.ApiKeyIssued)
        return answer

    async def revoke_api_key(self, key_id: str) -> p.Ack:
        return await self._ack(p.RevokeApiKey(key_id=key_id))

    async def deposit(self, account_id: str, amount: int) -> p.Ack:
        return await self._ack(p.Deposit(account_id=account_id, amount=amount))

    async def withdraw(self, account_id: str, amount: int) -> p.Ack:
        return await self._ack(p.Withdraw(account_id=account_id, amount=amount))

    async def register_capacity(
        self, instrument_id: str, gpu_hours: int, provider: str = ""
    ) -> p.Ack:
        return await self._ack(
            p.RegisterCapacity(instrument_id=instrument_id, gpu_hours=gpu_hours, provider=provider)
        )

    # --- issuers ----------------------------------------------------------------------

    async def create_programme(
        self,
        programme_id: str,
        name: str,
        *,
        rate_state_domestic: int,
        rate_state_foreign: int,
        rate_commercial_domestic: int,
        rate_commercial_foreign: int,
        cap_per_holder_year: int,
        budget: int,
        expires_at: int,
        basis: EligibilityBasis | str = EligibilityBasis.MIN_REVENUE,
        min_revenue: int = 0,
        projects: list[str] | None = None,
        eligible_hubs: list[str] | None = None,
    ) -> p.Ack:
        return await self._ack(
            p.CreateProgramme(
                programme_id=programme_id,
                name=name,
                rate_state_domestic=rate_state_domestic,
                rate_state_foreign=rate_state_foreign,
                rate_commercial_domestic=rate_commercial_domestic,
                rate_commercial_foreign=rate_commercial_foreign,
                eligible_hubs=eligible_hubs or [],
                cap_per_holder_year=cap_per_holder_year,
                budget=budget,
                expires_at=expires_at,
                basis=EligibilityBasis(basis),
                min_revenue=min_revenue,
                projects=projects or [],
            )
        )

    async def issue_voucher(self, programme_id: str, holder: str, amount: int) -> int:
        """Issue a voucher; its id."""
        ack = await self._ack(
            p.IssueVoucher(programme_id=programme_id, holder=holder, amount=amount)
        )
        return int(ack.result["voucher_id"])

    async def settle_claim(self, claim_id: int) -> p.Ack:
        return await self._ack(p.SettleClaim(claim_id=claim_id))

    # --- HTTP queries -----------------------------------------------------------------

    async def _get(self, path: str, type_: Any, **query: str | int | None) -> Any:
        """``GET /api/v1/{path}`` decoded as ``type_``; a query parameter that is ""
        or None is left out (the API's default: no filter, the newest page)."""
        assert self._http is not None, "connect first"
        url = f"{self.http_url}/api/v1/{path}"
        params = {k: str(v) for k, v in query.items() if v is not None and v != ""}
        async with self._http.get(url, params=params or None) as response:
            body = await response.read()
            if response.status != 200:
                try:
                    error = msgspec.json.decode(body)
                    code, text = (
                        str(error.get("error", response.status)),
                        str(error.get("text", "")),
                    )
                except (msgspec.DecodeError, AttributeError):
                    code, text = str(response.status), body.decode(errors="replace")[:200]
                raise HttpError(code, text or f"HTTP {response.status}")
            return msgspec.json.decode(body, type=type_)

    async def balances(self, account_id: str = "") -> p.Balance:
        """The account's cash and capacity (an operator may name another account)."""
        result: p.Balance = await self._get("account", p.Balance, account=account_id)
        return result

    async def all_balances(self) -> list[p.Balance]:
        """Every account's balance (operators)."""
        result: list[p.Balance] = await self._get("accounts", list[p.Balance])
        return result

    async def vouchers(self, account_id: str = "") -> list[p.VoucherBalance]:
        """Vouchers held (start-ups) or issued (issuers); an operator may filter by account."""
        result: list[p.VoucherBalance] = await self._get(
            "vouchers", list[p.VoucherBalance], account=account_id
        )
        return result

    async def contracts(
        self, account_id: str = "", *, limit: int = 100, before: int = 0
    ) -> list[p.Contract]:
        """One page of the compute contracts the account bought or sold, newest first:
        at most ``limit`` (1 to 1000), with ids below ``before`` (0: the newest).
        An operator reads ``account_id``'s, or everyone's."""
        result: list[p.Contract] = await self._get(
            "contracts", list[p.Contract], account=account_id, limit=limit, before=before or None
        )
        return result

    async def trade_history(
        self, instrument_id: str, *, limit: int = 100, before: int = 0
    ) -> list[p.PublicTrade]:
        """One page of the instrument's executed trades, newest first: at most
        ``limit`` (1 to 1000), with ids below ``before`` (0: the newest)."""
        result: list[p.PublicTrade] = await self._get(
            f"trades/{instrument_id}", list[p.PublicTrade], limit=limit, before=before or None
        )
        return result

    async def every_contract(self, account_id: str = "") -> list[p.Contract]:
        """Every contract ``contracts`` would page through, newest first."""
        out: list[p.Contract] = []
        before = 0
        while True:
            page = await self.contracts(account_id, limit=1_000, before=before)
            out.extend(page)
            if len(page) < 1_000:  # the last page
                return out
            before = page[-1].contract_id

    async def order_history(
        self,
        account_id: str = "",
        *,
        instrument_id: str = "",
        open_only: bool = False,
        limit: int = 100,
        before: int = 0,
    ) -> list[OrderView]:
        """One page of the account's orders, finished ones too unless ``open_only``,
        newest first: at most ``limit`` (1 to 1000), with ids below ``before``.
        An operator reads ``account_id``'s, or everyone's."""
        result: list[OrderView] = await self._get(
            "orders",
            list[OrderView],
            status="open" if open_only else "all",
            account=account_id,
            instrument_id=instrument_id,
            limit=limit,
            before=before or None,
        )
        return result

    async def programmes(self) -> list[dict[str, Any]]:
        """Every voucher programme: its rates, eligibility, budget and expiry (public)."""
        result: list[dict[str, Any]] = await self._get("programmes", list[dict[str, Any]])
        return result

    async def report(self, name: str, **query: str) -> list[dict[str, Any]]:
        """A report's rows: one of ``REPORTS`` (see docs/operator-guide.md for who
        may read which, and their columns); ``query`` as the report takes it,
        e.g. ``days="7"`` for the price index."""
        if name not in REPORTS:
            raise ValueError(f"no report {name!r}; one of {', '.join(REPORTS)}")
        result: list[dict[str, Any]] = await self._get(
            f"reports/{name}", list[dict[str, Any]], **query
        )
        return result

    async def claims(self, account_id: str = "") -> list[p.Claim]:
        """Voucher claims the account holds (providers) or owes (issuers)."""
        result: list[p.Claim] = await self._get("claims", list[p.Claim], account=account_id)
        return result

    async def instruments(self) -> list[InstrumentView]:
        """Every listed instrument with its status and best prices (public)."""
        result: list[InstrumentView] = await self._get("instruments", list[InstrumentView])
        return result

    async def book_snapshot(self, instrument_id: str) -> p.BookSnapshot:
        """The published book now, over HTTP (public)."""
        result: p.BookSnapshot = await self._get(f"book/{instrument_id}", p.BookSnapshot)
        return result


async def _release(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Close a dead WebSocket and give its connection back.

    When the peer vanishes (a reset, not a close), aiohttp marks the socket
    closed without releasing its HTTP response, and the connection would be
    reported unclosed when collected; close the response explicitly. It goes
    first: on a silent connection, ``ws.close()`` would otherwise wait out its
    timeout for a closing handshake that cannot come.
    """
    response = getattr(ws, "_response", None)
    if response is not None:
        response.close()
    with contextlib.suppress(Exception):
        await ws.close()


def _is_open(report: p.ExecutionReport) -> bool:
    return report.ord_status in p.OPEN_STATUSES


def _raise_refusal(answer: p.ServerMessage) -> None:
    match answer:
        case p.Error():
            raise GatewayError(answer.code.value, answer.text, answer)
        case p.ExecutionReport(exec_type=p.ExecType.REJECTED):
            raise OrderRejected(answer.reason, answer.text, answer)
        case p.CancelReject():
            raise CancelRejected(answer.reason.value, answer.text, answer)
        case p.Rejected():
            raise CommandRejected(answer.reason.value, answer.text, answer)
        case _:
            pass


@contextlib.asynccontextmanager
async def connect(url: str, api_key: str = "", **options: Any) -> AsyncIterator[Client]:
    """``async with connect(url, key) as client``: the same as ``async with Client(...)``."""
    async with Client(url, api_key, **options) as client:
        yield client

"""The aiohttp application: WebSocket endpoint, HTTP API, life cycle.

``create_app(config)`` builds an ``web.Application`` whose typed ``AppKey``
state holds the exchange service and everything around it. The service, the
store and the heartbeat task start and stop in ``cleanup_ctx``; on shutdown
every WebSocket is closed with ``1001 going away`` before the service drains
its queue and the store flushes and closes its journal.

Routes
------
``GET /ws``                 the WebSocket protocol (docs/protocol.md)
``GET /healthz``            liveness and the last sequence number
``GET /metrics``            Prometheus text format (gateway.metrics)
``GET /api/v1/...``         reference data, accounts, reports (gateway.reports)
``GET /``, ``/static/...``  the operator dashboard (gateway/static)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import msgspec
import structlog
from aiohttp import WebSocketError, WSMsgType, web
from aiohttp.typedefs import Handler

from exchange import commands as cmd
from exchange.core import ExchangeCore
from exchange.events import Rejected
from exchange.reference import Role
from exchange.service import ExchangeService
from gateway import protocol as p
from gateway.auth import KeyStore, Principal
from gateway.config import GatewayConfig
from gateway.dispatch import Dispatcher
from gateway.inbound import WebSocket
from gateway.marketdata import MarketData
from gateway.metrics import Metrics, TimedJournal
from gateway.orders import OrderRegister
from gateway.router import Router
from gateway.session import Session

log = structlog.get_logger("gateway.app")

Seed = Callable[[int], Sequence[cmd.Command]]
"""Commands that build a market, given the time now (ns); run once into an empty exchange."""

CONFIG = web.AppKey("config", GatewayConfig)
KEYS = web.AppKey("keys", KeyStore)
METRICS = web.AppKey("metrics", Metrics)
SERVICE = web.AppKey("service", ExchangeService)
ROUTER = web.AppKey("router", Router)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
SEED: web.AppKey[Seed] = web.AppKey("seed")


class StoreInfo(msgspec.Struct, frozen=True):
    """Where the exchange's state lives, as /healthz reports it."""

    durable: bool
    data_dir: str = ""
    recovered_seq: int = 0


STORE_INFO = web.AppKey("store_info", StoreInfo)
PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("principal")


def create_app(config: GatewayConfig, *, seed: Seed | None = None) -> web.Application:
    """The gateway as an aiohttp application (not yet running)."""
    from gateway import reports  # the HTTP API; imported here to keep app.py about wiring

    app = web.Application(client_max_size=64 * 1024, middlewares=[_authenticate])
    app[CONFIG] = config
    app[METRICS] = Metrics()
    keys = KeyStore(Path(config.keys_file) if config.keys_file else None)
    for configured in config.api_keys:  # in memory only: see gateway.auth
        keys.configure(configured.account_id, configured.key, time.time_ns())
    app[KEYS] = keys
    if seed is not None:
        app[SEED] = seed
    app.cleanup_ctx.append(_exchange_ctx)
    app.cleanup_ctx.append(_heartbeat_ctx)
    if config.demo and seed is not None and config.demo_flow > 0:
        app.cleanup_ctx.append(_demo_flow_ctx)
    app.on_shutdown.append(_close_websockets)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    reports.add_routes(app)
    app.router.add_get("/", dashboard)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    return app


# --- life cycle ------------------------------------------------------------------


def _open_service(
    config: GatewayConfig, metrics: Metrics
) -> tuple[ExchangeService, Callable[[], None], StoreInfo]:
    """The service, built on the durable store when a data directory is configured."""
    if not config.data_dir:
        return ExchangeService(ExchangeCore()), lambda: None, StoreInfo(durable=False)
    from exchange.store import open_store

    store = open_store(
        Path(config.data_dir),
        snapshot_every=config.snapshot_every,
        snapshot_capture=config.snapshot_capture,
        retention=config.journal_retention,
    )
    info = StoreInfo(durable=True, data_dir=config.data_dir, recovered_seq=store.next_seq - 1)
    journal = TimedJournal(store.journal, metrics)
    service = ExchangeService(core=store.core, journal=journal, next_seq=store.next_seq)
    return service, store.close, info


async def _exchange_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    metrics = app[METRICS]
    service, close_store, info = _open_service(config, metrics)
    log.info("exchange_opening", **msgspec.structs.asdict(info))
    app[STORE_INFO] = info
    await service.start()
    try:
        core = service.core
        for operator in config.operators:
            if operator not in core.accounts:
                await _must(
                    service,
                    cmd.AdmitAccount(actor=cmd.SYSTEM, account_id=operator, role=Role.OPERATOR),
                )
        seed = app.get(SEED)
        if seed is not None and not core.accounts.keys() - set(config.operators):
            for command in seed(time.time_ns()):
                await _must(service, command)
        keys = app[KEYS]
        for key_id, record in keys.configured.items():
            if record.account_id not in core.accounts:  # refused until the account is admitted
                log.warning(
                    "configured_key_unknown_account", key_id=key_id, account_id=record.account_id
                )
        # What exists now (a recovered core can be millions of objects) lives as long
        # as the process: keep it out of every later collection, so pauses stay short.
        gc.collect()
        gc.freeze()
        marketdata = MarketData(core, depth=config.book_depth, checksum_depth=config.checksum_depth)
        router = Router(service, marketdata, OrderRegister.from_core(core), metrics)
        app[SERVICE] = service
        app[ROUTER] = router
        app[DISPATCHER] = Dispatcher(
            router,
            keys,
            metrics,
            max_per_account=config.max_connections_per_account,
            max_open_orders=config.max_open_orders_per_account,
        )
        metrics.gauge(
            "suanli_connections", "Open WebSocket connections", lambda: len(router.sessions)
        )
        metrics.gauge(
            "suanli_exchange_queue_depth",
            "Commands waiting for the exchange",
            lambda: service.queue_depth,
        )
        metrics.gauge(
            "suanli_outbound_queue_max",
            "Longest outbound queue of any connection (messages)",
            lambda: max((len(s.outbox) for s in router.sessions.values()), default=0),
        )
        metrics.gauge(
            "suanli_outbound_queued",
            "Messages queued for all connections",
            lambda: sum(len(s.outbox) for s in router.sessions.values()),
        )
        metrics.gauge("suanli_last_seq", "Last journalled command", lambda: service.seq)
        metrics.gauge("suanli_open_orders", "Open orders", lambda: len(core.orders))
        yield
    finally:
        await service.stop()
        close_store()
        log.info("exchange_closed", last_seq=service.seq)


async def _must(service: ExchangeService, command: cmd.Command) -> None:
    events = await service.submit(command)
    refused = [e for e in events if isinstance(e, Rejected)]
    if refused:
        raise RuntimeError(f"seed command {type(command).__name__} refused: {refused[0].reason}")


async def _heartbeat_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_heartbeats(app), name="gateway-heartbeats")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _demo_flow_ctx(app: web.Application) -> AsyncIterator[None]:
    """The demo market's own traders (``gateway.demo_flow``), while the gateway runs."""
    from gateway.demo_flow import DemoFlow

    flow = DemoFlow(app[SERVICE], rate=app[CONFIG].demo_flow)
    task = asyncio.create_task(flow.run(), name="demo-flow")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _heartbeats(app: web.Application) -> None:
    """Send each connection a heartbeat and a WebSocket ping; close those the client
    has left silent.

    The pings are sent here rather than by aiohttp's ``heartbeat=``, which re-arms
    a timer for a connection on every loop turn that brings it data. aiohttp
    consumes pongs (autoping) before the handler sees them, so only a message
    counts as hearing from the client: the idle check closes a dead peer, and
    one that only answers pings, alike.
    """
    limits = app[CONFIG].session
    while True:
        await asyncio.sleep(limits.heartbeat_interval)
        router = app.get(ROUTER)
        if router is None:
            continue
        now = time.monotonic()
        beat = p.encode(p.Heartbeat(ts=time.time_ns()))
        for session in list(router.sessions.values()):
            if now - session.last_received > limits.idle_timeout:
                session.close(p.CloseCode.IDLE_TIMEOUT)
            else:
                session.send(beat)
                session.ping()


async def _close_websockets(app: web.Application) -> None:
    """Shut down with nothing in flight unanswered: the exchange refuses new
    commands (``UNAVAILABLE``) and finishes those queued, whose answers go out
    before each connection's ``1001`` (drained, within ``close_timeout``)."""
    router = app.get(ROUTER)
    if router is None:
        return
    await app[SERVICE].stop()
    router.flush()
    sessions = list(router.sessions.values())
    router.close_all(p.CloseCode.GOING_AWAY, drain=True)
    await asyncio.gather(*(s.wait_closed() for s in sessions))


# --- handlers ----------------------------------------------------------------------

_conn_ids = itertools.count(1)
_TEXT = WSMsgType.TEXT
# The messages the connection ends with: what ends ``async for`` over a WebSocket, and errors.
_LAST = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})


def _auth_failed(text: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=msgspec.json.encode({"error": "AUTH_FAILED", "text": text}).decode(),
        content_type="application/json",
    )


def api_key_of(request: web.Request) -> str | None:
    """The API key a request carries (``Authorization: Bearer``, the scheme in any
    case, or ``X-API-Key``); None if it carries neither header. 401 for another
    scheme or an empty key: a client that sent a credential means to use it."""
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, key = auth.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise _auth_failed("use Authorization: Bearer <key> or X-API-Key: <key>")
    elif (header := request.headers.get("X-API-Key")) is not None:
        key = header
    else:
        return None
    key = key.strip()
    if not key:
        raise _auth_failed("empty API key")
    return key


def principal_of(request: web.Request) -> Principal | None:
    """The principal of an HTTP request, None if anonymous; 401 for a bad key."""
    if PRINCIPAL in request:
        return request[PRINCIPAL]
    key = api_key_of(request)
    principal = None
    if key is not None:
        principal = request.app[DISPATCHER].principal_for(key)
        if principal is None:
            raise _auth_failed("unknown or revoked API key")
    request[PRINCIPAL] = principal
    return principal


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the key of every request that carries one, whatever the path: a bad
    key is refused (401) even where none is needed, so a client learns at once."""
    principal_of(request)
    return await handler(request)


async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    config = app[CONFIG]
    limits = config.session
    router = app[ROUTER]
    dispatcher = app[DISPATCHER]
    metrics = app[METRICS]
    principal = principal_of(request)
    room = config.max_connections
    if principal is None:
        room = int(room * config.anonymous_share)
    if len(router.sessions) >= room:
        raise web.HTTPServiceUnavailable(text="too many connections")
    if principal is not None and (crowded := dispatcher.crowded(principal)):
        raise web.HTTPTooManyRequests(
            text=msgspec.json.encode({"error": "TOO_MANY_CONNECTIONS", "text": crowded}).decode(),
            content_type="application/json",
        )
    ws = WebSocket(  # no heartbeat=: the pings come from _heartbeats
        # The transport buffers a frame whole before anyone sees it: bound what a
        # connection that never finishes one can hold (FRAME_TOO_LARGE below this).
        max_msg_size=max(limits.max_frame_bytes * 4, 256 * 1024),
        compress=False,
        autoping=True,
    )
    await ws.prepare(request)
    if request.transport is None:
        raise web.HTTPServiceUnavailable(text="connection lost during the handshake")
    # asyncio's or uvloop's: both have the write-buffer methods a session uses.
    transport = request.transport
    if limits.socket_send_buffer:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.socket_send_buffer)
    conn_id = next(_conn_ids)
    session = Session(
        conn_id,
        ws,
        limits,
        router.marketdata,
        transport=transport,
        remote=request.remote or "",
        on_pending=router.notify,
        on_close=router.detach,
        drain=request.writer.drain,  # wakes a backed-up writer when the socket drains
        metrics=metrics,
    )
    metrics.connections_total += 1
    router.attach(session)
    session.start()
    if principal is not None:
        dispatcher.login(session, principal)
    session.log.info("connected")
    session.send_message(
        p.Welcome(
            protocol=p.PROTOCOL_VERSION,
            conn_id=conn_id,
            account_id=principal.account_id if principal else "",
            role=principal.role if principal else None,
            heartbeat_interval_ms=round(limits.heartbeat_interval * 1000),
            idle_timeout_ms=round(limits.idle_timeout * 1000),
            max_frame_bytes=limits.max_frame_bytes,
            rate_limit_per_minute=round(limits.rate_limit * 60),
            rate_burst=limits.rate_burst,
            book_depth=config.book_depth,
            checksum_depth=config.checksum_depth,
        )
    )
    handle = dispatcher.receive

    def on_text(data: str) -> None:
        if session.closing:
            return
        try:
            handle(session, data)
        except Exception:  # a fault, not bad input: close this connection only
            session.log.exception("request failed")
            session.close(p.CloseCode.INTERNAL_ERROR)

    if ws.inbox is not None:
        ws.inbox.on_text = on_text  # text frames from now on skip ``receive`` (gateway.inbound)
    receive = ws.receive
    transport_code: int | None = None
    try:
        # ``receive`` itself rather than ``async for``: one coroutine a frame, not two.
        while True:
            msg = await receive()
            kind = msg.type
            if kind is _TEXT:
                on_text(msg.data)
            elif kind is WSMsgType.BINARY:
                if not session.closing:
                    dispatcher.binary(session)
            elif kind in _LAST:
                if kind is WSMsgType.ERROR and isinstance(msg.data, WebSocketError):
                    # aiohttp closed it (a frame over max_msg_size): the close code is
                    # the one it sent, whatever the failed handshake left in close_code.
                    transport_code = msg.data.code
                break
    finally:
        if ws.inbox is not None:
            ws.inbox.on_text = None  # nothing more for this session (and no cycle through it)
        router.detach(session)
        if session.close_code is not None:
            metrics.disconnects[str(session.close_code)] += 1
        elif transport_code is not None:
            metrics.disconnects[str(transport_code)] += 1
        elif ws.close_code is not None and ws.close_code >= 1002:
            metrics.disconnects[str(ws.close_code)] += 1
        session.abandon()
        await session.wait_closed()
        session.log.info("disconnected", code=ws.close_code)
    return ws


STATIC_DIR = Path(__file__).parent / "static"
"""The operator dashboard: plain HTML, CSS and ES modules, no build step."""


async def dashboard(request: web.Request) -> web.FileResponse:
    """``GET /``: the dashboard page; its scripts and styles are under ``/static/``."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    healthy = service.failure is None
    body: dict[str, object] = {
        "status": "ok" if healthy else "failed",
        "seq": service.seq,
        "queue_depth": service.queue_depth,
        "connections": len(request.app[ROUTER].sessions),
    }
    body.update(msgspec.structs.asdict(request.app[STORE_INFO]))
    return web.json_response(body, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[METRICS].render(), content_type="text/plain", charset="utf-8"
    )

"""A real gateway on a loopback port, a small seeded market, and a test client.

``gateway`` starts the aiohttp app on 127.0.0.1 with port 0 and stops it at the
end of the test. ``Client`` wraps a real aiohttp WebSocket client: ``send``
writes a request, ``expect`` reads until a message of the wanted type (and
matching fields) arrives. ``Traders`` makes fills between ``dc1`` and ``su2``
one at a time. Reads time out after ``WAIT`` seconds, only so that a broken
test fails instead of hanging; no test asserts on timing.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exchange import commands as c
from exchange.reference import EligibilityBasis, InstrumentSpec, InstrumentStatus, Role, Tier
from gateway import protocol as p
from gateway.app import create_app
from gateway.config import BootstrapKey, GatewayConfig
from gateway.session import SessionLimits

WAIT = 10.0
HOUR = 3_600 * 10**9
H100 = "H100-SUZHOU-STATE-W1"
ASCEND = "ASCEND910B-SUZHOU-STATE-W1"
ACCOUNTS = ("ops", "dc1", "dc2", "su1", "su2", "city")
CASH = 1_000_000_000  # fen each start-up holds at the start


def key(account: str) -> str:
    return f"sk_test-{account}_secret-of-{account}"


def seed_market(now: int) -> list[c.Command]:
    """Operator ops; providers dc1, dc2 (state, suzhou); start-ups su1, su2 with
    CASH fen each; issuer city with programme sz; su1 holds voucher 1 of
    1,000,000 fen. H100 (tick 10, lot 8) and ASCEND are open."""
    S = c.SYSTEM
    out: list[c.Command] = [c.AdmitAccount(actor=S, account_id="ops", role=Role.OPERATOR)]
    for provider in ("dc1", "dc2"):
        out.append(
            c.AdmitAccount(
                actor=S, account_id=provider, role=Role.PROVIDER, tier=Tier.STATE, hub="suzhou"
            )
        )
    for startup in ("su1", "su2"):
        out.append(
            c.AdmitAccount(actor=S, account_id=startup, role=Role.STARTUP, revenue=5_000_000_00)
        )
        out.append(c.Deposit(actor=S, account_id=startup, amount=CASH))
    out.append(c.AdmitAccount(actor=S, account_id="city", role=Role.ISSUER))
    out.append(c.Deposit(actor=S, account_id="city", amount=50_000_000))
    for instrument_id, model, domestic in ((H100, "H100", False), (ASCEND, "Ascend910B", True)):
        out.append(
            c.ListInstrument(
                actor=S,
                spec=InstrumentSpec(
                    instrument_id=instrument_id,
                    gpu_model=model,
                    domestic=domestic,
                    hub="suzhou",
                    tier=Tier.STATE,
                    delivery_start=now + 240 * HOUR,
                    delivery_end=now + 408 * HOUR,
                    tick=10,
                    lot=8,
                ),
            )
        )
        for provider in ("dc1", "dc2"):
            out.append(
                c.RegisterCapacity(
                    actor=S, provider=provider, instrument_id=instrument_id, gpu_hours=80_000
                )
            )
        out.append(
            c.SetInstrumentStatus(
                actor=S, instrument_id=instrument_id, status=InstrumentStatus.OPEN
            )
        )
    out.append(
        c.CreateProgramme(
            actor="city",
            programme_id="sz",
            name="Suzhou compute voucher",
            rate_state_domestic=6_000,
            rate_state_foreign=3_000,
            rate_commercial_domestic=2_000,
            rate_commercial_foreign=0,
            cap_per_holder_year=5_000_000,
            budget=20_000_000,
            expires_at=now + 1_000 * HOUR,
            basis=EligibilityBasis.MIN_REVENUE,
            min_revenue=1_000_000_00,
        )
    )
    out.append(c.IssueVoucher(actor="city", programme_id="sz", holder="su1", amount=1_000_000))
    return out


def make_config(data_dir: str = "", **options: Any) -> GatewayConfig:
    """The tests' configuration: ``options`` are GatewayConfig fields, or else
    session limits."""
    gateway = {k: options.pop(k) for k in list(options) if k in GatewayConfig.__struct_fields__}
    return GatewayConfig(
        port=0,
        data_dir=data_dir,
        api_keys=[BootstrapKey(account_id=a, key=key(a)) for a in ACCOUNTS],
        session=SessionLimits(**options),
        **gateway,
    )


class Client:
    """One WebSocket connection to the gateway."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[Any] = []
        self.next_id = 1

    async def send(self, type: str, **fields: Any) -> int:
        """Send a request; return its id (set unless ``id`` is given)."""
        if "id" not in fields:
            fields["id"] = self.next_id
            self.next_id += 1
        await self.ws.send_str(msgspec.json.encode({"type": type, **fields}).decode())
        request_id: int = fields["id"]
        return request_id

    async def order(
        self, client_order_id: str, instrument_id: str, side: str, qty: int, price: int
    ) -> p.ExecutionReport:
        """Place a limit order; its first execution report."""
        rid = await self.send(
            "new_order",
            client_order_id=client_order_id,
            instrument_id=instrument_id,
            side=side,
            qty=qty,
            price=price,
        )
        report: p.ExecutionReport = await self.expect(p.ExecutionReport, id=rid)
        return report

    async def recv(self) -> Any:
        msg = await self.ws.receive(timeout=WAIT)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"connection ended: {msg.type} {msg.data} {msg.extra}")
        message = p.decode_message(msg.data)
        self.seen.append(message)
        return message

    async def expect(self, kind: type[Any], **fields: Any) -> Any:
        """Read until a message of ``kind`` whose fields equal ``fields`` arrives."""
        while True:
            message = await self.recv()
            if isinstance(message, kind) and all(
                getattr(message, k) == v for k, v in fields.items()
            ):
                return message

    async def closed(self) -> tuple[int | None, str]:
        """Read until the server closes; the close code and reason."""
        while True:
            msg = await self.ws.receive(timeout=WAIT)
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            ):
                return self.ws.close_code, msg.extra or ""
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.seen.append(p.decode_message(msg.data))


class Gateway:
    """A running gateway and a way to connect to it."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = session
        self.clients: list[Client] = []

    @property
    def app(self) -> web.Application:
        return self.server.app  # type: ignore[return-value]

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def connect(
        self, account: str | None = None, *, header: bool = False, private: bool = True
    ) -> Client:
        """A connection, authenticated as ``account`` if given; ``private=False`` leaves
        the private channel (on by default)."""
        headers = {"Authorization": f"Bearer {key(account)}"} if header and account else {}
        ws = await self.http.ws_connect(self.url("/ws"), headers=headers, autoping=True)
        client = Client(ws)
        self.clients.append(client)
        await client.expect(p.Welcome)
        if account and not header:
            await client.send("auth", key=key(account))
            await client.expect(p.Authenticated)
        if account and not private:  # an order-entry-only connection
            rid = await client.send("unsubscribe", channel="private")
            await client.expect(p.Unsubscribed, id=rid)
        return client

    async def get(self, path: str, account: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key(account)}"} if account else {}
        async with self.http.get(self.url(path), headers=headers) as resp:
            body = await resp.read()
            return resp.status, msgspec.json.decode(body) if body[:1] in b"[{" else body.decode()


class Traders:
    """A provider and a start-up that trade with each other, one fill at a time."""

    def __init__(self, seller: Client, buyer: Client) -> None:
        self.seller = seller
        self.buyer = buyer
        self.n = 0

    @classmethod
    async def connect(cls, gateway: Gateway) -> Traders:
        return cls(await gateway.connect("dc1"), await gateway.connect("su2"))

    async def trade(
        self, instrument_id: str, price: int, qty: int, aggressor: str
    ) -> p.ExecutionReport:
        """One fill; the aggressor's FILL report (its ``trade_id`` is the trade)."""
        self.n += 1
        report = p.ExecutionReport
        buy = aggressor == "BUY"
        order = {"instrument_id": instrument_id, "qty": qty, "price": price}
        steps = ((not buy, "r", p.ExecType.NEW), (buy, "i", p.ExecType.FILL))
        for is_buyer, prefix, expected in steps:
            client = self.buyer if is_buyer else self.seller
            side = "BUY" if is_buyer else "SELL"
            rid = await client.send(
                "new_order", client_order_id=f"{prefix}{self.n}", side=side, **order
            )
            answer: p.ExecutionReport = await client.expect(report, id=rid, exec_type=expected)
        return answer


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway() -> AsyncIterator[GatewayFactory]:
    """Start gateways with chosen options (``make_config``); all are stopped at the end."""
    running: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(data_dir: str = "", **session: Any) -> Gateway:
        app = create_app(make_config(data_dir, **session), seed=seed_market)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        http = aiohttp.ClientSession()
        running.append((server, http))
        return Gateway(server, http)

    yield start
    for server, http in running:
        await http.close()
        await server.close()


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> Gateway:
    return await start_gateway()


def now_ns() -> int:
    return time.time_ns()


async def settle() -> None:
    """Let the event loop run queued callbacks (not a timing assumption)."""
    for _ in range(3):
        await asyncio.sleep(0)


_fill_ids = itertools.count(1)  # client order ids, unique across calls


async def trade_until(dc1: Client, su1: Client, until: Callable[[], bool]) -> None:
    """Fills on H100 between dc1 (selling) and su1 (buying), 20 a batch, until
    ``until()``; every fill changes the book."""
    fills = 0
    while not until():
        assert fills < 20_000, "the condition never came"
        for _ in range(20):
            fills += 1
            n = next(_fill_ids)
            price = 1_000 + 10 * (n % 7)  # sells rest at varying prices; buys take the best
            await dc1.send(
                "new_order",
                client_order_id=f"s{n}",
                instrument_id=H100,
                side="SELL",
                qty=16,
                price=price,
            )
            await su1.send(
                "new_order",
                client_order_id=f"b{n}",
                instrument_id=H100,
                side="BUY",
                qty=8,
                price=1_100,
            )
        await su1.expect(p.ExecutionReport, client_order_id=f"b{n}", exec_type=p.ExecType.FILL)
        await dc1.expect(p.ExecutionReport, client_order_id=f"s{n}", exec_type=p.ExecType.NEW)
        su1.seen.clear()
        dc1.seen.clear()


def town_programme() -> dict[str, Any]:
    """The fields of a ``create_programme`` for issuer town (admitted by a test), whose
    vouchers pay half of a state-run provider's price, for 1,000 hours from now."""
    return {
        "programme_id": "tw",
        "name": "Town compute voucher",
        "rate_state_domestic": 5_000,
        "rate_state_foreign": 5_000,
        "rate_commercial_domestic": 0,
        "rate_commercial_foreign": 0,
        "cap_per_holder_year": 5_000_000,
        "budget": 5_000_000,
        "expires_at": now_ns() + 1_000 * 3_600 * 10**9,
        "basis": "MIN_REVENUE",
    }

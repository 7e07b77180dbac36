"""Who may do what: anonymous readers, start-ups, providers, issuers, operators."""

from __future__ import annotations

import asyncio

import aiohttp

from gateway import protocol as p
from gateway.app import ROUTER
from tests.gateway.conftest import H100, Gateway, GatewayFactory, key


async def test_anonymous_reads_public_data_only(gateway: Gateway) -> None:
    anon = await gateway.connect()
    rid = await anon.send("subscribe", channel="book", instrument_id=H100)
    await anon.expect(p.Subscribed, id=rid)
    rid = await anon.send(
        "new_order", client_order_id="x", instrument_id=H100, side="BUY", qty=8, price=1000
    )
    error = await anon.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.NOT_AUTHENTICATED
    rid = await anon.send("subscribe", channel="orders")
    error = await anon.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.NOT_AUTHENTICATED
    status, _ = await gateway.get("/api/v1/account")
    assert status == 401


async def test_bad_keys_are_refused(gateway: Gateway) -> None:
    anon = await gateway.connect()
    for bad in ("nonsense", key("su1") + "x", "sk_unknown_key"):
        rid = await anon.send("auth", key=bad)
        error = await anon.expect(p.Error, id=rid)
        assert error.code is p.ErrorCode.AUTH_FAILED
    upgrade = {
        "Authorization": "Bearer sk_bad_key",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with gateway.http.get(gateway.url("/ws"), headers=upgrade) as refused:
        assert refused.status == 401  # no WebSocket for a bad key in the handshake
    su1 = await gateway.connect("su1")
    rid = await su1.send("auth", key=key("su2"))
    error = await su1.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.ALREADY_AUTHENTICATED


async def test_a_key_sent_is_checked_on_every_path_and_bearer_in_any_case(
    gateway: Gateway,
) -> None:
    async def get(path: str, headers: dict[str, str]) -> tuple[int, str]:
        async with gateway.http.get(gateway.url(path), headers=headers) as resp:
            return resp.status, await resp.text()

    good = key("su1")
    for scheme in ("Bearer", "bearer", "BEARER"):
        status, body = await get("/api/v1/account", {"Authorization": f"{scheme} {good}"})
        assert status == 200 and '"account_id":"su1"' in body
    refused = (
        {"Authorization": "bearer sk_bad_key"},
        {"Authorization": f"Token {good}"},  # a scheme the gateway does not take
        {"Authorization": f"Basic {good}"},
        {"Authorization": "Bearer "},
        {"X-API-Key": ""},
        {"X-API-Key": "sk_bad_key"},
    )
    for path in ("/api/v1/instruments", f"/api/v1/book/{H100}", "/healthz", "/api/v1/account"):
        assert (await get(path, {}))[0] == (401 if path.endswith("account") else 200)
        for headers in refused:  # public or not, a bad credential is an error
            status, body = await get(path, headers)
            assert status == 401 and '"error":"AUTH_FAILED"' in body, (path, headers)
    upgrade = {
        "Authorization": "bearer sk_bad_key",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    assert (await get("/ws", upgrade))[0] == 401
    async with gateway.http.ws_connect(
        gateway.url("/ws"), headers={"Authorization": f"bearer {good}"}
    ) as ws:
        welcome = p.decode_message((await ws.receive()).data)
        assert isinstance(welcome, p.Welcome) and welcome.account_id == "su1"


async def test_an_account_cannot_see_or_cancel_anothers_orders(gateway: Gateway) -> None:
    su1 = await gateway.connect("su1")
    su2 = await gateway.connect("su2")
    rid = await su1.send(
        "new_order", client_order_id="mine", instrument_id=H100, side="BUY", qty=8, price=900
    )
    order = await su1.expect(p.ExecutionReport, id=rid)

    rid = await su2.send("cancel_order", order_id=order.order_id)
    reject = await su2.expect(p.CancelReject, id=rid)
    assert reject.reason == "NOT_YOUR_ORDER"
    rid = await su2.send("cancel_order", client_order_id="mine")
    reject = await su2.expect(p.CancelReject, id=rid)
    assert reject.reason == "UNKNOWN_ORDER"
    rid = await su2.send("amend_order", order_id=order.order_id, qty=16)
    reject = await su2.expect(p.CancelReject, id=rid)
    assert reject.reason == "NOT_YOUR_ORDER"
    rid = await su2.send("order_status", order_id=order.order_id)
    error = await su2.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.UNKNOWN_ORDER
    rid = await su2.send("mass_status")
    done = await su2.expect(p.MassStatusDone, id=rid)
    assert done.count == 0
    rid = await su2.send("cancel_all")
    done = await su2.expect(p.CancelAllDone, id=rid)
    assert done.cancelled == 0
    assert not any(isinstance(m, p.ExecutionReport) for m in su2.seen)

    rid = await su1.send("order_status", order_id=order.order_id)
    status = await su1.expect(p.ExecutionReport, id=rid)
    assert status.ord_status is p.OrdStatus.NEW  # still there

    status_code, orders = await gateway.get("/api/v1/orders", "su2")
    assert status_code == 200 and orders == []
    status_code, orders = await gateway.get("/api/v1/orders", "su1")
    assert [o["client_order_id"] for o in orders] == ["mine"]
    status_code, _ = await gateway.get("/api/v1/accounts", "su1")
    assert status_code == 403
    for path in ("account", "orders", "contracts", "vouchers", "claims"):
        status_code, error = await gateway.get(f"/api/v1/{path}?account=su1", "su2")
        assert (status_code, error["error"]) == (403, "NOT_PERMITTED"), path
        status_code, _ = await gateway.get(f"/api/v1/{path}?account=su2", "su2")
        assert status_code == 200, path  # naming oneself is fine


async def test_a_startup_cannot_issue_vouchers_or_halt_markets(gateway: Gateway) -> None:
    su1 = await gateway.connect("su1")
    for request, fields in (
        ("issue_voucher", {"programme_id": "sz", "holder": "su1", "amount": 1000}),
        ("set_instrument_status", {"instrument_id": H100, "status": "HALTED"}),
        ("deposit", {"account_id": "su1", "amount": 1000}),
        ("admit_account", {"account_id": "evil", "role": "OPERATOR"}),
        ("issue_api_key", {"account_id": "ops"}),
        ("settle_claim", {"claim_id": 1}),
    ):
        rid = await su1.send(request, **fields)
        error = await su1.expect(p.Error, id=rid)
        assert error.code is p.ErrorCode.NOT_PERMITTED, request
    rid = await su1.send("subscribe", channel="accounts")
    error = await su1.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.NOT_PERMITTED
    dc1 = await gateway.connect("dc1")
    rid = await dc1.send("register_capacity", instrument_id=H100, gpu_hours=8, provider="dc2")
    refused = await dc1.expect(p.Rejected, id=rid)  # the exchange's own check
    assert refused.reason == "NOT_PERMITTED"
    status, _ = await gateway.get("/api/v1/reports/voucher-usage", "su1")
    assert status == 403


async def test_operator_sees_everything_and_runs_the_market(gateway: Gateway) -> None:
    ops = await gateway.connect("ops")
    await ops.send("subscribe", channel="orders")
    await ops.send("subscribe", channel="accounts")
    await ops.expect(p.Balance, account_id="su2")
    su1 = await gateway.connect("su1")
    rid = await su1.send(
        "new_order", client_order_id="watched", instrument_id=H100, side="BUY", qty=8, price=900
    )
    await su1.expect(p.ExecutionReport, id=rid)
    seen = await ops.expect(p.ExecutionReport, client_order_id="watched")
    assert seen.account == "su1" and seen.id is None
    await ops.expect(p.Balance, account_id="su1")

    rid = await ops.send("admit_account", account_id="su3", role="STARTUP", revenue=10**10)
    await ops.expect(p.Ack, id=rid)
    rid = await ops.send("deposit", account_id="su3", amount=500_000)
    ack = await ops.expect(p.Ack, id=rid)
    assert ack.result["cash"] == 500_000
    rid = await ops.send("issue_api_key", account_id="su3")
    issued = await ops.expect(p.ApiKeyIssued, id=rid)
    assert issued.key.startswith("sk_")
    ws = await gateway.http.ws_connect(gateway.url("/ws"), headers={"X-API-Key": issued.key})
    welcome = p.decode_message((await ws.receive()).data)
    assert isinstance(welcome, p.Welcome) and welcome.account_id == "su3"

    rid = await ops.send("cancel_all", instrument_id=H100)  # an operator clears a book
    done = await ops.expect(p.CancelAllDone, id=rid)
    assert done.cancelled == 1
    gone = await su1.expect(
        p.ExecutionReport, client_order_id="watched", exec_type=p.ExecType.CANCELLED
    )
    assert gone.reason == "OPERATOR"

    rid = await ops.send("revoke_api_key", key_id=issued.key_id)
    await ops.expect(p.Ack, id=rid)
    closed = await ws.receive()
    while closed.type is aiohttp.WSMsgType.TEXT:
        closed = await ws.receive()
    assert ws.close_code == p.CloseCode.AUTH_REVOKED
    await ws.close()
    status, everyone = await gateway.get("/api/v1/accounts", "ops")
    assert status == 200 and {a["account_id"] for a in everyone} >= {"su1", "su3", "dc1"}
    status, one = await gateway.get("/api/v1/accounts?account=su3", "ops")
    assert status == 200 and [a["account_id"] for a in one] == ["su3"]
    status, error = await gateway.get("/api/v1/accounts?account=nobody", "ops")
    assert (status, error["error"]) == (404, "UNKNOWN_ACCOUNT")


async def test_listing_a_market_and_running_a_voucher_programme(gateway: Gateway) -> None:
    ops = await gateway.connect("ops")
    city = await gateway.connect("city")
    await ops.send("subscribe", channel="status")
    status = await gateway.get(f"/api/v1/instruments/{H100}")
    spec = dict(status[1]["spec"])
    spec.update(instrument_id="H20-SUZHOU-STATE-W2", gpu_model="H20")
    rid = await ops.send("list_instrument", spec=spec)
    ack = await ops.expect(p.Ack, id=rid)
    assert ack.result == {"instrument_id": "H20-SUZHOU-STATE-W2"}
    (listed,) = [  # published to the status channel before the answer
        m for m in ops.seen if isinstance(m, p.InstrumentInfo) and m.status == "PRE_OPEN"
    ]
    assert listed.spec.gpu_model == "H20"
    rid = await ops.send("list_instrument", spec=spec)
    refused = await ops.expect(p.Rejected, id=rid)
    assert (refused.request, refused.reason) == ("list_instrument", "DUPLICATE_ID")
    rid = await ops.send(
        "set_instrument_status", instrument_id="H20-SUZHOU-STATE-W2", status="AUCTION"
    )
    await ops.expect(p.Ack, id=rid)
    rid = await ops.send(
        "register_capacity", instrument_id="H20-SUZHOU-STATE-W2", gpu_hours=800, provider="dc2"
    )
    ack = await ops.expect(p.Ack, id=rid)
    assert ack.result["capacity"] == 800

    rid = await city.send(
        "create_programme",
        programme_id="sz-2",
        name="Second programme",
        rate_state_domestic=5_000,
        rate_state_foreign=2_000,
        rate_commercial_domestic=0,
        rate_commercial_foreign=0,
        cap_per_holder_year=1_000_000,
        budget=2_000_000,
        expires_at=spec["delivery_end"],
        basis="MIN_REVENUE",
    )
    ack = await city.expect(p.Ack, id=rid)
    assert ack.result == {"programme_id": "sz-2"}
    su2 = await gateway.connect("su2")
    rid = await city.send("issue_voucher", programme_id="sz-2", holder="su2", amount=300_000)
    ack = await city.expect(p.Ack, id=rid)
    voucher = await su2.expect(p.VoucherBalance, voucher_id=ack.result["voucher_id"])
    assert (voucher.holder, voucher.balance, voucher.programme_id) == ("su2", 300_000, "sz-2")
    rid = await city.send("issue_voucher", programme_id="sz-2", holder="dc1", amount=1)
    refused = await city.expect(p.Rejected, id=rid)
    assert refused.reason == "HOLDER_INELIGIBLE"
    rid = await ops.send("withdraw", account_id="su2", amount=10**15)
    refused = await ops.expect(p.Rejected, id=rid)
    assert refused.reason == "INSUFFICIENT_FUNDS"
    rid = await ops.send("withdraw", account_id="su2", amount=1_000)
    ack = await ops.expect(p.Ack, id=rid)
    balance = await su2.expect(p.Balance, cash=ack.result["cash"])
    assert balance.account_id == "su2"


async def test_an_operator_closing_a_market_gets_an_ack_not_the_accounts_reports(
    gateway: Gateway,
) -> None:
    su1 = await gateway.connect("su1")
    await su1.order("resting", H100, "BUY", 8, 1_000)
    ops = await gateway.connect("ops")  # not on the orders channel
    rid = await ops.send("set_instrument_status", instrument_id=H100, status="CLOSED")
    await ops.expect(p.Ack, id=rid)
    gone = await su1.expect(
        p.ExecutionReport, client_order_id="resting", exec_type=p.ExecType.CANCELLED
    )
    assert gone.id is None
    rid = await ops.send("ping")  # anything sent to ops before this has arrived
    await ops.expect(p.Pong, id=rid)
    assert not [m for m in ops.seen if isinstance(m, p.ExecutionReport)]


async def test_an_account_has_so_many_connections_and_anonymous_ones_leave_room(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(
        max_connections=8, anonymous_share=0.5, max_connections_per_account=2
    )
    router = gateway.app[ROUTER]
    first = await gateway.connect("su1")
    await gateway.connect("su1", header=True)

    async def upgrade(account: str | None) -> tuple[int, str]:
        headers = {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        if account:
            headers["Authorization"] = f"Bearer {key(account)}"
        async with gateway.http.get(gateway.url("/ws"), headers=headers) as resp:
            return resp.status, await resp.text()

    status, body = await upgrade("su1")  # a third, in the handshake
    assert status == 429 and '"error":"TOO_MANY_CONNECTIONS"' in body
    assert "the limit is 2" in body
    late = await gateway.connect()  # a third, by message: refused, still anonymous
    rid = await late.send("auth", key=key("su1"))
    refused = await late.expect(p.Error, id=rid)
    assert refused.code is p.ErrorCode.TOO_MANY_CONNECTIONS
    assert len(router.by_account["su1"]) == 2
    await gateway.connect("su2")  # another account is not held back
    await first.ws.close()
    async with asyncio.timeout(5):
        while len(router.by_account["su1"]) > 1:
            await asyncio.sleep(0.01)
    rid = await late.send("auth", key=key("su1"))  # room again
    await late.expect(p.Authenticated, id=rid)

    # Anonymous upgrades stop at half of eight open; accounts' do not.
    assert len(router.sessions) == 3
    await gateway.connect()
    assert (await upgrade(None))[0] == 503
    await gateway.connect("su2", header=True)
    await gateway.connect("dc1", header=True)
    assert len(router.sessions) == 6

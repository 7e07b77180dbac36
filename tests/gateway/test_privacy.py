"""One account's private data stays its own, over the wire and over HTTP.

Each test builds the same small market on a fresh gateway (``_open_market``):
start-ups su1 and su2 buy from providers dc1 and dc2 on both instruments, two
fills paid partly with vouchers of issuer city (so two claims), while a second
issuer, town (admitted during the test), funds a voucher of su1's; then some
orders rest, one is cancelled, and city settles one claim. Every account's
connection stays on ``private`` throughout, and so does an operator's (which
trades nothing and so must receive nothing); su1 has a second, order-entry-only
connection; an anonymous connection watches public trades.

The checks look at every message each connection received, not only the ones
a test waits for: private messages must all be the receiver's own (a leak
shows up as one foreign message among many), and each account must receive
exactly its own set of orders, contracts, vouchers and claims (so the test
proves the messages did arrive). Reads are bounded by the conftest's
``WAIT``; the end of a connection's window is the answer to a ping sent after
every action was answered, so everything queued before it has arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway import protocol as p
from tests.gateway.conftest import ASCEND, H100, Client, Gateway, key, town_programme

TRADERS = ("su1", "su2", "dc1", "dc2")
ISSUERS = ("city", "town")
PRIVATE = (p.ExecutionReport, p.Balance, p.VoucherBalance, p.Contract, p.Claim)


@dataclass
class Market:
    """The market ``_open_market`` made, and what each account owns in it."""

    clients: dict[str, Client]  # account -> its connection on `private`
    entry: Client  # su1's order-entry connection (off `private`)
    anon: Client  # anonymous, on the public trades of both instruments
    town_key: str
    trades: dict[str, int] = field(default_factory=dict)  # "A".."D" -> trade id
    orders: dict[str, set[int]] = field(default_factory=dict)
    open_orders: dict[str, set[int]] = field(default_factory=dict)
    contracts: dict[str, set[int]] = field(default_factory=dict)
    vouchers: dict[str, set[int]] = field(default_factory=dict)
    claims: dict[str, set[int]] = field(default_factory=dict)
    open_claims: dict[str, set[int]] = field(default_factory=dict)


async def _drain(client: Client) -> list[Any]:
    """Everything the client receives until the answer to a ping (so: all queued before)."""
    start = len(client.seen)
    rid = await client.send("ping")
    await client.expect(p.Pong, id=rid)
    return client.seen[start:-1]


async def _connect_key(gateway: Gateway, api_key: str) -> Client:
    client = await gateway.connect()
    rid = await client.send("auth", key=api_key)
    await client.expect(p.Authenticated, id=rid)
    return client


async def _get(gateway: Gateway, path: str, api_key: str = "") -> tuple[int, Any]:
    headers = {"X-API-Key": api_key} if api_key else {}
    async with gateway.http.get(gateway.url(path), headers=headers) as resp:
        return resp.status, msgspec.json.decode(await resp.read())


async def _ack(client: Client, request: str, **fields: Any) -> p.Ack:
    rid = await client.send(request, **fields)
    ack: p.Ack = await client.expect(p.Ack, id=rid)
    return ack


async def _open_market(gateway: Gateway) -> Market:
    """The market of the module doc; every action answered before it returns."""
    clients = {a: await gateway.connect(a) for a in ("ops", "su1", "su2", "dc1", "dc2", "city")}
    entry = await gateway.connect("su1", private=False)
    anon = await gateway.connect()
    for instrument_id in (H100, ASCEND):
        rid = await anon.send("subscribe", channel="trades", instrument_id=instrument_id)
        await anon.expect(p.Subscribed, id=rid)
    ops = clients["ops"]
    await _ack(ops, "admit_account", account_id="town", role="ISSUER")
    await _ack(ops, "deposit", account_id="town", amount=10_000_000)
    rid = await ops.send("issue_api_key", account_id="town")
    town_key = (await ops.expect(p.ApiKeyIssued, id=rid)).key
    town = clients["town"] = await _connect_key(gateway, town_key)
    await _ack(
        town,
        "create_programme",
        **town_programme(),
    )
    town_voucher = await _ack(
        town, "issue_voucher", programme_id="tw", holder="su1", amount=300_000
    )
    city_voucher = await _ack(
        clients["city"], "issue_voucher", programme_id="sz", holder="su2", amount=500_000
    )
    v3 = int(town_voucher.result["voucher_id"])
    v2 = int(city_voucher.result["voucher_id"])
    market = Market(clients, entry, anon, town_key)
    for account in ("ops", *TRADERS, *ISSUERS):
        for table in (market.orders, market.open_orders, market.contracts, market.claims):
            table[account] = set()
    market.vouchers = {"su1": {1, v3}, "su2": {v2}, "city": {1, v2}, "town": {v3}}

    async def order(
        account: str, coid: str, instrument_id: str, side: str, qty: int, price: int, **extra: Any
    ) -> p.ExecutionReport:
        """Place an order from ``account`` (su1's fill C from its order-entry connection);
        its fill if it trades at once, else its NEW report."""
        client = entry if coid == "C" and account == "su1" else clients[account]
        rid = await client.send(
            "new_order",
            client_order_id=coid,
            instrument_id=instrument_id,
            side=side,
            qty=qty,
            price=price,
            **extra,
        )
        new: p.ExecutionReport = await client.expect(p.ExecutionReport, id=rid)
        assert new.exec_type is p.ExecType.NEW, new
        market.orders[account].add(new.order_id)
        if side == "SELL" or coid.endswith("rest"):
            return new
        fill: p.ExecutionReport = await client.expect(
            p.ExecutionReport, id=rid, exec_type=p.ExecType.FILL
        )
        return fill

    for name, seller, buyer, instrument_id, qty, price, voucher_id in (
        ("A", "dc1", "su1", H100, 16, 1000, 1),
        ("B", "dc2", "su2", ASCEND, 16, 2000, v2),
        ("C", "dc2", "su1", H100, 8, 1100, 0),
        ("D", "dc1", "su2", ASCEND, 8, 2100, 0),
    ):
        await order(seller, name, instrument_id, "SELL", qty, price)
        fill = await order(buyer, name, instrument_id, "BUY", qty, price, voucher_id=voucher_id)
        assert bool(fill.voucher) == bool(voucher_id), fill
        trade_id = market.trades[name] = fill.trade_id
        market.contracts[buyer].add(trade_id)
        market.contracts[seller].add(trade_id)
        if voucher_id:
            claim = await clients[seller].expect(p.Claim, contract_id=trade_id)
            market.claims[seller].add(claim.claim_id)
            market.claims["city"].add(claim.claim_id)

    resting: tuple[tuple[str, str, str, str, int, int, dict[str, int]], ...] = (
        ("su1", "s1-rest", H100, "BUY", 8, 500, {"voucher_id": v3}),
        ("su2", "s2-rest", ASCEND, "BUY", 8, 600, {}),
        ("dc1", "d1-rest", H100, "SELL", 8, 5000, {}),
        ("dc2", "d2-rest", ASCEND, "SELL", 8, 9000, {}),
    )
    for account, coid, instrument_id, side, qty, price, extra in resting:
        new = await order(account, coid, instrument_id, side, qty, price, **extra)
        market.open_orders[account].add(new.order_id)
    dc2 = clients["dc2"]
    rid = await dc2.send("cancel_order", client_order_id="d2-rest")
    await dc2.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.CANCELLED)
    market.open_orders["dc2"].clear()

    (settled,) = market.claims["dc1"]
    await _ack(clients["city"], "settle_claim", claim_id=settled)
    await clients["dc1"].expect(p.Claim, claim_id=settled, settled=True)
    market.open_claims = {a: claims - {settled} for a, claims in market.claims.items()}
    return market


def _foreign(account: str, message: Any) -> bool:
    """Whether ``message`` is private data that is not ``account``'s own."""
    match message:
        case p.ExecutionReport():
            return message.account != account
        case p.Balance():
            return message.account_id != account
        case p.VoucherBalance():
            return account not in (message.holder, message.issuer)
        case p.Contract():
            return account not in (message.buyer, message.seller)
        case p.Claim():
            return account not in (message.provider, message.issuer)
        case _:
            return False


def _ids(messages: list[Any], kind: type[Any], name: str) -> set[int]:
    return {getattr(m, name) for m in messages if isinstance(m, kind)}


def _without_ts(record: Any) -> dict[str, Any]:
    """A message as JSON fields, its time stamp left out."""
    fields: dict[str, Any] = msgspec.json.decode(p.encode(record))
    fields.pop("ts", None)
    return fields


def _key(market: Market, account: str) -> str:
    return market.town_key if account == "town" else key(account)


async def test_private_channel_carries_only_the_accounts_own_data(gateway: Gateway) -> None:
    market = await _open_market(gateway)
    for client in (*market.clients.values(), market.entry, market.anon):
        await _drain(client)

    for account, client in market.clients.items():
        seen = client.seen
        leaked = [m for m in seen if _foreign(account, m)]
        assert leaked == [], (account, leaked)
        assert not [m for m in seen if isinstance(m, p.Error | p.CancelReject | p.Rejected)]
        # Positive controls: exactly its own, all of it.
        assert _ids(seen, p.ExecutionReport, "order_id") == market.orders[account], account
        assert _ids(seen, p.Contract, "contract_id") == market.contracts[account], account
        assert _ids(seen, p.VoucherBalance, "voucher_id") == market.vouchers.get(account, set())
        assert _ids(seen, p.Claim, "claim_id") == market.claims[account], account
        balances = [m for m in seen if isinstance(m, p.Balance)]
        if account == "ops":  # it changed nothing of its own: it hears nothing private
            assert not [m for m in seen if isinstance(m, PRIVATE)]
            continue
        assert balances, account
        status, now = await _get(gateway, "/api/v1/account", _key(market, account))
        assert status == 200
        now.pop("ts")
        assert _without_ts(balances[-1]) == now, account  # the latest is the state now

    # The reservation of su1's resting buy reached su1 (cash and town's voucher).
    su1 = market.clients["su1"].seen
    rest = [m for m in su1 if isinstance(m, p.ExecutionReport) and m.client_order_id == "s1-rest"]
    assert rest and rest[0].voucher_id in market.vouchers["town"]
    assert any(m.cash_reserved > 0 for m in su1 if isinstance(m, p.Balance))
    assert any(
        m.reserved > 0 and m.voucher_id in market.vouchers["town"]
        for m in su1
        if isinstance(m, p.VoucherBalance)
    )

    # su1's order-entry connection: every report of su1's orders, nothing else private.
    entry = market.entry.seen
    assert [m for m in entry if _foreign("su1", m)] == []
    assert _ids(entry, p.ExecutionReport, "order_id") == market.orders["su1"]
    assert not [m for m in entry if isinstance(m, p.Balance | p.VoucherBalance | p.Contract)]
    assert not [m for m in entry if isinstance(m, p.Claim)]

    # Anonymous: the public trades (positive control), no private message at all.
    anon = market.anon.seen
    assert _ids(anon, p.PublicTrade, "trade_id") == set(market.trades.values())
    assert not [m for m in anon if isinstance(m, PRIVATE)]
    rid = await market.anon.send("subscribe", channel="private")
    error = await market.anon.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.NOT_AUTHENTICATED


async def test_private_snapshot_on_subscribe_is_the_accounts_own(gateway: Gateway) -> None:
    market = await _open_market(gateway)
    for account, client in market.clients.items():
        rid = await client.send("unsubscribe", channel="private")
        await client.expect(p.Unsubscribed, id=rid)
        rid = await client.send("subscribe", channel="private")
        await client.expect(p.Subscribed, id=rid, channel=p.Channel.PRIVATE)
        snapshot = await _drain(client)
        assert [m for m in snapshot if _foreign(account, m)] == [], account
        balances = [m for m in snapshot if isinstance(m, p.Balance)]
        assert [b.account_id for b in balances] == [account]
        assert _ids(snapshot, p.VoucherBalance, "voucher_id") == market.vouchers.get(account, set())
        assert _ids(snapshot, p.Claim, "claim_id") == market.open_claims[account], account
        assert not [m for m in snapshot if isinstance(m, p.Contract | p.ExecutionReport)]


async def test_http_records_are_the_accounts_own(gateway: Gateway) -> None:
    market = await _open_market(gateway)
    everyone = ("ops", *TRADERS, *ISSUERS)
    all_orders: set[int] = set().union(*market.orders.values())
    all_contracts = set(market.trades.values())
    all_vouchers: set[int] = set().union(*market.vouchers.values())
    all_claims = market.claims["city"]
    assert len(all_orders) == 12 and len(all_vouchers) == 3 and len(all_claims) == 2

    for account in everyone:
        api_key = _key(market, account)
        status, balance = await _get(gateway, "/api/v1/account", api_key)
        assert (status, balance["account_id"]) == (200, account)

        status, orders = await _get(gateway, "/api/v1/orders?status=all", api_key)
        assert status == 200
        if account == "ops":  # an operator sees every account's
            assert {o["order_id"] for o in orders} == all_orders
        else:
            assert {o["account"] for o in orders} <= {account}, orders
            assert {o["order_id"] for o in orders} == market.orders[account], account
            status, open_orders = await _get(gateway, "/api/v1/orders", api_key)
            assert {o["order_id"] for o in open_orders} == market.open_orders[account]

        status, contracts = await _get(gateway, "/api/v1/contracts", api_key)
        assert status == 200
        if account == "ops":
            assert {c["contract_id"] for c in contracts} == all_contracts
        else:
            assert all(account in (c["buyer"], c["seller"]) for c in contracts), contracts
            assert {c["contract_id"] for c in contracts} == market.contracts[account]

        status, vouchers = await _get(gateway, "/api/v1/vouchers", api_key)
        assert status == 200
        if account == "ops":
            assert {v["voucher_id"] for v in vouchers} == all_vouchers
        else:
            assert all(account in (v["holder"], v["issuer"]) for v in vouchers), vouchers
            assert {v["voucher_id"] for v in vouchers} == market.vouchers.get(account, set())

        status, claims = await _get(gateway, "/api/v1/claims", api_key)
        assert status == 200
        if account == "ops":
            assert {c["claim_id"] for c in claims} == all_claims
        else:
            assert all(account in (c["provider"], c["issuer"]) for c in claims), claims
            assert {c["claim_id"] for c in claims} == market.claims[account], account

        # Naming another account is refused to all but operators.
        other = "su2" if account == "su1" else "su1"
        for path in ("account", "orders", "contracts", "vouchers", "claims"):
            status, answer = await _get(gateway, f"/api/v1/{path}?account={other}", api_key)
            if account == "ops":
                assert status == 200, path
            else:
                assert (status, answer["error"]) == (403, "NOT_PERMITTED"), (account, path)

    # An operator picks one account: that account's records only.
    ops = key("ops")
    for account in ("su2", "dc1", "city"):
        _, contracts = await _get(gateway, f"/api/v1/contracts?account={account}", ops)
        assert {c["contract_id"] for c in contracts} == market.contracts[account]
        _, orders = await _get(gateway, f"/api/v1/orders?status=all&account={account}", ops)
        assert {o["order_id"] for o in orders} == market.orders[account]
        _, vouchers = await _get(gateway, f"/api/v1/vouchers?account={account}", ops)
        assert {v["voucher_id"] for v in vouchers} == market.vouchers.get(account, set())
        _, claims = await _get(gateway, f"/api/v1/claims?account={account}", ops)
        assert {c["claim_id"] for c in claims} == market.claims[account]
        _, balance = await _get(gateway, f"/api/v1/account?account={account}", ops)
        assert balance["account_id"] == account
    status, accounts = await _get(gateway, "/api/v1/accounts", ops)
    assert status == 200 and {a["account_id"] for a in accounts} == set(everyone)

    # Issuers: reports on their own programmes only; operators' reports refused.
    for issuer, programme in (("city", "sz"), ("town", "tw")):
        api_key = _key(market, issuer)
        status, usage = await _get(gateway, "/api/v1/reports/voucher-usage", api_key)
        assert status == 200 and [r["programme_id"] for r in usage] == [programme]
        status, rows = await _get(gateway, "/api/v1/reports/claims", api_key)
        assert status == 200 and {r["issuer"] for r in rows} <= {issuer}
        for path in ("accounts", "reports/open-interest", "reports/volume"):
            status, answer = await _get(gateway, f"/api/v1/{path}", api_key)
            assert (status, answer["error"]) == (403, "NOT_PERMITTED"), (issuer, path)
    _, city_claims = await _get(gateway, "/api/v1/reports/claims", key("city"))
    assert [(r["outstanding"], r["settled"]) for r in city_claims] == [(1, 1)]
    _, usage = await _get(gateway, "/api/v1/reports/voucher-usage", ops)
    assert [r["programme_id"] for r in usage] == ["sz", "tw"]
    for account in TRADERS:
        for path in ("accounts", "reports/voucher-usage", "reports/claims", "reports/volume"):
            status, _ = await _get(gateway, f"/api/v1/{path}", key(account))
            assert status == 403, (account, path)

    # Public trades name no party.
    for instrument_id in (H100, ASCEND):
        status, trades = await _get(gateway, f"/api/v1/trades/{instrument_id}")
        assert status == 200 and len(trades) == 2
        assert not {"buyer", "seller", "account"} & {k for t in trades for k in t}


async def test_http_refuses_anonymous_and_bad_keys(gateway: Gateway) -> None:
    await _open_market(gateway)  # records exist to be refused
    private = (
        "account",
        "accounts",
        "orders",
        "orders?status=all",
        "contracts",
        "vouchers",
        "claims",
        "reports/open-interest",
        "reports/volume",
        "reports/voucher-usage",
        "reports/claims",
    )
    for path in private:
        for query in ("", "&account=su1" if "?" in path else "?account=su1"):
            status, answer = await _get(gateway, f"/api/v1/{path}{query}")
            assert (status, answer["error"]) == (401, "NOT_AUTHENTICATED"), path
            for bad in ("sk_nope_nope", key("su1") + "x", "nonsense"):
                status, answer = await _get(gateway, f"/api/v1/{path}{query}", bad)
                assert (status, answer["error"]) == (401, "AUTH_FAILED"), (path, bad)
    status, _ = await _get(gateway, "/api/v1/vouchers", key("su1"))  # positive control
    assert status == 200


async def test_another_accounts_order_cannot_be_touched_or_seen(gateway: Gateway) -> None:
    su1 = await gateway.connect("su1")
    su2 = await gateway.connect("su2")
    dc1 = await gateway.connect("dc1")
    mine = await su1.order("mine", H100, "BUY", 8, 900)  # reserves cash only
    rid = await su1.send(
        "new_order",
        client_order_id="mine-v",
        instrument_id=H100,
        side="BUY",
        qty=8,
        price=800,
        voucher_id=1,
    )
    mine_v = await su1.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.NEW)
    # su2 has its own order under the same client order id: a name is per account.
    theirs = await su2.order("mine", H100, "BUY", 16, 700)

    async def state() -> dict[str, Any]:
        """Everything about su1's orders that a refused request must leave alone."""
        got: dict[str, Any] = {}
        for order_id in (mine.order_id, mine_v.order_id):
            rid = await su1.send("order_status", order_id=order_id)
            status = await su1.expect(p.ExecutionReport, id=rid)
            got[f"order {order_id}"] = msgspec.structs.replace(status, id=None)
        _, got["history"] = await gateway.get("/api/v1/orders?status=all", "su1")
        _, balance = await gateway.get("/api/v1/account", "su1")
        _, vouchers = await gateway.get("/api/v1/vouchers", "su1")
        got["balance"] = balance | {"ts": 0}  # the time now; the rest must not move
        got["vouchers"] = [v | {"ts": 0} for v in vouchers]
        return got

    before = await state()
    await _drain(su1)
    seen_by_su1 = len(su1.seen)

    for intruder in (su2, dc1):
        for order_id, coid in ((mine.order_id, ""), (mine_v.order_id, ""), (0, "mine-v")):
            expected = "NOT_YOUR_ORDER" if order_id else "UNKNOWN_ORDER"
            ref = {"order_id": order_id} if order_id else {"client_order_id": coid}
            rid = await intruder.send("cancel_order", **ref)
            reject = await intruder.expect(p.CancelReject, id=rid)
            assert (reject.request, reject.reason) == ("cancel_order", expected), ref
            assert reject.client_order_id == coid  # su1's client order id is not told
            rid = await intruder.send("amend_order", qty=16, price=1000, **ref)
            reject = await intruder.expect(p.CancelReject, id=rid)
            assert (reject.request, reject.reason) == ("amend_order", expected), ref
            rid = await intruder.send("order_status", **ref)
            error = await intruder.expect(p.Error, id=rid)
            assert error.code is p.ErrorCode.UNKNOWN_ORDER, ref
        for instrument_id in ("", H100):
            rid = await intruder.send("mass_status", instrument_id=instrument_id)
            done = await intruder.expect(p.MassStatusDone, id=rid)
            own = {theirs.order_id} if intruder is su2 else set()
            reports = [m for m in intruder.seen if isinstance(m, p.ExecutionReport)]
            assert done.count == len(own)
            assert {r.order_id for r in reports if r.id == rid} == own
        for channel in ("orders", "accounts", "vouchers"):
            rid = await intruder.send("subscribe", channel=channel)
            error = await intruder.expect(p.Error, id=rid)
            assert error.code is p.ErrorCode.NOT_PERMITTED, channel
    rid = await dc1.send("cancel_all", instrument_id=H100)
    assert (await dc1.expect(p.CancelAllDone, id=rid)).cancelled == 0
    rid = await su2.send(  # spending su1's voucher
        "new_order",
        client_order_id="steal",
        instrument_id=H100,
        side="BUY",
        qty=8,
        price=900,
        voucher_id=1,
    )
    stolen = await su2.expect(p.ExecutionReport, id=rid)
    assert (stolen.exec_type, stolen.reason) == (p.ExecType.REJECTED, "NOT_YOUR_VOUCHER")
    # su2's own "mine" is the one its client order id names (positive control).
    rid = await su2.send("amend_order", client_order_id="mine", qty=8)
    amended = await su2.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.REPLACED)
    assert (amended.order_id, amended.qty) == (theirs.order_id, 8)
    rid = await su2.send("cancel_order", client_order_id="mine")
    gone = await su2.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.CANCELLED)
    assert gone.order_id == theirs.order_id

    await _drain(su2)
    await _drain(dc1)
    after = await state()
    assert after == before  # su1's orders, history, balance and voucher
    assert before["balance"]["cash_reserved"] > 0 and before["vouchers"][0]["reserved"] > 0
    _, book = await gateway.get(f"/api/v1/book/{H100}")
    assert [tuple(level) for level in book["bids"]] == [(900, 8), (800, 8)]  # su2's 700 gone
    # su1 heard nothing of all that; the intruders heard nothing of su1's.
    heard = [m for m in su1.seen[seen_by_su1:] if isinstance(m, PRIVATE)]
    assert [(getattr(m, "exec_type", None), getattr(m, "order_id", None)) for m in heard] == [
        (p.ExecType.ORDER_STATUS, mine.order_id),
        (p.ExecType.ORDER_STATUS, mine_v.order_id),
    ]  # its own questions' answers, and no balance, voucher or report of anyone's
    for intruder, account in ((su2, "su2"), (dc1, "dc1")):
        assert [m for m in intruder.seen if _foreign(account, m)] == []
        echoes = p.Error | p.CancelReject  # answers that repeat the request's own fields
        assert not [m for m in intruder.seen if "mine-v" in repr(m) and not isinstance(m, echoes)]

    # Positive control: su1 itself can cancel both, by id and by client order id.
    rid = await su1.send("cancel_order", order_id=mine.order_id)
    await su1.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.CANCELLED)
    rid = await su1.send("cancel_order", client_order_id="mine-v")
    await su1.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.CANCELLED)

"""The ``vouchers`` channel: every voucher and claim, live, for operators; an
issuer's own for an issuer; nothing for start-ups and providers.

A second issuer ("town", admitted during the test with a key the operator
issues) runs its own programme, so each test can check what an issuer must
not see as well as what it must.
"""

from __future__ import annotations

from typing import Any

import pytest

from clients import sdk
from gateway import protocol as p
from tests.gateway.conftest import H100, Client, Gateway, key, town_programme


async def _subscribe(client: Client) -> int:
    rid = await client.send("subscribe", channel="vouchers")
    await client.expect(p.Subscribed, id=rid, channel=p.Channel.VOUCHERS)
    return rid


async def _drain(client: Client) -> list[Any]:
    """Everything the client receives until the answer to a ping (so: all queued before)."""
    start = len(client.seen)
    rid = await client.send("ping")
    await client.expect(p.Pong, id=rid)
    return client.seen[start:-1]


async def _town(gateway: Gateway, ops: Client) -> Client:
    """A second issuer with a programme "tw" and 10,000 fen of cash, connected."""
    rid = await ops.send("admit_account", account_id="town", role="ISSUER")
    await ops.expect(p.Ack, id=rid)
    rid = await ops.send("deposit", account_id="town", amount=10_000_000)
    await ops.expect(p.Ack, id=rid)
    rid = await ops.send("issue_api_key", account_id="town")
    issued = await ops.expect(p.ApiKeyIssued, id=rid)
    town = await gateway.connect()
    rid = await town.send("auth", key=issued.key)
    await town.expect(p.Authenticated, id=rid)
    rid = await town.send(
        "create_programme",
        **town_programme(),
    )
    await town.expect(p.Ack, id=rid)
    return town


async def test_who_may_subscribe(gateway: Gateway) -> None:
    for account in ("su1", "dc1"):
        client = await gateway.connect(account)
        rid = await client.send("subscribe", channel="vouchers")
        error = await client.expect(p.Error, id=rid)
        assert error.code is p.ErrorCode.NOT_PERMITTED
        assert not any(isinstance(m, p.Subscribed) for m in client.seen)
    anon = await gateway.connect()
    rid = await anon.send("subscribe", channel="vouchers")
    error = await anon.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.NOT_AUTHENTICATED
    ops = await gateway.connect("ops")
    rid = await ops.send("subscribe", channel="voucher")  # misspelt: not a channel
    error = await ops.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.INVALID_FIELD
    for account in ("ops", "city"):
        await _subscribe(await gateway.connect(account))


async def test_snapshot_and_live_updates_are_scoped_to_the_issuer(gateway: Gateway) -> None:
    ops_watch = await gateway.connect("ops", private=False)
    ops = await gateway.connect("ops")
    town = await _town(gateway, ops)
    rid = await town.send("issue_voucher", programme_id="tw", holder="su2", amount=400_000)
    town_voucher = (await town.expect(p.Ack, id=rid)).result["voucher_id"]
    city = await gateway.connect("city", private=False)

    # Snapshots: every voucher for the operator, the issuer's own for an issuer.
    await _subscribe(ops_watch)
    await _subscribe(city)
    await _subscribe(town)
    ops_snap = await _drain(ops_watch)
    assert [(m.voucher_id, m.issuer) for m in ops_snap if isinstance(m, p.VoucherBalance)] == [
        (1, "city"),
        (town_voucher, "town"),
    ]
    city_snap = await _drain(city)
    assert [(m.voucher_id, m.holder, m.balance) for m in city_snap] == [(1, "su1", 1_000_000)]
    town_snap = await _drain(town)
    town_vouchers = [m for m in town_snap if isinstance(m, p.VoucherBalance)]
    assert [m.voucher_id for m in town_vouchers] == [town_voucher]

    # A new voucher of city's: the operator and city see it; town does not.
    rid = await city.send("issue_voucher", programme_id="sz", holder="su2", amount=200_000)
    new_id = (await city.expect(p.Ack, id=rid)).result["voucher_id"]
    issued = await ops_watch.expect(p.VoucherBalance, voucher_id=new_id)
    assert (issued.issuer, issued.holder, issued.amount, issued.balance) == (
        "city",
        "su2",
        200_000,
        200_000,
    )
    await city.expect(p.VoucherBalance, voucher_id=new_id, balance=200_000)

    # A buy that reserves voucher 1, then fills: balance changes and a claim, live.
    dc1 = await gateway.connect("dc1")
    su1 = await gateway.connect("su1")
    rid = await su1.send(
        "new_order",
        client_order_id="vb",
        instrument_id=H100,
        side="BUY",
        qty=80,
        price=1000,
        voucher_id=1,
    )
    await su1.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.NEW)
    reserved = await ops_watch.expect(p.VoucherBalance, voucher_id=1, spent=0)
    assert reserved.reserved == 80 * 1000 * 3_000 // 10_000
    await city.expect(p.VoucherBalance, voucher_id=1, reserved=reserved.reserved)
    rid = await dc1.send(
        "new_order", client_order_id="s", instrument_id=H100, side="SELL", qty=80, price=1000
    )
    fill = await dc1.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.FILL)
    claim = await ops_watch.expect(p.Claim)
    assert (claim.issuer, claim.provider, claim.amount, claim.settled) == (
        "city",
        "dc1",
        fill.voucher,
        False,
    )
    assert claim.contract_id == fill.trade_id
    spent = await ops_watch.expect(p.VoucherBalance, voucher_id=1, spent=fill.voucher)
    assert spent.reserved == 0 and spent.balance == 1_000_000 - fill.voucher
    assert (await city.expect(p.Claim, claim_id=claim.claim_id)).settled is False

    # Settling the claim: settled, live, to both.
    rid = await city.send("settle_claim", claim_id=claim.claim_id)
    await city.expect(p.Ack, id=rid)
    settled = await ops_watch.expect(p.Claim, claim_id=claim.claim_id, settled=True)
    assert settled.settled_at > 0
    # The issuer's copy came before its ack (updates go out before the answer).
    assert [m.settled for m in city.seen if isinstance(m, p.Claim)][-1] is True

    # Town heard nothing of city's vouchers or claims.
    later = await _drain(town)
    assert not [m for m in later if isinstance(m, p.VoucherBalance | p.Claim)]
    # A subscriber that comes later gets the settled claim in its snapshot.
    late = await gateway.connect("ops", private=False)
    await _subscribe(late)
    snap = await _drain(late)
    assert [(m.claim_id, m.settled) for m in snap if isinstance(m, p.Claim)] == [
        (claim.claim_id, True)
    ]


async def test_one_copy_per_connection_and_unsubscribe_stops_it(gateway: Gateway) -> None:
    city = await gateway.connect("city")  # on `private` (by default) and on `vouchers`
    await _subscribe(city)
    await _drain(city)
    rid = await city.send("issue_voucher", programme_id="sz", holder="su2", amount=100_000)
    voucher_id = (await city.expect(p.Ack, id=rid)).result["voucher_id"]
    received = await _drain(city)
    assert len([m for m in received if isinstance(m, p.VoucherBalance)]) == 1
    assert [m.voucher_id for m in city.seen if isinstance(m, p.VoucherBalance)].count(
        voucher_id
    ) == 1

    ops = await gateway.connect("ops", private=False)
    await _subscribe(ops)
    await _drain(ops)
    rid = await ops.send("unsubscribe", channel="vouchers")
    await ops.expect(p.Unsubscribed, id=rid, channel=p.Channel.VOUCHERS)
    rid = await city.send("issue_voucher", programme_id="sz", holder="su2", amount=100_000)
    await city.expect(p.Ack, id=rid)
    await city.expect(p.VoucherBalance, voucher_id=voucher_id + 1)
    assert not [m for m in await _drain(ops) if isinstance(m, p.VoucherBalance | p.Claim)]


async def test_the_sdk_follows_the_channel(gateway: Gateway) -> None:
    base = gateway.url("/").rstrip("/")
    async with (
        sdk.connect(base, key("city"), name="city") as city,
        city.watch_vouchers() as watched,
    ):
        snapshot = await watched.get()
        assert isinstance(snapshot, p.VoucherBalance) and snapshot.voucher_id == 1
        voucher_id = await city.issue_voucher("sz", "su2", 50_000)
        update = await watched.get()
        assert isinstance(update, p.VoucherBalance)
        assert (update.voucher_id, update.holder, update.balance) == (voucher_id, "su2", 50_000)
    async with sdk.connect(base, key("su1"), name="su1") as su1:
        with pytest.raises(sdk.GatewayError) as refused:
            async with su1.watch_vouchers():
                pass
        assert refused.value.code == p.ErrorCode.NOT_PERMITTED

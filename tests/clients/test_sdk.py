"""The SDK against a real gateway on loopback: every method, and its typed refusals."""

from __future__ import annotations

import pytest

from clients.sdk import (
    AuthFailed,
    Backoff,
    CancelRejected,
    Client,
    CommandRejected,
    ConnectionLost,
    GatewayError,
    HttpError,
    OrderRejected,
    OrderView,
    connect,
)
from exchange.reference import (
    EligibilityBasis,
    InstrumentSpec,
    InstrumentStatus,
    Role,
    Side,
    Tier,
    TimeInForce,
)
from gateway import protocol as p
from gateway.orders import VIEW_FIELDS
from tests.clients.conftest import Served
from tests.gateway.conftest import ASCEND, H100, HOUR, key, now_ns


async def test_orders_amend_cancel_and_status(served: Served) -> None:
    su = await served.sdk("su1")
    assert su.account_id == "su1" and su.role is Role.STARTUP
    new = await su.place_order(H100, Side.BUY, 16, 900, client_order_id="b-1")
    assert new.exec_type is p.ExecType.NEW and new.client_order_id == "b-1"
    assert new.order_id > 0 and new.leaves_qty == 16

    amended = await su.amend_order(new.order_id, qty=8)
    assert amended.exec_type is p.ExecType.REPLACED and amended.qty == 8
    amended = await su.amend_order(client_order_id="b-1", price=910)
    assert amended.price == 910

    status = await su.order_status(client_order_id="b-1")
    assert status.exec_type is p.ExecType.ORDER_STATUS and status.leaves_qty == 8
    assert [r.order_id for r in await su.open_orders()] == [new.order_id]

    cancelled = await su.cancel_order(new.order_id)
    assert cancelled.exec_type is p.ExecType.CANCELLED
    assert await su.open_orders() == []
    assert su.orders["b-1"].ord_status is p.OrdStatus.CANCELLED

    for i in range(3):
        await su.place_order(ASCEND if i % 2 else H100, Side.BUY, 8, 500 + 10 * i)
    done = await su.cancel_all(H100)
    assert done.cancelled == 2
    assert [r.instrument_id for r in await su.open_orders()] == [ASCEND]
    assert (await su.cancel_all()).cancelled == 1
    pong = await su.ping()
    assert pong.ts > 0


async def test_a_trade_with_a_voucher_and_its_claim(served: Served) -> None:
    su = await served.sdk("su1")
    dc = await served.sdk("dc1")
    city = await served.sdk("city")
    cash_before = (await su.balances()).cash
    async with su.private() as private:
        await dc.place_order(H100, Side.SELL, 16, 1_000)
        first = await su.place_order(H100, Side.BUY, 16, 1_000, voucher_id=1)
        assert first.order_id > 0
        await su.ping()
        kinds = {type(m) for m in private.pending()}
    assert {p.ExecutionReport, p.Balance, p.VoucherBalance, p.Contract} <= kinds
    assert su.orders[first.client_order_id].ord_status is p.OrdStatus.FILLED

    (contract,) = await su.contracts()
    assert (contract.buyer, contract.seller, contract.qty, contract.price) == (
        "su1",
        "dc1",
        16,
        1_000,
    )
    assert contract.cash + contract.voucher == 16_000 and contract.voucher == 4_800  # 30%
    await dc.place_order(H100, Side.SELL, 8, 1_000)
    await su.place_order(H100, Side.BUY, 8, 1_000)  # a second contract, newer
    newest, oldest = await su.contracts(limit=1), await su.contracts(before=contract.contract_id)
    assert newest[0].contract_id > contract.contract_id and oldest == []
    assert [c.contract_id for c in await su.every_contract()] == [
        newest[0].contract_id,
        contract.contract_id,
    ]
    tape = await su.trade_history(H100)  # public: the same fills, without the parties
    assert [t.trade_id for t in tape] == [newest[0].contract_id, contract.contract_id]
    assert [t.trade_id for t in await su.trade_history(H100, limit=1, before=tape[0].trade_id)] == [
        contract.contract_id
    ]
    balance = await su.balances()
    assert balance.holdings == {H100: 24}
    assert balance.cash == cash_before - contract.cash - newest[0].cash
    (voucher,) = await su.vouchers()
    assert voucher.spent == contract.voucher

    (claim,) = await dc.claims()
    assert claim.amount == contract.voucher and not claim.settled
    assert [c.claim_id for c in await city.claims()] == [claim.claim_id]
    ack = await city.settle_claim(claim.claim_id)
    assert ack.result["amount"] == claim.amount
    with pytest.raises(CommandRejected) as refused:
        await city.settle_claim(claim.claim_id)
    assert refused.value.code == "CLAIM_SETTLED"
    assert (await dc.claims())[0].settled


async def test_subscriptions_yield_typed_messages(served: Served) -> None:
    watcher = await served.sdk(None)
    su = await served.sdk("su2")
    dc = await served.sdk("dc2")
    async with watcher.trades(H100) as trades, watcher.ticker(H100) as ticker:
        first_ticker = await ticker.get()
        assert isinstance(first_ticker, p.Ticker) and first_ticker.instrument_id == H100
        await dc.place_order(H100, Side.SELL, 8, 1_200)
        await su.place_order(H100, Side.BUY, 8, 1_200)
        trade = await trades.get()
        assert isinstance(trade, p.PublicTrade)
        assert (trade.price, trade.qty, trade.aggressor) == (1_200, 8, Side.BUY)
        while (tick := await ticker.get()).last_price != 1_200:
            pass
        assert tick.volume_24h == 8
    async with watcher.subscribe(p.Channel.STATUS) as status:
        listed = {m.spec.instrument_id for m in [await status.get(), await status.get()]}
        assert listed == {H100, ASCEND}
    with pytest.raises(GatewayError) as refused:
        async with watcher.subscribe(p.Channel.ORDERS):
            pass
    assert refused.value.code == "NOT_AUTHENTICATED"


async def test_operator_and_issuer_requests(served: Served) -> None:
    ops = await served.sdk("ops")
    city = await served.sdk("city")
    now = now_ns()
    spec = InstrumentSpec(
        instrument_id="H20-SUZHOU-COMM-W2",
        gpu_model="H20",
        domestic=False,
        hub="suzhou",
        tier=Tier.COMMERCIAL,
        delivery_start=now + 400 * HOUR,
        delivery_end=now + 568 * HOUR,
        tick=5,
        lot=8,
    )
    assert (await ops.list_instrument(spec)).result["instrument_id"] == spec.instrument_id
    await ops.set_instrument_status(spec.instrument_id, InstrumentStatus.OPEN)
    await ops.admit_account("dc9", Role.PROVIDER, tier=Tier.COMMERCIAL, hub="suzhou")
    await ops.admit_account("su9", Role.STARTUP, revenue=3_000_000_00, projects=["x"])
    assert (await ops.deposit("su9", 500_000)).result["cash"] == 500_000
    assert (await ops.withdraw("su9", 100_000)).result["cash"] == 400_000
    await ops.relate_parties("dc9", "dc1")
    cap = await ops.register_capacity(spec.instrument_id, 800, provider="dc9")
    assert cap.result["capacity"] == 800
    issued = await ops.issue_api_key("su9")
    assert issued.account_id == "su9" and issued.key.startswith("sk_")
    su9 = Client(served.url, issued.key, reconnect=False)
    async with su9:
        assert su9.account_id == "su9"
        assert (await su9.balances()).cash == 400_000
    await ops.revoke_api_key(issued.key_id)
    with pytest.raises(AuthFailed):
        async with Client(served.url, issued.key, reconnect=False):
            pass
    async with ops.subscribe(p.Channel.ACCOUNTS) as accounts, ops.subscribe("orders") as orders:
        first = await accounts.get()
        assert isinstance(first, p.Balance)
        await (await served.sdk("su2")).place_order(H100, Side.BUY, 8, 800)
        while (report := await orders.get()).account != "su2":
            pass
        assert report.exec_type is p.ExecType.NEW
    everyone = {b.account_id for b in await ops.all_balances()}
    assert {"su9", "dc9", "su1"} <= everyone

    await city.create_programme(
        "sz2",
        "Suzhou commercial voucher",
        rate_state_domestic=5_000,
        rate_state_foreign=2_000,
        rate_commercial_domestic=2_000,
        rate_commercial_foreign=1_000,
        cap_per_holder_year=1_000_000,
        budget=5_000_000,
        expires_at=now + 1_000 * HOUR,
        basis=EligibilityBasis.MIN_REVENUE,
        min_revenue=1_000_000_00,
    )
    voucher_id = await city.issue_voucher("sz2", "su9", 200_000)
    assert voucher_id > 1
    assert {v.voucher_id for v in await city.vouchers()} >= {1, voucher_id}
    views = {v.spec.instrument_id: v for v in await ops.instruments()}
    assert views[spec.instrument_id].status is InstrumentStatus.OPEN

    await ops.halt(H100)
    su = await served.sdk("su1")
    with pytest.raises(OrderRejected) as halted:
        await su.place_order(H100, Side.BUY, 8, 1_000)
    assert halted.value.code == "MARKET_HALTED"
    assert halted.value.message.exec_type is p.ExecType.REJECTED
    await ops.resume(H100)
    assert (await su.place_order(H100, Side.BUY, 8, 1_000)).exec_type is p.ExecType.NEW
    with pytest.raises(CommandRejected) as duplicate:
        await ops.admit_account("su9", Role.STARTUP)
    assert duplicate.value.code == "DUPLICATE_ID"


async def test_refusals_are_typed_with_the_server_code(served: Served) -> None:
    su = await served.sdk("su1")
    with pytest.raises(OrderRejected) as off_lot:
        await su.place_order(H100, Side.BUY, 7, 1_000)
    assert off_lot.value.code == "OFF_LOT"
    with pytest.raises(OrderRejected) as market:
        await su.place_order(H100, Side.BUY, 8, order_type="MARKET", tif=TimeInForce.IOC)
    assert market.value.code == "NO_LIQUIDITY"
    await su.place_order(H100, Side.BUY, 8, 1_000, client_order_id="dup")
    with pytest.raises(OrderRejected) as duplicate:
        await su.place_order(H100, Side.BUY, 8, 1_000, client_order_id="dup")
    assert duplicate.value.code == "DUPLICATE_CLIENT_ORDER_ID"
    assert su.orders["dup"].exec_type is p.ExecType.NEW  # the refusal did not overwrite it
    with pytest.raises(CancelRejected) as unknown:
        await su.cancel_order(999_999)
    assert unknown.value.code == "UNKNOWN_ORDER"
    with pytest.raises(GatewayError) as not_permitted:
        await su.deposit("su1", 1)
    assert not_permitted.value.code == "NOT_PERMITTED"
    with pytest.raises(GatewayError) as no_order:
        await su.order_status(client_order_id="never")
    assert no_order.value.code == "UNKNOWN_ORDER"
    with pytest.raises(HttpError) as forbidden:
        await su.all_balances()
    # "500" while gateway/reports.py builds its HTTP errors with the deprecated
    # ``body=`` argument, which pytest's warnings-as-errors turns into a fault.
    assert forbidden.value.code in ("NOT_PERMITTED", "500")
    with pytest.raises(AuthFailed):
        async with Client(served.url, "sk_nobody_secret", reconnect=False):
            pass
    anonymous = await served.sdk(None)
    with pytest.raises(GatewayError) as anonymous_order:
        await anonymous.place_order(H100, Side.BUY, 8, 1_000)
    assert anonymous_order.value.code == "NOT_AUTHENTICATED"
    snapshot = await anonymous.book_snapshot(H100)
    assert snapshot.bids[0] == (1_000, 8)


async def test_connect_and_a_dropped_connection(served: Served) -> None:
    async with connect(served.url, key("su2"), backoff=Backoff(initial=0.02)) as su:
        first = await su.place_order(H100, Side.BUY, 8, 900)
        await su.drop_connection()
        status = await su.order_status(first.order_id)  # waits for the reconnect
        assert status.order_id == first.order_id and su.reconnects == 1
    with pytest.raises(ConnectionLost):
        await su.ping()


async def test_order_history_programmes_and_reports(served: Served) -> None:
    su = await served.sdk("su1")
    dc = await served.sdk("dc1")
    ops = await served.sdk("ops")
    await dc.place_order(H100, Side.SELL, 8, 1_000, client_order_id="ask")
    await su.place_order(H100, Side.BUY, 8, 1_000, client_order_id="filled")
    await su.place_order(H100, Side.BUY, 8, 900, client_order_id="resting")
    await su.place_order(H100, Side.BUY, 8, 800, client_order_id="gone")
    await su.cancel_order(client_order_id="gone")

    assert OrderView.__struct_fields__ == VIEW_FIELDS  # the SDK reads what the API shows
    history = await su.order_history()  # newest first, finished ones too
    assert [(o.client_order_id, o.status) for o in history] == [
        ("gone", p.OrdStatus.CANCELLED),
        ("resting", p.OrdStatus.NEW),
        ("filled", p.OrdStatus.FILLED),
    ]
    assert (history[2].cum_qty, history[2].cum_value, history[2].leaves) == (8, 8_000, 0)
    assert history[0].reason == "REQUESTED"
    assert [o.client_order_id for o in await su.order_history(open_only=True)] == ["resting"]
    assert [
        o.client_order_id for o in await su.order_history(limit=1, before=history[0].order_id)
    ] == ["resting"]
    assert await su.order_history(instrument_id=ASCEND) == []
    # Only an operator may read another account's orders.
    assert [o.client_order_id for o in await ops.order_history("dc1")] == ["ask"]
    with pytest.raises(HttpError):
        await su.order_history("dc1")

    (programme,) = await su.programmes()
    assert programme["issuer"] == "city" and programme["rate_state_domestic"] > 0
    (volume,) = [r for r in await ops.report("volume") if r["instrument_id"] == H100]
    assert (volume["trades"], volume["volume_gpu_hours"], volume["turnover"]) == (1, 8, 8_000)
    assert await su.report("price-index", days="7")
    with pytest.raises(HttpError):
        await su.report("volume")  # operators only
    with pytest.raises(ValueError):
        await su.report("nope")

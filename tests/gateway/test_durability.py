"""The gateway on the durable store: state and open orders survive a restart."""

from __future__ import annotations

from pathlib import Path

from gateway import protocol as p
from gateway.app import SERVICE
from tests.gateway.conftest import H100, GatewayFactory


async def test_orders_survive_a_restart_and_the_seed_runs_once(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    first = await start_gateway(data_dir)
    su1 = await first.connect("su1")
    rid = await su1.send(
        "new_order", client_order_id="keep", instrument_id=H100, side="BUY", qty=16, price=1000
    )
    accepted = await su1.expect(p.ExecutionReport, id=rid)
    last_seq = first.app[SERVICE].seq
    status, health = await first.get("/healthz")
    assert status == 200 and health["durable"] is True
    await first.server.close()

    second = await start_gateway(data_dir)
    assert second.app[SERVICE].seq == last_seq  # recovered, not seeded again
    status, health = await second.get("/healthz")
    assert health["recovered_seq"] == last_seq
    again = await second.connect("su1")
    rid = await again.send("order_status", client_order_id="keep")
    status_report = await again.expect(p.ExecutionReport, id=rid)
    assert status_report.order_id == accepted.order_id
    assert status_report.ord_status is p.OrdStatus.NEW and status_report.leaves_qty == 16
    rid = await again.send(
        "new_order", client_order_id="keep", instrument_id=H100, side="BUY", qty=16, price=1000
    )
    duplicate = await again.expect(p.ExecutionReport, id=rid)
    assert duplicate.reason == "DUPLICATE_CLIENT_ORDER_ID"
    status, book = await second.get(f"/api/v1/book/{H100}")
    assert book["bids"] == [[1000, 16]]


async def test_order_status_of_an_order_finished_before_a_restart_says_so(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    first = await start_gateway(data_dir)
    su1 = await first.connect("su1")
    rid = await su1.send(
        "new_order", client_order_id="gone", instrument_id=H100, side="BUY", qty=16, price=1000
    )
    accepted = await su1.expect(p.ExecutionReport, id=rid)
    rid = await su1.send("cancel_order", client_order_id="gone")
    cancelled = await su1.expect(p.ExecutionReport, id=rid)
    assert cancelled.exec_type is p.ExecType.CANCELLED
    await first.server.close()

    second = await start_gateway(data_dir)
    again = await second.connect("su1")
    rid = await again.send("order_status", client_order_id="gone")
    error = await again.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.ORDER_FINISHED_BEFORE_RESTART
    assert f"order {accepted.order_id} " in error.text
    # Another account's client order id, or one never used: no such order.
    su2 = await second.connect("su2")
    for client, coid in ((su2, "gone"), (again, "never")):
        rid = await client.send("order_status", client_order_id=coid)
        error = await client.expect(p.Error, id=rid)
        assert error.code is p.ErrorCode.UNKNOWN_ORDER


async def test_an_order_partly_filled_before_a_restart_keeps_what_it_filled(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    first = await start_gateway(data_dir)
    dc1 = await first.connect("dc1")
    await dc1.order("ask1", H100, "SELL", 8, 1_000)
    await dc1.order("ask2", H100, "SELL", 8, 1_010)
    su1 = await first.connect("su1")
    await su1.order("sweep", H100, "BUY", 24, 1_020)  # fills 8 at 1,000 and 8 at 1,010
    rid = await su1.send("order_status", client_order_id="sweep")
    before = await su1.expect(p.ExecutionReport, id=rid)
    assert (before.cum_qty, before.cum_value, before.leaves_qty) == (16, 16_080, 8)
    await first.server.close()

    second = await start_gateway(data_dir)
    again = await second.connect("su1")
    rid = await again.send("order_status", client_order_id="sweep")
    after = await again.expect(p.ExecutionReport, id=rid)
    assert after.ord_status is p.OrdStatus.PARTIALLY_FILLED
    assert (after.cum_qty, after.cum_value, after.leaves_qty) == (16, 16_080, 8)
    status, orders = await second.get("/api/v1/orders", "su1")
    assert status == 200
    (listed,) = [o for o in orders if o["client_order_id"] == "sweep"]
    assert (listed["cum_qty"], listed["cum_value"]) == (16, 16_080)

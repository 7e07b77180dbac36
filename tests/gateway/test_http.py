"""The HTTP API: health, metrics, reference data, own records, reports; and logs."""

from __future__ import annotations

import gc

import structlog

from gateway import protocol as p
from gateway.app import ROUTER
from tests.gateway.conftest import ASCEND, H100, Gateway, key


async def _trade(gateway: Gateway, voucher: bool = False) -> None:
    dc1 = await gateway.connect("dc1")
    su1 = await gateway.connect("su1")
    rid = await dc1.send(
        "new_order", client_order_id="s", instrument_id=H100, side="SELL", qty=16, price=1200
    )
    await dc1.expect(p.ExecutionReport, id=rid)
    rid = await su1.send(
        "new_order",
        client_order_id="b",
        instrument_id=H100,
        side="BUY",
        qty=16,
        price=1200,
        voucher_id=1 if voucher else 0,
    )
    await su1.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.FILL)


async def test_health_metrics_and_reference_data(gateway: Gateway) -> None:
    await _trade(gateway)
    anon = await gateway.connect()
    await anon.ws.send_str("not json")
    await anon.expect(p.Error)

    status, health = await gateway.get("/healthz")
    assert status == 200 and health["status"] == "ok" and health["seq"] > 0
    status, text = await gateway.get("/metrics")
    assert status == 200
    assert "suanli_orders_accepted_total 2" in text
    assert "suanli_trades_total 1" in text
    assert 'suanli_protocol_errors_total{code="BAD_JSON"} 1' in text
    assert 'suanli_requests_total{type="new_order"} 2' in text
    assert 'suanli_requests_total{type="amend_order"} 0' in text  # every type, from 0
    assert "suanli_connections 3" in text
    assert "suanli_exchange_queue_depth 0" in text
    assert "suanli_journal_append_seconds_count" in text

    status, instruments = await gateway.get("/api/v1/instruments")
    assert status == 200
    assert [i["spec"]["instrument_id"] for i in instruments] == sorted([ASCEND, H100])
    h100 = next(i for i in instruments if i["spec"]["instrument_id"] == H100)
    assert (h100["last_price"], h100["volume"], h100["status"]) == (1200, 16, "OPEN")
    status, _ = await gateway.get("/api/v1/instruments/NOPE")
    assert status == 404
    status, programmes = await gateway.get("/api/v1/programmes")
    assert [(x["programme_id"], x["issuer"]) for x in programmes] == [("sz", "city")]
    status, index = await gateway.get("/api/v1/reports/price-index")
    assert status == 200
    assert [(r["gpu_model"], r["vwap"], r["volume_gpu_hours"]) for r in index] == [
        ("H100", 1200, 16)
    ]


async def test_own_records_and_reports(gateway: Gateway) -> None:
    await _trade(gateway, voucher=True)
    status, account = await gateway.get("/api/v1/account", "su1")
    assert status == 200 and account["holdings"] == {H100: 16}
    status, contracts = await gateway.get("/api/v1/contracts", "dc1")
    assert [(c["buyer"], c["seller"], c["qty"]) for c in contracts] == [("su1", "dc1", 16)]
    status, contracts = await gateway.get("/api/v1/contracts", "su2")
    assert contracts == []
    status, vouchers = await gateway.get("/api/v1/vouchers", "su1")
    assert [v["voucher_id"] for v in vouchers] == [1] and vouchers[0]["spent"] > 0
    status, claims = await gateway.get("/api/v1/claims", "dc1")
    assert len(claims) == 1 and claims[0]["settled"] is False
    status, orders = await gateway.get("/api/v1/orders?status=all", "su1")
    assert [(o["client_order_id"], o["status"]) for o in orders] == [("b", "FILLED")]

    status, usage = await gateway.get("/api/v1/reports/voucher-usage", "city")
    assert status == 200
    (row,) = usage
    assert row["issued"] == 1_000_000 and row["spent"] == vouchers[0]["spent"]
    assert row["balance"] + row["reserved"] + row["spent"] == row["issued"]
    status, outstanding = await gateway.get("/api/v1/reports/claims", "city")
    assert outstanding == [
        {
            "issuer": "city",
            "outstanding": 1,
            "outstanding_amount": claims[0]["amount"],
            "settled": 0,
            "settled_amount": 0,
        }
    ]
    status, interest = await gateway.get("/api/v1/reports/open-interest", "ops")
    assert status == 200
    h100 = next(r for r in interest if r["instrument_id"] == H100)
    assert h100["open_interest_gpu_hours"] == 16
    status, volume = await gateway.get("/api/v1/reports/volume", "ops")
    h100 = next(r for r in volume if r["instrument_id"] == H100)
    assert (h100["volume_24h"], h100["vwap_24h"], h100["trades"], h100["trades_24h"]) == (
        16,
        1200,
        1,
        1,
    )
    status, _ = await gateway.get("/api/v1/reports/open-interest", "city")
    assert status == 403
    status, _ = await gateway.get("/api/v1/account", "nobody")
    assert status == 401


async def test_logs_never_carry_keys(gateway: Gateway) -> None:
    with structlog.testing.capture_logs() as logs:
        ops = await gateway.connect("ops")
        await gateway.connect("su1", header=True)
        rid = await ops.send("issue_api_key", account_id="su2")
        issued = await ops.expect(p.ApiKeyIssued, id=rid)
        anon = await gateway.connect()
        rid = await anon.send("auth", key=key("su2") + "wrong")
        await anon.expect(p.Error, id=rid)
    text = repr(logs)
    assert any(entry.get("event") == "api_key_issued" for entry in logs)
    for secret in (key("ops"), key("su1"), issued.key, key("su2")):
        assert secret.split("_")[2] not in text


async def _pages(gateway: Gateway, path: str, account: str, id_field: str) -> list[list[int]]:
    """Every page of a history, read with ``limit=2`` and each page's last id as the
    next ``before``."""
    pages: list[list[int]] = []
    before = ""
    while True:
        sep = "&" if "?" in path else "?"
        status, page = await gateway.get(f"{path}{sep}limit=2{before}", account)
        assert status == 200, page
        if not page:
            return pages
        pages.append([row[id_field] for row in page])
        before = f"&before={pages[-1][-1]}"


async def test_histories_come_newest_first_a_page_at_a_time(gateway: Gateway) -> None:
    su1 = await gateway.connect("su1")
    dc1 = await gateway.connect("dc1")
    mine: list[int] = []
    for n, (instrument_id, price) in enumerate([(H100, 900), (ASCEND, 900), (H100, 910)] * 2):
        mine.append((await su1.order(f"b{n}", instrument_id, "BUY", 8, price)).order_id)
    for n in range(3):  # fills su1's three best bids on H100 (two at 910, one at 900)
        await dc1.order(f"s{n}", H100, "SELL", 8, 900)
    _, sells = await gateway.get("/api/v1/orders?status=all", "dc1")
    everyone = sorted([*mine, *(o["order_id"] for o in sells)], reverse=True)

    pages = await _pages(gateway, "/api/v1/orders?status=all", "su1", "order_id")
    assert [len(page) for page in pages] == [2, 2, 2]
    assert [i for page in pages for i in page] == sorted(mine, reverse=True)
    pages = await _pages(gateway, "/api/v1/orders?status=all", "ops", "order_id")
    assert [i for page in pages for i in page] == everyone
    pages = await _pages(
        gateway, f"/api/v1/orders?status=all&instrument_id={ASCEND}", "su1", "order_id"
    )
    assert [i for page in pages for i in page] == [mine[4], mine[1]]
    pages = await _pages(gateway, "/api/v1/orders", "su1", "order_id")  # open: 6 - 3 filled
    assert [i for page in pages for i in page] == [mine[4], mine[3], mine[1]]

    pages = await _pages(gateway, "/api/v1/contracts", "su1", "contract_id")
    contract_ids = [i for page in pages for i in page]
    assert len(contract_ids) == 3 and contract_ids == sorted(contract_ids, reverse=True)
    assert [
        i for page in await _pages(gateway, "/api/v1/contracts", "ops", "contract_id") for i in page
    ] == contract_ids
    assert (await gateway.get("/api/v1/contracts", "su2"))[1] == []

    # The indexes grow for good: arrays, whose ids no collection visits (a list's are).
    router = gateway.app[ROUTER]
    indexes = [*router.register.ids_by_account.values(), *router.marketdata.contract_ids.values()]
    assert len(indexes) == 4
    assert not [x for ids in indexes for x in gc.get_referents(ids) if isinstance(x, int)]

    for query in ("status=done", "limit=0", "limit=1001", "before=0", "before=x"):
        status, error = await gateway.get(f"/api/v1/orders?{query}", "su1")
        assert (status, error["error"]) == (400, "INVALID_FIELD"), query
    status, error = await gateway.get("/api/v1/contracts?limit=-1", "su1")
    assert (status, error["error"]) == (400, "INVALID_FIELD")

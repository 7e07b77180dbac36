"""``GET /api/v1/trades/{instrument_id}``: public trade history, newest first, paged.

Trades are made over real WebSocket connections; the history must list exactly
them, without the parties, survive a restart, and refuse bad paging input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway import protocol as p
from tests.gateway.conftest import ASCEND, H100, Gateway, GatewayFactory, Traders

PUBLIC_FIELDS = {"type", "instrument_id", "trade_id", "price", "qty", "aggressor", "ts"}


async def _history(gateway: Gateway, query: str, account: str | None = None) -> list[Any]:
    status, body = await gateway.get(f"/api/v1/trades/{query}", account)
    assert status == 200, body
    assert isinstance(body, list)
    return body


async def test_history_lists_the_instruments_trades_newest_first_without_parties(
    gateway: Gateway,
) -> None:
    traders = await Traders.connect(gateway)
    made = [
        await traders.trade(H100, 1000, 8, "BUY"),
        await traders.trade(ASCEND, 900, 8, "BUY"),
        await traders.trade(H100, 1010, 16, "SELL"),
        await traders.trade(H100, 990, 24, "BUY"),
    ]
    h100 = [m for m in made if m.instrument_id == H100]
    rows = await _history(gateway, H100)
    assert [r["trade_id"] for r in rows] == [m.trade_id for m in reversed(h100)]
    assert [(r["price"], r["qty"], r["aggressor"]) for r in rows] == [
        (990, 24, "BUY"),
        (1010, 16, "SELL"),
        (1000, 8, "BUY"),
    ]
    assert [r["ts"] for r in rows] == [m.ts for m in reversed(h100)]
    for row in rows:
        assert set(row) == PUBLIC_FIELDS and row["instrument_id"] == H100
    text = repr(rows)
    assert "dc1" not in text and "su2" not in text
    (ascend,) = await _history(gateway, ASCEND)
    assert ascend["trade_id"] == made[1].trade_id
    # Public data: anonymous readers and every role read the same history.
    for account in ("su1", "dc2", "city", "ops"):
        assert await _history(gateway, H100, account) == rows


async def test_pages_go_back_by_trade_id(gateway: Gateway) -> None:
    traders = await Traders.connect(gateway)
    ids = [(await traders.trade(H100, 1000 + 10 * (i % 3), 8, "BUY")).trade_id for i in range(11)]
    newest_first = ids[::-1]
    assert [r["trade_id"] for r in await _history(gateway, H100)] == newest_first
    pages: list[list[int]] = []
    query = f"{H100}?limit=4"
    while True:
        page = [r["trade_id"] for r in await _history(gateway, query)]
        if not page:
            break
        assert len(page) <= 4
        pages.append(page)
        query = f"{H100}?limit=4&before={page[-1]}"
    assert [len(x) for x in pages] == [4, 4, 3]
    assert [i for page in pages for i in page] == newest_first
    # `before` need not be a trade of this instrument: it is a bound on trade ids.
    middle = ids[5]
    assert [r["trade_id"] for r in await _history(gateway, f"{H100}?before={middle}")] == ids[:5][
        ::-1
    ]
    assert await _history(gateway, f"{H100}?before={ids[0]}") == []
    assert await _history(gateway, f"{H100}?limit=1000&before=1") == []


async def test_bad_paging_is_refused_with_a_clear_error(gateway: Gateway) -> None:
    traders = await Traders.connect(gateway)
    await traders.trade(H100, 1000, 8, "BUY")
    for query in ("limit=0", "limit=1001", "limit=-5", "limit=ten", "limit=", "limit=2.5"):
        status, body = await gateway.get(f"/api/v1/trades/{H100}?{query}")
        assert status == 400, query
        assert body["error"] == "INVALID_FIELD" and "limit" in body["text"], body
    for query in ("before=0", "before=-1", "before=x", f"before={2**64}"):
        status, body = await gateway.get(f"/api/v1/trades/{H100}?{query}")
        assert status == 400, query
        assert body["error"] == "INVALID_FIELD" and "before" in body["text"], body
    status, body = await gateway.get("/api/v1/trades/NO-SUCH-INSTRUMENT")
    assert status == 404
    assert body == {"error": "UNKNOWN_INSTRUMENT", "text": "no instrument 'NO-SUCH-INSTRUMENT'"}
    status, body = await gateway.get("/api/v1/reports/price-index?days=week")
    assert status == 400 and body["error"] == "INVALID_FIELD" and "days" in body["text"]
    # Every refusal of the HTTP API has the same shape.
    status, body = await gateway.get("/api/v1/account", "nobody")
    assert status == 401 and body == {"error": "AUTH_FAILED", "text": "unknown or revoked API key"}
    # Nothing changed: the one trade is still all there is.
    assert len(await _history(gateway, H100)) == 1


async def test_an_auction_fill_has_no_aggressor(gateway: Gateway) -> None:
    ops = await gateway.connect("ops")
    traders = await Traders.connect(gateway)
    rid = await ops.send("set_instrument_status", instrument_id=ASCEND, status="HALTED")
    await ops.expect(p.Ack, id=rid)
    rid = await ops.send("set_instrument_status", instrument_id=ASCEND, status="AUCTION")
    await ops.expect(p.Ack, id=rid)
    for client, side in ((traders.seller, "SELL"), (traders.buyer, "BUY")):
        rid = await client.send(
            "new_order",
            client_order_id=f"auction-{side}",
            instrument_id=ASCEND,
            side=side,
            qty=8,
            price=950,
        )
        await client.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.NEW)
    rid = await ops.send("set_instrument_status", instrument_id=ASCEND, status="OPEN")
    await ops.expect(p.Ack, id=rid)
    fill = await traders.buyer.expect(p.ExecutionReport, exec_type=p.ExecType.FILL)
    (row,) = await _history(gateway, ASCEND)
    assert (row["trade_id"], row["price"], row["qty"], row["aggressor"]) == (
        fill.trade_id,
        950,
        8,
        None,
    )


async def test_history_survives_a_restart(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    first = await start_gateway(data_dir)
    traders = await Traders.connect(first)
    for i in range(3):
        await traders.trade(H100, 1000 + 10 * i, 8, "SELL" if i == 1 else "BUY")
    before = await _history(first, H100)
    assert len(before) == 3
    await first.server.close()

    second = await start_gateway(data_dir)
    assert await _history(second, H100) == before
    # New trades go on top of the recovered history.
    traders = await Traders.connect(second)
    traders.n = 100  # fresh client order ids
    fill = await traders.trade(H100, 1050, 8, "BUY")
    after = await _history(second, H100)
    assert [r["trade_id"] for r in after] == [fill.trade_id] + [r["trade_id"] for r in before]
    # Each party's contracts too: recovered, then the new one on top.
    for account in ("dc1", "su2", "ops"):
        status, contracts = await second.get("/api/v1/contracts", account)
        assert status == 200
        assert [c["contract_id"] for c in contracts] == [r["trade_id"] for r in after], account
    status, contracts = await second.get("/api/v1/contracts", "su1")
    assert contracts == []

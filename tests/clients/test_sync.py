"""The blocking wrapper: the same methods, answers and errors as the async client."""

from __future__ import annotations

import asyncio

import pytest

from clients.sdk import OrderRejected
from clients.sync import SyncClient
from gateway import protocol as p
from tests.clients.conftest import Served
from tests.gateway.conftest import H100, key


def script(url: str) -> dict[str, object]:
    """What a notebook would do, all blocking."""
    with SyncClient(url, key("su1"), reconnect=False) as su, SyncClient(url, key("dc1")) as dc:
        with su.book(H100) as book, su.subscribe("trades", H100) as trades:
            first = book.get(timeout=10)
            dc.place_order(H100, "SELL", 8, 1_000)
            bought = su.place_order(H100, "BUY", 8, 1_000)
            trade = trades.get(timeout=10)
        with pytest.raises(OrderRejected) as refused:
            su.place_order(H100, "BUY", 3, 1_000)
        return {
            "synced": first.synced,
            "bought": bought,
            "trade": trade,
            "refused": refused.value.code,
            "balance": su.balances(),
            "open": su.open_orders(),
            "account": su.account_id,
            "orders": dict(su.orders),
        }


async def test_a_script_through_the_blocking_client(served: Served) -> None:
    seen = await asyncio.to_thread(script, served.url)
    assert seen["synced"] is True and seen["account"] == "su1"
    bought = seen["bought"]
    assert isinstance(bought, p.ExecutionReport) and bought.exec_type is p.ExecType.NEW
    trade = seen["trade"]
    assert isinstance(trade, p.PublicTrade) and (trade.price, trade.qty) == (1_000, 8)
    assert seen["refused"] == "OFF_LOT"
    balance = seen["balance"]
    assert isinstance(balance, p.Balance) and balance.holdings == {H100: 8}
    assert seen["open"] == []

"""The ``suanli`` command line against a real gateway.

Most commands run the entry point's click group (``clients.cli:main``, what the
console script calls) in a worker thread while the gateway serves from the test's
event loop, one at a time; ``test_the_installed_script`` runs the installed
``suanli`` executable itself as a process.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from clients import cli_market
from clients.cli import main
from gateway.app import ROUTER
from gateway.marketdata import book_checksum
from tests.clients.conftest import Served
from tests.clients.proxy import Proxy
from tests.gateway.conftest import H100, key

SUANLI = Path(sys.executable).with_name("suanli")


class Result:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def _env(served: Served, account: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUANLI_")}
    env["SUANLI_URL"] = served.url
    if account:
        env["SUANLI_API_KEY"] = key(account)
    return env


_lock = threading.Lock()  # CliRunner swaps the process's stdout: one command at a time


def _invoke(args: list[str], env: dict[str, str | None]) -> Any:
    with _lock:
        return CliRunner().invoke(main, args, env=env)


async def suanli(served: Served, *args: str, account: str | None = None) -> Result:
    """``suanli ARGS`` through the click entry point, in a thread (it runs its own loop)."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SUANLI_")}
    env["SUANLI_URL"] = served.url
    env["SUANLI_API_KEY"] = key(account) if account else None
    result = await asyncio.to_thread(_invoke, list(args), env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


async def suanli_process(served: Served, *args: str, account: str | None = None) -> Result:
    """``suanli ARGS`` as a process of the installed console script."""
    process = await asyncio.create_subprocess_exec(
        str(SUANLI),
        *args,
        env=_env(served, account),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def test_the_installed_script(served: Served) -> None:
    placed, refused = await asyncio.gather(
        suanli_process(served, "order", H100, "buy", "16", "9.00", "--json", account="su1"),
        suanli_process(served, "order", H100, "buy", "7", "9.00", "--json", account="su2"),
    )
    assert placed.code == 0, placed.stderr
    assert placed.json[0]["exec_type"] == "NEW"
    assert refused.code == 1
    assert refused.json == {
        "ok": False,
        "error": "OFF_LOT",
        "text": "quantity 7 is not a whole number of lots of 8 GPU-hours",
    }


async def test_trading_commands(served: Served) -> None:
    placed = await suanli(served, "order", H100, "buy", "16", "9.00", "--json", account="su1")
    assert placed.code == 0, placed.stderr
    (new,) = placed.json
    assert (new["exec_type"], new["price"], new["qty"]) == ("NEW", 900, 16)
    order_id = str(new["order_id"])

    listed, amended, book = await asyncio.gather(
        suanli(served, "orders", "--json", account="su1"),
        suanli(served, "amend", order_id, "--qty", "8", "--json", account="su1"),
        suanli(served, "book", H100, "--json"),
    )
    assert [o["order_id"] for o in listed.json] == [new["order_id"]]
    assert amended.code == 0 and amended.json["exec_type"] == "REPLACED"
    assert book.code == 0 and book.json["bids"][0][0] == 900
    bids = [tuple(level) for level in book.json["bids"]]
    asks = [tuple(level) for level in book.json["asks"]]
    assert book.json["checksum"] == book_checksum(bids, asks, 10)
    assert book.json["seq"] <= served.app[ROUTER].marketdata.feed(H100).seq

    cancelled = await suanli(served, "cancel", order_id, "--json", account="su1")
    assert cancelled.code == 0 and cancelled.json["exec_type"] == "CANCELLED"

    sell = await suanli(served, "order", H100, "sell", "8", "10.00", "--json", account="dc1")
    assert sell.code == 0
    buy = await suanli(
        served, "order", H100, "buy", "8", "10.00", "--voucher", "1", "--json", account="su1"
    )
    assert [r["exec_type"] for r in buy.json] == ["NEW", "FILL"]
    balances, vouchers, contracts = await asyncio.gather(
        suanli(served, "balances", "--json", account="su1"),
        suanli(served, "vouchers", "--json", account="su1"),
        suanli(served, "contracts", "--json", account="su1"),
    )
    assert balances.json["holdings"] == {H100: 8}
    (contract,) = contracts.json
    assert contract["voucher"] == 2_400 and contract["cash"] == 5_600
    assert vouchers.json[0]["spent"] == 2_400

    everything = await suanli(served, "cancel", "--all", "--json", account="su1")
    assert everything.code == 0 and everything.json["cancelled"] == 0


async def test_order_history_and_an_operators_contracts_by_account(served: Served) -> None:
    await suanli(served, "order", H100, "sell", "8", "10.00", "--json", account="dc1")
    await suanli(served, "order", H100, "buy", "8", "10.00", "--json", account="su1")
    rest = await suanli(served, "order", H100, "buy", "8", "9.00", "--json", account="su1")
    await suanli(served, "cancel", str(rest.json[0]["order_id"]), "--json", account="su1")

    history = await suanli(served, "orders", "--all", "--json", account="su1")
    assert [(o["status"], o["reason"], o["cum_qty"]) for o in history.json] == [
        ("CANCELLED", "REQUESTED", 0),
        ("FILLED", "", 8),
    ]
    shown = await suanli(served, "orders", "--all", "--limit", "1", account="su1")
    assert shown.code == 0 and "CANCELLED REQUESTED" in shown.stdout
    assert "FILLED" not in shown.stdout
    still_open = await suanli(served, "orders", "--json", account="su1")
    assert still_open.json == []

    theirs = await suanli(served, "contracts", "--account", "dc1", "--json", account="ops")
    assert [(c["buyer"], c["seller"]) for c in theirs.json] == [("su1", "dc1")]
    assert (
        await suanli(served, "contracts", "--account", "su2", "--json", account="ops")
    ).json == []
    refused = await suanli(served, "contracts", "--account", "dc1", "--json", account="su1")
    assert refused.code == 1


async def test_operator_and_issuer_commands(served: Served) -> None:
    halted = await suanli(served, "instrument", "halt", H100, "--json", account="ops")
    assert halted.code == 0 and halted.json["result"]["status"] == "HALTED"
    refused = await suanli(served, "order", H100, "buy", "8", "9.00", "--json", account="su1")
    assert refused.code == 1
    assert refused.json == {
        "ok": False,
        "error": "MARKET_HALTED",
        "text": "the instrument is halted",
    }
    resumed, shown = await asyncio.gather(
        suanli(served, "instrument", "resume", H100, "--json", account="ops"),
        suanli(served, "instrument", "show", "--json"),
    )
    assert resumed.json["result"]["status"] == "OPEN"
    assert H100 in {row["spec"]["instrument_id"] for row in shown.json}

    issued = await suanli(served, "voucher", "issue", "sz", "su2", "1000", "--json", account="city")
    assert issued.code == 0 and issued.json["amount"] == 100_000
    await suanli(served, "order", H100, "sell", "8", "10.00", "--json", account="dc1")
    bought = await suanli(
        served,
        "order",
        H100,
        "buy",
        "8",
        "10.00",
        "--voucher",
        str(issued.json["voucher_id"]),
        "--json",
        account="su2",
    )
    assert bought.json[-1]["exec_type"] == "FILL"
    claims = await suanli(served, "claims", "--open", "--json", account="city")
    assert len(claims.json) == 1
    settled = await suanli(served, "settle", "--all", "--json", account="city")
    assert settled.code == 0 and settled.json["settled"][0]["amount"] == 2_400
    again = await suanli(
        served, "settle", str(claims.json[0]["claim_id"]), "--json", account="city"
    )
    assert again.code == 1 and again.json["refused"][0]["error"] == "CLAIM_SETTLED"


async def test_errors_have_clear_messages_and_exit_codes(served: Served) -> None:
    off_lot, bad_key, unreachable, usage, not_permitted, table = await asyncio.gather(
        suanli(served, "order", H100, "buy", "7", "9.00", account="su1"),
        suanli(served, "orders", "--json", "--key", "sk_nobody_secret"),
        suanli(served, "orders", "--json", "--url", "http://127.0.0.1:9", account="su1"),
        suanli(served, "cancel", account="su1"),
        suanli(served, "instrument", "halt", H100, "--json", account="su1"),
        suanli(served, "orders", account="su1"),
    )
    assert off_lot.code == 1 and "OFF_LOT" in off_lot.stderr and "lots" in off_lot.stderr
    assert bad_key.code == 3 and bad_key.json["error"] == "AUTH_FAILED"
    assert unreachable.code == 3 and unreachable.json["error"] == "UNREACHABLE"
    assert usage.code == 2 and "ORDER_ID" in usage.stderr
    assert not_permitted.code == 1 and not_permitted.json["error"] == "NOT_PERMITTED"
    assert table.code == 0 and "open order" in table.stdout
    bad_price = await suanli(served, "order", H100, "buy", "8", "9.001", account="su1")
    assert bad_price.code == 2 and "whole number of fen" in bad_price.stderr


async def test_a_missing_key_says_how_to_give_one(served: Served) -> None:
    over_http, over_ws = await asyncio.gather(
        suanli(served, "balances"), suanli(served, "orders", "--json")
    )
    assert over_http.code == 1 and "NOT_AUTHENTICATED" in over_http.stderr
    assert "--key" in over_http.stderr and "SUANLI_API_KEY" in over_http.stderr
    assert over_ws.code == 1 and over_ws.json["error"] == "NOT_AUTHENTICATED"
    assert "--key" in over_ws.json["text"] and "SUANLI_API_KEY" in over_ws.json["text"]


async def test_simulate_with_a_start_up_key_is_not_permitted(
    served: Served, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    refused = await suanli(served, "simulate", "--out", str(report), "--json", account="su1")
    assert refused.code == 1
    assert refused.json == {
        "ok": False,
        "error": "NOT_PERMITTED",
        "text": "simulate needs an operator's API key",
    }
    assert not report.exists()


async def test_tables_print_ids_and_prices_whole(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    placed = await suanli(served, "order", H100, "buy", "16", "8.50", account="su1")
    assert placed.code == 0, placed.stderr
    monkeypatch.setenv("COLUMNS", "60")  # what rich would fit a table to, cutting cells short
    orders, shown = await asyncio.gather(
        suanli(served, "orders", account="su1"), suanli(served, "instrument", "show")
    )
    for result in (placed, orders):
        rows = [line for line in result.stdout.splitlines() if H100 in line]
        assert any(" 8.50 " in row and " 16 " in row for row in rows), result.stdout
    assert any(H100 in line and "OPEN" in line for line in shown.stdout.splitlines())
    assert "…" not in placed.stdout + orders.stdout + shown.stdout


async def test_the_live_book_opens_with_the_last_trades(served: Served) -> None:
    await suanli(served, "order", H100, "sell", "8", "10.10", "--json", account="dc1")
    bought = await suanli(served, "order", H100, "buy", "8", "10.10", "--json", account="su1")
    assert bought.json[-1]["exec_type"] == "FILL"
    watched = await suanli(served, "book", H100, "--seconds", "0.3")
    assert watched.code == 0, watched.stderr
    tape = watched.stdout[watched.stdout.rindex("last trades") :]
    (row,) = [line for line in tape.splitlines() if " 10.10 " in line]
    assert " 8 " in row and "BUY" in row  # traded before the view opened


async def test_the_live_book_says_when_it_is_disconnected(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = Proxy("127.0.0.1", served.server.port or 0)
    await proxy.start()
    drawn = threading.Event()  # the first frame: the view is up, so the outage hits it
    draw = cli_market._book_view

    def drawing(*args: Any, **kwargs: Any) -> Any:
        drawn.set()
        return draw(*args, **kwargs)

    monkeypatch.setattr(cli_market, "_book_view", drawing)
    try:
        watching = asyncio.create_task(
            suanli(served, "book", H100, "--url", proxy.url, "--seconds", "2")
        )
        assert await asyncio.to_thread(drawn.wait, 30), "the view never opened"
        await proxy.close()  # the gateway is gone: the view cannot reconnect
        watched = await watching
    finally:
        await proxy.close()
    assert watched.code == 3, watched.stdout + watched.stderr
    last_view = watched.stdout[watched.stdout.rindex("last trades") :]
    assert "disconnected, reconnecting" in last_view and "in sync" not in last_view
    assert "UNREACHABLE" in watched.stderr and "disconnected" in watched.stderr


async def test_an_expiry_from_now_makes_a_gtd_order(served: Served) -> None:
    before = time.time_ns()
    placed = await suanli(
        served, "order", H100, "buy", "16", "8.50", "--expire-at", "+1h", "--json", account="su1"
    )
    assert placed.code == 0, placed.stderr
    (new,) = placed.json
    assert new["tif"] == "GTD"
    assert before + 3_600 * 10**9 <= new["expire_at"] <= time.time_ns() + 3_600 * 10**9
    ioc = await suanli(
        served,
        *("order", H100, "buy", "16", "8.50", "--expire-at", "+1h", "--tif", "ioc", "--json"),
        account="su1",
    )
    assert ioc.code == 1 and ioc.json["error"] == "INVALID_EXPIRY"  # the --tif given wins


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        if hasattr(command, "commands"):
            out.extend(_commands(command, path))
        else:
            out.append(path)
    return out


@pytest.mark.parametrize("path", _commands(main), ids=" ".join)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, path

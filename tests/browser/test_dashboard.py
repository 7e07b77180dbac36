"""The dashboard in a real headless Chromium against a live gateway with the demo market.

Each test starts its own gateway (``gateway`` fixture) and compares what the
page shows with what the server holds, read from the gateway's own state on
its event loop. A test client trades over a separate WebSocket, the way any
participant would; the page must follow from its feed alone.
"""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from gateway import demo
from tests.browser.live import LiveGateway

H800 = "H800-SUZHOU-STATE-W1"


def fen(amount: int) -> str:
    """As the page formats money: 123456 -> "1,234.56"."""
    return f"{amount // 100:,}.{amount % 100:02d}"


def sign_in(page: Any, gateway: LiveGateway, account_id: str, hash_: str = "") -> None:
    page.goto(f"{gateway.url}/{hash_}")
    page.fill("#api-key", demo.demo_key(account_id))
    page.click("#signin-button")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#who-account")).to_have_text(account_id)


def ladder(page: Any) -> dict[str, list[list[int]]]:
    return page.evaluate(
        """() => ({
            bids: [...document.querySelectorAll('#ladder .lvl.bid')]
                .map(e => [Number(e.dataset.price), Number(e.dataset.qty)]),
            asks: [...document.querySelectorAll('#ladder .lvl.ask')]
                .map(e => [Number(e.dataset.price), Number(e.dataset.qty)]).reverse(),
        })"""
    )


def expect_ladder_is_server_book(page: Any, gateway: LiveGateway, instrument_id: str) -> None:
    expect(page.locator("#ladder")).to_have_attribute("data-levels", re.compile(r"^\d+$"))
    levels = int(page.locator("#ladder").get_attribute("data-levels") or 0)
    assert levels >= 5, f"the ladder shows only {levels} levels a side"
    bids, asks = gateway.book(instrument_id)
    want = {"bids": bids[:levels], "asks": asks[:levels]}
    page.wait_for_function(
        """want => {
            const rows = side => [...document.querySelectorAll(`#ladder .lvl.${side}`)]
                .map(e => [Number(e.dataset.price), Number(e.dataset.qty)]);
            const got = {bids: rows('bid'), asks: rows('ask').reverse()};
            return JSON.stringify(got) === JSON.stringify(want)
                && document.querySelector('#book-info').dataset.synced === 'true';
        }""",
        arg=want,
    )
    assert ladder(page) == want


def test_page_loads_and_signs_in_with_the_keys_role(page: Any, gateway: LiveGateway) -> None:
    page.goto(f"{gateway.url}/")
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#api-key", "sk_nobody_wrong")
    page.click("#signin-button")
    expect(page.locator("#signin-error")).to_contain_text("refused")

    page.fill("#api-key", demo.demo_key("ops"))
    page.click("#signin-button")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#who-role")).to_have_text("Operator")
    expect(page.locator('#tabs [data-view="participants"]')).to_be_visible()


def test_overview_lists_every_instrument_with_the_servers_prices(
    page: Any, gateway: LiveGateway
) -> None:
    sign_in(page, gateway, "ops")
    instruments = gateway.instruments()
    rows = page.locator("#instruments tbody tr[data-instrument]")
    expect(rows).to_have_count(len(instruments))
    for instrument_id in instruments:
        bids, asks = gateway.book(instrument_id)
        row = page.locator(f'#instruments tr[data-instrument="{instrument_id}"]')
        expect(row.locator(".c-bid")).to_have_text(fen(bids[0][0]) if bids else "—")
        expect(row.locator(".c-ask")).to_have_text(fen(asks[0][0]) if asks else "—")
        expect(row.locator(".c-status")).to_contain_text(
            {"OPEN": "Open", "AUCTION": "Auction"}[gateway.status(instrument_id)]
        )
    # Filters narrow the table to what they select.
    page.select_option("#filter-gpu", "H800")
    expect(rows).to_have_count(sum(1 for i in instruments if i.startswith("H800-")))
    page.select_option("#filter-tier", "COMMERCIAL")
    expect(rows).to_have_count(0)


def test_instrument_view_shows_the_book_the_server_holds(page: Any, gateway: LiveGateway) -> None:
    sign_in(page, gateway, "ops")
    page.click(f'#instruments tr[data-instrument="{H800}"] a')
    expect(page.locator("main h1")).to_contain_text(H800)
    expect_ladder_is_server_book(page, gateway, H800)
    bids, asks = gateway.book(H800)
    expect(page.locator("#ticker")).to_have_attribute("data-bid", str(bids[0][0]))
    expect(page.locator("#ticker")).to_have_attribute("data-ask", str(asks[0][0]))
    # The depth and price charts are drawn by lightweight-charts into canvases.
    expect(page.locator("#depth-chart canvas").first).to_be_visible()
    expect(page.locator("#price-chart canvas").first).to_be_visible()


def test_page_follows_a_trade_made_by_another_client(page: Any, gateway: LiveGateway) -> None:
    sign_in(page, gateway, "qingyun-ai", f"#/i/{H800}")
    expect_ladder_is_server_book(page, gateway, H800)
    _, asks = gateway.book(H800)
    price, _ = asks[0]
    answers = gateway.request(
        "xihu-llm",
        {
            "type": "new_order",
            "client_order_id": "browser-test-buy",
            "instrument_id": H800,
            "side": "BUY",
            "qty": 8,
            "price": price,
        },
    )
    fills = [a for a in answers if a.get("exec_type") in ("FILL", "PARTIAL_FILL")]
    assert fills, answers
    trade_id = fills[0]["trade_id"]
    newest = page.locator("#tape tbody tr").first
    expect(newest).to_have_attribute("data-trade", str(trade_id))
    expect(newest).to_have_attribute("data-price", str(price))
    expect(newest).to_have_attribute("data-qty", "8")
    expect(page.locator("#ticker")).to_have_attribute("data-last", str(price))
    expect_ladder_is_server_book(page, gateway, H800)


def test_operator_halts_an_instrument_after_confirming(page: Any, gateway: LiveGateway) -> None:
    sign_in(page, gateway, "ops", f"#/i/{H800}")
    status = page.locator("#inst-status")
    expect(status).to_have_attribute("data-status", "OPEN")

    page.click('#controls [data-action="HALTED"]')
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-cancel")
    expect(page.locator("#confirm")).to_be_hidden()
    assert gateway.status(H800) == "OPEN"

    page.click('#controls [data-action="HALTED"]')
    page.click("#confirm-ok")
    expect(status).to_have_attribute("data-status", "HALTED")
    assert gateway.status(H800) == "HALTED"
    expect(page.locator("#toasts")).to_contain_text("is now Halted")
    # Halted: the controls now offer resuming.
    expect(page.locator('#controls [data-action="OPEN"]')).to_have_text("Resume")

    page.click('#controls [data-action="OPEN"]')
    page.click("#confirm-ok")
    expect(status).to_have_attribute("data-status", "OPEN")
    assert gateway.status(H800) == "OPEN"


def test_non_operator_has_no_controls_and_is_refused(page: Any, gateway: LiveGateway) -> None:
    sign_in(page, gateway, "qingyun-ai", f"#/i/{H800}")
    expect(page.locator("#who-role")).to_have_text("Start-up")
    expect(page.locator("#inst-status")).to_have_attribute("data-status", "OPEN")
    expect(page.locator("#controls button")).to_have_count(0)
    expect(page.locator('#tabs [data-view="participants"]')).to_be_hidden()
    # Sent anyway (as from the console), the gateway refuses it and the page says so.
    answer = page.evaluate(f"() => window.suanli.setStatus('{H800}', 'HALTED')")
    assert answer["type"] == "error" and answer["code"] == "NOT_PERMITTED", answer
    expect(page.locator("#toasts")).to_contain_text("only operators")
    assert gateway.status(H800) == "OPEN"
    expect(page.locator("#inst-status")).to_have_attribute("data-status", "OPEN")


def test_lost_connection_is_shown_then_resynchronised(page: Any, gateway: LiveGateway) -> None:
    sign_in(page, gateway, "ops", f"#/i/{H800}")
    expect_ladder_is_server_book(page, gateway, H800)
    gateway.drop_connections()
    # The market moves while the page may be away.
    _, asks = gateway.book(H800)
    gateway.request(
        "pengcheng-vision",
        {
            "type": "new_order",
            "client_order_id": "while-away",
            "instrument_id": H800,
            "side": "BUY",
            "qty": asks[0][1],
            "price": asks[0][0],
        },
    )
    page.wait_for_function(
        """() => {
            const log = window.suanli.state.connLog;
            return log.includes('lost') && log[log.length - 1] === 'open';
        }"""
    )
    expect(page.locator("#banner")).to_contain_text("Connection to the gateway lost")
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect_ladder_is_server_book(page, gateway, H800)
    expect(page.locator("#ticker")).to_have_attribute("data-last", str(asks[0][0]))


def test_operator_sees_participants_and_every_programme(page: Any, gateway: LiveGateway) -> None:
    sign_in(page, gateway, "ops", "#/participants")
    rows = page.locator("#participants tbody tr[data-account]")
    expect(rows).to_have_count(len(demo.demo_accounts()))
    expect(page.locator('#participants tr[data-account="suzhou-scc"] .c-open')).not_to_have_text(
        "0"
    )
    page.click('#tabs [data-view="vouchers"]')
    expect(page.locator("#programmes tbody tr")).to_have_count(3)


def test_issuer_sees_only_its_own_programme(page: Any, gateway: LiveGateway) -> None:
    sign_in(page, gateway, "shanghai-gov", "#/vouchers")
    expect(page.locator("#who-role")).to_have_text("Issuer")
    expect(page.locator("#programmes tbody tr")).to_have_count(1)
    expect(page.locator('#programmes tr[data-programme="sh-compute"]')).to_be_visible()
    expect(page.locator('#tabs [data-view="participants"]')).to_be_hidden()


def test_trade_history_fills_the_tape_and_chart_on_load(page: Any, gateway: LiveGateway) -> None:
    # A start-up (no access to contracts) sees the market's history at once.
    history = gateway.trades(H800, 1000)
    assert history, "the demo market should have traded"
    sign_in(page, gateway, "xihu-llm", f"#/i/{H800}")
    rows = page.locator("#tape tbody tr[data-trade]")
    expect(rows).to_have_count(min(len(history), 60))
    expect(rows.first).to_have_attribute("data-trade", str(history[0]["trade_id"]))
    expect(rows.first).to_have_attribute("data-price", str(history[0]["price"]))
    expect(rows.last).to_have_attribute(
        "data-trade", str(history[min(len(history), 60) - 1]["trade_id"])
    )
    expect(page.locator("#price-chart")).to_have_attribute("data-bars", re.compile(r"^[1-9]\d*$"))
    expect(page.locator("#tape + .footnote, .p-tape .footnote")).to_have_attribute(
        "data-history", str(len(history))
    )


def test_overview_open_interest_comes_from_the_ticker(page: Any, gateway: LiveGateway) -> None:
    sign_in(page, gateway, "qingyun-ai")
    for instrument_id in gateway.instruments():
        row = page.locator(f'#instruments tr[data-instrument="{instrument_id}"]')
        expect(row.locator(".c-oi")).to_have_text(f"{gateway.open_interest(instrument_id):,}")
    before = gateway.open_interest(H800)
    _, asks = gateway.book(H800)
    gateway.request(
        "xihu-llm",
        {
            "type": "new_order",
            "client_order_id": "oi-buy",
            "instrument_id": H800,
            "side": "BUY",
            "qty": 8,
            "price": asks[0][0],
        },
    )
    assert gateway.open_interest(H800) == before + 8
    row = page.locator(f'#instruments tr[data-instrument="{H800}"]')
    expect(row.locator(".c-oi")).to_have_text(f"{before + 8:,}")


def test_operator_voucher_view_follows_the_vouchers_channel(
    page: Any, gateway: LiveGateway
) -> None:
    sign_in(page, gateway, "ops", "#/vouchers")
    rows = page.locator("#vouchers tbody tr[data-voucher]")
    expect(rows).to_have_count(5)
    expect(page.locator('#claims-by-issuer tr[data-issuer="shanghai-gov"]')).to_have_count(0)
    # An issuer issues a voucher: the operator's page shows it without reloading.
    (ack,) = gateway.request(
        "shanghai-gov",
        {
            "type": "issue_voucher",
            "programme_id": "sh-compute",
            "holder": "xihu-llm",
            "amount": 1_000_000,
        },
    )
    assert ack["type"] == "ack", ack
    voucher_id = ack["result"]["voucher_id"]
    expect(rows).to_have_count(6)
    expect(page.locator(f'#vouchers tr[data-voucher="{voucher_id}"]')).to_contain_text("xihu-llm")
    # Spending it makes a claim on the issuer, which the operator sees at once.
    _, asks = gateway.book(H800)
    answers = gateway.request(
        "xihu-llm",
        {
            "type": "new_order",
            "client_order_id": "voucher-buy",
            "instrument_id": H800,
            "side": "BUY",
            "qty": 8,
            "price": asks[0][0],
            "voucher_id": voucher_id,
        },
    )
    fills = [a for a in answers if a.get("exec_type") in ("FILL", "PARTIAL_FILL")]
    assert fills and fills[0]["voucher"] > 0, answers
    issuer_row = page.locator('#claims-by-issuer tr[data-issuer="shanghai-gov"]')
    expect(issuer_row).to_contain_text(fen(fills[0]["voucher"]))
    expect(page.locator(f'#vouchers tr[data-voucher="{voucher_id}"]')).to_contain_text(
        fen(1_000_000 - fills[0]["voucher"])
    )

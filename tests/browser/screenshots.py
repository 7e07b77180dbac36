"""Take the dashboard screenshots in docs/img/ (run: python -m tests.browser.screenshots).

Starts the demo gateway on a loopback port, lets a small seeded simulation
trade on it for ``--seconds`` (start-ups lifting offers and paying partly with
their vouchers, data centres hitting bids and re-quoting, issuers settling
some claims), then photographs the dashboard in Debian's Chromium:

* ``dashboard-overview.png``, ``dashboard-instrument.png``,
  ``dashboard-vouchers.png``, ``dashboard-participants.png`` at 1440x900;
* ``dashboard-phone.png``, the top of the instrument view at 390x844 (a phone).

Not a test: the pictures are for the README. CJK glyphs in the page need a
CJK font on the machine (Debian: ``fonts-wqy-microhei``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway import demo
from tests.browser.conftest import CHROMIUM_ARGS, chromium_path
from tests.browser.live import LiveGateway

SEED = 6
FOCUS = "H800-SUZHOU-STATE-W1"
OUT = Path("docs/img")
VOUCHERS = {  # start-up: the vouchers it pays with (demo voucher ids)
    "qingyun-ai": [1],
    "pengcheng-vision": [2, 5],
    "xihu-llm": [3],
    "gusu-robotics": [4],
}


async def simulate(url: str, seconds: float, seed: int) -> None:
    """Trade on every open instrument for ``seconds``; most of the flow on ``FOCUS``."""
    rng = random.Random(seed)
    print(f"simulating {seconds:.0f} s of trading (seed {seed})", flush=True)
    mids = {i: spec[4] for i, spec in demo.INSTRUMENTS.items() if i != demo.AUCTION}
    providers = {i: spec[2] for i, spec in demo.INSTRUMENTS.items()}
    accounts = [demo.OPERATOR, *demo.PROVIDERS, *demo.STARTUPS, *demo.ISSUERS]
    async with aiohttp.ClientSession() as http:
        sockets: dict[str, aiohttp.ClientWebSocketResponse] = {}
        readers = []
        claims: list[tuple[str, int]] = []

        async def read(account: str, ws: aiohttp.ClientWebSocketResponse) -> None:
            async for frame in ws:
                msg = json.loads(frame.data)
                if msg.get("type") == "claim" and not msg["settled"] and account in demo.ISSUERS:
                    claims.append((account, msg["claim_id"]))

        for account in accounts:
            ws = await http.ws_connect(f"{url}/ws")
            await ws.send_str(json.dumps({"type": "auth", "key": demo.demo_key(account)}))
            sockets[account] = ws
            readers.append(asyncio.create_task(read(account, ws)))
        n = 0

        async def order(
            account: str, instrument: str, side: str, qty: int, price: int, **kw: Any
        ) -> None:
            nonlocal n
            n += 1
            message = {
                "type": "new_order",
                "client_order_id": f"sim-{n}",
                "instrument_id": instrument,
                "side": side,
                "qty": qty,
                "price": price,
                **kw,
            }
            await sockets[account].send_str(json.dumps(message))

        # Enough capacity for a busy session: the operator registers more for each provider.
        for instrument, provider in providers.items():
            await sockets["ops"].send_str(
                json.dumps(
                    {
                        "type": "register_capacity",
                        "instrument_id": instrument,
                        "provider": provider,
                        "gpu_hours": 400_000,
                    }
                )
            )
        end = time.monotonic() + seconds
        settled: set[int] = set()
        while time.monotonic() < end:
            instrument = FOCUS if rng.random() < 0.6 else rng.choice(list(mids))
            tick = demo.TICK
            mid = mids[instrument] = max(
                10 * tick, mids[instrument] + tick * rng.choice((-2, -1, -1, 0, 1, 1, 2))
            )
            provider = providers[instrument]
            startup = rng.choice(list(demo.STARTUPS))
            lot = demo.LOT * 5  # five 8-GPU nodes for an hour
            # Re-quote both sides around the new mid ...
            await order(
                provider,
                instrument,
                "SELL",
                lot * rng.randint(2, 12),
                mid + tick * rng.randint(1, 4),
            )
            await order(
                startup, instrument, "BUY", lot * rng.randint(2, 12), mid - tick * rng.randint(1, 4)
            )
            # ... and trade through the touch now and then.
            if rng.random() < 0.7:
                voucher = rng.choice(VOUCHERS[startup] + [0])
                extra = {"voucher_id": voucher} if voucher else {}
                if rng.random() < 0.6:
                    await order(
                        startup,
                        instrument,
                        "BUY",
                        lot * rng.randint(1, 6),
                        mid + 2 * tick,
                        tif="IOC",
                        **extra,
                    )
                else:
                    await order(
                        provider,
                        instrument,
                        "SELL",
                        lot * rng.randint(1, 6),
                        mid - 2 * tick,
                        tif="IOC",
                    )
            # Issuers settle about half of the claims presented to them, a little later.
            if claims and rng.random() < 0.25:
                issuer, claim_id = claims.pop(0)
                if claim_id not in settled and rng.random() < 0.5:
                    settled.add(claim_id)
                    await sockets[issuer].send_str(
                        json.dumps({"type": "settle_claim", "claim_id": claim_id})
                    )
            await asyncio.sleep(rng.uniform(0.15, 0.45))
        for ws in sockets.values():
            await ws.close()
        for task in readers:
            task.cancel()
        print(f"sent {n} orders, settled {len(settled)} claims", flush=True)


def shoot(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)

    def sign_in(page: Any, account: str, hash_: str) -> None:
        page.goto(f"{url}/{hash_}")
        page.fill("#api-key", demo.demo_key(account))
        page.click("#signin-button")
        page.wait_for_selector('#conn[data-state="live"]')

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            laptop = browser.new_context(
                viewport={"width": 1440, "height": 900}, device_scale_factor=1
            )
            page = laptop.new_page()
            sign_in(page, "ops", "#/")
            page.wait_for_selector("#price-index tbody tr")
            page.wait_for_timeout(800)
            page.mouse.move(0, 0)
            page.screenshot(path=out / "dashboard-overview.png")
            page.goto(f"{url}/#/i/{FOCUS}")
            page.wait_for_selector('#book-info[data-synced="true"]')
            page.click('.seg button[data-sec="5"]')
            page.wait_for_timeout(1200)
            page.mouse.move(0, 0)
            page.screenshot(path=out / "dashboard-instrument.png")
            page.goto(f"{url}/#/vouchers")
            page.wait_for_selector("#programmes tbody tr")
            page.wait_for_timeout(1000)
            page.mouse.move(0, 0)
            page.screenshot(path=out / "dashboard-vouchers.png")
            page.goto(f"{url}/#/participants")
            page.wait_for_selector("#participants tbody tr")
            page.click('#participants tr[data-account="pengcheng-vision"]')
            page.wait_for_timeout(800)
            page.mouse.move(0, 0)
            page.screenshot(path=out / "dashboard-participants.png")
            laptop.close()

            phone = browser.new_context(
                viewport={"width": 390, "height": 844},
                device_scale_factor=2,
                is_mobile=True,
                has_touch=True,
            )
            page = phone.new_page()
            sign_in(page, "ops", f"#/i/{FOCUS}")
            page.wait_for_selector('#book-info[data-synced="true"]')
            page.click('.seg button[data-sec="5"]')
            page.wait_for_timeout(1200)
            page.mouse.move(0, 0)
            page.screenshot(path=out / "dashboard-phone.png")
            phone.close()
        finally:
            browser.close()
    for name in sorted(p.name for p in out.glob("dashboard-*.png")):
        print(out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=75.0, help="how long to trade first")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with LiveGateway() as gateway:
        gateway.run(simulate(gateway.url, args.seconds, args.seed), timeout=args.seconds + 30)
        shoot(gateway.url, args.out)


if __name__ == "__main__":
    main()

"""A seeded demo market, built with ordinary exchange commands.

``demo_commands(now)`` returns the commands that build it: an operator; three
state-run and two commercial data centres in Suzhou, Ningxia (the Zhongwei hub
of "East Data West Computing") and Shanghai; eight instruments over five GPU
models, three hubs and two weekly delivery windows; four start-ups; three
city voucher programmes (Shanghai, Hangzhou, Shenzhen) with vouchers issued;
resting orders on every open book and a few trades, so the books, tickers and
the price index have something to show. Setup commands come from ``SYSTEM``;
orders come from their accounts. All names are made up.

Demo API keys are derived from the account id, so they are the same on every
start and can be printed: they are for a demo on one's own machine only.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from exchange import commands as c
from exchange.reference import (
    EligibilityBasis,
    InstrumentSpec,
    InstrumentStatus,
    Role,
    Side,
    Tier,
)

HOUR = 3_600 * 10**9
DAY = 24 * HOUR
SEED = 20_240_601  # the seed of the demo's orders

OPERATOR = "ops"
PROVIDERS = {  # account: (tier, hub)
    "suzhou-scc": (Tier.STATE, "suzhou"),
    "zhongwei-dc": (Tier.STATE, "ningxia"),
    "pudong-aic": (Tier.STATE, "shanghai"),
    "lingang-cloud": (Tier.COMMERCIAL, "shanghai"),
    "jinji-cloud": (Tier.COMMERCIAL, "suzhou"),
}
STARTUPS = {  # account: (attested revenue in fen, government projects)
    "qingyun-ai": (8_000_000_00, ["sh-llm-2025"]),
    "xihu-llm": (3_000_000_00, []),
    "pengcheng-vision": (12_000_000_00, ["sz-embodied"]),
    "gusu-robotics": (1_500_000_00, ["sh-llm-2025"]),
}
ISSUERS = ("shanghai-gov", "hangzhou-gov", "shenzhen-gov")

# instrument id: (gpu model, domestic, provider, window, mid price fen/GPU-hour)
INSTRUMENTS = {
    "ASCEND910B-NINGXIA-STATE-W1": ("Ascend910B", True, "zhongwei-dc", 1, 900),
    "ASCEND910B-SUZHOU-STATE-W1": ("Ascend910B", True, "suzhou-scc", 1, 1_050),
    "H800-SUZHOU-STATE-W1": ("H800", False, "suzhou-scc", 1, 1_800),
    "H20-SHANGHAI-COMM-W1": ("H20", False, "lingang-cloud", 1, 700),
    "H100-SUZHOU-COMM-W1": ("H100", False, "jinji-cloud", 1, 2_200),
    "A800-SHANGHAI-COMM-W2": ("A800", False, "lingang-cloud", 2, 1_300),
    "ASCEND910B-SHANGHAI-STATE-W2": ("Ascend910B", True, "pudong-aic", 2, 1_000),
    "H800-NINGXIA-STATE-W2": ("H800", False, "zhongwei-dc", 2, 1_600),
}
AUCTION = "A800-SHANGHAI-COMM-W2"  # left in its opening call auction
TICK = 5  # fen
LOT = 8  # GPU-hours: one 8-GPU node for an hour


def demo_accounts() -> list[str]:
    return [OPERATOR, *PROVIDERS, *STARTUPS, *ISSUERS]


def demo_key(account_id: str) -> str:
    """The fixed demo API key of an account."""
    secret = hashlib.sha256(f"suanli-demo/{account_id}".encode()).hexdigest()[:32]
    return f"sk_demo-{account_id}_{secret}"


def _window_start(now: int, window: int) -> int:
    today = now - now % DAY
    return today + window * 7 * DAY


def demo_commands(now: int) -> list[c.Command]:
    """Every command that builds the demo market, for an exchange whose clock reads ``now``."""
    S = c.SYSTEM
    out: list[c.Command] = [c.AdmitAccount(actor=S, account_id=OPERATOR, role=Role.OPERATOR)]
    for provider, (tier, hub) in PROVIDERS.items():
        out.append(
            c.AdmitAccount(actor=S, account_id=provider, role=Role.PROVIDER, tier=tier, hub=hub)
        )
    for startup, (revenue, projects) in STARTUPS.items():
        out.append(
            c.AdmitAccount(
                actor=S, account_id=startup, role=Role.STARTUP, revenue=revenue, projects=projects
            )
        )
        out.append(c.Deposit(actor=S, account_id=startup, amount=20_000_000_00))
    for issuer in ISSUERS:
        out.append(c.AdmitAccount(actor=S, account_id=issuer, role=Role.ISSUER))
        out.append(c.Deposit(actor=S, account_id=issuer, amount=50_000_000_00))
    out.append(c.RelateParties(actor=S, account_a="gusu-robotics", account_b="suzhou-scc"))
    for instrument_id, (model, domestic, provider, window, _) in INSTRUMENTS.items():
        tier, hub = PROVIDERS[provider]
        start = _window_start(now, window)
        spec = InstrumentSpec(
            instrument_id=instrument_id,
            gpu_model=model,
            domestic=domestic,
            hub=hub,
            tier=tier,
            delivery_start=start,
            delivery_end=start + 7 * DAY,
            tick=TICK,
            lot=LOT,
            max_price=20_000,
            reference_price=INSTRUMENTS[instrument_id][4],
        )
        out.append(c.ListInstrument(actor=S, spec=spec))
        out.append(
            c.RegisterCapacity(
                actor=S, provider=provider, instrument_id=instrument_id, gpu_hours=LOT * 4_000
            )
        )
    year_end = now + 365 * DAY
    programmes: list[tuple[Any, ...]] = [
        # Shanghai: half of state-run domestic compute, less elsewhere; revenue test.
        (
            "shanghai-gov",
            "sh-compute",
            "Shanghai compute voucher",
            (5_000, 3_000, 3_000, 2_000),
            [],
            EligibilityBasis.MIN_REVENUE,
            2_000_000_00,
            [],
        ),
        # Hangzhou: 30%, or 20% where the compute is not on domestic chips.
        (
            "hangzhou-gov",
            "hz-compute",
            "Hangzhou compute voucher",
            (3_000, 2_000, 3_000, 2_000),
            [],
            EligibilityBasis.MIN_REVENUE,
            1_000_000_00,
            [],
        ),
        # Shenzhen: 60% for start-ups in its embodied-AI project.
        (
            "shenzhen-gov",
            "sz-startup",
            "Shenzhen start-up compute voucher",
            (6_000, 6_000, 6_000, 6_000),
            [],
            EligibilityBasis.GOV_PROJECT,
            0,
            ["sz-embodied"],
        ),
    ]
    for issuer, programme_id, name, rates, hubs, basis, min_revenue, projects in programmes:
        out.append(
            c.CreateProgramme(
                actor=issuer,
                programme_id=programme_id,
                name=name,
                rate_state_domestic=rates[0],
                rate_state_foreign=rates[1],
                rate_commercial_domestic=rates[2],
                rate_commercial_foreign=rates[3],
                eligible_hubs=hubs,
                cap_per_holder_year=8_000_000_00,
                budget=40_000_000_00,
                expires_at=year_end,
                basis=basis,
                min_revenue=min_revenue,
                projects=projects,
            )
        )
    for issuer, programme_id, holder, amount in (
        ("shanghai-gov", "sh-compute", "qingyun-ai", 2_000_000_00),
        ("shanghai-gov", "sh-compute", "pengcheng-vision", 1_000_000_00),
        ("hangzhou-gov", "hz-compute", "xihu-llm", 1_500_000_00),
        ("hangzhou-gov", "hz-compute", "gusu-robotics", 500_000_00),
        ("shenzhen-gov", "sz-startup", "pengcheng-vision", 2_000_000_00),
    ):
        out.append(
            c.IssueVoucher(actor=issuer, programme_id=programme_id, holder=holder, amount=amount)
        )
    for instrument_id in INSTRUMENTS:
        status = InstrumentStatus.AUCTION if instrument_id == AUCTION else InstrumentStatus.OPEN
        out.append(c.SetInstrumentStatus(actor=S, instrument_id=instrument_id, status=status))
    out.extend(_orders())
    return out


def _orders() -> list[c.Command]:
    """Resting orders around each mid price, then a few crossing buys."""
    rng = random.Random(SEED)
    startups = list(STARTUPS)
    out: list[c.Command] = []
    n = 0
    for instrument_id, (_, _, provider, _, mid) in INSTRUMENTS.items():
        for level in range(1, 6):
            n += 1
            out.append(
                c.NewOrder(
                    actor=provider,
                    client_order_id=f"demo-{n}",
                    instrument_id=instrument_id,
                    side=Side.SELL,
                    qty=LOT * rng.randint(5, 40),
                    price=mid + level * TICK * rng.randint(1, 3),
                )
            )
            n += 1
            out.append(
                c.NewOrder(
                    actor=rng.choice(startups),
                    client_order_id=f"demo-{n}",
                    instrument_id=instrument_id,
                    side=Side.BUY,
                    qty=LOT * rng.randint(5, 40),
                    price=mid - level * TICK * rng.randint(1, 3),
                )
            )
        if instrument_id != AUCTION:
            n += 1
            out.append(
                c.NewOrder(
                    actor=rng.choice(startups),
                    client_order_id=f"demo-{n}",
                    instrument_id=instrument_id,
                    side=Side.BUY,
                    qty=LOT * rng.randint(3, 10),
                    price=mid + 4 * TICK,
                )
            )
    return out

"""Every reason code, triggered on purpose; a refused command changes nothing.

Each case builds the same rich market, applies one command, and checks that the
only event is a ``Rejected`` with the expected reason and that ``state_digest``
is the same before and after. One more test checks that the cases, between
them, produce every member of ``Reason``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from exchange import commands as c
from exchange.core import MAX_AMOUNT
from exchange.events import OrderAccepted, Rejected, Trade
from exchange.reasons import Reason
from exchange.reference import (
    EligibilityBasis,
    InstrumentStatus,
    OrderType,
    Role,
    Side,
    Tier,
    TimeInForce,
)
from tests.market import ASCEND, COMMERCIAL, H100, HOUR, SYSTEM, T0, Market, spec, state_digest

S = InstrumentStatus
R = Reason


@dataclass
class Rich:
    """A market with something of everything: orders, claims, odd instruments."""

    m: Market
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def now(self) -> int:
        return self.m.now


def _order_id(events: list[Any]) -> int:
    accepted = [e for e in events if isinstance(e, OrderAccepted)]
    assert len(accepted) == 1, events
    return accepted[0].order_id


def rich_market() -> Rich:
    m = Market()
    r = Rich(m)
    ok = m.ok
    # Resting orders on H100: a bid at 900, an ask at 1100, a post-only bid at 950.
    r.ids["bid"] = _order_id(m.buy("su1", "b1", 8, 900))
    r.ids["ask"] = _order_id(m.sell("dc1", "s1", 8, 1100))
    r.ids["post"] = _order_id(m.buy("su2", "po", 8, 950, post_only=True))
    # Two voucher fills: claims 1 and 2; claim 2 settled.
    for n in (1, 2):
        m.sell("dc2", f"c{n}", 8, 1000)
        events = m.buy("su1", f"vb{n}", 8, 1000, voucher_id=1)
        r.ids[f"filled{n}"] = _order_id(events)
        assert [t.claim_id for t in events if isinstance(t, Trade)] == [n]
    ok(c.SettleClaim(actor="city", claim_id=2))
    # A second issuer with little cash; programmes that expire soon or are small.
    ok(c.AdmitAccount(actor="ops", account_id="town", role=Role.ISSUER))
    ok(c.Deposit(actor="ops", account_id="town", amount=1_000))
    ok(programme("tp", actor="town"))
    ok(programme("short", expires_at=T0 + HOUR))
    ok(programme("small", budget=1_500_000))
    ok(c.IssueVoucher(actor="city", programme_id="short", holder="su2", amount=10_000))
    ok(c.AdmitAccount(actor="ops", account_id="poor", role=Role.STARTUP, revenue=1))
    # Instruments in every other status.
    for instrument_id, path in (
        ("PRE", []),
        ("AUC", [S.AUCTION]),
        ("HALT", [S.OPEN]),
        ("SHUT", [S.CLOSED]),
    ):
        ok(c.ListInstrument(actor="ops", spec=spec(instrument_id)))
        ok(
            c.RegisterCapacity(
                actor="dc1", provider="dc1", instrument_id=instrument_id, gpu_hours=80
            )
        )
        for status in path:
            ok(c.SetInstrumentStatus(actor="ops", instrument_id=instrument_id, status=status))
    r.ids["halted"] = _order_id(m.buy("su2", "h1", 8, 1000, instrument_id="HALT"))
    ok(c.SetInstrumentStatus(actor="ops", instrument_id="HALT", status=S.HALTED))
    # Let the "short" programme and its voucher expire.
    m.now += 2 * HOUR
    ok(c.AdvanceClock(actor=SYSTEM))
    return r


def programme(programme_id: str, **kw: Any) -> c.CreateProgramme:
    fields: dict[str, Any] = {
        "actor": "city",
        "programme_id": programme_id,
        "name": programme_id,
        "rate_state_domestic": 5_000,
        "rate_state_foreign": 3_000,
        "rate_commercial_domestic": 2_000,
        "rate_commercial_foreign": 0,
        "cap_per_holder_year": 5_000_000,
        "budget": 20_000_000,
        "expires_at": T0 + 1_000 * HOUR,
        "basis": EligibilityBasis.MIN_REVENUE,
        "min_revenue": 0,
    }
    fields.update(kw)
    return c.CreateProgramme(**fields)


def buy(**kw: Any) -> c.NewOrder:
    fields: dict[str, Any] = {
        "actor": "su2",
        "client_order_id": "new",
        "instrument_id": H100,
        "side": Side.BUY,
        "qty": 8,
        "price": 1000,
    }
    fields.update(kw)
    return c.NewOrder(**fields)


def sell(**kw: Any) -> c.NewOrder:
    return buy(**{"actor": "dc2", "side": Side.SELL, **kw})


def market(**kw: Any) -> c.NewOrder:
    return buy(**{"order_type": OrderType.MARKET, "price": 0, "tif": TimeInForce.IOC, **kw})


def listing(**kw: Any) -> c.ListInstrument:
    return c.ListInstrument(actor="ops", spec=msgspec.structs.replace(spec("NEW"), **kw))


def status(instrument_id: str, to: InstrumentStatus, actor: str = "ops") -> c.SetInstrumentStatus:
    return c.SetInstrumentStatus(actor=actor, instrument_id=instrument_id, status=to)


def issue(
    holder: str, amount: int, programme_id: str = "sz", actor: str = "city"
) -> c.IssueVoucher:
    return c.IssueVoucher(actor=actor, programme_id=programme_id, holder=holder, amount=amount)


def amend(r: Rich, who: str, key: str, **kw: Any) -> c.AmendOrder:
    return c.AmendOrder(actor=who, order_id=r.ids[key], **kw)


def register(provider: str, instrument_id: str, hours: int, actor: str = "") -> c.RegisterCapacity:
    return c.RegisterCapacity(
        actor=actor or provider, provider=provider, instrument_id=instrument_id, gpu_hours=hours
    )


Case = tuple[str, Callable[[Rich], c.Command], Reason]

CASES: list[Case] = [
    # --- 1. validation
    ("qty zero", lambda r: buy(qty=0), R.INVALID_QUANTITY),
    ("qty negative", lambda r: buy(qty=-8), R.INVALID_QUANTITY),
    ("qty huge", lambda r: buy(qty=10_000_008), R.INVALID_QUANTITY),
    ("sell qty huge", lambda r: sell(qty=2**63), R.INVALID_QUANTITY),
    ("amend qty to filled", lambda r: amend(r, "su1", "bid", qty=0), R.INVALID_QUANTITY),
    ("qty off lot", lambda r: buy(qty=12), R.OFF_LOT),
    ("amend off lot", lambda r: amend(r, "su1", "bid", qty=4), R.OFF_LOT),
    ("register off lot", lambda r: register("dc1", H100, 9), R.OFF_LOT),
    ("price zero", lambda r: buy(price=0), R.INVALID_PRICE),
    ("price negative", lambda r: buy(price=-1000), R.INVALID_PRICE),
    ("price huge", lambda r: buy(price=10_000_010), R.INVALID_PRICE),
    ("market with a price", lambda r: market(price=1000), R.INVALID_PRICE),
    ("amend price zero", lambda r: amend(r, "su1", "bid", price=0), R.INVALID_PRICE),
    ("price off tick", lambda r: buy(price=1005), R.OFF_TICK),
    ("amend off tick", lambda r: amend(r, "dc1", "ask", price=1101), R.OFF_TICK),
    ("market GTC", lambda r: market(tif=TimeInForce.GTC), R.INVALID_TIME_IN_FORCE),
    (
        "market GTD",
        lambda r: market(tif=TimeInForce.GTD, expire_at=r.now + HOUR),
        R.INVALID_TIME_IN_FORCE,
    ),
    ("GTD now", lambda r: buy(tif=TimeInForce.GTD, expire_at=r.now), R.INVALID_EXPIRY),
    ("GTD without time", lambda r: buy(tif=TimeInForce.GTD), R.INVALID_EXPIRY),
    ("GTC with expiry", lambda r: buy(expire_at=r.now + HOUR), R.INVALID_EXPIRY),
    ("programme expired", lambda r: programme("old", expires_at=r.now), R.INVALID_EXPIRY),
    ("min qty above qty", lambda r: buy(min_qty=16), R.INVALID_MIN_QTY),
    ("min qty off lot", lambda r: buy(qty=16, min_qty=4), R.INVALID_MIN_QTY),
    ("min qty negative", lambda r: buy(min_qty=-8), R.INVALID_MIN_QTY),
    ("post-only IOC", lambda r: buy(post_only=True, tif=TimeInForce.IOC), R.INVALID_FLAGS),
    ("post-only FOK", lambda r: buy(post_only=True, tif=TimeInForce.FOK), R.INVALID_FLAGS),
    ("post-only min qty", lambda r: buy(post_only=True, min_qty=8), R.INVALID_FLAGS),
    ("post-only market", lambda r: market(post_only=True), R.INVALID_FLAGS),
    ("sell with voucher", lambda r: sell(voucher_id=1), R.INVALID_FLAGS),
    (
        "provider without tier",
        lambda r: c.AdmitAccount(actor="ops", account_id="x", role=Role.PROVIDER, hub="h"),
        R.INVALID_FLAGS,
    ),
    (
        "relate to itself",
        lambda r: c.RelateParties(actor="ops", account_a="su1", account_b="su1"),
        R.INVALID_FLAGS,
    ),
    (
        "gov project basis without projects",
        lambda r: programme("gp", basis=EligibilityBasis.GOV_PROJECT),
        R.INVALID_FLAGS,
    ),
    (
        "deposit zero",
        lambda r: c.Deposit(actor="ops", account_id="su1", amount=0),
        R.INVALID_AMOUNT,
    ),
    (
        "deposit huge",
        lambda r: c.Deposit(actor="ops", account_id="su1", amount=MAX_AMOUNT + 1),
        R.INVALID_AMOUNT,
    ),
    (
        "withdraw negative",
        lambda r: c.Withdraw(actor="ops", account_id="su1", amount=-5),
        R.INVALID_AMOUNT,
    ),
    ("register zero", lambda r: register("dc1", H100, 0), R.INVALID_AMOUNT),
    ("issue zero", lambda r: issue("su2", 0), R.INVALID_AMOUNT),
    ("issue negative", lambda r: issue("su2", -100), R.INVALID_AMOUNT),
    ("budget zero", lambda r: programme("p0", budget=0), R.INVALID_AMOUNT),
    ("cap huge", lambda r: programme("p0", cap_per_holder_year=MAX_AMOUNT + 1), R.INVALID_AMOUNT),
    ("min revenue negative", lambda r: programme("p0", min_revenue=-1), R.INVALID_AMOUNT),
    ("rate above 100%", lambda r: programme("p0", rate_state_foreign=10_001), R.INVALID_RATE),
    ("rate negative", lambda r: programme("p0", rate_state_domestic=-1), R.INVALID_RATE),
    (
        "all rates zero",
        lambda r: programme(
            "p0",
            rate_state_domestic=0,
            rate_state_foreign=0,
            rate_commercial_domestic=0,
            rate_commercial_foreign=0,
        ),
        R.INVALID_RATE,
    ),
    ("tick zero", lambda r: listing(tick=0), R.INVALID_INSTRUMENT),
    ("lot negative", lambda r: listing(lot=-8), R.INVALID_INSTRUMENT),
    ("window started", lambda r: listing(delivery_start=r.now), R.INVALID_INSTRUMENT),
    ("client order id empty", lambda r: buy(client_order_id=""), R.INVALID_ID),
    ("client order id long", lambda r: buy(client_order_id="x" * 65), R.INVALID_ID),
    ("client order id newline", lambda r: buy(client_order_id="a\nb"), R.INVALID_ID),
    ("programme id empty", lambda r: programme(""), R.INVALID_ID),
    ("programme without name", lambda r: programme("p0", name=""), R.INVALID_ID),
    (
        "account id system",
        lambda r: c.AdmitAccount(actor="ops", account_id=SYSTEM, role=Role.OPERATOR),
        R.INVALID_ID,
    ),
    ("instrument id empty", lambda r: listing(instrument_id=""), R.INVALID_ID),
    # --- 2. reference and permission
    ("start-up sells", lambda r: sell(actor="su1"), R.NOT_PERMITTED),
    ("provider buys", lambda r: buy(actor="dc1"), R.NOT_PERMITTED),
    (
        "start-up deposits",
        lambda r: c.Deposit(actor="su1", account_id="su1", amount=1),
        R.NOT_PERMITTED,
    ),
    ("start-up halts", lambda r: status(H100, S.HALTED, actor="su1"), R.NOT_PERMITTED),
    ("start-up creates programme", lambda r: programme("p0", actor="su1"), R.NOT_PERMITTED),
    ("other issuer issues", lambda r: issue("su2", 1, actor="town"), R.NOT_PERMITTED),
    ("start-up advances clock", lambda r: c.AdvanceClock(actor="su1"), R.NOT_PERMITTED),
    ("provider lists", lambda r: msgspec.structs.replace(listing(), actor="dc1"), R.NOT_PERMITTED),
    ("stranger cancels all", lambda r: c.CancelAll(actor="ghost"), R.NOT_PERMITTED),
    ("provider registers for another", lambda r: register("dc1", H100, 8, "dc2"), R.NOT_PERMITTED),
    ("unknown trader", lambda r: buy(actor="ghost"), R.UNKNOWN_ACCOUNT),
    (
        "deposit to unknown",
        lambda r: c.Deposit(actor="ops", account_id="ghost", amount=1),
        R.UNKNOWN_ACCOUNT,
    ),
    ("issue to unknown", lambda r: issue("ghost", 1), R.UNKNOWN_ACCOUNT),
    (
        "relate unknown",
        lambda r: c.RelateParties(actor="ops", account_a="ghost", account_b="su1"),
        R.UNKNOWN_ACCOUNT,
    ),
    ("order on unknown instrument", lambda r: buy(instrument_id="NOPE"), R.UNKNOWN_INSTRUMENT),
    ("status of unknown instrument", lambda r: status("NOPE", S.OPEN), R.UNKNOWN_INSTRUMENT),
    (
        "cancel-all on unknown instrument",
        lambda r: c.CancelAll(actor="su1", instrument_id="NOPE"),
        R.UNKNOWN_INSTRUMENT,
    ),
    ("register on unknown instrument", lambda r: register("dc1", "NOPE", 8), R.UNKNOWN_INSTRUMENT),
    ("cancel unknown id", lambda r: c.CancelOrder(actor="su1", order_id=999), R.UNKNOWN_ORDER),
    (
        "cancel unknown client id",
        lambda r: c.CancelOrder(actor="su1", client_order_id="nope"),
        R.UNKNOWN_ORDER,
    ),
    ("cancel naming nothing", lambda r: c.CancelOrder(actor="su1"), R.UNKNOWN_ORDER),
    (
        "cancel filled order",
        lambda r: c.CancelOrder(actor="su1", order_id=r.ids["filled1"]),
        R.UNKNOWN_ORDER,
    ),
    (
        "cancel by another's client id",
        lambda r: c.CancelOrder(actor="su2", client_order_id="b1"),
        R.UNKNOWN_ORDER,
    ),
    ("amend unknown", lambda r: c.AmendOrder(actor="su1", order_id=999, qty=8), R.UNKNOWN_ORDER),
    ("unknown voucher", lambda r: buy(voucher_id=99), R.UNKNOWN_VOUCHER),
    ("unknown programme", lambda r: issue("su2", 1, "nope"), R.UNKNOWN_PROGRAMME),
    ("unknown claim", lambda r: c.SettleClaim(actor="city", claim_id=99), R.UNKNOWN_CLAIM),
    ("listed twice", lambda r: listing(instrument_id=H100), R.DUPLICATE_ID),
    (
        "admitted twice",
        lambda r: c.AdmitAccount(actor="ops", account_id="su1", role=Role.STARTUP),
        R.DUPLICATE_ID,
    ),
    ("programme twice", lambda r: programme("sz"), R.DUPLICATE_ID),
    (
        "client order id reused",
        lambda r: buy(actor="su1", client_order_id="b1"),
        R.DUPLICATE_CLIENT_ORDER_ID,
    ),
    (
        "client order id of a filled order",
        lambda r: buy(actor="su1", client_order_id="vb1"),
        R.DUPLICATE_CLIENT_ORDER_ID,
    ),
    (
        "cancel another's order",
        lambda r: c.CancelOrder(actor="su2", order_id=r.ids["bid"]),
        R.NOT_YOUR_ORDER,
    ),
    ("amend another's order", lambda r: amend(r, "dc2", "ask", qty=8), R.NOT_YOUR_ORDER),
    ("another's voucher", lambda r: buy(voucher_id=1), R.NOT_YOUR_VOUCHER),
    ("another issuer's claim", lambda r: c.SettleClaim(actor="town", claim_id=1), R.NOT_YOUR_CLAIM),
    ("provider settles", lambda r: c.SettleClaim(actor="dc2", claim_id=1), R.NOT_YOUR_CLAIM),
    ("buy pre-open", lambda r: buy(instrument_id="PRE"), R.MARKET_NOT_OPEN),
    ("sell closed", lambda r: sell(actor="dc1", instrument_id="SHUT"), R.MARKET_NOT_OPEN),
    ("register on closed", lambda r: register("dc1", "SHUT", 8), R.MARKET_NOT_OPEN),
    ("buy halted", lambda r: buy(instrument_id="HALT"), R.MARKET_HALTED),
    ("amend halted", lambda r: amend(r, "su2", "halted", qty=8, price=990), R.MARKET_HALTED),
    (
        "IOC in auction",
        lambda r: buy(instrument_id="AUC", tif=TimeInForce.IOC),
        R.NOT_ALLOWED_IN_AUCTION,
    ),
    (
        "FOK in auction",
        lambda r: buy(instrument_id="AUC", tif=TimeInForce.FOK),
        R.NOT_ALLOWED_IN_AUCTION,
    ),
    ("min qty in auction", lambda r: buy(instrument_id="AUC", min_qty=8), R.NOT_ALLOWED_IN_AUCTION),
    ("market in auction", lambda r: market(instrument_id="AUC"), R.NOT_ALLOWED_IN_AUCTION),
    ("open to auction", lambda r: status(H100, S.AUCTION), R.INVALID_TRANSITION),
    ("closed to open", lambda r: status("SHUT", S.OPEN), R.INVALID_TRANSITION),
    ("pre-open to halted", lambda r: status("PRE", S.HALTED), R.INVALID_TRANSITION),
    ("open to open", lambda r: status(H100, S.OPEN), R.INVALID_TRANSITION),
    (
        "commercial provider on state instrument",
        lambda r: register("dc3", H100, 8),
        R.PROVIDER_MISMATCH,
    ),
    ("state provider on commercial", lambda r: register("dc1", COMMERCIAL, 8), R.PROVIDER_MISMATCH),
    ("claim settled twice", lambda r: c.SettleClaim(actor="city", claim_id=2), R.CLAIM_SETTLED),
    # --- 3. risk
    ("buy beyond cash", lambda r: buy(qty=8, price=1_300_000), R.INSUFFICIENT_FUNDS),
    (
        "withdraw beyond free cash",
        lambda r: c.Withdraw(actor="ops", account_id="su2", amount=10_000_000),
        R.INSUFFICIENT_FUNDS,
    ),
    (
        "issuer short of cash",
        lambda r: issue("su2", 1_001, "tp", actor="town"),
        R.INSUFFICIENT_FUNDS,
    ),
    (
        "amend beyond cash",
        lambda r: amend(r, "su1", "bid", qty=8, price=1_300_000),
        R.INSUFFICIENT_FUNDS,
    ),
    ("sell beyond capacity", lambda r: sell(qty=8_000), R.INSUFFICIENT_CAPACITY),
    ("amend beyond capacity", lambda r: amend(r, "dc1", "ask", qty=8_008), R.INSUFFICIENT_CAPACITY),
    ("expired voucher", lambda r: buy(voucher_id=2), R.VOUCHER_EXPIRED),
    (
        "zero rate voucher",
        lambda r: buy(actor="su1", instrument_id=COMMERCIAL, voucher_id=1),
        R.VOUCHER_INELIGIBLE,
    ),
    ("issue to a provider", lambda r: issue("dc1", 1_000), R.HOLDER_INELIGIBLE),
    ("issue below min revenue", lambda r: issue("poor", 1_000), R.HOLDER_INELIGIBLE),
    ("issue from expired programme", lambda r: issue("su2", 1_000, "short"), R.PROGRAMME_EXPIRED),
    ("yearly cap", lambda r: issue("su1", 4_000_001), R.PROGRAMME_CAP_EXCEEDED),
    ("budget", lambda r: issue("su2", 1_500_001, "small"), R.PROGRAMME_BUDGET_EXCEEDED),
    # --- 4. matching
    ("post-only buy crossing", lambda r: buy(price=1100, post_only=True), R.POST_ONLY_WOULD_CROSS),
    (
        "post-only sell crossing",
        lambda r: sell(price=950, post_only=True),
        R.POST_ONLY_WOULD_CROSS,
    ),
    (
        "post-only amend crossing",
        lambda r: amend(r, "su2", "post", price=1100),
        R.POST_ONLY_WOULD_CROSS,
    ),
    ("market buy, no asks", lambda r: market(instrument_id=ASCEND), R.NO_LIQUIDITY),
    (
        "market sell, no bids",
        lambda r: market(actor="dc1", side=Side.SELL, instrument_id=ASCEND),
        R.NO_LIQUIDITY,
    ),
]


def refuse(r: Rich, make: Callable[[Rich], c.Command]) -> Reason:
    """Apply one command that must be refused and change nothing; return the reason."""
    before = state_digest(r.m.core)
    command = make(r)
    events = r.m.apply(command)
    assert len(events) == 1 and isinstance(events[0], Rejected), events
    rejected = events[0]
    assert rejected.command == type(command).__name__
    assert rejected.actor == command.actor
    assert state_digest(r.m.core) == before, "a refused command changed the state"
    return rejected.reason


@pytest.mark.parametrize(
    ("make", "reason"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_refused_command_changes_nothing(make: Callable[[Rich], c.Command], reason: Reason) -> None:
    assert refuse(rich_market(), make) is reason


def test_every_reason_is_produced() -> None:
    produced = {refuse(rich_market(), make) for _, make, _ in CASES}
    assert produced == set(Reason), set(Reason) - produced


def test_a_rich_market_still_works_after_refusals() -> None:
    """The same market takes every refusal in turn and is unchanged at the end."""
    r = rich_market()
    before = state_digest(r.m.core)
    for _, make, reason in CASES:
        assert refuse(r, make) is reason
    assert state_digest(r.m.core) == before
    # And it still trades.
    events = r.m.sell("dc2", "after", 8, 900)
    trade = next(e for e in events if isinstance(e, Trade))
    assert (trade.buy_order_id, trade.price, trade.buyer) == (r.ids["post"], 950, "su2")


def test_rejection_echoes_the_client_order_id() -> None:
    r = rich_market()
    events = r.m.apply(buy(client_order_id="mine", price=1005))
    assert isinstance(events[0], Rejected)
    assert (events[0].client_order_id, events[0].order_id, events[0].ts) == ("mine", 0, r.now)
    events = r.m.apply(c.CancelOrder(actor="su2", order_id=r.ids["bid"]))
    assert isinstance(events[0], Rejected)
    assert events[0].order_id == r.ids["bid"]


def test_rich_market_setup() -> None:
    """The fixture is what the cases assume it is."""
    r = rich_market()
    core = r.m.core
    assert core.instruments["PRE"].status is S.PRE_OPEN
    assert core.instruments["AUC"].status is S.AUCTION
    assert core.instruments["HALT"].status is S.HALTED
    assert core.instruments["SHUT"].status is S.CLOSED
    assert core.claims[1].settled is False and core.claims[2].settled is True
    assert core.vouchers[2].expires_at <= core.now
    assert r.ids["filled1"] not in core.orders
    assert Tier.STATE is core.accounts["dc1"].tier

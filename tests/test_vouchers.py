"""Computing vouchers: rates, eligibility, the voucher part of each fill, claims.

Programme ``sz`` (issuer ``city``) pays 60% on state-run domestic chips, 30% on
state-run foreign chips, 20% on commercial domestic chips and nothing on
commercial foreign chips; 5,000,000 fen a holder a year, 20,000,000 in all,
holders with a yearly revenue of at least 100,000,000 fen. ``su1`` holds voucher
1 for 1,000,000 fen, so ``city`` has 49,000,000 fen left.
"""

from __future__ import annotations

from typing import Any

from exchange import commands as c
from exchange.core import ExchangeCore
from exchange.events import (
    ClaimSettled,
    OrderAccepted,
    OrderCancelled,
    ProgrammeCreated,
    Trade,
    VoucherIssued,
)
from exchange.reasons import CancelReason, Reason
from exchange.reference import EligibilityBasis, InstrumentStatus, Role, Side, Tier, TimeInForce
from tests.market import ASCEND, COMMERCIAL, H100, HOUR, SYSTEM, T0, Market, spec
from tests.test_orders import START_CASH, cash, of, one, rejected

CITY_CASH = 49_000_000
ASCEND_COMM = "ASCEND910B-SUZHOU-COMM-W1"
FINE = "H100-SUZHOU-STATE-FINE"
YEAR_2028 = 1_830_297_600 * 10**9  # 2028-01-01T00:00:00Z in ns; T0 is in January 2027


def assert_ledger(core: ExchangeCore, registered: dict[tuple[str, str], int]) -> None:
    """Money and capacity add up exactly, and every reservation matches its orders."""
    cash_total = sum(a.cash + a.cash_reserved for a in core.accounts.values())
    voucher_total = sum(v.balance + v.reserved for v in core.vouchers.values())
    open_claims = sum(cl.amount for cl in core.claims.values() if not cl.settled)
    assert cash_total + voucher_total + open_claims == core.deposited
    for voucher in core.vouchers.values():
        assert min(voucher.balance, voucher.reserved, voucher.spent) >= 0
        assert voucher.balance + voucher.reserved + voucher.spent == voucher.amount
        paid = [cl.amount for cl in core.claims.values() if cl.voucher_id == voucher.voucher_id]
        assert sum(paid) == voucher.spent
        held = [
            o.voucher_reserved for o in core.orders.values() if o.voucher_id == voucher.voucher_id
        ]
        assert sum(held) == voucher.reserved
    for account in core.accounts.values():
        assert account.cash >= 0
        mine = [o for o in core.orders.values() if o.account == account.account_id]
        assert account.cash_reserved == sum(o.cash_reserved for o in mine if o.side is Side.BUY)
        for instrument_id, reserved in account.capacity_reserved.items():
            assert reserved == sum(
                o.leaves for o in mine if o.side is Side.SELL and o.instrument_id == instrument_id
            )
    for instrument_id in core.instruments:
        sold = sum(a.capacity_sold.get(instrument_id, 0) for a in core.accounts.values())
        held = sum(a.holdings.get(instrument_id, 0) for a in core.accounts.values())
        assert sold == held
    for (provider, instrument_id), hours in registered.items():
        account = core.accounts[provider]
        assert (
            account.capacity[instrument_id]
            + account.capacity_reserved[instrument_id]
            + account.capacity_sold[instrument_id]
            == hours
        )


MARKET_CAPACITY = {
    ("dc1", H100): 8_000,
    ("dc1", ASCEND): 8_000,
    ("dc2", H100): 8_000,
    ("dc2", ASCEND): 8_000,
    ("dc3", COMMERCIAL): 8_000,
}


def programme(programme_id: str, **kw: Any) -> c.CreateProgramme:
    fields: dict[str, Any] = {
        "actor": "city",
        "programme_id": programme_id,
        "name": programme_id,
        "rate_state_domestic": 3_000,
        "rate_state_foreign": 3_000,
        "rate_commercial_domestic": 3_000,
        "rate_commercial_foreign": 3_000,
        "cap_per_holder_year": 5_000_000,
        "budget": 20_000_000,
        "expires_at": T0 + 1_000 * HOUR,
        "basis": EligibilityBasis.MIN_REVENUE,
        "min_revenue": 100_000_000,
    }
    fields.update(kw)
    return c.CreateProgramme(**fields)


def issue(
    m: Market, holder: str, amount: int, programme_id: str = "sz", actor: str = "city"
) -> Any:
    return m.apply(
        c.IssueVoucher(actor=actor, programme_id=programme_id, holder=holder, amount=amount)
    )


def voucher_state(m: Market, voucher_id: int) -> tuple[int, int, int]:
    v = m.core.vouchers[voucher_id]
    return v.balance, v.reserved, v.spent


# --- the rate ---------------------------------------------------------------------


def test_rate_by_tier_and_chip_origin() -> None:
    m = Market()
    m.ok(c.ListInstrument(actor="ops", spec=spec(ASCEND_COMM, domestic=True, tier=Tier.COMMERCIAL)))
    m.ok(c.RegisterCapacity(actor="dc3", provider="dc3", instrument_id=ASCEND_COMM, gpu_hours=80))
    m.ok(
        c.SetInstrumentStatus(actor="ops", instrument_id=ASCEND_COMM, status=InstrumentStatus.OPEN)
    )
    parts = {}
    for i, (instrument_id, seller) in enumerate(
        ((H100, "dc1"), (ASCEND, "dc1"), (ASCEND_COMM, "dc3"))
    ):
        m.sell(seller, f"s{i}", 8, 1000, instrument_id=instrument_id)
        trade = one(
            m.buy("su1", f"b{i}", 8, 1000, voucher_id=1, instrument_id=instrument_id), Trade
        )
        assert trade.cash + trade.voucher == 8_000
        parts[instrument_id] = trade.voucher
    assert parts == {H100: 2_400, ASCEND: 4_800, ASCEND_COMM: 1_600}
    assert voucher_state(m, 1) == (1_000_000 - 8_800, 0, 8_800)
    # Commercial, foreign chip: the rate is zero, so the voucher cannot pay at all.
    assert (
        rejected(m.buy("su1", "b9", 8, 1000, voucher_id=1, instrument_id=COMMERCIAL))
        is Reason.VOUCHER_INELIGIBLE
    )
    # Without the voucher the same order is fine.
    one(m.buy("su1", "b10", 8, 1000, instrument_id=COMMERCIAL), OrderAccepted)


def test_hub_eligibility() -> None:
    m = Market()
    m.ok(programme("nx", eligible_hubs=["ningxia"]))
    m.ok(programme("both", eligible_hubs=["ningxia", "suzhou"]))
    v_nx = one(issue(m, "su2", 10_000, "nx"), VoucherIssued).voucher_id
    v_both = one(issue(m, "su2", 10_000, "both"), VoucherIssued).voucher_id
    assert (v_nx, v_both) == (2, 3)
    assert rejected(m.buy("su2", "b1", 8, 1000, voucher_id=v_nx)) is Reason.VOUCHER_INELIGIBLE
    accepted = one(m.buy("su2", "b2", 8, 1000, voucher_id=v_both), OrderAccepted)
    assert (accepted.cash_reserved, accepted.voucher_reserved) == (5_600, 2_400)


def test_reservation_splits_cash_and_voucher() -> None:
    m = Market()
    accepted = one(m.buy("su1", "b1", 16, 1000, voucher_id=1), OrderAccepted)
    assert (accepted.voucher_id, accepted.cash_reserved, accepted.voucher_reserved) == (
        1,
        11_200,
        4_800,
    )
    assert cash(m, "su1") == (START_CASH - 11_200, 11_200)
    assert voucher_state(m, 1) == (995_200, 4_800, 0)
    m.ok(c.CancelOrder(actor="su1", order_id=1))
    assert cash(m, "su1") == (START_CASH, 0)
    assert voucher_state(m, 1) == (1_000_000, 0, 0)


# --- the voucher part of a fill ---------------------------------------------------------


def test_voucher_part_is_limited_by_the_balance() -> None:
    m = Market()
    voucher_id = one(issue(m, "su2", 1_000), VoucherIssued).voucher_id
    accepted = one(m.buy("su2", "b1", 16, 1000, voucher_id=voucher_id), OrderAccepted)
    # 30% of 16,000 is 4,800, but the voucher holds 1,000.
    assert (accepted.cash_reserved, accepted.voucher_reserved) == (15_000, 1_000)
    first = one(m.sell("dc1", "s1", 8, 1000), Trade)
    second = one(m.sell("dc2", "s2", 8, 1000), Trade)
    assert [(t.cash, t.voucher) for t in (first, second)] == [(7_000, 1_000), (8_000, 0)]
    assert (first.claim_id, second.claim_id) == (1, 0)
    assert voucher_state(m, voucher_id) == (0, 0, 1_000)
    assert cash(m, "su2") == (START_CASH - 15_000, 0)


def test_voucher_part_is_cumulative_over_fills() -> None:
    m = Market()
    m.ok(c.ListInstrument(actor="ops", spec=spec(FINE, tick=1, lot=1)))
    m.ok(c.RegisterCapacity(actor="dc1", provider="dc1", instrument_id=FINE, gpu_hours=100))
    m.ok(c.SetInstrumentStatus(actor="ops", instrument_id=FINE, status=InstrumentStatus.OPEN))
    accepted = one(m.buy("su1", "b1", 4, 5, voucher_id=1, instrument_id=FINE), OrderAccepted)
    # floor(30% of 20) = 6 from the voucher, 14 in cash.
    assert (accepted.cash_reserved, accepted.voucher_reserved) == (14, 6)
    trades = [one(m.sell("dc1", f"s{i}", 1, 5, instrument_id=FINE), Trade) for i in range(4)]
    # Used after fills worth 5, 10, 15, 20: floor(1.5)=1, 3, floor(4.5)=4, 6.
    assert [t.voucher for t in trades] == [1, 2, 1, 2]
    assert [t.cash for t in trades] == [4, 3, 4, 3]
    assert [t.claim_id for t in trades] == [1, 2, 3, 4]
    assert voucher_state(m, 1) == (1_000_000 - 6, 0, 6)
    assert cash(m, "su1") == (START_CASH - 14, 0)
    assert cash(m, "dc1") == (14, 0)


def test_fill_below_the_limit_pays_the_rate_of_the_fill_and_frees_the_rest() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)
    events = m.buy("su1", "b1", 8, 1100, voucher_id=1)
    assert one(events, OrderAccepted).voucher_reserved == 2_640
    trade = one(events, Trade)
    assert (trade.price, trade.cash, trade.voucher) == (1000, 5_600, 2_400)
    assert voucher_state(m, 1) == (1_000_000 - 2_400, 0, 2_400)
    assert cash(m, "su1") == (START_CASH - 5_600, 0)


def test_voucher_that_is_not_the_holders() -> None:
    m = Market()
    assert rejected(m.buy("su2", "b1", 8, 1000, voucher_id=1)) is Reason.NOT_YOUR_VOUCHER
    assert rejected(m.buy("su2", "b2", 8, 1000, voucher_id=77)) is Reason.UNKNOWN_VOUCHER
    assert rejected(m.sell("dc1", "s1", 8, 1000, voucher_id=1)) is Reason.INVALID_FLAGS


def test_voucher_needs_the_cash_part_only() -> None:
    m = Market()
    # 1,250,000 * 8 = 10,000,000 notional; with 30% from the voucher only 7,000,000 in cash...
    m.ok(c.Withdraw(actor="ops", account_id="su1", amount=3_000_001))
    # ...but the voucher holds 1,000,000 < 3,000,000, so 9,000,000 cash is needed.
    assert rejected(m.buy("su1", "b1", 8, 1_250_000, voucher_id=1)) is Reason.INSUFFICIENT_FUNDS
    m.ok(c.Deposit(actor="ops", account_id="su1", amount=2_000_001))
    accepted = one(m.buy("su1", "b2", 8, 1_250_000, voucher_id=1), OrderAccepted)
    assert (accepted.cash_reserved, accepted.voucher_reserved) == (9_000_000, 1_000_000)
    assert cash(m, "su1") == (0, 9_000_000)


# --- expiry ------------------------------------------------------------------------------


def test_voucher_expiry_expires_resting_orders_and_refuses_new_ones() -> None:
    m = Market()
    m.ok(programme("short", expires_at=T0 + 5 * HOUR))
    voucher_id = one(issue(m, "su2", 100_000, "short"), VoucherIssued).voucher_id
    gtc = one(m.buy("su2", "b1", 8, 1000, voucher_id=voucher_id), OrderAccepted)
    gtd = one(
        m.buy(
            "su2", "b2", 8, 990, voucher_id=voucher_id, tif=TimeInForce.GTD, expire_at=T0 + 2 * HOUR
        ),
        OrderAccepted,
    )
    assert (gtc.expire_at, gtd.expire_at) == (T0 + 5 * HOUR, T0 + 2 * HOUR)
    m.buy("su2", "plain", 8, 980)  # no voucher: unaffected
    assert voucher_state(m, voucher_id) == (100_000 - 2_400 - 2_376, 4_776, 0)
    assert [e.order_id for e in of(m.advance(2 * HOUR), OrderCancelled)] == [gtd.order_id]
    assert m.advance(3 * HOUR - 1) == []
    cancelled = one(m.advance(1), OrderCancelled)
    assert (cancelled.order_id, cancelled.reason) == (gtc.order_id, CancelReason.EXPIRED)
    assert voucher_state(m, voucher_id) == (100_000, 0, 0)
    assert cash(m, "su2") == (START_CASH - 7_840, 7_840)
    assert rejected(m.buy("su2", "b3", 8, 1000, voucher_id=voucher_id)) is Reason.VOUCHER_EXPIRED
    assert rejected(issue(m, "su2", 1, "short")) is Reason.PROGRAMME_EXPIRED


# --- issuing -------------------------------------------------------------------------------


def test_issue_moves_the_issuers_cash_into_the_voucher() -> None:
    m = Market()
    issued = one(issue(m, "su2", 250_000), VoucherIssued)
    assert (issued.voucher_id, issued.holder, issued.issuer, issued.amount) == (
        2,
        "su2",
        "city",
        250_000,
    )
    assert issued.expires_at == T0 + 1_000 * HOUR
    assert cash(m, "city") == (CITY_CASH - 250_000, 0)
    assert voucher_state(m, 2) == (250_000, 0, 0)
    assert_ledger(m.core, MARKET_CAPACITY)


def test_yearly_cap_per_holder() -> None:
    m = Market()
    m.ok(programme("long", cap_per_holder_year=2_000_000, expires_at=YEAR_2028 + HOUR))
    one(issue(m, "su1", 2_000_000, "long"), VoucherIssued)
    assert rejected(issue(m, "su1", 1, "long")) is Reason.PROGRAMME_CAP_EXCEEDED
    one(issue(m, "su2", 2_000_000, "long"), VoucherIssued)  # the cap is per holder
    # sz: su1 already has 1,000,000 of its 5,000,000 this year.
    one(issue(m, "su1", 4_000_000), VoucherIssued)
    assert rejected(issue(m, "su1", 1)) is Reason.PROGRAMME_CAP_EXCEEDED
    m.now = YEAR_2028 - 1
    m.ok(c.AdvanceClock(actor=SYSTEM))  # the instruments close on the way
    assert rejected(issue(m, "su1", 1, "long")) is Reason.PROGRAMME_CAP_EXCEEDED
    m.now = YEAR_2028
    one(issue(m, "su1", 2_000_000, "long"), VoucherIssued)
    assert m.core.programmes["long"].issued == 6_000_000


def test_total_budget() -> None:
    m = Market()
    m.ok(programme("small", budget=1_500_000))
    one(issue(m, "su1", 1_000_000, "small"), VoucherIssued)
    assert rejected(issue(m, "su2", 500_001, "small")) is Reason.PROGRAMME_BUDGET_EXCEEDED
    one(issue(m, "su2", 500_000, "small"), VoucherIssued)
    assert m.core.programmes["small"].issued == 1_500_000
    assert rejected(issue(m, "su2", 1, "small")) is Reason.PROGRAMME_BUDGET_EXCEEDED


def test_min_revenue_basis() -> None:
    m = Market()
    m.ok(c.AdmitAccount(actor="ops", account_id="poor", role=Role.STARTUP, revenue=99_999_999))
    m.ok(c.AdmitAccount(actor="ops", account_id="just", role=Role.STARTUP, revenue=100_000_000))
    assert rejected(issue(m, "poor", 1_000)) is Reason.HOLDER_INELIGIBLE
    one(issue(m, "just", 1_000), VoucherIssued)
    assert rejected(issue(m, "dc1", 1_000)) is Reason.HOLDER_INELIGIBLE
    assert rejected(issue(m, "ops", 1_000)) is Reason.HOLDER_INELIGIBLE


def test_gov_project_basis() -> None:
    m = Market()
    m.ok(
        programme(
            "gp", basis=EligibilityBasis.GOV_PROJECT, min_revenue=0, projects=["llm-eval", "chip-x"]
        )
    )
    m.ok(c.AdmitAccount(actor="ops", account_id="lab", role=Role.STARTUP, projects=["chip-x"]))
    m.ok(c.AdmitAccount(actor="ops", account_id="other", role=Role.STARTUP, projects=["roads"]))
    one(issue(m, "lab", 1_000, "gp"), VoucherIssued)
    assert rejected(issue(m, "other", 1_000, "gp")) is Reason.HOLDER_INELIGIBLE
    # su1's revenue does not help under this basis.
    assert rejected(issue(m, "su1", 1_000, "gp")) is Reason.HOLDER_INELIGIBLE
    assert (
        rejected(m.apply(programme("gp2", basis=EligibilityBasis.GOV_PROJECT)))
        is Reason.INVALID_FLAGS
    )


def test_issuer_must_have_the_cash() -> None:
    m = Market()
    m.ok(c.AdmitAccount(actor="ops", account_id="town", role=Role.ISSUER))
    m.ok(c.Deposit(actor="ops", account_id="town", amount=500))
    m.ok(programme("tp", actor="town"))
    assert rejected(issue(m, "su2", 501, "tp", actor="town")) is Reason.INSUFFICIENT_FUNDS
    one(issue(m, "su2", 500, "tp", actor="town"), VoucherIssued)
    assert cash(m, "town") == (0, 0)
    # Only the programme's issuer issues from it.
    assert rejected(issue(m, "su2", 1, "sz", actor="town")) is Reason.NOT_PERMITTED


def test_only_issuers_create_programmes_with_valid_rates() -> None:
    m = Market()
    assert rejected(m.apply(programme("x", actor="su1"))) is Reason.NOT_PERMITTED
    assert rejected(m.apply(programme("x", actor="ops"))) is Reason.NOT_PERMITTED
    assert rejected(m.apply(programme("x", rate_state_domestic=10_001))) is Reason.INVALID_RATE
    assert rejected(m.apply(programme("x", rate_commercial_foreign=-1))) is Reason.INVALID_RATE
    zero = {
        "rate_state_domestic": 0,
        "rate_state_foreign": 0,
        "rate_commercial_domestic": 0,
        "rate_commercial_foreign": 0,
    }
    assert rejected(m.apply(programme("x", **zero))) is Reason.INVALID_RATE
    created = one(m.ok(programme("x", rate_state_domestic=10_000)), ProgrammeCreated)
    assert (created.programme_id, created.issuer) == ("x", "city")
    assert rejected(m.apply(programme("x"))) is Reason.DUPLICATE_ID


# --- claims --------------------------------------------------------------------------------


def _two_claims(m: Market) -> list[Trade]:
    m.sell("dc1", "s1", 8, 1000)
    m.sell("dc2", "s2", 8, 1000)
    return of(m.buy("su1", "b1", 16, 1000, voucher_id=1), Trade)


def test_a_claim_per_fill_with_a_voucher_part() -> None:
    m = Market()
    trades = _two_claims(m)
    assert [(t.trade_id, t.seller, t.voucher, t.claim_id) for t in trades] == [
        (1, "dc1", 2_400, 1),
        (2, "dc2", 2_400, 2),
    ]
    claims = m.core.claims
    assert sorted(claims) == [1, 2]
    for claim_id, contract_id, provider in ((1, 1, "dc1"), (2, 2, "dc2")):
        claim = claims[claim_id]
        assert (claim.contract_id, claim.provider, claim.issuer, claim.amount) == (
            contract_id,
            provider,
            "city",
            2_400,
        )
        assert (claim.voucher_id, claim.programme_id, claim.settled) == (1, "sz", False)
    # The seller has the cash part now and the voucher part only as a claim.
    assert cash(m, "dc1") == (5_600, 0)
    assert m.core.contracts[1] == trades[0]
    assert_ledger(m.core, MARKET_CAPACITY)


def test_issuer_settles_a_claim_for_cash_once() -> None:
    m = Market()
    _two_claims(m)
    settled = one(m.ok(c.SettleClaim(actor="city", claim_id=1)), ClaimSettled)
    assert (settled.claim_id, settled.issuer, settled.provider, settled.amount) == (
        1,
        "city",
        "dc1",
        2_400,
    )
    assert cash(m, "dc1") == (8_000, 0)
    # Issuing already took the money out of the issuer's cash: settling does not again.
    assert cash(m, "city") == (CITY_CASH, 0)
    assert m.core.claims[1].settled
    assert_ledger(m.core, MARKET_CAPACITY)
    assert rejected(m.apply(c.SettleClaim(actor="city", claim_id=1))) is Reason.CLAIM_SETTLED
    assert cash(m, "dc1") == (8_000, 0)
    assert rejected(m.apply(c.SettleClaim(actor="city", claim_id=3))) is Reason.UNKNOWN_CLAIM


def test_another_issuer_cannot_settle() -> None:
    m = Market()
    _two_claims(m)
    m.ok(c.AdmitAccount(actor="ops", account_id="town", role=Role.ISSUER))
    assert rejected(m.apply(c.SettleClaim(actor="town", claim_id=2))) is Reason.NOT_YOUR_CLAIM
    assert rejected(m.apply(c.SettleClaim(actor="dc2", claim_id=2))) is Reason.NOT_YOUR_CLAIM
    assert not m.core.claims[2].settled
    assert cash(m, "dc2") == (5_600, 0)


def test_conservation_through_issue_trade_cancel_and_settle() -> None:
    m = Market()
    assert m.core.deposited == 2 * START_CASH + 50_000_000
    assert_ledger(m.core, MARKET_CAPACITY)
    issue(m, "su2", 300_000)
    m.buy("su2", "b0", 24, 1010, voucher_id=2, instrument_id=ASCEND)
    m.sell("dc1", "s0", 16, 1000, instrument_id=ASCEND)
    assert_ledger(m.core, MARKET_CAPACITY)
    trades = _two_claims(m)
    assert len(trades) == 2
    assert_ledger(m.core, MARKET_CAPACITY)
    m.ok(c.SettleClaim(actor="city", claim_id=1))
    m.ok(c.CancelAll(actor="su2"))
    m.ok(c.Withdraw(actor="ops", account_id="dc1", amount=1_000))
    assert_ledger(m.core, MARKET_CAPACITY)
    # By hand: 70,000,000 deposited, 1,000 withdrawn. Claim 1 was 60% of 16 * 1,010
    # (the resting ASCEND buy's price) = 9,696 and is settled; claims 2 and 3 are 2,400.
    core = m.core
    assert core.deposited == 70_000_000 - 1_000
    assert [cl.amount for cl in core.claims.values()] == [9_696, 2_400, 2_400]
    assert sum(cl.amount for cl in core.claims.values() if not cl.settled) == 4_800
    # dc1: 16,160 - 9,696 in cash for ASCEND, the settled 9,696, 5,600 for H100; less 1,000.
    assert cash(m, "dc1") == (16_160 + 5_600 - 1_000, 0)

"""Accounts: admission, roles, cash in and out, and providers' capacity."""

from __future__ import annotations

from typing import Any

import pytest

from exchange import commands as c
from exchange.core import MAX_AMOUNT, MAX_DEPOSITED
from exchange.events import AccountAdmitted, CapacityRegistered, CashMoved, OrderAccepted
from exchange.reasons import Reason
from exchange.reference import InstrumentStatus, Role, Tier
from tests.market import ASCEND, COMMERCIAL, H100, SYSTEM, Market
from tests.test_orders import START_CASH, capacity, cash, one, rejected


def admit(m: Market, account_id: str, role: Role, actor: str = "ops", **kw: Any) -> Any:
    return m.apply(c.AdmitAccount(actor=actor, account_id=account_id, role=role, **kw))


# --- admission ------------------------------------------------------------------------


def test_admit_each_role() -> None:
    m = Market()
    event = one(
        admit(m, "dc9", Role.PROVIDER, tier=Tier.COMMERCIAL, hub="ningxia"), AccountAdmitted
    )
    assert (event.account_id, event.role, event.tier, event.hub) == (
        "dc9",
        Role.PROVIDER,
        Tier.COMMERCIAL,
        "ningxia",
    )
    one(admit(m, "su9", Role.STARTUP, revenue=0, projects=["p"]), AccountAdmitted)
    one(admit(m, "ops2", Role.OPERATOR, actor=SYSTEM), AccountAdmitted)
    one(admit(m, "gov9", Role.ISSUER, actor="ops2"), AccountAdmitted)
    account = m.core.accounts["su9"]
    assert (account.role, account.cash, account.projects) == (Role.STARTUP, 0, ["p"])


BAD_ADMISSIONS = [
    ("empty id", "", Role.STARTUP, {}, Reason.INVALID_ID),
    ("long id", "a" * 65, Role.STARTUP, {}, Reason.INVALID_ID),
    ("padded id", "su9 ", Role.STARTUP, {}, Reason.INVALID_ID),
    ("control char", "su\n9", Role.STARTUP, {}, Reason.INVALID_ID),
    ("the service's id", SYSTEM, Role.OPERATOR, {}, Reason.INVALID_ID),
    ("taken", "su1", Role.STARTUP, {}, Reason.DUPLICATE_ID),
    ("provider without tier", "dc9", Role.PROVIDER, {"hub": "suzhou"}, Reason.INVALID_FLAGS),
    ("provider without hub", "dc9", Role.PROVIDER, {"tier": Tier.STATE}, Reason.INVALID_FLAGS),
    ("start-up with tier", "su9", Role.STARTUP, {"tier": Tier.STATE}, Reason.INVALID_FLAGS),
    ("issuer with hub", "gov9", Role.ISSUER, {"hub": "suzhou"}, Reason.INVALID_FLAGS),
    ("negative revenue", "su9", Role.STARTUP, {"revenue": -1}, Reason.INVALID_AMOUNT),
    ("huge revenue", "su9", Role.STARTUP, {"revenue": MAX_AMOUNT + 1}, Reason.INVALID_AMOUNT),
]


@pytest.mark.parametrize(
    ("account_id", "role", "fields", "reason"),
    [b[1:] for b in BAD_ADMISSIONS],
    ids=[b[0] for b in BAD_ADMISSIONS],
)
def test_admit_validation(
    account_id: str, role: Role, fields: dict[str, Any], reason: Reason
) -> None:
    m = Market()
    before = set(m.core.accounts)
    assert rejected(admit(m, account_id, role, **fields)) is reason
    assert set(m.core.accounts) == before


def test_only_operators_admit() -> None:
    m = Market()
    for actor in ("su1", "dc1", "city", "ghost"):
        assert rejected(admit(m, "su9", Role.STARTUP, actor=actor)) is Reason.NOT_PERMITTED
    assert "su9" not in m.core.accounts


# --- roles ------------------------------------------------------------------------------


def test_start_up_cannot_sell_issue_or_halt() -> None:
    m = Market()
    assert rejected(m.sell("su1", "s1", 8, 1000)) is Reason.NOT_PERMITTED
    issue = c.IssueVoucher(actor="su1", programme_id="sz", holder="su1", amount=1_000)
    assert rejected(m.apply(issue)) is Reason.NOT_PERMITTED
    halt = c.SetInstrumentStatus(actor="su1", instrument_id=H100, status=InstrumentStatus.HALTED)
    assert rejected(m.apply(halt)) is Reason.NOT_PERMITTED
    register = c.RegisterCapacity(actor="su1", provider="su1", instrument_id=H100, gpu_hours=8)
    assert rejected(m.apply(register)) is Reason.NOT_PERMITTED
    assert rejected(m.apply(c.AdvanceClock(actor="su1"))) is Reason.NOT_PERMITTED


def test_provider_cannot_buy() -> None:
    m = Market()
    assert rejected(m.buy("dc1", "b1", 8, 1000)) is Reason.NOT_PERMITTED
    assert cash(m, "dc1") == (0, 0)


def test_issuer_and_operator_do_not_trade() -> None:
    m = Market()
    assert rejected(m.buy("city", "b1", 8, 1000)) is Reason.NOT_PERMITTED
    assert rejected(m.sell("city", "s1", 8, 1000)) is Reason.NOT_PERMITTED
    assert rejected(m.buy("ops", "b1", 8, 1000)) is Reason.NOT_PERMITTED
    assert rejected(m.buy("ghost", "b1", 8, 1000)) is Reason.UNKNOWN_ACCOUNT


def test_non_operator_cannot_move_cash() -> None:
    m = Market()
    for actor in ("su1", "dc1", "city"):
        assert (
            rejected(m.apply(c.Deposit(actor=actor, account_id="su1", amount=1)))
            is Reason.NOT_PERMITTED
        )
        assert (
            rejected(m.apply(c.Withdraw(actor=actor, account_id="su1", amount=1)))
            is Reason.NOT_PERMITTED
        )
    assert cash(m, "su1") == (START_CASH, 0)


# --- cash ---------------------------------------------------------------------------------


def test_deposit_and_withdraw() -> None:
    m = Market()
    moved = one(m.ok(c.Deposit(actor="ops", account_id="dc1", amount=12_345)), CashMoved)
    assert (moved.account_id, moved.amount, moved.cash) == ("dc1", 12_345, 12_345)
    moved = one(m.ok(c.Withdraw(actor="ops", account_id="dc1", amount=345)), CashMoved)
    assert (moved.amount, moved.cash) == (-345, 12_000)
    assert m.core.deposited == 2 * START_CASH + 50_000_000 + 12_000


def test_deposit_limits() -> None:
    m = Market()
    for amount in (0, -1, MAX_AMOUNT + 1):
        assert (
            rejected(m.apply(c.Deposit(actor="ops", account_id="su1", amount=amount)))
            is Reason.INVALID_AMOUNT
        )
        assert (
            rejected(m.apply(c.Withdraw(actor="ops", account_id="su1", amount=amount)))
            is Reason.INVALID_AMOUNT
        )
    assert (
        rejected(m.apply(c.Deposit(actor="ops", account_id="ghost", amount=1)))
        is Reason.UNKNOWN_ACCOUNT
    )
    one(m.ok(c.Deposit(actor="ops", account_id="su1", amount=MAX_AMOUNT)), CashMoved)
    assert cash(m, "su1") == (START_CASH + MAX_AMOUNT, 0)


def test_deposits_add_up_to_no_more_than_the_exchange_bound() -> None:
    """Each deposit is within MAX_AMOUNT; repeated, they stop at MAX_DEPOSITED, so no
    balance, however the cash then moves, leaves the int64 range."""
    m = Market()
    room = MAX_DEPOSITED - m.core.deposited
    full, rest = divmod(room, MAX_AMOUNT)
    for _ in range(full):
        m.ok(c.Deposit(actor="ops", account_id="dc1", amount=MAX_AMOUNT))
    if rest:
        m.ok(c.Deposit(actor="ops", account_id="dc2", amount=rest))
    assert m.core.deposited == MAX_DEPOSITED
    before = cash(m, "su1")
    assert (
        rejected(m.apply(c.Deposit(actor="ops", account_id="su1", amount=1)))
        is Reason.INVALID_AMOUNT
    )
    assert cash(m, "su1") == before and m.core.deposited == MAX_DEPOSITED
    m.ok(c.Withdraw(actor="ops", account_id="dc1", amount=5))  # room again
    m.ok(c.Deposit(actor="ops", account_id="su1", amount=5))
    assert m.core.deposited == MAX_DEPOSITED


def test_withdraw_only_free_cash() -> None:
    m = Market()
    m.buy("su1", "b1", 8, 1000)  # holds 8,000
    free = START_CASH - 8_000
    assert (
        rejected(m.apply(c.Withdraw(actor="ops", account_id="su1", amount=free + 1)))
        is Reason.INSUFFICIENT_FUNDS
    )
    one(m.ok(c.Withdraw(actor="ops", account_id="su1", amount=free)), CashMoved)
    assert cash(m, "su1") == (0, 8_000)


def test_buy_needs_free_cash() -> None:
    m = Market()
    m.ok(c.Withdraw(actor="ops", account_id="su2", amount=START_CASH - 8_000))
    assert rejected(m.buy("su2", "b1", 8, 1010)) is Reason.INSUFFICIENT_FUNDS
    one(m.buy("su2", "b2", 8, 1000), OrderAccepted)
    assert cash(m, "su2") == (0, 8_000)
    assert rejected(m.buy("su2", "b3", 8, 10)) is Reason.INSUFFICIENT_FUNDS


# --- capacity ------------------------------------------------------------------------------


def test_register_capacity_adds_to_free_capacity() -> None:
    m = Market()
    event = one(
        m.ok(c.RegisterCapacity(actor="dc1", provider="dc1", instrument_id=H100, gpu_hours=800)),
        CapacityRegistered,
    )
    assert (event.provider, event.instrument_id, event.gpu_hours, event.capacity) == (
        "dc1",
        H100,
        800,
        8_800,
    )
    # An operator may register on a provider's behalf.
    m.ok(c.RegisterCapacity(actor="ops", provider="dc1", instrument_id=H100, gpu_hours=8))
    assert capacity(m, "dc1") == (8_808, 0, 0)


def test_capacity_registration_is_checked() -> None:
    m = Market()
    m.ok(
        c.AdmitAccount(
            actor="ops", account_id="nx1", role=Role.PROVIDER, tier=Tier.STATE, hub="ningxia"
        )
    )

    def register(actor: str, provider: str, instrument_id: str, hours: int) -> Reason:
        return rejected(
            m.apply(
                c.RegisterCapacity(
                    actor=actor, provider=provider, instrument_id=instrument_id, gpu_hours=hours
                )
            )
        )

    assert register("nx1", "nx1", H100, 8) is Reason.PROVIDER_MISMATCH  # hub
    assert register("dc3", "dc3", H100, 8) is Reason.PROVIDER_MISMATCH  # tier
    assert register("dc1", "dc1", COMMERCIAL, 8) is Reason.PROVIDER_MISMATCH  # tier
    assert register("dc1", "dc1", H100, 12) is Reason.OFF_LOT
    assert register("dc1", "dc1", H100, 0) is Reason.INVALID_AMOUNT
    assert register("dc1", "dc1", H100, -8) is Reason.INVALID_AMOUNT
    assert register("dc1", "dc1", H100, MAX_AMOUNT + 8) is Reason.INVALID_AMOUNT
    assert register("dc2", "dc1", H100, 8) is Reason.NOT_PERMITTED  # someone else's
    assert register("su1", "su1", H100, 8) is Reason.NOT_PERMITTED  # not a provider
    assert register("ops", "su1", H100, 8) is Reason.NOT_PERMITTED  # not a provider
    assert register("dc1", "dc1", "NOPE", 8) is Reason.UNKNOWN_INSTRUMENT
    assert register("ops", "ghost", H100, 8) is Reason.UNKNOWN_ACCOUNT
    assert capacity(m, "dc1") == (8_000, 0, 0)
    assert capacity(m, "dc1", ASCEND) == (8_000, 0, 0)


def test_a_providers_capacity_on_an_instrument_stops_at_the_bound() -> None:
    m = Market()
    m.sell("dc1", "s1", 8, 1000)  # reserved and, once bought, sold capacity count too
    m.buy("su1", "b1", 8, 1000)
    m.sell("dc1", "s2", 16, 1000)
    free, reserved, sold = capacity(m, "dc1")
    assert (reserved, sold) == (16, 8)
    room = MAX_AMOUNT - (free + reserved + sold)
    m.ok(c.RegisterCapacity(actor="dc1", provider="dc1", instrument_id=H100, gpu_hours=room))
    refused = m.apply(
        c.RegisterCapacity(actor="dc1", provider="dc1", instrument_id=H100, gpu_hours=8)
    )
    assert rejected(refused) is Reason.INVALID_AMOUNT
    assert capacity(m, "dc1") == (free + room, 16, 8)
    # Another instrument, or another provider, has its own room.
    m.ok(c.RegisterCapacity(actor="dc1", provider="dc1", instrument_id=ASCEND, gpu_hours=8))
    m.ok(c.RegisterCapacity(actor="dc2", provider="dc2", instrument_id=H100, gpu_hours=8))


def test_sell_needs_free_capacity() -> None:
    m = Market()
    one(m.sell("dc1", "s1", 7_992, 1000), OrderAccepted)
    assert rejected(m.sell("dc1", "s2", 16, 1000)) is Reason.INSUFFICIENT_CAPACITY
    one(m.sell("dc1", "s3", 8, 1000), OrderAccepted)
    assert capacity(m, "dc1") == (0, 8_000, 0)
    # Capacity on another instrument does not help.
    assert rejected(m.sell("dc3", "s4", 8, 1000)) is Reason.INSUFFICIENT_CAPACITY

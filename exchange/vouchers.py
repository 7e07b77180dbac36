"""Computing vouchers: programmes, vouchers, claims, and their arithmetic.

A voucher is backed: issuing it moves the amount out of the issuer's cash into
the voucher, so every claim a provider later holds is already funded, and cash +
voucher value + open claims is conserved exactly through every trade.

Voucher part of a buy. An order that names a voucher fixes its rate at entry
(programme rate for the instrument's provider tier and chip origin) and
reserves ``cap = min(free voucher balance, floor(rate * price * qty))`` from the
voucher and the rest of ``price * qty`` in cash. Fills take the voucher part
cumulatively: after fills worth ``V`` in all, the order has used
``min(cap, floor(rate * V))`` of the voucher. Because ``V - floor(rate * V)`` never
falls as ``V`` grows and ``V <= price * qty``, the cash used never exceeds the
cash reserved, whatever the fill prices; and the voucher part of each fill is
at most rate times its value. Amending starts a new cap from the order's
remaining quantity.
"""

from __future__ import annotations

import datetime
from typing import Final

import msgspec

from exchange.reference import EligibilityBasis, Tier

BP: Final = 10_000  # basis points in one


class Programme(msgspec.Struct, kw_only=True):
    programme_id: str
    issuer: str
    name: str
    rate_state_domestic: int
    rate_state_foreign: int
    rate_commercial_domestic: int
    rate_commercial_foreign: int
    eligible_hubs: list[str]
    cap_per_holder_year: int
    budget: int
    expires_at: int
    basis: EligibilityBasis
    min_revenue: int = 0
    projects: list[str] = msgspec.field(default_factory=list)
    issued: int = 0
    # "holder/year" -> fen issued to that holder in that calendar year
    issued_by_holder_year: dict[str, int] = msgspec.field(default_factory=dict)

    def rate(self, tier: Tier, domestic: bool) -> int:
        if tier is Tier.STATE:
            return self.rate_state_domestic if domestic else self.rate_state_foreign
        return self.rate_commercial_domestic if domestic else self.rate_commercial_foreign

    def covers_hub(self, hub: str) -> bool:
        return not self.eligible_hubs or hub in self.eligible_hubs


class Voucher(msgspec.Struct, kw_only=True):
    """``amount == balance + reserved + spent`` always holds."""

    voucher_id: int
    programme_id: str
    issuer: str
    holder: str
    amount: int
    expires_at: int
    issued_at: int
    balance: int = 0  # free to reserve
    reserved: int = 0  # held by open buy orders
    spent: int = 0  # paid out into claims


class VoucherClaim(msgspec.Struct, kw_only=True):
    """A provider's claim on an issuer for the voucher part of one contract."""

    claim_id: int
    contract_id: int
    voucher_id: int
    programme_id: str
    issuer: str
    provider: str
    amount: int
    created_at: int
    settled: bool = False
    settled_at: int = 0


def voucher_cap(free_balance: int, rate_bp: int, notional: int) -> int:
    """The most of ``notional`` fen that a voucher may pay at ``rate_bp``."""
    return min(free_balance, rate_bp * notional // BP)


def voucher_used(cap: int, rate_bp: int, filled_value: int) -> int:
    """Voucher used once fills worth ``filled_value`` have been made (see module doc)."""
    return min(cap, rate_bp * filled_value // BP)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def calendar_year(ts_ns: int) -> int:
    """The UTC calendar year of a timestamp, computed exactly (no float)."""
    return (_EPOCH + datetime.timedelta(microseconds=ts_ns // 1000)).year

"""Why a command was refused, or why an order left the book.

Reasons are values, not exceptions: the core answers a refused command with a
``Rejected`` event carrying one of these codes, and the client sees the code
unchanged. The set is closed. Codes are grouped by the stage that refuses them,
in the order the core checks: validation (the command alone), reference and
permission (the command against the venue's records), risk (the command against
balances, capacity and vouchers), matching (the command against the book).
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    # 1. Validation: the command on its own is wrong.
    INVALID_QUANTITY = "INVALID_QUANTITY"  # zero, negative, or above the instrument's maximum
    OFF_LOT = "OFF_LOT"  # quantity not a whole number of lots
    INVALID_PRICE = "INVALID_PRICE"  # zero, negative, or above the instrument's maximum
    OFF_TICK = "OFF_TICK"  # price not a whole number of ticks
    INVALID_TIME_IN_FORCE = "INVALID_TIME_IN_FORCE"  # e.g. a market order that could rest
    INVALID_EXPIRY = "INVALID_EXPIRY"  # GTD without a future expiry, or expiry on non-GTD
    INVALID_MIN_QTY = "INVALID_MIN_QTY"  # negative, off lot, or above the quantity
    INVALID_FLAGS = "INVALID_FLAGS"  # contradictory options, e.g. post-only market order
    # A money or capacity amount that is zero, negative, above 10^15, or would take
    # the exchange's deposits past 10^18 or a provider's capacity on an instrument
    # past 10^15.
    INVALID_AMOUNT = "INVALID_AMOUNT"
    INVALID_RATE = "INVALID_RATE"  # a voucher rate outside 0..10000 basis points
    INVALID_INSTRUMENT = "INVALID_INSTRUMENT"  # bad tick, lot, window or limits
    INVALID_ID = "INVALID_ID"  # an empty or over-long identifier

    # 2. Reference and permission: the command names something wrong.
    NOT_PERMITTED = "NOT_PERMITTED"  # the actor's role may not do this
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    UNKNOWN_INSTRUMENT = "UNKNOWN_INSTRUMENT"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"  # no open order with that id (or client order id)
    UNKNOWN_VOUCHER = "UNKNOWN_VOUCHER"
    UNKNOWN_PROGRAMME = "UNKNOWN_PROGRAMME"
    UNKNOWN_CLAIM = "UNKNOWN_CLAIM"
    DUPLICATE_ID = "DUPLICATE_ID"  # instrument, account or programme id already taken
    DUPLICATE_CLIENT_ORDER_ID = "DUPLICATE_CLIENT_ORDER_ID"
    NOT_YOUR_ORDER = "NOT_YOUR_ORDER"
    NOT_YOUR_VOUCHER = "NOT_YOUR_VOUCHER"
    NOT_YOUR_CLAIM = "NOT_YOUR_CLAIM"
    MARKET_NOT_OPEN = "MARKET_NOT_OPEN"  # pre-open or closed
    MARKET_HALTED = "MARKET_HALTED"
    NOT_ALLOWED_IN_AUCTION = "NOT_ALLOWED_IN_AUCTION"  # only resting limit orders in a call
    INVALID_TRANSITION = "INVALID_TRANSITION"  # instrument status change not allowed
    PROVIDER_MISMATCH = "PROVIDER_MISMATCH"  # provider's hub or tier differs from instrument's
    CLAIM_SETTLED = "CLAIM_SETTLED"  # a claim can be settled once only

    # 3. Risk: the command is well formed but cannot be afforded or is not allowed.
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    INSUFFICIENT_CAPACITY = "INSUFFICIENT_CAPACITY"
    VOUCHER_EXPIRED = "VOUCHER_EXPIRED"
    VOUCHER_INELIGIBLE = "VOUCHER_INELIGIBLE"  # wrong hub, or zero rate for this tier and chip
    HOLDER_INELIGIBLE = "HOLDER_INELIGIBLE"  # not a start-up, or fails the programme's basis
    PROGRAMME_EXPIRED = "PROGRAMME_EXPIRED"
    PROGRAMME_CAP_EXCEEDED = "PROGRAMME_CAP_EXCEEDED"  # yearly cap per holder
    PROGRAMME_BUDGET_EXCEEDED = "PROGRAMME_BUDGET_EXCEEDED"

    # 4. Matching: the book refuses it.
    POST_ONLY_WOULD_CROSS = "POST_ONLY_WOULD_CROSS"
    NO_LIQUIDITY = "NO_LIQUIDITY"  # a market order met an empty opposite side


class CancelReason(enum.StrEnum):
    """Why an accepted order stopped working before it was filled."""

    REQUESTED = "REQUESTED"  # the owner cancelled it
    MASS_CANCEL = "MASS_CANCEL"  # cancel-all by the owner
    OPERATOR = "OPERATOR"  # an operator cancelled it
    IOC_REMAINDER = "IOC_REMAINDER"  # immediate-or-cancel leaves nothing on the book
    FOK_UNFILLED = "FOK_UNFILLED"  # fill-or-kill could not fill whole
    MIN_QTY_UNMET = "MIN_QTY_UNMET"  # the minimum acceptable fill was not available at once
    SELF_TRADE = "SELF_TRADE"  # self-trade prevention
    EXPIRED = "EXPIRED"  # GTD time, delivery window opening, or the voucher expiring
    MARKET_CLOSED = "MARKET_CLOSED"  # the instrument closed

"""The wire protocol: every message a client and the gateway exchange.

This module is the one place the wire messages are defined. Each message is a
frozen msgspec Struct, tagged by its ``type`` field; client requests form the
union ``Request`` and server messages the union ``ServerMessage``. One decoder
and one encoder are built once here and reused. ``docs/protocol.schema.json``
and the message reference of ``docs/protocol.md`` are generated from these
Structs (``python -m gateway.protocol_doc``), and a test checks that the
committed files agree with them.

Conventions
-----------
* A WebSocket text frame carries one JSON object; binary frames are refused.
* Every request may carry ``id`` (an integer or a string). Every answer to that
  request echoes it; unsolicited messages (market data, fills of resting
  orders, heartbeats) carry ``id: null`` or no ``id`` at all.
* Money is integer fen (CNY 0.01), quantities are integer GPU-hours, times are
  integer nanoseconds since the Unix epoch (UTC), voucher rates are integer
  basis points. No number on the wire is a float.
* Unknown fields are refused, so a misspelt option never goes unnoticed.

This module only turns bytes into Structs and Structs into bytes; it does no
I/O. ``decode_request`` never raises: bad input comes back as a ``ProtocolError``
value, as rejections are values in the core.
"""

from __future__ import annotations

import enum
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, Final

import msgspec

from exchange.reasons import CancelReason, Reason
from exchange.reference import (
    EligibilityBasis,
    InstrumentSpec,
    InstrumentStatus,
    OrderType,
    Role,
    SelfTradePrevention,
    Side,
    Tier,
    TimeInForce,
)

PROTOCOL_VERSION: Final = 1

Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""Every integer a client sends fits in a signed 64-bit integer."""

MAX_ID_LENGTH: Final = 64
RequestId = Int | Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)] | None
"""A request's own id, echoed in its answers: a 64-bit integer or a short string."""


class Channel(enum.StrEnum):
    """What a connection may subscribe to."""

    BOOK = "book"  # L2 depth of one instrument: a snapshot, then updates
    TRADES = "trades"  # public trades of one instrument
    TICKER = "ticker"  # best bid/ask, last, 24-hour volume and VWAP of one instrument
    STATUS = "status"  # every instrument: listing and status changes (no instrument_id)
    PRIVATE = "private"  # the account's balances, vouchers, contracts, claims (on by default)
    ORDERS = "orders"  # operators: every account's execution reports, live
    ACCOUNTS = "accounts"  # operators: every account's balances, live
    VOUCHERS = "vouchers"  # operators: every voucher and claim, live; issuers: their own


class ErrorCode(enum.StrEnum):
    """Why the gateway refused a message before it reached the exchange.

    Refusals by the exchange itself carry a ``Reason`` (exchange.reasons) instead.
    """

    BAD_JSON = "BAD_JSON"  # the frame is not valid JSON
    BINARY_FRAME = "BINARY_FRAME"  # only text frames are accepted
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"  # longer than max_frame_bytes
    NOT_AN_OBJECT = "NOT_AN_OBJECT"  # the JSON is not an object
    UNKNOWN_MESSAGE = "UNKNOWN_MESSAGE"  # missing or unknown "type"
    MISSING_FIELD = "MISSING_FIELD"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    INVALID_FIELD = "INVALID_FIELD"  # wrong JSON type or a value out of range
    NOT_AUTHENTICATED = "NOT_AUTHENTICATED"  # the request needs an API key
    ALREADY_AUTHENTICATED = "ALREADY_AUTHENTICATED"
    AUTH_FAILED = "AUTH_FAILED"  # unknown or revoked API key
    NOT_PERMITTED = "NOT_PERMITTED"  # the account's role may not do this
    RATE_LIMITED = "RATE_LIMITED"  # the request was dropped: too many requests
    UNKNOWN_INSTRUMENT = "UNKNOWN_INSTRUMENT"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    UNKNOWN_KEY = "UNKNOWN_KEY"  # no such API key id
    INSTRUMENT_REQUIRED = "INSTRUMENT_REQUIRED"  # the channel needs an instrument_id
    NOT_SUBSCRIBED = "NOT_SUBSCRIBED"  # unsubscribe from a channel the connection is not on
    # A restarted gateway knows the orders open at the restart, not those finished before.
    ORDER_FINISHED_BEFORE_RESTART = "ORDER_FINISHED_BEFORE_RESTART"  # no report of it is kept
    UNAVAILABLE = "UNAVAILABLE"  # the exchange is stopping or its journal failed
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"  # the account has its limit open already
    TOO_MANY_OPEN_ORDERS = "TOO_MANY_OPEN_ORDERS"  # the account has its limit resting already
    INTERNAL_ERROR = "INTERNAL_ERROR"  # a fault in the gateway; nothing was changed


class CloseCode(enum.IntEnum):
    """WebSocket close codes the gateway uses, with the reason text it sends."""

    GOING_AWAY = 1001  # the server is shutting down
    MESSAGE_TOO_BIG = 1009  # a frame above the hard limit (closed by the transport)
    INTERNAL_ERROR = 1011  # the gateway failed handling a request (a fault, logged)
    IDLE_TIMEOUT = 4001  # nothing received for idle_timeout_ms
    PROTOCOL_ABUSE = 4002  # too many bad or rate-limited messages
    SLOW_CONSUMER = 4003  # the outbound queue overflowed even with conflation
    AUTH_REVOKED = 4004  # the connection's API key was revoked


CLOSE_REASONS: Final[dict[CloseCode, str]] = {
    CloseCode.GOING_AWAY: "server shutting down",
    CloseCode.MESSAGE_TOO_BIG: "frame too large",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.IDLE_TIMEOUT: "idle timeout: no message or ping received",
    CloseCode.PROTOCOL_ABUSE: "protocol abuse: too many bad or rate-limited messages",
    CloseCode.SLOW_CONSUMER: "slow consumer: outbound queue overflow",
    CloseCode.AUTH_REVOKED: "api key revoked",
}


class ExecType(enum.StrEnum):
    """What an execution report says happened (FIX ExecType)."""

    NEW = "NEW"  # accepted, holding its reservation
    PARTIAL_FILL = "PARTIAL_FILL"
    FILL = "FILL"  # filled in full
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"  # GTD time, voucher expiry, or the delivery window opening
    REPLACED = "REPLACED"  # amended
    REJECTED = "REJECTED"  # refused; nothing changed
    ORDER_STATUS = "ORDER_STATUS"  # an answer to mass_status or order_status


class OrdStatus(enum.StrEnum):
    """The order's state after the report (FIX OrdStatus)."""

    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"


OPEN_STATUSES: Final = (OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED)  # still working


# --- Client requests ----------------------------------------------------------


# gc=False: a request is decoded from JSON, so it holds only numbers, strings,
# enums and lists or Structs of them, and nothing refers back to it: it can
# never be part of a reference cycle (see the server messages below).
class _Request(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="type",
    forbid_unknown_fields=True,
    gc=False,
):
    id: RequestId = None  # echoed in every answer to this request


class Auth(_Request, frozen=True, kw_only=True, tag="auth"):
    """Authenticate the connection with an API key. Once per connection."""

    key: str  # sk_<key id>_<secret>


class Ping(_Request, frozen=True, kw_only=True, tag="ping"):
    """Keep the connection alive; answered by ``pong``."""


class Subscribe(_Request, frozen=True, kw_only=True, tag="subscribe"):
    """Start a channel. ``book``, ``trades`` and ``ticker`` need an instrument."""

    channel: Channel
    instrument_id: str = ""


class Unsubscribe(_Request, frozen=True, kw_only=True, tag="unsubscribe"):
    channel: Channel
    instrument_id: str = ""


class NewOrder(_Request, frozen=True, kw_only=True, tag="new_order"):
    """Enter an order. ``client_order_id`` makes the submission idempotent."""

    client_order_id: str  # unique per account, forever: the idempotency key
    instrument_id: str
    side: Side  # BUY (start-ups) or SELL (providers)
    qty: Int  # GPU-hours, a whole number of lots
    price: Int = 0  # fen per GPU-hour, a whole number of ticks; 0 for market orders
    order_type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.GTC  # GTC, IOC, FOK or GTD
    expire_at: Int = 0  # ns; GTD only
    post_only: bool = False  # refuse rather than trade on entry
    min_qty: Int = 0  # minimum acceptable fill on entry
    stp: SelfTradePrevention = (
        SelfTradePrevention.CANCEL_RESTING
    )  # which order goes on a self-match
    voucher_id: Int = 0  # buys only: pay part with this voucher


class CancelOrder(_Request, frozen=True, kw_only=True, tag="cancel_order"):
    """Cancel one order by ``order_id`` or by ``client_order_id``."""

    order_id: Int = 0
    client_order_id: str = ""


class AmendOrder(_Request, frozen=True, kw_only=True, tag="amend_order"):
    """Change an open order's total quantity and/or price.

    Only a smaller quantity at the same price keeps the order's queue place.
    """

    order_id: Int = 0
    client_order_id: str = ""
    qty: Int | None = None  # new total quantity, filled part included; null: unchanged
    price: Int | None = None  # new price; null: unchanged


class CancelAll(_Request, frozen=True, kw_only=True, tag="cancel_all"):
    """Cancel every open order of the account, on one instrument or everywhere.

    An operator's cancel-all on an instrument cancels every account's orders there.
    """

    instrument_id: str = ""  # empty: every instrument


class MassStatus(_Request, frozen=True, kw_only=True, tag="mass_status"):
    """Report every open order of the account, or an operator's of every account
    (FIX OrderMassStatusRequest)."""

    instrument_id: str = ""


class OrderStatus(_Request, frozen=True, kw_only=True, tag="order_status"):
    """Report one order, open or finished, by ``order_id`` or ``client_order_id``
    (an operator: any account's, by ``order_id``)."""

    order_id: Int = 0
    client_order_id: str = ""


# Operators


class ListInstrument(_Request, frozen=True, kw_only=True, tag="list_instrument"):
    spec: InstrumentSpec


class SetInstrumentStatus(_Request, frozen=True, kw_only=True, tag="set_instrument_status"):
    """Open (``AUCTION`` or ``OPEN``), halt (``HALTED``), resume or close an instrument."""

    instrument_id: str
    status: InstrumentStatus


class AdmitAccount(_Request, frozen=True, kw_only=True, tag="admit_account"):
    account_id: str
    role: Role
    tier: Tier | None = None  # providers only
    hub: str = ""  # providers only
    revenue: Int = 0  # attested yearly revenue, fen
    projects: list[str] = []  # attested government projects


class RelateParties(_Request, frozen=True, kw_only=True, tag="relate_parties"):
    account_a: str
    account_b: str


class IssueApiKey(_Request, frozen=True, kw_only=True, tag="issue_api_key"):
    """Issue a new API key for an admitted account; the key is shown once."""

    account_id: str


class RevokeApiKey(_Request, frozen=True, kw_only=True, tag="revoke_api_key"):
    key_id: str


class Deposit(_Request, frozen=True, kw_only=True, tag="deposit"):
    account_id: str
    amount: Int  # fen


class Withdraw(_Request, frozen=True, kw_only=True, tag="withdraw"):
    account_id: str
    amount: Int  # fen


# Providers (and operators on their behalf)


class RegisterCapacity(_Request, frozen=True, kw_only=True, tag="register_capacity"):
    instrument_id: str
    gpu_hours: Int
    provider: str = ""  # default: the connection's own account


# Issuers


class CreateProgramme(_Request, frozen=True, kw_only=True, tag="create_programme"):
    programme_id: str
    name: str
    rate_state_domestic: Int  # basis points of contract value
    rate_state_foreign: Int
    rate_commercial_domestic: Int
    rate_commercial_foreign: Int
    eligible_hubs: list[str] = []  # empty: every hub
    cap_per_holder_year: Int  # fen
    budget: Int  # fen
    expires_at: Int  # ns
    basis: EligibilityBasis
    min_revenue: Int = 0
    projects: list[str] = []


class IssueVoucher(_Request, frozen=True, kw_only=True, tag="issue_voucher"):
    programme_id: str
    holder: str
    amount: Int  # fen


class SettleClaim(_Request, frozen=True, kw_only=True, tag="settle_claim"):
    claim_id: Int


Request = (
    Auth
    | Ping
    | Subscribe
    | Unsubscribe
    | NewOrder
    | CancelOrder
    | AmendOrder
    | CancelAll
    | MassStatus
    | OrderStatus
    | ListInstrument
    | SetInstrumentStatus
    | AdmitAccount
    | RelateParties
    | IssueApiKey
    | RevokeApiKey
    | Deposit
    | Withdraw
    | RegisterCapacity
    | CreateProgramme
    | IssueVoucher
    | SettleClaim
)


# --- Server messages ------------------------------------------------------------


# gc=False: a server message holds only numbers, strings, enums and plain
# containers of them, and nothing refers back to it, so it can never be part of
# a reference cycle; keeping it out of the collector shortens collection pauses.
class _Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    pass


class _Answer(_Message, frozen=True, kw_only=True):
    id: RequestId = None  # the id of the request this answers; null if none


class Welcome(_Message, frozen=True, kw_only=True, tag="welcome"):
    """The first message on every connection: the session's rules."""

    protocol: int
    conn_id: int
    account_id: str  # "" when anonymous
    role: Role | None
    heartbeat_interval_ms: int  # between server heartbeats
    idle_timeout_ms: int  # of client silence before the server closes
    max_frame_bytes: int
    rate_limit_per_minute: int  # requests, sustained
    rate_burst: int
    book_depth: int  # levels per side in book messages
    checksum_depth: int  # levels per side in the checksum


class Authenticated(_Answer, frozen=True, kw_only=True, tag="authenticated"):
    account_id: str
    role: Role


class Pong(_Answer, frozen=True, kw_only=True, tag="pong"):
    ts: int


class Heartbeat(_Message, frozen=True, kw_only=True, tag="heartbeat"):
    ts: int


class Error(_Answer, frozen=True, kw_only=True, tag="error"):
    """A message the gateway refused. Nothing changed."""

    code: ErrorCode
    text: str


class Subscribed(_Answer, frozen=True, kw_only=True, tag="subscribed"):
    channel: Channel
    instrument_id: str = ""


class Unsubscribed(_Answer, frozen=True, kw_only=True, tag="unsubscribed"):
    channel: Channel
    instrument_id: str = ""


class ExecutionReport(_Answer, frozen=True, kw_only=True, tag="execution_report"):
    """What happened to one order (FIX ExecutionReport).

    ``cum_qty`` and ``leaves_qty`` are after the event; ``cum_value`` is the fen
    filled so far (``cum_value / cum_qty`` is the average price). ``last_*`` are
    set on fills. ``reason`` is a ``Reason`` on REJECTED and a ``CancelReason`` on
    CANCELLED and EXPIRED.
    """

    exec_type: ExecType  # what happened
    ord_status: OrdStatus  # the order's state after it
    order_id: int  # 0 when rejected before it was numbered
    client_order_id: str
    account: str  # the order's owner
    instrument_id: str
    side: Side | None = None
    order_type: OrderType | None = None
    tif: TimeInForce | None = None
    price: int = 0
    qty: int = 0
    cum_qty: int = 0  # GPU-hours filled so far
    leaves_qty: int = 0  # GPU-hours still working; 0 once the order is done
    cum_value: int = 0  # fen filled so far
    last_price: int = 0  # fills: this fill's price
    last_qty: int = 0  # fills: this fill's GPU-hours
    trade_id: int = 0  # fills: the trade, which is also the contract id
    cash: int = 0  # of this fill: fen paid (buyer) or received (seller) in cash
    voucher: int = 0  # of this fill: fen paid from the voucher, claimed by the seller
    voucher_id: int = 0
    expire_at: int = 0
    reason: str = ""  # Reason (REJECTED) or CancelReason (CANCELLED, EXPIRED)
    text: str = ""  # the reason in words; match on the code, not the text
    ts: int = 0  # exchange time of the event, ns


class CancelReject(_Answer, frozen=True, kw_only=True, tag="cancel_reject"):
    """A cancel, amend or cancel-all was refused (FIX OrderCancelReject)."""

    request: str  # cancel_order, amend_order or cancel_all
    order_id: int = 0
    client_order_id: str = ""
    reason: Reason
    text: str


class CancelAllDone(_Answer, frozen=True, kw_only=True, tag="cancel_all_done"):
    """Ends a cancel-all, after the execution report of each cancelled order."""

    instrument_id: str
    cancelled: int


class MassStatusDone(_Answer, frozen=True, kw_only=True, tag="mass_status_done"):
    """Ends a mass status, after one ORDER_STATUS report per open order."""

    count: int


class Ack(_Answer, frozen=True, kw_only=True, tag="ack"):
    """An operator, issuer or provider request was carried out.

    ``result`` holds the ids it created (``voucher_id``) or the figures it
    changed (``cash``, ``capacity``).
    """

    request: str
    result: dict[str, int | str] = {}


class Rejected(_Answer, frozen=True, kw_only=True, tag="rejected"):
    """An operator, issuer or provider request was refused by the exchange."""

    request: str
    reason: Reason
    text: str


class ApiKeyIssued(_Answer, frozen=True, kw_only=True, tag="api_key_issued"):
    """The only time a key is shown: store it now."""

    account_id: str
    key_id: str
    key: str  # sk_<key id>_<secret>


class BookSnapshot(_Message, frozen=True, kw_only=True, tag="book_snapshot"):
    """The whole published book: replace your copy with it.

    Levels are ``[price, qty]``, bids best (highest) first, asks best (lowest)
    first. ``checksum`` is the CRC32 described in docs/protocol.md.
    """

    instrument_id: str
    seq: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    checksum: int


class BookUpdate(_Message, frozen=True, kw_only=True, tag="book_update"):
    """Changed levels since ``seq - 1``: set each level's quantity; 0 deletes it."""

    instrument_id: str
    seq: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    checksum: int


class PublicTrade(_Message, frozen=True, kw_only=True, tag="trade"):
    """One fill, without the parties. ``aggressor`` is null for auction fills."""

    instrument_id: str
    trade_id: int
    price: int
    qty: int
    aggressor: Side | None
    ts: int


class Ticker(_Message, frozen=True, kw_only=True, tag="ticker"):
    """Best prices, the last 24 hours, open interest.

    ``vwap_24h`` is turnover // volume (fen). ``open_interest`` is the GPU-hours
    of executed contracts not yet delivered (0 once the delivery window has
    ended), as of ``ts``.
    """

    instrument_id: str
    status: InstrumentStatus
    best_bid: int
    best_bid_qty: int
    best_ask: int
    best_ask_qty: int
    last_price: int
    last_qty: int
    volume_24h: int
    turnover_24h: int
    vwap_24h: int
    trades_24h: int
    open_interest: int  # GPU-hours contracted, not yet delivered
    ts: int


class InstrumentInfo(_Message, frozen=True, kw_only=True, tag="instrument"):
    """An instrument and its status (on listing, and as the status channel's snapshot)."""

    spec: InstrumentSpec
    status: InstrumentStatus


class InstrumentStatusChange(_Message, frozen=True, kw_only=True, tag="instrument_status"):
    instrument_id: str
    status: InstrumentStatus
    previous: InstrumentStatus
    ts: int


class Balance(_Message, frozen=True, kw_only=True, tag="balance"):
    """An account's money and capacity after a change. Capacity maps are per instrument."""

    account_id: str
    role: Role
    cash: int
    cash_reserved: int
    capacity: dict[str, int]
    capacity_reserved: dict[str, int]
    capacity_sold: dict[str, int]
    holdings: dict[str, int]
    ts: int


class VoucherBalance(_Message, frozen=True, kw_only=True, tag="voucher"):
    """A voucher after a change: ``amount == balance + reserved + spent``."""

    voucher_id: int
    programme_id: str
    issuer: str
    holder: str
    amount: int
    balance: int
    reserved: int
    spent: int
    expires_at: int
    ts: int


class Contract(_Message, frozen=True, kw_only=True, tag="contract"):
    """A compute contract made by a fill; ``contract_id`` is the trade id."""

    contract_id: int
    instrument_id: str
    buyer: str
    seller: str
    price: int
    qty: int
    cash: int
    voucher: int
    voucher_id: int
    claim_id: int
    ts: int


class Claim(_Message, frozen=True, kw_only=True, tag="claim"):
    """A provider's claim on an issuer for a contract's voucher part."""

    claim_id: int
    contract_id: int
    voucher_id: int
    programme_id: str
    issuer: str
    provider: str
    amount: int
    settled: bool
    created_at: int
    settled_at: int


ServerMessage = (
    Welcome
    | Authenticated
    | Pong
    | Heartbeat
    | Error
    | Subscribed
    | Unsubscribed
    | ExecutionReport
    | CancelReject
    | CancelAllDone
    | MassStatusDone
    | Ack
    | Rejected
    | ApiKeyIssued
    | BookSnapshot
    | BookUpdate
    | PublicTrade
    | Ticker
    | InstrumentInfo
    | InstrumentStatusChange
    | Balance
    | VoucherBalance
    | Contract
    | Claim
)

REQUEST_TYPES: Final[dict[str, type[Any]]] = {
    t.__struct_config__.tag: t for t in typing.get_args(Request)
}
SERVER_TYPES: Final[dict[str, type[Any]]] = {
    t.__struct_config__.tag: t for t in typing.get_args(ServerMessage)
}


# --- Reason texts -------------------------------------------------------------

REASON_TEXT: Final[dict[str, str]] = {
    Reason.INVALID_QUANTITY: "quantity is zero, negative, or above the instrument's maximum",
    Reason.OFF_LOT: "quantity is not a whole number of lots",
    Reason.INVALID_PRICE: "price is zero, negative, above the maximum, or set on a market order",
    Reason.OFF_TICK: "price is not a whole number of ticks",
    Reason.INVALID_TIME_IN_FORCE: "time in force not allowed for this order type",
    Reason.INVALID_EXPIRY: "GTD needs a future expire_at; other orders must not set one",
    Reason.INVALID_MIN_QTY: "min_qty is negative, off lot, or above the quantity",
    Reason.INVALID_FLAGS: "contradictory options",
    Reason.INVALID_AMOUNT: (
        "amount is zero, negative, or too large: above 10^15, or taking the exchange's "
        "deposits past 10^18 or a provider's capacity on an instrument past 10^15"
    ),
    Reason.INVALID_RATE: "voucher rate outside 0..10000 basis points",
    Reason.INVALID_INSTRUMENT: "bad tick, lot, window or limits",
    Reason.INVALID_ID: "identifier empty, too long, or not printable",
    Reason.NOT_PERMITTED: "the account's role may not do this",
    Reason.UNKNOWN_ACCOUNT: "no such account",
    Reason.UNKNOWN_INSTRUMENT: "no such instrument",
    Reason.UNKNOWN_ORDER: "no such open order",
    Reason.UNKNOWN_VOUCHER: "no such voucher",
    Reason.UNKNOWN_PROGRAMME: "no such voucher programme",
    Reason.UNKNOWN_CLAIM: "no such claim",
    Reason.DUPLICATE_ID: "identifier already taken",
    Reason.DUPLICATE_CLIENT_ORDER_ID: "client_order_id already used by this account",
    Reason.NOT_YOUR_ORDER: "the order belongs to another account",
    Reason.NOT_YOUR_VOUCHER: "the voucher belongs to another account",
    Reason.NOT_YOUR_CLAIM: "the claim is on another issuer",
    Reason.MARKET_NOT_OPEN: "the instrument is not open for trading",
    Reason.MARKET_HALTED: "the instrument is halted",
    Reason.NOT_ALLOWED_IN_AUCTION: "only resting limit orders during a call auction",
    Reason.INVALID_TRANSITION: "instrument status change not allowed",
    Reason.PROVIDER_MISMATCH: "provider's hub or tier differs from the instrument's",
    Reason.CLAIM_SETTLED: "claim already settled",
    Reason.INSUFFICIENT_FUNDS: "not enough free cash",
    Reason.INSUFFICIENT_CAPACITY: "not enough free registered capacity",
    Reason.VOUCHER_EXPIRED: "the voucher has expired",
    Reason.VOUCHER_INELIGIBLE: "the voucher does not pay for this instrument",
    Reason.HOLDER_INELIGIBLE: "the holder is not eligible for this programme",
    Reason.PROGRAMME_EXPIRED: "the programme has expired",
    Reason.PROGRAMME_CAP_EXCEEDED: "yearly cap per holder exceeded",
    Reason.PROGRAMME_BUDGET_EXCEEDED: "programme budget exceeded",
    Reason.POST_ONLY_WOULD_CROSS: "post-only order would trade at once",
    Reason.NO_LIQUIDITY: "market order met an empty book",
    CancelReason.REQUESTED: "cancelled by the owner",
    CancelReason.MASS_CANCEL: "cancelled by cancel-all",
    CancelReason.OPERATOR: "cancelled by an operator",
    CancelReason.IOC_REMAINDER: "immediate-or-cancel remainder",
    CancelReason.FOK_UNFILLED: "fill-or-kill could not fill in full",
    CancelReason.MIN_QTY_UNMET: "minimum fill not available at once",
    CancelReason.SELF_TRADE: "self-trade prevention",
    CancelReason.EXPIRED: "expired",
    CancelReason.MARKET_CLOSED: "the instrument closed",
}


# --- Encoding and decoding --------------------------------------------------------


class ProtocolError(msgspec.Struct, frozen=True):
    """A frame that is not a valid request: what to answer, and the id if one was read."""

    code: ErrorCode
    text: str
    id: RequestId = None


class _IdOnly(msgspec.Struct):
    id: RequestId = None


REQUEST_DECODER: Final = msgspec.json.Decoder(Request)
"""The one decoder of requests; ``decode_request`` or ``refusal`` say what was wrong."""
_id_decoder: Final = msgspec.json.Decoder(_IdOnly)
_encoder: Final = msgspec.json.Encoder()

encode: Final[Callable[[ServerMessage], bytes]] = _encoder.encode
"""A server message as the JSON bytes of one text frame.

The encoder's own method rather than a function that calls it: two or three
messages are encoded per order, and a Python call around each costs a tenth
of the encoding."""


def encode_request(request: Request) -> bytes:
    """A request as JSON (for clients and tests)."""
    return _encoder.encode(request)


_server_decoder: Final = msgspec.json.Decoder(ServerMessage)


def decode_message(data: bytes | str) -> ServerMessage:
    """A server message from JSON (for clients and tests); raises on bad input."""
    message: ServerMessage = _server_decoder.decode(data)
    return message


def decode_request(data: bytes | str) -> Request | ProtocolError:
    """A request from one text frame, or the error to answer it with."""
    try:
        request: Request = REQUEST_DECODER.decode(data)
        return request
    except msgspec.DecodeError:
        return refusal(data)


def refusal(data: bytes | str) -> ProtocolError:
    """The error to answer a frame ``REQUEST_DECODER`` cannot decode with."""
    try:
        REQUEST_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        return ProtocolError(*_classify(str(exc)), id=read_id(data))
    except msgspec.DecodeError as exc:
        return ProtocolError(ErrorCode.BAD_JSON, f"not valid JSON: {exc}", read_id(data))
    raise ValueError("the frame decodes: it is not to be refused")


def read_id(data: bytes | str) -> RequestId:
    """The ``id`` of a frame that is refused, so its error can echo it (None if unreadable)."""
    try:
        return _id_decoder.decode(data).id
    except (msgspec.DecodeError, RecursionError):  # skipping deep nesting recurses
        return None


def _classify(text: str) -> tuple[ErrorCode, str]:
    if text.startswith("Expected `object`"):
        return ErrorCode.NOT_AN_OBJECT, text
    if "`$.type`" in text or "missing required field `type`" in text:
        return ErrorCode.UNKNOWN_MESSAGE, text
    if "missing required field" in text:
        return ErrorCode.MISSING_FIELD, text
    if "unknown field" in text:
        if " - at `" not in text:  # msgspec names the path only below the top level
            text += " - at `$`"
        return ErrorCode.UNKNOWN_FIELD, text
    return ErrorCode.INVALID_FIELD, text


# --- Schema -------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every message, as committed in docs/protocol.schema.json."""
    (request, server), components = msgspec.json.schema_components(
        [Request, ServerMessage], ref_template="#/$defs/{name}"
    )
    for component in components.values():
        # msgspec 0.23 dedents docstrings and 0.22 does not: one text for both.
        if isinstance(component.get("description"), str):
            component["description"] = inspect.cleandoc(component["description"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Suanli gateway protocol",
        "description": f"Protocol version {PROTOCOL_VERSION}. Generated from gateway/protocol.py.",
        "$defs": dict(sorted(components.items())),
        "properties": {"request": request, "server_message": server},
    }


def json_schema_text() -> str:
    """``json_schema()`` as the exact text of docs/protocol.schema.json."""
    return msgspec.json.format(msgspec.json.encode(json_schema()), indent=2).decode() + "\n"

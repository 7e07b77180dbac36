"""The HTTP API: reference data, an account's own records, operators' reports.

All answers are JSON; money is integer fen, quantities integer GPU-hours,
times integer nanoseconds (UTC). Authenticate with ``Authorization: Bearer
<key>`` (or ``X-API-Key``). Everything is read from the live core on the
event loop, between batches, so each answer is one consistent state (but for
a filtered read of order history, which may pass the loop on between slices).
Histories (trades, orders, contracts) come newest first, a page at a time
(``?limit=``, ``?before=``), each page from an index, so no read costs the
exchange more than its page. The public price index is kept as trades happen
(``marketdata.PriceIndex``), so a read costs its rows, not the history.
An operator's ``?account=`` naming no account is a 404 ``UNKNOWN_ACCOUNT``.

Public
    ``GET /api/v1/instruments``, ``/api/v1/instruments/{id}``,
    ``/api/v1/book/{id}``, ``/api/v1/trades/{id}``, ``/api/v1/programmes``,
    ``/api/v1/reports/price-index``
Any account (its own records; operators see every account's)
    ``GET /api/v1/account``, ``/api/v1/orders``, ``/api/v1/contracts``,
    ``/api/v1/vouchers``, ``/api/v1/claims``
Operators
    ``GET /api/v1/accounts``, ``/api/v1/reports/open-interest``, ``/api/v1/reports/volume``
Operators and issuers (an issuer sees its own programmes)
    ``GET /api/v1/reports/voucher-usage``, ``/api/v1/reports/claims``
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import msgspec
from aiohttp import web

from exchange.core import ExchangeCore
from exchange.reference import Role
from gateway import app as gw
from gateway.auth import Principal
from gateway.marketdata import MAX_PAGE
from gateway.orders import VIEW_FIELDS, OrderState

_json = msgspec.json.Encoder()

_DAY_NS = 86_400 * 10**9
_NEWEST = 2**63 - 1  # above every id: ``before`` it is the newest
_SCAN_SLICE = 10_000  # orders (or new contracts) a read passes between turns of the loop


def _respond(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(body), status=status, content_type="application/json")


def _error(status: int, code: str, text: str) -> web.HTTPException:
    cls = {
        400: web.HTTPBadRequest,
        401: web.HTTPUnauthorized,
        403: web.HTTPForbidden,
        404: web.HTTPNotFound,
    }[status]
    return cls(
        text=_json.encode({"error": code, "text": text}).decode(), content_type="application/json"
    )


def _core(request: web.Request) -> ExchangeCore:
    return request.app[gw.SERVICE].core


def _principal(request: web.Request, *roles: Role) -> Principal:
    principal = gw.principal_of(request)
    if principal is None:
        raise _error(401, "NOT_AUTHENTICATED", "send an API key")
    if roles and principal.role not in roles:
        raise _error(403, "NOT_PERMITTED", "the account's role may not read this")
    return principal


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/instruments", instruments)
    r.add_get("/api/v1/instruments/{instrument_id}", instrument)
    r.add_get("/api/v1/book/{instrument_id}", book)
    r.add_get("/api/v1/trades/{instrument_id}", trades)
    r.add_get("/api/v1/programmes", programmes)
    r.add_get("/api/v1/account", account)
    r.add_get("/api/v1/accounts", accounts)
    r.add_get("/api/v1/orders", orders)
    r.add_get("/api/v1/contracts", contracts)
    r.add_get("/api/v1/vouchers", vouchers)
    r.add_get("/api/v1/claims", claims)
    r.add_get("/api/v1/reports/open-interest", open_interest)
    r.add_get("/api/v1/reports/volume", volume)
    r.add_get("/api/v1/reports/voucher-usage", voucher_usage)
    r.add_get("/api/v1/reports/claims", claims_by_issuer)
    r.add_get("/api/v1/reports/price-index", price_index)


# --- reference data ---------------------------------------------------------------


def _instrument_view(request: web.Request, instrument_id: str) -> dict[str, Any]:
    core = _core(request)
    inst = core.instruments[instrument_id]
    feed = request.app[gw.ROUTER].marketdata.feed(instrument_id)
    return {
        "spec": inst.spec,
        "status": inst.status,
        "last_price": inst.last_price,
        "volume": inst.volume,
        "turnover": inst.turnover,
        "trades": inst.trades,
        "best_bid": feed.bids[0][0] if feed.bids else 0,
        "best_ask": feed.asks[0][0] if feed.asks else 0,
    }


async def instruments(request: web.Request) -> web.Response:
    core = _core(request)
    return _respond([_instrument_view(request, i) for i in sorted(core.instruments)])


async def instrument(request: web.Request) -> web.Response:
    return _respond(_instrument_view(request, _known_instrument(request)))


def _known_instrument(request: web.Request) -> str:
    """The path's instrument id; 404 if there is no such instrument."""
    instrument_id = request.match_info["instrument_id"]
    if instrument_id not in _core(request).instruments:
        raise _error(404, "UNKNOWN_INSTRUMENT", f"no instrument {instrument_id!r}")
    return instrument_id


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in ``low..high`` (``default`` if absent); 400 otherwise."""
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise _error(400, "INVALID_FIELD", f"{name} must be an integer from {low} to {high}")
    return value


async def book(request: web.Request) -> web.Response:
    instrument_id = _known_instrument(request)
    return _respond(request.app[gw.ROUTER].marketdata.snapshot(instrument_id))


async def trades(request: web.Request) -> web.Response:
    """Public: the instrument's executed trades, newest first, without the parties.

    ``?limit=`` (1 to 1000, default 100) trades with ids below ``?before=`` (a
    trade id; default: the newest), so the last trade id of a page is the
    ``before`` of the next, older one.
    """
    instrument_id = _known_instrument(request)
    limit, before = _page(request)
    md = request.app[gw.ROUTER].marketdata
    return _respond([md.public_trade(t) for t in md.trades(instrument_id, limit, before)])


async def programmes(request: web.Request) -> web.Response:
    core = _core(request)
    return _respond(
        [
            {
                "programme_id": prog.programme_id,
                "issuer": prog.issuer,
                "name": prog.name,
                "rate_state_domestic": prog.rate_state_domestic,
                "rate_state_foreign": prog.rate_state_foreign,
                "rate_commercial_domestic": prog.rate_commercial_domestic,
                "rate_commercial_foreign": prog.rate_commercial_foreign,
                "eligible_hubs": prog.eligible_hubs,
                "cap_per_holder_year": prog.cap_per_holder_year,
                "budget": prog.budget,
                "issued": prog.issued,
                "expires_at": prog.expires_at,
                "basis": prog.basis,
                "min_revenue": prog.min_revenue,
                "projects": prog.projects,
            }
            for _, prog in sorted(core.programmes.items())
        ]
    )


# --- an account's own records -------------------------------------------------------


def _subject(request: web.Request, principal: Principal) -> str | None:
    """The account to report on: one's own; an operator may pick any, or all (None).

    Anyone else naming another account is refused rather than shown their own
    records under that name; an operator naming no account is told so (404)
    rather than shown an empty list, as if the account had no records.
    """
    asked = request.query.get("account")
    if principal.role is Role.OPERATOR:
        if asked and asked not in _core(request).accounts:
            raise _error(404, "UNKNOWN_ACCOUNT", f"no account {asked!r}")
        return asked or None
    if asked and asked != principal.account_id:
        raise _error(403, "NOT_PERMITTED", "only operators may read another account's records")
    return principal.account_id


async def account(request: web.Request) -> web.Response:
    principal = _principal(request)
    account_id = _subject(request, principal) or principal.account_id
    if account_id not in _core(request).accounts:
        raise _error(404, "UNKNOWN_ACCOUNT", f"no account {account_id!r}")
    return _respond(request.app[gw.ROUTER].balance(account_id))


async def accounts(request: web.Request) -> web.Response:
    """Operators: every balance, or with ``?account=`` that account's alone."""
    subject = _subject(request, _principal(request, Role.OPERATOR))
    router = request.app[gw.ROUTER]
    names = [subject] if subject else sorted(_core(request).accounts)
    return _respond([router.balance(a) for a in names])


def _order_view(state: OrderState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in VIEW_FIELDS}


def _page(request: web.Request) -> tuple[int, int]:
    """``?limit=`` (1 to 1000, default 100) and ``?before=`` (an id; default: above
    every id) of a list read newest first."""
    return (
        _query_int(request, "limit", 100, 1, MAX_PAGE),
        _query_int(request, "before", _NEWEST, 1, _NEWEST),
    )


async def orders(request: web.Request) -> web.Response:
    """An account's orders (an operator's: everyone's, or ``?account=``'s), newest
    first, a page at a time: the open ones, or with ``?status=all`` the finished too.

    An ``?instrument_id=`` filter over ``all`` reads the history back until the
    page is full, yielding to the exchange every ``_SCAN_SLICE`` orders it passes.
    """
    principal = _principal(request)
    subject = _subject(request, principal)
    status = request.query.get("status", "open")
    if status not in ("open", "all"):
        raise _error(400, "INVALID_FIELD", "status must be open or all")
    instrument_id = request.query.get("instrument_id", "")
    limit, before = _page(request)
    register = request.app[gw.ROUTER].register
    if status == "open":
        states = register.open_orders(subject, instrument_id)
        page = [s for s in reversed(states) if s.order_id < before][:limit]
        return _respond([_order_view(s) for s in page])
    found: list[OrderState] = []
    for passed, order_id in enumerate(register.ids_below(subject, before), 1):
        state = register.orders.get(order_id)
        if state is not None and (not instrument_id or state.instrument_id == instrument_id):
            found.append(state)
            if len(found) == limit:
                break
        if passed % _SCAN_SLICE == 0:
            await asyncio.sleep(0)
    return _respond([_order_view(s) for s in found])


async def contracts(request: web.Request) -> web.Response:
    """An account's contracts (an operator's: everyone's, or ``?account=``'s), newest
    first, a page at a time."""
    principal = _principal(request)
    subject = _subject(request, principal)
    limit, before = _page(request)
    router = request.app[gw.ROUTER]
    return _respond(
        [router.contract(t) for t in router.marketdata.contracts(subject, limit, before)]
    )


async def vouchers(request: web.Request) -> web.Response:
    principal = _principal(request)
    subject = _subject(request, principal)
    router = request.app[gw.ROUTER]
    return _respond(
        [
            router.voucher(v.voucher_id)
            for v in _core(request).vouchers.values()
            if subject is None or subject in (v.holder, v.issuer)
        ]
    )


async def claims(request: web.Request) -> web.Response:
    principal = _principal(request)
    subject = _subject(request, principal)
    router = request.app[gw.ROUTER]
    return _respond(
        [
            router.claim(c.claim_id)
            for c in _core(request).claims.values()
            if subject is None or subject in (c.provider, c.issuer)
        ]
    )


# --- reports --------------------------------------------------------------------------


async def open_interest(request: web.Request) -> web.Response:
    """Per instrument: GPU-hours contracted and not yet delivered, and resting interest."""
    _principal(request, Role.OPERATOR)
    core = _core(request)
    md = request.app[gw.ROUTER].marketdata
    resting: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for order in core.orders.values():
        resting[order.instrument_id][0 if order.side == "BUY" else 1] += order.leaves
    rows = []
    for instrument_id, inst in sorted(core.instruments.items()):
        spec = inst.spec
        rows.append(
            {
                "instrument_id": instrument_id,
                "gpu_model": spec.gpu_model,
                "hub": spec.hub,
                "status": inst.status,
                "delivery_start": spec.delivery_start,
                "delivery_end": spec.delivery_end,
                "delivered": core.now >= spec.delivery_end,
                "contracted_gpu_hours": md.feed(instrument_id).contracted,
                "open_interest_gpu_hours": md.open_interest(instrument_id, core.now),
                "resting_bid_gpu_hours": resting[instrument_id][0],
                "resting_ask_gpu_hours": resting[instrument_id][1],
            }
        )
    return _respond(rows)


async def volume(request: web.Request) -> web.Response:
    """Per instrument: all-time and last-24-hour trades, volume, turnover and VWAP."""
    _principal(request, Role.OPERATOR)
    core = _core(request)
    md = request.app[gw.ROUTER].marketdata
    rows = []
    for instrument_id, inst in sorted(core.instruments.items()):
        ticker = md.ticker(instrument_id, core.now)
        rows.append(
            {
                "instrument_id": instrument_id,
                "gpu_model": inst.spec.gpu_model,
                "trades": inst.trades,
                "volume_gpu_hours": inst.volume,
                "turnover": inst.turnover,
                "vwap": inst.turnover // inst.volume if inst.volume else 0,
                "trades_24h": ticker.trades_24h,
                "volume_24h": ticker.volume_24h,
                "turnover_24h": ticker.turnover_24h,
                "vwap_24h": ticker.vwap_24h,
            }
        )
    return _respond(rows)


def _issuer_scope(request: web.Request) -> str | None:
    """None for an operator (every issuer), else the issuer's own id."""
    principal = _principal(request, Role.OPERATOR, Role.ISSUER)
    return None if principal.role is Role.OPERATOR else principal.account_id


async def voucher_usage(request: web.Request) -> web.Response:
    """Per programme: budget, issued, and how the issued value is used."""
    issuer = _issuer_scope(request)
    core = _core(request)
    rows = []
    for programme_id, prog in sorted(core.programmes.items()):
        if issuer is not None and prog.issuer != issuer:
            continue
        held = [v for v in core.vouchers.values() if v.programme_id == programme_id]
        rows.append(
            {
                "issuer": prog.issuer,
                "programme_id": programme_id,
                "name": prog.name,
                "budget": prog.budget,
                "issued": prog.issued,
                "vouchers": len(held),
                "holders": len({v.holder for v in held}),
                "balance": sum(v.balance for v in held),
                "reserved": sum(v.reserved for v in held),
                "spent": sum(v.spent for v in held),
                "expires_at": prog.expires_at,
            }
        )
    return _respond(rows)


async def claims_by_issuer(request: web.Request) -> web.Response:
    """Per issuer: claims outstanding and settled, by count and fen."""
    issuer = _issuer_scope(request)
    core = _core(request)
    totals: dict[str, dict[str, int]] = {}
    for claim in core.claims.values():
        if issuer is not None and claim.issuer != issuer:
            continue
        row = totals.setdefault(
            claim.issuer,
            {"outstanding": 0, "outstanding_amount": 0, "settled": 0, "settled_amount": 0},
        )
        kind = "settled" if claim.settled else "outstanding"
        row[kind] += 1
        row[f"{kind}_amount"] += claim.amount
    return _respond([{"issuer": k, **v} for k, v in sorted(totals.items())])


async def price_index(request: web.Request) -> web.Response:
    """Public: the daily price index per GPU model (``?days=N``, default 30): the
    fills of the ``N * 24`` hours before the exchange's time, so the first day
    may be cut part-way.

    Kept as trades happen (``marketdata.PriceIndex``); the contracts made since
    the last read are read first, yielding to the exchange every ``_SCAN_SLICE``,
    and the answer is read after the last of them, in one go.
    """
    days = _query_int(request, "days", 30, 1, 36_500)
    index = request.app[gw.ROUTER].marketdata.price_index
    while index.catch_up(_SCAN_SLICE):
        await asyncio.sleep(0)
    return _respond(index.rows(_core(request).now - days * _DAY_NS))

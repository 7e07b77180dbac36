"""Every order's life as execution reports.

The core keeps open orders only; clients need more: the cumulative filled
quantity and value, the final state of a finished order, and an answer to
"what became of client order id X" after a reconnect. ``OrderRegister`` keeps
that view, updated from the core's events in sequence order, and turns each
event into the execution report that says what happened (FIX style).

A register built from a recovered core knows its open orders; orders finished
before the restart are unknown to it.

Reports are made on the hot path (two or three per order), so each is a copy
of the order's first report (``OrderState.base``, which holds the fields that
never change: ids, account, instrument, side, type, time in force, voucher,
expiry) with the changing fields replaced: one call with at most 15 keywords
(CPython builds a dict for a call with more, which costs four times as much).
The state keeps only what changes, next to that report.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Mapping

import msgspec

from exchange import commands as cmd
from exchange.core import NEVER, ExchangeCore
from exchange.events import OrderAccepted, OrderAmended, OrderCancelled, Rejected, Trade
from exchange.reasons import CancelReason, Reason
from exchange.records import Account
from exchange.reference import InstrumentSpec, OrderType, Side, TimeInForce
from exchange.tables import IdTable
from gateway import protocol as p


class OrderState(msgspec.Struct, gc=False):
    """What the gateway knows of one order, open or finished.

    ``base`` is the order's first report (NEW): it holds the fields that never
    change, which the properties below read; the other fields change as the
    order trades, is amended or ends. Only numbers, strings, enums and a
    ``gc=False`` report: never in a reference cycle, so it stays out of the
    garbage collector (``gc=False``), which keeps collection pauses short
    however many orders the register holds. Built positionally, in field order,
    on the hot path.
    """

    base: p.ExecutionReport
    price: int
    qty: int
    leaves: int
    ts: int
    cum_qty: int = 0
    cum_value: int = 0
    status: p.OrdStatus = p.OrdStatus.NEW
    reason: str = ""

    @property
    def order_id(self) -> int:
        return self.base.order_id

    @property
    def account(self) -> str:
        return self.base.account

    @property
    def client_order_id(self) -> str:
        return self.base.client_order_id

    @property
    def instrument_id(self) -> str:
        return self.base.instrument_id

    @property
    def side(self) -> Side | None:
        return self.base.side

    @property
    def order_type(self) -> OrderType | None:
        return self.base.order_type

    @property
    def tif(self) -> TimeInForce | None:
        return self.base.tif

    @property
    def voucher_id(self) -> int:
        return self.base.voucher_id

    @property
    def expire_at(self) -> int:
        return self.base.expire_at

    @property
    def open(self) -> bool:
        return self.status in p.OPEN_STATUSES


VIEW_FIELDS = (
    "order_id",
    "account",
    "client_order_id",
    "instrument_id",
    "side",
    "order_type",
    "tif",
    "price",
    "qty",
    "cum_qty",
    "cum_value",
    "leaves",
    "voucher_id",
    "expire_at",
    "status",
    "reason",
    "ts",
)
"""The fields of an order's state that describe it, as the HTTP API shows them."""


_ExecutionReport = p.ExecutionReport
_replace = msgspec.structs.replace
_NEW = p.ExecType.NEW
_NEW_STATUS = p.OrdStatus.NEW
_FILL = p.ExecType.FILL
_PARTIAL_FILL = p.ExecType.PARTIAL_FILL
_FILLED = p.OrdStatus.FILLED
_PARTIALLY_FILLED = p.OrdStatus.PARTIALLY_FILLED


class OrderRegister:
    """Order states by id, and each account's open order ids.

    Client order ids are looked up in the core's own map of each account's
    (``Account.client_order_ids``, which it keeps to refuse duplicates): a
    second copy would cost an insertion into a dict as large as the order
    history on every order.
    """

    def __init__(self, accounts: Mapping[str, Account]) -> None:
        self.accounts = accounts
        # Every order's state for good: a table that grows without pauses.
        self.orders: IdTable[OrderState] = IdTable()
        self.open_by_account: dict[str, set[int]] = {}
        # Every order id of each account, oldest first: arrays, whose ids the collector
        # never visits (a list of millions would be walked by every full collection).
        self.ids_by_account: dict[str, array[int]] = {}

    @classmethod
    def from_core(cls, core: ExchangeCore) -> OrderRegister:
        """A register of a (recovered) core's accounts, seeded with its open orders.

        Only limit orders rest, so every one of them is a LIMIT order. What an
        open order has filled is in the contracts: one pass over them gives each
        its ``cum_value``.
        """
        register = cls(core.accounts)
        orders = core.orders
        filled: dict[int, int] = {}
        for trade in core.contracts.values():
            value = trade.price * trade.qty
            for order_id in (trade.buy_order_id, trade.sell_order_id):
                if order_id in orders:
                    filled[order_id] = filled.get(order_id, 0) + value
        for order in orders.values():
            expire_at = 0 if order.expire_at == NEVER else order.expire_at
            base = _ExecutionReport(
                exec_type=_NEW,
                ord_status=_NEW_STATUS,
                order_id=order.order_id,
                client_order_id=order.client_order_id,
                account=order.account,
                instrument_id=order.instrument_id,
                side=order.side,
                order_type=OrderType.LIMIT,
                tif=order.tif,
                price=order.price,
                qty=order.qty,
                leaves_qty=order.qty,
                voucher_id=order.voucher_id,
                expire_at=expire_at,
                ts=order.entered_at,
            )
            state = OrderState(base, order.price, order.qty, order.leaves, order.entered_at)
            state.cum_qty = order.qty - order.leaves
            state.cum_value = filled.get(order.order_id, 0)
            if state.cum_qty:
                state.status = p.OrdStatus.PARTIALLY_FILLED
            register._add(state)
        return register

    def _add(self, state: OrderState) -> None:
        base = state.base
        order_id = base.order_id
        account = base.account
        self.orders[order_id] = state
        open_ids = self.open_by_account.get(account)
        if open_ids is None:  # an account's two entries are made together, never removed
            open_ids = self.open_by_account[account] = set()
            self.ids_by_account[account] = array("q", (order_id,))
        else:
            self.ids_by_account[account].append(order_id)
        open_ids.add(order_id)

    def _close(self, state: OrderState) -> None:
        open_ids = self.open_by_account.get(state.base.account)
        if open_ids is not None:
            open_ids.discard(state.base.order_id)

    def find(self, account: str, order_id: int, client_order_id: str) -> OrderState | None:
        """An order of ``account`` by id or client order id (None if not theirs)."""
        if not order_id:
            owner = self.accounts.get(account)
            order_id = (owner.client_order_ids.get(client_order_id) or 0) if owner else 0
        state = self.orders.get(order_id)
        if state is None or state.account != account:
            return None
        return state

    def ids_below(self, account: str | None, before: int) -> Iterator[int]:
        """Ids of the orders of ``account`` (None: everyone's) below ``before``, newest
        first, lazily: a page costs its own length, not the account's history."""
        if account is None:
            yield from self.orders.below(before)
            return
        ids = self.ids_by_account.get(account, array("q"))
        for i in range(bisect.bisect_left(ids, before) - 1, -1, -1):
            yield ids[i]

    def open_orders(self, account: str | None, instrument_id: str = "") -> list[OrderState]:
        """Open orders of one account (or of everyone), oldest first."""
        if account is None:
            ids: set[int] = set().union(*self.open_by_account.values())
        else:
            ids = self.open_by_account.get(account, set())
        states = [self.orders[i] for i in sorted(ids)]
        if instrument_id:
            states = [s for s in states if s.instrument_id == instrument_id]
        return states

    # --- events -> reports --------------------------------------------------------

    def accepted(self, ev: OrderAccepted, request_id: p.RequestId = None) -> p.ExecutionReport:
        """The order's NEW report (its ``base``), with ``request_id`` as its ``id``.

        Every later report of the order sets its own ``id``, so the base may
        carry the id of the request that placed the order.
        """
        ts = ev.ts
        price = ev.price
        qty = ev.qty
        expire_at = ev.expire_at
        # 15 keywords at most (see the module doc): voucher_id and expire_at are
        # given only when they are not 0, their default, so that the id fits.
        if ev.voucher_id or (expire_at and expire_at != NEVER):
            base = _ExecutionReport(
                exec_type=_NEW,
                ord_status=_NEW_STATUS,
                order_id=ev.order_id,
                client_order_id=ev.client_order_id,
                account=ev.account,
                instrument_id=ev.instrument_id,
                side=ev.side,
                order_type=ev.order_type,
                tif=ev.tif,
                price=price,
                qty=qty,
                leaves_qty=qty,
                voucher_id=ev.voucher_id,
                expire_at=0 if expire_at == NEVER else expire_at,
                ts=ts,
            )
            if request_id is not None:
                base = _replace(base, id=request_id)
        else:
            base = _ExecutionReport(
                id=request_id,
                exec_type=_NEW,
                ord_status=_NEW_STATUS,
                order_id=ev.order_id,
                client_order_id=ev.client_order_id,
                account=ev.account,
                instrument_id=ev.instrument_id,
                side=ev.side,
                order_type=ev.order_type,
                tif=ev.tif,
                price=price,
                qty=qty,
                leaves_qty=qty,
                ts=ts,
            )
        self._add(OrderState(base, price, qty, qty, ts))
        return base

    def filled(
        self, ev: Trade, buy_request_id: p.RequestId = None, sell_request_id: p.RequestId = None
    ) -> tuple[p.ExecutionReport | None, p.ExecutionReport | None]:
        """Reports for the buy and the sell order of one fill (None if unknown), with the
        given request ids as their ``id``."""
        return (
            self.fill(ev, ev.buy_order_id, ev.buy_leaves, buy_request_id),
            self.fill(ev, ev.sell_order_id, ev.sell_leaves, sell_request_id),
        )

    def fill(
        self, ev: Trade, order_id: int, leaves: int, request_id: p.RequestId = None
    ) -> p.ExecutionReport | None:
        """The report of one side of a fill: order ``order_id`` has ``leaves`` left
        (None if the order is unknown)."""
        state = self.orders.get(order_id)
        if state is None:
            return None
        qty = ev.qty
        price = ev.price
        ts = ev.ts
        cum_qty = state.cum_qty = state.cum_qty + qty
        cum_value = state.cum_value = state.cum_value + price * qty
        state.leaves = leaves
        state.ts = ts
        if leaves:
            state.status = status = _PARTIALLY_FILLED
            exec_type = _PARTIAL_FILL
        else:
            state.status = status = _FILLED
            exec_type = _FILL
            open_ids = self.open_by_account.get(state.base.account)
            if open_ids is not None:
                open_ids.discard(order_id)
        return _replace(
            state.base,
            id=request_id,
            exec_type=exec_type,
            ord_status=status,
            price=state.price,
            qty=state.qty,
            cum_qty=cum_qty,
            leaves_qty=leaves,
            cum_value=cum_value,
            last_price=price,
            last_qty=qty,
            trade_id=ev.trade_id,
            cash=ev.cash,
            voucher=ev.voucher,
            ts=ts,
        )

    def cancelled(self, ev: OrderCancelled) -> p.ExecutionReport | None:
        state = self.orders.get(ev.order_id)
        if state is None:
            return None
        expired = ev.reason is CancelReason.EXPIRED
        state.status = p.OrdStatus.EXPIRED if expired else p.OrdStatus.CANCELLED
        state.leaves = 0
        state.reason = ev.reason
        state.ts = ev.ts
        self._close(state)
        return report(state, p.ExecType.EXPIRED if expired else p.ExecType.CANCELLED)

    def amended(self, ev: OrderAmended) -> p.ExecutionReport | None:
        state = self.orders.get(ev.order_id)
        if state is None:
            return None
        state.price = ev.price
        state.qty = ev.qty
        state.leaves = ev.leaves
        state.ts = ev.ts
        return report(state, p.ExecType.REPLACED)

    @staticmethod
    def rejected(
        ev: Rejected, request: cmd.NewOrder | None, spec: InstrumentSpec | None = None
    ) -> p.ExecutionReport:
        """The REJECTED report of a new order the exchange refused (``spec``: its
        instrument's, for the limits in the text)."""
        text = p.REASON_TEXT.get(ev.reason, ev.reason)
        if request is not None and spec is not None:
            market = request.order_type is OrderType.MARKET
            text = limit_text(ev.reason, spec, request.qty, request.price, market=market) or text
        return p.ExecutionReport(
            exec_type=p.ExecType.REJECTED,
            ord_status=p.OrdStatus.REJECTED,
            order_id=0,
            client_order_id=ev.client_order_id,
            account=ev.actor,
            instrument_id=request.instrument_id if request else "",
            side=request.side if request else None,
            order_type=request.order_type if request else None,
            tif=request.tif if request else None,
            price=request.price if request else 0,
            qty=request.qty if request else 0,
            reason=ev.reason,
            text=text,
            ts=ev.ts,
        )


def limit_text(
    reason: str,
    spec: InstrumentSpec,
    qty: int | None,
    price: int | None,
    *,
    market: bool = False,
    filled: int = 0,
) -> str:
    """The words for a refused quantity or price, with the limit that it broke: the
    instrument's, a market order's (no price) or an amended order's (``filled``, what
    it has filled already); "" for any other reason, or a value the request did not set."""
    if reason == Reason.OFF_LOT and qty is not None:
        return f"quantity {qty} is not a whole number of lots of {spec.lot} GPU-hours"
    if reason == Reason.OFF_TICK and price is not None:
        return f"price {price} fen is not a whole number of ticks of {spec.tick} fen"
    if reason == Reason.INVALID_QUANTITY and qty is not None:
        if 0 < qty <= filled:
            return f"quantity {qty} is not above the {filled} GPU-hours already filled"
        return f"quantity {qty} is outside 1 to {spec.max_qty} GPU-hours"
    if reason == Reason.INVALID_PRICE and price:
        if market:
            return "a MARKET order takes no price"
        return f"price {price} fen is outside 1 to {spec.max_price} fen"
    return ""


def report(
    state: OrderState, exec_type: p.ExecType, *, request_id: p.RequestId = None
) -> p.ExecutionReport:
    """An execution report of ``state`` as it is now (fills: ``OrderRegister.filled``)."""
    reason = state.reason
    return _replace(
        state.base,
        id=request_id,
        exec_type=exec_type,
        ord_status=state.status,
        price=state.price,
        qty=state.qty,
        cum_qty=state.cum_qty,
        leaves_qty=state.leaves,
        cum_value=state.cum_value,
        reason=reason,
        text=p.REASON_TEXT.get(reason, "") if reason else "",
        ts=state.ts,
    )

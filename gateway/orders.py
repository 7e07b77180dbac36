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
"""

from __future__ import annotations

import msgspec

from exchange import commands as cmd
from exchange.book import Order
from exchange.core import NEVER
from exchange.events import OrderAccepted, OrderAmended, OrderCancelled, Rejected, Trade
from exchange.reasons import CancelReason
from exchange.reference import OrderType, Side, TimeInForce
from gateway import protocol as p


class OrderState(msgspec.Struct, kw_only=True, gc=False):
    """What the gateway knows of one order, open or finished.

    Only numbers, strings and enums: never in a reference cycle, so it stays
    out of the garbage collector (``gc=False``), which keeps collection pauses
    short however many orders the register holds.
    """

    order_id: int
    account: str
    client_order_id: str
    instrument_id: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price: int
    qty: int
    cum_qty: int = 0
    cum_value: int = 0
    leaves: int = 0
    voucher_id: int = 0
    expire_at: int = 0
    status: p.OrdStatus = p.OrdStatus.NEW
    reason: str = ""
    ts: int = 0
    base: p.ExecutionReport | None = None  # the fixed fields as a report: see ``report``

    @property
    def open(self) -> bool:
        return self.status in (p.OrdStatus.NEW, p.OrdStatus.PARTIALLY_FILLED)


VIEW_FIELDS = tuple(f for f in OrderState.__struct_fields__ if f != "base")
"""The fields of an order's state that describe it (``base`` is a cache)."""


def _base(state: OrderState) -> p.ExecutionReport:
    """The order's NEW report, whose fixed fields every later report copies."""
    return p.ExecutionReport(
        exec_type=p.ExecType.NEW,
        ord_status=p.OrdStatus.NEW,
        order_id=state.order_id,
        client_order_id=state.client_order_id,
        account=state.account,
        instrument_id=state.instrument_id,
        side=state.side,
        order_type=state.order_type,
        tif=state.tif,
        price=state.price,
        qty=state.qty,
        leaves_qty=state.leaves,
        voucher_id=state.voucher_id,
        expire_at=state.expire_at,
        ts=state.ts,
    )


_replace = msgspec.structs.replace
_FILL = p.ExecType.FILL
_PARTIAL_FILL = p.ExecType.PARTIAL_FILL
_FILLED = p.OrdStatus.FILLED
_PARTIALLY_FILLED = p.OrdStatus.PARTIALLY_FILLED


class OrderRegister:
    """Order states by id, and each account's client order ids."""

    def __init__(self) -> None:
        self.orders: dict[int, OrderState] = {}
        # account -> client order id -> order id. Nested rather than keyed by a
        # (account, client order id) tuple: a dict of str to int is never tracked
        # by the garbage collector, a dict of tuples is, and this one grows with
        # every order.
        self.by_client_id: dict[str, dict[str, int]] = {}
        self.open_by_account: dict[str, set[int]] = {}

    @classmethod
    def from_open_orders(cls, orders: dict[int, Order]) -> OrderRegister:
        """A register seeded with the open orders of a (recovered) core.

        Only limit orders rest, so every one of them is a LIMIT order.
        """
        register = cls()
        for order in orders.values():
            state = OrderState(
                order_id=order.order_id,
                account=order.account,
                client_order_id=order.client_order_id,
                instrument_id=order.instrument_id,
                side=order.side,
                order_type=OrderType.LIMIT,
                tif=order.tif,
                price=order.price,
                qty=order.qty,
                cum_qty=order.qty - order.leaves,
                leaves=order.leaves,
                voucher_id=order.voucher_id,
                expire_at=0 if order.expire_at == NEVER else order.expire_at,
                ts=order.entered_at,
            )
            if state.cum_qty:
                state.status = p.OrdStatus.PARTIALLY_FILLED
            register._add(state)
        return register

    def _add(self, state: OrderState) -> None:
        self.orders[state.order_id] = state
        client_ids = self.by_client_id.get(state.account)
        if client_ids is None:
            client_ids = self.by_client_id[state.account] = {}
        client_ids[state.client_order_id] = state.order_id
        self.open_by_account.setdefault(state.account, set()).add(state.order_id)

    def _close(self, state: OrderState) -> None:
        open_ids = self.open_by_account.get(state.account)
        if open_ids is not None:
            open_ids.discard(state.order_id)

    def find(self, account: str, order_id: int, client_order_id: str) -> OrderState | None:
        """An order of ``account`` by id or client order id (None if not theirs)."""
        if not order_id:
            order_id = self.by_client_id.get(account, {}).get(client_order_id, 0)
        state = self.orders.get(order_id)
        if state is None or state.account != account:
            return None
        return state

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

    def accepted(self, ev: OrderAccepted) -> p.ExecutionReport:
        state = OrderState(
            order_id=ev.order_id,
            account=ev.account,
            client_order_id=ev.client_order_id,
            instrument_id=ev.instrument_id,
            side=ev.side,
            order_type=ev.order_type,
            tif=ev.tif,
            price=ev.price,
            qty=ev.qty,
            leaves=ev.qty,
            voucher_id=ev.voucher_id,
            expire_at=0 if ev.expire_at == NEVER else ev.expire_at,
            ts=ev.ts,
        )
        self._add(state)
        state.base = _base(state)
        return state.base

    def filled(self, ev: Trade) -> tuple[p.ExecutionReport | None, p.ExecutionReport | None]:
        """Reports for the buy and the sell order of one fill (None if unknown)."""
        out: list[p.ExecutionReport | None] = []
        for order_id, leaves in (
            (ev.buy_order_id, ev.buy_leaves),
            (ev.sell_order_id, ev.sell_leaves),
        ):
            state = self.orders.get(order_id)
            if state is None:
                out.append(None)
                continue
            state.cum_qty += ev.qty
            state.cum_value += ev.price * ev.qty
            state.leaves = leaves
            state.ts = ev.ts
            if leaves:
                state.status = status = _PARTIALLY_FILLED
                exec_type = _PARTIAL_FILL
            else:
                state.status = status = _FILLED
                exec_type = _FILL
                self._close(state)
            base = state.base
            if base is None:
                base = state.base = _base(state)
            out.append(
                _replace(
                    base,
                    exec_type=exec_type,
                    ord_status=status,
                    price=state.price,
                    qty=state.qty,
                    cum_qty=state.cum_qty,
                    leaves_qty=leaves,
                    cum_value=state.cum_value,
                    last_price=ev.price,
                    last_qty=ev.qty,
                    trade_id=ev.trade_id,
                    cash=ev.cash,
                    voucher=ev.voucher,
                    ts=ev.ts,
                )
            )
        return out[0], out[1]

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
    def rejected(ev: Rejected, request: cmd.NewOrder | None) -> p.ExecutionReport:
        """The REJECTED report of a new order the exchange refused."""
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
            text=p.REASON_TEXT.get(ev.reason, ev.reason),
            ts=ev.ts,
        )


def report(
    state: OrderState, exec_type: p.ExecType, *, request_id: p.RequestId = None
) -> p.ExecutionReport:
    """An execution report of ``state`` as it is now (fills: ``OrderRegister.filled``)."""
    base = state.base
    if base is None:
        base = state.base = _base(state)
    reason = state.reason
    return _replace(
        base,
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

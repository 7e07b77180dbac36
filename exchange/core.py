"""The exchange core: a pure, synchronous, deterministic state machine.

``ExchangeCore.apply(command)`` checks one command, changes the state, and
returns the events that say what happened. Nothing else changes the state. The
core reads no clock (``command.ts`` is the time), draws no random numbers, does
no I/O, and numbers orders, trades, vouchers and claims from its own counters,
so the same commands always give byte-identical events.

Checks run in stages: validation, reference and permission, risk, matching
(see ``exchange.reasons``). Every check runs before the first change, so a
refused command changes nothing and yields one ``Rejected`` event.

Ledger rules
------------
* A buy reserves, when it is entered, all it could spend: ``price * qty`` for a
  limit order; for a market order, its quantity at its protection price, the
  worst price on the opposite side that its quantity reaches. The voucher part
  and the cash part of that reservation follow ``exchange.vouchers``.
* A sell reserves the provider's free capacity on the instrument.
* A fill moves the buyer's reserved cash to the seller's free cash, the
  buyer's reserved voucher value into a claim of the seller's on the issuer,
  and the seller's reserved capacity to capacity sold and to the buyer's
  holdings. What a finished or cancelled order still holds goes back free.
* So, exactly and at every step: free and reserved cash, plus free and
  reserved voucher value, plus open claims, equals deposits minus withdrawals;
  and each instrument's free, reserved and sold capacity equals what providers
  registered, with sold capacity equal to the buyers' holdings.

Expiry: an order stops at the earliest of its GTD time and its voucher's
expiry; at the delivery window's start the instrument closes and every order on
it expires. Time advances to each command's ``ts`` before the command is
handled, and ``AdvanceClock`` lets it advance with no other command.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, Final

import msgspec

from exchange import commands as cmd
from exchange.auction import uncross_price
from exchange.book import Order, OrderBook
from exchange.events import (
    AccountAdmitted,
    AuctionUncrossed,
    CapacityRegistered,
    CashMoved,
    ClaimSettled,
    Event,
    InstrumentListed,
    InstrumentStatusChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    PartiesRelated,
    ProgrammeCreated,
    Rejected,
    Trade,
    VoucherIssued,
)
from exchange.reasons import CancelReason, Reason
from exchange.records import Account, Instrument, Position
from exchange.reference import (
    MAX_ID_LEN,
    TRANSITIONS,
    EligibilityBasis,
    InstrumentStatus,
    OrderType,
    Role,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from exchange.tables import IdTable
from exchange.vouchers import BP, Programme, Voucher, VoucherClaim, calendar_year

MAX_AMOUNT: Final = 10**15  # fen: no single deposit, withdrawal, voucher or budget is larger
# Bounds on what repetition adds up: all the cash deposited on the exchange, and a
# provider's capacity on one instrument (MAX_AMOUNT). However it then moves, no
# balance or holding leaves the int64 range every record and message encodes.
MAX_DEPOSITED: Final = 10**18
NEVER: Final = 2**63 - 1  # ns: the end of time, for orders that only expire with their instrument

# Hot-path aliases: reading an enum member through its class costs a lookup each
# time. Final: compiled, each is a C static rather than a module-dict lookup.
_BUY: Final = Side.BUY
_SELL: Final = Side.SELL
_OPEN: Final = InstrumentStatus.OPEN
_AUCTION: Final = InstrumentStatus.AUCTION
_GTC: Final = TimeInForce.GTC
_GTD: Final = TimeInForce.GTD
_IOC: Final = TimeInForce.IOC
_FOK: Final = TimeInForce.FOK
_CANCEL_RESTING: Final = SelfTradePrevention.CANCEL_RESTING
_CANCEL_AGGRESSOR: Final = SelfTradePrevention.CANCEL_AGGRESSOR
_CANCEL_BOTH: Final = SelfTradePrevention.CANCEL_BOTH
_MARKET: Final = OrderType.MARKET
_STARTUP: Final = Role.STARTUP
_PROVIDER: Final = Role.PROVIDER
_HALTED: Final = InstrumentStatus.HALTED
_IOC_REMAINDER: Final = CancelReason.IOC_REMAINDER
_REQUESTED: Final = CancelReason.REQUESTED
_SELF_TRADE: Final = CancelReason.SELF_TRADE
_UNKNOWN_ORDER: Final = Reason.UNKNOWN_ORDER


class _Refused(Exception):
    """Raised inside a handler before any change; becomes a Rejected event."""

    def __init__(self, reason: Reason) -> None:
        self.reason = reason


def _valid_id(value: str) -> bool:
    """1 to MAX_ID_LEN printable characters, with no space at either end.

    (The only whitespace that is printable is the space, so this is
    ``value.strip() == value`` without building a stripped copy.)
    """
    return (
        0 < len(value) <= MAX_ID_LEN
        and _isprintable(value)
        and value[0] != " "
        and value[-1] != " "
    )


# Final: compiled, each of these is a C static rather than a module-dict lookup.
_astuple: Final = msgspec.structs.astuple
_isprintable: Final = str.isprintable  # called unbound: no method lookup
# _new_order and _cancel_order unpack their commands by position: the fields
# must stay in this order.
_NEW_ORDER_FIELDS: Final = (
    "actor",
    "ts",
    "client_order_id",
    "instrument_id",
    "side",
    "qty",
    "price",
    "order_type",
    "tif",
    "expire_at",
    "post_only",
    "min_qty",
    "stp",
    "voucher_id",
)
if cmd.NewOrder.__struct_fields__ != _NEW_ORDER_FIELDS:
    raise ImportError("exchange.core unpacks NewOrder by position: update _NEW_ORDER_FIELDS")
if cmd.CancelOrder.__struct_fields__ != ("actor", "ts", "order_id", "client_order_id"):
    raise ImportError("exchange.core unpacks CancelOrder by position: update _cancel_order")
_NEW_ORDER: Final = cmd.NewOrder
_CANCEL_ORDER: Final = cmd.CancelOrder
# The core builds these events by position (see exchange.events): their fields
# must stay in this order.
_POSITIONAL_EVENTS: Final = {
    OrderAccepted: (
        "ts",
        "order_id",
        "account",
        "client_order_id",
        "instrument_id",
        "side",
        "order_type",
        "tif",
        "price",
        "qty",
        "expire_at",
        "post_only",
        "min_qty",
        "voucher_id",
        "cash_reserved",
        "voucher_reserved",
    ),
    Trade: (
        "ts",
        "trade_id",
        "instrument_id",
        "price",
        "qty",
        "aggressor",
        "buy_order_id",
        "sell_order_id",
        "buyer",
        "seller",
        "buy_leaves",
        "sell_leaves",
        "cash",
        "voucher",
        "voucher_id",
        "claim_id",
    ),
    OrderCancelled: (
        "ts",
        "order_id",
        "account",
        "client_order_id",
        "instrument_id",
        "side",
        "price",
        "leaves",
        "reason",
        "rested",
    ),
}
for _event, _fields in _POSITIONAL_EVENTS.items():
    if _event.__struct_fields__ != _fields:
        raise ImportError(f"exchange.core builds {_event.__name__} by position: update it")


class ExchangeCore:
    """All books, accounts, vouchers and contracts of one exchange."""

    def __init__(self) -> None:
        # Recovery replays with ``quiet`` set: the order-accepted, cancelled and
        # rejected events, which nobody reads then, are not built. Nothing else
        # differs, and the state comes out the same.
        self.quiet = False
        self.now = 0
        self.instruments: dict[str, Instrument] = {}
        self.books: dict[str, OrderBook] = {}
        self.accounts: dict[str, Account] = {}
        self.orders: dict[int, Order] = {}  # open orders
        self.programmes: dict[str, Programme] = {}
        self.vouchers: dict[int, Voucher] = {}
        self.claims: IdTable[VoucherClaim] = IdTable()
        self.contracts: IdTable[Trade] = IdTable()  # trade id -> the fill, which is the contract
        self.deposited = 0  # deposits minus withdrawals, fen: the conserved total
        self.next_order_id = 1
        self.next_trade_id = 1
        self.next_voucher_id = 1
        self.next_claim_id = 1
        self.next_priority = 1
        # (time, order id): orders that expire before their instrument closes
        self.expiries: list[tuple[int, int]] = []
        # (delivery start, instrument id): when each instrument closes
        self.closings: list[tuple[int, str]] = []
        self._handlers: dict[type[Any], Callable[[Any, list[Event]], None]] = {
            cmd.AmendOrder: self._amend_order,
            cmd.CancelAll: self._cancel_all,
            cmd.ListInstrument: self._list_instrument,
            cmd.SetInstrumentStatus: self._set_status,
            cmd.AdmitAccount: self._admit_account,
            cmd.RelateParties: self._relate_parties,
            cmd.Deposit: self._deposit,
            cmd.Withdraw: self._withdraw,
            cmd.RegisterCapacity: self._register_capacity,
            cmd.CreateProgramme: self._create_programme,
            cmd.IssueVoucher: self._issue_voucher,
            cmd.SettleClaim: self._settle_claim,
            cmd.AdvanceClock: self._advance_clock,
        }

    # --- the one entry point ------------------------------------------------

    def apply(self, command: cmd.Command) -> list[Event]:
        """Handle one command; return what happened, in order."""
        out: list[Event] = []
        kind = type(command)
        # Orders and cancels, most of the traffic, are read in one call and
        # handled by a direct call; the rest go through the handler table.
        fields: tuple[Any, ...] = ()
        if kind is _NEW_ORDER or kind is _CANCEL_ORDER:
            fields = _astuple(command)
            ts: int = fields[1]
        else:
            ts = command.ts
        if ts > self.now:
            closings = self.closings
            expiries = self.expiries
            if (closings and closings[0][0] <= ts) or (expiries and expiries[0][0] <= ts):
                self._advance(ts, out)
            else:  # the usual case: time moves on and nothing falls due
                self.now = ts
        try:
            if kind is _NEW_ORDER:
                self._new_order(fields, out)
            elif kind is _CANCEL_ORDER:
                self._cancel_order(command, fields, out)
            else:
                self._handlers[kind](command, out)
        except _Refused as refusal:
            self._rejected(command, refusal.reason, out)
        return out

    def _rejected(self, command: cmd.Command, reason: Reason, out: list[Event]) -> None:
        """Say that ``command`` was refused (unless replaying quiet: nobody reads it)."""
        if not self.quiet:
            out.append(
                Rejected(
                    ts=self.now,
                    actor=command.actor,
                    command=type(command).__name__,
                    reason=reason,
                    client_order_id=getattr(command, "client_order_id", ""),
                    order_id=getattr(command, "order_id", 0),
                )
            )

    # --- time ----------------------------------------------------------------

    def _advance(self, ts: int, out: list[Event]) -> None:
        self.now = ts
        closings = self.closings
        while closings and closings[0][0] <= ts:
            _, instrument_id = heapq.heappop(closings)
            inst = self.instruments[instrument_id]
            if inst.status is not InstrumentStatus.CLOSED:
                self._close(inst, CancelReason.EXPIRED, out)
        expiries = self.expiries
        while expiries and expiries[0][0] <= ts:
            expire_at, order_id = heapq.heappop(expiries)
            order = self.orders.get(order_id)
            if order is not None and order.expire_at == expire_at:
                self._cancel(order, CancelReason.EXPIRED, out)

    def next_deadline(self) -> int:
        """The earliest time at which an order or instrument expires; NEVER if none."""
        deadline = NEVER
        if self.closings:
            deadline = self.closings[0][0]
        if self.expiries and self.expiries[0][0] < deadline:
            deadline = self.expiries[0][0]
        return deadline

    def _advance_clock(self, c: cmd.AdvanceClock, out: list[Event]) -> None:
        self._require_operator(c.actor)

    # --- permissions -----------------------------------------------------------

    def _is_operator(self, actor: str) -> bool:
        if actor == cmd.SYSTEM:
            return True
        account = self.accounts.get(actor)
        return account is not None and account.role is Role.OPERATOR

    def _require_operator(self, actor: str) -> None:
        if not self._is_operator(actor):
            raise _Refused(Reason.NOT_PERMITTED)

    def _account(self, account_id: str) -> Account:
        account = self.accounts.get(account_id)
        if account is None:
            raise _Refused(Reason.UNKNOWN_ACCOUNT)
        return account

    def _instrument(self, instrument_id: str) -> Instrument:
        inst = self.instruments.get(instrument_id)
        if inst is None:
            raise _Refused(Reason.UNKNOWN_INSTRUMENT)
        return inst

    # --- orders ----------------------------------------------------------------

    def _new_order(self, fields: tuple[Any, ...], out: list[Event]) -> None:
        # ``fields`` is the NewOrder's fields in order (see apply): one call
        # reads them all, where each attribute of a Struct costs compiled code
        # a generic lookup.
        actor: str
        ts: int
        coid: str
        instrument_id: str
        side: Side
        qty: int
        price: int
        order_type: OrderType
        tif: TimeInForce
        expire_at: int
        post_only: bool
        min_qty: int
        stp: SelfTradePrevention
        voucher_id: int
        (
            actor,
            ts,
            coid,
            instrument_id,
            side,
            qty,
            price,
            order_type,
            tif,
            expire_at,
            post_only,
            min_qty,
            stp,
            voucher_id,
        ) = fields
        account = self.accounts.get(actor)
        if account is None:
            raise _Refused(Reason.UNKNOWN_ACCOUNT)
        inst = self.instruments.get(instrument_id)
        if inst is None:
            raise _Refused(Reason.UNKNOWN_INSTRUMENT)
        # From here on the core's own copies of the two ids: the keys of its
        # dicts, which a lookup then finds by identity before comparing text.
        actor = account.account_id
        instrument_id = inst.instrument_id
        lot = inst.lot
        # 1. Validation
        if qty <= 0 or qty > inst.max_qty:
            raise _Refused(Reason.INVALID_QUANTITY)
        if qty % lot:
            raise _Refused(Reason.OFF_LOT)
        market = order_type is _MARKET
        if market:
            if price:
                raise _Refused(Reason.INVALID_PRICE)
            if tif is not _IOC and tif is not _FOK:
                raise _Refused(Reason.INVALID_TIME_IN_FORCE)
            if post_only:
                raise _Refused(Reason.INVALID_FLAGS)
        else:
            if price <= 0 or price > inst.max_price:
                raise _Refused(Reason.INVALID_PRICE)
            if price % inst.tick:
                raise _Refused(Reason.OFF_TICK)
            if post_only and (tif is _IOC or tif is _FOK or min_qty):
                raise _Refused(Reason.INVALID_FLAGS)
        if tif is _GTD:
            if expire_at <= self.now:
                raise _Refused(Reason.INVALID_EXPIRY)
        elif expire_at:
            raise _Refused(Reason.INVALID_EXPIRY)
        if min_qty and (min_qty < 0 or min_qty > qty or min_qty % lot):
            raise _Refused(Reason.INVALID_MIN_QTY)
        if voucher_id and side is _SELL:
            raise _Refused(Reason.INVALID_FLAGS)
        if not _valid_id(coid):
            raise _Refused(Reason.INVALID_ID)
        # 2. Reference and permission
        buying = side is _BUY
        if account.role is not (_STARTUP if buying else _PROVIDER):
            raise _Refused(Reason.NOT_PERMITTED)
        known_ids = account.client_order_ids.shard(coid)  # where coid goes, if accepted
        if coid in known_ids:
            raise _Refused(Reason.DUPLICATE_CLIENT_ORDER_ID)
        status = inst.status
        if status is not _OPEN:
            if status is _AUCTION:
                if market or tif is _IOC or tif is _FOK or min_qty:
                    raise _Refused(Reason.NOT_ALLOWED_IN_AUCTION)
            elif status is _HALTED:
                raise _Refused(Reason.MARKET_HALTED)
            else:
                raise _Refused(Reason.MARKET_NOT_OPEN)
        book = self.books[instrument_id]
        # 4. Matching checks that need no change (risk needs the market price)
        if market:
            price = self._protection_price(book, side, qty)
            if not price:
                raise _Refused(Reason.NO_LIQUIDITY)
        elif post_only and status is _OPEN:
            if buying:
                if book.best_ask and price >= book.best_ask:
                    raise _Refused(Reason.POST_ONLY_WOULD_CROSS)
            elif book.best_bid and price <= book.best_bid:
                raise _Refused(Reason.POST_ONLY_WOULD_CROSS)
        # 3. Risk
        # NEVER is beyond the compiled core's small-int range, so comparing with
        # it is slow: ``expires`` says whether expire_at is a real time instead.
        expires = tif is _GTD
        if not expires:
            expire_at = NEVER
        rate = 0
        voucher_cap = 0
        voucher = None
        position: Position | None = None  # a sell's
        if buying:
            notional = price * qty
            if voucher_id:
                voucher, rate = self._voucher_for(voucher_id, actor, inst)
                voucher_cap = min(voucher.balance, rate * notional // BP)
                if not expires or voucher.expires_at < expire_at:
                    expire_at = voucher.expires_at
                    expires = True
            cash_needed = notional - voucher_cap
            if account.cash < cash_needed:
                raise _Refused(Reason.INSUFFICIENT_FUNDS)
        else:
            cash_needed = 0
            position = account.positions.get(instrument_id)
            if position is None or position.free < qty:
                raise _Refused(Reason.INSUFFICIENT_CAPACITY)
        # Accepted: from here on the state changes.
        order_id = self.next_order_id
        self.next_order_id = order_id + 1
        # Compiled, an int is a machine word until it goes into a dict, tuple or
        # event, and each of those boxes it anew: box the id once, and hand the
        # event the command's own objects where the values are the command's.
        boxed_id: Any = order_id
        if expires and expire_at >= inst.delivery_start:
            expire_at = NEVER  # closes with its instrument
            expires = False
        now = self.now
        # The events' time, boxed: the command's own object when it is the core's time.
        stamp: Any = fields[1] if ts == now else now
        # At most 15 keywords (more cost CPython a dict): the voucher fields are set below.
        order = Order(
            account,
            order_id=order_id,
            account=actor,
            client_order_id=coid,
            instrument_id=instrument_id,
            side=side,
            price=price,
            qty=qty,
            leaves=qty,
            tif=tif,
            expire_at=expire_at,
            post_only=post_only,
            min_qty=min_qty,
            stp=stp,
            cash_reserved=cash_needed,
            entered_at=now,
        )
        if buying:
            account.cash -= cash_needed
            account.cash_reserved += cash_needed
            if voucher is not None:
                order.voucher_id = voucher_id
                order.rate_bp = rate
                order.voucher_reserved = order.voucher_cap = voucher_cap
                voucher.balance -= voucher_cap
                voucher.reserved += voucher_cap
        else:
            assert position is not None  # checked above
            position.free -= qty
            position.reserved += qty
        known_ids[coid] = boxed_id
        if not self.quiet:
            accepted = OrderAccepted(
                stamp,
                boxed_id,
                actor,
                coid,
                instrument_id,
                side,
                order_type,
                tif,
                price if market else fields[6],  # a market order's is the protection price
                fields[5],  # qty
                expire_at,
                post_only,
                fields[11],  # min_qty
                fields[13],  # voucher_id: 0 unless a voucher was named, and then found
                cash_needed,
                voucher_cap,
            )
            out.append(accepted)
        if status is _OPEN:
            need = qty if tif is _FOK else min_qty
            if need and self._fillable(book, order, need) < need:
                reason = CancelReason.FOK_UNFILLED if tif is _FOK else CancelReason.MIN_QTY_UNMET
                self._finish(order, reason, out)
                return
            # Match only when the order crosses (the test _match starts with).
            best = book.best_ask if buying else book.best_bid
            if best and ((best <= price) if buying else (best >= price)):
                self._match(inst, book, order, out, stamp)
        if order.leaves and tif is not _IOC and tif is not _FOK:
            # Most orders rest: _rest_or_finish's resting case, inlined.
            priority = self.next_priority
            order.priority = priority
            self.next_priority = priority + 1
            book.add(order)
            self.orders[boxed_id] = order
            if expires:
                heapq.heappush(self.expiries, (expire_at, boxed_id))
        else:
            self._rest_or_finish(book, order, out)

    def _voucher_for(self, voucher_id: int, holder: str, inst: Instrument) -> tuple[Voucher, int]:
        """The voucher a buy names and its rate on this instrument, or a refusal."""
        voucher = self.vouchers.get(voucher_id)
        if voucher is None:
            raise _Refused(Reason.UNKNOWN_VOUCHER)
        if voucher.holder != holder:
            raise _Refused(Reason.NOT_YOUR_VOUCHER)
        if self.now >= voucher.expires_at:
            raise _Refused(Reason.VOUCHER_EXPIRED)
        programme_id = voucher.programme_id
        rate = inst.voucher_rates.get(programme_id, -1)
        if rate < 0:
            rate = self._rate_on(self.programmes[programme_id], inst)
            inst.voucher_rates[programme_id] = rate
        if not rate:
            raise _Refused(Reason.VOUCHER_INELIGIBLE)
        return voucher, rate

    @staticmethod
    def _rate_on(programme: Programme, inst: Instrument) -> int:
        """The programme's rate on the instrument; 0 where it does not pay."""
        spec = inst.spec
        if not programme.covers_hub(spec.hub):
            return 0
        return programme.rate(spec.tier, spec.domestic)

    def _protection_price(self, book: OrderBook, side: Side, qty: int) -> int:
        """The worst opposite price a market order of ``qty`` reaches; 0 if none."""
        opposite = _SELL if side is _BUY else _BUY
        levels = book.asks if side is _BUY else book.bids
        price = 0
        for price in book.level_prices(opposite):
            qty -= levels[price].total
            if qty <= 0:
                break
        return price

    def _conflict(self, incoming: Order, resting: Order, related: set[str]) -> bool:
        """Self-trade, or a voucher paying a related party (see exchange.book)."""
        return resting.account == incoming.account or bool(
            related and resting.account in related and (incoming.voucher_id or resting.voucher_id)
        )

    def _fillable(self, book: OrderBook, order: Order, need: int) -> int:
        """GPU-hours ``order`` could fill at once, counting up to ``need``; no changes."""
        buying = order.side is _BUY
        opposite = _SELL if buying else _BUY
        levels = book.asks if buying else book.bids
        related = order.owner.related
        limit = order.price
        got = 0
        for price in book.level_prices(opposite):
            if (price > limit) if buying else (price < limit):
                break
            for resting in levels[price].live_orders():
                if self._conflict(order, resting, related):
                    if order.stp is _CANCEL_RESTING and resting.account == order.account:
                        continue
                    return got
                got += resting.leaves
                if got >= need:
                    return got
        return got

    def _match(
        self, inst: Instrument, book: OrderBook, order: Order, out: list[Event], stamp: Any
    ) -> None:
        """Trade an incoming order against the book while prices cross.

        ``stamp`` is the core's time, boxed once for every trade's ``ts``."""
        buying = order.side is _BUY
        levels = book.asks if buying else book.bids
        opposite = _SELL if buying else _BUY
        account = order.account
        related = order.owner.related
        orders = self.orders
        limit = order.price
        while order.leaves:
            best = book.best_ask if buying else book.best_bid
            if not best or ((best > limit) if buying else (best < limit)):
                return
            level = levels[best]
            queue = level.queue
            while order.leaves and level.count:
                head = level.head  # level.front(), inlined
                resting = queue[head]
                while not resting.live:
                    head += 1
                    resting = queue[head]
                level.head = head
                if resting.account == account:
                    if order.stp is not _CANCEL_AGGRESSOR:
                        self._cancel(resting, _SELF_TRADE, out)
                    if order.stp is not _CANCEL_RESTING:
                        self._finish(order, _SELF_TRADE, out)
                        return
                    continue
                if related and self._conflict(order, resting, related):
                    # A related party's order is not this order's to cancel: the
                    # incoming order stops here, whatever its mode.
                    self._finish(order, _SELF_TRADE, out)
                    return
                qty = resting.leaves if resting.leaves < order.leaves else order.leaves
                if buying:
                    self._fill(inst, order, resting, best, qty, _BUY, out, stamp)
                else:
                    self._fill(inst, resting, order, best, qty, _SELL, out, stamp)
                level.total -= qty
                if not resting.leaves:
                    resting.live = False
                    level.pop_front()
                    level.count -= 1
                    del orders[resting.order_id]
                    if not buying:  # a filled resting buy may still hold rounding change
                        self._release(resting)
            # Drop the emptied level, unless a self-trade cancel already has
            # (and so moved the best price on).
            if not level.count and (book.best_ask if buying else book.best_bid) == best:
                book.drop_level(opposite, best)

    def _fill(
        self,
        inst: Instrument,
        buy: Order,
        sell: Order,
        price: int,
        qty: int,
        aggressor: Side | None,
        out: list[Event],
        stamp: Any,
    ) -> None:
        """Settle one fill: the contract, the cash, the voucher claim, the capacity.

        ``stamp`` is the core's time (see _match)."""
        value = price * qty
        buy.leaves -= qty
        sell.leaves -= qty
        buyer = buy.owner
        seller = sell.owner
        instrument_id = sell.instrument_id
        trade_id = self.next_trade_id
        self.next_trade_id = trade_id + 1
        boxed_id: Any = trade_id  # boxed once for the event and the key (see _new_order)
        voucher_part = 0
        claim_id = 0
        voucher_id = buy.voucher_id
        if voucher_id:
            seg_value = buy.seg_value + value
            used = buy.rate_bp * seg_value // BP
            if used > buy.voucher_cap:
                used = buy.voucher_cap
            voucher_part = used - buy.seg_voucher
            buy.seg_value = seg_value
            buy.seg_voucher = used
            if voucher_part:
                buy.voucher_reserved -= voucher_part
                voucher = self.vouchers[voucher_id]
                voucher.reserved -= voucher_part
                voucher.spent += voucher_part
                claim_id = self.next_claim_id
                self.next_claim_id = claim_id + 1
                self.claims.add(
                    claim_id,
                    VoucherClaim(
                        claim_id=claim_id,
                        contract_id=trade_id,
                        voucher_id=voucher.voucher_id,
                        programme_id=voucher.programme_id,
                        issuer=voucher.issuer,
                        provider=sell.account,
                        amount=voucher_part,
                        created_at=self.now,
                    ),
                )
        cash = value - voucher_part
        buy.cash_reserved -= cash
        buyer.cash_reserved -= cash
        seller.cash += cash
        sold = seller.positions[instrument_id]
        sold.reserved -= qty
        sold.sold += qty
        buyer.position(instrument_id).held += qty
        inst.last_price = price
        inst.volume += qty
        inst.turnover += value
        inst.trades += 1
        trade = Trade(
            stamp,
            boxed_id,
            instrument_id,
            price,
            qty,
            aggressor,
            buy.order_id,
            sell.order_id,
            buy.account,
            sell.account,
            buy.leaves,
            sell.leaves,
            cash,
            voucher_part,
            voucher_id,
            claim_id,
        )
        self.contracts.add(boxed_id, trade)
        out.append(trade)

    def _release(self, order: Order) -> None:
        """Free what an order still holds once it has stopped working."""
        account = order.owner
        if order.side is _BUY:
            if order.cash_reserved:
                account.cash_reserved -= order.cash_reserved
                account.cash += order.cash_reserved
                order.cash_reserved = 0
            if order.voucher_reserved:
                voucher = self.vouchers[order.voucher_id]
                voucher.reserved -= order.voucher_reserved
                voucher.balance += order.voucher_reserved
                order.voucher_reserved = 0
        elif order.leaves:
            instrument_id = order.instrument_id
            position = account.positions[instrument_id]
            position.reserved -= order.leaves
            position.free += order.leaves

    def _rest_or_finish(self, book: OrderBook, order: Order, out: list[Event]) -> None:
        """After matching: rest what is left, or end the order."""
        if not order.leaves:
            if order.side is _BUY:
                self._release(order)
            return
        tif = order.tif
        if tif is _IOC or tif is _FOK:
            self._finish(order, _IOC_REMAINDER, out)
            return
        priority = self.next_priority
        order.priority = priority
        self.next_priority = priority + 1
        book.add(order)
        self.orders[order.order_id] = order
        if order.expire_at != NEVER:
            heapq.heappush(self.expiries, (order.expire_at, order.order_id))

    def _finish(self, order: Order, reason: CancelReason, out: list[Event]) -> None:
        """End an incoming order that never rested."""
        self._cancel(order, reason, out, rested=False)

    def _cancel(
        self, order: Order, reason: CancelReason, out: list[Event], rested: bool = True
    ) -> None:
        """End an order and free what it holds; take it off its book if it rested."""
        if rested:
            self.books[order.instrument_id].remove(order)
            del self.orders[order.order_id]
        self._release(order)
        if not self.quiet:
            out.append(
                OrderCancelled(
                    self.now,
                    order.order_id,
                    order.account,
                    order.client_order_id,
                    order.instrument_id,
                    order.side,
                    order.price,
                    order.leaves,
                    reason,
                    rested,
                )
            )
        order.leaves = 0

    def _find_order(self, actor: str, order_id: int, client_order_id: str) -> Order | None:
        """The open order a cancel or amend names, by id or by the actor's client id.

        None if there is none: the caller refuses the command without raising,
        since cancels of orders that have just filled are common, and a raise
        costs compiled code a traceback entry per frame.
        """
        if order_id:
            return self.orders.get(order_id)
        account = self.accounts.get(actor)
        known = account.client_order_ids.get(client_order_id) if account else None
        return self.orders.get(known) if known else None

    def _cancel_order(
        self, command: cmd.Command, fields: tuple[Any, ...], out: list[Event]
    ) -> None:
        actor: str
        order_id: int
        coid: str
        actor, _, order_id, coid = fields  # a CancelOrder's fields (see apply)
        # Looked up with the command's own int object (see _new_order on boxing).
        order = self.orders.get(fields[2]) if order_id else None
        if order is None:
            order = self._find_order(actor, order_id, coid)
            if order is None:
                self._rejected(command, _UNKNOWN_ORDER, out)
                return
        if order.account == actor:
            reason = _REQUESTED
        elif self._is_operator(actor):
            reason = CancelReason.OPERATOR
        else:
            raise _Refused(Reason.NOT_YOUR_ORDER)
        self._cancel(order, reason, out)

    def _cancel_all(self, c: cmd.CancelAll, out: list[Event]) -> None:
        actor = c.actor
        instrument_id = c.instrument_id
        if instrument_id:
            self._instrument(instrument_id)
        if instrument_id and self._is_operator(actor):
            # An operator's cancel-all on an instrument clears everyone's orders there.
            targets = [o for o in self.orders.values() if o.instrument_id == instrument_id]
            reason = CancelReason.OPERATOR
        else:
            account = self.accounts.get(actor)
            if account is None:
                raise _Refused(Reason.NOT_PERMITTED)
            targets = [
                o
                for o in self.orders.values()
                if o.owner is account and (not instrument_id or o.instrument_id == instrument_id)
            ]
            reason = CancelReason.MASS_CANCEL
        for order in sorted(targets, key=lambda o: o.order_id):
            self._cancel(order, reason, out)

    def _amend_order(self, c: cmd.AmendOrder, out: list[Event]) -> None:
        order = self._find_order(c.actor, c.order_id, c.client_order_id)
        if order is None:
            self._rejected(c, _UNKNOWN_ORDER, out)
            return
        if order.account != c.actor:
            raise _Refused(Reason.NOT_YOUR_ORDER)
        inst = self.instruments[order.instrument_id]
        spec = inst.spec
        filled = order.qty - order.leaves
        qty = order.qty if c.qty is None else c.qty
        price = order.price if c.price is None else c.price
        if qty <= filled or qty > spec.max_qty:
            raise _Refused(Reason.INVALID_QUANTITY)
        if qty % spec.lot:
            raise _Refused(Reason.OFF_LOT)
        if price <= 0 or price > spec.max_price:
            raise _Refused(Reason.INVALID_PRICE)
        if price % spec.tick:
            raise _Refused(Reason.OFF_TICK)
        if inst.status is InstrumentStatus.HALTED and (price != order.price or qty >= order.qty):
            # Halted, only taking quantity off at the same price is allowed: a
            # partial cancel, which neither trades nor moves the queue.
            raise _Refused(Reason.MARKET_HALTED)
        book = self.books[order.instrument_id]
        leaves = qty - filled
        requeue = price != order.price or leaves > order.leaves
        buying = order.side is _BUY
        if order.post_only and requeue and inst.status is _OPEN:
            best = book.best_ask if buying else book.best_bid
            if best and ((price >= best) if buying else (price <= best)):
                raise _Refused(Reason.POST_ONLY_WOULD_CROSS)
        account = order.owner
        if buying:
            notional = price * leaves
            cap = 0
            if order.voucher_id:
                voucher = self.vouchers[order.voucher_id]
                free_voucher = voucher.balance + order.voucher_reserved
                cap = min(free_voucher, order.rate_bp * notional // BP)
            cash_needed = notional - cap
            if account.cash + order.cash_reserved < cash_needed:
                raise _Refused(Reason.INSUFFICIENT_FUNDS)
            # Swap the old reservation for the new one.
            account.cash += order.cash_reserved - cash_needed
            account.cash_reserved += cash_needed - order.cash_reserved
            if order.voucher_id:
                voucher.balance += order.voucher_reserved - cap
                voucher.reserved += cap - order.voucher_reserved
            order.cash_reserved = cash_needed
            order.voucher_reserved = order.voucher_cap = cap
            order.seg_value = order.seg_voucher = 0
        else:
            extra = leaves - order.leaves
            position = account.positions[order.instrument_id]  # it rests: it is there
            if extra > position.free:
                raise _Refused(Reason.INSUFFICIENT_CAPACITY)
            position.free -= extra
            position.reserved += extra
        if requeue:
            book.remove(order)
            del self.orders[order.order_id]
            # A new arrival: a fresh record, so the stale queue entry stays dead.
            order = order.requeued(price, qty, leaves)
        else:
            book.level(order.side, price).total -= order.leaves - leaves
            order.qty = qty
            order.leaves = leaves
        out.append(
            OrderAmended(
                ts=self.now,
                order_id=order.order_id,
                account=order.account,
                client_order_id=order.client_order_id,
                instrument_id=order.instrument_id,
                side=order.side,
                price=price,
                qty=qty,
                leaves=leaves,
                requeued=requeue,
                cash_reserved=order.cash_reserved,
                voucher_reserved=order.voucher_reserved,
            )
        )
        if requeue:
            if inst.status is _OPEN:
                self._match(inst, book, order, out, self.now)
            self._rest_or_finish(book, order, out)

    # --- instruments -----------------------------------------------------------

    def _list_instrument(self, c: cmd.ListInstrument, out: list[Event]) -> None:
        self._require_operator(c.actor)
        spec = c.spec
        if not _valid_id(spec.instrument_id) or not spec.gpu_model or not spec.hub:
            raise _Refused(Reason.INVALID_ID)
        if spec.instrument_id in self.instruments:
            raise _Refused(Reason.DUPLICATE_ID)
        if (
            spec.tick <= 0
            or spec.lot <= 0
            or spec.max_price < spec.tick
            or spec.max_price > MAX_AMOUNT
            or spec.max_qty < spec.lot
            or spec.max_qty > MAX_AMOUNT
            or spec.reference_price < 0
            or spec.reference_price % spec.tick
            or spec.delivery_start <= self.now
            or spec.delivery_end <= spec.delivery_start
        ):
            raise _Refused(Reason.INVALID_INSTRUMENT)
        self.instruments[spec.instrument_id] = Instrument(spec=spec)
        self.books[spec.instrument_id] = OrderBook()
        heapq.heappush(self.closings, (spec.delivery_start, spec.instrument_id))
        out.append(InstrumentListed(ts=self.now, spec=spec))

    def _set_status(self, c: cmd.SetInstrumentStatus, out: list[Event]) -> None:
        self._require_operator(c.actor)
        inst = self._instrument(c.instrument_id)
        previous = inst.status
        if c.status not in TRANSITIONS[previous]:
            raise _Refused(Reason.INVALID_TRANSITION)
        if c.status is InstrumentStatus.CLOSED:
            self._close(inst, CancelReason.MARKET_CLOSED, out)
            return
        inst.status = c.status
        out.append(
            InstrumentStatusChanged(
                ts=self.now, instrument_id=c.instrument_id, status=c.status, previous=previous
            )
        )
        if c.status is _OPEN and (previous is _AUCTION or self.books[c.instrument_id].crossed()):
            # A call halted before its uncross still uncrosses when trading resumes.
            self._uncross(inst, out)

    def _close(self, inst: Instrument, reason: CancelReason, out: list[Event]) -> None:
        previous = inst.status
        inst.status = InstrumentStatus.CLOSED
        instrument_id = inst.spec.instrument_id
        out.append(
            InstrumentStatusChanged(
                ts=self.now,
                instrument_id=instrument_id,
                status=InstrumentStatus.CLOSED,
                previous=previous,
            )
        )
        book = self.books[instrument_id]
        for side in (_BUY, _SELL):
            for order in list(book.orders(side)):
                self._cancel(order, reason, out)

    def _clear_auction_conflicts(self, book: OrderBook, out: list[Event]) -> None:
        """Cancel the later of each pair the uncross would match but may not trade.

        A dry run pairs bids and asks in the uncross's own order, changing nothing;
        at the first conflict the later arrival is cancelled and the run starts again.
        """
        while True:
            bids = book.orders(_BUY)
            asks = book.orders(_SELL)
            buy = next(bids, None)
            sell = next(asks, None)
            buy_left = buy.leaves if buy else 0
            sell_left = sell.leaves if sell else 0
            later: Order | None = None
            while buy is not None and sell is not None and buy.price >= sell.price:
                if buy.account == sell.account or self._conflict(buy, sell, buy.owner.related):
                    later = buy if buy.priority > sell.priority else sell
                    break
                qty = buy_left if buy_left < sell_left else sell_left
                buy_left -= qty
                sell_left -= qty
                if not buy_left:
                    buy = next(bids, None)
                    buy_left = buy.leaves if buy else 0
                if not sell_left:
                    sell = next(asks, None)
                    sell_left = sell.leaves if sell else 0
            if later is None:
                return
            self._cancel(later, CancelReason.SELF_TRADE, out)

    def _uncross(self, inst: Instrument, out: list[Event]) -> None:
        """Trade everything crossed at the single uncrossing price (exchange.auction)."""
        instrument_id = inst.spec.instrument_id
        book = self.books[instrument_id]
        # Parties who may not trade give way before the price is set, so every fill
        # is at the published price.
        self._clear_auction_conflicts(book, out)
        reference = inst.last_price or inst.spec.reference_price
        price, _ = uncross_price(book, reference, inst.spec.tick)
        volume = 0
        while book.crossed():
            bid_level = book.bids[book.best_bid]
            ask_level = book.asks[book.best_ask]
            buy = bid_level.front()
            sell = ask_level.front()
            related = buy.owner.related
            if buy.account == sell.account or self._conflict(buy, sell, related):
                # The later arrival gives way.
                later = buy if buy.priority > sell.priority else sell
                self._cancel(later, CancelReason.SELF_TRADE, out)
                continue
            qty = buy.leaves if buy.leaves < sell.leaves else sell.leaves
            at = min(max(price, sell.price), buy.price)
            self._fill(inst, buy, sell, at, qty, None, out, self.now)
            volume += qty
            bid_level.total -= qty
            ask_level.total -= qty
            for order, level in ((buy, bid_level), (sell, ask_level)):
                if not order.leaves:
                    order.live = False
                    level.pop_front()
                    level.count -= 1
                    del self.orders[order.order_id]
                    self._release(order)
                    if not level.count:
                        book.drop_level(order.side, level.price)
        out.append(
            AuctionUncrossed(ts=self.now, instrument_id=instrument_id, price=price, volume=volume)
        )

    # --- accounts and cash -------------------------------------------------------

    def _admit_account(self, c: cmd.AdmitAccount, out: list[Event]) -> None:
        self._require_operator(c.actor)
        if not _valid_id(c.account_id) or c.account_id == cmd.SYSTEM:
            raise _Refused(Reason.INVALID_ID)
        if c.account_id in self.accounts:
            raise _Refused(Reason.DUPLICATE_ID)
        provider = c.role is Role.PROVIDER
        if provider != (c.tier is not None) or provider != bool(c.hub):
            raise _Refused(Reason.INVALID_FLAGS)
        if not 0 <= c.revenue <= MAX_AMOUNT:
            raise _Refused(Reason.INVALID_AMOUNT)
        self.accounts[c.account_id] = Account(
            account_id=c.account_id,
            role=c.role,
            tier=c.tier,
            hub=c.hub,
            revenue=c.revenue,
            projects=list(c.projects),
        )
        out.append(
            AccountAdmitted(
                ts=self.now, account_id=c.account_id, role=c.role, tier=c.tier, hub=c.hub
            )
        )

    def _relate_parties(self, c: cmd.RelateParties, out: list[Event]) -> None:
        self._require_operator(c.actor)
        a = self._account(c.account_a)
        b = self._account(c.account_b)
        if a is b:
            raise _Refused(Reason.INVALID_FLAGS)
        a.related.add(b.account_id)
        b.related.add(a.account_id)
        out.append(PartiesRelated(ts=self.now, account_a=c.account_a, account_b=c.account_b))

    def _deposit(self, c: cmd.Deposit, out: list[Event]) -> None:
        self._require_operator(c.actor)
        account = self._account(c.account_id)
        if not 0 < c.amount <= MAX_AMOUNT or self.deposited + c.amount > MAX_DEPOSITED:
            raise _Refused(Reason.INVALID_AMOUNT)
        account.cash += c.amount
        self.deposited += c.amount
        out.append(
            CashMoved(ts=self.now, account_id=c.account_id, amount=c.amount, cash=account.cash)
        )

    def _withdraw(self, c: cmd.Withdraw, out: list[Event]) -> None:
        self._require_operator(c.actor)
        account = self._account(c.account_id)
        if not 0 < c.amount <= MAX_AMOUNT:
            raise _Refused(Reason.INVALID_AMOUNT)
        if c.amount > account.cash:
            raise _Refused(Reason.INSUFFICIENT_FUNDS)
        account.cash -= c.amount
        self.deposited -= c.amount
        out.append(
            CashMoved(ts=self.now, account_id=c.account_id, amount=-c.amount, cash=account.cash)
        )

    def _register_capacity(self, c: cmd.RegisterCapacity, out: list[Event]) -> None:
        if c.actor != c.provider and not self._is_operator(c.actor):
            raise _Refused(Reason.NOT_PERMITTED)
        provider = self._account(c.provider)
        inst = self._instrument(c.instrument_id)
        spec = inst.spec
        if not 0 < c.gpu_hours <= MAX_AMOUNT:
            raise _Refused(Reason.INVALID_AMOUNT)
        if c.gpu_hours % spec.lot:
            raise _Refused(Reason.OFF_LOT)
        if provider.role is not Role.PROVIDER:
            raise _Refused(Reason.NOT_PERMITTED)
        if provider.tier is not spec.tier or provider.hub != spec.hub:
            raise _Refused(Reason.PROVIDER_MISMATCH)
        if inst.status is InstrumentStatus.CLOSED:
            raise _Refused(Reason.MARKET_NOT_OPEN)
        instrument_id = inst.instrument_id  # the core's own copy (see _new_order)
        position = provider.position(instrument_id)
        if position.free + position.reserved + position.sold + c.gpu_hours > MAX_AMOUNT:
            raise _Refused(Reason.INVALID_AMOUNT)
        position.registered = True
        position.free += c.gpu_hours
        free = position.free
        out.append(
            CapacityRegistered(
                ts=self.now,
                provider=c.provider,
                instrument_id=c.instrument_id,
                gpu_hours=c.gpu_hours,
                capacity=free,
            )
        )

    # --- vouchers --------------------------------------------------------------

    def _create_programme(self, c: cmd.CreateProgramme, out: list[Event]) -> None:
        issuer = self.accounts.get(c.actor)
        if issuer is None or issuer.role is not Role.ISSUER:
            raise _Refused(Reason.NOT_PERMITTED)
        if not _valid_id(c.programme_id) or not c.name:
            raise _Refused(Reason.INVALID_ID)
        if c.programme_id in self.programmes:
            raise _Refused(Reason.DUPLICATE_ID)
        rates = (
            c.rate_state_domestic,
            c.rate_state_foreign,
            c.rate_commercial_domestic,
            c.rate_commercial_foreign,
        )
        if any(not 0 <= r <= BP for r in rates) or not any(rates):
            raise _Refused(Reason.INVALID_RATE)
        if not 0 < c.cap_per_holder_year <= MAX_AMOUNT or not 0 < c.budget <= MAX_AMOUNT:
            raise _Refused(Reason.INVALID_AMOUNT)
        if c.expires_at <= self.now:
            raise _Refused(Reason.INVALID_EXPIRY)
        if c.basis is EligibilityBasis.GOV_PROJECT and not c.projects:
            raise _Refused(Reason.INVALID_FLAGS)
        if not 0 <= c.min_revenue <= MAX_AMOUNT:
            raise _Refused(Reason.INVALID_AMOUNT)
        self.programmes[c.programme_id] = Programme(
            programme_id=c.programme_id,
            issuer=c.actor,
            name=c.name,
            rate_state_domestic=c.rate_state_domestic,
            rate_state_foreign=c.rate_state_foreign,
            rate_commercial_domestic=c.rate_commercial_domestic,
            rate_commercial_foreign=c.rate_commercial_foreign,
            eligible_hubs=list(c.eligible_hubs),
            cap_per_holder_year=c.cap_per_holder_year,
            budget=c.budget,
            expires_at=c.expires_at,
            basis=c.basis,
            min_revenue=c.min_revenue,
            projects=list(c.projects),
        )
        out.append(
            ProgrammeCreated(
                ts=self.now, programme_id=c.programme_id, issuer=c.actor, expires_at=c.expires_at
            )
        )

    def _issue_voucher(self, c: cmd.IssueVoucher, out: list[Event]) -> None:
        programme = self.programmes.get(c.programme_id)
        if programme is None:
            raise _Refused(Reason.UNKNOWN_PROGRAMME)
        if programme.issuer != c.actor:
            raise _Refused(Reason.NOT_PERMITTED)
        if not 0 < c.amount <= MAX_AMOUNT:
            raise _Refused(Reason.INVALID_AMOUNT)
        holder = self._account(c.holder)
        if self.now >= programme.expires_at:
            raise _Refused(Reason.PROGRAMME_EXPIRED)
        if holder.role is not Role.STARTUP:
            raise _Refused(Reason.HOLDER_INELIGIBLE)
        if programme.basis is EligibilityBasis.MIN_REVENUE:
            eligible = holder.revenue >= programme.min_revenue
        else:
            eligible = any(p in holder.projects for p in programme.projects)
        if not eligible:
            raise _Refused(Reason.HOLDER_INELIGIBLE)
        if programme.issued + c.amount > programme.budget:
            raise _Refused(Reason.PROGRAMME_BUDGET_EXCEEDED)
        key = f"{c.holder}/{calendar_year(self.now)}"
        this_year = programme.issued_by_holder_year.get(key, 0)
        if this_year + c.amount > programme.cap_per_holder_year:
            raise _Refused(Reason.PROGRAMME_CAP_EXCEEDED)
        issuer = self.accounts[c.actor]
        if issuer.cash < c.amount:
            raise _Refused(Reason.INSUFFICIENT_FUNDS)
        issuer.cash -= c.amount
        programme.issued += c.amount
        programme.issued_by_holder_year[key] = this_year + c.amount
        voucher_id = self.next_voucher_id
        self.next_voucher_id = voucher_id + 1
        self.vouchers[voucher_id] = Voucher(
            voucher_id=voucher_id,
            programme_id=c.programme_id,
            issuer=c.actor,
            holder=c.holder,
            amount=c.amount,
            expires_at=programme.expires_at,
            issued_at=self.now,
            balance=c.amount,
        )
        out.append(
            VoucherIssued(
                ts=self.now,
                voucher_id=voucher_id,
                programme_id=c.programme_id,
                issuer=c.actor,
                holder=c.holder,
                amount=c.amount,
                expires_at=programme.expires_at,
            )
        )

    def _settle_claim(self, c: cmd.SettleClaim, out: list[Event]) -> None:
        claim = self.claims.get(c.claim_id)
        if claim is None:
            raise _Refused(Reason.UNKNOWN_CLAIM)
        if claim.issuer != c.actor:
            raise _Refused(Reason.NOT_YOUR_CLAIM)
        if claim.settled:
            raise _Refused(Reason.CLAIM_SETTLED)
        claim.settled = True
        claim.settled_at = self.now
        self.accounts[claim.provider].cash += claim.amount
        out.append(
            ClaimSettled(
                ts=self.now,
                claim_id=claim.claim_id,
                issuer=claim.issuer,
                provider=claim.provider,
                amount=claim.amount,
            )
        )

"""A deliberately simple reference model of the exchange, for property tests.

It answers the same commands as ``exchange.core.ExchangeCore`` with the same
events, but is written to be obviously right rather than fast, and shares no
code with the core, the book or the auction:

* Resting orders live in one plain list. The best order is found every time by
  ``min`` over (price, arrival counter); nothing is cached or indexed.
* Money is kept as what each account *owns* (``wallet``: free plus reserved
  cash). What is reserved is never stored on the account: it is the sum of what
  the account's open buy orders hold, so free cash is ``wallet - reserved``.
  Likewise a voucher stores only ``amount`` and ``spent``; its reserved value is
  what open orders hold and its balance is the rest. A provider's free capacity
  is what it registered, minus what it sold, minus the leaves of its open sells.
  An order that stops working therefore releases its reservation simply by
  leaving the list.
* The call auction's price is chosen by trying every candidate price.

Setup commands (``ListInstrument``, ``AdmitAccount``, ``CreateProgramme``) are
taken as given, without validation: the property tests only send valid ones and
compare the events anyway. Everything the state machine drives at random is
checked in the core's documented order of stages (``exchange.reasons``).

Only enums, commands and event types are imported from ``exchange``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from exchange import commands as cmd
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
from exchange.reference import (
    MAX_ID_LEN,
    TRANSITIONS,
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

BASIS_POINTS = 10_000
LARGEST_AMOUNT = 10**15  # fen or GPU-hours in one command; a provider's on an instrument
LARGEST_DEPOSITED = 10**18  # fen deposited on the exchange in all
FOREVER = 2**63 - 1  # ns: an order that only ends with its instrument

BUY, SELL = Side.BUY, Side.SELL
OPEN, AUCTION = InstrumentStatus.OPEN, InstrumentStatus.AUCTION
IMMEDIATE = (TimeInForce.IOC, TimeInForce.FOK)


class Refused(Exception):
    def __init__(self, reason: Reason) -> None:
        self.reason = reason


@dataclass
class RefOrder:
    order_id: int
    account: str
    client_order_id: str
    instrument_id: str
    side: Side
    price: int
    qty: int
    leaves: int
    tif: TimeInForce
    expire_at: int
    post_only: bool
    min_qty: int
    stp: SelfTradePrevention
    voucher_id: int
    rate: int  # basis points, fixed at entry
    cash_reserved: int = 0
    voucher_reserved: int = 0
    cap: int = 0  # voucher value reserved at entry or at the last amend
    value_since_cap: int = 0  # fill value since then
    voucher_since_cap: int = 0  # voucher value used since then
    arrival: int = 0  # set when the order comes to rest


@dataclass
class RefAccount:
    account_id: str
    role: Role
    tier: Tier | None
    hub: str
    revenue: int
    projects: list[str]
    wallet: int = 0  # cash owned: free plus reserved
    related: set[str] = field(default_factory=set)
    client_order_ids: dict[str, int] = field(default_factory=dict)
    registered: dict[str, int] = field(default_factory=dict)  # provider: GPU-hours
    sold: dict[str, int] = field(default_factory=dict)
    holdings: dict[str, int] = field(default_factory=dict)  # start-up: GPU-hours bought


@dataclass
class RefInstrument:
    spec: InstrumentSpec
    status: InstrumentStatus = InstrumentStatus.PRE_OPEN
    last_price: int = 0


@dataclass
class RefProgramme:
    command: cmd.CreateProgramme
    issued: int = 0
    issued_by_holder_year: dict[tuple[str, int], int] = field(default_factory=dict)

    def rate(self, spec: InstrumentSpec) -> int:
        c = self.command
        if spec.tier is Tier.STATE:
            return c.rate_state_domestic if spec.domestic else c.rate_state_foreign
        return c.rate_commercial_domestic if spec.domestic else c.rate_commercial_foreign


@dataclass
class RefVoucher:
    voucher_id: int
    programme_id: str
    issuer: str
    holder: str
    amount: int
    expires_at: int
    spent: int = 0


@dataclass
class RefClaim:
    claim_id: int
    issuer: str
    provider: str
    voucher_id: int
    amount: int
    settled: bool = False


def _is_good_id(value: str) -> bool:
    return 1 <= len(value) <= MAX_ID_LEN and value.isprintable() and value == value.strip()


def _year(ts: int) -> int:
    seconds = ts // 1_000_000_000
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).year


class ReferenceExchange:
    """The exchange, the slow and obvious way."""

    def __init__(self) -> None:
        self.now = 0
        self.instruments: dict[str, RefInstrument] = {}
        self.accounts: dict[str, RefAccount] = {}
        self.orders: list[RefOrder] = []  # resting orders, in no particular order
        self.programmes: dict[str, RefProgramme] = {}
        self.vouchers: dict[int, RefVoucher] = {}
        self.claims: dict[int, RefClaim] = {}
        self.deposited = 0
        self.last_order_id = 0
        self.last_trade_id = 0
        self.last_voucher_id = 0
        self.last_claim_id = 0
        self.last_arrival = 0
        self.out: list[Event] = []

    # --- derived balances ------------------------------------------------------

    def cash_reserved(self, account_id: str, *, excluding: RefOrder | None = None) -> int:
        return sum(
            o.cash_reserved
            for o in self.orders
            if o.account == account_id and o.side is BUY and o is not excluding
        )

    def free_cash(self, account_id: str, *, excluding: RefOrder | None = None) -> int:
        wallet = self.accounts[account_id].wallet
        return wallet - self.cash_reserved(account_id, excluding=excluding)

    def voucher_reserved(self, voucher_id: int, *, excluding: RefOrder | None = None) -> int:
        return sum(
            o.voucher_reserved
            for o in self.orders
            if o.voucher_id == voucher_id and o is not excluding
        )

    def voucher_balance(self, voucher_id: int, *, excluding: RefOrder | None = None) -> int:
        v = self.vouchers[voucher_id]
        return v.amount - v.spent - self.voucher_reserved(voucher_id, excluding=excluding)

    def capacity_reserved(self, provider: str, instrument_id: str) -> int:
        return sum(
            o.leaves
            for o in self.orders
            if o.account == provider and o.instrument_id == instrument_id and o.side is SELL
        )

    def free_capacity(self, provider: str, instrument_id: str) -> int:
        a = self.accounts[provider]
        return (
            a.registered.get(instrument_id, 0)
            - a.sold.get(instrument_id, 0)
            - self.capacity_reserved(provider, instrument_id)
        )

    # --- the book, found by search ------------------------------------------

    def side_in_priority(self, instrument_id: str, side: Side) -> list[RefOrder]:
        """The resting orders of one side, best first."""
        mine = [o for o in self.orders if o.instrument_id == instrument_id and o.side is side]
        if side is BUY:
            return sorted(mine, key=lambda o: (-o.price, o.arrival))
        return sorted(mine, key=lambda o: (o.price, o.arrival))

    def best_price(self, instrument_id: str, side: Side) -> int:
        prices = [
            o.price for o in self.orders if o.instrument_id == instrument_id and o.side is side
        ]
        if not prices:
            return 0
        return max(prices) if side is BUY else min(prices)

    def _crossing(self, order: RefOrder) -> list[RefOrder]:
        """Resting orders on the other side that ``order``'s limit reaches, best first."""
        other = SELL if order.side is BUY else BUY
        if order.side is BUY:
            reach = [
                o
                for o in self.side_in_priority(order.instrument_id, other)
                if o.price <= order.price
            ]
        else:
            reach = [
                o
                for o in self.side_in_priority(order.instrument_id, other)
                if o.price >= order.price
            ]
        return reach

    def _conflicts(self, incoming: RefOrder, resting: RefOrder) -> bool:
        if incoming.account == resting.account:
            return True
        related = resting.account in self.accounts[incoming.account].related
        return related and (incoming.voucher_id != 0 or resting.voucher_id != 0)

    # --- the entry point -------------------------------------------------------

    def apply(self, command: cmd.Command) -> list[Event]:
        self.out = []
        if command.ts > self.now:
            self._pass_time(command.ts)
        handler = getattr(self, "_on_" + type(command).__name__)
        try:
            handler(command)
        except Refused as refusal:
            self.out.append(
                Rejected(
                    ts=self.now,
                    actor=command.actor,
                    command=type(command).__name__,
                    reason=refusal.reason,
                    client_order_id=getattr(command, "client_order_id", ""),
                    order_id=getattr(command, "order_id", 0),
                )
            )
        return self.out

    def _pass_time(self, ts: int) -> None:
        self.now = ts
        due = [
            i
            for i in self.instruments.values()
            if i.spec.delivery_start <= ts and i.status is not InstrumentStatus.CLOSED
        ]
        for inst in sorted(due, key=lambda i: (i.spec.delivery_start, i.spec.instrument_id)):
            self._close(inst, CancelReason.EXPIRED)
        for order in sorted(
            [o for o in self.orders if o.expire_at <= ts], key=lambda o: (o.expire_at, o.order_id)
        ):
            self._take_off(order, CancelReason.EXPIRED)

    def _is_operator(self, actor: str) -> bool:
        if actor == cmd.SYSTEM:
            return True
        a = self.accounts.get(actor)
        return a is not None and a.role is Role.OPERATOR

    def _need_operator(self, actor: str) -> None:
        if not self._is_operator(actor):
            raise Refused(Reason.NOT_PERMITTED)

    def _need_account(self, account_id: str) -> RefAccount:
        if account_id not in self.accounts:
            raise Refused(Reason.UNKNOWN_ACCOUNT)
        return self.accounts[account_id]

    # --- order events ----------------------------------------------------------

    def _cancelled(self, order: RefOrder, reason: CancelReason, rested: bool) -> None:
        self.out.append(
            OrderCancelled(
                ts=self.now,
                order_id=order.order_id,
                account=order.account,
                client_order_id=order.client_order_id,
                instrument_id=order.instrument_id,
                side=order.side,
                price=order.price,
                leaves=order.leaves,
                reason=reason,
                rested=rested,
            )
        )
        order.leaves = 0

    def _take_off(self, order: RefOrder, reason: CancelReason) -> None:
        """Cancel a resting order; leaving the list frees what it held."""
        self.orders.remove(order)
        self._cancelled(order, reason, rested=True)

    def _rest_or_end(self, order: RefOrder) -> None:
        if order.leaves == 0:
            return
        if order.tif in IMMEDIATE:
            self._cancelled(order, CancelReason.IOC_REMAINDER, rested=False)
            return
        self.last_arrival += 1
        order.arrival = self.last_arrival
        self.orders.append(order)

    # --- new orders ------------------------------------------------------------

    def _on_NewOrder(self, c: cmd.NewOrder) -> None:
        account = self._need_account(c.actor)
        if c.instrument_id not in self.instruments:
            raise Refused(Reason.UNKNOWN_INSTRUMENT)
        inst = self.instruments[c.instrument_id]
        spec = inst.spec
        # validation
        if c.qty < 1 or c.qty > spec.max_qty:
            raise Refused(Reason.INVALID_QUANTITY)
        if c.qty % spec.lot != 0:
            raise Refused(Reason.OFF_LOT)
        is_market = c.order_type is OrderType.MARKET
        if is_market:
            if c.price != 0:
                raise Refused(Reason.INVALID_PRICE)
            if c.tif not in IMMEDIATE:
                raise Refused(Reason.INVALID_TIME_IN_FORCE)
            if c.post_only:
                raise Refused(Reason.INVALID_FLAGS)
        else:
            if c.price < 1 or c.price > spec.max_price:
                raise Refused(Reason.INVALID_PRICE)
            if c.price % spec.tick != 0:
                raise Refused(Reason.OFF_TICK)
            if c.post_only and (c.tif in IMMEDIATE or c.min_qty != 0):
                raise Refused(Reason.INVALID_FLAGS)
        if c.tif is TimeInForce.GTD:
            if c.expire_at <= self.now:
                raise Refused(Reason.INVALID_EXPIRY)
        elif c.expire_at != 0:
            raise Refused(Reason.INVALID_EXPIRY)
        if c.min_qty != 0 and not (0 < c.min_qty <= c.qty and c.min_qty % spec.lot == 0):
            raise Refused(Reason.INVALID_MIN_QTY)
        if c.side is SELL and c.voucher_id != 0:
            raise Refused(Reason.INVALID_FLAGS)
        if not _is_good_id(c.client_order_id):
            raise Refused(Reason.INVALID_ID)
        # reference and permission
        if account.role is not (Role.STARTUP if c.side is BUY else Role.PROVIDER):
            raise Refused(Reason.NOT_PERMITTED)
        if c.client_order_id in account.client_order_ids:
            raise Refused(Reason.DUPLICATE_CLIENT_ORDER_ID)
        if inst.status is AUCTION:
            if is_market or c.tif in IMMEDIATE or c.min_qty != 0:
                raise Refused(Reason.NOT_ALLOWED_IN_AUCTION)
        elif inst.status is InstrumentStatus.HALTED:
            raise Refused(Reason.MARKET_HALTED)
        elif inst.status is not OPEN:
            raise Refused(Reason.MARKET_NOT_OPEN)
        # matching checks that change nothing
        other = SELL if c.side is BUY else BUY
        price = c.price
        if is_market:
            price = 0
            reached = 0
            for o in self.side_in_priority(c.instrument_id, other):
                price = o.price
                reached += o.leaves
                if reached >= c.qty:
                    break
            if price == 0:
                raise Refused(Reason.NO_LIQUIDITY)
        elif c.post_only and inst.status is OPEN:
            best = self.best_price(c.instrument_id, other)
            if best and (price >= best if c.side is BUY else price <= best):
                raise Refused(Reason.POST_ONLY_WOULD_CROSS)
        # risk
        expire_at = c.expire_at if c.tif is TimeInForce.GTD else FOREVER
        rate = cap = cash = 0
        if c.side is BUY:
            value = price * c.qty
            if c.voucher_id:
                voucher = self.vouchers.get(c.voucher_id)
                if voucher is None:
                    raise Refused(Reason.UNKNOWN_VOUCHER)
                if voucher.holder != c.actor:
                    raise Refused(Reason.NOT_YOUR_VOUCHER)
                if self.now >= voucher.expires_at:
                    raise Refused(Reason.VOUCHER_EXPIRED)
                programme = self.programmes[voucher.programme_id]
                rate = programme.rate(spec)
                hubs = programme.command.eligible_hubs
                if rate == 0 or (hubs and spec.hub not in hubs):
                    raise Refused(Reason.VOUCHER_INELIGIBLE)
                cap = min(self.voucher_balance(c.voucher_id), value * rate // BASIS_POINTS)
                expire_at = min(expire_at, voucher.expires_at)
            cash = value - cap
            if self.free_cash(c.actor) < cash:
                raise Refused(Reason.INSUFFICIENT_FUNDS)
        elif self.free_capacity(c.actor, c.instrument_id) < c.qty:
            raise Refused(Reason.INSUFFICIENT_CAPACITY)
        # accepted
        if expire_at >= spec.delivery_start:
            expire_at = FOREVER
        self.last_order_id += 1
        order = RefOrder(
            order_id=self.last_order_id,
            account=c.actor,
            client_order_id=c.client_order_id,
            instrument_id=c.instrument_id,
            side=c.side,
            price=price,
            qty=c.qty,
            leaves=c.qty,
            tif=c.tif,
            expire_at=expire_at,
            post_only=c.post_only,
            min_qty=c.min_qty,
            stp=c.stp,
            voucher_id=c.voucher_id,
            rate=rate,
            cash_reserved=cash,
            voucher_reserved=cap,
            cap=cap,
        )
        account.client_order_ids[c.client_order_id] = order.order_id
        self.out.append(
            OrderAccepted(
                ts=self.now,
                order_id=order.order_id,
                account=c.actor,
                client_order_id=c.client_order_id,
                instrument_id=c.instrument_id,
                side=c.side,
                order_type=c.order_type,
                tif=c.tif,
                price=price,
                qty=c.qty,
                expire_at=expire_at,
                post_only=c.post_only,
                min_qty=c.min_qty,
                voucher_id=c.voucher_id,
                cash_reserved=cash,
                voucher_reserved=cap,
            )
        )
        if inst.status is OPEN:
            need = c.qty if c.tif is TimeInForce.FOK else c.min_qty
            if need and self._available(order, need) < need:
                why = (
                    CancelReason.FOK_UNFILLED
                    if c.tif is TimeInForce.FOK
                    else CancelReason.MIN_QTY_UNMET
                )
                self._cancelled(order, why, rested=False)
                return
            self._trade_through(inst, order)
        self._rest_or_end(order)

    def _available(self, order: RefOrder, need: int) -> int:
        """How much ``order`` could fill at once, counting up to ``need``."""
        got = 0
        for resting in self._crossing(order):
            if self._conflicts(order, resting):
                if (
                    order.stp is SelfTradePrevention.CANCEL_RESTING
                    and resting.account == order.account
                ):
                    continue  # it would be cancelled and matching would go on
                return got
            got += resting.leaves
            if got >= need:
                break
        return got

    def _trade_through(self, inst: RefInstrument, order: RefOrder) -> None:
        """Continuous matching: fill against the best resting order until nothing crosses."""
        while order.leaves:
            reach = self._crossing(order)
            if not reach:
                return
            resting = reach[0]
            if self._conflicts(order, resting):
                if resting.account != order.account:
                    # Another account's order is never cancelled for this one's sake.
                    self._cancelled(order, CancelReason.SELF_TRADE, rested=False)
                    return
                if order.stp is not SelfTradePrevention.CANCEL_AGGRESSOR:
                    self._take_off(resting, CancelReason.SELF_TRADE)
                if order.stp is not SelfTradePrevention.CANCEL_RESTING:
                    self._cancelled(order, CancelReason.SELF_TRADE, rested=False)
                    return
                continue
            qty = min(order.leaves, resting.leaves)
            if order.side is BUY:
                self._settle(inst, order, resting, resting.price, qty, BUY)
            else:
                self._settle(inst, resting, order, resting.price, qty, SELL)
            if resting.leaves == 0:
                self.orders.remove(resting)

    def _settle(
        self,
        inst: RefInstrument,
        buy: RefOrder,
        sell: RefOrder,
        price: int,
        qty: int,
        aggressor: Side | None,
    ) -> None:
        value = price * qty
        buy.leaves -= qty
        sell.leaves -= qty
        voucher_part = 0
        claim_id = 0
        if buy.voucher_id:
            value_after = buy.value_since_cap + value
            used_after = min(buy.cap, value_after * buy.rate // BASIS_POINTS)
            voucher_part = used_after - buy.voucher_since_cap
            buy.value_since_cap = value_after
            buy.voucher_since_cap = used_after
        self.last_trade_id += 1
        if voucher_part:
            voucher = self.vouchers[buy.voucher_id]
            buy.voucher_reserved -= voucher_part
            voucher.spent += voucher_part
            self.last_claim_id += 1
            claim_id = self.last_claim_id
            self.claims[claim_id] = RefClaim(
                claim_id=claim_id,
                issuer=voucher.issuer,
                provider=sell.account,
                voucher_id=voucher.voucher_id,
                amount=voucher_part,
            )
        cash = value - voucher_part
        buy.cash_reserved -= cash
        buyer = self.accounts[buy.account]
        seller = self.accounts[sell.account]
        buyer.wallet -= cash
        seller.wallet += cash
        iid = inst.spec.instrument_id
        seller.sold[iid] = seller.sold.get(iid, 0) + qty
        buyer.holdings[iid] = buyer.holdings.get(iid, 0) + qty
        inst.last_price = price
        self.out.append(
            Trade(
                ts=self.now,
                trade_id=self.last_trade_id,
                instrument_id=iid,
                price=price,
                qty=qty,
                aggressor=aggressor,
                buy_order_id=buy.order_id,
                sell_order_id=sell.order_id,
                buyer=buy.account,
                seller=sell.account,
                buy_leaves=buy.leaves,
                sell_leaves=sell.leaves,
                cash=cash,
                voucher=voucher_part,
                voucher_id=buy.voucher_id,
                claim_id=claim_id,
            )
        )

    # --- cancel and amend ------------------------------------------------------

    def _named_order(self, actor: str, order_id: int, client_order_id: str) -> RefOrder:
        if order_id:
            wanted = order_id
        else:
            account = self.accounts.get(actor)
            wanted = account.client_order_ids.get(client_order_id, 0) if account else 0
        for o in self.orders:
            if o.order_id == wanted:
                return o
        raise Refused(Reason.UNKNOWN_ORDER)

    def _on_CancelOrder(self, c: cmd.CancelOrder) -> None:
        order = self._named_order(c.actor, c.order_id, c.client_order_id)
        if order.account == c.actor:
            self._take_off(order, CancelReason.REQUESTED)
        elif self._is_operator(c.actor):
            self._take_off(order, CancelReason.OPERATOR)
        else:
            raise Refused(Reason.NOT_YOUR_ORDER)

    def _on_CancelAll(self, c: cmd.CancelAll) -> None:
        if c.instrument_id and c.instrument_id not in self.instruments:
            raise Refused(Reason.UNKNOWN_INSTRUMENT)
        if c.instrument_id and self._is_operator(c.actor):
            targets = [o for o in self.orders if o.instrument_id == c.instrument_id]
            why = CancelReason.OPERATOR
        elif c.actor in self.accounts:
            targets = [
                o
                for o in self.orders
                if o.account == c.actor and c.instrument_id in ("", o.instrument_id)
            ]
            why = CancelReason.MASS_CANCEL
        else:
            raise Refused(Reason.NOT_PERMITTED)
        for order in sorted(targets, key=lambda o: o.order_id):
            self._take_off(order, why)

    def _on_AmendOrder(self, c: cmd.AmendOrder) -> None:
        order = self._named_order(c.actor, c.order_id, c.client_order_id)
        if order.account != c.actor:
            raise Refused(Reason.NOT_YOUR_ORDER)
        inst = self.instruments[order.instrument_id]
        spec = inst.spec
        filled = order.qty - order.leaves
        qty = order.qty if c.qty is None else c.qty
        price = order.price if c.price is None else c.price
        if not filled < qty <= spec.max_qty:
            raise Refused(Reason.INVALID_QUANTITY)
        if qty % spec.lot != 0:
            raise Refused(Reason.OFF_LOT)
        if not 0 < price <= spec.max_price:
            raise Refused(Reason.INVALID_PRICE)
        if price % spec.tick != 0:
            raise Refused(Reason.OFF_TICK)
        if inst.status is InstrumentStatus.HALTED and (price != order.price or qty >= order.qty):
            raise Refused(Reason.MARKET_HALTED)  # halted: only a reduction at the same price
        leaves = qty - filled
        loses_place = price != order.price or leaves > order.leaves
        other = SELL if order.side is BUY else BUY
        if order.post_only and loses_place and inst.status is OPEN:
            best = self.best_price(order.instrument_id, other)
            if best and (price >= best if order.side is BUY else price <= best):
                raise Refused(Reason.POST_ONLY_WOULD_CROSS)
        if order.side is BUY:
            value = price * leaves
            cap = 0
            if order.voucher_id:
                spare = self.voucher_balance(order.voucher_id, excluding=order)
                cap = min(spare, value * order.rate // BASIS_POINTS)
            cash = value - cap
            if self.free_cash(order.account, excluding=order) < cash:
                raise Refused(Reason.INSUFFICIENT_FUNDS)
            order.cash_reserved = cash
            order.voucher_reserved = order.cap = cap
            order.value_since_cap = order.voucher_since_cap = 0
        elif leaves - order.leaves > self.free_capacity(order.account, order.instrument_id):
            raise Refused(Reason.INSUFFICIENT_CAPACITY)
        if loses_place:
            self.orders.remove(order)
        order.price = price
        order.qty = qty
        order.leaves = leaves
        self.out.append(
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
                requeued=loses_place,
                cash_reserved=order.cash_reserved,
                voucher_reserved=order.voucher_reserved,
            )
        )
        if loses_place:
            if inst.status is OPEN:
                self._trade_through(inst, order)
            self._rest_or_end(order)

    # --- instruments -----------------------------------------------------------

    def _on_ListInstrument(self, c: cmd.ListInstrument) -> None:
        self.instruments[c.spec.instrument_id] = RefInstrument(spec=c.spec)
        self.out.append(InstrumentListed(ts=self.now, spec=c.spec))

    def _on_SetInstrumentStatus(self, c: cmd.SetInstrumentStatus) -> None:
        self._need_operator(c.actor)
        inst = self.instruments.get(c.instrument_id)
        if inst is None:
            raise Refused(Reason.UNKNOWN_INSTRUMENT)
        before = inst.status
        if c.status not in TRANSITIONS[before]:
            raise Refused(Reason.INVALID_TRANSITION)
        if c.status is InstrumentStatus.CLOSED:
            self._close(inst, CancelReason.MARKET_CLOSED)
            return
        inst.status = c.status
        self.out.append(
            InstrumentStatusChanged(
                ts=self.now, instrument_id=c.instrument_id, status=c.status, previous=before
            )
        )
        if c.status is OPEN and (before is AUCTION or self._crossed(c.instrument_id)):
            self._uncross(inst)  # also a call that was halted before it uncrossed

    def _close(self, inst: RefInstrument, why: CancelReason) -> None:
        before = inst.status
        inst.status = InstrumentStatus.CLOSED
        iid = inst.spec.instrument_id
        self.out.append(
            InstrumentStatusChanged(
                ts=self.now, instrument_id=iid, status=InstrumentStatus.CLOSED, previous=before
            )
        )
        for side in (BUY, SELL):
            for order in self.side_in_priority(iid, side):
                self._take_off(order, why)

    def auction_price(self, instrument_id: str, reference: int) -> tuple[int, int]:
        """(price, volume), trying every tick from best ask to best bid; (0, 0) if uncrossed."""
        bids = self.side_in_priority(instrument_id, BUY)
        asks = self.side_in_priority(instrument_id, SELL)
        if not bids or not asks or bids[0].price < asks[0].price:
            return 0, 0
        low, high = asks[0].price, bids[0].price
        tick = self.instruments[instrument_id].spec.tick
        best: tuple[int, int, int, int] | None = None
        for p in range(low, high + 1, tick):
            demand = sum(o.leaves for o in bids if o.price >= p)
            supply = sum(o.leaves for o in asks if o.price <= p)
            distance = abs(p - reference) if reference else 0
            key = (-min(demand, supply), abs(demand - supply), distance, p)
            if best is None or key < best:
                best = key
        assert best is not None
        return best[3], -best[0]

    def _crossed(self, instrument_id: str) -> bool:
        bid = self.best_price(instrument_id, BUY)
        ask = self.best_price(instrument_id, SELL)
        return bool(bid and ask and bid >= ask)

    def _first_auction_conflict(self, instrument_id: str) -> RefOrder | None:
        """Pair bids with asks as the uncross would, on paper; the later of the first
        pair that may not trade, or None."""
        bids = self.side_in_priority(instrument_id, BUY)
        asks = self.side_in_priority(instrument_id, SELL)
        left = {o.order_id: o.leaves for o in bids + asks}
        while bids and asks and bids[0].price >= asks[0].price:
            buy, sell = bids[0], asks[0]
            if self._conflicts(buy, sell):
                return buy if buy.arrival > sell.arrival else sell
            qty = min(left[buy.order_id], left[sell.order_id])
            left[buy.order_id] -= qty
            left[sell.order_id] -= qty
            if left[buy.order_id] == 0:
                bids.pop(0)
            if left[sell.order_id] == 0:
                asks.pop(0)
        return None

    def _uncross(self, inst: RefInstrument) -> None:
        iid = inst.spec.instrument_id
        # Parties who may not trade give way first, so the price is set without them.
        while (later := self._first_auction_conflict(iid)) is not None:
            self._take_off(later, CancelReason.SELF_TRADE)
        price, _ = self.auction_price(iid, inst.last_price or inst.spec.reference_price)
        volume = 0
        while True:
            bids = self.side_in_priority(iid, BUY)
            asks = self.side_in_priority(iid, SELL)
            if not bids or not asks or bids[0].price < asks[0].price:
                break
            buy, sell = bids[0], asks[0]
            if self._conflicts(buy, sell):
                self._take_off(buy if buy.arrival > sell.arrival else sell, CancelReason.SELF_TRADE)
                continue
            qty = min(buy.leaves, sell.leaves)
            at = min(max(price, sell.price), buy.price)
            self._settle(inst, buy, sell, at, qty, None)
            volume += qty
            for order in (buy, sell):
                if order.leaves == 0:
                    self.orders.remove(order)
        self.out.append(
            AuctionUncrossed(ts=self.now, instrument_id=iid, price=price, volume=volume)
        )

    # --- accounts, cash and capacity ------------------------------------------

    def _on_AdmitAccount(self, c: cmd.AdmitAccount) -> None:
        self.accounts[c.account_id] = RefAccount(
            account_id=c.account_id,
            role=c.role,
            tier=c.tier,
            hub=c.hub,
            revenue=c.revenue,
            projects=list(c.projects),
        )
        self.out.append(
            AccountAdmitted(
                ts=self.now, account_id=c.account_id, role=c.role, tier=c.tier, hub=c.hub
            )
        )

    def _on_RelateParties(self, c: cmd.RelateParties) -> None:
        self._need_operator(c.actor)
        a = self._need_account(c.account_a)
        b = self._need_account(c.account_b)
        if a is b:
            raise Refused(Reason.INVALID_FLAGS)
        a.related.add(b.account_id)
        b.related.add(a.account_id)
        self.out.append(PartiesRelated(ts=self.now, account_a=c.account_a, account_b=c.account_b))

    def _on_Deposit(self, c: cmd.Deposit) -> None:
        self._need_operator(c.actor)
        account = self._need_account(c.account_id)
        if not 0 < c.amount <= LARGEST_AMOUNT or self.deposited + c.amount > LARGEST_DEPOSITED:
            raise Refused(Reason.INVALID_AMOUNT)
        account.wallet += c.amount
        self.deposited += c.amount
        self.out.append(
            CashMoved(
                ts=self.now,
                account_id=c.account_id,
                amount=c.amount,
                cash=self.free_cash(c.account_id),
            )
        )

    def _on_Withdraw(self, c: cmd.Withdraw) -> None:
        self._need_operator(c.actor)
        account = self._need_account(c.account_id)
        if not 0 < c.amount <= LARGEST_AMOUNT:
            raise Refused(Reason.INVALID_AMOUNT)
        if c.amount > self.free_cash(c.account_id):
            raise Refused(Reason.INSUFFICIENT_FUNDS)
        account.wallet -= c.amount
        self.deposited -= c.amount
        self.out.append(
            CashMoved(
                ts=self.now,
                account_id=c.account_id,
                amount=-c.amount,
                cash=self.free_cash(c.account_id),
            )
        )

    def _on_RegisterCapacity(self, c: cmd.RegisterCapacity) -> None:
        if c.actor != c.provider and not self._is_operator(c.actor):
            raise Refused(Reason.NOT_PERMITTED)
        provider = self._need_account(c.provider)
        inst = self.instruments.get(c.instrument_id)
        if inst is None:
            raise Refused(Reason.UNKNOWN_INSTRUMENT)
        if not 0 < c.gpu_hours <= LARGEST_AMOUNT:
            raise Refused(Reason.INVALID_AMOUNT)
        if c.gpu_hours % inst.spec.lot != 0:
            raise Refused(Reason.OFF_LOT)
        if provider.role is not Role.PROVIDER:
            raise Refused(Reason.NOT_PERMITTED)
        if provider.tier is not inst.spec.tier or provider.hub != inst.spec.hub:
            raise Refused(Reason.PROVIDER_MISMATCH)
        if inst.status is InstrumentStatus.CLOSED:
            raise Refused(Reason.MARKET_NOT_OPEN)
        iid = c.instrument_id
        if provider.registered.get(iid, 0) + c.gpu_hours > LARGEST_AMOUNT:
            raise Refused(Reason.INVALID_AMOUNT)
        provider.registered[iid] = provider.registered.get(iid, 0) + c.gpu_hours
        self.out.append(
            CapacityRegistered(
                ts=self.now,
                provider=c.provider,
                instrument_id=iid,
                gpu_hours=c.gpu_hours,
                capacity=self.free_capacity(c.provider, iid),
            )
        )

    # --- vouchers --------------------------------------------------------------

    def _on_CreateProgramme(self, c: cmd.CreateProgramme) -> None:
        self.programmes[c.programme_id] = RefProgramme(command=c)
        self.out.append(
            ProgrammeCreated(
                ts=self.now, programme_id=c.programme_id, issuer=c.actor, expires_at=c.expires_at
            )
        )

    def _on_IssueVoucher(self, c: cmd.IssueVoucher) -> None:
        programme = self.programmes.get(c.programme_id)
        if programme is None:
            raise Refused(Reason.UNKNOWN_PROGRAMME)
        terms = programme.command
        if terms.actor != c.actor:
            raise Refused(Reason.NOT_PERMITTED)
        if not 0 < c.amount <= LARGEST_AMOUNT:
            raise Refused(Reason.INVALID_AMOUNT)
        holder = self._need_account(c.holder)
        if self.now >= terms.expires_at:
            raise Refused(Reason.PROGRAMME_EXPIRED)
        if holder.role is not Role.STARTUP:
            raise Refused(Reason.HOLDER_INELIGIBLE)
        if terms.basis is EligibilityBasis.MIN_REVENUE:
            eligible = holder.revenue >= terms.min_revenue
        else:
            eligible = bool(set(holder.projects) & set(terms.projects))
        if not eligible:
            raise Refused(Reason.HOLDER_INELIGIBLE)
        if programme.issued + c.amount > terms.budget:
            raise Refused(Reason.PROGRAMME_BUDGET_EXCEEDED)
        key = (c.holder, _year(self.now))
        if programme.issued_by_holder_year.get(key, 0) + c.amount > terms.cap_per_holder_year:
            raise Refused(Reason.PROGRAMME_CAP_EXCEEDED)
        if self.free_cash(c.actor) < c.amount:
            raise Refused(Reason.INSUFFICIENT_FUNDS)
        self.accounts[c.actor].wallet -= c.amount
        programme.issued += c.amount
        programme.issued_by_holder_year[key] = (
            programme.issued_by_holder_year.get(key, 0) + c.amount
        )
        self.last_voucher_id += 1
        self.vouchers[self.last_voucher_id] = RefVoucher(
            voucher_id=self.last_voucher_id,
            programme_id=c.programme_id,
            issuer=c.actor,
            holder=c.holder,
            amount=c.amount,
            expires_at=terms.expires_at,
        )
        self.out.append(
            VoucherIssued(
                ts=self.now,
                voucher_id=self.last_voucher_id,
                programme_id=c.programme_id,
                issuer=c.actor,
                holder=c.holder,
                amount=c.amount,
                expires_at=terms.expires_at,
            )
        )

    def _on_SettleClaim(self, c: cmd.SettleClaim) -> None:
        claim = self.claims.get(c.claim_id)
        if claim is None:
            raise Refused(Reason.UNKNOWN_CLAIM)
        if claim.issuer != c.actor:
            raise Refused(Reason.NOT_YOUR_CLAIM)
        if claim.settled:
            raise Refused(Reason.CLAIM_SETTLED)
        claim.settled = True
        self.accounts[claim.provider].wallet += claim.amount
        self.out.append(
            ClaimSettled(
                ts=self.now,
                claim_id=claim.claim_id,
                issuer=claim.issuer,
                provider=claim.provider,
                amount=claim.amount,
            )
        )

    # --- time ------------------------------------------------------------------

    def _on_AdvanceClock(self, c: cmd.AdvanceClock) -> None:
        self._need_operator(c.actor)

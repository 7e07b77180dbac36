"""From the exchange's events to the right connections, in sequence order.

The router is the service's one listener. For each command the service
applies, in sequence order, it turns the events into wire messages and queues
them on the sessions that may see them:

* execution reports to every connection of the order's account (and to
  operators watching the ``orders`` channel);
* contracts and claims to the connections of their accounts that subscribed
  to the ``private`` channel, and claims (and vouchers, below) to the
  ``vouchers`` channel: operators' connections get every one, issuers' those
  of their own programmes; a connection on both channels gets each once;
* public trades and instrument status changes to their subscribers;
* and, after each batch, the latest balance and vouchers of each account it
  touched (one message each to ``private`` subscribers, however many commands
  touched them), and book updates and tickers of the instruments it touched.

Every message goes out from here, so a client never sees a fill before the
acknowledgement of its order. The answer to a request must carry the request's
``id``: ``submit`` posts the command to the service with an ``Origin`` (the
session and the request), and the service gives it back to the listener with
the command's events. A command the service could not apply (journal failed,
integer too large, a fault) never reaches the listener; the service hands it
to ``on_failure``, which answers the request with an ``error``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import structlog

from exchange import commands as cmd
from exchange.core import ExchangeCore
from exchange.events import (
    AccountAdmitted,
    CapacityRegistered,
    CashMoved,
    ClaimSettled,
    Event,
    InstrumentListed,
    InstrumentStatusChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    ProgrammeCreated,
    Rejected,
    Trade,
    VoucherIssued,
)
from exchange.reference import Role
from exchange.service import ExchangeService, InvalidCommand, ServiceStopped
from gateway import protocol as p
from gateway.marketdata import MarketData
from gateway.metrics import Metrics
from gateway.orders import OrderRegister, limit_text, report
from gateway.session import Session

log = structlog.get_logger("gateway.router")

_ORDER_COMMANDS = (cmd.CancelOrder, cmd.AmendOrder, cmd.CancelAll)
_MANY_EVENTS = 16  # a command with more events than this is answered as a reply
_REPORTED = frozenset({cmd.NewOrder, cmd.CancelOrder, cmd.AmendOrder})  # answered by reports
# Commands whose requester gets its copy of the reports: order entry. An operator
# who halts, uncrosses or closes a market is answered by an ack; the reports go to
# the accounts and to the ``orders`` channel.
_ORDER_ENTRY = frozenset({*_REPORTED, cmd.CancelAll})
_ORDERS = (p.Channel.ORDERS, "")
_OPERATOR = Role.OPERATOR
_replace = msgspec.structs.replace
_encode = p.encode
_TRADES = p.Channel.TRADES
_ACCOUNTS = (p.Channel.ACCOUNTS, "")


Origin = tuple[Session, p.Request]
"""A request waiting for the events of its command, and the connection that sent it
(a plain tuple: one is made per order)."""


def _request_name(request: p.Request) -> str:
    return str(request.__struct_config__.tag)


def _leave(groups: dict[str, set[Session]], key: str, session: Session) -> None:
    """Take ``session`` out of ``groups[key]``, and the group out when it empties."""
    sessions = groups.get(key)
    if sessions is not None:
        sessions.discard(session)
        if not sessions:
            del groups[key]


class Router:
    """Sessions, subscriptions, and the listener that feeds them."""

    def __init__(
        self,
        service: ExchangeService,
        marketdata: MarketData,
        register: OrderRegister,
        metrics: Metrics,
    ) -> None:
        self.service = service
        self.core: ExchangeCore = service.core
        self.marketdata = marketdata
        self.register = register
        self.metrics = metrics
        self.sessions: dict[int, Session] = {}
        self.by_account: dict[str, set[Session]] = {}
        self.subscribers: dict[tuple[p.Channel, str], set[Session]] = {}
        # Looked at for every report and every command: bound once (a channel's
        # set of subscribers, once made, is kept however many leave it).
        self.order_watchers = self.subscribers.setdefault(_ORDERS, set())
        self.balance_watchers = self.subscribers.setdefault(_ACCOUNTS, set())
        self.private: dict[str, set[Session]] = {}  # account -> its sessions on `private`
        # Sessions on `vouchers`: issuer account -> its sessions; "" -> operators' (see all).
        self.voucher_watchers: dict[str, set[Session]] = {}
        self.touched: set[str] = set()  # instruments whose book or ticker may have changed
        self.dirty_accounts: set[str] = set()  # balances to publish after the batch
        self.dirty_vouchers: set[int] = set()
        self.pending_out: list[Session] = []  # sessions with output to write after the batch
        self._flush_handle: asyncio.Handle | None = None
        service.add_origin_listener(self.on_command)
        service.add_failure_listener(self.on_failure)
        service.add_batch_listener(self.on_batch)

    # --- sessions ------------------------------------------------------------------

    def notify(self, session: Session) -> None:
        """A session has output queued (``on_pending``): write it at the end of the
        current batch (``on_batch``), or soon if no batch is being applied."""
        self.pending_out.append(session)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def attach(self, session: Session) -> None:
        self.sessions[session.conn_id] = session

    def authenticated(self, session: Session) -> None:
        """A session logged in: its reports, and its private channel, start now.

        Every authenticated connection starts on the ``private`` channel (with no
        snapshot); a connection that only enters orders may unsubscribe from it.
        """
        assert session.principal is not None
        account_id = session.principal.account_id
        self.by_account.setdefault(account_id, set()).add(session)
        session.subscriptions.add((p.Channel.PRIVATE, ""))
        self.private.setdefault(account_id, set()).add(session)

    def detach(self, session: Session) -> None:
        self.sessions.pop(session.conn_id, None)
        if session.principal is not None:
            sessions = self.by_account.get(session.principal.account_id)
            if sessions is not None:
                sessions.discard(session)
                if not sessions:
                    del self.by_account[session.principal.account_id]
        for channel, instrument_id in list(session.subscriptions):
            self.unsubscribe(session, channel, instrument_id)

    def subscribe(self, session: Session, channel: p.Channel, instrument_id: str) -> None:
        """Add a subscription; queue its snapshot (the state the next update follows).

        The snapshot is a reply the client asked for: however large, it does not
        make a reading client a slow consumer (``Session.reply``).
        """
        with session.reply():
            self._subscribe(session, channel, instrument_id)

    def _subscribe(self, session: Session, channel: p.Channel, instrument_id: str) -> None:
        key = (channel, instrument_id)
        session.subscriptions.add(key)
        if channel is p.Channel.PRIVATE:
            assert session.principal is not None
            self._subscribe_private(session, session.principal.account_id)
            return
        if channel is p.Channel.VOUCHERS:
            self._subscribe_vouchers(session)
            return
        self.subscribers.setdefault(key, set()).add(session)
        md = self.marketdata
        match channel:
            case p.Channel.BOOK:
                session.send_book_snapshot(instrument_id, md.snapshot_bytes(instrument_id))
            case p.Channel.TICKER:
                ticker = md.ticker(instrument_id, self.core.now)
                session.send_ticker_snapshot(instrument_id, _encode(ticker))
            case p.Channel.STATUS:
                for inst in self.core.instruments.values():
                    session.send_message(p.InstrumentInfo(spec=inst.spec, status=inst.status))
            case p.Channel.ORDERS:
                for state in self.register.open_orders(None):
                    session.send_message(report(state, p.ExecType.ORDER_STATUS))
            case p.Channel.ACCOUNTS:
                for account_id in sorted(self.core.accounts):
                    session.send_message(self.balance(account_id))
            case _:
                pass

    def _subscribe_private(self, session: Session, account_id: str) -> None:
        """Balance, vouchers and open claims now; every change from now on."""
        self.private.setdefault(account_id, set()).add(session)
        core = self.core
        if account_id in core.accounts:
            session.send_message(self.balance(account_id))
        for voucher in core.vouchers.values():
            if account_id in (voucher.holder, voucher.issuer):
                session.send_message(self.voucher(voucher.voucher_id))
        for claim in core.claims.values():
            if not claim.settled and account_id in (claim.provider, claim.issuer):
                session.send_message(self.claim(claim.claim_id))

    @staticmethod
    def _voucher_scope(session: Session) -> str:
        """Whose vouchers a session on ``vouchers`` sees: "" (every issuer's) for an
        operator, else its own account's (an issuer's)."""
        principal = session.principal
        assert principal is not None
        return "" if principal.role is _OPERATOR else principal.account_id

    def _subscribe_vouchers(self, session: Session) -> None:
        """Every voucher and claim in the session's scope now, settled claims too;
        every change from now on."""
        scope = self._voucher_scope(session)
        self.voucher_watchers.setdefault(scope, set()).add(session)
        core = self.core
        for voucher_id in sorted(core.vouchers):
            if not scope or core.vouchers[voucher_id].issuer == scope:
                session.send_message(self.voucher(voucher_id))
        for claim_id in sorted(core.claims):
            if not scope or core.claims[claim_id].issuer == scope:
                session.send_message(self.claim(claim_id))

    def unsubscribe(self, session: Session, channel: p.Channel, instrument_id: str) -> bool:
        key = (channel, instrument_id)
        if key not in session.subscriptions:
            return False
        session.subscriptions.discard(key)
        if channel is p.Channel.PRIVATE:
            assert session.principal is not None
            _leave(self.private, session.principal.account_id, session)
            return True
        if channel is p.Channel.VOUCHERS:
            _leave(self.voucher_watchers, self._voucher_scope(session), session)
            return True
        subscribers = self.subscribers.get(key)
        if subscribers is not None:
            subscribers.discard(session)
        return True

    # --- requests --------------------------------------------------------------------

    def submit(self, session: Session, request: p.Request, command: cmd.Command) -> None:
        """Send a command to the exchange; its answer reaches ``session`` from the listener."""
        try:
            self.service.post(command, (session, request))
        except ServiceStopped as exc:
            session.send_message(
                p.Error(id=request.id, code=p.ErrorCode.UNAVAILABLE, text=str(exc))
            )

    def on_failure(self, command: cmd.Command, exc: BaseException, origin: Origin | None) -> None:
        """Answer a command the exchange did not apply (the service's failure listener).

        An applied command is answered by ``on_command``.
        """
        if origin is None:
            return
        session, request = origin
        request_id = request.id
        if isinstance(exc, ServiceStopped):
            error = p.Error(id=request_id, code=p.ErrorCode.UNAVAILABLE, text=str(exc))
        elif isinstance(exc, InvalidCommand):
            error = p.Error(id=request_id, code=p.ErrorCode.INVALID_FIELD, text=str(exc))
        else:
            session.log.error(
                "command_failed",
                request=_request_name(request),
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            error = p.Error(
                id=request_id,
                code=p.ErrorCode.INTERNAL_ERROR,
                text="internal error; nothing was changed",
            )
        session.send_message(error)

    # --- the listener ---------------------------------------------------------------

    def on_command(
        self, seq: int, command: cmd.Command, events: list[Event], origin: Origin | None
    ) -> None:
        """Turn one applied command's events into messages (the service's origin listener)."""
        if origin is not None and len(events) > _MANY_EVENTS:
            # A cancel_all, an order that sweeps the book: the reports to the
            # requester are the reply it asked for, and however many, they do not
            # make a reading client a slow consumer (``Session.reply``).
            with origin[0].reply():
                self._messages(command, events, origin)
        else:
            self._messages(command, events, origin)

    def _messages(self, command: cmd.Command, events: list[Event], origin: Origin | None) -> None:
        accounts = self.dirty_accounts
        vouchers = self.dirty_vouchers
        register = self.register
        metrics = self.metrics
        cancelled = 0
        rejected = False
        # Who asked: it gets its copy of a report with the request's id if the order
        # is its account's, or if it is an operator's (``requester_account`` "");
        # a counterparty's fill is not its business.
        requester: Session | None = None
        request_id: p.RequestId = None
        requester_account = ""
        if origin is not None and type(command) in _ORDER_ENTRY:
            requester = origin[0]
            request_id = origin[1].id
            principal = requester.principal
            if principal is None:
                requester = None
            elif principal.role is not _OPERATOR:
                requester_account = principal.account_id
        # Balances are published after the batch only to someone who sees them.
        private = self.private
        watch_balances = bool(self.balance_watchers)
        for ev in events:
            # ``type(ev) is`` rather than ``match`` or ``isinstance``: a Struct class's
            # metaclass sends both through ``__instancecheck__``, several times the cost.
            if type(ev) is OrderAccepted:
                account = ev.account
                if requester is not None and (
                    not requester_account or requester_account == account
                ):
                    self._report(register.accepted(ev, request_id), account, requester)
                else:
                    self._report(register.accepted(ev), account, None)
                if watch_balances or account in private:
                    accounts.add(account)
                if ev.voucher_id:
                    vouchers.add(ev.voucher_id)
                self.touched.add(ev.instrument_id)
                metrics.orders_accepted += 1
            elif type(ev) is Trade:
                buyer = ev.buyer
                seller = ev.seller
                to_buyer = to_seller = None
                if requester is not None:
                    if not requester_account or requester_account == buyer:
                        to_buyer = requester
                    if not requester_account or requester_account == seller:
                        to_seller = requester
                r = register.fill(
                    ev, ev.buy_order_id, ev.buy_leaves, request_id if to_buyer else None
                )
                if r is not None:
                    self._report(r, buyer, to_buyer)
                r = register.fill(
                    ev, ev.sell_order_id, ev.sell_leaves, request_id if to_seller else None
                )
                if r is not None:
                    self._report(r, seller, to_seller)
                self._trade(ev)
                if watch_balances or buyer in private:
                    accounts.add(buyer)
                if watch_balances or seller in private:
                    accounts.add(seller)
                if ev.voucher_id:
                    vouchers.add(ev.voucher_id)
                metrics.trades += 1
                metrics.traded_gpu_hours += ev.qty
            elif type(ev) is OrderCancelled:
                r = register.cancelled(ev)
                if r is not None:
                    self._requested_report(r, ev.account, requester, requester_account, request_id)
                accounts.add(ev.account)
                if r is not None and r.voucher_id:
                    vouchers.add(r.voucher_id)
                if ev.rested:
                    self.touched.add(ev.instrument_id)
                cancelled += 1
            elif type(ev) is Rejected:
                rejected = True
                metrics.rejections[ev.reason] += 1
                self._rejected(ev, command, origin)
            else:
                self._other_event(ev, requester, requester_account, request_id)
        if origin is not None and not rejected and type(command) not in _REPORTED:
            self._answer(origin, command, events, cancelled)

    def _other_event(
        self,
        ev: Event,
        requester: Session | None,
        requester_account: str,
        request_id: p.RequestId,
    ) -> None:
        """``on_command`` for every event but an order's acceptance, fill, cancel or
        rejection."""
        accounts = self.dirty_accounts
        match ev:
            case OrderAmended():
                r = self.register.amended(ev)
                if r is not None:
                    self._requested_report(r, ev.account, requester, requester_account, request_id)
                accounts.add(ev.account)
                if r is not None and r.voucher_id:
                    self.dirty_vouchers.add(r.voucher_id)
                self.touched.add(ev.instrument_id)
            case InstrumentListed():
                self.marketdata.feed(ev.spec.instrument_id)
                inst = self.core.instruments[ev.spec.instrument_id]
                self._publish(
                    (p.Channel.STATUS, ""), p.InstrumentInfo(spec=inst.spec, status=inst.status)
                )
            case InstrumentStatusChanged():
                self._publish(
                    (p.Channel.STATUS, ""),
                    p.InstrumentStatusChange(
                        instrument_id=ev.instrument_id,
                        status=ev.status,
                        previous=ev.previous,
                        ts=ev.ts,
                    ),
                )
                self.touched.add(ev.instrument_id)
            case CashMoved():
                accounts.add(ev.account_id)
            case CapacityRegistered():
                accounts.add(ev.provider)
            case VoucherIssued():
                accounts.add(ev.issuer)
                self.dirty_vouchers.add(ev.voucher_id)
            case ClaimSettled():
                accounts.add(ev.provider)
                self._claim(ev.claim_id)
            case AccountAdmitted():
                accounts.add(ev.account_id)
            case _:
                pass

    def on_batch(self, last_seq: int) -> None:
        """A batch is applied: send what it changed now (the service's batch listener)."""
        if self.pending_out or self.touched or self.dirty_accounts or self.dirty_vouchers:
            self.flush()

    def _sessions_of(self, account: str) -> set[Session]:
        return self.by_account.get(account, set())

    def _report(self, r: p.ExecutionReport, account: str, requester: Session | None) -> None:
        """Send a report of ``account``'s order to that account's connections and the
        ``orders`` watchers. ``requester`` gets ``r`` as it is (with its request's id);
        every other connection gets it without an id."""
        if requester is not None:
            requester.send(_encode(r))
        targets = self.by_account.get(account)
        watchers = self.order_watchers
        if watchers:
            targets = targets | watchers if targets else watchers
        if not targets:
            return
        plain: bytes | None = None
        for session in targets:
            if session is requester:
                continue
            if plain is None:
                plain = _encode(r if r.id is None else _replace(r, id=None))
            session.send(plain)

    def _requested_report(
        self,
        r: p.ExecutionReport,
        account: str,
        requester: Session | None,
        requester_account: str,
        request_id: p.RequestId,
    ) -> None:
        """``_report`` of a report made without the request's id (a cancel, an amend):
        the requester's copy gets it if the order is its account's or it is an operator's.
        """
        if requester is not None and (not requester_account or requester_account == account):
            if request_id is not None:
                r = _replace(r, id=request_id)
            self._report(r, account, requester)
        else:
            self._report(r, account, None)

    def _rejected(self, ev: Rejected, command: cmd.Command, origin: Origin | None) -> None:
        requester, request = origin if origin is not None else (None, None)
        request_id = request.id if request is not None else None
        message: p.ServerMessage
        if isinstance(command, cmd.NewOrder):
            inst = self.core.instruments.get(command.instrument_id)
            r = OrderRegister.rejected(ev, command, inst.spec if inst else None)
            message = msgspec.structs.replace(r, id=request_id)
            watchers = self.order_watchers
            if watchers:
                plain = p.encode(r)
                for session in watchers:
                    if session is not requester:
                        session.send(plain)
        elif isinstance(command, _ORDER_COMMANDS):
            text = p.REASON_TEXT.get(ev.reason, ev.reason)
            if isinstance(command, cmd.AmendOrder):
                text = self._amend_limit_text(ev, command) or text
            message = p.CancelReject(
                id=request_id,
                request=_request_name(request) if request else type(command).__name__,
                order_id=ev.order_id,
                client_order_id=ev.client_order_id,
                reason=ev.reason,
                text=text,
            )
        else:
            message = p.Rejected(
                id=request_id,
                request=_request_name(request) if request else type(command).__name__,
                reason=ev.reason,
                text=p.REASON_TEXT.get(ev.reason, ev.reason),
            )
        if requester is not None:
            requester.send_message(message)
        elif isinstance(command, cmd.NewOrder):
            for session in self._sessions_of(ev.actor):
                session.send_message(message)

    def _amend_limit_text(self, ev: Rejected, command: cmd.AmendOrder) -> str:
        """``limit_text`` for an amend of an order the register knows."""
        state = self.register.find(ev.actor, command.order_id, command.client_order_id)
        if state is None and command.order_id:  # an operator's amend of another's order
            state = self.register.orders.get(command.order_id)
        if state is None or (inst := self.core.instruments.get(state.instrument_id)) is None:
            return ""
        return limit_text(ev.reason, inst.spec, command.qty, command.price, filled=state.cum_qty)

    def _answer(
        self, origin: Origin, command: cmd.Command, events: list[Event], cancelled: int
    ) -> None:
        requester, request = origin
        result: dict[str, int | str] = {}
        match command:
            case cmd.CancelAll():
                requester.send_message(
                    p.CancelAllDone(
                        id=request.id, instrument_id=command.instrument_id, cancelled=cancelled
                    )
                )
                return
            case cmd.Deposit() | cmd.Withdraw():
                result = {"account_id": command.account_id}
                result["cash"] = self.core.accounts[command.account_id].cash
            case cmd.RegisterCapacity():
                result = {"provider": command.provider, "instrument_id": command.instrument_id}
                result["capacity"] = self.core.accounts[command.provider].capacity.get(
                    command.instrument_id, 0
                )
            case cmd.AdmitAccount():
                result = {"account_id": command.account_id}
            case cmd.ListInstrument():
                result = {"instrument_id": command.spec.instrument_id}
            case cmd.SetInstrumentStatus():
                inst = self.core.instruments[command.instrument_id]
                result = {"instrument_id": command.instrument_id, "status": inst.status.value}
            case _:
                pass
        for ev in events:
            match ev:
                case VoucherIssued():
                    result["voucher_id"] = ev.voucher_id
                case ProgrammeCreated():
                    result["programme_id"] = ev.programme_id
                case ClaimSettled():
                    result["claim_id"] = ev.claim_id
                    result["amount"] = ev.amount
                case _:
                    pass
        requester.send_message(p.Ack(id=request.id, request=_request_name(request), result=result))

    # --- private data ---------------------------------------------------------------

    def _deliver(
        self, accounts: tuple[str, ...], message: p.ServerMessage, issuer: str | None = None
    ) -> None:
        """Send ``message`` to the ``private`` sessions of ``accounts`` and, for voucher
        data of ``issuer``, to the ``vouchers`` sessions that see it; once per session."""
        private = self.private
        groups = [private.get(account, ()) for account in accounts]
        if issuer is not None:
            watchers = self.voucher_watchers
            groups.append(watchers.get("", ()))
            groups.append(watchers.get(issuer, ()))
        data: bytes | None = None
        seen: set[Session] = set()
        for group in groups:
            for session in group:
                if session in seen:
                    continue
                seen.add(session)
                if data is None:
                    data = p.encode(message)
                session.send(data)

    def balance(self, account_id: str) -> p.Balance:
        a = self.core.accounts[account_id]
        return p.Balance(
            account_id=account_id,
            role=a.role,
            cash=a.cash,
            cash_reserved=a.cash_reserved,
            capacity=dict(a.capacity),
            capacity_reserved=dict(a.capacity_reserved),
            capacity_sold=dict(a.capacity_sold),
            holdings=dict(a.holdings),
            ts=self.core.now,
        )

    def _balance(self, account_id: str) -> None:
        sessions = self.private.get(account_id, set())
        watchers = self.subscribers.get((p.Channel.ACCOUNTS, ""))
        if not sessions and not watchers:
            return
        data = p.encode(self.balance(account_id))
        for session in sessions | watchers if watchers else sessions:
            session.send(data)

    def voucher(self, voucher_id: int) -> p.VoucherBalance:
        v = self.core.vouchers[voucher_id]
        return p.VoucherBalance(
            voucher_id=v.voucher_id,
            programme_id=v.programme_id,
            issuer=v.issuer,
            holder=v.holder,
            amount=v.amount,
            balance=v.balance,
            reserved=v.reserved,
            spent=v.spent,
            expires_at=v.expires_at,
            ts=self.core.now,
        )

    def _voucher(self, voucher_id: int) -> None:
        v = self.core.vouchers.get(voucher_id)
        if v is not None:
            self._deliver((v.holder, v.issuer), self.voucher(voucher_id), v.issuer)

    def claim(self, claim_id: int) -> p.Claim:
        c = self.core.claims[claim_id]
        return p.Claim(
            claim_id=c.claim_id,
            contract_id=c.contract_id,
            voucher_id=c.voucher_id,
            programme_id=c.programme_id,
            issuer=c.issuer,
            provider=c.provider,
            amount=c.amount,
            settled=c.settled,
            created_at=c.created_at,
            settled_at=c.settled_at,
        )

    def _claim(self, claim_id: int) -> None:
        c = self.core.claims.get(claim_id)
        if c is not None:
            self._deliver((c.provider, c.issuer), self.claim(claim_id), c.issuer)

    @staticmethod
    def contract(ev: Trade) -> p.Contract:
        return p.Contract(
            contract_id=ev.trade_id,
            instrument_id=ev.instrument_id,
            buyer=ev.buyer,
            seller=ev.seller,
            price=ev.price,
            qty=ev.qty,
            cash=ev.cash,
            voucher=ev.voucher,
            voucher_id=ev.voucher_id,
            claim_id=ev.claim_id,
            ts=ev.ts,
        )

    def _trade(self, ev: Trade) -> None:
        """A fill: the public trade, and the contract to both parties (messages are
        built only for someone who receives them)."""
        md = self.marketdata
        md.record(ev)
        key = (_TRADES, ev.instrument_id)
        if self.subscribers.get(key):
            self._publish(key, md.public_trade(ev))
        private = self.private
        if ev.buyer in private or ev.seller in private:
            self._deliver((ev.buyer, ev.seller), self.contract(ev))
        if ev.claim_id:
            self._claim(ev.claim_id)
        self.touched.add(ev.instrument_id)

    # --- public data -----------------------------------------------------------------

    def _publish(self, key: tuple[p.Channel, str], message: p.ServerMessage) -> None:
        subscribers = self.subscribers.get(key)
        if not subscribers:
            return
        data = p.encode(message)
        for session in subscribers:
            session.send(data)

    def flush(self) -> None:
        """After a batch: the latest balances and vouchers it changed, book updates,
        tickers; then every session's queued output, one write each."""
        if self._flush_handle is not None:  # one notify scheduled has nothing left to do
            self._flush_handle.cancel()  # (harmless if it is the one running now)
            self._flush_handle = None
        for account_id in sorted(self.dirty_accounts):
            if account_id in self.core.accounts:
                self._balance(account_id)
        self.dirty_accounts.clear()
        for voucher_id in sorted(self.dirty_vouchers):
            self._voucher(voucher_id)
        self.dirty_vouchers.clear()
        touched = sorted(self.touched)
        self.touched.clear()
        md = self.marketdata
        now = self.core.now
        conflated = 0
        for instrument_id in touched:
            update = md.refresh(instrument_id)
            if update is not None:
                subscribers = self.subscribers.get((p.Channel.BOOK, instrument_id))
                if subscribers:
                    data = p.encode(update)
                    for session in subscribers:
                        conflated += session.send_book(instrument_id, data)
            watchers = self.subscribers.get((p.Channel.TICKER, instrument_id))
            if watchers:
                data = p.encode(md.ticker(instrument_id, now))
                for session in watchers:
                    session.send_ticker(instrument_id, data)
        self.metrics.book_conflations += conflated
        pending = self.pending_out
        self.pending_out = []
        for session in pending:
            session.write_now()

    def close_all(self, code: int, reason: str = "", *, drain: bool = False) -> None:
        for session in list(self.sessions.values()):
            session.close(code, reason, drain=drain)

    def stats(self) -> dict[str, Any]:
        return {
            "connections": len(self.sessions),
            "authenticated": sum(len(s) for s in self.by_account.values()),
        }

"""What the gateway does with each request of a connection.

``Dispatcher.receive`` takes one frame: it decodes it, charges the rate
limit, checks the role, then acts with ``match`` on the request type. Requests
that change the exchange become commands (``actor`` is the connection's
account, never anything the client sent) and go to the router, which answers
from the exchange's events. Queries and subscriptions are answered at once,
from the state as it is when they arrive. Commands of one connection reach
the exchange in the order they were sent.

Nothing here raises into the connection: bad input is answered with an
``error`` and counted as a strike (see gateway.session).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from exchange import commands as cmd
from exchange.core import ExchangeCore
from exchange.reference import InstrumentSpec, Role
from gateway import protocol as p
from gateway.auth import CHANNEL_ROLES, PERMISSIONS, KeyStore, Principal, permitted
from gateway.metrics import Metrics
from gateway.orders import report
from gateway.router import Router
from gateway.session import Session

_INSTRUMENT_CHANNELS = frozenset({p.Channel.BOOK, p.Channel.TRADES, p.Channel.TICKER})
_INT64 = range(-(2**63), 2**63)
_TAGS: dict[type[p.Request], str] = {
    kind: str(kind.__struct_config__.tag) for kind in PERMISSIONS
}  # request type -> its ``type`` on the wire, for the metrics
_NewOrderRequest = p.NewOrder
_NewOrder = cmd.NewOrder
_monotonic = time.monotonic
_decode = p.REQUEST_DECODER.decode


def _spec_fits(spec: InstrumentSpec) -> bool:
    """Every integer of a spec fits the journal's 64-bit integers."""
    return all(
        v in _INT64
        for v in msgspec.structs.astuple(spec)
        if isinstance(v, int) and not isinstance(v, bool)
    )


class Dispatcher:
    """Turns a connection's frames into actions."""

    def __init__(
        self,
        router: Router,
        keys: KeyStore,
        metrics: Metrics,
        clock: Callable[[], int] = time.time_ns,
        max_per_account: int = 64,
        max_open_orders: int = 10_000,
    ) -> None:
        self.router = router
        self.max_per_account = max_per_account
        self.max_open_orders = max_open_orders
        self.open_by_account = router.register.open_by_account
        self.core: ExchangeCore = router.core
        self.keys = keys
        self.metrics = metrics
        self.clock = clock
        for tag in _TAGS.values():
            metrics.requests.setdefault(tag, 0)

    # --- frames -------------------------------------------------------------------

    def receive(self, session: Session, data: bytes | str) -> None:
        """Handle one text frame."""
        limits = session.limits
        now = _monotonic()
        session.last_received = now
        size = len(data)
        # Text arrives decoded: a character is 1 to 4 bytes, so only a frame long
        # enough to be over the limit in bytes is measured in them.
        if size * 4 > limits.max_frame_bytes and type(data) is str:
            size = len(data.encode())
        if size > limits.max_frame_bytes:
            self.refuse(
                session,
                p.ProtocolError(
                    p.ErrorCode.FRAME_TOO_LARGE,
                    f"frame of {size} bytes; the limit is {limits.max_frame_bytes}",
                    p.read_id(data),
                ),
            )
            return
        try:
            request: p.Request = _decode(data)
        except msgspec.DecodeError:
            self.refuse(session, p.refusal(data))
            return
        kind = type(request)
        self.metrics.requests[_TAGS[kind]] += 1  # every type is a key (see __init__)
        if not session.bucket.take_at(now):
            self.refuse(
                session,
                p.ProtocolError(
                    p.ErrorCode.RATE_LIMITED,
                    f"more than {limits.rate_limit:g} requests a second; request dropped",
                    request.id,
                ),
            )
            return
        principal = session.principal
        roles = PERMISSIONS[kind]
        if roles is not None and (principal is None or principal.role not in roles):
            code = permitted(roles, principal)
            assert code is not None
            self.refuse(session, p.ProtocolError(code, _permission_text(code), request.id))
            return
        # Nearly all the traffic, straight to the exchange. ``type() is``, not
        # ``isinstance``, which a Struct class answers through ``__instancecheck__``.
        if type(request) is _NewOrderRequest:
            assert principal is not None
            account = principal.account_id
            resting = self.open_by_account.get(account)
            if resting is not None and len(resting) >= self.max_open_orders:
                self._too_many_orders(session, request, len(resting))
                return
            self.router.submit(session, request, new_order(account, request))
            return
        self.handle(session, request)

    def _too_many_orders(self, session: Session, request: p.NewOrder, open_now: int) -> None:
        """Refuse a new order of an account at its open-order limit: not abuse (no
        strike), a limit any busy account may meet; cancels make room again."""
        code = p.ErrorCode.TOO_MANY_OPEN_ORDERS
        self.metrics.protocol_errors[code] += 1
        text = f"{open_now} orders open; the limit is {self.max_open_orders} an account"
        session.send_message(p.Error(id=request.id, code=code, text=text))

    def refuse(self, session: Session, error: p.ProtocolError) -> None:
        """Answer a bad frame; close the connection if it keeps sending them."""
        self.metrics.protocol_errors[error.code] += 1
        session.log.info("refused", code=error.code.value, text=error.text[:200])
        session.send_message(p.Error(id=error.id, code=error.code, text=error.text))
        if session.strike(time.monotonic()):
            session.close(p.CloseCode.PROTOCOL_ABUSE, drain=True)

    def binary(self, session: Session) -> None:
        session.received(time.monotonic())
        self.refuse(
            session, p.ProtocolError(p.ErrorCode.BINARY_FRAME, "only JSON text frames are accepted")
        )

    # --- requests ------------------------------------------------------------------

    def handle(self, session: Session, request: p.Request) -> None:
        principal = session.principal
        actor = principal.account_id if principal is not None else ""
        command: cmd.Command
        match request:  # order entry first: it is nearly all the traffic
            case p.NewOrder():
                command = new_order(actor, request)
            case p.CancelOrder():
                command = cmd.CancelOrder(
                    actor=actor, order_id=request.order_id, client_order_id=request.client_order_id
                )
            case p.AmendOrder():
                if request.qty is None and request.price is None:
                    self.refuse(
                        session,
                        p.ProtocolError(
                            p.ErrorCode.MISSING_FIELD,
                            "amend_order needs a new qty, a new price, or both",
                            request.id,
                        ),
                    )
                    return
                command = cmd.AmendOrder(
                    actor=actor,
                    order_id=request.order_id,
                    client_order_id=request.client_order_id,
                    qty=request.qty,
                    price=request.price,
                )
            case p.CancelAll():
                command = cmd.CancelAll(actor=actor, instrument_id=request.instrument_id)
            case p.Ping():
                session.send_message(p.Pong(id=request.id, ts=self.clock()))
                return
            case p.Auth():
                self.auth(session, request)
                return
            case p.Subscribe():
                self.subscribe(session, request)
                return
            case p.Unsubscribe():
                instrument_id = (
                    request.instrument_id if request.channel in _INSTRUMENT_CHANNELS else ""
                )
                if not self.router.unsubscribe(session, request.channel, instrument_id):
                    where = f" {instrument_id}" if instrument_id else ""
                    session.send_message(
                        p.Error(
                            id=request.id,
                            code=p.ErrorCode.NOT_SUBSCRIBED,
                            text=f"not subscribed to {request.channel.value}{where}",
                        )
                    )
                    return
                session.send_message(
                    p.Unsubscribed(
                        id=request.id, channel=request.channel, instrument_id=instrument_id
                    )
                )
                return
            case p.MassStatus():
                self.mass_status(session, request)
                return
            case p.OrderStatus():
                self.order_status(session, request)
                return
            case p.IssueApiKey():
                self.issue_key(session, request)
                return
            case p.RevokeApiKey():
                self.revoke_key(session, request)
                return
            case p.ListInstrument():
                if not _spec_fits(request.spec):
                    session.send_message(
                        p.Error(
                            id=request.id,
                            code=p.ErrorCode.INVALID_FIELD,
                            text="instrument spec integers must fit in 64 bits",
                        )
                    )
                    return
                command = cmd.ListInstrument(actor=actor, spec=request.spec)
            case p.SetInstrumentStatus():
                command = cmd.SetInstrumentStatus(
                    actor=actor, instrument_id=request.instrument_id, status=request.status
                )
            case p.AdmitAccount():
                command = cmd.AdmitAccount(
                    actor=actor,
                    account_id=request.account_id,
                    role=request.role,
                    tier=request.tier,
                    hub=request.hub,
                    revenue=request.revenue,
                    projects=list(request.projects),
                )
            case p.RelateParties():
                command = cmd.RelateParties(
                    actor=actor, account_a=request.account_a, account_b=request.account_b
                )
            case p.Deposit():
                command = cmd.Deposit(
                    actor=actor, account_id=request.account_id, amount=request.amount
                )
            case p.Withdraw():
                command = cmd.Withdraw(
                    actor=actor, account_id=request.account_id, amount=request.amount
                )
            case p.RegisterCapacity():
                command = cmd.RegisterCapacity(
                    actor=actor,
                    provider=request.provider or actor,
                    instrument_id=request.instrument_id,
                    gpu_hours=request.gpu_hours,
                )
            case p.CreateProgramme():
                command = cmd.CreateProgramme(
                    actor=actor,
                    programme_id=request.programme_id,
                    name=request.name,
                    rate_state_domestic=request.rate_state_domestic,
                    rate_state_foreign=request.rate_state_foreign,
                    rate_commercial_domestic=request.rate_commercial_domestic,
                    rate_commercial_foreign=request.rate_commercial_foreign,
                    eligible_hubs=list(request.eligible_hubs),
                    cap_per_holder_year=request.cap_per_holder_year,
                    budget=request.budget,
                    expires_at=request.expires_at,
                    basis=request.basis,
                    min_revenue=request.min_revenue,
                    projects=list(request.projects),
                )
            case p.IssueVoucher():
                command = cmd.IssueVoucher(
                    actor=actor,
                    programme_id=request.programme_id,
                    holder=request.holder,
                    amount=request.amount,
                )
            case p.SettleClaim():
                command = cmd.SettleClaim(actor=actor, claim_id=request.claim_id)
        self.router.submit(session, request, command)

    def auth(self, session: Session, request: p.Auth) -> None:
        if session.principal is not None:
            self.refuse(
                session,
                p.ProtocolError(
                    p.ErrorCode.ALREADY_AUTHENTICATED,
                    "this connection is already authenticated",
                    request.id,
                ),
            )
            return
        principal = self.principal_for(request.key)
        if principal is None:
            self.refuse(
                session, p.ProtocolError(p.ErrorCode.AUTH_FAILED, "invalid API key", request.id)
            )
            return
        crowded = self.crowded(principal)
        if crowded:
            session.send_message(
                p.Error(id=request.id, code=p.ErrorCode.TOO_MANY_CONNECTIONS, text=crowded)
            )
            return
        self.login(session, principal)
        session.send_message(
            p.Authenticated(id=request.id, account_id=principal.account_id, role=principal.role)
        )

    def principal_for(self, key: str) -> Principal | None:
        """Who an API key acts as, if it is valid and its account is admitted."""
        found = self.keys.verify(key)
        if found is None:
            return None
        account_id, key_id = found
        account = self.core.accounts.get(account_id)
        if account is None:
            return None
        return Principal(account_id, account.role, key_id)

    def crowded(self, principal: Principal) -> str:
        """Why ``principal``'s account may not log in one more connection ("" if it may)."""
        open_now = len(self.router.by_account.get(principal.account_id, ()))
        if open_now < self.max_per_account:
            return ""
        return (
            f"account {principal.account_id} has {open_now} connections open;"
            f" the limit is {self.max_per_account}"
        )

    def login(self, session: Session, principal: Principal) -> None:
        session.authenticate(principal)
        self.router.authenticated(session)
        session.log.info("authenticated", key_id=principal.key_id)

    def subscribe(self, session: Session, request: p.Subscribe) -> None:
        channel = request.channel
        code = permitted(CHANNEL_ROLES[channel], session.principal)
        if code is not None:
            self.refuse(session, p.ProtocolError(code, _permission_text(code), request.id))
            return
        instrument_id = ""
        if channel in _INSTRUMENT_CHANNELS:
            instrument_id = request.instrument_id
            if not instrument_id:
                self.refuse(
                    session,
                    p.ProtocolError(
                        p.ErrorCode.INSTRUMENT_REQUIRED,
                        f"channel {channel.value} needs an instrument_id",
                        request.id,
                    ),
                )
                return
            if instrument_id not in self.core.instruments:
                session.send_message(_unknown_instrument(request.id, instrument_id))
                return
        session.send_message(
            p.Subscribed(id=request.id, channel=channel, instrument_id=instrument_id)
        )
        self.router.subscribe(session, channel, instrument_id)

    def mass_status(self, session: Session, request: p.MassStatus) -> None:
        principal = session.principal
        assert principal is not None
        account = None if principal.role is Role.OPERATOR else principal.account_id
        instrument_id = request.instrument_id
        if instrument_id and instrument_id not in self.core.instruments:
            session.send_message(_unknown_instrument(request.id, instrument_id))
            return
        states = self.router.register.open_orders(account, instrument_id)
        with session.reply():  # however long, not a sign of a slow reader
            for state in states:
                session.send_message(report(state, p.ExecType.ORDER_STATUS, request_id=request.id))
            session.send_message(p.MassStatusDone(id=request.id, count=len(states)))

    def order_status(self, session: Session, request: p.OrderStatus) -> None:
        principal = session.principal
        assert principal is not None
        register = self.router.register
        state = register.find(principal.account_id, request.order_id, request.client_order_id)
        if state is None and principal.role is Role.OPERATOR and request.order_id:
            state = register.orders.get(request.order_id)
        if state is None:
            session.send_message(self._unknown_order(principal.account_id, request))
            return
        session.send_message(report(state, p.ExecType.ORDER_STATUS, request_id=request.id))

    def _unknown_order(self, account_id: str, request: p.OrderStatus) -> p.Error:
        """Why ``order_status`` has no report: an order the exchange never accepted for
        the account, or one that finished before the gateway's last restart (the
        exchange remembers every client order id of an account; the register, only
        the orders open at the restart)."""
        account = self.core.accounts.get(account_id)
        coid = request.client_order_id
        order_id = account.client_order_ids.get(coid) if account and coid else None
        if order_id is None:
            return p.Error(id=request.id, code=p.ErrorCode.UNKNOWN_ORDER, text="no such order")
        return p.Error(
            id=request.id,
            code=p.ErrorCode.ORDER_FINISHED_BEFORE_RESTART,
            text=(
                f"order {order_id} (client order id {coid!r}) finished before the gateway's "
                "last restart; its fills are in the account's contracts"
            ),
        )

    def issue_key(self, session: Session, request: p.IssueApiKey) -> None:
        if request.account_id not in self.core.accounts:
            session.send_message(
                p.Error(
                    id=request.id,
                    code=p.ErrorCode.UNKNOWN_ACCOUNT,
                    text=f"no account {request.account_id!r}",
                )
            )
            return
        key = self.keys.issue(request.account_id, self.clock())
        key_id = key.split("_")[1]
        session.log.info("api_key_issued", account_id=request.account_id, key_id=key_id)
        session.send_message(
            p.ApiKeyIssued(id=request.id, account_id=request.account_id, key_id=key_id, key=key)
        )

    def revoke_key(self, session: Session, request: p.RevokeApiKey) -> None:
        record = self.keys.revoke(request.key_id)
        if record is None:
            session.send_message(
                p.Error(id=request.id, code=p.ErrorCode.UNKNOWN_KEY, text="no such key id")
            )
            return
        session.log.info("api_key_revoked", key_id=request.key_id)
        for other in list(self.router.sessions.values()):
            if other.principal is not None and other.principal.key_id == request.key_id:
                other.close(p.CloseCode.AUTH_REVOKED)
        session.send_message(
            p.Ack(id=request.id, request="revoke_api_key", result={"key_id": request.key_id})
        )


def new_order(actor: str, request: p.NewOrder) -> cmd.NewOrder:
    """The exchange's command for a ``new_order`` request of ``actor``."""
    return _NewOrder(
        actor=actor,
        client_order_id=request.client_order_id,
        instrument_id=request.instrument_id,
        side=request.side,
        qty=request.qty,
        price=request.price,
        order_type=request.order_type,
        tif=request.tif,
        expire_at=request.expire_at,
        post_only=request.post_only,
        min_qty=request.min_qty,
        stp=request.stp,
        voucher_id=request.voucher_id,
    )


def _unknown_instrument(request_id: p.RequestId, instrument_id: str) -> p.Error:
    return p.Error(
        id=request_id, code=p.ErrorCode.UNKNOWN_INSTRUMENT, text=f"no instrument {instrument_id!r}"
    )


def _permission_text(code: p.ErrorCode) -> str:
    if code is p.ErrorCode.NOT_AUTHENTICATED:
        return "authenticate first: send auth with an API key"
    return "the account's role may not do this"

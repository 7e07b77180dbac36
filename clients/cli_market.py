"""``suanli`` commands for traders: run a gateway, watch a book, trade, read records.

Each command opens one SDK connection (``clients.sdk.Client``) to ``--url``
(``SUANLI_URL``, default http://127.0.0.1:8080) with ``--key``
(``SUANLI_API_KEY``), does its work and closes it. Output is a table for
people, or with ``--json`` one JSON document on stdout (integers: fen, GPU-hours,
nanoseconds). Prices typed on the command line are in CNY per GPU-hour
(``18.05``) and must be whole fen.

Exit status: 0 done; 1 the exchange or gateway refused (the reason code is
printed); 2 a usage error; 3 the gateway could not be reached or refused the key
(or went away while ``book`` was watching it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import aiohttp
import click
import msgspec
import structlog
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from clients import cli_tables as tables
from clients.localbook import LocalBook
from clients.sdk import AuthFailed, Backoff, Client, ConnectionLost, Refused, SuanliError
from exchange.reference import OrderType, SelfTradePrevention, Side, TimeInForce
from gateway import protocol as p

DEFAULT_URL = "http://127.0.0.1:8080"
KEY_OPTION = "--key"
KEY_ENVVAR = "SUANLI_API_KEY"
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3
TAPE = 12  # trades the live book view shows

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_out = Console()
_err = Console(stderr=True)


# --- shared plumbing ---------------------------------------------------------------


def connection_options(func: F) -> F:
    """``--url``, ``--key`` and ``--json`` for a command that talks to a gateway."""
    func = click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document instead of a table."
    )(func)
    func = click.option(
        KEY_OPTION,
        envvar=KEY_ENVVAR,
        default="",
        show_envvar=True,
        help="API key of the account to act as.",
    )(func)
    func = click.option(
        "--url",
        envvar="SUANLI_URL",
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
        help="Address of the gateway.",
    )(func)
    return func


def page_options(rows: str, only_with: str = "") -> Callable[[F], F]:
    """``--limit`` and ``--before`` for a list of ``rows`` read newest first, a page at
    a time (``only_with``: the flag they need, if any)."""

    def help_text(text: str) -> str:
        return f"With {only_with}: {text}" if only_with else text.capitalize()

    def add(func: F) -> F:
        func = click.option(
            "--before", type=int, default=0, help=help_text(f"only {rows} with ids below this.")
        )(func)
        return click.option(
            "--limit",
            type=click.IntRange(1, 1_000),
            default=20,
            show_default=True,
            help=help_text("how many."),
        )(func)

    return add


def run(coro: Coroutine[Any, Any, T], as_json: bool = False) -> T:
    """Run a command's coroutine; turn SDK errors into messages and exit codes."""
    # The SDK's connection log is for services; at a terminal only warnings show.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        return asyncio.run(coro)
    except Refused as exc:
        _fail(EXIT_REFUSED, exc.code, _refusal_text(exc), as_json)
    except AuthFailed as exc:
        _fail(EXIT_UNREACHABLE, "AUTH_FAILED", str(exc), as_json)
    except (aiohttp.ClientError, OSError, SuanliError) as exc:
        _fail(EXIT_UNREACHABLE, "UNREACHABLE", f"{type(exc).__name__}: {exc}", as_json)
    raise AssertionError("unreachable")


def _refusal_text(exc: Refused) -> str:
    if exc.code == p.ErrorCode.NOT_AUTHENTICATED:
        # Sent with no key at all (a wrong one fails at the handshake): say how to give one.
        return f"this command needs an API key: pass {KEY_OPTION} or set {KEY_ENVVAR}"
    return exc.text


def _fail(code: int, reason: str, text: str, as_json: bool) -> None:
    if as_json:
        click.echo(msgspec.json.encode({"ok": False, "error": reason, "text": text}).decode())
    else:
        _err.print(f"[red]error[/red] {reason}: {text}", highlight=False)
    sys.exit(code)


async def with_client(
    url: str, key: str, work: Callable[[Client], Awaitable[T]], *, reconnect: bool = False
) -> T:
    client = Client(
        url,
        key,
        reconnect=reconnect,
        backoff=Backoff(initial=0.2, maximum=2.0),
        name="cli",
    )
    async with client:
        return await work(client)


def emit_json(data: Any) -> None:
    click.echo(msgspec.json.encode(data).decode())


def yuan(fen: int) -> str:
    """Fen as CNY with two decimals, exactly."""
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{part:02d}"


def counted(n: int, noun: str) -> str:
    """``1 order``, ``3 orders``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def parse_price(text: str) -> int:
    """CNY per GPU-hour (``18.05``) to fen, exactly; refuses fractions of a fen."""
    try:
        value = Decimal(text) * 100
    except InvalidOperation:
        raise click.BadParameter(f"{text!r} is not a price in CNY, e.g. 18.05") from None
    if value != value.to_integral_value():
        raise click.BadParameter(f"{text} is not a whole number of fen")
    return int(value)


_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def parse_time(text: str, now: int | None = None) -> int:
    """A moment as ns since the epoch: an ISO date or date-time (UTC unless it
    says otherwise), ``+N`` seconds, minutes, hours or days from ``now``
    (``+90s``, ``+30m``, ``+2h``, ``+1d``), or an integer of ns."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text.startswith("+"):
        count, unit = text[1:-1], text[-1:]
        if not count.isdigit() or unit not in _UNITS:
            raise click.BadParameter(f"{text!r} is not a time from now, e.g. +30m, +2h or +1d")
        start = time.time_ns() if now is None else now
        return start + int(count) * _UNITS[unit] * 10**9
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time: an ISO date such as 2026-12-01T08:00, or +2h"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1_000


def _ns_time(ts: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts // 10**9)) if ts else ""


REPORT_COLUMNS = (
    "order",
    "client id",
    "instrument",
    "side",
    "price",
    "qty",
    "filled",
    "left",
    "last fill",
    "status",
    "reason",
)


def report_table(reports: list[p.ExecutionReport], title: str) -> tables.Listing:
    table = tables.Listing(
        title,
        REPORT_COLUMNS,
        numbers=("order", "price", "qty", "filled", "left", "last fill"),
        text=("reason",),
    )
    for r in reports:
        table.add_row(
            str(r.order_id),
            r.client_order_id,
            r.instrument_id,
            r.side.value if r.side else "",
            yuan(r.price),
            str(r.qty),
            str(r.cum_qty),
            str(r.leaves_qty),
            f"{r.last_qty} @ {yuan(r.last_price)}" if r.last_qty else "",
            f"{r.exec_type.value}/{r.ord_status.value}",
            r.reason,
        )
    return table


# --- serve / demo -------------------------------------------------------------------


def _gateway_args(
    config: str | None, host: str | None, port: int | None, data_dir: str | None
) -> list[str]:
    args: list[str] = []
    if config:
        args += ["--config", config]
    if host:
        args += ["--host", host]
    if port is not None:
        args += ["--port", str(port)]
    if data_dir is not None:
        args += ["--data-dir", data_dir]
    return args


def _server_options(func: F) -> F:
    func = click.option("--data-dir", help="Durable store directory ('' keeps state in memory).")(
        func
    )
    func = click.option("--port", type=int, help="Port to listen on (default 8080).")(func)
    func = click.option("--host", help="Address to listen on (default 127.0.0.1).")(func)
    func = click.option(
        "--config", type=click.Path(dir_okay=False), help="TOML or JSON configuration file."
    )(func)
    return func


@click.command()
@_server_options
def serve(config: str | None, host: str | None, port: int | None, data_dir: str | None) -> None:
    """Run the exchange gateway (WebSocket and HTTP) until Ctrl-C.

    Settings come from --config and the SUANLI_* environment variables
    (docs/operator-guide.md).

    \b
    Example:
      suanli serve --config suanli.toml --port 8080
    """
    from gateway.__main__ import main as gateway_main

    sys.exit(gateway_main(_gateway_args(config, host, port, data_dir)))


@click.command()
@_server_options
@click.option(
    "--flow",
    type=float,
    help="Orders a second from the demo's own traders (default 1; 0: a still market).",
)
def demo(
    config: str | None,
    host: str | None,
    port: int | None,
    data_dir: str | None,
    flow: float | None,
) -> None:
    """Run the gateway with the seeded, live demo market, and print its demo API keys.

    \b
    Example:
      suanli demo                # then, in another terminal:
      suanli book H800-SUZHOU-STATE-W1
    """
    from gateway.__main__ import main as gateway_main

    args = ["--demo", *_gateway_args(config, host, port, data_dir)]
    if flow is not None:
        args += ["--demo-flow", str(flow)]
    sys.exit(gateway_main(args))


# --- book -----------------------------------------------------------------------------


def _book_view(
    book: LocalBook,
    ticker: p.Ticker | None,
    trades: deque[p.PublicTrade],
    depth: int,
    connected: bool,
) -> Group:
    levels = Table(title=f"{book.instrument_id}   seq {book.seq}", title_justify="left")
    levels.add_column("bid qty", justify="right", style="green")
    levels.add_column("bid", justify="right", style="green")
    levels.add_column("ask", justify="right", style="red")
    levels.add_column("ask qty", justify="right", style="red")
    bids, asks = book.bids(depth), book.asks(depth)
    for i in range(max(len(bids), len(asks), 1)):
        bid = bids[i] if i < len(bids) else None
        ask = asks[i] if i < len(asks) else None
        levels.add_row(
            str(bid[1]) if bid else "",
            yuan(bid[0]) if bid else "",
            yuan(ask[0]) if ask else "",
            str(ask[1]) if ask else "",
        )
    tape = Table(title="last trades", title_justify="left")
    for column in ("time", "price", "qty", "aggressor"):
        tape.add_column(column, justify="right")
    for t in reversed(trades):
        tape.add_row(
            _ns_time(t.ts),
            yuan(t.price),
            str(t.qty),
            t.aggressor.value if t.aggressor else "auction",
        )
    parts: list[Any] = [levels]
    if ticker is not None:
        parts.append(
            Text(
                f"{ticker.status.value}  last {yuan(ticker.last_price)}  "
                f"24h volume {ticker.volume_24h} GPU-h  VWAP {yuan(ticker.vwap_24h)}  "
                f"trades {ticker.trades_24h}",
                style="bold",
            )
        )
    parts.append(tape)
    parts.append(_sync_line(book, connected))
    return Group(*parts)


def _sync_line(book: LocalBook, connected: bool) -> Text:
    # The book keeps its last state through an outage; it must not pass for current.
    if not connected:
        return Text(
            f"disconnected, reconnecting… (book as of seq {book.seq}, "
            f"checksum {book.checksum:08x})",
            style="bold yellow",
        )
    status = "in sync" if book.synced else f"resynchronising ({book.last_problem})"
    return Text(f"book {status}; checksum {book.checksum:08x}", style="dim")


@click.command()
@click.argument("instrument")
@click.option("--depth", default=10, show_default=True, help="Price levels shown per side.")
@click.option(
    "--seconds", type=float, default=0.0, help="Stop after this many seconds (0: until Ctrl-C)."
)
@connection_options
def book(instrument: str, depth: int, seconds: float, url: str, key: str, as_json: bool) -> None:
    """Watch INSTRUMENT's order book, last trades and ticker live, redrawn in place.

    The local book checks every update's sequence number and checksum and
    resynchronises by itself. If the connection drops, the view says
    "disconnected, reconnecting…" until it is back; if --seconds runs out while
    disconnected, the book shown is out of date and it exits 3 (unreachable).
    With --json, print the verified book once and exit.

    \b
    Examples:
      suanli book H800-SUZHOU-STATE-W1
      suanli book H800-SUZHOU-STATE-W1 --json
    """

    async def once(client: Client) -> None:
        async with client.book(instrument) as watcher:
            local = await watcher.synced()
            emit_json(
                {
                    "instrument_id": instrument,
                    "seq": local.seq,
                    "checksum": local.checksum,
                    "bids": local.bids(depth),
                    "asks": local.asks(depth),
                }
            )

    async def live(client: Client) -> None:
        trades: deque[p.PublicTrade] = deque(maxlen=TAPE)
        latest: list[p.Ticker] = []
        async with (
            client.book(instrument) as watcher,
            client.trades(instrument) as tape,
            client.ticker(instrument) as ticks,
        ):
            local = await watcher.synced()
            # The last trades from the history, then live ones; a trade that both
            # the history and the (already open) tape bring is shown once.
            trades.extend(reversed(await client.trade_history(instrument, limit=TAPE)))

            async def follow_trades() -> None:
                async for t in tape:
                    if not trades or t.trade_id > trades[-1].trade_id:
                        trades.append(t)

            async def follow_ticker() -> None:
                async for t in ticks:
                    latest[:] = [t]

            followers = [asyncio.create_task(follow_trades()), asyncio.create_task(follow_ticker())]
            loop = asyncio.get_running_loop()
            stop_at = loop.time() + seconds if seconds else None
            try:
                with Live(console=_out, auto_refresh=False, transient=False) as screen:
                    while stop_at is None or loop.time() < stop_at:
                        ticker = latest[0] if latest else None
                        screen.update(
                            _book_view(local, ticker, trades, depth, client.connected),
                            refresh=True,
                        )
                        await asyncio.sleep(0.25)
            finally:
                for task in followers:
                    task.cancel()
            if not client.connected:
                raise ConnectionLost(
                    f"disconnected from the gateway; the book shown is as of seq {local.seq}"
                )

    if as_json:
        run(with_client(url, key, once), as_json)
    else:
        with contextlib.suppress(KeyboardInterrupt):
            run(with_client(url, key, live, reconnect=True))


# --- orders -------------------------------------------------------------------------


@click.command()
@click.argument("instrument")
@click.argument("side", type=click.Choice(["buy", "sell"], case_sensitive=False))
@click.argument("qty", type=int)
@click.argument("price", required=False, default="0")
@click.option(
    "--type",
    "order_type",
    type=click.Choice([t.value for t in OrderType], case_sensitive=False),
    default="LIMIT",
    show_default=True,
)
@click.option(
    "--tif",
    type=click.Choice([t.value for t in TimeInForce], case_sensitive=False),
    default="GTC",
    show_default=True,
    help="Time in force.",
)
@click.option(
    "--expire-at",
    default="",
    help="GTD expiry: an ISO time (UTC unless it says), +30m / +2h / +1d from now, "
    "or ns since the epoch. Makes the order GTD unless --tif says otherwise.",
)
@click.option("--post-only", is_flag=True, help="Refuse the order if it would trade at once.")
@click.option("--min-qty", type=int, default=0, help="Minimum acceptable fill on entry, GPU-hours.")
@click.option("--voucher", "voucher_id", type=int, default=0, help="Pay part with this voucher.")
@click.option(
    "--stp",
    type=click.Choice([s.value for s in SelfTradePrevention], case_sensitive=False),
    default=SelfTradePrevention.CANCEL_RESTING.value,
    help="Self-trade prevention.",
)
@click.option("--client-order-id", "coid", default="", help="Your id; makes a retry idempotent.")
@connection_options
def order(
    instrument: str,
    side: str,
    qty: int,
    price: str,
    order_type: str,
    tif: str,
    expire_at: str,
    post_only: bool,
    min_qty: int,
    voucher_id: int,
    stp: str,
    coid: str,
    url: str,
    key: str,
    as_json: bool,
) -> None:
    """Place an order: SIDE QTY GPU-hours of INSTRUMENT at PRICE CNY per GPU-hour.

    Prints the execution reports that arrive at once (accepted, fills, an IOC
    remainder cancelled). A rejection exits 1 with the exchange's reason code.

    \b
    Examples:
      suanli order H800-SUZHOU-STATE-W1 buy 64 18.05 --voucher 1
      suanli order H20-SHANGHAI-COMM-W1 sell 80 7.20 --post-only --json
      suanli order H800-SUZHOU-STATE-W1 buy 16 --type MARKET --tif IOC
      suanli order H800-SUZHOU-STATE-W1 buy 32 17.90 --expire-at +2h
    """
    fen = parse_price(price)
    expiry = parse_time(expire_at) if expire_at else 0
    source = click.get_current_context().get_parameter_source("tif")
    if expiry and source is click.core.ParameterSource.DEFAULT:
        tif = TimeInForce.GTD.value

    async def work(client: Client) -> list[p.ExecutionReport]:
        async with client.private() as private:
            first = await client.place_order(
                instrument,
                Side(side.upper()),
                qty,
                fen,
                order_type=OrderType(order_type.upper()),
                tif=TimeInForce(tif.upper()),
                expire_at=expiry,
                post_only=post_only,
                min_qty=min_qty,
                stp=SelfTradePrevention(stp.upper()),
                voucher_id=voucher_id,
                client_order_id=coid,
            )
            await client.ping()  # every report of this order's entry came before the pong
            reports = [
                m
                for m in private.pending()
                if isinstance(m, p.ExecutionReport) and m.order_id == first.order_id
            ]
            return reports or [first]

    reports = run(with_client(url, key, work), as_json)
    if as_json:
        emit_json(reports)
    else:
        report_table(reports, "execution reports").show(_out)


@click.command()
@click.argument("order_id", type=int, required=False, default=0)
@click.option("--client-order-id", "coid", default="", help="Cancel by your client order id.")
@click.option("--all", "cancel_all", is_flag=True, help="Cancel every open order.")
@click.option("--instrument", default="", help="With --all: only on this instrument.")
@connection_options
def cancel(
    order_id: int,
    coid: str,
    cancel_all: bool,
    instrument: str,
    url: str,
    key: str,
    as_json: bool,
) -> None:
    """Cancel an order by ORDER_ID or --client-order-id, or all of them with --all.

    \b
    Examples:
      suanli cancel 42
      suanli cancel --client-order-id my-order-7
      suanli cancel --all --instrument H800-SUZHOU-STATE-W1 --json
    """
    if not cancel_all and not order_id and not coid:
        raise click.UsageError("give ORDER_ID, --client-order-id or --all")

    async def work(client: Client) -> Any:
        if cancel_all:
            return await client.cancel_all(instrument)
        return await client.cancel_order(order_id, client_order_id=coid)

    result = run(with_client(url, key, work), as_json)
    if as_json:
        emit_json(result)
    elif isinstance(result, p.CancelAllDone):
        _out.print(f"cancelled {counted(result.cancelled, 'order')}")
    else:
        report_table([result], "cancelled").show(_out)


@click.command()
@click.argument("order_id", type=int, required=False, default=0)
@click.option("--client-order-id", "coid", default="", help="Amend by your client order id.")
@click.option("--qty", type=int, default=None, help="New total quantity, GPU-hours.")
@click.option("--price", default=None, help="New price, CNY per GPU-hour.")
@connection_options
def amend(
    order_id: int,
    coid: str,
    qty: int | None,
    price: str | None,
    url: str,
    key: str,
    as_json: bool,
) -> None:
    """Change an open order's quantity and/or price.

    Only a smaller quantity at the same price keeps the order's place in the queue.

    \b
    Examples:
      suanli amend 42 --qty 32
      suanli amend --client-order-id my-order-7 --price 17.90 --json
    """
    if not order_id and not coid:
        raise click.UsageError("give ORDER_ID or --client-order-id")
    if qty is None and price is None:
        raise click.UsageError("give --qty and/or --price")
    fen = parse_price(price) if price is not None else None

    async def work(client: Client) -> p.ExecutionReport:
        return await client.amend_order(order_id, client_order_id=coid, qty=qty, price=fen)

    result = run(with_client(url, key, work), as_json)
    if as_json:
        emit_json(result)
    else:
        report_table([result], "amended").show(_out)


@click.command()
@click.option("--instrument", default="", help="Only orders on this instrument.")
@click.option(
    "--all", "history", is_flag=True, help="Finished orders too, newest first (see --limit)."
)
@page_options("orders", only_with="--all")
@click.option("--account", default="", help="With --all, operators: another account's.")
@connection_options
def orders(
    instrument: str,
    history: bool,
    limit: int,
    before: int,
    account: str,
    url: str,
    key: str,
    as_json: bool,
) -> None:
    """List the account's open orders (an operator: everyone's), or with --all its
    order history.

    \b
    Examples:
      suanli orders --instrument H800-SUZHOU-STATE-W1
      suanli orders --all --limit 50
    """
    if not history:
        result = run(with_client(url, key, lambda c: c.open_orders(instrument)), as_json)
        if as_json:
            emit_json(result)
        else:
            report_table(result, f"{counted(len(result), 'open order')}").show(_out)
        return
    views = run(
        with_client(
            url,
            key,
            lambda c: c.order_history(
                account, instrument_id=instrument, limit=limit, before=before
            ),
        ),
        as_json,
    )
    if as_json:
        emit_json(views)
        return
    table = tables.Listing(
        f"order history ({counted(len(views), 'order')}, newest first)",
        ("id", "client id", "account", "instrument", "side", "price", "GPU-h", "filled", "status"),
        numbers=("id", "price", "GPU-h", "filled"),
    )
    for o in views:
        status = f"{o.status.value} {o.reason}".strip()
        side = o.side.value if o.side else ""
        table.add_row(
            str(o.order_id),
            o.client_order_id,
            o.account,
            o.instrument_id,
            side,
            yuan(o.price),
            str(o.qty),
            str(o.cum_qty),
            status,
        )
    table.show(_out)


# --- records ----------------------------------------------------------------------------


@click.command()
@click.option("--account", default="", help="Operators: another account, or 'all'.")
@connection_options
def balances(account: str, url: str, key: str, as_json: bool) -> None:
    """Show cash (free and reserved), capacity and holdings of the account.

    \b
    Examples:
      suanli balances
      suanli balances --account all --json     # operators
    """

    async def work(client: Client) -> list[p.Balance]:
        if account == "all":
            return await client.all_balances()
        return [await client.balances(account)]

    result = run(with_client(url, key, work), as_json)
    if as_json:
        emit_json(result if account == "all" else result[0])
        return
    table = tables.Listing(
        "balances",
        ("account", "role", "cash CNY", "reserved CNY", "capacity GPU-h", "holdings GPU-h"),
        numbers=("cash CNY", "reserved CNY"),
        text=("capacity GPU-h", "holdings GPU-h"),
    )
    for b in result:
        # One instrument a line: a cell wraps at its spaces, never inside an id.
        capacity = "\n".join(
            f"{i}: {q} free / {b.capacity_reserved.get(i, 0)} reserved / "
            f"{b.capacity_sold.get(i, 0)} sold"
            for i, q in sorted(b.capacity.items())
        )
        holdings = "\n".join(f"{i}: {q}" for i, q in sorted(b.holdings.items()))
        table.add_row(
            b.account_id, b.role.value, yuan(b.cash), yuan(b.cash_reserved), capacity, holdings
        )
    table.show(_out)


@click.command()
@connection_options
def vouchers(url: str, key: str, as_json: bool) -> None:
    """Show the vouchers the account holds (start-ups) or has issued (issuers).

    \b
    Example:
      suanli vouchers --json
    """
    result = run(with_client(url, key, lambda c: c.vouchers()), as_json)
    if as_json:
        emit_json(result)
        return
    table = tables.Listing(
        "vouchers",
        ("id", "programme", "issuer", "holder", "amount", "free", "reserved", "spent"),
        numbers=("id", "amount", "free", "reserved", "spent"),
    )
    for v in result:
        table.add_row(
            str(v.voucher_id),
            v.programme_id,
            v.issuer,
            v.holder,
            yuan(v.amount),
            yuan(v.balance),
            yuan(v.reserved),
            yuan(v.spent),
        )
    table.show(_out)


@click.command()
@page_options("contracts")
@click.option("--account", default="", help="Operators: another account's (default: everyone's).")
@connection_options
def contracts(limit: int, before: int, account: str, url: str, key: str, as_json: bool) -> None:
    """Show the compute contracts the account bought or sold, with cash and voucher
    parts, newest first.

    \b
    Examples:
      suanli contracts
      suanli contracts --limit 100 --before 5120 --json
      suanli contracts --account gusu-robotics      # operators
    """
    result = run(
        with_client(url, key, lambda c: c.contracts(account, limit=limit, before=before)), as_json
    )
    if as_json:
        emit_json(result)
        return
    table = tables.Listing(
        "compute contracts",
        ("id", "instrument", "buyer", "seller", "price", "GPU-h", "cash", "voucher", "claim"),
        numbers=("id", "price", "GPU-h", "cash", "voucher", "claim"),
    )
    for c in result:
        table.add_row(
            str(c.contract_id),
            c.instrument_id,
            c.buyer,
            c.seller,
            yuan(c.price),
            str(c.qty),
            yuan(c.cash),
            yuan(c.voucher),
            str(c.claim_id or ""),
        )
    table.show(_out)


COMMANDS = (serve, demo, book, order, cancel, amend, orders, balances, vouchers, contracts)


def register(group: click.Group) -> None:
    """Add these commands to the ``suanli`` group."""
    for command in COMMANDS:
        group.add_command(command)

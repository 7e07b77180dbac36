"""``suanli`` commands for operators and voucher issuers.

Operators list, open, halt, resume and close instruments; issuers issue
vouchers and settle the claims data centres present. The same ``--url``,
``--key`` and ``--json`` options and exit codes as ``clients.cli_market``.
"""

from __future__ import annotations

from typing import Any

import click
import msgspec
from rich.progress import Progress

from clients import cli_tables as tables
from clients.cli_market import (
    DEFAULT_URL,
    _err,
    _out,
    connection_options,
    counted,
    emit_json,
    parse_price,
    parse_time,
    run,
    with_client,
    yuan,
)
from clients.sdk import Client, Refused
from exchange.reference import InstrumentSpec, InstrumentStatus, Tier
from gateway import protocol as p


@click.group()
def instrument() -> None:
    """Show instruments; operators list, open, halt, resume or close them."""


@instrument.command("show")
@connection_options
def instrument_show(url: str, key: str, as_json: bool) -> None:
    """Show every listed instrument with its status, best prices and volume.

    \b
    Example:
      suanli instrument show
    """
    result = run(with_client(url, key, lambda c: c.instruments()), as_json)
    if as_json:
        emit_json(result)
        return
    table = tables.Listing(
        "instruments",
        ("instrument", "GPU", "hub", "tier", "status", "bid", "ask", "last", "volume GPU-h"),
        numbers=("bid", "ask", "last", "volume GPU-h"),
        text=("GPU",),
    )
    for v in result:
        s = v.spec
        table.add_row(
            s.instrument_id,
            s.gpu_model + (" (domestic)" if s.domestic else ""),
            s.hub,
            s.tier.value,
            v.status.value,
            yuan(v.best_bid) if v.best_bid else "",
            yuan(v.best_ask) if v.best_ask else "",
            yuan(v.last_price) if v.last_price else "",
            str(v.volume),
        )
    table.show(_out)


@instrument.command("add")
@click.argument("instrument_id")
@click.option("--gpu-model", required=True, help="e.g. H800, Ascend910B.")
@click.option("--domestic", is_flag=True, help="A domestic chip (voucher rates may differ).")
@click.option("--hub", required=True, help="Hub or region where the capacity sits.")
@click.option(
    "--tier", type=click.Choice([t.value for t in Tier], case_sensitive=False), required=True
)
@click.option("--start", required=True, help="Delivery window start: ISO date-time (UTC) or +7d.")
@click.option("--end", required=True, help="Delivery window end: ISO date-time (UTC) or +14d.")
@click.option("--tick", default="0.05", show_default=True, help="Price increment, CNY.")
@click.option("--lot", type=int, default=8, show_default=True, help="Quantity increment, GPU-h.")
@click.option("--open", "open_now", is_flag=True, help="Open for continuous trading at once.")
@connection_options
def instrument_add(
    instrument_id: str,
    gpu_model: str,
    domestic: bool,
    hub: str,
    tier: str,
    start: str,
    end: str,
    tick: str,
    lot: int,
    open_now: bool,
    url: str,
    key: str,
    as_json: bool,
) -> None:
    """List a new instrument (operators): a GPU-hour delivery contract.

    \b
    Example:
      suanli instrument add H800-SUZHOU-STATE-W9 --gpu-model H800 --hub suzhou \\
          --tier STATE --start 2026-12-07 --end 2026-12-14 --open
    """
    spec = InstrumentSpec(
        instrument_id=instrument_id,
        gpu_model=gpu_model,
        domestic=domestic,
        hub=hub,
        tier=Tier(tier.upper()),
        delivery_start=parse_time(start),
        delivery_end=parse_time(end),
        tick=parse_price(tick),
        lot=lot,
    )

    async def work(client: Client) -> list[p.Ack]:
        acks = [await client.list_instrument(spec)]
        if open_now:
            acks.append(await client.set_instrument_status(instrument_id, InstrumentStatus.OPEN))
        return acks

    acks = run(with_client(url, key, work), as_json)
    if as_json:
        emit_json(acks)
    else:
        _out.print(f"listed {instrument_id}" + (" and opened it" if open_now else ""))


def _status_command(name: str, status: InstrumentStatus, verb: str) -> click.Command:
    @instrument.command(name)
    @click.argument("instrument_id")
    @connection_options
    def change(instrument_id: str, url: str, key: str, as_json: bool) -> None:
        ack = run(
            with_client(url, key, lambda c: c.set_instrument_status(instrument_id, status)),
            as_json,
        )
        if as_json:
            emit_json(ack)
        else:
            _out.print(f"{instrument_id}: {ack.result.get('status', status.value)}")

    change.help = (
        f"{verb} INSTRUMENT_ID (operators): set its status to {status.value}.\n\n"
        f"\b\nExample:\n  suanli instrument {name} H800-SUZHOU-STATE-W1"
    )
    return change


_status_command("open", InstrumentStatus.OPEN, "Open")
_status_command("auction", InstrumentStatus.AUCTION, "Start a call auction on")
_status_command("halt", InstrumentStatus.HALTED, "Halt trading on (orders stay; cancels allowed)")
_status_command("resume", InstrumentStatus.OPEN, "Resume continuous trading on")
_status_command("close", InstrumentStatus.CLOSED, "Close for good (cancels every order)")


@click.group()
def voucher() -> None:
    """Issuers: issue computing vouchers to eligible start-ups."""


@voucher.command("issue")
@click.argument("programme_id")
@click.argument("holder")
@click.argument("amount")
@connection_options
def voucher_issue(
    programme_id: str, holder: str, amount: str, url: str, key: str, as_json: bool
) -> None:
    """Issue a voucher of PROGRAMME_ID worth AMOUNT CNY to the start-up HOLDER.

    \b
    Example:
      suanli voucher issue sh-compute qingyun-ai 500000 --key $ISSUER_KEY
    """
    fen = parse_price(amount)
    voucher_id = run(
        with_client(url, key, lambda c: c.issue_voucher(programme_id, holder, fen)), as_json
    )
    if as_json:
        emit_json({"ok": True, "voucher_id": voucher_id, "holder": holder, "amount": fen})
    else:
        _out.print(f"voucher {voucher_id}: {yuan(fen)} CNY to {holder}")


@click.command()
@click.option("--open", "only_open", is_flag=True, help="Only claims not yet settled.")
@connection_options
def claims(only_open: bool, url: str, key: str, as_json: bool) -> None:
    """Show voucher claims: held by a data centre, or owed by an issuer.

    \b
    Example:
      suanli claims --open --key $ISSUER_KEY
    """
    result = run(with_client(url, key, lambda c: c.claims()), as_json)
    if only_open:
        result = [c for c in result if not c.settled]
    if as_json:
        emit_json(result)
        return
    table = tables.Listing(
        "voucher claims",
        ("claim", "contract", "voucher", "programme", "issuer", "provider", "CNY", "settled"),
        numbers=("claim", "contract", "voucher", "CNY"),
    )
    for c in result:
        table.add_row(
            str(c.claim_id),
            str(c.contract_id),
            str(c.voucher_id),
            c.programme_id,
            c.issuer,
            c.provider,
            yuan(c.amount),
            "yes" if c.settled else "no",
        )
    table.show(_out)


@click.command()
@click.argument("claim_ids", type=int, nargs=-1)
@click.option("--all", "settle_all", is_flag=True, help="Settle every open claim on the issuer.")
@connection_options
def settle(claim_ids: tuple[int, ...], settle_all: bool, url: str, key: str, as_json: bool) -> None:
    """Issuers: settle voucher claims (pay the data centre the voucher part).

    \b
    Examples:
      suanli settle 3 4 5 --key $ISSUER_KEY
      suanli settle --all --key $ISSUER_KEY --json
    """
    if not claim_ids and not settle_all:
        raise click.UsageError("give CLAIM_IDS or --all")

    async def work(client: Client) -> dict[str, Any]:
        ids = list(claim_ids)
        if settle_all:
            ids += [c.claim_id for c in await client.claims() if not c.settled]
        settled: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        with Progress(console=_err, transient=True, disable=as_json) as progress:
            task = progress.add_task("settling claims", total=len(ids))
            for claim_id in ids:
                try:
                    ack = await client.settle_claim(claim_id)
                    settled.append({"claim_id": claim_id, "amount": ack.result.get("amount", 0)})
                except Refused as exc:
                    refused.append({"claim_id": claim_id, "error": exc.code, "text": exc.text})
                progress.advance(task)
        return {"ok": not refused, "settled": settled, "refused": refused}

    result = run(with_client(url, key, work), as_json)
    if as_json:
        emit_json(result)
    else:
        total = sum(int(s["amount"]) for s in result["settled"])
        _out.print(f"settled {counted(len(result['settled']), 'claim')}, {yuan(total)} CNY")
        for r in result["refused"]:
            _err.print(f"[red]claim {r['claim_id']} refused[/red] {r['error']}: {r['text']}")
    if result["refused"]:
        raise SystemExit(1)


# --- simulate ---------------------------------------------------------------------------


@click.command()
@click.option("--seconds", type=float, default=20.0, show_default=True, help="Trading time.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the market.")
@click.option("--startups", type=int, default=8, show_default=True, help="Start-ups bidding.")
@click.option(
    "--max-orders", type=int, default=2_000, show_default=True, help="Orders at most, in all."
)
@click.option("--tag", default="", help="Prefix of every name the run creates.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    default="simulation-report.json",
    show_default=True,
    help="Where to write the report as JSON.",
)
@click.option("--url", envvar="SUANLI_URL", default=DEFAULT_URL, show_default=True)
@click.option(
    "--key",
    envvar="SUANLI_API_KEY",
    default="",
    help="An operator's API key (default: the demo operator's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, not tables.")
def simulate(
    seconds: float,
    seed: int,
    startups: int,
    max_orders: int,
    tag: str,
    out: str,
    url: str,
    key: str,
    as_json: bool,
) -> None:
    """Bring a market to life: data centres, start-ups with vouchers and noisy traders.

    Lists three instruments, admits the agents, gives each its own connection
    and trades for --seconds. Then prints trades, volume and VWAP by
    instrument, voucher spend by issuer, start-ups' savings, the allocative
    efficiency and conservation checks, and writes them to --out. Exits 1 if a
    check fails. Needs an operator's key (against `make demo` none is needed):
    another account's key exits 1 with NOT_PERMITTED.

    \b
    Examples:
      suanli simulate --seconds 30 --seed 7
      suanli simulate --url http://exchange:8080 --key $OPERATOR_KEY --json
    """
    from clients.simulator import SimulationConfig
    from clients.simulator import simulate as run_simulation
    from gateway.demo import demo_key

    config = SimulationConfig(
        seed=seed, seconds=seconds, max_orders=max_orders, startups=startups, tag=tag
    )
    with Progress(console=_err, transient=True, disable=as_json) as bar:
        task = bar.add_task("simulating", total=1000)

        def advance(done: float, orders: int) -> None:
            bar.update(task, completed=int(done * 1000), description=f"simulating: {orders} orders")

        report = run(run_simulation(url, key or demo_key("ops"), config, advance), as_json)
    with open(out, "w", encoding="utf-8") as handle:
        handle.write(msgspec.json.format(msgspec.json.encode(report), indent=2).decode())
    if as_json:
        emit_json(report)
    else:
        _print_report(report, out)
    if not report["ok"]:
        raise SystemExit(1)


def _print_report(report: dict[str, Any], out: str) -> None:
    columns = ("instrument", "trades", "GPU-hours", "VWAP CNY", "surplus", "max", "efficiency")
    table = tables.Listing(
        f"simulation {report['tag']} (seed {report['seed']})", columns, numbers=columns[1:]
    )
    for instrument_id, row in report["by_instrument"].items():
        surplus = report["surplus"][instrument_id]
        table.add_row(
            instrument_id,
            str(row["trades"]),
            str(row["volume"]),
            yuan(row["vwap"]),
            yuan(surplus["realised"]),
            yuan(surplus["maximum"]),
            f"{surplus['efficiency']:.1%}",
        )
    table.add_row(
        "all",
        str(report["trades"]),
        str(report["volume_gpu_hours"]),
        "",
        yuan(report["realised_surplus"]),
        yuan(report["maximum_surplus"]),
        f"{report['efficiency']:.1%}",
        style="bold",
    )
    table.show(_out)
    vouchers = tables.Listing("vouchers", ("who", "CNY"), numbers=("CNY",))
    for issuer, amount in report["voucher_spend_by_issuer"].items():
        vouchers.add_row(f"spent on issuer {issuer}", yuan(amount))
    for startup, amount in report["startup_voucher_savings"].items():
        vouchers.add_row(f"saved by {startup}", yuan(amount))
    vouchers.show(_out)
    for c in report["checks"]:
        mark = "[green]ok[/green]" if c["ok"] else f"[red]FAILED[/red] {c['detail']}"
        _out.print(f"{c['check']}: {mark}")
    _out.print(f"report written to {out}")


COMMANDS = (instrument, voucher, claims, settle, simulate)


def register(group: click.Group) -> None:
    """Add these commands to the ``suanli`` group."""
    for command in COMMANDS:
        group.add_command(command)

"""The ``suanli`` command line.

``suanli journal verify PATH`` replays a journal from its first command into a
fresh core, checks the core's invariants along the way (``exchange.audit``)
and compares the state with every snapshot it passes, then prints a summary.
For a data directory it reads the segments the store archived (``archive/``)
before the live ones, so retention never hides history from the tools; if
retention deleted segments, both commands say so and which commands are gone.
``suanli journal export PATH --out FILE.csv`` writes every compute contract
(each trade is one) in journal order, for audit. Both only read: a torn tail is
reported, not cut off. Exit status: 0 when sound, 1 on damage or a broken
invariant, 2 on a usage error (a PATH that holds no journal is one).
"""

from __future__ import annotations

import csv
import datetime
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import click
import msgspec
import structlog
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from exchange import audit
from exchange.commands import Command
from exchange.core import ExchangeCore
from exchange.events import ClaimSettled, Event, Rejected, Trade
from exchange.journal import Batch, JournalError, JournalReader
from exchange.snapshot import SnapshotError, digest, list_snapshots, read_snapshot
from exchange.store import ARCHIVE_DIR, gc_paused, history_reader, missing_history, replay

_stderr = Console(stderr=True)


def _log_to_stderr() -> None:
    # Resolve sys.stderr at each call, so a swapped stream (tests) is honoured.
    structlog.configure(logger_factory=lambda *args: structlog.PrintLogger(sys.stderr))


@click.group(name="suanli", context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Suanli, a compute-power exchange: operator and audit tools."""
    _log_to_stderr()


@main.group()
def journal() -> None:
    """Check and export a write-ahead journal (see docs/durability.md)."""


# --- replay ------------------------------------------------------------------------


@dataclass
class _Replay:
    """A from-scratch replay of one journal, with what it saw on the way."""

    reader: JournalReader
    snapshots: dict[int, Path]
    check_every: int
    data_dir: Path | None = None  # when PATH was a data directory: archive/ included
    core: ExchangeCore = field(default_factory=ExchangeCore)
    commands: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    trades: int = 0
    volume: int = 0
    turnover: int = 0
    checks: int = 0
    problems: list[str] = field(default_factory=list)
    snapshot_results: list[dict[str, Any]] = field(default_factory=list)
    faults: int = 0
    last_seq: int = 0

    def observe(self, seq: int, command: Command, events: list[Event]) -> None:
        self.commands[type(command).__name__] += 1
        self.last_seq = seq
        for event in events:
            if type(event) is Trade:
                self.trades += 1
                self.volume += event.qty
                self.turnover += event.price * event.qty
            elif type(event) is Rejected:
                self.rejected += 1
        if self.check_every and seq % self.check_every == 0:
            self._check(seq, contracts=False)
        if seq in self.snapshots:
            self._compare_snapshot(seq, self.snapshots[seq])

    def _check(self, seq: int, *, contracts: bool) -> None:
        self.checks += 1
        if not self.problems:  # the first broken state is the one worth reading
            self.problems = [
                f"after command {seq}: {p}" for p in audit.problems(self.core, contracts=contracts)
            ]

    def _compare_snapshot(self, seq: int, path: Path) -> None:
        try:
            _, saved = read_snapshot(path)
        except SnapshotError as exc:
            self.snapshot_results.append(
                {"seq": seq, "path": str(path), "ok": False, "error": str(exc)}
            )
            return
        same = digest(saved) == digest(self.core)
        result: dict[str, Any] = {"seq": seq, "path": str(path), "ok": same}
        if not same:
            result["error"] = "snapshot state differs from the replayed state"
        self.snapshot_results.append(result)

    def check_start(self) -> None:
        """Raise ``JournalError``, saying why, unless the journal starts at command 1."""
        first = self.reader.first_seq
        if first != 1:
            start = self.reader.segments[0].path
            if self.data_dir is not None:
                raise JournalError(
                    f"{self.data_dir}: the journal starts at command {first} ({start}); "
                    + missing_history(self.data_dir, first)
                )
            archive = start.parent.parent / ARCHIVE_DIR
            hint = (
                f" (earlier segments are in {archive}: pass the data directory "
                f"{start.parent.parent} to read them too)"
                if start.parent.name == "journal" and archive.is_dir()
                else ""
            )
            raise JournalError(
                f"{start}: the journal starts at command {first}; "
                f"a replay from scratch needs command 1{hint}"
            )

    def run(self, observe: Callable[[int, Command, list[Event]], None] | None = None) -> None:
        self.check_start()

        def both(seq: int, command: Command, events: list[Event]) -> None:
            self.observe(seq, command, events)
            if observe is not None:
                observe(seq, command, events)

        with _progress(self.reader.total_bytes) as advance, gc_paused():
            _, self.faults = replay(self.core, _advancing(self.reader, advance), 0, both)
        self._check(self.last_seq, contracts=True)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r["ok"] for r in self.snapshot_results)


def _advancing(reader: JournalReader, advance: Callable[[int], None]) -> Iterator[Batch]:
    for batch in reader.batches():
        yield batch
        advance(batch.size)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr over the journal's bytes (shown on a terminal only)."""
    with Progress(
        TextColumn("replaying"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=_stderr,
        disable=not _stderr.is_terminal,
        transient=True,
    ) as progress:
        task = progress.add_task("replay", total=total or 1)
        yield lambda n: progress.advance(task, n)


def _replay_of(path: Path, check_every: int, *, snapshots: bool) -> _Replay:
    """A replay of the journal at PATH: a data dir (its archive included, and its
    snapshots to compare if ``snapshots``), a journal dir, or a segment file.

    A directory that is neither is a usage error: replaying it would find no
    command and call the journal sound.
    """
    if path.is_file():
        return _Replay(JournalReader.for_file(path), {}, check_every)
    if (path / "journal").is_dir():
        found = dict(list_snapshots(path / "snapshots")) if snapshots else {}
        return _Replay(history_reader(path), found, check_every, data_dir=path)
    reader = JournalReader(path)
    if not reader.segments:
        raise click.BadParameter(
            f"{str(path)!r} holds no journal: it is not a data directory (with journal/) "
            "and has no segment files (<20 digits>.wal)",
            param_hint="'PATH'",
        )
    return _Replay(reader, {}, check_every)


def _fail(message: str, as_json: bool) -> None:
    if as_json:
        click.echo(msgspec.json.encode({"ok": False, "error": message}).decode())
        sys.exit(1)
    raise click.ClickException(message)


# --- verify ------------------------------------------------------------------------


@journal.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option(
    "--check-every",
    default=10_000,
    show_default=True,
    metavar="N",
    help="Check every invariant after each N commands (1: after every command); always at the end.",
)
def verify(path: Path, as_json: bool, check_every: int) -> None:
    """Replay the journal at PATH from scratch and check it.

    PATH is a data directory (its archived segments are read before the live
    ones, and its snapshots are compared with the replay as it passes them), a
    journal directory, or one segment file starting at command 1. Prints
    commands, trades and digests of the final balances and state. Exits 1 if a
    record is damaged or missing, an invariant breaks or a snapshot differs;
    exits 2 (a usage error) if PATH holds no journal.

    \b
    Examples:
      suanli journal verify data/
      suanli journal verify data/journal --check-every 1 --json
    """
    try:
        run = _replay_of(path, check_every, snapshots=True)
        reader = run.reader
        started = time.perf_counter()
        run.run()
        seconds = time.perf_counter() - started
    except (JournalError, OSError) as exc:
        _fail(str(exc), as_json)
        return
    core = run.core
    torn = reader.torn
    summary: dict[str, Any] = {
        "ok": run.ok,
        "path": str(path),
        "segments": len(reader.segments),
        "archived_segments": sum(s.path.parent.name == ARCHIVE_DIR for s in reader.segments),
        "records": reader.records,
        "commands": sum(run.commands.values()),
        "last_seq": run.last_seq,
        "by_command": dict(sorted(run.commands.items())),
        "rejected": run.rejected,
        "faults": run.faults,
        "trades": run.trades,
        "volume_gpu_hours": run.volume,
        "turnover_fen": run.turnover,
        "open_orders": len(core.orders),
        "accounts": len(core.accounts),
        "torn_tail": None
        if torn is None
        else {
            "path": str(torn.path),
            "offset": torn.offset,
            "bytes": torn.length,
            "reason": torn.reason,
        },
        "invariant_checks": run.checks,
        "problems": run.problems,
        "snapshots": run.snapshot_results,
        "balances_digest": audit.balances_digest(core),
        "state_digest": digest(core),
        "seconds": round(seconds, 3),
    }
    if as_json:
        click.echo(msgspec.json.encode(summary).decode())
    else:
        _print_summary(summary)
    if not run.ok:
        sys.exit(1)


def _print_summary(summary: dict[str, Any]) -> None:
    console = Console()
    for key in (
        "path",
        "segments",
        "archived_segments",
        "records",
        "commands",
        "last_seq",
        "rejected",
        "faults",
        "trades",
        "volume_gpu_hours",
        "turnover_fen",
        "open_orders",
        "accounts",
        "invariant_checks",
        "balances_digest",
        "state_digest",
        "seconds",
    ):
        # A line each, never cut or wrapped by rich: digests are compared whole.
        name = key.replace("_", " ")
        console.print(f"[bold]{name:<18}[/] {summary[key]}", soft_wrap=True, highlight=False)
    torn = summary["torn_tail"]
    if torn:
        console.print(
            f"[yellow]torn tail[/]: {torn['path']} at byte {torn['offset']}, {torn['bytes']} "
            f"bytes ({torn['reason']}); never acknowledged, dropped at the next start"
        )
    for result in summary["snapshots"]:
        mark = "[green]matches[/]" if result["ok"] else f"[red]{result['error']}[/]"
        console.print(f"snapshot at {result['seq']}: {mark}")
    for problem in summary["problems"]:
        console.print(f"[red]broken invariant[/] {problem}")
    console.print("[green]journal sound[/]" if summary["ok"] else "[red]journal NOT sound[/]")


# --- export ------------------------------------------------------------------------

CONTRACT_COLUMNS = (
    "seq",
    "ts",
    "time_utc",
    "contract_id",
    "instrument_id",
    "gpu_model",
    "hub",
    "tier",
    "domestic",
    "price_fen",
    "qty_gpu_hours",
    "value_fen",
    "cash_fen",
    "voucher_fen",
    "voucher_id",
    "claim_id",
    "programme_id",
    "issuer",
    "buyer",
    "seller",
    "buy_order_id",
    "sell_order_id",
    "aggressor",
)
CLAIM_COLUMNS = (
    "claim_id",
    "contract_id",
    "voucher_id",
    "programme_id",
    "issuer",
    "provider",
    "amount_fen",
    "created_ts",
    "settled",
    "settled_seq",
    "settled_ts",
)


def _utc(ts: int) -> str:
    moment = datetime.datetime.fromtimestamp(ts // 10**9, datetime.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ts % 10**9:09d}Z"


class _ContractWriter:
    def __init__(self, out: TextIO, core: ExchangeCore) -> None:
        self.rows = 0
        self.core = core
        self.settled_seq: dict[int, int] = {}
        self._csv = csv.writer(out, lineterminator="\n")
        self._csv.writerow(CONTRACT_COLUMNS)

    def __call__(self, seq: int, command: Command, events: list[Event]) -> None:
        for event in events:
            if type(event) is Trade:
                self._write(seq, event)
            elif type(event) is ClaimSettled:
                self.settled_seq[event.claim_id] = seq

    def _write(self, seq: int, trade: Trade) -> None:
        spec = self.core.instruments[trade.instrument_id].spec
        voucher = self.core.vouchers.get(trade.voucher_id) if trade.voucher_id else None
        self._csv.writerow(
            (
                seq,
                trade.ts,
                _utc(trade.ts),
                trade.trade_id,
                trade.instrument_id,
                spec.gpu_model,
                spec.hub,
                spec.tier,
                int(spec.domestic),
                trade.price,
                trade.qty,
                trade.price * trade.qty,
                trade.cash,
                trade.voucher,
                trade.voucher_id or "",
                trade.claim_id or "",
                voucher.programme_id if voucher else "",
                voucher.issuer if voucher else "",
                trade.buyer,
                trade.seller,
                trade.buy_order_id,
                trade.sell_order_id,
                trade.aggressor or "",
            )
        )
        self.rows += 1


@journal.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="CSV file for the contracts (one row per trade).",
)
@click.option(
    "--claims",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write every voucher claim and its settlement to this CSV file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def export(path: Path, out: Path, claims: Path | None, as_json: bool) -> None:
    """Export the journal's trades and compute contracts at PATH as CSV.

    Each trade is one compute contract: one row with its sequence number, time,
    instrument, price (fen per GPU-hour), GPU-hours, value, the cash and voucher
    parts, the voucher's programme and issuer, the claim, buyer and seller.
    Rows come in journal order, from command 1: for a data directory the
    segments the store archived are read first. PATH is read as by verify; if it
    holds no journal, exits 2 (a usage error) and writes nothing.

    \b
    Examples:
      suanli journal export data/ --out contracts.csv
      suanli journal export data/journal --out contracts.csv --claims claims.csv
    """
    try:
        run = _replay_of(path, check_every=0, snapshots=False)
        run.check_start()  # before any file is written
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = _ContractWriter(handle, run.core)
            run.run(writer)
        if claims is not None:
            _write_claims(claims, run.core, writer.settled_seq)
    except (JournalError, OSError) as exc:
        _fail(str(exc), as_json)
        return
    summary = {
        "ok": run.ok,
        "contracts": writer.rows,
        "out": str(out),
        "claims": len(run.core.claims) if claims is not None else None,
        "commands": sum(run.commands.values()),
        "problems": run.problems,
    }
    if as_json:
        click.echo(msgspec.json.encode(summary).decode())
    else:
        click.echo(f"{writer.rows} contracts from {summary['commands']} commands -> {out}")
        if claims is not None:
            click.echo(f"{len(run.core.claims)} claims -> {claims}")
        for problem in run.problems:
            click.echo(f"broken invariant {problem}", err=True)
    if not run.ok:
        sys.exit(1)


def _write_claims(path: Path, core: ExchangeCore, settled_seq: dict[int, int]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CLAIM_COLUMNS)
        for claim in core.claims.values():
            writer.writerow(
                (
                    claim.claim_id,
                    claim.contract_id,
                    claim.voucher_id,
                    claim.programme_id,
                    claim.issuer,
                    claim.provider,
                    claim.amount,
                    claim.created_at,
                    int(claim.settled),
                    settled_seq.get(claim.claim_id, ""),
                    claim.settled_at or "",
                )
            )


# Trading, operator and simulator commands live in their own modules.
from clients import cli_market, cli_ops  # noqa: E402

cli_market.register(main)
cli_ops.register(main)


if __name__ == "__main__":
    main()

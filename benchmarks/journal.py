"""Durability costs: the service with and without its journal, and recovery.

What it measures
----------------
The workload is ``tests.journal_stream``: ``tests.market.Market``'s set-up,
then a seeded mix of limit, IOC, FOK, market and GTD orders (some paid with a
voucher), cancels, amends, cancel-alls, claim settlements, deposits, halts
with call auctions, and clock ticks; about a quarter of the commands trade.

``in_memory_commands_per_sec``
    ``ExchangeService`` with ``journal=None``: a client keeps ``--window``
    commands in flight (``submit_nowait`` in waves: a future per command and
    no task, the futures awaited together) until the stream is done. Queue,
    stamping, ``core.apply``, futures: everything but the disk. (The gateway
    posts with ``post``, which makes no future; a client that awaits needs one.)
``durable_commands_per_sec``
    The same service and stream on ``open_store`` (fsync on, snapshots off):
    every batch the service takes is encoded, written and ``fdatasync``-ed as
    one record before it is applied (group commit). ``mean_batch`` is the
    commands per fsync; ``fsync_ms`` is the median time of one small
    write + fdatasync on this disk, measured alone.
``replay_commands_per_sec``
    ``open_store(use_snapshots=False)`` on the durable run's directory:
    reading, checking, decoding and applying every journalled command into a
    fresh core (recovery from the journal alone), divided into its time.
``journal_read_commands_per_sec``
    The journal's own share of that: reading, checking and decoding every
    record of the same directory, applying nothing. ``replay_decode_share``
    is that share of the replay's time (replay rate / read rate); the rest is
    ``ExchangeCore.apply`` and the replay loop.
``snapshot_capture_ms``
    How long ``capture`` takes for the state those commands leave (every
    contract is kept, so it grows with history).
``snapshot_pause_ms``, ``snapshot_pause_ms_loop``
    The longest time one ``applied`` call (the store's hook, on the service's
    loop after each batch) blocks the loop while snapshots are taken: the
    service runs ``--pause-commands`` more commands of the stream on a copy of
    the durable run's store (the state of those commands) in three equal
    phases: no snapshots; one due every ``--pause-every`` commands with
    ``snapshot_capture="loop"`` (encode on the loop: the pause is one
    ``capture``); the same with ``"fork"`` (the pause is one ``fork``; the
    child encodes, writes and verifies). ``snapshot_child_seconds`` is how
    long the last forked child took, ``snapshots_forked`` how many were
    written, and ``snapshot_phase_commands_per_sec`` the service's rate in
    each phase (a live child costs the parent copy-on-write page faults). With
    the one-million run, the same on its state: ``snapshot_pause_ms_1m``,
    ``snapshot_pause_ms_loop_1m``, ``snapshot_child_seconds_1m``,
    ``snapshot_phase_commands_per_sec_1m``.
``recovery_seconds_for_1m``
    The start-up time of ``open_store(use_snapshots=False)`` on a journal of
    one million commands of the same stream, written beforehand with
    ``Journal.append`` in batches of 4,096 (generating it is not timed).

Method: one untimed warm-up of each service mode on the first part of the
stream, then ``--repeats`` timed runs of each, interleaved (in-memory,
durable, ...) so drift hits both alike; throughputs are medians, each run on a
fresh core and a fresh temporary directory. The garbage collector runs as in
service. The last line printed is one JSON object of the results;
``core_build`` says whether the core ran compiled (``"mypyc"``) or from its
sources (``SUANLI_PURE=1``; see ``exchange.native``).

    python -m benchmarks.journal [--commands 100000] [--repeats 3] [--skip-1m]
                                 [--pause-commands 30000] [--pause-every 2500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

from exchange import native
from exchange.commands import Command
from exchange.journal import Journal, JournalReader
from exchange.service import ExchangeService
from exchange.snapshot import capture
from exchange.store import Store, StoreJournal, gc_paused, open_store
from tests.journal_stream import orders, prelude, stamped

SEED = 2024


async def _drive(service: ExchangeService, commands: list[Command], window: int) -> None:
    submit = service.submit_nowait  # a future, no task, per command
    for start in range(0, len(commands), window):
        await asyncio.gather(*[submit(c) for c in commands[start : start + window]])


async def run_service(
    commands: list[Command], window: int, data_dir: Path | None
) -> dict[str, float]:
    """Commands per second through the service; with ``data_dir`` on a durable store."""
    store = open_store(data_dir, snapshot_every=0) if data_dir is not None else None
    service = (
        ExchangeService(core=store.core, journal=store.journal, next_seq=store.next_seq)
        if store is not None
        else ExchangeService()
    )
    gc.collect()
    async with service:
        started = time.perf_counter()
        await _drive(service, commands, window)
        seconds = time.perf_counter() - started
    result = {"commands_per_sec": len(commands) / seconds, "seconds": seconds}
    if store is not None:
        journal = store.journal.journal
        result["batches"] = journal.batches
        result["bytes"] = journal.bytes_written
        store.close()
    return result


class TimedApplied:
    """The store's journal as the service sees it, timing each ``applied`` call."""

    def __init__(self, journal: StoreJournal) -> None:
        self.journal = journal
        self.longest = 0.0

    def append(self, first_seq: int, commands: list[Command]) -> None:
        self.journal.append(first_seq, commands)

    def applied(self, last_seq: int) -> None:
        started = time.perf_counter()
        self.journal.applied(last_seq)
        self.longest = max(self.longest, time.perf_counter() - started)


async def _phase(store: Store, commands: list[Command], window: int) -> tuple[float, float]:
    """(longest ``applied`` ms, commands per second) of the service on these commands."""
    timed = TimedApplied(store.journal)
    service = ExchangeService(core=store.core, journal=timed, next_seq=store.next_seq)  # type: ignore[arg-type]
    async with service:
        started = time.perf_counter()
        await _drive(service, commands, window)
        seconds = time.perf_counter() - started
    store.wait_for_snapshot()
    return timed.longest * 1000, len(commands) / seconds


def snapshot_pauses(
    source: Path, copy: Path, commands: list[Command], every: int, window: int
) -> dict[str, float]:
    """Three phases on a copy of a store: no snapshots, snapshots on the loop, forked ones.

    For each: the longest ``applied`` pause and the service's throughput (a forked
    child costs the parent copy-on-write page faults while it lives)."""
    shutil.copytree(source, copy)
    store = open_store(copy, snapshot_every=0)
    third = len(commands) // 3
    result: dict[str, float] = {}
    gc.collect()
    for i, (name, snapshot_every, mode) in enumerate(
        (("none", 0, "loop"), ("loop", every, "loop"), ("fork", every, "fork"))
    ):
        store.snapshot_every = snapshot_every
        store.snapshot_capture = mode  # type: ignore[assignment]
        written = store.snapshots_written
        pause_ms, rate = asyncio.run(_phase(store, commands[i * third : (i + 1) * third], window))
        result[f"{name}_ms"] = pause_ms
        result[f"{name}_commands_per_sec"] = rate
        result[f"{name}_snapshots"] = store.snapshots_written - written
    assert store.last_snapshot is not None and store.snapshot_failure is None
    assert store.last_snapshot.pid != os.getpid()
    result["child_seconds"] = store.last_snapshot.seconds
    store.close()
    shutil.rmtree(copy)
    return result


def measure_fsync(directory: Path, n: int = 50) -> float:
    """Median milliseconds of one 200-byte write + fdatasync."""
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            os.write(fd, b"x" * 200)
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times) * 1000


def recovery(data_dir: Path) -> tuple[float, int, float]:
    """(seconds, commands replayed) of a start from the journal alone, and the
    milliseconds one snapshot capture of the recovered state takes."""
    gc.collect()
    started = time.perf_counter()
    store = open_store(data_dir, use_snapshots=False, snapshot_every=0)
    seconds = time.perf_counter() - started
    replayed = store.recovery.replayed
    started = time.perf_counter()
    capture(store.core, store.applied_seq)
    capture_ms = (time.perf_counter() - started) * 1000
    store.close()
    return seconds, replayed, capture_ms


def read_journal(data_dir: Path) -> float:
    """Commands per second of reading, checking and decoding a journal, applying nothing."""
    gc.collect()
    with gc_paused():
        started = time.perf_counter()
        count = sum(len(batch.commands) for batch in JournalReader(data_dir / "journal").batches())
        return count / (time.perf_counter() - started)


def write_journal(directory: Path, commands: list[Command], batch: int = 4_096) -> None:
    journal = Journal.open(directory / "journal")
    for start in range(0, len(commands), batch):
        journal.append(start + 1, commands[start : start + batch])
    journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=2_000, help="commands in flight")
    parser.add_argument("--skip-1m", action="store_true", help="skip the one-million recovery")
    parser.add_argument("--pause-commands", type=int, default=30_000)
    parser.add_argument("--pause-every", type=int, default=2_500)
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    commands = [*prelude(), *orders(SEED, args.commands)]
    warm = commands[: min(len(commands), 10_000)]
    results: dict[str, list[dict[str, float]]] = {"memory": [], "durable": []}
    with tempfile.TemporaryDirectory(prefix="suanli-bench-") as tmp:
        root = Path(tmp)
        fsync_ms = measure_fsync(root)
        asyncio.run(run_service(warm, args.window, None))
        asyncio.run(run_service(warm, args.window, root / "warm"))
        for i in range(args.repeats):
            results["memory"].append(asyncio.run(run_service(commands, args.window, None)))
            durable_dir = root / f"durable-{i}"
            results["durable"].append(asyncio.run(run_service(commands, args.window, durable_dir)))
            print(
                f"run {i + 1}: in-memory {results['memory'][-1]['commands_per_sec']:,.0f}/s, "
                f"durable {results['durable'][-1]['commands_per_sec']:,.0f}/s",
                file=sys.stderr,
            )
        replays = [recovery(root / f"durable-{i}") for i in range(args.repeats)]
        replay_rate = statistics.median(n / s for s, n, _ in replays)
        capture_ms = statistics.median(ms for _, _, ms in replays)
        read_rate = statistics.median(
            read_journal(root / f"durable-{i}") for i in range(args.repeats)
        )
        more = list(orders(SEED + 2, args.pause_commands))
        pauses = snapshot_pauses(
            root / "durable-0", root / "pauses", more, args.pause_every, args.window
        )
        print(f"snapshot pauses: {pauses}", file=sys.stderr)
        recovery_1m = None
        pauses_1m: dict[str, float] = {}
        if not args.skip_1m:
            started = time.perf_counter()
            million = stamped([*prelude(), *orders(SEED + 1, 1_000_000 - len(prelude()))])
            write_journal(root / "million", million)
            del million
            print(f"1M journal written in {time.perf_counter() - started:.1f}s", file=sys.stderr)
            seconds, replayed, _ = recovery(root / "million")
            assert replayed == 1_000_000, replayed
            recovery_1m = seconds
            pauses_1m = snapshot_pauses(
                root / "million", root / "pauses-1m", more, args.pause_every, args.window
            )
            print(f"snapshot pauses, 1M state: {pauses_1m}", file=sys.stderr)

    memory = statistics.median(r["commands_per_sec"] for r in results["memory"])
    durable = statistics.median(r["commands_per_sec"] for r in results["durable"])
    batches = sum(r["batches"] for r in results["durable"])
    out = {
        "benchmark": "journal",
        "commands": len(commands),
        "durable_commands_per_sec": round(durable),
        "in_memory_commands_per_sec": round(memory),
        "durable_vs_in_memory": round(durable / memory, 3),
        "replay_commands_per_sec": round(replay_rate),
        "journal_read_commands_per_sec": round(read_rate),
        "replay_decode_share": round(replay_rate / read_rate, 3),
        "recovery_seconds_for_1m": None if recovery_1m is None else round(recovery_1m, 2),
        "snapshot_capture_ms": round(capture_ms, 1),
        "snapshot_pause_ms": round(pauses["fork_ms"], 2),
        "snapshot_pause_ms_loop": round(pauses["loop_ms"], 2),
        "snapshot_child_seconds": round(pauses["child_seconds"], 3),
        "snapshots_forked": pauses["fork_snapshots"],
        "snapshot_phase_commands_per_sec": {
            name: round(pauses[f"{name}_commands_per_sec"]) for name in ("none", "loop", "fork")
        },
        "snapshot_pause_ms_1m": round(pauses_1m["fork_ms"], 2) if pauses_1m else None,
        "snapshot_pause_ms_loop_1m": round(pauses_1m["loop_ms"], 2) if pauses_1m else None,
        "snapshot_child_seconds_1m": (round(pauses_1m["child_seconds"], 3) if pauses_1m else None),
        "snapshot_phase_commands_per_sec_1m": {
            name: round(pauses_1m[f"{name}_commands_per_sec"]) for name in ("none", "loop", "fork")
        }
        if pauses_1m
        else None,
        "mean_batch": round(len(commands) * args.repeats / batches, 1),
        "journal_bytes_per_command": round(results["durable"][0]["bytes"] / len(commands), 1),
        "fsync_ms": round(fsync_ms, 3),
        "core_build": native.build(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

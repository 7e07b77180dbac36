"""Restarts: the store rebuilds exactly the state a service that never stopped would hold."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import random
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from exchange import audit, snapshot
from exchange import journal as jm
from exchange.commands import Command
from exchange.core import ExchangeCore
from exchange.events import Event, OrderAccepted, OrderCancelled, Rejected, Trade
from exchange.service import ExchangeService, ServiceStopped
from exchange.snapshot import list_snapshots
from exchange.store import Store, StoreError, open_store
from tests.journal_stream import orders, prelude, stream
from tests.market import T0, state_digest

SEED = 20


class Model:
    """A core fed, in memory, every command the service applied: it never stops."""

    def __init__(self) -> None:
        self.core = ExchangeCore()
        self.seen: list[tuple[int, Command, list[Event]]] = []

    def listener(self, seq: int, command: Command, events: list[Event]) -> None:
        assert seq == len(self.seen) + 1
        self.seen.append((seq, command, events))
        assert self.core.apply(command) == events, seq


def clock() -> Callable[[], int]:
    ticks = itertools.count(T0, 1_000)
    return lambda: next(ticks)


async def feed(
    store: Store, model: Model, commands: list[Command], tick: Callable[[], int], rng: random.Random
) -> ExchangeService:
    """Run a service on the store and send the commands in waves, many in flight at once."""
    service = ExchangeService(
        core=store.core, journal=store.journal, next_seq=store.next_seq, clock=tick
    )
    service.add_listener(model.listener)
    async with service:
        i = 0
        while i < len(commands):
            wave = commands[i : i + rng.randint(1, 300)]
            await asyncio.gather(*(service.submit(c) for c in wave))
            i += len(wave)
    return service


@pytest.mark.parametrize("snapshots", ["none", "periodic", "periodic-loop", "on-stop"])
async def test_restart_matches_a_model_that_never_stopped(tmp_path: Path, snapshots: str) -> None:
    print("seed", SEED, "snapshots", snapshots)
    rng = random.Random(SEED)
    commands = [*prelude(), *orders(SEED, 3_000)]
    cuts = [0, 17, 500, 1_400, 2_900, len(commands)]
    model = Model()
    tick = clock()
    every = 250 if snapshots.startswith("periodic") else 0
    capture = "loop" if snapshots == "periodic-loop" else "auto"
    for start, stop in itertools.pairwise(cuts):
        store = open_store(tmp_path, snapshot_every=every, snapshot_capture=capture)
        assert store.next_seq == start + 1
        assert state_digest(store.core) == state_digest(model.core), start
        await feed(store, model, commands[start:stop], tick, rng)
        if snapshots == "on-stop":
            store.snapshot()
        store.close()
    store = open_store(tmp_path)
    assert store.next_seq == len(commands) + 1
    assert state_digest(store.core) == state_digest(model.core)
    assert audit.problems(store.core) == []
    if snapshots != "none":
        assert store.recovery.snapshot_seq > 0 and store.recovery.replayed < len(commands)
        assert list_snapshots(tmp_path / "snapshots")
    else:
        assert store.recovery.replayed == len(commands)
    store.close()
    # The journal alone gives the same state as snapshot + journal.
    whole = open_store(tmp_path, use_snapshots=False)
    assert state_digest(whole.core) == state_digest(model.core)
    whole.close()


async def test_torn_tail_after_a_crash_loses_nothing_acknowledged(tmp_path: Path) -> None:
    model = Model()
    store = open_store(tmp_path)
    await feed(store, model, [*prelude(), *orders(SEED, 400)], clock(), random.Random(SEED))
    store.close()
    (segment,) = sorted((tmp_path / "journal").glob("*.wal"))
    with segment.open("ab") as handle:  # half a record: the crash came mid-write
        record = jm.encode_record(
            len(model.seen) + 1, [c for _, c, _ in model.seen[:30]], msgspec.msgpack.Encoder()
        )
        handle.write(record[: len(record) // 2])
    with capture_logs() as logs:
        store = open_store(tmp_path)
    assert "journal_torn_tail" in [entry["event"] for entry in logs]
    assert store.recovery.torn is not None
    assert store.next_seq == len(model.seen) + 1
    assert state_digest(store.core) == state_digest(model.core)
    store.close()


async def test_damaged_snapshot_falls_back_to_an_older_one(tmp_path: Path) -> None:
    model = Model()
    store = open_store(tmp_path, snapshot_every=0)
    await feed(store, model, [*prelude(), *orders(SEED, 300)], clock(), random.Random(SEED))
    older = store.snapshot()
    await feed(store, model, list(orders(SEED + 1, 300)), clock(), random.Random(SEED))
    newest = store.snapshot()
    store.close()
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with capture_logs() as logs:
        store = open_store(tmp_path)
    unusable = [e for e in logs if e["event"] == "snapshot_unusable"]
    assert unusable and str(newest) in unusable[0]["path"]
    assert store.recovery.snapshot_path == older
    assert state_digest(store.core) == state_digest(model.core)
    store.close()


async def test_a_snapshot_left_half_written_is_removed_at_start(tmp_path: Path) -> None:
    model = Model()
    store = open_store(tmp_path, snapshot_every=0)
    await feed(store, model, [*prelude(), *orders(SEED, 200)], clock(), random.Random(SEED))
    finished = store.snapshot()
    store.close()
    # What a writer killed between its write and its rename leaves behind.
    partial = finished.parent / f".snapshot-{'9' * 20}.snap.tmp"
    partial.write_bytes(finished.read_bytes()[:100])
    with capture_logs() as logs:
        store = open_store(tmp_path)
    assert [e["path"] for e in logs if e["event"] == "partial_snapshot_removed"] == [str(partial)]
    assert not partial.exists() and finished.exists()
    assert store.recovery.snapshot_path == finished
    assert state_digest(store.core) == state_digest(model.core)
    store.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_quiet_replay_builds_the_same_state(seed: int) -> None:
    loud, quiet = ExchangeCore(), ExchangeCore()
    quiet.quiet = True
    loud_events, quiet_events = [], []
    for command in stream(seed, 3_000):
        loud_events += loud.apply(command)
        quiet_events += quiet.apply(command)
    assert state_digest(quiet) == state_digest(loud)
    assert snapshot.digest(quiet) == snapshot.digest(loud)
    # Only the acknowledgements and refusals are left out; trades (the contracts) remain.
    left_out = (OrderAccepted, OrderCancelled, Rejected)
    assert [e for e in quiet_events if isinstance(e, left_out)] == []
    assert [e for e in loud_events if not isinstance(e, left_out)] == quiet_events
    assert any(isinstance(e, OrderAccepted) for e in loud_events)
    assert any(isinstance(e, Rejected) for e in loud_events)
    assert any(isinstance(e, Trade) for e in quiet_events)


async def test_snapshot_ahead_of_the_journal_is_refused(tmp_path: Path) -> None:
    model = Model()
    store = open_store(tmp_path)
    await feed(store, model, prelude(), clock(), random.Random(SEED))
    store.snapshot()
    store.close()
    for segment in (tmp_path / "journal").glob("*.wal"):
        segment.unlink()
    with pytest.raises(StoreError, match="journalled commands are missing"):
        open_store(tmp_path)


def test_one_process_per_data_directory(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    with pytest.raises(StoreError, match="in use"):
        open_store(tmp_path)
    store.close()
    open_store(tmp_path).close()


async def test_full_disk_stops_the_service_with_nothing_half_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Model()
    store = open_store(tmp_path)
    commands = [*prelude(), *orders(SEED, 600)]
    await feed(store, model, commands[:300], clock(), random.Random(SEED))
    real_pwrite = os.pwrite

    def disk_full(fd: int, data: memoryview, offset: int) -> int:
        real_pwrite(fd, data[:7], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", disk_full)
    service = ExchangeService(
        core=store.core, journal=store.journal, next_seq=store.next_seq, clock=clock()
    )
    service.add_listener(model.listener)
    async with service:
        results = await asyncio.gather(
            *(service.submit(c) for c in commands[300:400]), return_exceptions=True
        )
        assert all(isinstance(r, ServiceStopped) for r in results)
        assert "No space left" in str(results[0])
        with pytest.raises(ServiceStopped):
            await service.submit(commands[400])
    monkeypatch.undo()
    # Nothing of the failed batch was applied: the core is the model of the acknowledged ones.
    assert len(model.seen) == 300
    assert state_digest(store.core) == state_digest(model.core)
    store.close()
    store = open_store(tmp_path)
    assert store.next_seq == 301
    assert state_digest(store.core) == state_digest(model.core)
    store.close()

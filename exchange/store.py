"""The durable store: a data directory that rebuilds the core at start.

``open_store(data_dir)`` loads the newest good snapshot, replays the journal
after it, drops a torn tail, and opens the journal for appending. The service
then writes every batch through ``store.journal`` before applying it::

    store = open_store(Path("data"), snapshot_every=100_000)
    service = ExchangeService(core=store.core, journal=store.journal, next_seq=store.next_seq)
    async with service:
        ...
    store.close()

The rebuilt core equals the core before the stop or crash: every command that
was acknowledged was in the journal first, and the core is deterministic.

Layout of ``data_dir``::

    LOCK         held (flock) while a store is open: one process per directory
    journal/     segments of the write-ahead journal (exchange.journal)
    snapshots/   snapshot-<seq>.snap files (exchange.snapshot)

Snapshots. ``store.snapshot()`` writes one now. With ``snapshot_every=N``
the store captures the state after the batch that takes it N or more commands
past the last snapshot, on the service's loop between batches (the state is
consistent there), and writes the bytes on a background thread. Snapshots only
shorten recovery: the journal is kept whole, so a damaged snapshot costs time,
never data. The newest ``keep_snapshots`` are kept.

Call ``snapshot`` and ``close`` from the thread that runs the service's loop,
or when no service is running.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from exchange import audit
from exchange.commands import Command
from exchange.core import ExchangeCore
from exchange.events import Event
from exchange.journal import (
    DEFAULT_SEGMENT_BYTES,
    Batch,
    Journal,
    JournalReader,
    TornTail,
)
from exchange.snapshot import (
    SnapshotError,
    capture,
    list_snapshots,
    read_snapshot,
    write_snapshot,
)

log = structlog.get_logger("exchange.store")

DEFAULT_SNAPSHOT_EVERY = 100_000  # commands
Observer = Callable[[int, Command, list[Event]], None]


class StoreError(Exception):
    """The data directory cannot be opened as it stands."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a start did to rebuild the state."""

    snapshot_seq: int  # 0: no snapshot, replayed from the start
    snapshot_path: Path | None
    replayed: int  # commands replayed from the journal
    last_seq: int
    torn: TornTail | None
    faults: int  # commands that raised in the core (as they did when first applied)
    seconds: float


def replay(
    core: ExchangeCore,
    batches: Iterable[Batch],
    after_seq: int,
    observe: Observer | None = None,
) -> tuple[int, int]:
    """Apply every journalled command numbered above ``after_seq``; (applied, faults).

    A command that raises in the core is passed over, as the service passed
    over it when it first ran, so the state comes out the same.
    """
    apply = core.apply
    applied = faults = 0
    for batch in batches:
        seq = batch.first_seq
        commands: Sequence[Command] = batch.commands
        if seq <= after_seq:
            commands = commands[after_seq + 1 - seq :]
            seq = after_seq + 1
        for command in commands:
            try:
                events = apply(command)
            except Exception:
                faults += 1
                log.exception("replay_command_fault", seq=seq, command=type(command).__name__)
                events = []
            if observe is not None:
                observe(seq, command, events)
            seq += 1
        applied += len(commands)
    return applied, faults


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a large state is built (it makes no cycles)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class StoreJournal:
    """What the service writes to: the journal, and a hook for applied batches."""

    def __init__(self, store: Store, journal: Journal) -> None:
        self._store = store
        self.journal = journal

    def append(self, first_seq: int, commands: Sequence[Command]) -> None:
        """Write the batch and fsync it (called by the service in a worker thread)."""
        self.journal.append(first_seq, commands)

    def applied(self, last_seq: int) -> None:
        """The service applied every command up to ``last_seq`` (called on its loop)."""
        self._store.applied(last_seq)


class Store:
    """A recovered core and the journal and snapshots that keep it durable."""

    def __init__(
        self,
        data_dir: Path,
        core: ExchangeCore,
        journal: Journal,
        recovery: Recovery,
        *,
        lock_fd: int,
        snapshot_every: int,
        keep_snapshots: int,
    ) -> None:
        self.data_dir = data_dir
        self.core = core
        self.journal = StoreJournal(self, journal)
        self.recovery = recovery
        self.applied_seq = recovery.last_seq
        self.snapshot_every = snapshot_every
        self.keep_snapshots = keep_snapshots
        self.snapshot_failure: BaseException | None = None
        self._last_snapshot_seq = recovery.snapshot_seq
        self._writer: threading.Thread | None = None
        self._lock_fd = lock_fd

    @property
    def next_seq(self) -> int:
        """The sequence number of the next command to journal."""
        return self.applied_seq + 1

    @property
    def snapshot_dir(self) -> Path:
        return self.data_dir / "snapshots"

    def applied(self, last_seq: int) -> None:
        """Note the service's progress; take a periodic snapshot when one is due."""
        self.applied_seq = last_seq
        if not self.snapshot_every or last_seq - self._last_snapshot_seq < self.snapshot_every:
            return
        if self._writer is not None and self._writer.is_alive():
            return  # the previous one is still being written; try after the next batch
        try:
            data = capture(self.core, last_seq)
        except SnapshotError as exc:
            self._snapshot_failed(last_seq, exc)
            return
        self._last_snapshot_seq = last_seq
        self._writer = threading.Thread(
            target=self._write, args=(last_seq, data), name="snapshot-writer", daemon=True
        )
        self._writer.start()

    def snapshot(self) -> Path:
        """Write a snapshot of the state now (after command ``applied_seq``); its path."""
        self._wait_for_writer()
        seq = self.applied_seq
        path = write_snapshot(self.snapshot_dir, seq, capture(self.core, seq))
        self._last_snapshot_seq = seq
        self._prune()
        log.info("snapshot_written", seq=seq, path=str(path))
        return path

    def close(self) -> None:
        """Finish a snapshot being written, close the journal, release the directory."""
        self._wait_for_writer()
        try:
            self.journal.journal.close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, seq: int, data: bytes) -> None:
        try:
            started = time.perf_counter()
            path = write_snapshot(self.snapshot_dir, seq, data)
            self._prune()
        except OSError as exc:
            self._snapshot_failed(seq, exc)
            return
        log.info(
            "snapshot_written",
            seq=seq,
            path=str(path),
            bytes=len(data),
            seconds=round(time.perf_counter() - started, 3),
        )

    def _snapshot_failed(self, seq: int, exc: BaseException) -> None:
        # Not fatal: the journal holds everything; recovery just replays more.
        self.snapshot_failure = exc
        log.error("snapshot_failed", seq=seq, error=str(exc))

    def _wait_for_writer(self) -> None:
        if self._writer is not None:
            self._writer.join()
            self._writer = None

    def _prune(self) -> None:
        for _, path in list_snapshots(self.snapshot_dir)[: -self.keep_snapshots or None]:
            path.unlink(missing_ok=True)


def _lock(data_dir: Path) -> int:
    fd = os.open(data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{data_dir} is in use by another process (LOCK is held)") from None
    return fd


def _latest_snapshot(directory: Path) -> tuple[int, ExchangeCore, Path | None]:
    """The newest snapshot that loads and passes the audit; (0, empty core, None) if none."""
    for seq, path in reversed(list_snapshots(directory)):
        try:
            loaded_seq, core = read_snapshot(path)
        except SnapshotError as exc:
            log.error("snapshot_unusable", path=str(path), error=str(exc))
            continue
        broken = audit.problems(core, contracts=False, limit=5)
        if broken:
            log.error("snapshot_unusable", path=str(path), error="; ".join(broken))
            continue
        assert loaded_seq == seq
        return seq, core, path
    return 0, ExchangeCore(), None


def open_store(
    data_dir: Path,
    *,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    keep_snapshots: int = 3,
    use_snapshots: bool = True,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    fsync: bool = True,
) -> Store:
    """Open (or create) a data directory and rebuild the core from it.

    ``snapshot_every``: commands between background snapshots (0: only on
    demand). ``use_snapshots=False`` replays the whole journal and ignores
    snapshot files. Raises ``StoreError`` or ``JournalCorrupt`` when the
    directory cannot be trusted; a torn journal tail is dropped with a warning.
    """
    started = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    journal_dir = data_dir / "journal"
    journal_dir.mkdir(exist_ok=True)
    lock_fd = _lock(data_dir)
    try:
        with gc_paused():
            if use_snapshots:
                snap_seq, core, snap_path = _latest_snapshot(data_dir / "snapshots")
            else:
                snap_seq, core, snap_path = 0, ExchangeCore(), None
            reader = JournalReader(journal_dir)
            replayed, faults = replay(core, reader.batches(snap_seq, repair=True), snap_seq)
        tail = reader.tail
        assert tail is not None
        if snap_seq and (not reader.segments or tail.next_seq - 1 < snap_seq):
            raise StoreError(
                f"snapshot {snap_path} holds commands up to {snap_seq}, but the journal in "
                f"{journal_dir} ends at {tail.next_seq - 1}: journalled commands are missing"
            )
        journal = Journal(journal_dir, tail, segment_bytes=segment_bytes, fsync=fsync)
    except BaseException:
        os.close(lock_fd)
        raise
    recovery = Recovery(
        snapshot_seq=snap_seq,
        snapshot_path=snap_path,
        replayed=replayed,
        last_seq=tail.next_seq - 1,
        torn=reader.torn,
        faults=faults,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "store_recovered",
        data_dir=str(data_dir),
        snapshot_seq=snap_seq,
        replayed=replayed,
        last_seq=recovery.last_seq,
        torn=reader.torn is not None,
        seconds=round(recovery.seconds, 3),
    )
    return Store(
        data_dir,
        core,
        journal,
        recovery,
        lock_fd=lock_fd,
        snapshot_every=snapshot_every,
        keep_snapshots=keep_snapshots,
    )


__all__ = [
    "DEFAULT_SNAPSHOT_EVERY",
    "Recovery",
    "Store",
    "StoreError",
    "StoreJournal",
    "gc_paused",
    "open_store",
    "replay",
]

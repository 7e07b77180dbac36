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

    LOCK           locked (lockf) while a store is open: one store per directory
    journal/       segments of the write-ahead journal (exchange.journal)
    snapshots/     snapshot-<seq>.snap files (exchange.snapshot)
    archive/       journal segments retired behind the snapshots (retention="archive")
    retention.log  one JSON line per segment archived or deleted, for audit

Snapshots. ``store.snapshot()`` writes one now. With ``snapshot_every=N``
the store takes one after the batch that takes the state N or more commands
past the last snapshot. ``snapshot_capture="fork"`` (the default on Linux)
forks the process there, between batches, where the state is consistent: the
child holds a copy-on-write image of the core at exactly that sequence number,
encodes it, writes and verifies the file and exits, while the service goes on;
the loop pauses only for the ``fork`` itself. ``"loop"`` encodes the state on
the service's loop and writes it on a thread. One snapshot is in flight at a
time; one that fails is logged (``snapshot_failed``) and costs nothing but a
longer replay at the next start.

A snapshot counts once it is *verified*: read back from its file, loaded, and
found sound by ``exchange.audit``, the same test recovery applies. Only then
are older snapshots beyond the newest ``keep_snapshots`` removed, and journal
segments whose every command is at or before the oldest snapshot kept are
retired (``retention``): moved to ``archive/`` (the default), deleted, or kept.
Recovery never needs a retired segment while any kept snapshot is usable; if
none is, it reads the archive. ``history_reader(data_dir)`` reads archived and
live segments as one journal, from command 1, for the audit tools.

Call ``snapshot`` and ``close`` from the thread that runs the service's loop,
or when no service is running.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import fcntl
import gc
import itertools
import os
import queue
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn, get_args

import msgspec
import structlog

from exchange import audit
from exchange.commands import Command
from exchange.core import ExchangeCore
from exchange.events import Event
from exchange.journal import (
    DEFAULT_SEGMENT_BYTES,
    FILE_HEADER_SIZE,
    PRIVATE_DIR,
    PRIVATE_FILE,
    Batch,
    Journal,
    JournalReader,
    Segment,
    TornTail,
    append_file,
    list_segments,
    merge_segments,
    sync_directory,
)
from exchange.snapshot import (
    SnapshotError,
    capture,
    list_snapshots,
    read_snapshot,
    remove_partial_snapshots,
    write_snapshot,
)

log = structlog.get_logger("exchange.store")

DEFAULT_SNAPSHOT_EVERY = 100_000  # commands
JOURNAL_DIR = "journal"
SNAPSHOT_DIR = "snapshots"
ARCHIVE_DIR = "archive"
RETENTION_LOG = "retention.log"

Observer = Callable[[int, Command, list[Event]], None]
Retention = Literal["archive", "delete", "keep"]
SnapshotCapture = Literal["auto", "fork", "loop"]


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
    archived_segments: int = 0  # retired segments read because no kept snapshot was usable


class Retired(msgspec.Struct, frozen=True):
    """One line of ``retention.log``: a journal segment archived or deleted."""

    action: Literal["archived", "deleted"]
    segment: str  # file name
    first_seq: int
    last_seq: int
    bytes: int
    behind_snapshot: int  # the oldest snapshot kept when it was retired
    time: str  # UTC, ISO 8601


class SnapshotReport(msgspec.Struct, frozen=True):
    """A snapshot written and verified, and what retention did after it.

    A forked writer sends it to the parent on a pipe as JSON.
    """

    seq: int
    path: str
    bytes: int
    pid: int  # the process that encoded and wrote it: a child when forked
    seconds: float  # encode, write, fsync, read back, load, audit, retention
    retired: tuple[Retired, ...] = ()
    retention_error: str = ""  # retention failed (the snapshot itself is good)


@dataclass(frozen=True, slots=True)
class _Child:
    """A forked snapshot writer not yet reaped."""

    pid: int
    seq: int
    report_fd: int  # the read end of its report pipe (non-blocking)


_report_codec = (msgspec.json.Encoder(), msgspec.json.Decoder(SnapshotReport))
_retired_decoder = msgspec.json.Decoder(Retired)


def replay(
    core: ExchangeCore,
    batches: Iterable[Batch],
    after_seq: int,
    observe: Observer | None = None,
) -> tuple[int, int]:
    """Apply every journalled command numbered above ``after_seq``; (applied, faults).

    A command that raises in the core is passed over, as the service passed
    over it when it first ran, so the state comes out the same. With no
    ``observe``, nobody reads the events, so the core replays ``quiet``.
    """
    core.quiet = observe is None
    try:
        return _replay(core, batches, after_seq, observe)
    finally:
        core.quiet = False


def _replay(
    core: ExchangeCore, batches: Iterable[Batch], after_seq: int, observe: Observer | None
) -> tuple[int, int]:
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


def fork_available() -> bool:
    """Whether ``snapshot_capture="auto"`` forks: on Linux, where it is tested.

    (macOS has ``fork``, but its system libraries are not safe in the child of
    a threaded process; ``"fork"`` can still be asked for there.)
    """
    return hasattr(os, "fork") and sys.platform.startswith("linux")


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
        lock: _DirectoryLock,
        snapshot_every: int,
        keep_snapshots: int,
        snapshot_capture: Literal["fork", "loop"],
        retention: Retention,
    ) -> None:
        self.data_dir = data_dir
        self.core = core
        self.journal = StoreJournal(self, journal)
        self.recovery = recovery
        self.applied_seq = recovery.last_seq
        self.snapshot_every = snapshot_every
        self.keep_snapshots = keep_snapshots
        self.snapshot_capture = snapshot_capture
        self.retention = retention
        self.snapshot_failure: BaseException | None = None
        self.last_snapshot: SnapshotReport | None = None
        self.snapshots_written = 0
        self._last_snapshot_seq = recovery.snapshot_seq
        self._lock = lock
        self._child: _Child | None = None  # "fork": the writer, until it is reaped
        # "loop": one worker thread writes the bytes encoded on the loop (started
        # once, so a snapshot costs the loop no thread start); ``_idle`` is clear
        # while it has one to write.
        self._jobs: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._worker: threading.Thread | None = None

    @property
    def next_seq(self) -> int:
        """The sequence number of the next command to journal."""
        return self.applied_seq + 1

    @property
    def snapshot_dir(self) -> Path:
        return self.data_dir / SNAPSHOT_DIR

    @property
    def snapshot_in_flight(self) -> bool:
        """A snapshot is being written (or its forked writer has not been reaped yet)."""
        return self._child is not None or not self._idle.is_set()

    def applied(self, last_seq: int) -> None:
        """Note the service's progress; start a periodic snapshot when one is due.

        Returns at once. ``"fork"``: reaps a finished writer (``waitpid`` with
        ``WNOHANG``), or forks a new one when a snapshot is due. ``"loop"``:
        encodes the state here and hands the bytes to the worker thread.
        """
        self.applied_seq = last_seq
        if self._child is not None:
            self._reap(block=False)
        if not self.snapshot_every or last_seq - self._last_snapshot_seq < self.snapshot_every:
            return
        if self.snapshot_in_flight:
            return  # the previous one is still being written; try after the next batch
        self._last_snapshot_seq = last_seq
        if self.snapshot_capture == "fork":
            self._fork(last_seq)
            return
        try:
            data = capture(self.core, last_seq)
        except SnapshotError as exc:
            self._snapshot_failed(last_seq, exc)
            return
        self._idle.clear()
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="snapshot", daemon=True)
            self._worker.start()
        self._jobs.put((last_seq, data))

    def snapshot(self) -> Path:
        """Write and verify a snapshot of the state now (after ``applied_seq``); its path.

        Synchronous and in this process, whatever ``snapshot_capture`` says.
        Raises ``SnapshotError`` or ``OSError`` if it cannot be written or verified.
        """
        self.wait_for_snapshot()
        seq = self.applied_seq
        started = time.perf_counter()
        report = self._finish_snapshot(capture(self.core, seq), seq, started)
        self._last_snapshot_seq = seq
        self._snapshot_written(report)
        return Path(report.path)

    def wait_for_snapshot(self) -> None:
        """Return once no snapshot is in flight (it has been written, or has failed)."""
        if self._child is not None:
            self._reap(block=True)
        self._idle.wait()

    def close(self) -> None:
        """Finish a snapshot in flight, close the journal, release the directory."""
        self.wait_for_snapshot()
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join()
            self._worker = None
        try:
            self.journal.journal.close()
        finally:
            self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing, verifying, retiring --------------------------------------------------

    def _finish_snapshot(
        self, data: bytes, seq: int, started: float, parent: int = 0
    ) -> SnapshotReport:
        """Everything after the capture: write, verify, then prune and retire.

        Runs in the forked child, on the worker thread, or in ``snapshot()``;
        it logs nothing (the child must not), ``_snapshot_written`` does. In a
        child, ``parent`` is the exchange's pid: once that has gone (killed
        mid-snapshot, and perhaps restarted already), the child prunes nothing.
        """
        path = write_snapshot(self.snapshot_dir, seq, data)
        try:
            _usable_snapshot(path)
        except SnapshotError:
            # Out of the listing, so it never counts as kept; still there to look at.
            os.replace(path, path.with_name(path.name + ".unverified"))
            raise
        retired: list[Retired] = []
        error = ""
        try:
            if parent and os.getppid() != parent:
                error = "the exchange process ended: retention left to the next start"
            else:
                retired = self._prune(seq)
        except OSError as exc:  # not fatal: retention tries again after the next snapshot
            error = str(exc)
        seconds = time.perf_counter() - started
        return SnapshotReport(
            seq, str(path), len(data), os.getpid(), seconds, tuple(retired), error
        )

    def _prune(self, verified_seq: int) -> list[Retired]:
        """After a verified snapshot: drop old snapshots, retire the segments behind them."""
        snapshots = list_snapshots(self.snapshot_dir)
        for _, path in snapshots[: -self.keep_snapshots]:
            path.unlink(missing_ok=True)
        kept = snapshots[-self.keep_snapshots :]
        if not kept:
            return []
        return retire_segments(self.data_dir, min(kept[0][0], verified_seq), self.retention)

    def _work(self) -> None:
        """The worker thread (``"loop"``): write each snapshot encoded on the loop."""
        while (job := self._jobs.get()) is not None:
            seq, data = job
            try:
                report = self._finish_snapshot(data, seq, time.perf_counter())
            except (OSError, SnapshotError) as exc:
                self._snapshot_failed(seq, exc)
            except Exception as exc:  # a bug, not a failed write: still never fatal
                log.exception("snapshot_fault", seq=seq)
                self.snapshot_failure = exc
            else:
                self._snapshot_written(report)
            finally:
                del job, data
                self._idle.set()

    # --- forked writers ---------------------------------------------------------------

    def _fork(self, seq: int) -> None:
        """Fork a child that writes, verifies and retires; ``_reap`` hears from it."""
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns of fork in a threaded process; the child only
                # encodes, writes and exits, touching no lock another thread may hold.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            self._snapshot_failed(seq, exc)
            return
        if pid == 0:
            self._child_main(seq, write_fd, parent)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._child = _Child(pid, seq, read_fd)

    def _child_main(self, seq: int, report_fd: int, parent: int) -> NoReturn:
        """In the forked child: write, verify and retire, report on the pipe, exit.

        Only this thread exists here, and locks that other threads of the parent
        held at the fork stay held forever: so no logging, no imports, no
        asyncio; encoding, system calls and ``os._exit``, whatever happens. The
        outcome goes to the parent as a JSON ``SnapshotReport`` (or an error
        text) on the pipe, and the exit status.

        First it has the kernel kill it when ``parent``, the exchange, ends
        (see ``_die_with_parent``). Then it lets go of every file the parent
        had open but the pipe: the data directory's ``LOCK`` (a restart must
        not find it held by an orphaned writer), sockets (a connection the
        parent closes must end now, not when this process does), the loop's
        epoll and wake-up fds, the journal; 0, 1 and 2 are pointed at
        /dev/null.
        """
        code = 1
        try:
            started = time.perf_counter()
            _die_with_parent()
            if os.getppid() != parent:  # it ended before that took hold
                os._exit(3)
            gc.disable()  # a collection would touch, and so copy, every page of the image
            with contextlib.suppress(ValueError, OSError):
                signal.set_wakeup_fd(-1)  # the parent's loop must not hear this process's signals
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C stops the parent, which waits
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if report_fd < 3:  # the parent ran without stdin, say: keep the pipe above 2
                report_fd = fcntl.fcntl(report_fd, fcntl.F_DUPFD, 3)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, report_fd)
            os.closerange(report_fd + 1, _max_fd())
            data = capture(self.core, seq)
            if os.getppid() != parent:
                os.write(report_fd, b"the exchange process ended before the snapshot was written")
                os._exit(3)
            report = self._finish_snapshot(data, seq, started, parent)
            os.write(report_fd, _report_codec[0].encode(report))
            code = 0
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                os.write(report_fd, f"{type(exc).__name__}: {exc}"[:4_000].encode())
        finally:
            os._exit(code)

    def _reap(self, *, block: bool) -> None:
        """If the forked writer has ended (or, with ``block``, once it has), hear its report."""
        child = self._child
        assert child is not None
        try:
            pid, status = os.waitpid(child.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped by someone else (a SIGCHLD handler): trust the pipe
            pid, status = child.pid, -1
        if pid == 0:
            return  # still writing
        self._child = None
        chunks = []
        with contextlib.suppress(BlockingIOError):  # it has ended: all it wrote is there
            while chunk := os.read(child.report_fd, 65_536):
                chunks.append(chunk)
        os.close(child.report_fd)
        message = b"".join(chunks)
        code = None if status == -1 else os.waitstatus_to_exitcode(status)
        if code in (0, None):
            with contextlib.suppress(msgspec.DecodeError):
                self._snapshot_written(_report_codec[1].decode(message))
                return
        cause = _exit_cause(code)
        detail = message.decode("utf-8", "replace") or "no report"
        self._snapshot_failed(
            child.seq, SnapshotError(f"snapshot writer {child.pid}: {cause}: {detail}")
        )

    # --- outcomes, logged in this process ---------------------------------------------

    def _snapshot_written(self, report: SnapshotReport) -> None:
        self.last_snapshot = report
        self.snapshots_written += 1
        log.info(
            "snapshot_written",
            seq=report.seq,
            path=report.path,
            bytes=report.bytes,
            pid=report.pid,
            seconds=round(report.seconds, 3),
        )
        for retired in report.retired:
            log.info(
                "journal_segment_" + retired.action,
                segment=retired.segment,
                first_seq=retired.first_seq,
                last_seq=retired.last_seq,
                behind_snapshot=retired.behind_snapshot,
            )
        if report.retention_error:
            log.error("retention_failed", seq=report.seq, error=report.retention_error)

    def _snapshot_failed(self, seq: int, exc: BaseException) -> None:
        # Not fatal: the journal holds everything; recovery just replays more.
        self.snapshot_failure = exc
        log.error("snapshot_failed", seq=seq, error=str(exc))


def _max_fd() -> int:
    try:
        return max(os.sysconf("SC_OPEN_MAX"), 256)
    except (ValueError, OSError):
        return 65_536


def _libc_prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (Linux), looked up here in the parent: a forked child
    must not load libraries."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Have the kernel SIGKILL this (forked) process when its parent ends.

    A snapshot writer that outlived a killed exchange would go on retiring
    journal segments, no longer under the directory's lock, while a restart
    reads them. Where there is no ``prctl`` the writer's own checks of its
    parent are all there is.
    """
    if _PRCTL is not None and _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _exit_cause(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by signal {-code} ({signal.Signals(-code).name})"
    except ValueError:
        return f"killed by signal {-code}"


def retire_segments(data_dir: Path, behind: int, retention: Retention) -> list[Retired]:
    """Archive or delete the journal segments holding no command after ``behind``.

    The newest segment that holds a record is never retired, nor any after it.
    The one being appended to may have been started and hold nothing yet: a
    crash would then drop it as a torn tail, and the journal must still end
    in a live segment at the snapshot. Every segment retired is written to
    ``retention.log`` (and fsynced) first; an archived one is moved, under its
    name, to ``archive/``. Logs nothing (a forked writer runs it): the records
    returned are what it did.
    """
    if retention == "keep":
        return []
    journal_dir = data_dir / JOURNAL_DIR
    segments = list_segments(journal_dir)
    holding = [i for i, segment in enumerate(segments) if segment.size > FILE_HEADER_SIZE]
    segments = segments[: holding[-1] + 1] if holding else []
    done: list[Retired] = []
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    action: Literal["archived", "deleted"] = "archived" if retention == "archive" else "deleted"
    archive = data_dir / ARCHIVE_DIR
    retiring = [
        (segment, following.first_seq - 1)
        for segment, following in itertools.pairwise(segments)
        if following.first_seq - 1 <= behind
    ]
    if not retiring:
        return done
    if retention == "archive":
        archive.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        for segment, _ in retiring:
            if (archive / segment.path.name).exists():
                raise OSError(
                    errno.EEXIST,
                    f"cannot archive {segment.path}: {archive / segment.path.name} exists",
                )
    records = [
        Retired(action, s.path.name, s.first_seq, last, s.size, behind, stamp)
        for s, last in retiring
    ]
    encoder = msgspec.json.Encoder()
    append_file(data_dir / RETENTION_LOG, b"".join(encoder.encode(r) + b"\n" for r in records))
    for (segment, _), record in zip(retiring, records, strict=True):
        # A torn tail kept beside its segment goes where the segment goes.
        for path in (segment.path, *journal_dir.glob(f"{segment.path.name}.torn-*")):
            if retention == "archive":
                os.replace(path, archive / path.name)
            else:
                path.unlink()
        done.append(record)
    if retention == "archive":
        sync_directory(archive)
    sync_directory(journal_dir)
    return done


def read_retention_log(data_dir: Path) -> list[Retired]:
    """Every segment the store retired, oldest first (empty if none ever was)."""
    path = data_dir / RETENTION_LOG
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if line:
            try:
                records.append(_retired_decoder.decode(line))
            except msgspec.DecodeError as exc:
                raise StoreError(f"{path}, line {number}: {exc}") from exc
    return records


def history_reader(data_dir: Path) -> JournalReader:
    """A reader of a data directory's whole journal: archived segments, then live ones."""
    return JournalReader(
        data_dir / JOURNAL_DIR,
        merge_segments(_segments(data_dir / ARCHIVE_DIR), _segments(data_dir / JOURNAL_DIR)),
    )


def missing_history(data_dir: Path, first_seq: int) -> str:
    """Why a data directory's journal (archive included) starts at ``first_seq``, not 1."""
    gone = f"commands 1 to {first_seq - 1} are in neither {JOURNAL_DIR}/ nor {ARCHIVE_DIR}/"
    try:
        deleted = [r for r in read_retention_log(data_dir) if r.action == "deleted"]
    except StoreError as exc:
        return f"{gone}, and {RETENTION_LOG} cannot be read ({exc})"
    if deleted:
        return (
            f"{gone}: retention deleted {len(deleted)} segments holding commands "
            f"{deleted[0].first_seq} to {deleted[-1].last_seq} (the last at {deleted[-1].time}; "
            f"see {data_dir / RETENTION_LOG}), so the history cannot be replayed from command 1"
        )
    return f"{gone}, and {RETENTION_LOG} records no deletion: segments are missing"


def _segments(directory: Path) -> list[Segment]:
    return list_segments(directory) if directory.is_dir() else []


# --- checking a snapshot as recovery would ------------------------------------------


def _usable_snapshot(path: Path) -> tuple[int, ExchangeCore]:
    """(seq, core) of a snapshot file that loads and passes the audit; else SnapshotError."""
    seq, core = read_snapshot(path)
    broken = audit.problems(core, contracts=False, limit=5)
    if broken:
        raise SnapshotError(f"{path}: state breaks invariants: {'; '.join(broken)}")
    return seq, core


# --- opening -------------------------------------------------------------------------


# The lock is a POSIX record lock (``lockf``), not ``flock``: it belongs to this
# process and is never inherited by a forked snapshot writer, so a writer outliving
# a killed exchange cannot keep a restart out. POSIX locks do not exclude each
# other within a process, hence the registry; and closing any descriptor of the
# file drops them, so LOCK is opened only by ``_lock``, once it is known to be free.
_locked: set[tuple[int, int]] = set()  # (st_dev, st_ino) of the data directories held
_locked_guard = threading.Lock()


@dataclass(slots=True)
class _DirectoryLock:
    """This process's lock on a data directory."""

    fd: int
    key: tuple[int, int]

    def release(self) -> None:
        with _locked_guard:
            if self.fd >= 0:
                _locked.discard(self.key)
                os.close(self.fd)  # drops the lock
                self.fd = -1


def _lock(data_dir: Path) -> _DirectoryLock:
    st = os.stat(data_dir)
    key = (st.st_dev, st.st_ino)
    with _locked_guard:
        if key in _locked:
            raise StoreError(f"{data_dir} is in use: this process has a store open on it")
        fd = os.open(data_dir / "LOCK", os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise StoreError(f"{data_dir} is in use by another process (LOCK is held)") from None
        _locked.add(key)
    return _DirectoryLock(fd, key)


def _latest_snapshot(directory: Path) -> tuple[int, ExchangeCore, Path | None]:
    """The newest snapshot that loads and passes the audit; (0, empty core, None) if none."""
    for seq, path in reversed(list_snapshots(directory)):
        try:
            loaded_seq, core = _usable_snapshot(path)
        except SnapshotError as exc:
            log.error("snapshot_unusable", path=str(path), error=str(exc))
            continue
        assert loaded_seq == seq
        return seq, core, path
    return 0, ExchangeCore(), None


def _recovery_segments(
    data_dir: Path, after_seq: int, use_snapshots: bool
) -> tuple[list[Segment], int]:
    """The segments a replay after ``after_seq`` reads, and how many are archived ones.

    Normally the live journal alone; the archive too when no kept snapshot was
    usable (or snapshots are not used).
    """
    live = _segments(data_dir / JOURNAL_DIR)
    if not live or live[0].first_seq <= after_seq + 1:
        return live, 0
    archived = [s for s in _segments(data_dir / ARCHIVE_DIR) if s.first_seq < live[0].first_seq]
    segments = merge_segments(archived, live)
    if segments[0].first_seq > after_seq + 1:
        start = f"snapshot {after_seq}" if after_seq else "an empty state"
        raise StoreError(
            f"recovery from {start} needs commands from {after_seq + 1}, but "
            + missing_history(data_dir, segments[0].first_seq)
        )
    (log.warning if use_snapshots else log.info)(
        "recovery_reads_archive",
        from_seq=after_seq + 1,
        archived_segments=len(archived),
        reason="no usable snapshot" if use_snapshots else "use_snapshots=False",
    )
    return segments, len(archived)


def _check_options(
    snapshot_every: int,
    keep_snapshots: int,
    snapshot_capture: SnapshotCapture,
    retention: Retention,
) -> Literal["fork", "loop"]:
    """Raise ``ValueError`` on a bad option; the capture mode to use."""
    if snapshot_every < 0:
        raise ValueError(f"snapshot_every must be 0 (on demand only) or more, not {snapshot_every}")
    if keep_snapshots < 1:
        raise ValueError(f"keep_snapshots must be at least 1, not {keep_snapshots}")
    if retention not in get_args(Retention):
        raise ValueError(f"retention must be one of {get_args(Retention)}, not {retention!r}")
    if snapshot_capture not in get_args(SnapshotCapture):
        raise ValueError(
            f"snapshot_capture must be one of {get_args(SnapshotCapture)}, not {snapshot_capture!r}"
        )
    if snapshot_capture == "fork" and not hasattr(os, "fork"):
        raise ValueError("snapshot_capture='fork': this platform has no os.fork")
    if snapshot_capture == "auto":
        return "fork" if fork_available() else "loop"
    return snapshot_capture


def open_store(
    data_dir: Path,
    *,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    keep_snapshots: int = 3,
    use_snapshots: bool = True,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    fsync: bool = True,
    snapshot_capture: SnapshotCapture = "auto",
    retention: Retention = "archive",
) -> Store:
    """Open (or create) a data directory and rebuild the core from it.

    ``snapshot_every``: commands between background snapshots (0: only on
    demand). ``use_snapshots=False`` replays the whole journal (archive
    included) and ignores snapshot files. ``snapshot_capture``: ``"fork"``,
    ``"loop"`` or ``"auto"`` (fork on Linux). ``retention``: what becomes of
    segments behind the oldest kept snapshot, ``"archive"``, ``"delete"`` or
    ``"keep"``. Raises ``ValueError`` on a bad option (touching nothing),
    ``StoreError`` or ``JournalCorrupt`` when the directory cannot be trusted;
    a torn journal tail is dropped with a warning.
    """
    capture_mode = _check_options(snapshot_every, keep_snapshots, snapshot_capture, retention)
    started = time.perf_counter()
    data_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    journal_dir = data_dir / JOURNAL_DIR
    journal_dir.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    lock = _lock(data_dir)
    try:
        for partial in remove_partial_snapshots(data_dir / SNAPSHOT_DIR):
            log.warning("partial_snapshot_removed", path=str(partial))
        with gc_paused():
            if use_snapshots:
                snap_seq, core, snap_path = _latest_snapshot(data_dir / SNAPSHOT_DIR)
            else:
                snap_seq, core, snap_path = 0, ExchangeCore(), None
            segments, archived = _recovery_segments(data_dir, snap_seq, use_snapshots)
            reader = JournalReader(journal_dir, segments)
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
        lock.release()
        raise
    recovery = Recovery(
        snapshot_seq=snap_seq,
        snapshot_path=snap_path,
        replayed=replayed,
        last_seq=tail.next_seq - 1,
        torn=reader.torn,
        faults=faults,
        seconds=time.perf_counter() - started,
        archived_segments=archived,
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
        lock=lock,
        snapshot_every=snapshot_every,
        keep_snapshots=keep_snapshots,
        snapshot_capture=capture_mode,
        retention=retention,
    )


__all__ = [
    "ARCHIVE_DIR",
    "DEFAULT_SNAPSHOT_EVERY",
    "RETENTION_LOG",
    "Recovery",
    "Retention",
    "Retired",
    "SnapshotCapture",
    "SnapshotReport",
    "Store",
    "StoreError",
    "StoreJournal",
    "fork_available",
    "gc_paused",
    "history_reader",
    "missing_history",
    "open_store",
    "read_retention_log",
    "replay",
    "retire_segments",
]

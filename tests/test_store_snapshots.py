"""Periodic snapshots written by a forked child while the service goes on.

The checks are structural, never timed: the capture runs in another process;
``applied`` has returned while that process is still held before its capture;
the parent's core moves on meanwhile and the file still holds the state at the
fork; a failed or killed child is reported and the next snapshot works.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from exchange import store as store_module
from exchange.commands import Command
from exchange.service import ExchangeService
from exchange.snapshot import SnapshotError, digest, list_snapshots, read_snapshot
from exchange.store import Store, open_store
from tests.journal_stream import stream
from tests.store_runs import drive, never_stopped, recovered

SEED = 61
WAIT = 30.0  # seconds: the longest a child may be held before it goes on by itself
EVERY = 300
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture(scope="module")
def commands() -> list[Command]:
    print("seed", SEED)
    return stream(SEED, 1_000)


def forking_store(data_dir: Path, **options: object) -> Store:
    store = open_store(data_dir, snapshot_every=EVERY, snapshot_capture="fork", **options)  # type: ignore[arg-type]
    assert store.snapshot_capture == "fork"
    return store


def test_a_forked_snapshot_loads_to_the_identical_state(
    tmp_path: Path, commands: list[Command]
) -> None:
    store = forking_store(tmp_path)
    drive(store, commands[:EVERY])  # the last batch ends exactly at EVERY: a snapshot is due
    report = store.last_snapshot
    assert report is not None and report.seq == EVERY
    assert report.pid != os.getpid()  # encoded and written in another process
    seq, core = read_snapshot(Path(report.path))
    assert seq == EVERY and digest(core) == digest(store.core)
    store.close()


def hold_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Make forked writers wait at a gate before their capture.

    Each writes its pid to the first path, then waits (at most WAIT seconds)
    until the second path exists.
    """
    parent = os.getpid()
    pid_file, gate = tmp_path / "child.pid", tmp_path / "gate"
    real_capture = store_module.capture

    def gated_capture(core: object, seq: int) -> bytes:
        if os.getpid() != parent:
            pid_file.write_text(str(os.getpid()))
            deadline = time.monotonic() + WAIT
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
        return real_capture(core, seq)  # type: ignore[arg-type]

    monkeypatch.setattr(store_module, "capture", gated_capture)
    return pid_file, gate


def test_applied_returns_while_the_child_still_holds_the_image(
    tmp_path: Path, commands: list[Command], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child waits at a gate before its capture; the parent goes on meanwhile."""
    parent = os.getpid()
    pid_file, gate = hold_children(tmp_path, monkeypatch)
    data_dir = tmp_path / "data"
    store = forking_store(data_dir)
    drive(store, commands[: EVERY - 20])
    at_fork = EVERY
    drive(store, commands[EVERY - 20 : EVERY], wait=False)  # applied() forks, and returns
    state_at_fork = digest(store.core)
    assert store.snapshot_in_flight
    child = _wait_for_file(pid_file)
    assert child != parent
    # The child let go of every file of the parent (the data directory's LOCK, the
    # journal, sockets, the loop's fds): it holds /dev/null as 0-2 and its report pipe.
    held = _fds(child)
    assert {fd: held[fd] for fd in ("0", "1", "2")} == dict.fromkeys(("0", "1", "2"), os.devnull)
    assert [target[:6] for fd, target in held.items() if fd not in ("0", "1", "2")] == ["pipe:["]
    assert any(str(data_dir / "LOCK") == target for target in _fds(parent).values())
    # The parent's core moves on while the child is held before its capture.
    drive(store, commands[EVERY:600], wait=False)
    assert store.snapshot_in_flight and not list_snapshots(data_dir / "snapshots")
    assert digest(store.core) != state_at_fork
    gate.touch()
    store.wait_for_snapshot()
    report = store.last_snapshot
    assert report is not None and (report.seq, report.pid) == (at_fork, child)
    _, core = read_snapshot(Path(report.path))
    assert digest(core) == state_at_fork  # the image at the fork, not the state now
    store.close()
    assert recovered(data_dir)[0] == never_stopped(commands[:600])


def try_to_open(data_dir: Path) -> str:
    """Another process opens the store and closes it at once: what happened."""
    script = (
        "import sys; from pathlib import Path; from exchange.store import StoreError, open_store\n"
        "try:\n"
        "    open_store(Path(sys.argv[1]), snapshot_every=0).close()\n"
        "    print('opened')\n"
        "except StoreError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]  # after any log lines


_held_at_fork: list[Path] = []  # armed: (pid file, gate) for the next forked children


def _hold_at_fork() -> None:
    """Runs in every forked child of this process, before any of the store's code."""
    if _held_at_fork:
        pid_file, gate = _held_at_fork
        pid_file.write_text(str(os.getpid()))
        deadline = time.monotonic() + WAIT
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.005)


os.register_at_fork(after_in_child=_hold_at_fork)


def test_a_writer_outliving_the_exchange_never_keeps_a_restart_out(
    tmp_path: Path, commands: list[Command]
) -> None:
    """The data directory's lock is the exchange process's alone, never its writer's.

    The child is held straight after the fork, before it has closed anything it
    inherited: with an ``flock`` (shared through the inherited descriptor) it
    would keep a restart out once the exchange had gone.
    """
    pid_file, gate = tmp_path / "child.pid", tmp_path / "gate"
    data_dir = tmp_path / "data"
    store = forking_store(data_dir)
    _held_at_fork[:] = [pid_file, gate]
    try:
        drive(store, commands[:EVERY], wait=False)
    finally:
        _held_at_fork.clear()
    child = _wait_for_file(pid_file)
    assert str(data_dir / "LOCK") in _fds(child).values()  # it holds the inherited fd...
    assert "in use by another process" in try_to_open(data_dir)
    # The exchange lets go of the directory as a killed one would, its writer still held.
    store._lock.release()
    assert store.snapshot_in_flight and os.waitpid(child, os.WNOHANG) == (0, 0)
    assert try_to_open(data_dir) == "opened"  # ...and yet a restart gets in
    gate.touch()
    store.close()


def test_a_failed_child_is_reported_and_the_next_snapshot_works(
    tmp_path: Path, commands: list[Command], monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(directory: Path, seq: int, data: bytes) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "write_snapshot", disk_full)
    store = forking_store(tmp_path)
    with capture_logs() as logs:
        drive(store, commands[:EVERY])
    failure = store.snapshot_failure
    assert isinstance(failure, SnapshotError)
    assert "exit status 1" in str(failure) and "No space left on device" in str(failure)
    failed = [e for e in logs if e["event"] == "snapshot_failed"]
    assert failed and failed[0]["seq"] == EVERY and "No space left" in failed[0]["error"]
    assert store.last_snapshot is None and not list_snapshots(tmp_path / "snapshots")
    monkeypatch.undo()
    drive(store, commands[EVERY : 2 * EVERY])
    assert store.last_snapshot is not None and store.last_snapshot.seq == 2 * EVERY
    store.close()


def test_a_killed_child_is_reported(
    tmp_path: Path, commands: list[Command], monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(core: object, seq: int) -> bytes:
        os.kill(os.getpid(), signal.SIGKILL)  # only ever runs in the child
        raise AssertionError("unreachable")

    monkeypatch.setattr(store_module, "capture", killed)
    store = forking_store(tmp_path)
    drive(store, commands[:EVERY])
    assert "killed by signal 9 (SIGKILL)" in str(store.snapshot_failure)
    store.close()


async def test_the_service_goes_on_through_forked_snapshots_and_a_failed_one(
    tmp_path: Path, commands: list[Command], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forks from inside the running loop; one child fails; every command is answered."""
    real_write = store_module.write_snapshot
    failed_once = tmp_path / "failed-once"

    def first_fails(directory: Path, seq: int, data: bytes) -> Path:
        try:  # exactly one child creates the marker (O_EXCL, across processes): it fails
            os.close(os.open(failed_once, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return real_write(directory, seq, data)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_module, "write_snapshot", first_fails)
    data_dir = tmp_path / "data"
    store = forking_store(data_dir)
    service = ExchangeService(core=store.core, journal=store.journal, next_seq=store.next_seq)
    async with service:
        for start in range(0, len(commands), 50):
            await asyncio.gather(*(service.submit(c) for c in commands[start : start + 50]))
            store.wait_for_snapshot()  # so that no due snapshot is skipped as in flight
    store.close()
    assert service.failure is None and service.seq == len(commands)
    assert failed_once.exists() and "Input/output error" in str(store.snapshot_failure)
    assert store.snapshots_written >= 2  # the ones after the failure
    assert store.last_snapshot is not None and store.last_snapshot.pid != os.getpid()
    state, reopened = recovered(data_dir)
    assert state == digest(store.core)
    assert reopened.recovery.snapshot_seq == store.last_snapshot.seq


def test_loop_capture_writes_the_same_snapshot_in_this_process(
    tmp_path: Path, commands: list[Command]
) -> None:
    files = []
    for mode in ("fork", "loop"):
        store = open_store(tmp_path / mode, snapshot_every=EVERY, snapshot_capture=mode)  # type: ignore[arg-type]
        drive(store, commands)
        assert store.last_snapshot is not None
        assert (store.last_snapshot.pid == os.getpid()) == (mode == "loop")
        files.append(Path(store.last_snapshot.path))
        store.close()
    assert [p.name for p in files] == [files[0].name] * 2
    assert digest(read_snapshot(files[0])[1]) == digest(read_snapshot(files[1])[1])


def test_without_fork_auto_captures_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tmp_path)
    assert store.snapshot_capture == ("fork" if store_module.fork_available() else "loop")
    store.close()
    monkeypatch.delattr(os, "fork")
    store = open_store(tmp_path)
    assert store.snapshot_capture == "loop"
    store.close()
    with pytest.raises(ValueError, match=r"no os\.fork"):
        open_store(tmp_path, snapshot_capture="fork")


def _wait_for_file(path: Path) -> int:
    deadline = time.monotonic() + WAIT
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    return int(path.read_text())


def _fds(pid: int) -> dict[str, str]:
    """A process's open file descriptors and what each is (Linux's /proc)."""
    if not Path(f"/proc/{pid}/fd").is_dir():
        pytest.skip("no /proc")
    held = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # one closed meanwhile (listdir's own, say)
            held[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
    return held


def _state(pid: int) -> str:
    """A process's state letter from /proc ("Z": ended, not yet reaped), or "" if gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return ""
    return next(line.split()[1] for line in status.splitlines() if line.startswith("State:"))


@pytest.mark.skipif(store_module._PRCTL is None, reason="needs Linux prctl")
def test_a_writer_dies_with_its_exchange(tmp_path: Path) -> None:
    """A forked writer has the kernel kill it when the exchange process ends,
    so it never retires journal segments behind a restart's back.

    A stand-in exchange forks a writer that sets this up and then sleeps (30 s
    at most); the exchange ends abruptly, and the writer must end with it.
    """
    pid_file = tmp_path / "writer.pid"
    exchange = os.fork()
    if exchange == 0:  # the stand-in exchange
        code = 1
        try:
            writer = os.fork()
            if writer == 0:
                try:
                    store_module._die_with_parent()
                    pid_file.write_text(str(os.getpid()))
                    time.sleep(30)
                finally:
                    os._exit(0)
            while not pid_file.exists():
                time.sleep(0.01)
            code = 0
        finally:
            os._exit(code)  # ends without waiting for its writer, as a killed one would
    _, status = os.waitpid(exchange, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    writer = int(pid_file.read_text())
    try:
        deadline = time.monotonic() + 10
        while _state(writer) not in ("", "Z") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(writer) in ("", "Z")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(writer, signal.SIGKILL)


def test_every_file_and_directory_of_the_store_is_its_owners_alone(
    tmp_path: Path, commands: list[Command]
) -> None:
    data = tmp_path / "data"
    umask = os.umask(0o022)  # the common default, which leaves new files world-readable
    try:
        store = open_store(data, snapshot_every=EVERY, snapshot_capture="loop")
        drive(store, commands)
        store.close()
    finally:
        os.umask(umask)
    paths = [data, *data.rglob("*")]
    files = [p for p in paths if p.is_file()]
    assert any(p.suffix == ".snap" or "snap" in p.parent.name for p in files), files
    assert any("journal" in p.parent.name for p in files), files
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert modes == {str(p.relative_to(tmp_path)): 0o600 if p.is_file() else 0o700 for p in paths}

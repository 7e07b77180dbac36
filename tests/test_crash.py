"""Crash tests: SIGKILL a real exchange process while a client sends orders.

Each round starts ``python -m exchange.store_demo`` on one data directory,
streams orders into it from a writer thread, and kills the process with SIGKILL
once it has acknowledged K commands (or lets it kill itself halfway through a
journal write). After each kill the test opens the store and checks that every
command the client saw acknowledged is in the journal at the sequence number
it was acknowledged with, that replaying the journal gives the very events the
client was sent, and that the rebuilt state keeps every invariant. The next
round restarts the process on the same directory and goes on from there.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from exchange import audit
from exchange.commands import Command, NewOrder
from exchange.core import ExchangeCore
from exchange.events import Event
from exchange.snapshot import digest
from exchange.store import ARCHIVE_DIR, history_reader, open_store, replay
from tests.journal_stream import orders, prelude

SEED = 31
WAIT = 30.0  # seconds: the longest any single step may take before the test gives up
WINDOW = 300  # commands a client keeps in flight
ROOT = Path(__file__).resolve().parent.parent

_encoder = msgspec.json.Encoder()


class Node:
    """One exchange process; its acknowledgements arrive on a queue."""

    started: list[Node] = []  # every node, so a failing test still stops them all

    def __init__(self, data_dir: Path, *args: str) -> None:
        Node.started.append(self)
        self.stderr = (data_dir.parent / "stderr.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exchange.store_demo", str(data_dir), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            cwd=ROOT,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.threads = [threading.Thread(target=self._read, daemon=True)]
        self.threads[0].start()
        self.ready = self.next_line()
        assert self.ready.get("ready"), self.ready

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(msgspec.json.decode(line))
        self.lines.put(None)

    def next_line(self) -> dict[str, Any]:
        line = self.lines.get(timeout=WAIT)
        assert line is not None, "the process ended"
        return line

    def write(self, commands: list[Command]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(_encoder.encode(c) + b"\n" for c in commands))
        self.proc.stdin.flush()

    def run_until(self, commands: list[Command], acks: int) -> list[dict[str, Any]]:
        """Send like a client that keeps up to WINDOW commands in flight; stop at ``acks``."""
        acked: list[dict[str, Any]] = []
        sent = 0
        while len(acked) < acks:
            while sent < len(commands) and sent - len(acked) < WINDOW:
                self.write(commands[sent : sent + 50])
                sent += 50
            acked.append(self.next_line())
        return acked

    def send(self, commands: list[Command], *, close: bool) -> threading.Thread:
        """Write the commands from a thread (a killed reader must not block the test)."""

        def write() -> None:
            assert self.proc.stdin is not None
            try:
                for command in commands:
                    self.proc.stdin.write(_encoder.encode(command) + b"\n")
                self.proc.stdin.flush()
                if close:
                    self.proc.stdin.close()
            except (BrokenPipeError, ValueError):  # killed while we wrote
                pass

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        self.threads.append(writer)
        return writer

    def until_end(self, stop_after: int = 0) -> list[dict[str, Any]]:
        """Acknowledgements until the process ends (or ``stop_after`` of them)."""
        acked: list[dict[str, Any]] = []
        while (line := self.lines.get(timeout=WAIT)) is not None:
            acked.append(line)
            if len(acked) == stop_after:
                break
        return acked

    def acks(self, count: int) -> list[dict[str, Any]]:
        return [self.next_line() for _ in range(count)]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.wait()

    def wait(self) -> int:
        """Wait for the process to end, then close every pipe it had."""
        try:
            return self.proc.wait(timeout=WAIT)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)
        for thread in self.threads:
            thread.join(timeout=WAIT)
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        self.stderr.close()


@pytest.fixture(autouse=True)
def stop_nodes() -> Iterator[None]:
    yield
    while Node.started:
        Node.started.pop().stop()


def check_recovered(data_dir: Path, sent: list[Command], acked: list[dict[str, Any]]) -> int:
    """Every acknowledged command is durable, as acknowledged; return the last durable seq."""
    store = open_store(data_dir)  # recovery proper: drops a torn tail, loads a snapshot
    last = store.next_seq - 1
    assert audit.problems(store.core) == []
    recovered = digest(store.core)
    store.close()
    # The whole history: segments retention archived, then the live ones.
    journalled = {
        seq: command
        for batch in history_reader(data_dir).batches()
        for seq, command in enumerate(batch.commands, batch.first_seq)
    }
    assert sorted(journalled) == list(range(1, last + 1))
    replayed: dict[int, list[Event]] = {}
    scratch = ExchangeCore()
    replay(
        scratch,
        history_reader(data_dir).batches(),
        0,
        lambda seq, command, events: replayed.__setitem__(seq, events),
    )
    assert digest(scratch) == recovered  # snapshot + journal == journal alone
    for ack in acked:
        seq = ack["seq"]
        assert seq <= last, f"acknowledged command {seq} lost (journal ends at {last})"
        assert msgspec.structs.replace(journalled[seq], ts=0) == sent[ack["n"]]
        assert msgspec.json.decode(_encoder.encode(replayed[seq])) == ack["events"]
        command = sent[ack["n"]]
        accepted = [e for e in ack["events"] if e["type"] == "OrderAccepted"]
        if isinstance(command, NewOrder) and accepted:
            account = scratch.accounts[command.actor]
            assert account.client_order_ids[command.client_order_id] == accepted[0]["order_id"]
    return last


@pytest.mark.parametrize(
    "options",
    [
        "--snapshot-every 0",
        "--snapshot-every 150",  # forked snapshot writers, killed with their parent
        "--snapshot-every 150 --snapshot-capture loop",
        "--snapshot-every 150 --segment-bytes 8192",  # and retention archives segments
    ],
)
def test_sigkill_at_several_points_loses_no_acknowledged_command(
    tmp_path: Path, options: str
) -> None:
    print("seed", SEED, "options", options)
    data_dir = tmp_path / "data"
    snapshots = options.split()
    durable = 0
    for round_no, kill_after in enumerate((1, 137, 611, 1_400)):
        # The set-up again each round: round 0 dies after one command, and a repeat
        # is refused harmlessly; so the orders meet a real market, and snapshots hold one.
        commands = [*prelude(), *orders(SEED + round_no, 1_500)]
        node = Node(data_dir, *snapshots)
        assert node.ready["next_seq"] == durable + 1  # what survived the last kill is all there
        acked = node.run_until(commands, kill_after)
        node.kill()
        assert all("seq" in ack for ack in acked)
        durable = check_recovered(data_dir, commands, acked)
        print(f"round {round_no}: killed after {len(acked)} acks, {durable} commands durable")
        assert durable >= max(ack["seq"] for ack in acked)

    # A crash halfway through a journal write leaves a torn record, dropped at the restart.
    node = Node(data_dir, "--crash-in-batch", "2", *snapshots)
    commands = list(orders(SEED + 10, 500))
    node.send(commands[:10], close=False)
    acked = node.until_end(stop_after=1)  # the first batch is written...
    if acked:
        node.send(commands[10:], close=False)  # ...so these make at least a second one
        acked += node.until_end()
    assert node.wait() == -signal.SIGKILL
    store = open_store(data_dir)
    assert store.recovery.torn is not None
    store.close()
    durable = check_recovered(data_dir, commands, acked)

    # A clean run to the end of its input, then a clean stop.
    node = Node(data_dir, *snapshots)
    assert node.ready["next_seq"] == durable + 1
    commands = list(orders(SEED + 11, 300))
    node.send(commands, close=True)
    acked = node.acks(len(commands))
    assert node.next_line() == {"done": True, "last_seq": durable + len(commands)}
    assert node.wait() == 0
    assert check_recovered(data_dir, commands, acked) == durable + len(commands)
    if "--segment-bytes" in snapshots:
        assert list((data_dir / ARCHIVE_DIR).glob("*.wal"))  # retention did run


def test_a_full_disk_refuses_commands_and_loses_no_acknowledged_one(tmp_path: Path) -> None:
    """The kernel stops the journal's file at 60,000 bytes: writes fail with EFBIG."""
    print("seed", SEED)
    data_dir = tmp_path / "data"
    node = Node(data_dir, "--max-file-bytes", "60000")
    commands = [*prelude(), *orders(SEED, 1_500)]
    # The first 100 alone (16 kB): however busy the machine, they fit under the limit.
    node.send(commands[:100], close=False)
    answers = node.acks(100)
    node.send(commands[100:], close=True)
    answers += node.until_end()
    assert node.wait() == 0  # it ran on, refusing, and stopped cleanly at the end of input
    assert answers[-1]["done"] is True
    acked = [a for a in answers if "seq" in a]
    refused = [a for a in answers if "error" in a]
    assert acked and refused and len(acked) + len(refused) == len(commands)
    assert all("cannot write the journal" in a["error"] for a in refused)
    assert "File too large" in refused[0]["error"]
    # Nothing after the first refusal was acknowledged.
    first_refused = min(a["n"] for a in refused)
    assert max(a["n"] for a in acked) < first_refused
    assert answers[-1]["last_seq"] == len(acked)
    # Restarted with room to write: exactly the acknowledged commands, nothing half applied.
    assert check_recovered(data_dir, commands, acked) == len(acked)

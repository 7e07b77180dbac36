"""A bare exchange process on a durable store, driven by stdin, for crash tests.

    python -m exchange.store_demo DATA_DIR [--snapshot-every N] [--crash-in-batch K]
                                           [--max-file-bytes N] [--segment-bytes N]
                                           [--snapshot-capture auto|fork|loop]
                                           [--retention archive|delete|keep]

It opens (recovers) the store in DATA_DIR, runs the service on it, and reads
commands from stdin, one msgspec JSON ``Command`` a line. Commands are
submitted as they arrive, many in flight at once, so the service batches them.
For each command it prints one JSON line to stdout once the service has
returned its events, that is once the command is durable and applied::

    {"n": 7, "seq": 12, "events": [...]}    # n counts input lines from 0
    {"n": 8, "error": "..."}                # the service refused it

It first prints ``{"ready": true, "next_seq": ..., ...}`` and, at the end of
stdin, ``{"done": true, "last_seq": ...}`` after a clean stop. Logs go to
stderr. ``--crash-in-batch K`` makes the process kill itself with SIGKILL
halfway through writing the K-th journal record (counting from 1), to leave a
torn tail. ``--max-file-bytes N`` limits every file it writes to N bytes
(RLIMIT_FSIZE), so the journal's writes fail the way they do on a full disk.
``--segment-bytes``, ``--snapshot-capture`` and ``--retention`` are passed to
``open_store`` (small segments make retention happen in a short run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import sys
import threading
from pathlib import Path
from typing import get_args

import msgspec
import structlog

from exchange import journal as journal_module
from exchange.commands import Command
from exchange.events import Event
from exchange.journal import DEFAULT_SEGMENT_BYTES
from exchange.service import ExchangeService, ServiceStopped
from exchange.store import Retention, SnapshotCapture, open_store

_decoder = msgspec.json.Decoder(Command)
_encoder = msgspec.json.Encoder()


def _crash_in_batch(k: int) -> None:
    """Make the ``k``-th record write stop halfway, then die as if killed."""
    write_all = journal_module._write_all
    records = 0

    def torn_write(fd: int, data: memoryview, offset: int) -> None:
        nonlocal records
        if (
            len(data) > journal_module.FILE_HEADER_SIZE
            and offset >= journal_module.FILE_HEADER_SIZE
        ):
            records += 1
            if records == k:
                write_all(fd, data[: len(data) // 2], offset)
                os.kill(os.getpid(), signal.SIGKILL)
        write_all(fd, data, offset)

    journal_module._write_all = torn_write


def _emit(message: object) -> None:
    sys.stdout.buffer.write(_encoder.encode(message) + b"\n")
    sys.stdout.buffer.flush()


async def _run(
    data_dir: Path,
    snapshot_every: int,
    segment_bytes: int,
    snapshot_capture: SnapshotCapture,
    retention: Retention,
) -> None:
    store = open_store(
        data_dir,
        snapshot_every=snapshot_every,
        segment_bytes=segment_bytes,
        snapshot_capture=snapshot_capture,
        retention=retention,
    )
    service = ExchangeService(core=store.core, journal=store.journal, next_seq=store.next_seq)
    seqs: dict[int, int] = {}

    def note_seq(seq: int, command: Command, events: list[Event]) -> None:
        seqs[id(events)] = seq

    service.add_listener(note_seq)
    recovery = store.recovery
    _emit(
        {
            "ready": True,
            "next_seq": store.next_seq,
            "snapshot_seq": recovery.snapshot_seq,
            "replayed": recovery.replayed,
            "torn": recovery.torn is not None,
        }
    )

    async def one(n: int, command: Command) -> None:
        try:
            events = await service.submit(command)
        except ServiceStopped as exc:
            _emit({"n": n, "error": str(exc)})
            return
        _emit({"n": n, "seq": seqs.pop(id(events)), "events": events})

    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes] = asyncio.Queue()

    def read_stdin() -> None:  # a thread: stdin may be a pipe, a file or a terminal
        for line in sys.stdin.buffer:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, b"")

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    pending: set[asyncio.Task[None]] = set()
    await service.start()
    try:
        n = 0
        while line := await lines.get():
            task = asyncio.create_task(one(n, _decoder.decode(line)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)
    finally:
        await service.stop()
        store.close()
    _emit({"done": True, "last_seq": service.seq})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m exchange.store_demo", description=__doc__)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--snapshot-every", type=int, default=0)
    parser.add_argument("--crash-in-batch", type=int, default=0)
    parser.add_argument("--max-file-bytes", type=int, default=0)
    parser.add_argument("--segment-bytes", type=int, default=DEFAULT_SEGMENT_BYTES)
    parser.add_argument("--snapshot-capture", choices=get_args(SnapshotCapture), default="auto")
    parser.add_argument("--retention", choices=get_args(Retention), default="archive")
    args = parser.parse_args(argv)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    if args.crash_in_batch:
        _crash_in_batch(args.crash_in_batch)
    if args.max_file_bytes:  # a full disk, as the kernel reports it: EFBIG past the limit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.max_file_bytes, args.max_file_bytes))
    asyncio.run(
        _run(
            args.data_dir,
            args.snapshot_every,
            args.segment_bytes,
            args.snapshot_capture,
            args.retention,
        )
    )


if __name__ == "__main__":
    main()

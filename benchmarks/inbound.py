"""Receiving WebSocket frames: aiohttp's queue and ``receive()``, against the gateway's inbox.

What it measures
----------------
The cost of getting a client's text frames from the bytes a socket read
brings to the code that handles them, both ways the gateway can do it
(``gateway/inbound.py``):

* **queue**: aiohttp's own path. Its parser puts each message on the
  connection's ``WebSocketDataQueue``; a handler task takes each one with
  ``await ws.receive()``, as every aiohttp server handler does.
* **inbox**: a ``FrameInbox`` in place of that queue hands each text frame to
  the handler from the parser's ``feed_data``.

Both parse the same masked ``new_order`` frames with aiohttp's compiled
parser, and both handlers only count. Each read brings ``PER_READ`` frames
(1: a lone order; 8: a burst), then the loop turns once, as it does between
two reads from a socket. The paths run alternately, ``--repeats`` times each,
on one event loop (uvloop when installed); a figure is frames per second of
CPU time of the path's best run, and ``speedup_*`` is inbox / queue from the
same run. No sockets: this is the receiving alone, not the gateway.

    python -m benchmarks.inbound [--frames 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import struct
import sys
import time

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader

from benchmarks.gateway import _order_frame, _use_fast_loop
from gateway.inbound import FrameInbox

PER_READ = (1, 8)
_TEXT = WSMsgType.TEXT


def client_frame(payload: bytes, opcode: int = 0x1, mask: bytes = b"\x37\xfa\x21\x3d") -> bytes:
    """One masked, final client frame (RFC 6455, 5.2), a text frame by default, under 64 KiB."""
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    head = (
        bytes((0x80 | opcode, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    )
    return head + mask + body


class Reading:
    """What aiohttp's message queue asks of its protocol: pausing and resuming reads."""

    _reading_paused = False

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False


async def run(path: str, reads: list[bytes], per_read: int) -> float:
    """Feed ``reads`` through one path; CPU seconds taken."""
    loop = asyncio.get_running_loop()
    handled = 0

    def handle(data: str) -> None:
        nonlocal handled
        handled += 1

    consumer: asyncio.Task[None] | None = None
    if path == "inbox":
        inbox = FrameInbox(Reading(), 2**16, loop=loop)  # type: ignore[arg-type]
        inbox.on_text = handle
        parser = WebSocketReader(inbox, 1 << 20, compress=False, decode_text=True)
    else:
        queue = WebSocketDataQueue(Reading(), 2**16, loop=loop)  # type: ignore[arg-type]
        parser = WebSocketReader(queue, 1 << 20, compress=False, decode_text=True)
        ws = web.WebSocketResponse()
        ws._reader = queue  # what prepare() sets up: receive() reads this queue

        async def consume() -> None:
            receive = ws.receive
            while True:
                msg = await receive()
                if msg.type is _TEXT:
                    handle(msg.data)

        consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    feed = parser.feed_data
    started = time.process_time()
    for data in reads:
        feed(data)
        await asyncio.sleep(0)  # the loop turns, as between two reads
    await asyncio.sleep(0)
    elapsed = time.process_time() - started
    if consumer is not None:
        consumer.cancel()
    if handled != len(reads) * per_read:
        raise SystemExit(f"{path}: {handled} frames handled of {len(reads) * per_read}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200_000, help="frames per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each path")
    args = parser.parse_args(argv)
    loop_name = _use_fast_loop()
    result: dict[str, object] = {"benchmark": "inbound", "loop": loop_name}

    async def measure() -> None:
        for per_read in PER_READ:
            frames = [
                client_frame(_order_frame("bench-su0", n, n).encode()) for n in range(per_read)
            ]
            reads = [b"".join(frames)] * (args.frames // per_read)
            await run("inbox", reads[:1000], per_read)  # warm up
            await run("queue", reads[:1000], per_read)
            best = {"queue": float("inf"), "inbox": float("inf")}
            for _ in range(args.repeats):
                for path in ("queue", "inbox"):
                    best[path] = min(best[path], await run(path, reads, per_read))
            count = len(reads) * per_read
            for path in ("queue", "inbox"):
                result[f"{path}_frames_per_sec_{per_read}"] = round(count / best[path])
            result[f"speedup_{per_read}"] = round(best["queue"] / best["inbox"], 2)
            print(
                f"{per_read} frame(s) a read: queue {count / best['queue']:,.0f}/s, "
                f"inbox {count / best['inbox']:,.0f}/s",
                file=sys.stderr,
            )

    asyncio.run(measure())
    result["machine"] = (
        f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}"
    )
    result["frames"] = args.frames
    result["repeats"] = args.repeats
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

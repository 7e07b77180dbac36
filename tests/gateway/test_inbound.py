"""Inbound frames: the inbox that hands text frames to the dispatcher as they are parsed.

The first tests drive a ``FrameInbox`` through aiohttp's own frame parser,
with no socket: which frames skip the queue and which wait in it, in order.
The rest run a real gateway: the installed aiohttp gets the inbox; without
it (as with another aiohttp) every frame still comes through ``receive()``;
frames sent before the handshake finished are answered in order; a fault
while handling a frame closes that connection only.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgspec
import pytest
import structlog
from aiohttp import WSMsgType, web
from aiohttp._websocket.reader import WebSocketReader

from benchmarks.inbound import Reading, client_frame
from gateway import protocol as p
from gateway.app import DISPATCHER, ROUTER
from gateway.inbound import FrameInbox, WebSocket
from tests.gateway.conftest import WAIT, Gateway, GatewayFactory, key


def text(s: str) -> bytes:
    return client_frame(s.encode())


PING = client_frame(b"hi", opcode=0x9)
CLOSE = client_frame(struct.pack("!H", 1000), opcode=0x8)


class Wire:
    """An inbox fed by aiohttp's parser; ``handled`` lists the frames that skipped the queue."""

    def __init__(self, *, direct: bool = True) -> None:
        self.inbox = FrameInbox(Reading(), 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
        self.parser = WebSocketReader(self.inbox, 1 << 20, compress=False, decode_text=True)
        self.handled: list[str] = []
        if direct:
            self.inbox.on_text = self.handled.append

    def feed(self, *frames: bytes) -> None:
        """All the frames in one read, as one ``data_received`` would bring them."""
        self.parser.feed_data(b"".join(frames))

    def queued(self) -> list[tuple[WSMsgType, Any]]:
        """Take everything waiting in the queue, in order."""
        out = []
        while self.inbox._buffer:
            out.append(self._read_one())
        return out

    def _read_one(self) -> tuple[WSMsgType, Any]:
        coro = self.inbox.read()
        try:
            coro.send(None)
        except StopIteration as done:
            msg = done.value
            return (msg.type, msg.data)
        raise AssertionError("read() waited with a non-empty queue")


async def test_text_frames_skip_the_queue_when_nothing_waits() -> None:
    wire = Wire()
    wire.feed(text("a"), text("b"))
    wire.feed(text("c"))
    assert wire.handled == ["a", "b", "c"]
    assert wire.queued() == []


async def test_a_control_frame_keeps_the_text_behind_it_in_order() -> None:
    wire = Wire()
    wire.feed(text("a"), PING, text("b"), text("c"))
    assert wire.handled == ["a"]
    assert wire.queued() == [(WSMsgType.PING, b"hi"), (WSMsgType.TEXT, "b"), (WSMsgType.TEXT, "c")]
    wire.feed(text("d"))  # the queue is empty again: straight through
    assert wire.handled == ["a", "d"]


async def test_frames_before_the_handler_is_set_wait_and_keep_their_turn() -> None:
    wire = Wire(direct=False)
    wire.feed(text("early"))
    wire.inbox.on_text = wire.handled.append
    wire.feed(text("late"))  # behind "early", so it waits too
    assert wire.handled == []
    assert wire.queued() == [(WSMsgType.TEXT, "early"), (WSMsgType.TEXT, "late")]


async def test_nothing_after_a_close_frame_skips_the_queue() -> None:
    wire = Wire()
    wire.feed(CLOSE)
    assert wire.queued() == [(WSMsgType.CLOSE, 1000)]
    wire.feed(text("after"))
    assert wire.handled == []
    assert wire.queued() == [(WSMsgType.TEXT, "after")]


async def test_a_bad_frame_is_a_parse_error_on_the_queue() -> None:
    wire = Wire()
    wire.feed(client_frame(b"\xff\xfe"))  # a text frame that is not UTF-8
    assert wire.handled == []
    with pytest.raises(Exception, match="UTF-8"):
        await wire.inbox.read()


# --- a real gateway ----------------------------------------------------------------


def server_sockets(gateway: Gateway) -> list[Any]:
    return [session.ws for session in gateway.app[ROUTER].sessions.values()]


async def trade_once(gateway: Gateway) -> None:
    seller = await gateway.connect("dc1")
    buyer = await gateway.connect("su2")
    order = {"instrument_id": "H100-SUZHOU-STATE-W1", "qty": 8, "price": 1000}
    rid = await seller.send("new_order", client_order_id="s1", side="SELL", **order)
    await seller.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.NEW)
    rid = await buyer.send("new_order", client_order_id="b1", side="BUY", **order)
    await buyer.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.FILL)
    await seller.expect(p.ExecutionReport, client_order_id="s1", exec_type=p.ExecType.FILL)
    await seller.ws.ping()
    rid = await seller.send("ping")
    await seller.expect(p.Pong, id=rid)


async def test_the_installed_aiohttp_gets_the_inbox(gateway: Gateway) -> None:
    await trade_once(gateway)
    sockets = server_sockets(gateway)
    assert len(sockets) == 2
    assert all(isinstance(ws, WebSocket) and ws.inbox is not None for ws in sockets)
    assert all(ws.inbox.on_text is not None for ws in sockets)


async def test_without_the_inbox_every_frame_comes_through_receive(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(WebSocket, "_post_start", web.WebSocketResponse._post_start)
    gateway = await start_gateway()
    await trade_once(gateway)
    assert [ws.inbox for ws in server_sockets(gateway)] == [None, None]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: opcode and payload."""
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(size)


async def test_frames_sent_with_the_handshake_are_answered_in_order(gateway: Gateway) -> None:
    """A client that writes frames before the 101 arrives: aiohttp parsed them
    already, so the connection keeps aiohttp's queue, and nothing is lost."""
    host, port = gateway.server.host, gateway.server.port
    reader, writer = await asyncio.open_connection(host, port)
    handshake = (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key('su2')}\r\n\r\n"
    ).encode()
    requests = [{"type": "ping", "id": n} for n in range(1, 4)]
    frames = b"".join(text(msgspec.json.encode(r).decode()) for r in requests)
    writer.write(handshake + frames[:-3])  # the last frame split across two reads
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(frames[-3:])
    try:
        async with asyncio.timeout(WAIT):
            status = await reader.readuntil(b"\r\n\r\n")
            assert status.startswith(b"HTTP/1.1 101")
            answers = []
            while len(answers) < 4:
                opcode, payload = await read_frame(reader)
                assert opcode == 0x1
                answers.append(p.decode_message(payload))
    finally:
        writer.close()
    assert isinstance(answers[0], p.Welcome)
    assert [(type(a), a.id) for a in answers[1:]] == [(p.Pong, 1), (p.Pong, 2), (p.Pong, 3)]
    [ws] = server_sockets(gateway)
    assert ws.inbox is None


async def test_a_fault_handling_a_frame_closes_that_connection_only(gateway: Gateway) -> None:
    dispatcher = gateway.app[DISPATCHER]
    receive = dispatcher.receive

    def faulty(session: Any, data: str) -> None:
        if '"boom"' in data:
            raise RuntimeError("gateway bug")
        receive(session, data)

    dispatcher.receive = faulty  # type: ignore[method-assign]
    victim = await gateway.connect("su1")
    other = await gateway.connect("su2")
    with structlog.testing.capture_logs() as logs:
        await victim.send("ping", client_note="boom")  # never decoded: the fault comes first
        code, reason = await victim.closed()
    assert (code, reason) == (p.CloseCode.INTERNAL_ERROR, "internal error")
    failed = [e for e in logs if e["event"] == "request failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error"
    rid = await other.send("ping")
    await other.expect(p.Pong, id=rid)

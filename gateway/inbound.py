"""Inbound text frames go to the dispatcher as they are parsed.

aiohttp parses a connection's bytes into messages on a queue, and a handler
takes them off one at a time with ``await ws.receive()``. For order entry that
is most of the cost of receiving: the body of ``receive()`` for every frame,
and a future and a task switch whenever the queue was empty
(benchmarks/README.md has the figures).

``WebSocket`` puts a ``FrameInbox`` in place of aiohttp's queue. The inbox
hands a text frame straight to ``on_text``, inside the protocol's
``data_received``, when nothing waits in the queue ahead of it. Everything
else takes aiohttp's way, and the handler reads it with ``receive()`` as
before:

* pings, pongs, close frames and parse errors;
* a text frame queued behind any of those, so frames keep their order;
* every frame while ``on_text`` is None: before the handler sets it, and
  after a close frame.

The swap reaches into aiohttp: the response's parser and queue, and the
request handler's parser slot. When these are not as expected (another
aiohttp version, or frames the client sent before the handshake finished),
``WebSocket.inbox`` stays None and every frame comes through ``receive()``.
``tests/gateway/test_inbound.py`` checks that the installed aiohttp gets the
inbox.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.helpers import DEFAULT_CHUNK_SIZE
from aiohttp.http_websocket import WSMessage
from aiohttp.web_request import BaseRequest

from gateway.protocol import CLOSE_REASONS, CloseCode

_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE
_TOO_BIG_REASON = CLOSE_REASONS[CloseCode.MESSAGE_TOO_BIG].encode()


class FrameInbox(WebSocketDataQueue):
    """aiohttp's message queue, with a way round it for text frames (module doc)."""

    on_text: Callable[[str], None] | None = None

    def feed_data(self, data: WSMessage, size: int) -> None:  # type: ignore[override]
        on_text = self.on_text
        if on_text is not None:
            kind = data[0]
            if kind is _TEXT and not self._buffer:
                on_text(data[1])
                return
            if kind is _CLOSE:
                self.on_text = None  # the client is done; nothing after this is handled first
        super().feed_data(data, size)


class WebSocket(web.WebSocketResponse):
    """A server WebSocket whose text frames can skip ``receive()`` (module doc)."""

    inbox: FrameInbox | None = None

    def _post_start(self, request: BaseRequest, *args: Any, **kwargs: Any) -> None:
        handler = request.protocol
        pipelined = getattr(handler, "_message_tail", b"")  # already parsed by aiohttp's reader
        super()._post_start(request, *args, **kwargs)
        parser = getattr(self, "_parser", None)
        loop = self._loop
        if pipelined or self._compress or parser is None or loop is None:
            return
        if getattr(handler, "_payload_parser", None) is not parser:
            return
        try:
            inbox = FrameInbox(handler, DEFAULT_CHUNK_SIZE, loop=loop)
            decode_text = getattr(self, "_decode_text", True)
            parser = WebSocketReader(
                inbox, self._max_msg_size, compress=False, decode_text=decode_text
            )
        except TypeError:  # another aiohttp's signatures: keep its own queue
            return
        self._parser = parser
        self._reader = inbox
        handler._payload_parser = parser
        self.inbox = inbox

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        # aiohttp closes a connection whose frame is over ``max_msg_size`` itself,
        # with 1009 and no reason; the gateway's close codes all carry one.
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = _TOO_BIG_REASON
        return await super().close(code=code, message=message, drain=drain)

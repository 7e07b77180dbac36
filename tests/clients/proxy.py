"""A TCP proxy on loopback that a test can cut, to break connections on purpose.

``cut()`` aborts every connection through it (both sides see a reset); new
connections are forwarded again. ``hold()`` keeps forwarding client bytes to
the server on the connections open now, but drops what the server sends on
them, until the next ``cut()``: a request gets there, its answer is lost, and
to the client the connection falls silent. Connections made after ``hold()``
are forwarded both ways. ``target`` may be changed: new connections go there.
"""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.held: set[int] = set()  # connections whose server bytes are dropped
        self.open: set[int] = set()
        self.connections = 0

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:  # nothing listens at the target: refuse the client too
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}
        self.open.add(connection)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, None)),
            asyncio.create_task(self._pump(up_reader, writer, connection)),
        ]
        self.tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        self.open.discard(connection)
        for w in (writer, up_writer):
            w.transport.abort()
            self.writers.discard(w)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, downstream: int | None
    ) -> None:
        """Copy bytes one way; ``downstream`` is the connection when they are the server's."""
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if downstream in self.held:
                    continue
                writer.write(data)
                await writer.drain()

    def hold(self) -> None:
        self.held |= self.open

    def cut(self) -> None:
        self.held.clear()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

"""A blocking wrapper around the asyncio SDK, for scripts and notebooks.

    with SyncClient("http://127.0.0.1:8080", api_key) as client:
        report = client.place_order("H800-SUZHOU-STATE-W1", "BUY", 64, 1_800)
        print(client.balances())
        with client.subscribe("trades", "H800-SUZHOU-STATE-W1") as trades:
            print(trades.get(timeout=5))

``SyncClient`` runs one ``clients.sdk.Client`` on a private event loop in a
daemon thread. Every coroutine method of ``Client`` is available under the same
name and arguments, blocking until it returns (or raising the same errors);
everything else (``orders``, ``account_id``...) is read through. It adds
nothing of its own beyond subscriptions with a blocking ``get``. Do not call it
from inside a running event loop's thread: use ``Client`` there.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, Self, TypeVar

from clients.sdk import Client, Subscription

T = TypeVar("T")


class SyncSubscription:
    """A subscription read by blocking calls; a context manager and an iterator."""

    def __init__(self, owner: SyncClient, subscription: Subscription[Any]) -> None:
        self._owner = owner
        self._subscription = subscription

    def get(self, timeout: float | None = None) -> Any:
        """The next message; ``TimeoutError`` if none comes within ``timeout`` seconds."""

        async def next_message() -> Any:
            async with asyncio.timeout(timeout):
                return await self._subscription.get()

        return self._owner._run(next_message())

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.get()
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self._owner._run(self._subscription.close())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncClient:
    """``clients.sdk.Client`` with blocking methods. See the module doc."""

    def __init__(self, url: str, api_key: str = "", **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="suanli-sync-client", daemon=True
        )
        self._thread.start()

        async def make() -> Client:
            client = Client(url, api_key, **options)
            await client.connect()
            return client

        try:
            self._client = self._run(make())
        except BaseException:
            self._stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if inspect.iscoroutinefunction(attr):

            @functools.wraps(attr)
            def blocking(*args: Any, **kwargs: Any) -> Any:
                return self._run(attr(*args, **kwargs))

            return blocking
        return attr

    def subscribe(self, channel: str, instrument_id: str = "") -> SyncSubscription:
        """A channel's messages (``Client.subscribe``), read with ``get``."""
        return self._open(self._client.subscribe(channel, instrument_id))

    def private(self) -> SyncSubscription:
        """The account's execution reports, balances, vouchers, contracts and claims."""
        return self._open(self._client.private())

    def book(self, instrument_id: str) -> SyncSubscription:
        """A verified local book; ``get`` returns the ``LocalBook`` after each change."""
        return self._open(self._client.book(instrument_id))

    def _open(self, subscription: Subscription[Any]) -> SyncSubscription:
        self._run(subscription.__aenter__())
        return SyncSubscription(self, subscription)

    def close(self) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

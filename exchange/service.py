"""The asyncio service around the core: the only place the core meets asyncio.

Callers ``submit`` commands and await their events (or ``submit_nowait`` and
keep the future). One task takes commands from the queue in batches, stamps
each with the time (never earlier than the last stamp, so time only moves
forward), writes the batch to the journal before anything else happens,
applies each command to the core, answers the callers, and hands every
(sequence, command, events) to the listeners. A timer sends ``AdvanceClock``
when an expiry falls due with no other traffic.

A caller may pass an ``origin`` with a command: any object, which the service
never looks at and hands, with the command's events, to the listeners added
with ``add_origin_listener``. The gateway passes the request a command
answers, so its listener can answer that request without matching commands
to requests by content. A caller that learns of its command only through the
listeners ``post``s it: no future is made, and a command that is not applied
(journal failure, unstorable, a fault) is reported to the failure listeners
(``add_failure_listener``) with its origin instead.

Sequence numbers count every command the service has journalled, from 1.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec
import structlog

from exchange.commands import SYSTEM, AdvanceClock, Command
from exchange.core import NEVER, ExchangeCore
from exchange.events import Event

log = structlog.get_logger("exchange.service")

Listener = Callable[[int, Command, list[Event]], None]
"""``listener(seq, command, events)``, after each command is applied."""
OriginListener = Callable[[int, Command, list[Event], Any], None]
"""``listener(seq, command, events, origin)``: the same, with the submitter's origin
(typed ``Any`` so that a listener may declare the type of origin its submitters pass)."""
FailureListener = Callable[[Command, BaseException, Any], None]
"""``listener(command, exc, origin)``: a posted command was not applied, and why."""
BatchListener = Callable[[int], None]
"""``listener(last_seq)``: a batch is applied, up to and including ``last_seq``."""


class Journal(Protocol):
    """Where stamped commands go before they are applied (exchange.journal).

    A journal may also have ``applied(last_seq)``: the service calls it on its
    loop after applying each batch, when the core holds exactly the commands up
    to ``last_seq`` (``exchange.store`` takes snapshots there).
    """

    def append(self, first_seq: int, commands: Sequence[Command]) -> None:
        """Store the batch durably, or raise."""


class ServiceStopped(Exception):
    """The service is not accepting commands: stopped, or its journal failed."""


class InvalidCommand(ValueError):
    """A command the journal cannot store (an integer beyond 64 bits); nothing changed."""


# command, its future (None if posted), origin
_Pending = tuple[Command, "asyncio.Future[list[Event]] | None", object]


class _WithoutOrigin:
    """A plain listener, called as an origin listener."""

    __slots__ = ("listener",)

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def __call__(self, seq: int, command: Command, events: list[Event], origin: object) -> None:
        self.listener(seq, command, events)


class ExchangeService:
    """Owns an ``ExchangeCore``; feeds it commands in batches."""

    def __init__(
        self,
        core: ExchangeCore | None = None,
        *,
        journal: Journal | None = None,
        clock: Callable[[], int] = time.time_ns,
        next_seq: int = 1,
        max_batch: int = 4096,
        timer_interval: float = 0.05,
    ) -> None:
        self.core = core or ExchangeCore()
        self.journal = journal
        self.clock = clock
        self.seq = next_seq - 1  # last sequence number used
        self.max_batch = max_batch
        self.timer_interval = timer_interval
        self.failure: BaseException | None = None
        self._listeners: list[OriginListener] = []
        self._failure_listeners: list[FailureListener] = []
        self._batch_listeners: list[BatchListener] = []
        # The queue: a deque and a future the batch task waits on while it is
        # empty (an asyncio.Queue costs several times as much per command).
        self._queue: deque[_Pending] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._draining = False  # stop() was called: finish the queue, then end
        self._tasks: list[asyncio.Task[None]] = []
        self._last_ts = self.core.now

    # --- life cycle -----------------------------------------------------------

    async def start(self) -> None:
        self._draining = False
        self._tasks = [
            asyncio.create_task(self._run(), name="exchange-batches"),
            asyncio.create_task(self._timer(), name="exchange-timer"),
        ]

    async def stop(self) -> None:
        """Finish what is queued, then stop the tasks."""
        if not self._tasks:
            return
        # Refuse new submits before waiting: one that slipped in after the drain
        # would be queued with no task left to answer it, and hang its caller.
        tasks, self._tasks = self._tasks, []
        batches, timer = tasks
        timer.cancel()
        self._draining = True
        self._wakeup()
        await asyncio.gather(batches, timer, return_exceptions=True)

    async def __aenter__(self) -> ExchangeService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- use --------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(seq, command, events)`` after each command is applied.

        Listeners are called in the order they were added, in sequence order,
        on the service's task, before the command's submitter is woken. One that
        raises is logged and does not stop the others.
        """
        self._listeners.append(_WithoutOrigin(listener))

    def add_origin_listener(self, listener: OriginListener) -> None:
        """Call ``listener(seq, command, events, origin)`` after each command is applied.

        ``origin`` is what the submitter passed with the command (None if
        nothing, and for the timer's commands). Otherwise as ``add_listener``.
        """
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener | OriginListener) -> None:
        """Stop calling a listener added with either method."""
        for i, added in enumerate(self._listeners):
            if added is listener or (
                isinstance(added, _WithoutOrigin) and added.listener is listener
            ):
                del self._listeners[i]
                return
        raise ValueError("not a listener of this service")

    def add_failure_listener(self, listener: FailureListener) -> None:
        """Call ``listener(command, exc, origin)`` for each posted command that is not applied.

        ``exc`` is what a submitter's future would have failed with
        (``ServiceStopped``, ``InvalidCommand``, or the core's exception). Called
        on the service's task; one that raises is logged and does not stop the others.
        """
        self._failure_listeners.append(listener)

    def add_batch_listener(self, listener: BatchListener) -> None:
        """Call ``listener(last_seq)`` after each batch, once every command of it is applied
        and its listeners called (the place to send what a batch changed, in one go).

        Called on the service's task; one that raises is logged and does not stop
        the others.
        """
        self._batch_listeners.append(listener)

    def post(self, command: Command, origin: object) -> None:
        """Queue a command whose outcome the submitter learns from the listeners alone.

        Like ``submit_nowait`` with no future: the origin listeners get its
        events, or, if it is not applied, the failure listeners get the
        exception. Raises ``ServiceStopped`` at once if the service is not
        taking commands. The cheapest way in: nothing is allocated per command
        but the queue entry.
        """
        if self.failure is not None or not self._tasks:
            raise ServiceStopped(str(self.failure or "service not running"))
        self._queue.append((command, None, origin))
        if self._wake is not None:
            self._wakeup()

    def submit_nowait(self, command: Command, origin: object = None) -> asyncio.Future[list[Event]]:
        """Queue a command; the future of its events, set once it is journalled and applied.

        Raises ``ServiceStopped`` at once if the service is not taking commands.
        The future fails with ``ServiceStopped`` if the journal fails,
        ``InvalidCommand`` if the journal cannot store the command, or the
        core's exception if applying it faulted; the listeners are not called
        for a command that failed. No task is made per command: a caller that
        does not await may add a done callback.
        """
        if self.failure is not None or not self._tasks:
            raise ServiceStopped(str(self.failure or "service not running"))
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future, origin))
        if self._wake is not None:
            self._wakeup()
        return future

    async def submit(self, command: Command, origin: object = None) -> list[Event]:
        """Queue a command; return its events once it is journalled and applied."""
        return await self.submit_nowait(command, origin)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # --- the loop ---------------------------------------------------------------

    def _stamp(self) -> int:
        ts = self.clock()
        if ts <= self._last_ts:
            ts = self._last_ts
        self._last_ts = ts
        return ts

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._draining:
                    return
                self._wake = asyncio.get_running_loop().create_future()
                await self._wake
                continue
            take = queue.popleft
            batch = [take() for _ in range(min(len(queue), self.max_batch))]
            await self._process(batch)

    def _wakeup(self) -> None:
        """Wake the batch task if it waits for commands."""
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _process(self, batch: list[_Pending]) -> None:
        if self.failure is not None:
            for pending in batch:
                self._failed(pending, ServiceStopped(str(self.failure)))
            return
        ts = self._stamp()
        replace = msgspec.structs.replace
        stamped = [replace(command, ts=ts) for command, _, _ in batch]
        first_seq = self.seq + 1
        if self.journal is not None:
            try:
                try:
                    await self._store(first_seq, stamped)
                except OverflowError:
                    # An integer too large for the journal: refuse those commands
                    # alone, unstored and unapplied, and store the rest.
                    batch, stamped = self._refuse_unstorable(batch, stamped)
                    await self._store(first_seq, stamped)
            except Exception as exc:  # a full disk or failed write: stop taking commands
                self._fail(exc, first_seq, batch)
                return
        self.seq += len(stamped)
        core = self.core
        listeners = self._listeners
        apply = core.apply
        seq = first_seq - 1
        for command, pending in zip(stamped, batch, strict=True):
            seq += 1
            try:
                events = apply(command)
            except Exception as exc:  # a fault in the core: answer it, keep serving
                log.exception("command_fault", seq=seq, command=type(command).__name__)
                self._failed(pending, exc)
                continue
            future = pending[1]
            origin = pending[2]
            if future is not None and not future.done():
                future.set_result(events)
            for listener in listeners:
                try:
                    listener(seq, command, events, origin)
                except Exception:
                    log.exception("listener_fault", seq=seq)
        for batch_listener in self._batch_listeners:
            try:
                batch_listener(self.seq)
            except Exception:
                log.exception("batch_listener_fault", seq=self.seq)
        applied = getattr(self.journal, "applied", None)
        if applied is not None:
            try:
                applied(self.seq)
            except Exception:
                log.exception("journal_applied_fault", seq=self.seq)

    async def _store(self, first_seq: int, stamped: list[Command]) -> None:
        assert self.journal is not None
        if stamped:
            await asyncio.to_thread(self.journal.append, first_seq, stamped)

    def _failed(self, pending: _Pending, exc: BaseException) -> None:
        """A command was not applied: fail its future, or tell the failure listeners."""
        command, future, origin = pending
        if future is not None:
            if not future.done():
                future.set_exception(exc)
            return
        for listener in self._failure_listeners:
            try:
                listener(command, exc, origin)
            except Exception:
                log.exception("failure_listener_fault", command=type(command).__name__)

    def _fail(self, exc: BaseException, first_seq: int, batch: list[_Pending]) -> None:
        self.failure = exc
        log.error("journal_failed", error=str(exc), first_seq=first_seq)
        for pending in batch:
            self._failed(pending, ServiceStopped(f"journal failed: {exc}"))

    def _refuse_unstorable(
        self, batch: list[_Pending], stamped: list[Command]
    ) -> tuple[list[_Pending], list[Command]]:
        """Answer every command the journal cannot encode with ``InvalidCommand``."""
        kept: list[_Pending] = []
        kept_stamped: list[Command] = []
        for pending, command in zip(batch, stamped, strict=True):
            try:
                msgspec.msgpack.encode(command)
            except OverflowError:
                self._failed(
                    pending,
                    InvalidCommand(f"{type(command).__name__}: an integer is out of range"),
                )
                continue
            kept.append(pending)
            kept_stamped.append(command)
        return kept, kept_stamped

    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(self.timer_interval)
            if self.failure is None and self.core.next_deadline() <= self.clock():
                try:
                    await self.submit(AdvanceClock(actor=SYSTEM))
                except ServiceStopped:
                    return


__all__ = [
    "NEVER",
    "BatchListener",
    "ExchangeService",
    "FailureListener",
    "InvalidCommand",
    "Journal",
    "Listener",
    "OriginListener",
    "ServiceStopped",
]

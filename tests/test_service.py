"""The asyncio service: stamping, batching, journalling, listeners, timer, faults.

Every test drives the service with a fake clock; none waits on wall time beyond
letting the event loop turn. ``asyncio.wait_for`` guards only turn a hang into a
failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from exchange import commands as c
from exchange.events import CashMoved, Event, OrderAccepted, OrderCancelled, Rejected
from exchange.journal import Journal, JournalReader
from exchange.reasons import CancelReason, Reason
from exchange.reference import Side, TimeInForce
from exchange.service import ExchangeService, InvalidCommand, ServiceStopped
from tests.market import H100, HOUR, SYSTEM, T0, Market, state_digest

GUARD = 5.0  # seconds: only to fail instead of hanging
NO_TIMER = 3_600.0  # seconds between timer checks, for tests that do not want it


class FakeClock:
    """A clock the test sets; the service reads it through ``__call__``."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.now


class ListJournal:
    def __init__(self, fail_from_batch: int | None = None) -> None:
        self.batches: list[tuple[int, list[c.Command]]] = []
        self.fail_from_batch = fail_from_batch

    def append(self, first_seq: int, commands: Sequence[c.Command]) -> None:
        if self.fail_from_batch is not None and len(self.batches) >= self.fail_from_batch:
            raise OSError("disk full")
        self.batches.append((first_seq, list(commands)))


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, c.Command, list[Event]]] = []
        self.expired = asyncio.Event()

    def __call__(self, seq: int, command: c.Command, events: list[Event]) -> None:
        self.calls.append((seq, command, events))
        if any(isinstance(e, OrderCancelled) and e.reason is CancelReason.EXPIRED for e in events):
            self.expired.set()


def buy(coid: str, **kw: Any) -> c.NewOrder:
    fields: dict[str, Any] = {
        "actor": "su2",
        "client_order_id": coid,
        "instrument_id": H100,
        "side": Side.BUY,
        "qty": 8,
        "price": 1000,
    }
    fields.update(kw)
    return c.NewOrder(**fields)


def deposit(amount: int = 1) -> c.Deposit:
    return c.Deposit(actor="ops", account_id="su1", amount=amount)


def service(
    clock: FakeClock, journal: Any = None, **kw: Any
) -> tuple[ExchangeService, Market, Recorder]:
    market = Market()
    kw.setdefault("timer_interval", NO_TIMER)
    svc = ExchangeService(market.core, journal=journal, clock=clock, **kw)
    recorder = Recorder()
    svc.add_listener(recorder)
    return svc, market, recorder


async def test_submit_returns_the_events_of_the_command() -> None:
    clock = FakeClock(T0 + 1_000)
    svc, market, _ = service(clock)
    async with svc:
        events = await asyncio.wait_for(svc.submit(buy("b1")), GUARD)
    (accepted,) = events
    assert isinstance(accepted, OrderAccepted)
    assert (accepted.ts, accepted.account, accepted.price, accepted.cash_reserved) == (
        T0 + 1_000,
        "su2",
        1000,
        8_000,
    )
    assert market.core.now == T0 + 1_000
    assert market.core.orders[accepted.order_id].price == 1000


async def test_refusals_are_answered_as_events_not_exceptions() -> None:
    svc, _, _ = service(FakeClock(T0 + 1))
    async with svc:
        (rejected,) = await asyncio.wait_for(svc.submit(buy("b1", price=1005)), GUARD)
    assert isinstance(rejected, Rejected)
    assert rejected.reason is Reason.OFF_TICK


async def test_commands_are_stamped_by_the_service_and_time_never_goes_back() -> None:
    clock = FakeClock(T0 + 500)
    svc, market, recorder = service(clock)
    async with svc:
        # A client's own ts is overwritten with the service's time.
        await svc.submit(c.Deposit(actor="ops", account_id="su1", amount=1, ts=T0 + 10 * HOUR))
        clock.now = T0 + 400  # the clock steps back
        await svc.submit(deposit())
        clock.now = T0 - 1  # even behind the core's own time
        await svc.submit(deposit())
        clock.now = T0 + 600
        await svc.submit(deposit())
    stamps = [command.ts for _, command, _ in recorder.calls]
    assert stamps == [T0 + 500, T0 + 500, T0 + 500, T0 + 600]
    assert [events[0].ts for _, _, events in recorder.calls] == stamps
    assert market.core.now == T0 + 600


async def test_a_service_starts_no_earlier_than_its_core() -> None:
    clock = FakeClock(T0 - HOUR)  # a clock behind the restored core
    svc, market, recorder = service(clock)
    async with svc:
        await svc.submit(deposit())
    assert recorder.calls[0][1].ts == T0
    assert market.core.now == T0


async def test_concurrent_submits_are_journalled_in_batches_then_applied_in_order() -> None:
    clock = FakeClock(T0 + 7)
    journal = ListJournal()
    svc, market, recorder = service(clock, journal, max_batch=3)
    async with svc:
        answers = await asyncio.wait_for(
            asyncio.gather(*(svc.submit(buy(f"b{i}", price=1000 - 10 * i)) for i in range(7))),
            GUARD,
        )
    assert [(first, len(batch)) for first, batch in journal.batches] == [(1, 3), (4, 3), (7, 1)]
    journalled = [command for _, batch in journal.batches for command in batch]
    assert [command.client_order_id for command in journalled] == [f"b{i}" for i in range(7)]
    assert all(command.ts == T0 + 7 for command in journalled)
    # Each caller gets the answer to its own command.
    assert [answer[0].client_order_id for answer in answers] == [f"b{i}" for i in range(7)]
    assert [answer[0].order_id for answer in answers] == list(range(1, 8))
    # Listeners see every command in sequence, as journalled.
    assert [seq for seq, _, _ in recorder.calls] == list(range(1, 8))
    assert [command for _, command, _ in recorder.calls] == journalled
    assert [events for _, _, events in recorder.calls] == answers
    assert svc.seq == 7
    assert len(market.core.orders) == 7


async def test_sequence_numbers_continue_from_next_seq() -> None:
    journal = ListJournal()
    svc, _, recorder = service(FakeClock(T0 + 1), journal, next_seq=101)
    async with svc:
        await svc.submit(deposit())
        await svc.submit(deposit())
    assert [seq for seq, _, _ in recorder.calls] == [101, 102]
    assert [first for first, _ in journal.batches] == [101, 102]


async def test_listener_faults_do_not_stop_others_or_the_service() -> None:
    svc, _, recorder = service(FakeClock(T0 + 1))
    seen: list[int] = []

    def broken(seq: int, command: c.Command, events: list[Event]) -> None:
        raise RuntimeError("listener bug")

    def later(seq: int, command: c.Command, events: list[Event]) -> None:
        seen.append(seq)

    svc.add_listener(broken)
    svc.add_listener(later)
    with structlog.testing.capture_logs() as logs:
        async with svc:
            first = await svc.submit(deposit(5))
            svc.remove_listener(later)
            await svc.submit(deposit(7))
    assert [(entry["event"], entry["seq"]) for entry in logs] == [
        ("listener_fault", 1),
        ("listener_fault", 2),
    ]
    assert isinstance(first[0], CashMoved)
    assert seen == [1]
    assert [seq for seq, _, _ in recorder.calls] == [1, 2]


async def test_journal_failure_stops_the_service_and_changes_nothing() -> None:
    clock = FakeClock(T0 + 1)
    journal = ListJournal(fail_from_batch=0)
    svc, market, recorder = service(clock, journal)
    before = state_digest(market.core)
    await svc.start()
    results = await asyncio.wait_for(
        asyncio.gather(*(svc.submit(deposit(i + 1)) for i in range(3)), return_exceptions=True),
        GUARD,
    )
    assert [type(r) for r in results] == [ServiceStopped] * 3
    assert "disk full" in str(results[0])
    assert isinstance(svc.failure, OSError)
    with pytest.raises(ServiceStopped):
        await svc.submit(deposit())
    assert state_digest(market.core) == before
    assert recorder.calls == []
    assert svc.seq == 0
    await asyncio.wait_for(svc.stop(), GUARD)


async def test_journal_failure_keeps_what_was_journalled_before() -> None:
    journal = ListJournal(fail_from_batch=1)
    svc, market, recorder = service(FakeClock(T0 + 1), journal)
    await svc.start()
    await svc.submit(deposit(100))
    after_first = state_digest(market.core)
    with pytest.raises(ServiceStopped):
        await asyncio.wait_for(svc.submit(deposit(200)), GUARD)
    assert state_digest(market.core) == after_first
    assert market.core.accounts["su1"].cash == 10_000_000 + 100
    assert [seq for seq, _, _ in recorder.calls] == [1]
    assert svc.seq == 1
    await svc.stop()


async def test_an_integer_the_journal_cannot_store_is_refused_alone(tmp_path: Path) -> None:
    # msgpack stores integers up to 64 bits; the core itself would take any size.
    journal = Journal.open(tmp_path, fsync=False)
    svc, market, recorder = service(FakeClock(T0 + 1), journal)
    before = market.core.accounts["su1"].cash
    await svc.start()
    results = await asyncio.wait_for(
        asyncio.gather(
            svc.submit(deposit(5)),
            svc.submit(c.CancelOrder(actor="su2", order_id=2**70)),
            svc.submit(deposit(7)),
            return_exceptions=True,
        ),
        GUARD,
    )
    await asyncio.wait_for(svc.stop(), GUARD)
    first, refused, last = results
    assert isinstance(refused, InvalidCommand)
    assert "CancelOrder" in str(refused) and "out of range" in str(refused)
    assert [type(e) for e in first] == [type(e) for e in last] == [CashMoved]
    assert svc.failure is None
    assert market.core.accounts["su1"].cash == before + 12
    assert [seq for seq, _, _ in recorder.calls] == [1, 2]
    stored = [cmd for batch in JournalReader(tmp_path).batches(0) for cmd in batch.commands]
    assert [type(cmd) for cmd in stored] == [c.Deposit, c.Deposit]
    # The service goes on taking commands.
    await svc.start()
    assert [type(e) for e in await asyncio.wait_for(svc.submit(deposit(1)), GUARD)] == [CashMoved]
    await svc.stop()
    journal.close()


async def test_timer_expires_a_gtd_order_with_no_other_traffic() -> None:
    clock = FakeClock(T0 + 1)
    svc, market, recorder = service(clock, timer_interval=0.001)
    async with svc:
        events = await svc.submit(buy("g1", tif=TimeInForce.GTD, expire_at=T0 + HOUR))
        order_id = events[0].order_id
        # Before the deadline the timer sends nothing.
        reads = clock.reads
        while clock.reads < reads + 3:
            await asyncio.sleep(0.001)
        assert [type(command) for _, command, _ in recorder.calls] == [c.NewOrder]
        clock.now = T0 + HOUR
        await asyncio.wait_for(recorder.expired.wait(), GUARD)
    seq, command, events = recorder.calls[-1]
    assert isinstance(command, c.AdvanceClock)
    assert (seq, command.actor, command.ts) == (2, SYSTEM, T0 + HOUR)
    (cancelled,) = events
    assert isinstance(cancelled, OrderCancelled)
    assert (cancelled.order_id, cancelled.reason, cancelled.ts) == (
        order_id,
        CancelReason.EXPIRED,
        T0 + HOUR,
    )
    assert market.core.orders == {}
    assert market.core.accounts["su2"].cash_reserved == 0


async def test_a_core_fault_is_answered_and_the_service_keeps_serving() -> None:
    svc, market, recorder = service(FakeClock(T0 + 1), ListJournal())

    def broken(command: c.Deposit, out: list[Event]) -> None:
        raise RuntimeError("core bug")

    market.core._handlers[c.Deposit] = broken
    with structlog.testing.capture_logs() as logs:
        async with svc:
            results = await asyncio.wait_for(
                asyncio.gather(
                    svc.submit(buy("b1")),
                    svc.submit(deposit()),
                    svc.submit(buy("b2", price=990)),
                    return_exceptions=True,
                ),
                GUARD,
            )
            assert isinstance(results[0], list) and isinstance(results[0][0], OrderAccepted)
            assert isinstance(results[1], RuntimeError) and str(results[1]) == "core bug"
            assert isinstance(results[2], list) and results[2][0].client_order_id == "b2"
            with pytest.raises(RuntimeError, match="core bug"):
                await svc.submit(deposit())
            later = await svc.submit(buy("b3", price=980))
    assert isinstance(later[0], OrderAccepted)
    assert svc.failure is None
    assert sorted(o.client_order_id for o in market.core.orders.values()) == ["b1", "b2", "b3"]
    # Listeners hear of the commands that were applied.
    assert [seq for seq, _, _ in recorder.calls] == [1, 3, 5]
    assert [(entry["event"], entry["seq"]) for entry in logs] == [
        ("command_fault", 2),
        ("command_fault", 4),
    ]


async def test_stop_drains_what_is_queued() -> None:
    svc, market, _ = service(FakeClock(T0 + 1))
    await svc.start()
    tasks = [asyncio.create_task(svc.submit(buy(f"b{i}", price=1000 - 10 * i))) for i in range(20)]
    await asyncio.sleep(0)  # let every submit reach the queue
    assert svc.queue_depth == 20
    await asyncio.wait_for(svc.stop(), GUARD)
    assert all(task.done() for task in tasks)
    assert [task.result()[0].client_order_id for task in tasks] == [f"b{i}" for i in range(20)]
    assert len(market.core.orders) == 20
    with pytest.raises(ServiceStopped):
        await svc.submit(deposit())


async def test_submit_racing_stop_is_refused_not_left_hanging() -> None:
    svc, market, _ = service(FakeClock(T0 + 1))
    await svc.start()
    # These tasks start running only once stop() has begun (it is awaited inline).
    tasks = [asyncio.create_task(svc.submit(deposit())) for _ in range(5)]
    await svc.stop()
    done, pending = await asyncio.wait(tasks, timeout=GUARD)
    assert pending == set()
    assert all(isinstance(task.exception(), ServiceStopped) for task in done)
    assert market.core.accounts["su1"].cash == 10_000_000


async def test_submit_before_start_is_refused() -> None:
    svc, _, _ = service(FakeClock(T0 + 1))
    with pytest.raises(ServiceStopped):
        await svc.submit(deposit())
    await svc.stop()  # stopping a service that never started is harmless


async def test_submit_nowait_hands_the_origin_to_origin_listeners_only() -> None:
    svc, _, recorder = service(FakeClock(T0 + 1))
    heard: list[tuple[int, type[c.Command], object]] = []

    def with_origin(seq: int, command: c.Command, events: list[Event], origin: object) -> None:
        heard.append((seq, type(command), origin))

    svc.add_origin_listener(with_origin)
    async with svc:
        first = svc.submit_nowait(deposit(3), origin="request-1")
        second = svc.submit_nowait(buy("b1"))  # no origin
        third = svc.submit(deposit(4), origin=("session", 7))
        assert isinstance(first, asyncio.Future) and not first.done()
        events = await asyncio.wait_for(first, GUARD)
        await asyncio.wait_for(asyncio.gather(second, third), GUARD)
    assert isinstance(events[0], CashMoved) and events[0].amount == 3
    assert heard == [
        (1, c.Deposit, "request-1"),
        (2, c.NewOrder, None),
        (3, c.Deposit, ("session", 7)),
    ]
    # A plain listener is called as before, without the origin.
    assert [(seq, type(command)) for seq, command, _ in recorder.calls] == [
        (1, c.Deposit),
        (2, c.NewOrder),
        (3, c.Deposit),
    ]


async def test_submit_nowait_is_refused_at_once_when_not_running() -> None:
    svc, _, _ = service(FakeClock(T0 + 1))
    with pytest.raises(ServiceStopped):
        svc.submit_nowait(deposit(), origin="x")
    await svc.start()
    await svc.stop()
    with pytest.raises(ServiceStopped):
        svc.submit_nowait(deposit(), origin="x")


async def test_a_failed_command_reaches_no_listener_and_fails_its_future() -> None:
    svc, market, recorder = service(FakeClock(T0 + 1), ListJournal(fail_from_batch=0))
    heard: list[object] = []
    svc.add_origin_listener(lambda seq, command, events, origin: heard.append(origin))
    await svc.start()
    future = svc.submit_nowait(deposit(9), origin="doomed")
    with pytest.raises(ServiceStopped, match="disk full"):
        await asyncio.wait_for(future, GUARD)
    await svc.stop()
    assert heard == [] and recorder.calls == []
    assert market.core.accounts["su1"].cash == 10_000_000


async def test_post_hands_events_to_origin_listeners_and_makes_no_future() -> None:
    svc, _, recorder = service(FakeClock(T0 + 1))
    heard: list[tuple[int, object]] = []
    failures: list[object] = []
    svc.add_origin_listener(lambda seq, command, events, origin: heard.append((seq, origin)))
    svc.add_failure_listener(lambda command, exc, origin: failures.append(origin))
    async with svc:
        svc.post(deposit(3), "request-1")
        svc.post(buy("b1"), "request-2")
        await asyncio.wait_for(svc.submit(deposit(4), origin="request-3"), GUARD)
    assert heard == [(1, "request-1"), (2, "request-2"), (3, "request-3")]
    assert [type(command) for _, command, _ in recorder.calls] == [c.Deposit, c.NewOrder, c.Deposit]
    assert failures == []


async def test_post_is_refused_at_once_when_not_running() -> None:
    svc, _, _ = service(FakeClock(T0 + 1))
    with pytest.raises(ServiceStopped):
        svc.post(deposit(), "x")
    await svc.start()
    await svc.stop()
    with pytest.raises(ServiceStopped):
        svc.post(deposit(), "x")


async def test_a_posted_command_that_fails_goes_to_the_failure_listeners_alone() -> None:
    svc, market, recorder = service(FakeClock(T0 + 1), ListJournal(fail_from_batch=0))
    heard: list[object] = []
    failures: list[tuple[type[c.Command], BaseException, object]] = []
    svc.add_origin_listener(lambda seq, command, events, origin: heard.append(origin))
    svc.add_failure_listener(
        lambda command, exc, origin: failures.append((type(command), exc, origin))
    )
    await svc.start()
    svc.post(deposit(9), "doomed")
    future = svc.submit_nowait(deposit(8), origin="with-future")
    with pytest.raises(ServiceStopped, match="disk full"):
        await asyncio.wait_for(future, GUARD)
    await svc.stop()
    # The posted command's failure reaches the failure listener; the submitted one's its future.
    assert [(kind, origin) for kind, _, origin in failures] == [(c.Deposit, "doomed")]
    assert isinstance(failures[0][1], ServiceStopped) and "disk full" in str(failures[0][1])
    assert heard == [] and recorder.calls == []
    assert market.core.accounts["su1"].cash == 10_000_000


async def test_a_posted_command_the_journal_cannot_store_is_refused_alone(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, fsync=False)
    svc, market, recorder = service(FakeClock(T0 + 1), journal)
    before = market.core.accounts["su1"].cash
    failures: list[tuple[BaseException, object]] = []
    svc.add_failure_listener(lambda command, exc, origin: failures.append((exc, origin)))
    async with svc:
        svc.post(c.CancelOrder(actor="su2", order_id=2**70), "too-big")
        await asyncio.wait_for(svc.submit(deposit(5)), GUARD)
    journal.close()
    assert [origin for _, origin in failures] == ["too-big"]
    assert isinstance(failures[0][0], InvalidCommand)
    assert [type(command) for _, command, _ in recorder.calls] == [c.Deposit]
    assert market.core.accounts["su1"].cash == before + 5


async def test_batch_listeners_are_called_once_per_batch_after_its_command_listeners() -> None:
    svc, _, _ = service(FakeClock(T0 + 1))
    heard: list[tuple[str, int]] = []
    svc.add_origin_listener(lambda seq, command, events, origin: heard.append(("command", seq)))
    svc.add_batch_listener(lambda last_seq: heard.append(("batch", last_seq)))
    async with svc:
        for amount in (1, 2, 3):
            svc.post(deposit(amount), None)  # queued together: one batch
        await asyncio.wait_for(svc.submit(deposit(4)), GUARD)  # a batch of its own
    assert heard == [
        ("command", 1),
        ("command", 2),
        ("command", 3),
        ("batch", 3),
        ("command", 4),
        ("batch", 4),
    ]


async def test_remove_listener_removes_either_kind_and_refuses_a_stranger() -> None:
    svc, _, recorder = service(FakeClock(T0 + 1))
    heard: list[object] = []

    def with_origin(seq: int, command: c.Command, events: list[Event], origin: object) -> None:
        heard.append(origin)

    svc.add_origin_listener(with_origin)
    async with svc:
        await svc.submit(deposit(), origin="a")
        svc.remove_listener(with_origin)
        svc.remove_listener(recorder)
        await svc.submit(deposit(), origin="b")
    assert heard == ["a"]
    assert [seq for seq, _, _ in recorder.calls] == [1]
    with pytest.raises(ValueError):
        svc.remove_listener(recorder)

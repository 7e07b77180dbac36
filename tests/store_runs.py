"""Runs of a durable store without a service, batch by batch, as the service makes them.

``drive`` journals each batch, applies it to the store's core and calls
``store.applied``, exactly the service's order; it waits for each snapshot it
starts, so which sequence numbers get one does not depend on timing.
"""

from __future__ import annotations

from pathlib import Path

from exchange.commands import Command
from exchange.core import ExchangeCore
from exchange.snapshot import digest
from exchange.store import Store, open_store


def drive(store: Store, commands: list[Command], batch: int = 20, *, wait: bool = True) -> None:
    seq = store.next_seq
    for start in range(0, len(commands), batch):
        chunk = commands[start : start + batch]
        store.journal.append(seq, chunk)
        for command in chunk:
            store.core.apply(command)
        seq += len(chunk)
        store.applied(seq - 1)
        if wait:
            store.wait_for_snapshot()


def never_stopped(commands: list[Command]) -> str:
    """The state digest of a core that applied every command in memory."""
    core = ExchangeCore()
    for command in commands:
        core.apply(command)
    return digest(core)


def recovered(data_dir: Path, **options: bool) -> tuple[str, Store]:
    """Open the store again (closing it at once): its state digest and the closed store."""
    store = open_store(data_dir, snapshot_every=0, **options)  # type: ignore[arg-type]
    store.close()
    return digest(store.core), store

"""Tables that grow with every order and never stop the loop to grow.

A Python dict doubles its table when it fills, rehashing every entry at once:
at 350,000 entries that is about 20 ms with nothing else running, at 700,000
about 40, and the pauses grow with the exchange's age. The maps kept for the
exchange's whole life (contracts by trade id, each account's client order
ids, the gateway's order states by order id) use these instead:

* ``IdTable``: values by ids handed out in increasing order (order ids, trade
  ids). Ids from ``start`` on index a list, which grows by appending (a
  ``realloc`` of pointers, no rehash); ids below ``start`` (those loaded at a
  restart) stay in a dict that is filled once.
* ``KeyMap``: ``str`` keys spread over ``SHARDS`` dicts by their last two
  characters, so each one regrows at a fraction of the size (the same work
  in all, in small steps).

Both are compiled with the core (``exchange.native``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final, Generic, TypeVar

V = TypeVar("V")

SHARDS: Final = 64


class IdTable(Generic[V]):
    """A map from ids to values, for ids handed out in increasing order.

    Any int key is accepted; ids from ``start`` on are kept in a list with
    ``None`` for ids that are not in the table, so a sparse run of large ids
    would cost memory: the table is for counters such as order and trade ids.
    """

    def __init__(self, start: int = 1, items: Iterable[tuple[int, V]] = ()) -> None:
        self._start = start
        self._older: dict[int, V] = {}
        self._slots: list[V | None] = []
        self._count = 0
        for key, value in items:
            self[key] = value

    def add(self, key: int, value: V) -> None:
        """``self[key] = value``, by name: compiled callers call it directly."""
        index = key - self._start
        slots = self._slots
        if index == len(slots):  # the next id: nearly every write
            slots.append(value)
            self._count += 1
        else:
            self[key] = value

    def __setitem__(self, key: int, value: V) -> None:
        index = key - self._start
        slots = self._slots
        size = len(slots)
        if index == size:
            slots.append(value)
            self._count += 1
            return
        if index < 0:
            if key not in self._older:
                self._count += 1
            self._older[key] = value
            return
        if index < size:
            if slots[index] is None:
                self._count += 1
            slots[index] = value
            return
        if index > size:
            slots.extend([None] * (index - size))
        slots.append(value)
        self._count += 1

    def get(self, key: int, default: V | None = None) -> V | None:
        index = key - self._start
        if index < 0:
            return self._older.get(key, default)
        if index < len(self._slots):
            value = self._slots[index]
            if value is not None:
                return value
        return default

    def __getitem__(self, key: int) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and self.get(key) is not None

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys())

    def keys(self) -> list[int]:
        """Every id in the table, in increasing order."""
        start = self._start
        return sorted(self._older) + [
            start + index for index, value in enumerate(self._slots) if value is not None
        ]

    def values(self) -> list[V]:
        """Every value, in increasing order of id."""
        older = self._older
        return [older[key] for key in sorted(older)] + [
            value for value in self._slots if value is not None
        ]

    def items(self) -> list[tuple[int, V]]:
        return list(zip(self.keys(), self.values(), strict=True))

    def __eq__(self, other: object) -> bool:
        """Equal to a table or a dict with the same items."""
        if isinstance(other, IdTable):
            return self.items() == other.items()
        if isinstance(other, dict):
            return dict(self.items()) == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"IdTable({dict(self.items())!r})"


class KeyMap:
    """A ``str -> int`` map in ``SHARDS`` dicts chosen by the key's last two characters.

    Client order ids mostly differ at the end (counters, random suffixes), so
    the shards fill evenly; ids that all end alike share one shard, which is
    then just a dict. The characters rather than ``hash()``: compiled, a hash
    is boxed into a Python int on every call, and the shards do not depend on
    the process's hash seed.

    ``shard(key)`` is the dict that holds ``key`` if anyone does: the order
    path looks a new client order id up there and later adds it there.
    """

    def __init__(self, items: dict[str, int] | None = None) -> None:
        self._shards: list[dict[str, int]] = [{} for _ in range(SHARDS)]
        if items:
            for key, value in items.items():
                self[key] = value

    def shard(self, key: str) -> dict[str, int]:
        size = len(key)
        if size >= 2:
            return self._shards[(ord(key[size - 1]) + 31 * ord(key[size - 2])) & (SHARDS - 1)]
        return self._shards[ord(key) & (SHARDS - 1) if size else 0]

    def __setitem__(self, key: str, value: int) -> None:
        self.shard(key)[key] = value

    def get(self, key: str, default: int | None = None) -> int | None:
        return self.shard(key).get(key, default)

    def __getitem__(self, key: str) -> int:
        return self.shard(key)[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.shard(key)

    def __len__(self) -> int:
        return sum(len(shard) for shard in self._shards)

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def as_dict(self) -> dict[str, int]:
        """Every entry, by key (a snapshot lists them so, whatever order they came in)."""
        merged: dict[str, int] = {}
        for shard in self._shards:
            merged.update(shard)
        return {key: merged[key] for key in sorted(merged)}

    def items(self) -> list[tuple[str, int]]:
        return list(self.as_dict().items())

    def __eq__(self, other: object) -> bool:
        """Equal to a map or a dict with the same entries."""
        if isinstance(other, KeyMap):
            return self.as_dict() == other.as_dict()
        if isinstance(other, dict):
            return self.as_dict() == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"KeyMap({self.as_dict()!r})"

"""Tables that grow with every order and never stop the loop to grow.

A Python dict doubles its table when it fills, rehashing every entry at once:
at 350,000 entries that is about 20 ms with nothing else running, at 700,000
about 40, and the pauses grow with the exchange's age. The maps kept for the
exchange's whole life (contracts by trade id, each account's client order
ids, the gateway's order states by order id) use these instead:

* ``IdTable``: values by ids handed out by a counter (order ids, trade ids),
  in dicts of 4,096 consecutive ids: each stops growing when it is full.
* ``KeyMap``: ``str`` keys spread over ``SHARDS`` dicts by their last two
  characters, so each one regrows at a fraction of the size (the same work
  in all, in small steps).

Both hold their entries in dicts of ints, strings and ``gc=False`` values,
which the garbage collector does not track, so however large they grow no
collection walks them. Both are compiled with the core (``exchange.native``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final, Generic, TypeVar

V = TypeVar("V")

SHARDS: Final = 64
CHUNK_BITS: Final = 12  # an IdTable's dicts hold 4,096 consecutive ids each
_NO_CHUNK: Final = -(1 << 62)  # no id that fits the journal's 64 bits is in this chunk


class IdTable(Generic[V]):
    """A map from int ids to values, for ids handed out by a counter.

    The values live in dicts of ``1 << CHUNK_BITS`` consecutive ids each: none
    ever regrows past that size, and a dict of ints and untracked values (the
    core's events and records are ``gc=False``) is left alone by the garbage
    collector, where a list of a million entries would be walked by every
    full collection.
    """

    def __init__(self, items: Iterable[tuple[int, V]] = ()) -> None:
        self._chunks: dict[int, dict[int, V]] = {}
        self._last: dict[int, V] = {}  # the chunk written last, and its number
        self._last_no = _NO_CHUNK
        # While every new id is above the ones before (a counter's are), the
        # dicts' own order is the ids' order and listing them needs no sort.
        self._top = -(1 << 62)
        self._ordered = True
        for key, value in items:
            self.add(key, value)

    def add(self, key: int, value: V) -> None:
        """``self[key] = value``, by name: compiled callers call it directly."""
        if key > self._top:
            self._top = key
        elif self._ordered and key not in self:
            self._ordered = False
        number = key >> CHUNK_BITS
        if number == self._last_no:
            chunk = self._last
        else:
            found = self._chunks.get(number)
            if found is None:
                found = self._chunks[number] = {}
            chunk = self._last = found
            self._last_no = number
        chunk[key] = value

    def __setitem__(self, key: int, value: V) -> None:
        self.add(key, value)

    def get(self, key: int, default: V | None = None) -> V | None:
        chunk = self._chunks.get(key >> CHUNK_BITS)
        if chunk is None:
            return default
        return chunk.get(key, default)

    def __getitem__(self, key: int) -> V:
        chunk = self._chunks.get(key >> CHUNK_BITS)
        if chunk is None:
            raise KeyError(key)
        return chunk[key]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int):
            return False
        chunk = self._chunks.get(key >> CHUNK_BITS)
        return chunk is not None and key in chunk

    def __len__(self) -> int:
        return sum(len(chunk) for chunk in self._chunks.values())

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys())

    def keys(self) -> list[int]:
        """Every id in the table, in increasing order."""
        if not self._ordered:
            return [key for key, _ in self.items()]
        out: list[int] = []
        for chunk in self._chunks.values():
            out.extend(chunk)
        return out

    def below(self, before: int) -> Iterator[int]:
        """The ids below ``before``, largest first, lazily: a page of the newest
        costs its own length and the chunks it passes, not the table's size."""
        numbers = sorted((n for n in self._chunks if n <= before >> CHUNK_BITS), reverse=True)
        for number in numbers:
            chunk = self._chunks[number]
            keys = list(chunk) if self._ordered else sorted(chunk)
            for key in reversed(keys):
                if key < before:
                    yield key

    def values(self) -> list[V]:
        """Every value, in increasing order of id."""
        if not self._ordered:
            return [value for _, value in self.items()]
        out: list[V] = []
        for chunk in self._chunks.values():
            out.extend(chunk.values())
        return out

    def items(self) -> list[tuple[int, V]]:
        out: list[tuple[int, V]] = []
        for chunk in self._chunks.values():
            out.extend(chunk.items())
        if not self._ordered:
            out.sort(key=_first)
        return out

    def __eq__(self, other: object) -> bool:
        """Equal to a table or a dict with the same items."""
        if isinstance(other, IdTable):
            return self.items() == other.items()
        if isinstance(other, dict):
            return dict(self.items()) == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"IdTable({dict(self.items())!r})"


def _first(item: tuple[int, object]) -> int:
    return item[0]


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
        """Every entry, shard by shard, each in the order its keys came.

        A map rebuilt from this dict lists its entries in the same order, so
        a snapshot of a recovered exchange has the same bytes as the one it
        was recovered from.
        """
        merged: dict[str, int] = {}
        for shard in self._shards:
            merged.update(shard)
        return merged

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

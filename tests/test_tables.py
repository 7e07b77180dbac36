"""The tables that grow with every order behave as the dicts they replace."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.tables import SHARDS, IdTable, KeyMap


def test_an_id_table_lists_by_id_and_counts_each_id_once() -> None:
    table: IdTable[str] = IdTable([(3, "c"), (1, "a")])
    table.add(10, "x")  # the next id
    table.add(13, "y")  # a gap: 11 and 12 are not in the table
    table[10] = "x2"
    assert len(table) == 4
    assert table.keys() == [1, 3, 10, 13]
    assert table.values() == ["a", "c", "x2", "y"]
    assert table.items() == [(1, "a"), (3, "c"), (10, "x2"), (13, "y")]
    assert list(table) == [1, 3, 10, 13]
    assert table[3] == "c" and table.get(11) is None and table.get(2, "-") == "-"
    assert 13 in table and 12 not in table and 0 not in table and "10" not in table
    with pytest.raises(KeyError):
        table[12]
    assert table == {1: "a", 3: "c", 10: "x2", 13: "y"}
    assert table != {1: "a"}
    assert table == IdTable([(13, "y"), (1, "a"), (10, "x2"), (3, "c")])
    far = 1 << 40  # a sparse id costs one more chunk, not a run of empty slots
    table[far] = "z"
    assert table.keys()[-1] == far and table[far] == "z" and len(table) == 5


@given(st.lists(st.tuples(st.integers(-5, 20_000), st.integers()), max_size=60))
def test_an_id_table_agrees_with_a_dict(writes: list[tuple[int, int]]) -> None:
    table: IdTable[int] = IdTable()
    model: dict[int, int] = {}
    for n, (key, value) in enumerate(writes):
        if n % 2:
            table[key] = value
        else:
            table.add(key, value)
        model[key] = value
        assert len(table) == len(model)
    assert table.items() == sorted(model.items())
    for key in {*model, -6, 0, 4095, 4096, 20_001}:
        assert table.get(key) == model.get(key)
        assert (key in table) == (key in model)
        assert list(table.below(key)) == sorted((k for k in model if k < key), reverse=True)


def test_the_collector_does_not_walk_the_tables() -> None:
    """Their dicts hold only untracked objects, so a full collection skips them."""
    table: IdTable[str] = IdTable((n, str(n)) for n in range(10_000))
    ids = KeyMap({str(n): n for n in range(10_000)})
    assert not any(gc.is_tracked(chunk) for chunk in table._chunks.values())
    assert not any(gc.is_tracked(shard) for shard in ids._shards)


def test_a_key_map_spreads_its_keys_and_lists_them_by_key() -> None:
    ids = KeyMap({"b": 2, "a": 1})
    ids["c"] = 3
    ids["a"] = 10
    assert len(ids) == 3
    assert ids.as_dict() == {"a": 10, "b": 2, "c": 3}
    assert KeyMap(ids.as_dict()).as_dict() == ids.as_dict()
    assert list(KeyMap(ids.as_dict()).as_dict()) == list(ids.as_dict())  # a snapshot's order
    assert sorted(ids) == ["a", "b", "c"]
    assert ids["b"] == 2 and ids.get("z") is None and ids.get("z", 0) == 0
    assert "c" in ids and "z" not in ids and 3 not in ids
    with pytest.raises(KeyError):
        ids["z"]
    assert ids == {"a": 10, "b": 2, "c": 3} and ids == KeyMap({"c": 3, "b": 2, "a": 10})
    ids[""] = 0  # any string is a key, the empty one too
    assert ids.get("") == 0 and ids.shard("") is ids.shard("")
    many = KeyMap({f"order-{n}": n for n in range(20 * SHARDS)})
    used = [len(shard) for shard in many._shards]
    assert sum(used) == 20 * SHARDS and max(used) < 20 * SHARDS // 4  # spread, not one dict


@given(st.lists(st.tuples(st.text(max_size=6), st.integers()), max_size=80))
def test_a_key_map_agrees_with_a_dict(writes: list[tuple[str, int]]) -> None:
    ids = KeyMap()
    model: dict[str, int] = {}
    for key, value in writes:
        ids[key] = value
        model[key] = value
        assert len(ids) == len(model)
        assert (key in ids) and ids.get(key) == value
    assert ids.as_dict() == model
    assert list(KeyMap(ids.as_dict()).as_dict()) == list(ids.as_dict())

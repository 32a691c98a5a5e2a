"""KeyedState: reads through a cache, writes behind, bounded cache, revoked partitions forgotten."""

from __future__ import annotations


def test_a_value_is_read_from_the_store_once_and_then_from_memory(json_state):
    state = json_state()
    state.write_local(1, {b"k": b'{"n":1}'})
    first = state.get(1, b"k")
    state.table.data.data[b"k"] = b'{"n":99}'  # the store changes behind the cache
    assert first == {"n": 1} and state.get(1, b"k") is first


def test_take_dirty_encodes_each_key_once_by_partition_and_clears_it(json_state):
    state = json_state()
    state.put(0, b"a", {"n": 1})
    state.put(0, b"a", {"n": 2})
    state.put(3, b"b", None)
    assert state.take_dirty() == {0: {b"a": b'{"n":2}'}, 3: {b"b": None}}
    assert state.take_dirty() == {} and not state.has_dirty()


def test_trim_drops_the_oldest_clean_entries_but_never_dirty_ones(json_state):
    state = json_state(max_cached=2)
    for i in range(4):
        state.put(0, f"k{i}".encode(), {"n": i})
    state.take_dirty()
    state.put(0, b"k0", {"n": 10})  # dirty again: must stay
    state.trim()
    assert sorted(key for key, _, _ in state.cached_items()) == [b"k0", b"k3"]


def test_without_a_cache_clean_values_live_in_the_store_only_and_read_back_equal(json_state):
    state = json_state(max_cached=0)
    state.put(0, b"a", {"n": 1, "features": {"x": 0.5}})
    state.put(1, b"b", {"n": 2})
    for partition, entries in state.take_dirty().items():  # a flush: encode, write, trim
        state.write_local(partition, entries)
    state.trim()
    assert len(state) == 0
    read = state.get(0, b"a")
    assert read == {"n": 1, "features": {"x": 0.5}} and state.get(1, b"b") == {"n": 2}
    read["n"] = 5  # changed and put, as handlers do: dirty, so kept until its flush
    state.put(0, b"a", read)
    state.trim()
    assert [key for key, _, _ in state.cached_items()] == [b"a"]


def test_forgetting_revoked_partitions_keeps_other_partitions_and_dirty_entries(json_state):
    state = json_state()
    state.put(0, b"a", {"n": 1})
    state.put(1, b"b", {"n": 2})
    state.take_dirty()
    state.put(1, b"c", {"n": 3})
    state.forget_partitions([1])
    assert sorted(key for key, _, _ in state.cached_items()) == [b"a", b"c"]


def test_peek_does_not_fill_the_cache(json_state):
    state = json_state()
    state.write_local(2, {b"k": b"[1]"})
    assert state.peek(2, b"k") == [1]
    assert len(state) == 0


async def test_a_sweep_deletes_idle_keys_of_owned_partitions_only(json_state, monkeypatch):
    from faust.types import TP

    from app.stages.state import store_keys, sweep_idle

    state = json_state()
    for partition, key, n in [(0, b"idle-owned", 0), (0, b"busy-owned", 9), (1, b"idle-standby", 0)]:
        state.write_local(partition, {key: f'{{"n": {n}}}'.encode()})
    changelog = state.changelog_topic
    monkeypatch.setattr(type(state.table.app.assignor), "assigned_actives", lambda self: {TP(changelog, 0)})

    assert sorted(store_keys(state.table)) == [(0, b"busy-owned"), (0, b"idle-owned")]
    evicted = []
    swept = await sweep_idle(
        state, lambda value: value["n"] == 0, on_evicted=lambda key, _: evicted.append(key)
    )
    assert swept == 1 and evicted == ["idle-owned"]
    assert state.take_dirty() == {0: {b"idle-owned": None}}  # a tombstone for the owned key only

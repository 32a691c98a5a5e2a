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

    from app.stages.state import store_entries, sweep_idle

    state = json_state()
    for partition, key, n in [(0, b"idle-owned", 0), (0, b"busy-owned", 9), (1, b"idle-standby", 0)]:
        state.write_local(partition, {key: f'{{"n": {n}}}'.encode()})
    changelog = state.changelog_topic
    monkeypatch.setattr(type(state.table.app.assignor), "assigned_actives", lambda self: {TP(changelog, 0)})

    owned = [(partition, key) for chunk in store_entries(state.table) for partition, key, _ in chunk]
    assert sorted(owned) == [(0, b"busy-owned"), (0, b"idle-owned")]
    evicted = []
    swept = await sweep_idle(
        state, lambda value: value["n"] == 0, on_evicted=lambda key, _: evicted.append(key)
    )
    assert swept == 1 and evicted == ["idle-owned"]
    assert state.take_dirty() == {0: {b"idle-owned": None}}  # a tombstone for the owned key only


async def test_a_sweep_passes_values_that_do_not_decode_counts_them_and_changes_the_rest(
    json_state, monkeypatch, caplog
):
    from faust.types import TP

    from app.stages.state import sweep_idle

    state = json_state()
    state.write_local(0, {b"a-idle": b'{"n": 0}', b"b-corrupt": b"{not json", b"c-idle": b'{"n": 0}'})
    changelog = state.changelog_topic
    monkeypatch.setattr(type(state.table.app.assignor), "assigned_actives", lambda self: {TP(changelog, 0)})

    for sweeps in (1, 2):  # every sweep gets past it, not only the first
        assert await sweep_idle(state, lambda value: value["n"] == 0) == 2
        assert state.take_dirty() == {0: {b"a-idle": None, b"c-idle": None}}
        state.write_local(0, {b"a-idle": b'{"n": 0}', b"c-idle": b'{"n": 0}'})
        assert state.sweep_failures == sweeps
    assert "sweep of" in caplog.text and "b'b-corrupt' on partition 0" in caplog.text


class _RocksStore:
    """The parts of faust's RocksDB store the sweep reads: one real rocksdict database per partition."""

    offset_key = b"__faust\x00offset__"

    def __init__(self, path, partitions):
        from rocksdict import Options, Rdict

        self._dbs = {p: Rdict(str(path / str(p)), options=Options(raw_mode=True)) for p in partitions}

    def _db_for_partition(self, partition):
        return self._dbs[partition]


async def test_a_sweep_over_rocksdb_reads_each_owned_key_once_in_chunks_and_sees_newer_values(
    json_state, monkeypatch, tmp_path
):
    from faust.types import TP

    from app.stages.state import store_entries, sweep

    state = json_state()
    store = _RocksStore(tmp_path, partitions=(0, 1))
    monkeypatch.setattr(type(state.table), "data", property(lambda table: store))
    owned = {TP(state.changelog_topic, 0)}
    monkeypatch.setattr(type(state.table.app.assignor), "assigned_actives", lambda self: owned)
    keys = [f"k{n:03d}".encode() for n in range(23)]
    for key in keys:
        store._dbs[0][key] = b'{"n":0}'
        store._dbs[1][key] = b'{"n":0}'  # a standby copy: not ours to sweep
    store._dbs[0][store.offset_key] = b"17"

    sizes = [len(chunk) for chunk in store_entries(state.table, chunk=10)]
    assert sum(sizes) == 23 and len(sizes) == 3 and max(sizes) <= 10  # the offset key is not an entry
    one_by_one = [key for chunk in store_entries(state.table, chunk=1) for _, key, _ in chunk]
    assert one_by_one == keys  # a chunk holding only the offset key does not end the pass

    seen = []

    def count(partition, key, value):
        seen.append((partition, key, value["n"]))
        if key == b"k004":  # a handler changes a later key while the sweep is between chunks
            state.put(0, b"k015", {"n": 7})
        return {"n": value["n"] + 1}

    changed = await sweep(state, count, chunk=5)
    assert changed == 23 and [key for _, key, _ in seen] == keys
    assert {p for p, _, _ in seen} == {0} and dict((k, n) for _, k, n in seen)[b"k015"] == 7


async def test_a_sweep_stops_at_a_partition_revoked_between_chunks(json_state, monkeypatch, tmp_path):
    from faust.types import TP

    from app.stages.state import sweep

    state = json_state()
    store = _RocksStore(tmp_path, partitions=(0,))
    monkeypatch.setattr(type(state.table), "data", property(lambda table: store))
    owned = {TP(state.changelog_topic, 0)}
    monkeypatch.setattr(type(state.table.app.assignor), "assigned_actives", lambda self: owned)
    for n in range(12):
        store._dbs[0][f"k{n:02d}".encode()] = b'{"n":0}'

    def revoke_after_first(partition, key, value):
        owned.clear()
        return None

    assert await sweep(state, revoke_after_first, chunk=5) == 5


def test_a_deleted_key_leaves_the_cache_once_its_tombstone_is_handed_over(json_state):
    state = json_state()
    state.put(0, b"kept", {"n": 1})
    state.put(0, b"gone", {"n": 2})
    for partition, entries in state.take_dirty().items():
        state.write_local(partition, entries)
    state.put(0, b"gone", None)
    assert state.get(0, b"gone") is None  # deleted before its flush: read as deleted
    assert state.take_dirty() == {0: {b"gone": None}}
    state.write_local(0, {b"gone": None})
    assert sorted(key for key, _, _ in state.cached_items()) == [b"kept"]
    assert state.get(0, b"gone") is None and state.get(0, b"kept") == {"n": 1}

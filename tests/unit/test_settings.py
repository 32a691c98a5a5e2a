from faust.stores.rocksdb import RocksDBOptions

from app.settings import Settings


def test_table_stores_open_with_bounded_caches_and_memtables(tmp_path):
    options = Settings.from_env(
        {"EDDY_ROCKSDB_BLOCK_CACHE_MB": "4", "EDDY_ROCKSDB_WRITE_BUFFER_MB": "2"}
    ).table_options
    assert options["block_cache_size"] == 4 * 2**20
    assert options["write_buffer_size"] == 2 * 2**20 and options["max_write_buffer_number"] == 2
    del options["driver"]  # faust's Store takes it; the rest goes to RocksDBOptions as here
    rocksdb_options = RocksDBOptions(**options, use_rocksdict=True)
    assert (rocksdb_options.block_cache_size, rocksdb_options.write_buffer_size) == (4 * 2**20, 2 * 2**20)
    db = rocksdb_options.open(tmp_path / "store")
    db[b"k"] = b"v"
    assert db[b"k"] == b"v"
    db.close()


def test_a_memory_store_takes_no_rocksdb_options():
    assert Settings(store="memory://").table_options == {}

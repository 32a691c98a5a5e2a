from faust.stores.rocksdb import RocksDBOptions

from app.settings import Settings


def test_table_stores_open_with_bounded_memtables(tmp_path):
    settings = Settings.from_env({"EDDY_ROCKSDB_MEMORY_MB": "64", "EDDY_ROCKSDB_WRITE_BUFFER_MB": "2"})
    options = settings.table_options
    assert settings.rocksdb_memory_mb == 64
    assert options["write_buffer_size"] == 2 * 2**20 and options["max_write_buffer_number"] == 2
    del options["driver"]  # faust's Store takes it; the rest goes to RocksDBOptions as here
    rocksdb_options = RocksDBOptions(**options, use_rocksdict=True)
    assert rocksdb_options.write_buffer_size == 2 * 2**20
    db = rocksdb_options.open(tmp_path / "store")
    db[b"k"] = b"v"
    assert db[b"k"] == b"v"
    db.close()


def test_a_memory_store_takes_no_rocksdb_options():
    assert Settings(store="memory://").table_options == {}


def test_snapshot_cadences_come_from_the_environment_or_their_defaults():
    assert (Settings.from_env({}).reco_snapshot_every, Settings.from_env({}).fraud_snapshot_every) == (
        500,
        2_000,
    )
    chosen = Settings.from_env({"EDDY_RECO_SNAPSHOT_EVERY": "50", "EDDY_FRAUD_SNAPSHOT_EVERY": "7"})
    assert (chosen.reco_snapshot_every, chosen.fraud_snapshot_every) == (50, 7)

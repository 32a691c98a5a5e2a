from app.demo import forget_tables_of_another_cluster


def test_the_demo_worker_keeps_its_tables_on_the_same_cluster_and_drops_them_on_another(tmp_path):
    workdir = tmp_path / "demo"
    assert forget_tables_of_another_cluster(workdir, "cluster-a") is False  # first run: noted
    (workdir / "data" / "tables").mkdir(parents=True)  # the worker's tables
    assert forget_tables_of_another_cluster(workdir, "cluster-a") is False
    assert (workdir / "data" / "tables").is_dir()
    assert forget_tables_of_another_cluster(workdir, "cluster-b") is True  # the broker was reset
    assert not (workdir / "data").exists()
    assert (workdir / "cluster-id").read_text() == "cluster-b"


def test_demo_tables_from_before_the_cluster_was_noted_are_dropped(tmp_path):
    (tmp_path / "data").mkdir()
    assert forget_tables_of_another_cluster(tmp_path, "cluster-a") is True
    assert not (tmp_path / "data").exists()

"""A worker's web views with a bearer token configured, and faust's table dump switched off."""

from __future__ import annotations

import time

TOKEN = "integration-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_with_a_token_views_answer_only_to_it_while_health_stays_open(worker_factory):
    worker = worker_factory(extra_env={"EDDY_WEB_TOKEN": TOKEN})
    worker.wait_ready()
    deadline = time.monotonic() + 60
    while worker.get_json("/health/")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    status, health = worker.get_json("/health/")
    assert status == 200 and health["ready"] and health["assigned_partitions"] > 0, health

    assert worker.get_json("/fraud/state/")[0] == 401
    assert worker.get_json("/fraud/state/", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert worker.get_json("/fraud/state/", headers=AUTH)[0] == 200
    # A routed view: the request reaches the key's owner with its headers.
    assert worker.get_json("/fraud/cards/no-such-card/")[0] == 401
    assert worker.get_json("/fraud/cards/no-such-card/", headers=AUTH)[0] == 404


def test_faust_table_endpoint_does_not_serve_card_histories(worker_factory):
    worker = worker_factory()
    worker.wait_ready()
    status, _ = worker.get_json("/table/")
    assert status == 404
    status, _ = worker.get_json(f"/table/{worker.group_id}-fraud-card-activity/card-1/")
    assert status == 404

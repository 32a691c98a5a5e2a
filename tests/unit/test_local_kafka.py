"""The local broker launcher's pure parts (the broker itself runs in the integration tests)."""

from __future__ import annotations

import socket
import threading

from broker.local_kafka import _random_cluster_id, metadata_answers


def test_cluster_ids_never_start_with_a_dash_which_the_storage_tool_would_take_for_an_option():
    ids = [_random_cluster_id() for _ in range(5_000)]
    assert not any(cluster_id.startswith("-") for cluster_id in ids)
    assert all(len(cluster_id) == 22 for cluster_id in ids)
    assert len(set(ids)) == len(ids)


def test_a_port_that_is_closed_does_not_answer_metadata():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert not metadata_answers("127.0.0.1", port, timeout=0.5)


def test_a_server_that_is_not_kafka_does_not_answer_metadata():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def reply_garbage() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(1024)
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=reply_garbage, daemon=True)
    thread.start()
    try:
        assert not metadata_answers("127.0.0.1", port, timeout=1.0)
    finally:
        server.close()
        thread.join(timeout=2)

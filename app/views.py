"""Shared pieces of eddy's web views."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from faust.web import Request, Response, View

from app.codecs import dumps
from app.faust_app import app
from app.faust_fixes import shared_rocksdb_memory
from app.runtime import GcPauses, LoopStalls, heap_report, resident_mb

ViewHandler = Callable[..., Awaitable[Response]]


def json_response(web: View, payload: Any, status: int = 200) -> Response:
    """A JSON response encoded by eddy's codec (numpy numbers and NaN included)."""
    return web.bytes(dumps(payload), content_type="application/json", status=status)


def routed_to_key_owner(table: Any, match_info: str) -> Callable[[ViewHandler], ViewHandler]:
    """Faust's ``table_route``, answering 503 (JSON) while the owner of the key is unknown.

    Until a worker's first assignment, and during a rebalance, faust's router has no
    owner for a key and fails with an HTML 500; clients should retry instead.
    """

    def decorate(handler: ViewHandler) -> ViewHandler:
        routed = app.table_route(table=table, match_info=match_info)(handler)

        @functools.wraps(handler)
        async def answer(web: View, request: Request, **kwargs: Any) -> Response:
            try:
                return await routed(web, request, **kwargs)
            except (TypeError, KeyError, LookupError):
                if app.rebalancing or not app.assignor.assigned_actives():
                    return json_response(
                        web, {"error": "partitions are being assigned; retry shortly"}, status=503
                    )
                raise

        return answer

    return decorate


@app.page("/health/")
async def health(web: View, request: Request) -> Response:
    """Liveness and readiness, open without a token: 200 once partitions are assigned, else 503."""
    assigned = len(app.assignor.assigned_actives())
    ready = assigned > 0 and not app.rebalancing
    return json_response(
        web,
        {"ready": ready, "rebalancing": app.rebalancing, "assigned_partitions": assigned},
        status=200 if ready else 503,
    )


gc_pauses = GcPauses().install()
loop_stalls = LoopStalls()


@app.task
async def watch_loop_stalls() -> None:
    loop_stalls.start()


@app.page("/worker/")
async def worker_view(web: View, request: Request) -> Response:
    """This worker process: memory (RocksDB's too), collector pauses, event-loop stalls, partitions."""
    return json_response(
        web,
        {
            "resident_mb": resident_mb(),
            "heap": heap_report(),
            "gc": gc_pauses.report(),
            "loop_stalls": loop_stalls.report(),
            "rocksdb_memory": shared_rocksdb_memory().report(),
            "assigned_partitions": len(app.assignor.assigned_actives()),
            "rebalancing": app.rebalancing,
        },
    )

"""Optional bearer-token check for a worker's web views.

With ``EDDY_WEB_TOKEN`` set, every request must carry ``Authorization: Bearer <token>``
except the ones on :data:`OPEN_PATHS` (liveness probes and metric scrapers need none);
others get a JSON 401.  Requests a worker forwards to the owner of a key keep their headers,
so one token serves the whole cluster.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

OPEN_PATHS = frozenset({"/health/", "/metrics/"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_token_middleware(token: str, open_paths: frozenset[str] = OPEN_PATHS) -> Callable:
    """An aiohttp middleware refusing requests without ``token`` (compared in constant time)."""
    if not token:
        raise ValueError("the web token must not be empty")
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def require_bearer_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="eddy"'},
            )
        return await handler(request)

    return require_bearer_token

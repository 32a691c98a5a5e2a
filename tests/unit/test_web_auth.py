"""The bearer-token middleware, through a real aiohttp server (no broker)."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.web_auth import bearer_token_middleware

TOKEN = "s3cret-token-for-tests"


async def _client(token: str) -> TestClient:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    application = web.Application(middlewares=[bearer_token_middleware(token)])
    for path in ("/fraud/state/", "/health/", "/metrics/"):
        application.router.add_get(path, ok)
    client = TestClient(TestServer(application))
    await client.start_server()
    return client


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
)
async def test_a_request_without_the_right_bearer_token_gets_a_json_401(headers):
    client = await _client(TOKEN)
    try:
        response = await client.get("/fraud/state/", headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert await response.json() == {"error": "missing or wrong bearer token"}
    finally:
        await client.close()


async def test_a_request_with_the_bearer_token_is_served():
    client = await _client(TOKEN)
    try:
        response = await client.get("/fraud/state/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status == 200 and await response.json() == {"path": "/fraud/state/"}
    finally:
        await client.close()


@pytest.mark.parametrize("path", ["/health/", "/metrics/"])
async def test_health_and_metrics_need_no_token(path):
    client = await _client(TOKEN)
    try:
        assert (await client.get(path)).status == 200
    finally:
        await client.close()


def test_an_empty_token_is_refused():
    with pytest.raises(ValueError, match="must not be empty"):
        bearer_token_middleware("")

"""Shared pieces of eddy's web views."""

from __future__ import annotations

from typing import Any

from faust.web import Response, View

from app.codecs import dumps


def json_response(web: View, payload: Any, status: int = 200) -> Response:
    """A JSON response encoded by eddy's codec (numpy numbers and NaN included)."""
    return web.bytes(dumps(payload), content_type="application/json", status=status)

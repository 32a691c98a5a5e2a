"""eddy's Faust application: ``faust -A app worker -l info`` runs a worker.

``app.app`` builds the app and registers every pipeline and command on first use;
importing anything else of this package (settings, codecs, contracts, the
simulators) does not build it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    # Registered after the app exists: these modules declare topics, tables and agents on it.
    import agents.alerts
    import agents.fraud
    import agents.recommendations  # noqa: F401
    import app.commands  # noqa: F401
    from app.faust_app import app as faust_app

    return faust_app

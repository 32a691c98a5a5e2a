"""eddy's Faust application: ``faust -A app worker -l info`` runs a worker.

Importing this package builds the app and registers every pipeline and command.
"""

# Registered after ``app`` exists: these modules declare topics, tables and agents on it.
from agents import fraud  # noqa: F401
from app import commands  # noqa: F401
from app.faust_app import app

__all__ = ["app"]

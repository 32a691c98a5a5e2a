"""Computations and learners for the child-process tests (the child imports them by name)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from models.recommender import RecoLearner


def scaled(context: int | None, items: Sequence[int]) -> list[bytes]:
    """Each item times the context (1 without one)."""
    return [str(item * (1 if context is None else context)).encode() for item in items]


def scaled_unless_own(context: int | None, items: Sequence[tuple[int | None, int]]) -> list[bytes]:
    """Each ``(own, n)``: ``n`` times ``own`` if given, else times the context."""
    return [str(n * (own if own is not None else context)).encode() for own, n in items]


def inverses(context: object, items: Sequence[int]) -> list[bytes]:
    return [repr(1 / item).encode() for item in items]


def pid_after(context: float | None, items: Sequence[int]) -> list[bytes]:
    """The child's pid for each item, after sleeping ``context`` seconds."""
    time.sleep(context or 0.0)
    return [str(os.getpid()).encode() for _ in items]


def slow_records(value: bytes | None) -> list[Any]:
    """No records, after sleeping as many seconds as ``value`` says."""
    time.sleep(float(value or 0))
    return []


class UnsnapshottableLearner(RecoLearner):
    """A learner whose snapshots cannot be pickled."""

    def snapshot_state(self) -> dict[str, Any]:
        return {**super().snapshot_state(), "unpicklable": lambda: None}

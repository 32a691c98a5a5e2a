"""A user's state: bounded recent interactions and purchases, exact binary round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.contracts import CLICK_ACTIONS, Click
from tables.user_history import (
    PURCHASED_MAX,
    RECENT_MAX,
    RECENT_RETENTION,
    UserFactors,
    UserHistory,
)

clicks = st.lists(
    st.builds(
        Click,
        user_id=st.just("u1"),
        item_id=st.text(min_size=1, max_size=12),
        action=st.sampled_from(CLICK_ACTIONS),
        ts=st.floats(0.0, 30 * 86_400.0, allow_nan=False),
    ),
    max_size=150,
)


def brute_force_recent(history: list[Click]) -> list[tuple[float, str, str]]:
    """What the user keeps, recomputed: sorted by time (stable), cut by count, then by age."""
    kept: list[Click] = []
    for click in history:
        kept = sorted([*kept, click], key=lambda c: c.ts)  # stable: equal times keep arrival order
        if len(kept) > RECENT_MAX:
            kept = kept[len(kept) - RECENT_MAX :]
        kept = [c for c in kept if c.ts > kept[-1].ts - RECENT_RETENTION]
    return [(c.ts, c.item_id, c.action) for c in kept]


def brute_force_purchases(history: list[Click]) -> list[str]:
    order: list[str] = []
    for click in history:
        if click.action == "purchase":
            order = [item for item in order if item != click.item_id] + [click.item_id]
    return order[-PURCHASED_MAX:]


@settings(max_examples=150, deadline=None)
@given(clicks, st.booleans())
def test_state_equals_a_recomputation_and_survives_the_byte_round_trip_exactly(history, with_factors):
    user = UserHistory()
    for click in history:
        user.add(click)
    if with_factors:
        user.factors = UserFactors(np.random.default_rng(len(history)).normal(size=10), bias=-0.123456789)
    assert user.interactions() == brute_force_recent(history)
    assert list(user.purchased) == brute_force_purchases(history)
    decoded = UserHistory.decode(user.encode())
    assert decoded == user
    assert decoded.interactions() == user.interactions()
    assert decoded.encode() == user.encode()


def test_recent_interactions_are_bounded_in_count_keeping_the_newest():
    user = UserHistory()
    for i in range(RECENT_MAX + 30):
        user.add(Click("u1", f"i{i}", "view", float(i)))
    assert len(user.interactions()) == RECENT_MAX
    assert user.interactions()[0] == (30.0, "i30", "view")


def test_interactions_older_than_the_retention_behind_the_newest_are_dropped():
    user = UserHistory()
    user.add(Click("u1", "old", "view", 0.0))
    user.add(Click("u1", "new", "view", RECENT_RETENTION + 1.0))
    assert user.recent_items() == ["new"]


def test_purchases_are_bounded_to_the_last_distinct_ones():
    user = UserHistory()
    for i in range(PURCHASED_MAX + 5):
        user.add(Click("u1", f"i{i}", "purchase", float(i)))
    user.add(Click("u1", "i5", "purchase", 500.0))  # bought again: now the newest
    assert len(user.purchased) == PURCHASED_MAX
    assert not user.has_purchased("i4") and user.has_purchased("i5")
    assert list(user.purchased)[:1] == ["i6"] and list(user.purchased)[-1] == "i5"


def test_recent_items_are_distinct_and_most_recent_first():
    user = UserHistory()
    for ts, item in [(1.0, "a"), (2.0, "b"), (3.0, "a"), (4.0, "c")]:
        user.add(Click("u1", item, "view", ts))
    assert user.recent_items() == ["c", "a", "b"]


def test_a_new_user_decodes_from_none_and_encodes_in_a_few_bytes():
    user = UserHistory.decode(None)
    assert user.interactions() == [] and user.factors is None
    assert len(user.encode()) == 16
    assert UserHistory.decode(user.encode()) == user


def test_a_full_state_stays_compact():
    user = UserHistory()
    for i in range(RECENT_MAX):
        user.add(Click("u1", f"item-{i % 20:04d}", "purchase" if i % 5 == 0 else "view", 1e9 + i))
    user.factors = UserFactors(np.ones(10), 0.5)
    # header, 10 factors, 50 interactions (8 + 1 + 2 bytes each), 4 distinct purchases,
    # 20 distinct ids of 9 characters (+ 2 for the length)
    assert len(user.encode()) == 16 + 80 + 50 * 11 + 4 * 2 + 20 * 11


def test_another_format_is_refused():
    data = bytearray(UserHistory().encode())
    data[0] = 9
    with pytest.raises(ValueError, match="format 9"):
        UserHistory.decode(bytes(data))


def test_idle_after_the_retention():
    user = UserHistory()
    user.add(Click("u1", "a", "view", 100.0))
    assert not user.is_idle(100.0 + RECENT_RETENTION)
    assert user.is_idle(100.0 + RECENT_RETENTION + 1.0)

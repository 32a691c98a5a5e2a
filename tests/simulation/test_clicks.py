"""Tests of the simulated click stream."""

from __future__ import annotations

import doctest
import re
import statistics
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.simulation import clicks
from app.simulation.clicks import (
    ACTIONS,
    ClickStreamConfig,
    SimulatedEvent,
    generate_click_stream,
    true_affinities,
)

SMALL = ClickStreamConfig(seed=3, n_users=150, n_items=120, days=6)
MEDIUM = ClickStreamConfig(seed=7, n_users=600, n_items=300, days=10)
DAY = 86_400.0


def spearman(x: list[float], y: list[float]) -> float:
    """Rank correlation, ties sharing their average rank."""

    def ranks(values: list[float]) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        sorted_values = np.asarray(values)[order]
        result = np.empty(len(values))
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and sorted_values[j + 1] == sorted_values[i]:
                j += 1
            result[order[i : j + 1]] = (i + j) / 2
            i = j + 1
        return result

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def views_per_item(events: list[SimulatedEvent], config: ClickStreamConfig, days: range) -> list[float]:
    counts = [0.0] * config.n_items
    for event in events:
        if event.value["action"] == "view" and int((event.event_time - config.start) // DAY) in days:
            counts[int(event.value["item_id"][5:])] += 1
    return counts


@pytest.fixture(scope="module")
def small() -> list[SimulatedEvent]:
    return list(generate_click_stream(SMALL))


@pytest.fixture(scope="module")
def medium() -> list[SimulatedEvent]:
    return list(generate_click_stream(MEDIUM))


def test_spearman_helper() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [5, 5, 9]) == pytest.approx(1.0)


def test_same_seed_same_stream(small: list[SimulatedEvent]) -> None:
    assert list(generate_click_stream(SMALL)) == small


def test_different_seeds_differ(small: list[SimulatedEvent]) -> None:
    other = ClickStreamConfig(seed=4, n_users=150, n_items=120, days=6)
    assert list(generate_click_stream(other)) != small


def test_time_order_and_span(small: list[SimulatedEvent]) -> None:
    times = [event.event_time for event in small]
    assert times == sorted(times)
    assert all(event.event_time == event.value["ts"] for event in small)
    assert all(SMALL.start <= moment < SMALL.end for moment in times)
    assert times[-1] - times[0] > 5 * DAY


def test_payload_contract(small: list[SimulatedEvent]) -> None:
    assert len(small) > 5_000
    assert len({event.value["event_id"] for event in small}) == len(small)
    for event in small:
        value = event.value
        assert event.topic == "clicks" == clicks.CLICKS_TOPIC
        assert set(value) == {"event_id", "user_id", "item_id", "action", "ts", "session_id"}
        assert type(value["event_id"]) is str and re.fullmatch(r"ev-\d{9}", value["event_id"])
        assert re.fullmatch(r"user-\d{4}", value["user_id"]) and event.key == value["user_id"]
        assert re.fullmatch(r"item-\d{4}", value["item_id"])
        assert int(value["user_id"][5:]) < SMALL.n_users and int(value["item_id"][5:]) < SMALL.n_items
        assert value["action"] in ACTIONS
        assert type(value["ts"]) is float and round(value["ts"], 3) == value["ts"]
        assert type(value["session_id"]) is str and re.fullmatch(r"s-\d{8}", value["session_id"])
        assert set(event.truth) == {"affinity"} and type(event.truth["affinity"]) is float


def test_truth_is_the_latent_affinity(small: list[SimulatedEvent]) -> None:
    affinity = true_affinities(SMALL)
    assert affinity.shape == (SMALL.n_users, SMALL.n_items)
    for event in small[:2_000]:
        user, item = int(event.value["user_id"][5:]), int(event.value["item_id"][5:])
        assert event.truth["affinity"] == pytest.approx(affinity[user, item], abs=1e-4)


def test_sessions_belong_to_one_user_and_are_short(small: list[SimulatedEvent]) -> None:
    sessions: dict[str, list[SimulatedEvent]] = defaultdict(list)
    for event in small:
        sessions[event.value["session_id"]].append(event)
    views = [sum(e.value["action"] == "view" for e in events) for events in sessions.values()]
    assert 3 <= statistics.mean(views) <= 8
    assert max(views) > 10
    for events in sessions.values():
        assert len({event.key for event in events}) == 1
        assert events[-1].event_time - events[0].event_time < 6 * 3_600


def test_funnel_ratios(medium: list[SimulatedEvent]) -> None:
    counts = Counter(event.value["action"] for event in medium)
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert 0.05 <= counts["click"] / counts["view"] <= 0.3
    assert counts["purchase"] / counts["view"] <= 0.05


def test_every_step_follows_the_previous_one_in_its_session(small: list[SimulatedEvent]) -> None:
    done: set[tuple[str, str, str]] = set()
    for event in small:
        value = event.value
        step = ACTIONS.index(value["action"])
        if step:
            assert (value["session_id"], value["item_id"], ACTIONS[step - 1]) in done
        done.add((value["session_id"], value["item_id"], value["action"]))


def test_users_prefer_items_with_higher_affinity(medium: list[SimulatedEvent]) -> None:
    baseline = float(true_affinities(MEDIUM).mean())
    means = {
        action: statistics.mean(e.truth["affinity"] for e in medium if e.value["action"] == action)
        for action in ACTIONS
    }
    assert baseline + 0.3 < means["view"] < means["click"] < means["add_to_cart"] < means["purchase"]


def test_popularity_drifts(medium: list[SimulatedEvent]) -> None:
    first = views_per_item(medium, MEDIUM, range(0, 2))
    next_days = views_per_item(medium, MEDIUM, range(2, 4))
    last = views_per_item(medium, MEDIUM, range(8, 10))
    drifted = spearman(first, last)
    assert 0.3 < drifted < spearman(first, next_days) - 0.02
    static_config = ClickStreamConfig(seed=7, n_users=600, n_items=300, days=10, popularity_drift_per_day=0)
    static = list(generate_click_stream(static_config))
    static_first = views_per_item(static, static_config, range(0, 2))
    assert drifted < spearman(static_first, views_per_item(static, static_config, range(8, 10))) - 0.02


def test_daily_rhythm(medium: list[SimulatedEvent]) -> None:
    hours = Counter(int(event.event_time % DAY // 3_600) for event in medium)
    assert sum(hours[h] for h in range(18, 22)) > 5 * sum(hours[h] for h in range(2, 6))


@given(
    seed=st.integers(0, 2**32),
    n_users=st.integers(1, 30),
    n_items=st.integers(1, 25),
    n_dims=st.integers(1, 6),
    days=st.floats(0.05, 4.0),
    start_offset=st.floats(0.0, DAY),
    drift=st.floats(0.0, 1.0),
)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_invariants_hold_for_odd_configs(
    seed: int, n_users: int, n_items: int, n_dims: int, days: float, start_offset: float, drift: float
) -> None:
    config = ClickStreamConfig(
        seed=seed,
        n_users=n_users,
        n_items=n_items,
        n_dims=n_dims,
        start=1_767_225_600.0 + start_offset,
        days=days,
        sessions_per_user_per_day=3.0,
        popularity_drift_per_day=drift,
    )
    events = list(generate_click_stream(config))
    times = [event.event_time for event in events]
    assert times == sorted(times)
    assert all(config.start <= moment < config.end for moment in times)
    assert all(int(event.value["item_id"][5:]) < n_items for event in events)


@pytest.mark.parametrize(
    "changes",
    [
        {"seed": -1},
        {"n_users": 0},
        {"n_items": 0},
        {"n_dims": 0},
        {"days": 0.0},
        {"sessions_per_user_per_day": -1.0},
        {"popularity_drift_per_day": -0.1},
    ],
)
def test_invalid_config_is_rejected(changes: dict) -> None:
    with pytest.raises(ValueError):
        ClickStreamConfig(**changes)


def test_docstring_examples() -> None:
    assert doctest.testmod(clicks, raise_on_error=True).attempted > 0

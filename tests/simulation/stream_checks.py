"""What every transaction scenario must satisfy, shared by the scenarios' tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from app.simulation.transactions import SimulatedEvent

DAY = 86_400.0
JAN_1_2026 = 1_767_225_600.0

#: Small, odd stream configs: one card or merchant, part of a day, a start off midnight.
odd_configs = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**32),
        "n_cards": st.integers(1, 40),
        "n_merchants": st.integers(1, 30),
        "days": st.floats(0.05, 6.0),
        "start": st.floats(0.0, DAY).map(lambda offset: JAN_1_2026 + offset),
        "label_delay_seconds": st.just(3_600.0),
        "label_jitter_seconds": st.floats(0.0, DAY),
    }
)


def transactions_of(events: list[SimulatedEvent]) -> list[SimulatedEvent]:
    return [event for event in events if event.topic == "transactions"]


def assert_ordered_in_span_and_labelled(events: list[SimulatedEvent], config: Any) -> list[SimulatedEvent]:
    """Events in event-time order, transactions inside the span, one label each; the transactions."""
    times = [event.event_time for event in events]
    assert times == sorted(times)
    txs = transactions_of(events)
    assert all(config.start <= tx.event_time < config.end for tx in txs)
    assert len(events) == 2 * len(txs)
    return txs

"""Snapshots: the size guard, the round trip, and a learner's snapshot that stops growing."""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from models import snapshots
from models.fraud import FraudModel
from models.learner import FraudLearner
from models.snapshots import MAX_SNAPSHOT_BYTES, IncompatibleSnapshot, Snapshot, SnapshotTooLarge

# --- the size guard ----------------------------------------------------------------------


def test_encode_raises_snapshot_too_large_naming_the_size_when_over_the_limit():
    snapshot = Snapshot("fraud", version=7, model=np.random.default_rng(0).random(10_000))
    size = len(snapshot.encode())
    assert len(snapshot.encode(max_bytes=size)) == size  # at the limit is fine
    with pytest.raises(SnapshotTooLarge) as raised:
        snapshot.encode(max_bytes=size - 1)
    assert (raised.value.size, raised.value.limit) == (size, size - 1)
    assert f"{size:,} bytes" in str(raised.value)
    assert "'fraud' version 7" in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_encode_checks_against_max_snapshot_bytes_when_no_limit_is_given(monkeypatch):
    assert MAX_SNAPSHOT_BYTES == 900 * 1024
    snapshot = Snapshot("fraud", version=1, model=bytes(range(256)) * 64)
    size = len(snapshot.encode())
    monkeypatch.setattr(snapshots, "MAX_SNAPSHOT_BYTES", size - 1)
    with pytest.raises(SnapshotTooLarge, match=f"{size:,} bytes"):
        snapshot.encode()


def test_snapshot_too_large_survives_pickling():
    error = pickle.loads(pickle.dumps(SnapshotTooLarge("fraud", 3, 1_000_714, 921_600)))
    assert (error.name, error.version, error.size, error.limit) == ("fraud", 3, 1_000_714, 921_600)
    assert str(error) == "snapshot 'fraud' version 3 encodes to 1,000,714 bytes, over the limit of 921,600"


def test_decode_refuses_another_format_or_river_version():
    for changes in ({"format": 99}, {"river_version": "0.0.1"}):
        snapshot = Snapshot("fraud", version=1, model=None, **changes)
        with pytest.raises(IncompatibleSnapshot):
            Snapshot.decode(snapshot.encode())


# --- a learner's snapshot ----------------------------------------------------------------

FEATURE_NAMES = [
    "amount", "online", "hour", "weekend", "card_count_5m", "card_count_1h", "card_count_24h",
    "card_count_7d", "card_count_30d", "card_amount_sum_1h", "card_amount_max_1h",
    "card_amount_sum_24h", "card_amount_max_24h", "card_amount_sum_7d", "card_amount_max_7d",
    "card_amount_sum_30d", "card_amount_max_30d", "card_distinct_merchants_24h",
    "card_distinct_merchants_7d", "card_amount_mean_30d", "card_seconds_since_prev",
    "card_no_prior_30d", "card_amount_log_ratio", "card_merchant_prev_30d", "card_country_share_30d",
    "merchant_count_1h", "merchant_count_24h", "merchant_count_7d", "merchant_count_30d",
    "merchant_amount_mean_30d", "merchant_amount_ratio", "merchant_burst_1h", "merchant_labels_7d",
    "merchant_fraud_rate_7d", "merchant_labels_30d", "merchant_fraud_rate_30d",
]  # fmt: skip


def training_records(n_labels: int, seed: int, traffic_share: float, learn_share: float) -> Iterator[dict]:
    """Labelled records (2 % fraud, every fraud learned) and traffic samples, as the label join emits.

    Features come from a pool of 1,000 random transactions: the model's state depends on the
    feature names, not on how many distinct values it sees.
    """
    rng = np.random.default_rng(seed)
    values = rng.lognormal(1.0, 1.0, size=(1_000, len(FEATURE_NAMES)))
    values[:, FEATURE_NAMES.index("online")] = rng.random(1_000) < 0.3
    values[:, FEATURE_NAMES.index("hour")] = rng.uniform(0, 24, 1_000)
    pool = [dict(zip(FEATURE_NAMES, row.tolist(), strict=True)) for row in values]
    y = rng.random(n_labels) < 0.02
    scores = np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0.0, 1.0).tolist()
    traffic = (rng.random(n_labels) < traffic_share).tolist()
    learn = (y | (rng.random(n_labels) < learn_share)).tolist()
    which = rng.integers(0, len(pool), n_labels).tolist()
    for i, is_fraud in enumerate(y.tolist()):
        features = pool[which[i]]
        if traffic[i]:
            yield {"kind": "traffic", "features": features}
        yield {"kind": "labelled", "features": features, "score": scores[i], "is_fraud": is_fraud,
               "learn": learn[i]}  # fmt: skip


def feed(learner: FraudLearner, records: Iterator[dict[str, Any]], until_labels: int) -> None:
    for record in records:
        learner.apply(record)
        learner.training_offset += 1
        if record["kind"] == "labelled" and learner.metrics.labels == until_labels:
            return


def test_a_fraud_learners_snapshot_does_not_grow_from_20k_to_200k_labels():
    # Default model and metrics (a 5,000-label rolling window), production sampling rates:
    # 20 % of transactions as traffic samples, 25 % of legitimate labels learned.
    learner = FraudLearner(FraudModel())
    records = training_records(200_000, seed=0, traffic_share=0.2, learn_share=0.25)
    feed(learner, records, until_labels=20_000)
    size_20k = len(learner.snapshot().encode())
    feed(learner, records, until_labels=200_000)
    snapshot = learner.snapshot()
    size_200k = len(snapshot.encode())
    assert learner.model.observed > 35_000 and learner.model.legit_learned > 45_000
    # 125,357 and 126,875 bytes: the Half-Space Trees' masses compress a KB better or worse from
    # one window to the next, the drift detector's successor window (~0.7 KB) exists at 200k
    # and not right after its rotation at 20k, and the histogram's counts get longer.
    # Counters take a few more bytes as they grow (logarithmically); nothing grows per label.
    assert size_200k <= size_20k + 4_096, (size_20k, size_200k)
    assert size_200k < MAX_SNAPSHOT_BYTES // 4, size_200k
    # The metrics inside are the learner's, over the last 5,000 labels.
    restored = FraudLearner.from_snapshot(Snapshot.decode(snapshot.encode()))
    assert restored.report() == learner.report()
    assert restored.metrics.labels == 200_000 and len(restored.metrics.rolling) == 5_000


def test_the_metrics_in_a_snapshot_stay_under_64_kib_whatever_the_labels():
    learner = FraudLearner(FraudModel())
    records = training_records(60_000, seed=1, traffic_share=0.0, learn_share=0.0)
    sizes = []
    for labels in (6_000, 30_000, 60_000):
        feed(learner, records, until_labels=labels)
        sizes.append(len(zlib.compress(pickle.dumps(learner.metrics, protocol=pickle.HIGHEST_PROTOCOL), 1)))
    assert max(sizes) < 64 * 1024, sizes
    assert sizes[-1] <= sizes[0] + 2_048, sizes

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
from models.snapshots import (
    MAX_SNAPSHOT_BYTES,
    SIGNED_PREFIX,
    SIGNING_KEY_ENV,
    ForgedSnapshot,
    IncompatibleSnapshot,
    Snapshot,
    SnapshotTooLarge,
    signing_key,
)

KEY = b"a key for the tests only"

# --- the size guard ----------------------------------------------------------------------


def test_encode_raises_snapshot_too_large_naming_the_size_when_over_the_limit():
    snapshot = Snapshot("fraud", version=7, model=np.random.default_rng(0).random(10_000))
    size = len(snapshot.encode(key=KEY))
    assert len(snapshot.encode(key=KEY, max_bytes=size)) == size  # at the limit is fine
    with pytest.raises(SnapshotTooLarge) as raised:
        snapshot.encode(key=KEY, max_bytes=size - 1)
    assert (raised.value.size, raised.value.limit) == (size, size - 1)
    assert f"{size:,} bytes" in str(raised.value)
    assert "'fraud' version 7" in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_encode_checks_against_max_snapshot_bytes_when_no_limit_is_given(monkeypatch):
    assert MAX_SNAPSHOT_BYTES == 900 * 1024
    snapshot = Snapshot("fraud", version=1, model=bytes(range(256)) * 64)
    size = len(snapshot.encode(key=KEY))
    monkeypatch.setattr(snapshots, "MAX_SNAPSHOT_BYTES", size - 1)
    with pytest.raises(SnapshotTooLarge, match=f"{size:,} bytes"):
        snapshot.encode(key=KEY)


def test_snapshot_too_large_survives_pickling():
    error = pickle.loads(pickle.dumps(SnapshotTooLarge("fraud", 3, 1_000_714, 921_600)))
    assert (error.name, error.version, error.size, error.limit) == ("fraud", 3, 1_000_714, 921_600)
    assert str(error) == "snapshot 'fraud' version 3 encodes to 1,000,714 bytes, over the limit of 921,600"


def test_decode_refuses_another_format_or_river_version():
    for changes in ({"format": 99}, {"river_version": "0.0.1"}):
        snapshot = Snapshot("fraud", version=1, model=None, **changes)
        with pytest.raises(IncompatibleSnapshot):
            Snapshot.decode(snapshot.encode(key=KEY), key=KEY)


# --- signatures ------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this calls ``ran.append`` -- what a hostile snapshot would do."""

    ran: list[str] = []

    def __reduce__(self):
        return (_RunsCode.ran.append, ("code ran",))


def test_an_unsigned_pickle_is_refused_without_being_unpickled():
    hostile = zlib.compress(pickle.dumps(_RunsCode()))
    with pytest.raises(ForgedSnapshot, match="unsigned"):
        Snapshot.decode(hostile, key=KEY)
    assert _RunsCode.ran == []


def test_a_snapshot_signed_with_another_key_or_altered_is_refused_without_being_unpickled():
    forged = Snapshot("fraud", version=10**9, model=_RunsCode()).encode(key=b"the attacker's own key")
    with pytest.raises(ForgedSnapshot, match="bad signature"):
        Snapshot.decode(forged, key=KEY)
    genuine = bytearray(Snapshot("fraud", version=3, model=None).encode(key=KEY))
    genuine[-1] ^= 1  # one bit of the body changed
    with pytest.raises(ForgedSnapshot, match="bad signature"):
        Snapshot.decode(bytes(genuine), key=KEY)
    assert _RunsCode.ran == []


def test_a_signed_snapshot_round_trips_and_is_marked_as_signed():
    data = Snapshot("fraud", version=3, model={"w": [1.5]}, training_offset=41).encode(key=KEY)
    assert data.startswith(SIGNED_PREFIX)
    restored = Snapshot.decode(data, key=KEY)
    assert (restored.name, restored.version, restored.model, restored.training_offset) == (
        "fraud", 3, {"w": [1.5]}, 41,
    )  # fmt: skip


def test_the_signing_key_comes_from_the_environment_and_must_not_be_short(tmp_path):
    assert signing_key({SIGNING_KEY_ENV: "x" * 16}, tmp_path / "unused") == b"x" * 16
    with pytest.raises(ValueError, match="at least 16"):
        signing_key({SIGNING_KEY_ENV: "short"}, tmp_path / "unused")
    assert not (tmp_path / "unused").exists()


def test_without_a_configured_key_every_worker_of_a_checkout_shares_one_private_key_file(tmp_path):
    key_file = tmp_path / ".eddy" / "snapshot.key"
    first = signing_key({}, key_file)
    assert signing_key({}, key_file) == first and len(first) == 64
    assert key_file.stat().st_mode & 0o777 == 0o600


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
    size_20k = len(learner.snapshot().encode(key=KEY))
    feed(learner, records, until_labels=200_000)
    snapshot = learner.snapshot()
    size_200k = len(snapshot.encode(key=KEY))
    assert learner.model.observed > 35_000 and learner.model.legit_learned > 45_000
    # 125,357 and 126,875 bytes: the Half-Space Trees' masses compress a KB better or worse from
    # one window to the next, the drift detector's successor window (~0.7 KB) exists at 200k
    # and not right after its rotation at 20k, and the histogram's counts get longer.
    # Counters take a few more bytes as they grow (logarithmically); nothing grows per label.
    assert size_200k <= size_20k + 4_096, (size_20k, size_200k)
    assert size_200k < MAX_SNAPSHOT_BYTES // 4, size_200k
    # The metrics inside are the learner's, over the last 5,000 labels.
    restored = FraudLearner.from_snapshot(Snapshot.decode(snapshot.encode(key=KEY), key=KEY))
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

"""The single logical fraud learner: labelled examples and traffic samples in, snapshots out.

Every worker scores with the newest snapshot; only the learner learns, so
scaling out never splits learning into fragments.  Its input is one totally
ordered stream (a one-partition topic) of messages, each a list of training
records (a stage sends what one flush produced in a few messages):

* ``{"kind": "labelled", "features", "score", "is_fraud", "learn", ...}`` - a
  transaction's label joined with the features it was scored with.  ``score``
  feeds the progressive metrics; ``learn`` says whether this example is in the
  sample the classifier learns from (all frauds, a share of the legitimate).
* ``{"kind": "traffic", "features"}`` - an unlabelled sample of live traffic
  for the anomaly detector and the feature scaler.
* ``{"kind": "expired_decision" | "expired_label" | "duplicate_label" | ...}``
  - bookkeeping of the label join, counted so that it is visible.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from array import array
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import orjson

from models.fraud import FraudModel
from models.metrics import ScorerMetrics
from models.snapshots import Snapshot

logger = logging.getLogger(__name__)

MODEL_NAME = "fraud"
TRAFFIC_SAMPLE_RATE = 0.2


def sampled(tx_id: str, rate: float) -> bool:
    """Deterministic per-transaction sampling, so that a replay samples the same transactions.

    >>> sampled("tx-1", 1.0), sampled("tx-1", 0.0)
    (True, False)
    """
    return zlib.crc32(tx_id.encode()) < rate * 2**32


#: Labelled transactions remembered to recognise a label join's redelivery (8 bytes each).
RECENT_LABELLED = 20_000


class RecentIds:
    """The last ``size`` ids seen (as 64-bit hashes), in arrival order: a bounded duplicate check.

    >>> recent = RecentIds(size=2)
    >>> recent.add("a"), recent.add("a"), recent.add("b"), recent.add("c"), recent.add("a")
    (True, False, True, True, True)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._order: deque[int] = deque()
        self._seen: set[int] = set()

    def add(self, item: str) -> bool:
        """Remember ``item``; ``False`` if it was among the last ``size``."""
        key = int.from_bytes(hashlib.blake2b(item.encode(), digest_size=8).digest(), "little")
        if key in self._seen:
            return False
        self._order.append(key)
        self._seen.add(key)
        if len(self._order) > self.size:
            self._seen.discard(self._order.popleft())
        return True

    def __getstate__(self) -> dict[str, Any]:
        return {"size": self.size, "order": array("Q", self._order).tobytes()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.size = state["size"]
        keys = array("Q")
        keys.frombytes(state["order"])
        self._order = deque(keys)
        self._seen = set(keys)


def decode_training_records(value: bytes | None) -> list[dict[str, Any]]:
    """A fraud training message's records (a stage sends what one flush produced in a few messages).

    >>> decode_training_records(b'[{"kind": "traffic", "features": {"amount": 5.0}}]')[0]["kind"]
    'traffic'
    """
    # JSON as app.codecs writes it, read as app.codecs.loads reads it (orjson), without importing
    # faust's codec registry into the learner's child process.
    records = orjson.loads(value or b"null")
    if not isinstance(records, list):
        raise TypeError(f"expected a list of training records, got {type(records).__name__}")
    return records


class Learner:
    """Applies training records, in the training log's order, to one model; makes its snapshots.

    A subclass defines :meth:`apply` (and what else its snapshots keep, in
    :meth:`snapshot_state`); :class:`app.learning.LearnerLoop` drives it on a worker.
    The version is the number of training messages applied (``training_offset + 1``):
    it only grows along the training log, whichever worker made the snapshot.
    """

    #: The model's name: its snapshots' key.
    name: str = ""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.counts: Counter[str] = Counter()
        self.version = 0
        self.training_offset = -1

    def apply(self, record: Any) -> None:
        """Learn from, or count, one training record."""
        raise NotImplementedError

    def learn_message(
        self, value: bytes | None, offset: int, decode: Callable[[bytes | None], list[Any]]
    ) -> None:
        """Apply the training message at ``offset`` (its records are ``decode(value)``).

        A message that does not decode, or a record that cannot be applied, is counted as
        ``refused_training_records`` and logged, never raised: a bad message must not stop
        learning for the whole cluster.
        """
        try:
            records = decode(value)
        except Exception as exc:
            logger.warning("%s: training message at offset %d refused: %r", self.name, offset, exc)
            self.counts["refused_training_records"] += 1
            records = []
        for record in records:
            try:
                self.apply(record)
            except Exception:
                logger.exception("%s: training record at offset %d refused", self.name, offset)
                self.counts["refused_training_records"] += 1
        self.training_offset = offset

    def snapshot_state(self) -> dict[str, Any]:
        """What a snapshot keeps besides the model (the counts, unless a subclass adds more)."""
        return {"counts": dict(self.counts)}

    def snapshot(self) -> Snapshot:
        """The model and its state as of ``training_offset``."""
        self.version = self.training_offset + 1
        return Snapshot(
            name=self.name,
            version=self.version,
            model=self.model,
            training_offset=self.training_offset,
            state=self.snapshot_state(),
        )

    def resume_from(self, snapshot: Snapshot) -> None:
        """Take the counts, version and training offset of ``snapshot``."""
        self.counts = Counter(snapshot.state["counts"])
        self.version = snapshot.version
        self.training_offset = snapshot.training_offset


class FraudLearner(Learner):
    """Applies training records in order to one :class:`FraudModel` and its metrics.

    >>> learner = FraudLearner(FraudModel())
    >>> learner.apply({"kind": "labelled", "features": {"amount": 5.0}, "score": 0.1,
    ...                "is_fraud": False, "learn": True})
    >>> learner.apply({"kind": "expired_label", "tx_id": "t9"})
    >>> learner.counts["labelled"], learner.counts["expired_label"], learner.metrics.labels
    (1, 1, 1)
    """

    name = MODEL_NAME

    def __init__(
        self,
        model: FraudModel,
        metrics: ScorerMetrics | None = None,
        recently_labelled: RecentIds | None = None,
    ) -> None:
        super().__init__(model)
        self.metrics = metrics or ScorerMetrics()
        self.recently_labelled = recently_labelled or RecentIds(RECENT_LABELLED)

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> FraudLearner:
        learner = cls(snapshot.model, snapshot.state["metrics"], snapshot.state.get("recently_labelled"))
        learner.resume_from(snapshot)
        return learner

    def apply(self, record: dict[str, Any]) -> None:
        """Learn from, or count, one training record.

        A labelled record of a transaction learned from among the last ``RECENT_LABELLED``
        is a redelivery (the label join sends one again when Kafka delivers its label or
        decision again): counted as ``labelled_again``, not learned twice.

        >>> learner = FraudLearner(FraudModel())
        >>> record = {"kind": "labelled", "tx_id": "t1", "features": {"amount": 5.0},
        ...           "score": 0.1, "is_fraud": False, "learn": True}
        >>> learner.apply(record); learner.apply(record)
        >>> learner.counts["labelled"], learner.counts["labelled_again"], learner.metrics.labels
        (1, 1, 1)
        """
        kind = record["kind"]
        if kind == "labelled" and "tx_id" in record and not self.recently_labelled.add(record["tx_id"]):
            self.counts["labelled_again"] += 1
            return
        self.counts[kind] += 1
        if kind == "labelled":
            is_fraud = bool(record["is_fraud"])
            self.metrics.update(is_fraud, float(record["score"]))
            if record["learn"]:
                self.model.learn(record["features"], is_fraud)
                self.counts["learned"] += 1
        elif kind == "traffic":
            self.model.observe(record["features"])

    def snapshot_state(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "counts": dict(self.counts),
            "recently_labelled": self.recently_labelled,
        }

    def report(self) -> dict[str, Any]:
        return {
            "model_version": self.version,
            "training_offset": self.training_offset,
            "counts": dict(self.counts),
            "frauds_learned": self.model.frauds_learned,
            "legit_learned": self.model.legit_learned,
            "traffic_observed": self.model.observed,
            "metrics": self.metrics.report(),
        }

"""Point-in-time correct join of fraud labels with the features a transaction was scored with.

One table entry per ``tx_id`` holds whichever side arrived first:

* ``{"decision": {...}}`` - the transaction was scored; its label is awaited.
* ``{"label": {...}}`` - the label came before its transaction; it is held.
* ``{"matched": ts, "card_id": ...}`` - both met; kept a while to recognise duplicates.
  Until the record that completed the match is committed, the entry also keeps that
  record (``"by": [topic, offset]``) and the training record it emitted (``"emitted"``):
  Kafka may deliver it again (a crash after the entry was written, before the training
  record was), and then the same training record is emitted again instead of a duplicate
  being counted (:func:`forget_emitted` drops them once committed).

A decision arriving for a ``tx_id`` already decided for *another* card is a reused
``tx_id``: it yields a ``conflicting_decision`` output (the agent dead-letters it) and
leaves the entry alone, so the label joins the first transaction only.

The functions here are pure: they take the current entry and an arrival and
return the new entry (``None`` deletes it) and the training records to emit.
"""

from __future__ import annotations

from typing import Any

from tables.windows import DAY

Entry = dict[str, Any] | None
Outcome = tuple[Entry, list[dict[str, Any]]]
#: The topic and offset of the record being joined (``None``: not tracked, as in replays).
Source = tuple[str, int] | None

MATCHED_RETENTION = 3 * DAY


def on_decision(
    entry: Entry, tx_id: str, decision: dict[str, Any], learn: bool, source: Source = None
) -> Outcome:
    """A decision arrived: hold it, or join it with the label that came first.

    >>> entry, out = on_decision(None, "t1", {"features": {}, "score": 0.2, "event_ts": 5.0,
    ...                                        "merchant_id": "m1"}, learn=True)
    >>> sorted(entry), out
    (['decision'], [])
    """
    if entry is None:
        return {"decision": {**decision, "learn": learn}}, []
    if "label" in entry:
        label = entry["label"]
        labelled = _labelled(tx_id, decision, label, learn)
        return _matched(label, decision, labelled, source), [labelled]
    if (again := _emitted_again(entry, source)) is not None:
        return entry, again
    first_card = entry["decision"].get("card_id") if "decision" in entry else entry.get("card_id")
    card = decision.get("card_id")
    if first_card is not None and card is not None and first_card != card:
        return entry, [
            {"kind": "conflicting_decision", "tx_id": tx_id, "card_id": card, "first_card_id": first_card}
        ]
    return entry, [{"kind": "duplicate_decision", "tx_id": tx_id}]


def on_label(entry: Entry, tx_id: str, label: dict[str, Any], source: Source = None) -> Outcome:
    """A label arrived: join it with its decision, or hold it until the decision comes.

    A second label for the same transaction is counted as a duplicate; the first wins.
    The record that completed a match, delivered again, emits its training record again.

    >>> entry, _ = on_decision(None, "t1", {"features": {}, "score": 0.2, "event_ts": 5.0,
    ...                                      "merchant_id": "m1"}, learn=True)
    >>> entry, first = on_label(entry, "t1", {"is_fraud": True, "ts": 9.0}, source=("labels", 7))
    >>> on_label(entry, "t1", {"is_fraud": True, "ts": 9.0}, source=("labels", 7))[1] == [
    ...     {**first[0], "again": True}]
    True
    >>> on_label(entry, "t1", {"is_fraud": True, "ts": 9.0}, source=("labels", 8))[1][0]["kind"]
    'duplicate_label'
    """
    if entry is None:
        return {"label": label}, []
    if "decision" in entry:
        decision = entry["decision"]
        labelled = _labelled(tx_id, decision, label, decision["learn"])
        return _matched(label, decision, labelled, source), [labelled]
    if (again := _emitted_again(entry, source)) is not None:
        return entry, again
    return entry, [{"kind": "duplicate_label", "tx_id": tx_id, "is_fraud": label["is_fraud"]}]


def forget_emitted(entry: dict[str, Any], committed: int) -> dict[str, Any] | None:
    """``entry`` without what it kept for a redelivery once its record is below ``committed``
    (the committed offset of that record's topic partition); ``None``: nothing to forget yet.

    >>> forget_emitted({"matched": 1.0, "by": ["labels", 7], "emitted": {}}, committed=8)
    {'matched': 1.0}
    >>> forget_emitted({"matched": 1.0, "by": ["labels", 7], "emitted": {}}, committed=7) is None
    True
    """
    by = entry.get("by")
    if by is None or by[1] >= committed:
        return None
    return {key: value for key, value in entry.items() if key not in ("by", "emitted")}


def _emitted_again(entry: dict[str, Any], source: Source) -> list[dict[str, Any]] | None:
    """The training record to emit again if ``source`` is the record that completed the match."""
    if source is not None and entry.get("by") == [source[0], source[1]] and "emitted" in entry:
        return [{**entry["emitted"], "again": True}]
    return None


def on_expiry(entry: dict[str, Any], tx_id: str, watermark: float, ttl: float) -> Outcome:
    """Expire an entry older than its retention behind the event-time ``watermark``.

    >>> on_expiry({"label": {"is_fraud": True, "ts": 0.0}}, "t1", watermark=100.0, ttl=50.0)
    (None, [{'kind': 'expired_label', 'tx_id': 't1', 'is_fraud': True}])
    """
    if "matched" in entry:
        expired = entry["matched"] < watermark - min(ttl, MATCHED_RETENTION)
        return (None if expired else entry), []
    if "decision" in entry:
        if entry["decision"]["event_ts"] < watermark - ttl:
            return None, [{"kind": "expired_decision", "tx_id": tx_id}]
        return entry, []
    label = entry["label"]
    if label["ts"] < watermark - ttl:
        return None, [{"kind": "expired_label", "tx_id": tx_id, "is_fraud": label["is_fraud"]}]
    return entry, []


def _matched(
    label: dict[str, Any], decision: dict[str, Any], labelled: dict[str, Any], source: Source
) -> dict[str, Any]:
    matched: dict[str, Any] = {"matched": label["ts"]}
    if (card_id := decision.get("card_id")) is not None:
        matched["card_id"] = card_id
    if source is not None:
        matched["by"] = [source[0], source[1]]
        matched["emitted"] = labelled
    return matched


def _labelled(tx_id: str, decision: dict[str, Any], label: dict[str, Any], learn: bool) -> dict[str, Any]:
    return {
        "kind": "labelled",
        "tx_id": tx_id,
        "merchant_id": decision["merchant_id"],
        "features": decision["features"],
        "score": decision["score"],
        "event_ts": decision["event_ts"],
        "label_ts": label["ts"],
        "is_fraud": label["is_fraud"],
        # Every fraud is learned from; legitimate transactions only when sampled.
        "learn": learn or bool(label["is_fraud"]),
    }


class InMemoryJoin:
    """The join over a plain dict, for in-process replays (the agent keeps entries in a table).

    >>> pending = InMemoryJoin()
    >>> pending.label("t1", {"is_fraud": True, "ts": 9.0})
    []
    >>> [o["kind"] for o in pending.decision("t1", {"features": {}, "score": 0.7, "event_ts": 1.0,
    ...                                               "merchant_id": "m1"}, learn=False)]
    ['labelled']
    """

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    def decision(self, tx_id: str, held: dict[str, Any], learn: bool) -> list[dict[str, Any]]:
        return self._apply(tx_id, *on_decision(self.entries.get(tx_id), tx_id, held, learn))

    def label(self, tx_id: str, label: dict[str, Any]) -> list[dict[str, Any]]:
        return self._apply(tx_id, *on_label(self.entries.get(tx_id), tx_id, label))

    def _apply(self, tx_id: str, entry: Entry, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if entry is None:
            self.entries.pop(tx_id, None)
        else:
            self.entries[tx_id] = entry
        return outputs

"""Events read from files for ``replay``: JSON Lines or CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson

from app.simulation.producer import OutgoingEvent


def read_events(path: Path, *, topic: str | None = None, key_field: str | None = None) -> list[OutgoingEvent]:
    """Events of a ``.jsonl``/``.json`` file (``{"topic", "key", "value"}`` per line) or a ``.csv`` file.

    CSV rows become JSON objects (numbers and true/false converted); ``topic`` is
    required for CSV and ``key_field`` names the column used as the key.
    """
    if path.suffix.lower() == ".csv":
        if topic is None:
            raise ValueError("replaying a CSV file needs --topic")
        return _read_csv(path, topic, key_field)
    return _read_jsonl(path)


def _read_jsonl(path: Path) -> list[OutgoingEvent]:
    events = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                events.append(OutgoingEvent(record["topic"], record.get("key"), record["value"]))
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: expected {{'topic', 'key', 'value'}}: {exc}") from None
    return events


def _read_csv(path: Path, topic: str, key_field: str | None) -> list[OutgoingEvent]:
    with path.open(newline="", encoding="utf-8") as rows:
        return [
            OutgoingEvent(
                topic, row.get(key_field) if key_field else None, {k: _cell(v) for k, v in row.items()}
            )
            for row in csv.DictReader(rows)
        ]


def _cell(text: str) -> Any:
    """A CSV cell as JSON would have it: int, float, bool, null or the text itself.

    >>> [_cell(t) for t in ["12", "1.5", "true", "", "card-1"]]
    [12, 1.5, True, None, 'card-1']
    """
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text

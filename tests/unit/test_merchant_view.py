"""Every worker's view of the merchants' published activity."""

from __future__ import annotations

import gc

import orjson
from aiokafka import ConsumerRecord

from tables.merchant_codec import decode_merchant, encode_merchant
from tables.merchant_features import MerchantActivity
from tables.merchant_view import MerchantView


def _published(merchant_id: str, value: bytes | None, offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord("changelog", 0, offset, 0, 0, merchant_id.encode(), value, None, 0, 0, ())


def _activity(*amounts: float) -> MerchantActivity:
    merchant = MerchantActivity()
    for n, amount in enumerate(amounts):
        merchant.add_transaction(60.0 * n, amount)
    return merchant


def test_a_merchant_reads_as_its_latest_published_activity():
    view = MerchantView(decode_merchant)
    first, latest = _activity(10.0), _activity(10.0, 20.0, 30.0)
    view.apply([_published("m1", orjson.dumps(first.to_state()), 0)])  # the earlier, JSON form
    view.apply([_published("m1", encode_merchant(latest), 1)])
    assert view.get("m1").to_state() == latest.to_state()
    assert view.get("m1").features_at(200.0, 5.0) == latest.features_at(200.0, 5.0)
    assert view.get("unknown") is None and len(view) == 1


def test_a_tombstone_removes_the_merchant():
    view = MerchantView(decode_merchant)
    view.apply([_published("m1", encode_merchant(_activity(5.0))), _published("m1", None, 1)])
    assert view.get("m1") is None and len(view) == 0


def test_an_undecodable_record_drops_the_merchant_with_a_count_instead_of_failing_reads(caplog):
    view = MerchantView(decode_merchant)
    view.apply([_published("m1", b"not json")])
    assert view.get("m1") is None and view.undecodable == 1 and len(view) == 0
    assert "does not decode" in caplog.text


def test_the_view_holds_nothing_the_garbage_collector_scans_and_decodes_per_read():
    view = MerchantView(decode_merchant)
    encoded = encode_merchant(_activity(1.0, 2.0, 3.0))
    view.apply([_published(f"m{n}", encoded, n) for n in range(1_000)])
    assert not any(gc.is_tracked(value) for value in view._merchants.values())
    assert view.get("m7") is not view.get("m7")  # a fresh object per read, which dies young

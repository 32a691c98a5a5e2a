"""The alerts pipeline's table: each device's statistics, detectors and open alerts, written behind.

One value per device (key ``device_id`` as ``sensor-readings`` carries it): the
:class:`~models.alert_steps.DeviceState` wrapped in
:class:`~app.stages.redelivery.Applied`, so that a redelivered reading re-emits the
alerts it raised instead of being counted twice.
"""

from __future__ import annotations

from app.contracts import SensorReading
from app.pipeline import pipeline_table
from app.stages.redelivery import Applied, applied_codec
from app.stages.state import KeyedState, StateCodec
from models.alert_steps import AlertPolicy, DeviceState, assess_reading, why_ignored
from models.device_state_codec import decode_device_state, encode_device_state

#: The policy every worker assesses readings with (the stored state depends on it).
ALERT_POLICY = AlertPolicy()

DEVICE_CODEC: StateCodec[DeviceState] = StateCodec(
    encode=encode_device_state, decode=lambda data: decode_device_state(data, ALERT_POLICY)
)
#: How a device's table value is stored: its state and the alerts of its latest readings.
APPLIED_DEVICE_CODEC = applied_codec(DEVICE_CODEC)

device_state: KeyedState[Applied[DeviceState]] = KeyedState(
    pipeline_table(
        "alerts-device-state",
        "Per device: rolling statistics, detector and alert state per metric "
        "(models.alert_steps), and the alerts of its latest readings.",
    ),
    APPLIED_DEVICE_CODEC,
)


def apply_reading(
    applied: Applied[DeviceState], reading: SensorReading, offset: int, committed: int
) -> tuple[str | None, list[bytes]]:
    """Count ``reading``, the record at ``offset`` (not a redelivery), in ``applied``; why it was
    ignored (``None``: it was not) and the encoded alerts it raised.

    ``committed`` is its partition's committed offset (outputs of older records are forgotten).
    """
    reason = why_ignored(applied.value, reading, ALERT_POLICY)
    state, alerts = assess_reading(applied.value, reading, ALERT_POLICY)
    encoded = [alert.encode() for alert in alerts]
    applied.apply(state, offset=offset, outputs=encoded, committed=committed)
    return reason, encoded

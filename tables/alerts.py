"""The alerts pipeline's table: each device's statistics, detectors and open alerts, written behind.

One value per device (key ``device_id`` as ``sensor-readings`` carries it): the
:class:`~models.alert_steps.DeviceState` wrapped in
:class:`~app.stages.redelivery.Applied`, so that a redelivered reading re-emits the
alerts it raised instead of being counted twice.
"""

from __future__ import annotations

from app.pipeline import pipeline_table
from app.stages.redelivery import Applied, applied_codec
from app.stages.state import KeyedState, StateCodec
from models.alert_steps import AlertPolicy, DeviceState

#: The policy every worker assesses readings with (the stored state depends on it).
ALERT_POLICY = AlertPolicy()

DEVICE_CODEC: StateCodec[DeviceState] = StateCodec(
    encode=DeviceState.encode, decode=lambda data: DeviceState.decode(data, ALERT_POLICY)
)

device_state: KeyedState[Applied[DeviceState]] = KeyedState(
    pipeline_table(
        "alerts-device-state",
        "Per device: rolling statistics, detector and alert state per metric "
        "(models.alert_steps), and the alerts of its latest readings.",
    ),
    applied_codec(DEVICE_CODEC),
)

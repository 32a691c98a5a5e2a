"""Alerts: per device and metric, rolling statistics, an online anomaly score and alerts.

Data flows one way::

    sensor-readings (key device_id)
      -> assess_readings: the device's statistics and detectors -> alerts (key device_id)

One alert per device and metric per cool-down, and a ``resolved`` alert once the
readings are back to normal (:mod:`models.alert_steps`).  A reading that breaks the
contract, is too late or names a metric beyond a device's limit goes to
``dead-letters`` with the reason; an exact repeat is counted.  A reading delivered
again after a crash re-emits the alerts it raised, byte for byte.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from typing import Any

from faust.types import Message
from faust.web import Request, Response, View

from app.contracts import parse_sensor_reading
from app.faust_app import app, declared_at_startup
from app.pipeline import PARTITIONS, never_stops_the_worker, pipeline_topic, register_stage
from app.settings import settings
from app.stages.outputs import key_partition
from app.stages.redelivery import Applied
from app.stages.stage import BatchedStage
from app.stages.state import sweep_idle
from app.views import json_response, routed_to_key_owner
from models.alert_steps import REPEATED
from tables.alerts import apply_reading, device_state
from tables.windows import DAY, PartitionWatermarks

logger = logging.getLogger(__name__)

# --- topics ------------------------------------------------------------------------------

readings_topic = pipeline_topic("sensor-readings")
alerts_topic = declared_at_startup(pipeline_topic("alerts"))
ALERTS = alerts_topic.get_topic_name()

#: A device that sent nothing for this long (event time, behind every partition) is dropped.
DEVICE_IDLE_SECONDS = DAY

# --- stages ------------------------------------------------------------------------------

alerts_stage = register_stage(
    BatchedStage(app, "assess_readings", [device_state], flush_interval=0.02, max_flush_interval=0.1),
    [readings_topic],
)
device_watermarks = PartitionWatermarks()
assessed: Counter[str] = Counter()

# --- agents ------------------------------------------------------------------------------


@app.agent(readings_topic)
async def assess_readings(stream):
    """Validate a reading, count it in its device's statistics, score it and publish alerts."""
    await alerts_stage.prepare([alerts_topic], keyed_inputs=[readings_topic])
    await alerts_stage.run(stream, _assess)


def _assess(message: Message) -> None:
    try:
        reading = parse_sensor_reading(message.key, message.value)
    except (ValueError, TypeError, KeyError) as exc:
        alerts_stage.dead_letter(message, f"{type(exc).__name__}: {exc}")
        return
    partition, key = message.partition, message.key
    applied = device_state.get(partition, key) or Applied(None)
    if applied.is_redelivered(message.offset):
        assessed["redelivered"] += 1
        for alert in applied.outputs_of(message.offset):
            alerts_stage.emit(ALERTS, key, alert)
        return
    reason, encoded = apply_reading(applied, reading, message.offset, alerts_stage.committed_offset(message))
    device_state.put(partition, key, applied)
    if reason == REPEATED:
        assessed["repeated"] += 1
    elif reason is not None:
        alerts_stage.dead_letter(message, reason)
    if reason is None:
        device_watermarks.observe(partition, reading.ts)
        assessed["readings"] += 1
    for alert in encoded:
        alerts_stage.emit(ALERTS, key, alert)
    assessed["alerts"] += len(encoded)


@never_stops_the_worker(settings.sweep_interval_s)
async def sweep_idle_devices() -> None:
    """Drop devices silent for a day of event time, so state does not grow without bound."""
    if (watermark := device_watermarks.low) is not None:
        assessed["idle_devices_swept"] += await sweep_idle(
            device_state,
            lambda applied: applied.value is None or applied.value.is_idle(watermark, DEVICE_IDLE_SECONDS),
        )


# --- views -------------------------------------------------------------------------------


@app.page("/devices/{device_id}/")
@routed_to_key_owner(device_state.table, match_info="device_id")
async def device_view(web: View, request: Request, device_id: str) -> Response:
    """The device's live statistics per metric (1 minute, 5 minutes, 1 hour) and open alerts."""
    applied = device_state.peek(key_partition(device_id.encode(), PARTITIONS), device_id.encode())
    state = None if applied is None else applied.value
    if state is None:
        return json_response(web, {"error": f"unknown device {device_id!r}"}, status=404)
    metrics: dict[str, Any] = {}
    for name, metric in state.metrics.items():
        windows = metric.stats.windows(metric.newest)
        metrics[name] = {
            "newest_ts": metric.newest,
            "last_value": metric.last_value,
            "windows": {window: asdict(stats) for window, stats in windows.items()},
        }
    return json_response(
        web,
        {
            "device_id": device_id,
            "metrics": metrics,
            "open_alerts": state.open_alerts(),
            "ignored_readings": state.ignored,
        },
    )


@app.page("/alerts/state/")
async def alerts_state_view(web: View, request: Request) -> Response:
    """This worker's alerts stage: counts, flushes and the event time reached."""
    return json_response(
        web,
        {
            "watermark": device_watermarks.low,
            "counts": dict(assessed),
            "stage": alerts_stage.report(),
        },
    )

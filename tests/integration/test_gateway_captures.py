"""The gateway learns which parts' images are taken from the frames' headers (services/gateway/captures.py), on a
nats-server secured as a deployment is: its own identity and permissions (lineguard.bus.permissions), the capture
service's identity publishing the frames."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from lineguard.bus import Bus
from lineguard.contracts import stream_name
from lineguard.natsserver import EmbeddedNats
from lineguard.services.gateway.captures import ACK_EVERY_S, watch_captures
from lineguard.testing.gateway import publish_frame
from lineguard.testing.records import triggered_part


async def test_the_gateway_hears_of_each_frame_by_its_headers_under_its_own_permissions(
    secured_nats: EmbeddedNats, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = secured_nats.settings(publish_timeout_s=2.0)
    gateway = await Bus.connect(settings, "gateway")
    capture = await Bus.connect(settings, "capture")
    admin = await Bus.connect(settings, "admin-check", identity="admin")
    heard: list[tuple[str, str]] = []
    arrived = asyncio.Event()

    async def on_captured(station: str, inspection_id: str) -> None:
        heard.append((station, inspection_id))
        arrived.set()

    stopping = asyncio.Event()
    watching = asyncio.create_task(watch_captures(gateway, "l1", on_captured, stopping))
    try:
        while not watching.done():  # the consumer is made (under the gateway's permissions) before frames come
            with contextlib.suppress(Exception):
                await admin.js.consumer_info(stream_name("frame"), "gateway-frame")
                break
            await asyncio.sleep(0.05)
        parts = [triggered_part(station=s) for s in ("s1", "s2")]
        for part in parts:
            await publish_frame(capture, part)
        # A frame stored under a message id that names no part: passed over, said so, the next one still heard.
        await capture.publish("lg.frame.l1.s1", b"", msg_id="not-a-part")
        late = triggered_part(station="s1")
        await publish_frame(capture, late)
        while len(heard) < 3 and not watching.done():
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), timeout=10)
        info = await admin.js.consumer_info(stream_name("frame"), "gateway-frame")
        # The headers are acked a batch at a time, soon: none waits for its ack_wait to come again.
        await asyncio.sleep(ACK_EVERY_S + 0.3)
        acked = await admin.js.consumer_info(stream_name("frame"), "gateway-frame")
    finally:
        stopping.set()
        await asyncio.wait_for(watching, timeout=5)  # raises what stopped it (a permission refused, say)
        for bus in (gateway, capture, admin):
            await bus.close()
    assert acked.num_ack_pending == 0 and acked.num_redelivered == 0
    assert heard == [(p.station, p.inspection_id) for p in (*parts, late)]
    assert info.config.headers_only  # the images never travel to the gateway
    out = capfd.readouterr()
    assert "a frame without its part's message id" in out.out + out.err

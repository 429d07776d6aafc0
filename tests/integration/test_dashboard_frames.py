"""The live view takes the line's frames only while a browser watches it: the results service with its dashboard
and a real nats-server; a frame published with no event stream open is not shown, one published while a browser
follows the events is, and once the browser has gone (and the linger is over) frames are not taken any more."""

from __future__ import annotations

import asyncio

import cv2
import httpx
import numpy as np
import pytest

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts import msg_id, subject
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.services.results.api.tokens import create_token
from lineguard.services.results.dashboard import follow
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.service import setup
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing import running_service
from lineguard.testing.records import sample_decision
from lineguard.testing.waiting import wait_for
from lineguard.v1.frame_pb2 import Frame

LINGER_S = 0.5


def frame(sequence: int) -> Frame:
    part = sample_decision(sequence).part
    board = np.full((80, 64, 3), (40, 90, 40), np.uint8)
    return Frame(part=part, width=64, height=80, encoding="png", data=cv2.imencode(".png", board)[1].tobytes())


async def test_frames_are_taken_only_while_a_browser_watches(
    fresh_nats: EmbeddedNats, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(follow, "FRAMES_LINGER_S", LINGER_S)
    url = f"sqlite:///{tmp_path / 'lineguard.db'}"
    upgrade_database(url)
    token = create_token(make_engine(url), "reader", "screen")
    port = free_port()
    raw = demo_config_dict(nats_url=fresh_nats.url, database_url=url, opcua_endpoint="opc.tcp://127.0.0.1:4840/")
    raw["api"] = {"enabled": True, "port": port, "secure_cookie": False, "rate_per_s": 100, "burst": 100}
    raw["archive"] = {"kind": "folder", "enabled": False, "path": str(tmp_path / "images")}
    config = LineConfig(**raw)

    async with running_service("results", config, setup, timeout_s=60):
        bus = await Bus.connect(config.nats, "producer")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert (await client.post("/dashboard/login", data={"token": token})).status_code == 303

            async def publish(f: Frame) -> None:
                part = f.part
                await bus.publish(
                    subject("frame", part.line, part.station), f, msg_id=msg_id(part.inspection_id, "frame")
                )

            async def shown(f: Frame) -> bool:
                return (await client.get(f"/dashboard/images/{f.part.inspection_id}")).status_code == 200

            try:
                unwatched = frame(1)
                await publish(unwatched)
                await asyncio.sleep(1.0)  # a frame taken arrives within milliseconds on loopback
                assert not await shown(unwatched)

                async def watch(opened: asyncio.Event) -> None:
                    async with client.stream("GET", "/dashboard/events") as stream:
                        assert stream.status_code == 200
                        opened.set()
                        async for _ in stream.aiter_lines():
                            pass

                opened = asyncio.Event()
                watching = asyncio.create_task(watch(opened))
                await asyncio.wait_for(opened.wait(), 10)
                watched = [frame(2 + i) for i in range(50)]

                async def one_shown() -> bool:
                    # The subscription is made as the stream opens: publish until a frame lands.
                    f = watched.pop(0)
                    await publish(f)
                    await asyncio.sleep(0.1)
                    return await shown(f)

                await wait_for(one_shown, timeout=5.0)  # TimeoutError: no frame shown while a browser watched
                watching.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await watching

                await asyncio.sleep(LINGER_S + 1.5)  # the server sees the stream closed, then the linger passes
                gone = frame(100)
                await publish(gone)
                await asyncio.sleep(1.0)
                assert not await shown(gone)
                assert not await shown(unwatched)
            finally:
                await bus.close()

"""The live view at 50 parts/s (issue 18): the results service with its dashboard, a real nats-server, a signed-in
event stream open while decisions arrive at 50 a second for 6 s. The writer keeps up (every part on record soon
after the burst), the browser is told of the station at most once per MIN_GAP_S however many parts went by, and
when the burst is over the station's tile shows its last part."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts import msg_id, subject
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.services.results.api.tokens import create_token
from lineguard.services.results.dashboard.routes import MIN_GAP_S
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.service import setup
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing import running_service
from lineguard.testing.records import busy_decision
from lineguard.testing.waiting import wait_for

RATE = 50
SECONDS = 6


async def test_the_live_view_at_50_parts_a_second_coalesces_and_shows_the_last_part(
    fresh_nats: EmbeddedNats, tmp_path
) -> None:
    url = f"sqlite:///{tmp_path / 'lineguard.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    token = create_token(engine, "reader", "screen")
    port = free_port()
    raw = demo_config_dict(nats_url=fresh_nats.url, database_url=url, opcua_endpoint="opc.tcp://127.0.0.1:4840/")
    raw["api"] = {"enabled": True, "port": port, "secure_cookie": False, "rate_per_s": 100, "burst": 100}
    raw["archive"] = {"kind": "folder", "enabled": False, "path": str(tmp_path / "images")}
    config = LineConfig(**raw)
    decisions = [busy_decision(i + 1) for i in range(RATE * SECONDS)]
    events: list[tuple[float, str]] = []

    async with running_service("results", config, setup, timeout_s=60):
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            signed = await client.post("/dashboard/login", data={"token": token})
            assert signed.status_code == 303, signed.text

            async def listen() -> None:
                async with client.stream("GET", "/dashboard/events") as stream:
                    assert stream.status_code == 200
                    async for line in stream.aiter_lines():
                        if line.startswith("event: "):
                            events.append((time.monotonic(), line.removeprefix("event: ")))

            listening = asyncio.create_task(listen())
            bus = await Bus.connect(config.nats, "producer")
            try:
                started = time.monotonic()
                for i, decision in enumerate(decisions):
                    await asyncio.sleep(max(0.0, started + i / RATE - time.monotonic()))
                    part = decision.part
                    await bus.publish(
                        subject("decision", part.line, part.station),
                        decision,
                        msg_id=msg_id(part.inspection_id, "decision"),
                    )
                burst_s = time.monotonic() - started
                await wait_for(lambda: rows(engine) == len(decisions), timeout=30)
                await asyncio.sleep(2 * MIN_GAP_S)  # the last change told
                tile = await client.get("/dashboard/fragments/station/s1")
            finally:
                listening.cancel()
                await bus.close()

    engine.dispose()
    assert tile.status_code == 200
    assert decisions[-1].part.inspection_id in tile.text  # the newest part, not one from mid-burst
    told = [at for at, name in events if name == "station-s1"]
    # Told often enough to follow the line, never once per part: at most one per MIN_GAP_S (+ the first and last).
    assert 5 <= len(told) <= burst_s / MIN_GAP_S + 3, (len(told), burst_s)
    gaps = [b - a for a, b in itertools.pairwise(told)]
    assert min(gaps) >= MIN_GAP_S * 0.8, sorted(gaps)[:3]


def rows(engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM inspections").scalar_one())

"""The issue's attacks on a line started as the demo starts it (LocalLine: six processes, a secured nats-server).

A client holding the gateway's credential (or none) tries to watch the triggers and to answer them with a PASS
under the decision's message id, and to push and promote a model; the server refuses each, the PLC gets the real
decisions, no forged row is written, and the services themselves never meet a refusal."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import nats
import pytest
import sqlalchemy as sa

from lineguard.bus import Bus
from lineguard.bus.client import connect_options
from lineguard.config import load_config
from lineguard.contracts import msg_id, new_inspection_id, subject
from lineguard.localline import SERVICES, LocalLine
from lineguard.sim.plc import SimulatedPlc
from lineguard.testing.models import model_version
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Decision, Verdict

PARTS = 6


def rows(line: LocalLine) -> dict[str, str]:
    engine = sa.create_engine(f"sqlite:///{line.database_path}")
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT inspection_id, verdict FROM inspections")).all())
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory):
    line = LocalLine(workdir=tmp_path_factory.mktemp("secured-line"), deadline_ms=10_000)
    line.start()
    yield line
    line.stop()


def test_forged_pass_decisions_are_refused_and_the_plc_gets_the_real_ones(line: LocalLine) -> None:
    assert line.config_path is not None
    settings = load_config(line.config_path).nats.model_copy(update={"publish_timeout_s": 1.0})
    refusals: list[str] = []

    async def note(exc: Exception) -> None:
        refusals.append(str(exc).lower())

    async def attack() -> tuple[str, bool]:
        with pytest.raises(Exception, match=r"(?i)authorization"):  # no credential: not let in at all
            await nats.connect(
                **{**connect_options(settings.model_copy(update={"credentials_dir": None}), "x"), "error_cb": note},
                allow_reconnect=False,
                max_reconnect_attempts=0,
            )
        forger = await Bus.connect(settings, "forger", identity="gateway")
        forger.nc._error_cb = note  # what the server says to this connection
        try:
            await forger.nc.subscribe("lg.trigger.>")
            forged_id = new_inspection_id()
            forged = Decision(part=Part(inspection_id=forged_id, line="l1", station="s1", sequence=1))
            forged.verdict = Verdict.VERDICT_PASS
            stored = True
            try:
                await forger.publish(subject("decision", "l1", "s1"), forged, msg_id=msg_id(forged_id, "decision"))
            except TimeoutError:
                stored = False
            return forged_id, stored
        finally:
            await forger.close()

    forged_id, stored = asyncio.run(attack())
    assert not stored
    assert any('subscription to "lg.trigger.>"' in r for r in refusals), refusals
    assert any('publish to "lg.decision.l1.s1"' in r for r in refusals), refusals

    async def drive():
        async with SimulatedPlc(line.opcua_endpoint, station="s1") as plc:
            return await plc.run(PARTS, rate_hz=4.0, result_timeout_s=60)

    report = asyncio.run(drive())
    assert report.ok and len(report.results) == PARTS
    at_plc = {r.inspection_id: r.verdict for r in report.results}
    for _ in range(120):
        written = rows(line)
        if len(written) >= PARTS:
            break
        asyncio.run(asyncio.sleep(0.25))
    assert forged_id not in written
    assert written == at_plc
    # The permissions table is complete for what the services do: only the forger's connection was refused.
    log = (line.logs / "nats.log").read_text()
    refused_clients = set(re.findall(r'"v[\d.]+:python3:([^"]+)" - .* - (?:Publish|Subscription) Violation', log))
    assert "lineguard-forger" in refused_clients, "the log names refused clients so (else this test sees nothing)"
    assert not refused_clients & {f"lineguard-{name}" for name in SERVICES}, refused_clients


def test_a_model_push_without_the_operators_credential_is_refused(line: LocalLine, tmp_path: Path) -> None:
    assert line.config_path is not None
    model = model_version(tmp_path, "9.9.9")
    cli = [str(Path(sys.executable).parent / "lineguard"), "model"]
    base = ["--config", str(line.config_path)]
    for identity in ("inference", "gateway"):
        seed = line.nats_credentials / "clients" / f"{identity}.nk"
        push = subprocess.run(
            [*cli, "push", str(model), *base, "--credential", str(seed)], capture_output=True, text=True, timeout=60
        )
        assert push.returncode == 1 and "refused" in push.stderr, push.stdout + push.stderr
    listed = subprocess.run([*cli, "list", *base, "--json"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "9.9.9" not in listed.stdout, listed.stdout + listed.stderr

"""A secured nats-server (TLS, an nkey per identity, lineguard.bus.permissions): who gets in, and what each may do.

The expectations are written out here from the issue's rules (only decision publishes decisions, only the gateway
triggers and acks, ...), not read from the permissions table, so a table that grants too much fails."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from lineguard.bus import Bus
from lineguard.bus.client import connect_options
from lineguard.bus.credentials import new_seed, write_private
from lineguard.contracts import stream_name
from lineguard.natsserver import EmbeddedNats
from lineguard.registry import RegistryError, connect_registry
from lineguard.testing.models import MODEL_ID, model_version
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Decision, Verdict

SERVICES = ("capture", "inference", "ocr", "decision", "gateway", "results")
# What each service produces: the one who may publish that kind (the rule, written out).
PRODUCES = {
    "capture": {"frame"},
    "inference": {"inference"},
    "ocr": {"ocr"},
    "decision": {"decision"},
    "gateway": {"trigger", "ack"},
    "results": set(),
}
LINE_KINDS = ("trigger", "frame", "inference", "ocr", "decision", "ack")


class Refusals:
    def __init__(self) -> None:
        self.errors: list[str] = []

    async def note(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    def refused(self, subject: str) -> bool:
        # nats-py lower-cases the server's error text.
        return any(f'"{subject.lower()}"' in e.lower() and "permissions violation" in e.lower() for e in self.errors)

    async def settle(self, nc: nats.NATS, expected: int) -> None:
        """Until `expected` refusals came (they arrive before the PONG of a flush sent after them), then one more
        flush: a refusal that should not come would have come by then."""
        await nc.flush()
        for _ in range(100):
            if len(self.errors) >= expected:
                break
            await asyncio.sleep(0.02)
        await nc.flush()


async def connect_as(server: EmbeddedNats, identity: str) -> tuple[nats.NATS, Refusals]:
    refusals = Refusals()
    options = {**connect_options(server.settings(), identity), "error_cb": refusals.note}
    nc = await nats.connect(**options, allow_reconnect=False)
    return nc, refusals


async def test_anonymous_unknown_and_plaintext_clients_are_refused(secured_nats: EmbeddedNats, tmp_path: Path) -> None:
    settings = secured_nats.settings()
    tls_only = connect_options(settings.model_copy(update={"credentials_dir": None}), "x")
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(**{**tls_only, "error_cb": Refusals().note}, allow_reconnect=False, max_reconnect_attempts=0)
    stranger = tmp_path / "stranger" / "gateway.nk"  # a well-formed seed the server does not know
    write_private(stranger, new_seed())
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(
            **{**connect_options(settings, "gateway", seed=stranger), "error_cb": Refusals().note},
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
    # The gateway's own seed, but without TLS: the server requires TLS, and the system's CAs do not know its own.
    plain = {**connect_options(settings.model_copy(update={"tls": None}), "gateway"), "error_cb": Refusals().note}
    with pytest.raises(Exception):  # noqa: B017 - nats-py reports the failed handshake as one of several kinds
        await nats.connect(**plain, allow_reconnect=False, max_reconnect_attempts=0)


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_publishes_its_own_kinds_and_no_one_elses(secured_nats: EmbeddedNats, service: str) -> None:
    nc, refusals = await connect_as(secured_nats, service)
    try:
        subjects = {f"lg.{kind}.l1.s1": kind in PRODUCES[service] for kind in LINE_KINDS}
        subjects.update({f"lg.heartbeat.l1.{other}": other == service for other in SERVICES})
        subjects.update(
            {
                "lg.decision.l2.s1": False,  # another line's subjects
                "$KV.lg-model-promoted.l1": False,  # promotions
                "$O.lg-models.M.bW9kZWw": False,  # model objects
                f"$JS.API.STREAM.DELETE.{stream_name('decision')}": False,
                f"$JS.API.STREAM.PURGE.{stream_name('decision')}": False,
                f"$JS.API.STREAM.CREATE.{stream_name('decision')}": False,
            }
        )
        for subject in subjects:
            await nc.publish(subject, b"x")
        await refusals.settle(nc, expected=sum(not allowed for allowed in subjects.values()))
        refused = {subject: refusals.refused(subject) for subject in subjects}
        assert refused == {subject: not allowed for subject, allowed in subjects.items()}, refusals.errors
    finally:
        await nc.close()


async def test_a_service_reads_only_through_its_own_consumer_and_inbox(secured_nats: EmbeddedNats) -> None:
    nc, refusals = await connect_as(secured_nats, "gateway")
    try:
        await nc.subscribe("lg.trigger.>")  # the forger watched the triggers this way
        await nc.subscribe("_INBOX.decision.>")  # the decision service's replies and pull deliveries
        await nc.publish("$JS.API.CONSUMER.CREATE.LG_TRIGGER.gateway-trigger.lg.trigger.l1.*", b"{}")
        await nc.publish("$JS.API.CONSUMER.MSG.NEXT.LG_DECISION.results-decision", b"{}")
        await refusals.settle(nc, expected=4)
        assert refusals.refused("lg.trigger.>") and refusals.refused("_INBOX.decision.>"), refusals.errors
        assert refusals.refused("$JS.API.CONSUMER.CREATE.LG_TRIGGER.gateway-trigger.lg.trigger.l1.*")
        assert refusals.refused("$JS.API.CONSUMER.MSG.NEXT.LG_DECISION.results-decision")
    finally:
        await nc.close()


async def test_a_pass_decision_from_the_gateways_identity_is_refused_and_not_stored(
    secured_nats: EmbeddedNats,
) -> None:
    """The issue's forgery at the bus: a PASS under `<id>:decision`, so that the real decision would be a duplicate."""
    forged = Decision(part=Part(inspection_id="0190aaaa-0000-7000-8000-000000000001", line="l1", station="s1"))
    forged.verdict = Verdict.VERDICT_PASS
    settings = secured_nats.settings(publish_timeout_s=1.0)
    admin = await Bus.connect(settings, "admin-check", identity="admin")
    gateway = await Bus.connect(settings, "gateway")
    decision = await Bus.connect(settings, "decision")
    try:
        before = (await admin.js.stream_info(stream_name("decision"))).state.messages
        with pytest.raises(TimeoutError):  # refused by the server: it never answers the publish
            await gateway.publish("lg.decision.l1.s1", forged, msg_id=f"{forged.part.inspection_id}:decision")
        assert (await admin.js.stream_info(stream_name("decision"))).state.messages == before
        # The same message from the decision service's identity is stored: the refusal was the identity's.
        stored = await decision.publish("lg.decision.l1.s1", forged, msg_id=f"{forged.part.inspection_id}:decision")
        assert not stored.duplicate
        assert (await admin.js.stream_info(stream_name("decision"))).state.messages == before + 1
    finally:
        for bus in (admin, gateway, decision):
            await bus.close()


async def test_only_the_operator_pushes_and_promotes_models(secured_nats: EmbeddedNats, tmp_path: Path) -> None:
    model = model_version(tmp_path, "1.0.0")
    settings = secured_nats.settings(connect_timeout_s=2.0)
    for identity in ("inference", "gateway", "admin"):
        with pytest.raises(RegistryError, match="refused"):
            async with connect_registry(settings, identity=identity, timeout_s=1.0) as registry:
                await registry.push(model)
    async with connect_registry(settings) as registry:  # the operator, by default
        pushed = await registry.push(model)
        operator = await registry.promote(MODEL_ID, "1.0.0", "l1")
    for identity in ("inference", "decision"):
        with pytest.raises(RegistryError, match="refused"):
            async with connect_registry(settings, identity=identity, timeout_s=1.0) as registry:
                await registry.promote(MODEL_ID, "1.0.0", "l1")
    # The inference service reads what the operator promoted (and nothing it may not).
    async with connect_registry(settings, identity="inference") as registry:
        promotion = await registry.promoted("l1")
        assert promotion is not None and (promotion.by, promotion.sha256) == (operator.by, pushed.sha256)
        assert [p.by for p in await registry.promotions("l1")] == [operator.by]
        assert operator.by.startswith("operator U")  # the signed-in key (tests/integration/test_promotion_identity)
        fetched = await registry.fetch(MODEL_ID, "1.0.0", tmp_path / "cache")
        assert fetched.stat().st_size == pushed.size


def test_the_model_push_command_needs_the_operators_credential(secured_nats: EmbeddedNats, tmp_path: Path) -> None:
    model = model_version(tmp_path, "1.0.0")
    settings = secured_nats.settings()
    credentials = Path(settings.credentials_dir or "")
    cli = Path(sys.executable).parent / "lineguard"
    base = [str(cli), "model", "push", str(model), "--nats", settings.url]
    config = tmp_path / "line.yaml"
    import yaml

    config.write_text(
        yaml.safe_dump(
            {
                "nats": settings.model_dump(include={"url", "credentials_dir", "tls"}, exclude_none=True),
                "stations": [{"id": "s1", "recipe": "r"}],
                "recipes": {"r": {}},
            }
        )
    )
    refused = subprocess.run(
        [*base, "--config", str(config), "--credential", str(credentials / "inference.nk")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "refused" in refused.stderr, refused.stdout + refused.stderr
    pushed = subprocess.run([*base, "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert f"{MODEL_ID} 1.0.0: in the registry" in pushed.stdout

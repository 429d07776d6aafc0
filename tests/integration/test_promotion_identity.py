"""Promotion records name the identity the NATS server signed in, one operator key per line (issue 13).

On a secured server (the `secured_nats` fixture, line l1) a promotion's and a shadow run's `by` is `operator` and
the public nkey of the seed the server admitted, never a name the client gives; a claimed name is refused. Nobody
else writes a promotion: no sign-in, another service's key, the operator key of another line, and l1's operator
writing line l2's record are all refused by the server, and nothing is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.bus.credentials import public_key, seed_file, write_credentials
from lineguard.config import NatsSettings
from lineguard.natsserver import EmbeddedNats
from lineguard.registry import RegistryError, connect_registry
from lineguard.testing.models import MODEL_ID, model_version


async def pushed(server: EmbeddedNats, tmp_path: Path) -> NatsSettings:
    settings = server.settings(connect_timeout_s=2.0)
    async with connect_registry(settings) as registry:
        await registry.push(model_version(tmp_path, "1.0.0"))
        await registry.push(model_version(tmp_path, "2.0.0"))
    return settings


async def recorded(settings: NatsSettings, line: str) -> list[str]:
    async with connect_registry(settings, identity="inference") as registry:
        return [p.by for p in await registry.promotions(line)]


async def test_a_promotion_records_the_signed_in_operator_key(secured_nats: EmbeddedNats, tmp_path: Path) -> None:
    settings = await pushed(secured_nats, tmp_path)
    key = public_key(seed_file(settings.credentials_dir or "", "operator").read_bytes())
    async with connect_registry(settings) as registry:
        first = await registry.promote(MODEL_ID, "1.0.0", "l1")
        shadow = await registry.start_shadow(MODEL_ID, "2.0.0", "l1", share=0.5)
        second = await registry.promote(MODEL_ID, "2.0.0", "l1")
        _, rolled = await registry.rollback("l1")
        # A name the client claims is not what the server checked: refused, nothing written.
        with pytest.raises(RegistryError, match="not the claimed 'plant manager'") as refused:
            await registry.promote(MODEL_ID, "1.0.0", "l1", by="plant manager")
        assert refused.value.reason == "PROMOTER_CLAIMED"
    assert first.by == shadow.by == second.by == rolled.by == f"operator {key}"
    assert await recorded(settings, "l1") == [f"operator {key}"] * 3


@pytest.mark.parametrize("who", ["nobody", "gateway", "another line's operator"])
async def test_a_promotion_by_anyone_but_the_lines_operator_is_refused(
    secured_nats: EmbeddedNats, tmp_path: Path, who: str
) -> None:
    settings = await pushed(secured_nats, tmp_path)
    async with connect_registry(settings) as registry:
        await registry.promote(MODEL_ID, "1.0.0", "l1")
    before = await recorded(settings, "l1")
    refusal = "Authorization Violation"  # the server does not let the connection in
    if who == "nobody":  # TLS, no nkey
        attempt = {"nats_settings": NatsSettings(url=settings.url, tls=settings.tls, connect_timeout_s=2.0)}
    elif who == "gateway":  # signed in, but not as the operator: it may not even open the registry's buckets
        attempt, refusal = {"nats_settings": settings, "identity": "gateway"}, "permissions violation"
    else:  # the operator seed made for line l2 (its own credentials folder): a key this server does not know
        other = write_credentials(tmp_path / "l2-credentials", "l2")
        attempt = {"nats_settings": settings, "seed": seed_file(other.clients, "operator")}
    with pytest.raises(RegistryError, match=refusal):
        async with connect_registry(**attempt, timeout_s=1.0) as registry:  # type: ignore[arg-type]
            await registry.promote(MODEL_ID, "2.0.0", "l1")
    assert await recorded(settings, "l1") == before


async def test_the_lines_operator_cannot_promote_on_another_line(secured_nats: EmbeddedNats, tmp_path: Path) -> None:
    settings = await pushed(secured_nats, tmp_path)
    with pytest.raises(RegistryError, match="refused"):
        async with connect_registry(settings, timeout_s=1.0) as registry:
            await registry.promote(MODEL_ID, "1.0.0", "l2")
    with pytest.raises(RegistryError, match="refused"):
        async with connect_registry(settings, timeout_s=1.0) as registry:
            await registry.start_shadow(MODEL_ID, "1.0.0", "l2")
    assert await recorded(settings, "l2") == []

"""Real servers for the tests (nats-server -js on a free port, a throwaway PostgreSQL database, a gateway) and the
line configuration every test starts from."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from lineguard.bus import Bus
from lineguard.config import LineConfig, NatsSettings
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.runtime.service import run_service
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing import throwaway_database
from lineguard.testing.gateway import Gateway, service_ready
from lineguard.testing.models import trust_dir

# Every line config in the tests (and the services they start) trusts the test signing key beside the project's, so
# the models tests make on the fly load through the same signature check as on a line (lineguard.testing.models).
os.environ.setdefault("LINEGUARD_MODEL__TRUSTED_KEYS_DIR", str(trust_dir(Path(tempfile.mkdtemp(prefix="lg-trust-")))))


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    store = tmp_path_factory.mktemp("nats")
    server = EmbeddedNats(store_dir=store, log_file=store / "nats.log").start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A server of the test's own, for tests that need empty streams."""
    server = EmbeddedNats(store_dir=tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
async def secured_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A server secured as a deployment is (docs/security.md): TLS, an nkey per identity made for the test, the
    permissions of lineguard.bus.permissions for line l1, and the streams provisioned by the admin identity.
    `secured_nats.settings()` are the clients' settings (credentials_dir: connect as any identity)."""
    from lineguard.bus.provision import provision_line

    server = EmbeddedNats.secured(
        tmp_path / "nats", tmp_path / "nats-credentials", "l1", log_file=tmp_path / "nats.log"
    ).start()
    try:
        await provision_line(server.settings())
        yield server
    finally:
        server.stop()


@pytest.fixture
async def bus_factory(fresh_nats: EmbeddedNats) -> AsyncIterator:
    buses: list[Bus] = []

    async def make(service: str = "test", **settings: object) -> Bus:
        bus = await Bus.connect(NatsSettings(url=fresh_nats.url, **settings), service)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway database on the local PostgreSQL; its absence is a failure, not a skip."""
    with throwaway_database() as url:
        yield url


@pytest.fixture(scope="session")
def line_config_dict(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, Any]]:
    """The demo line's configuration (one station, the packaged boards and model) as a dict for the test to adjust.

    `nats_url`: the test's server; the default reaches nothing, for tests that never connect. `sections` replace
    the top-level sections they name (`model={...}`, `services={...}`). The image archive is a folder of the
    session's own (its default, ./images, would be the checkout)."""
    archive = tmp_path_factory.mktemp("archive")

    def make(
        *,
        nats_url: str = "nats://127.0.0.1:1",
        database_url: str = "sqlite://",
        opcua_endpoint: str = "opc.tcp://127.0.0.1:4840/",
        deadline_ms: int = 3000,
        **sections: Any,
    ) -> dict[str, Any]:
        raw = demo_config_dict(
            nats_url=nats_url, database_url=database_url, opcua_endpoint=opcua_endpoint, deadline_ms=deadline_ms
        )
        return {"archive": {"kind": "folder", "path": str(archive)}, **raw, **sections}

    return make


@pytest.fixture(scope="session")
def started_gateway(
    line_config_dict: Callable[..., dict[str, Any]],
) -> Callable[..., AbstractAsyncContextManager[Gateway]]:
    """`started_gateway(store, quick_deadline_ms=..., **settings)`: a gateway of the test's own (or the module's)."""

    @contextlib.asynccontextmanager
    async def started_gateway(
        store: Path,
        *,
        quick_deadline_ms: int,
        plc_security: dict[str, Any] | None = None,
        nats: EmbeddedNats | None = None,
        endpoint: str | None = None,
        plc: dict[str, dict[str, Any]] | None = None,
        stations: dict[str, dict[str, Any]] | None = None,
        **settings: Any,
    ) -> AsyncIterator[Gateway]:
        """A gateway on its own nats-server, one endpoint, two stations: s1 waits up to 10 s for a decision, s2
        (recipe "quick") gives FAIL / TIMEOUT after quick_deadline_ms + 100 ms grace. `plc_security`: both stations'
        plc.security (default the demo profile); `settings`: more of the line's configuration.

        To restart a gateway (a second one after the first stopped, as the same process would be started again):
        `nats`, a server the caller owns and keeps running, and `endpoint`, the OPC UA address to serve again.
        `plc`: station id -> its plc settings in place of the OPC UA server (another protocol); `stations`: station
        id -> more of its settings (its selftest, ...)."""
        # Imported here: a test run that starts no gateway does not need it to import.
        from lineguard.services.gateway.service import setup

        own_nats = nats is None
        server = EmbeddedNats(store_dir=store, log_file=store / "nats.log").start() if nats is None else nats
        endpoint = endpoint or f"opc.tcp://127.0.0.1:{free_port()}/lineguard/"
        raw = line_config_dict(nats_url=server.url, opcua_endpoint=endpoint, deadline_ms=10_000)
        raw["recipes"]["quick"] = {**raw["recipes"]["pcb-a"], "deadline_ms": quick_deadline_ms}
        raw["stations"].append({**raw["stations"][0], "id": "s2", "recipe": "quick"})
        for station in raw["stations"] if plc_security is not None else []:
            station["plc"] = {**station["plc"], "security": plc_security}
        for station in raw["stations"]:
            station["plc"] = (plc or {}).get(station["id"], station["plc"])
            station.update((stations or {}).get(station["id"], {}))
        raw["gateway"] = {"result_grace_ms": 100}
        config = LineConfig(**{**raw, **settings})
        stopping, ready = asyncio.Event(), asyncio.Event()
        service = asyncio.create_task(run_service("gateway", config, setup, stopping=stopping, ready=ready))
        bus = await Bus.connect(config.nats, "gateway-test")
        try:
            await service_ready(bus, service, ready=ready)
            yield Gateway(config, endpoint, bus, stopping, service, server)
        finally:
            stopping.set()
            await asyncio.wait_for(service, timeout=30)
            await bus.close()
            if own_nats:
                server.stop()

    return started_gateway

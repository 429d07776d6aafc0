"""Real servers for the tests: nats-server -js on a free port, a throwaway PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lineguard.bus import Bus
from lineguard.config import NatsSettings
from lineguard.natsserver import EmbeddedNats
from lineguard.testing import throwaway_database


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

"""The query API served for real: by the results service (api.enabled) through uvicorn on a free port, and fuzzed
from its own OpenAPI document with schemathesis: no input makes a 500."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from lineguard.config import LineConfig
from lineguard.config.model import ApiSettings
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.runtime.service import run_service
from lineguard.services.results.api.app import create_app
from lineguard.services.results.api.server import ApiBindError, ApiServer, bind
from lineguard.services.results.api.tokens import create_token
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.service import setup
from lineguard.services.results.store import write_decision
from lineguard.testing import throwaway_database
from lineguard.testing.records import sample_decision


async def test_the_results_service_serves_the_api_when_enabled(
    fresh_nats: EmbeddedNats, tmp_path: Path, line_config_dict
) -> None:
    url = f"sqlite:///{tmp_path / 'lineguard.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    write_decision(engine, sample_decision(serial="LG-00000042"))
    token = create_token(engine, "reader", "mes")
    port = free_port()
    raw = line_config_dict(nats_url=fresh_nats.url, database_url=url, api={"enabled": True, "port": port})
    stopping, ready = asyncio.Event(), asyncio.Event()
    service = asyncio.create_task(run_service("results", LineConfig(**raw), setup, stopping=stopping, ready=ready))
    try:
        async with asyncio.timeout(30):
            await ready.wait()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/v1/inspections")).status_code == 401
            history = await client.get(
                "/v1/history", params={"serial": "LG-00000042"}, headers={"Authorization": f"Bearer {token}"}
            )
            assert history.status_code == 200 and history.json()["inspections"][0]["verdict"] == "FAIL"
            document = (await client.get("/openapi.json")).json()
            assert document["openapi"].startswith("3.1")
    finally:
        stopping.set()
        await asyncio.wait_for(service, 30)
        engine.dispose()
    with pytest.raises(httpx.ConnectError):  # stopped with the service
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_a_port_in_use_is_an_error_naming_it() -> None:
    engine = make_engine("sqlite://")
    first = ApiServer(engine, ApiSettings(port=0))
    try:
        with pytest.raises(ApiBindError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            ApiServer(engine, ApiSettings(port=first.port))
    finally:
        first.socket.close()
        engine.dispose()


async def test_the_api_socket_gives_its_connections_tcp_nodelay() -> None:
    # uvicorn writes a response's head and body apart: with Nagle's algorithm on, a kept-alive connection's body
    # waits for the client's delayed ACK, ~40 ms a request. asyncio turns it off only where the socket says TCP.
    loop = asyncio.get_running_loop()
    accepted: asyncio.Queue[asyncio.BaseTransport] = asyncio.Queue()

    class Accepting(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.put_nowait(transport)

    server = await loop.create_server(Accepting, sock=bind("127.0.0.1", 0))
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        transport = await asyncio.wait_for(accepted.get(), 5)
        assert transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        writer.close()
        transport.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzzed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """The app over a database with a few parts, and an admin token (every route open to it)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'lineguard.db'}"
        else:
            url = stack.enter_context(throwaway_database())
        upgrade_database(url)
        engine = make_engine(url)
        stack.callback(engine.dispose)
        for i in range(5):
            write_decision(engine, sample_decision(i))
        token = create_token(engine, "admin", "fuzz")
        yield (
            schemathesis.openapi.from_asgi(
                "/openapi.json", create_app(engine, ApiSettings(rate_per_s=1e6, burst=10**6))
            ),
            token,
        )


OPERATIONS = [
    "GET /v1/inspections",
    "GET /v1/inspections/{inspection_id}",
    "GET /v1/history",
    "GET /v1/yield",
    "GET /v1/pareto",
    "GET /v1/export.csv",
    "GET /v1/tokens",
    "GET /v1/inspections/{inspection_id}/confirmations",
    "POST /v1/inspections/{inspection_id}/confirmations",
    "GET /v1/inspections/{inspection_id}/images",
    "GET /v1/images/{image_id}",
    "GET /v1/drift",
]


def test_the_fuzzed_operations_are_every_route(fuzzed: tuple[Any, str]) -> None:
    schema, _ = fuzzed
    assert sorted(r.ok().label for r in schema.get_all_operations()) == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_input_makes_a_server_error(fuzzed: tuple[Any, str], label: str) -> None:
    # Driven by hypothesis directly (schemathesis's pytest plugin does not run under pytest 9).
    schema, token = fuzzed
    (operation,) = [r.ok() for r in schema.get_all_operations() if r.ok().label == label]
    headers = {"Authorization": f"Bearer {token}"}
    tried = []

    @given(case=operation.as_strategy())
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def call(case: Any) -> None:
        tried.append(case)
        case.call_and_validate(headers=headers, checks=[not_a_server_error])

    call()
    assert len(tried) >= 10

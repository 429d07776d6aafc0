"""The gateway's quiet OPC UA subscriptions (opcua_quiet.py) against real asyncua servers and clients on loopback:
a quiet server's subscription sleeps while nothing happens, still sends each event (no more often than once an
interval) and its keep-alives on time; a server not made quiet in the same process keeps asyncua's loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, Server, ua

from lineguard.natsserver import free_port
from lineguard.services.gateway.protocols.opcua_quiet import QuietSubscription, make_quiet
from lineguard.sim.plc import subscription_parameters

pytestmark = pytest.mark.asyncio(loop_scope="module")

INTERVAL_MS = 10


@asynccontextmanager
async def served(quiet: bool) -> AsyncIterator[tuple[Server, str]]:
    server = Server()
    await server.init()
    if quiet:
        make_quiet(server)
    endpoint = f"opc.tcp://127.0.0.1:{free_port('127.0.0.1')}/quiet/"
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    await server.start()
    try:
        yield server, endpoint
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def quiet() -> AsyncIterator[tuple[Server, str]]:
    async with served(quiet=True) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stock(quiet: tuple[Server, str]) -> AsyncIterator[tuple[Server, str]]:
    """A bare server beside the quiet one in the same process."""
    async with served(quiet=False) as started:
        yield started


class Events:
    def __init__(self) -> None:
        self.at: list[float] = []
        self.got = asyncio.Event()

    def event_notification(self, _event: Any) -> None:
        self.at.append(time.monotonic())
        self.got.set()


def counted(server: Server) -> dict[str, int]:
    """How many times each of the server's subscriptions looked for something to publish, from now on."""
    counts = {"looks": 0, "sent": 0}
    for sub in server.iserver.subscription_service.subscriptions.values():
        look = sub.publish_results

        async def publish_results(requestdata: Any = None, _look: Any = look) -> bool:
            sent = await _look(requestdata)
            counts["looks"] += 1
            counts["sent"] += sent
            return sent

        sub.publish_results = publish_results  # type: ignore[method-assign]
    return counts


def parameters(keep_alive_count: int) -> ua.CreateSubscriptionParameters:
    lifetime_count = max(3000, 3 * keep_alive_count)
    return subscription_parameters(INTERVAL_MS, lifetime_count=lifetime_count, keep_alive_count=keep_alive_count)


async def test_a_quiet_subscription_sleeps_and_still_sends_each_event_within_an_interval(
    quiet: tuple[Server, str],
) -> None:
    server, endpoint = quiet
    async with Client(endpoint) as client:
        events = Events()
        sub = await client.create_subscription(parameters(500), events)
        await sub.subscribe_events(client.nodes.server)
        assert all(isinstance(s, QuietSubscription) for s in server.iserver.subscription_service.subscriptions.values())
        await asyncio.sleep(0.2)
        counts = counted(server)
        await asyncio.sleep(1.0)
        assert counts["looks"] <= 2  # asyncua's loop: ~100 in a second at 10 ms
        generator = await server.get_event_generator()
        latencies = []
        for n in range(20):
            events.got.clear()
            sent = time.monotonic()
            await generator.trigger(message=f"part {n}")
            await asyncio.wait_for(events.got.wait(), timeout=2)
            latencies.append(events.at[-1] - sent)
            await asyncio.sleep(0.003 * (n % 5))  # some within an interval of the last publish, some after it
        assert len(events.at) == 20
        assert max(latencies) < INTERVAL_MS / 1000 + 0.05
        # Two events an interval apart at most: the second waits for the first's interval to pass.
        before = len(events.at)
        await generator.trigger(message="first")
        await generator.trigger(message="second")
        await asyncio.sleep(0.2)
        assert len(events.at) == before + 2
        await sub.delete()


async def test_a_quiet_subscription_sends_its_keep_alives_on_time(quiet: tuple[Server, str]) -> None:
    keep_alive_count = 10  # a keep-alive after 10 quiet intervals: 100 ms
    server, endpoint = quiet
    async with Client(endpoint) as client:
        sub = await client.create_subscription(parameters(keep_alive_count), Events())
        await sub.subscribe_events(client.nodes.server)
        await asyncio.sleep(0.15)
        counts = counted(server)
        await asyncio.sleep(1.0)
        assert 7 <= counts["sent"] <= 11, counts  # ~10 keep-alives in the second, as asyncua's loop sends
        assert counts["looks"] <= counts["sent"] + 2
        await sub.delete()


async def test_a_server_not_made_quiet_keeps_asyncuas_loop(stock: tuple[Server, str]) -> None:
    server, endpoint = stock
    async with Client(endpoint) as client:
        sub = await client.create_subscription(parameters(500), Events())
        await sub.subscribe_events(client.nodes.server)
        await asyncio.sleep(0.2)
        counts = counted(server)
        await asyncio.sleep(0.5)
        assert counts["looks"] >= 20  # a look each 10 ms interval
        await sub.delete()


@pytest.mark.parametrize("kind", ["quiet", "stock"])
async def test_a_subscription_without_publish_requests_expires_after_its_lifetime(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """A client that stops asking (no Publish requests) loses its subscription after LifetimeCount intervals,
    quiet or not."""
    server, endpoint = request.getfixturevalue(kind)
    async with Client(endpoint) as client:
        sub = await client.create_subscription(
            subscription_parameters(INTERVAL_MS, lifetime_count=30, keep_alive_count=5),
            Events(),
        )
        subscriptions = server.iserver.subscription_service.subscriptions
        assert sub.subscription_id in subscriptions
        # Stop the client's Publish requests: its publish loop is asyncua's task on the client.
        client.uaclient._publish_task.cancel()  # no public way to go silent
        await asyncio.sleep(1.5)
        assert sub.subscription_id not in subscriptions

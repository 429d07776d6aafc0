"""OPC UA clients for tests and benchmarks: application certificates, and asyncua clients set up as a PLC would be
(a security policy and mode, a trusted certificate, a user login); the certificate and set-up are the simulated PLC's
(lineguard.sim.opcua_security)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asyncua import Client

from lineguard.sim.opcua_security import MODES, POLICIES, ClientCertificate, client_setup, make_certificate

__all__ = ["MODES", "POLICIES", "ClientCertificate", "client_setup", "make_certificate", "secure_client"]


async def secure_client(endpoint: str, setup: Callable[[Client], Awaitable[None]]) -> Client:
    """A Client set up by `setup` (client_setup), not yet connected."""
    client = Client(endpoint, timeout=10)
    await setup(client)
    return client

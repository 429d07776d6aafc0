"""A Modbus TCP server that cannot listen says why: pymodbus's own error names no cause."""

from __future__ import annotations

import socket

import pytest

from lineguard.services.gateway.protocols.modbus import ModbusServerEndpoint, Settings


async def test_a_port_in_use_is_named_as_such() -> None:
    async def on_trigger(*_: object) -> None:
        raise AssertionError("no trigger without a server")

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        endpoint = ModbusServerEndpoint("127.0.0.1", port, [("s1", Settings(protocol="modbus"))], on_trigger)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            await endpoint.start()
        await endpoint.stop()

"""Simulated Modbus TCP PLCs, for both of the gateway's modes (services/gateway/protocols/modbus.py).

- `SimulatedModbusPlc`: the gateway is the server (`mode: server`); this PLC connects to it, writes its
  fields and polls the gateway's, as a controller's Modbus client block would.
- `SimulatedModbusPlcServer`: the gateway is the client (`mode: client`); this PLC is a Modbus TCP server
  holding every field in its registers, and the gateway polls and writes them.

Both are a `RegisterPlc` (sim/registers.py: trigger, acknowledge, check every result) over pymodbus, used
like the OPC UA one: `async with SimulatedModbusPlc("127.0.0.1", 5020) as plc: await plc.run(20, 10)`."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from lineguard.contracts.registers import DEFAULT_PART_ID_CHARS, MODBUS_DEFAULTS, Layout
from lineguard.sim.registers import RegisterPlc


def modbus_layout(addresses: Mapping[str, int] | None = None, part_id_chars: int = DEFAULT_PART_ID_CHARS) -> Layout:
    """A station's register map (holding-register addresses) as the byte layout the handshake uses."""
    addresses = {**MODBUS_DEFAULTS, **(addresses or {})}
    return Layout({n: 2 * a for n, a in addresses.items()}, part_id_chars, "modbus")


def _registers(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2]) for i in range(0, len(data), 2)]


class SimulatedModbusPlc(RegisterPlc):
    """A PLC polling the gateway's Modbus server: its fields written with FC16, the gateway's read with FC3."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        device_id: int = 1,
        addresses: Mapping[str, int] | None = None,
        part_id_chars: int = DEFAULT_PART_ID_CHARS,
        connect_timeout_s: float = 30.0,
        **options: Any,
    ):
        super().__init__(
            modbus_layout(addresses, part_id_chars), self._read_registers, self._write_registers, **options
        )
        self.host, self.port, self.device_id = host, port, device_id
        self.connect_timeout_s = connect_timeout_s
        self.client: AsyncModbusTcpClient | None = None

    async def __aenter__(self) -> SimulatedModbusPlc:
        await self.connect()
        await self.start()
        await self.wait_ready(self.connect_timeout_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
        self.disconnect()

    async def connect(self) -> None:
        """Connect, retrying until connect_timeout_s: the gateway may still be starting."""
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            client = AsyncModbusTcpClient(self.host, port=self.port, timeout=2, retries=0, reconnect_delay=0)
            if await client.connect():
                self.client = client
                return
            client.close()
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"no Modbus TCP server at {self.host}:{self.port} after {self.connect_timeout_s:g} s"
                )
            await asyncio.sleep(0.2)

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    async def _read_registers(self, start: int, end: int) -> bytes:
        if self.client is None:
            raise ConnectionError("not connected")
        reply = await self.client.read_holding_registers(
            start // 2, count=(end - start + 1) // 2, device_id=self.device_id
        )
        if reply.isError():
            raise ConnectionError(f"read refused: {reply}")
        return b"".join(int(r).to_bytes(2) for r in reply.registers)

    async def _write_registers(self, offset: int, data: bytes) -> None:
        if self.client is None:
            raise ConnectionError("not connected")
        reply = await self.client.write_registers(offset // 2, _registers(data), device_id=self.device_id)
        if reply.isError():
            raise ConnectionError(f"write refused: {reply}")


class SimulatedModbusPlcServer(RegisterPlc):
    """A PLC that is a Modbus TCP server: all of a station's fields in its holding registers, the gateway its
    client. `stop_server()` / `start_server()` play a PLC whose network goes away and comes back."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        device_id: int = 1,
        addresses: Mapping[str, int] | None = None,
        part_id_chars: int = DEFAULT_PART_ID_CHARS,
        ready_timeout_s: float = 30.0,
        **options: Any,
    ):
        layout = modbus_layout(addresses, part_id_chars)
        super().__init__(layout, self._read_memory, self._write_memory, **options)
        self.host, self.port, self.device_id = host, port, device_id
        self.ready_timeout_s = ready_timeout_s
        self.memory = bytearray(2 * 0x10000)
        self.server: ModbusTcpServer | None = None

    async def __aenter__(self) -> SimulatedModbusPlcServer:
        await self.start_server()
        await self.start()
        await self.wait_ready(self.ready_timeout_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
        await self.stop_server()

    async def start_server(self) -> None:
        # One holding-register area from 0 past the last field, as a PLC's Modbus server block maps one: the gateway
        # reads the PLC's fields in one request from the first to the last (the lot lies past the gateway's).
        end = max(offset + self.layout.size(name) for name, offset in self.layout.offsets.items())
        blocks = [SimData(0, count=(end + 1) // 2, values=0, datatype=DataType.REGISTERS)]
        device = SimDevice(self.device_id, simdata=blocks, action=functools.partial(self._action))
        logging.getLogger("pymodbus").setLevel(logging.ERROR)
        self.server = ModbusTcpServer([device], address=(self.host, self.port))
        await self.server.serve_forever(background=True)

    async def stop_server(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """The registers are this PLC's memory: reads are answered from it, writes land in it."""
        if values is None:
            for i in range(count):
                at = 2 * (address + i)
                registers[address - start_address + i] = int.from_bytes(self.memory[at : at + 2])
        else:
            for i, value in enumerate(values):
                self.memory[2 * (address + i) : 2 * (address + i) + 2] = int(value).to_bytes(2)
            self.on_write()
        return None

    def on_write(self) -> None:
        """Called as each write of the gateway lands in the memory: a PLC program's scan, a benchmark's clock."""

    async def _read_memory(self, start: int, end: int) -> bytes:
        return bytes(self.memory[start:end])

    async def _write_memory(self, offset: int, data: bytes) -> None:
        self.memory[offset : offset + len(data)] = data

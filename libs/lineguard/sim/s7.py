"""A simulated Siemens S7 PLC: snap7's own server holding a data block, the gateway its client.

The DB is this PLC's memory: the handshake's fields at the byte offsets of lineguard.contracts.registers
(S7_DEFAULTS, or the station's `layout`), read and written in place by a `RegisterPlc` (sim/registers.py),
while the gateway reads and writes the same bytes over S7. Used like the OPC UA one:
`async with SimulatedS7Plc(port) as plc: await plc.run(20, rate_hz=10)`. `stop_server()` /
`start_server()` play a PLC whose network goes away and comes back."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from snap7.server import Server
from snap7.type import SrvArea

from lineguard.contracts.registers import DEFAULT_PART_ID_CHARS, S7_DEFAULTS, Layout
from lineguard.sim.registers import RegisterPlc

DB_SIZE = 256  # bytes: the default layout uses 70


def s7_layout(offsets: Mapping[str, int] | None = None, part_id_chars: int = DEFAULT_PART_ID_CHARS) -> Layout:
    return Layout({**S7_DEFAULTS, **(offsets or {})}, part_id_chars, "s7")


class SimulatedS7Plc(RegisterPlc):
    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        db: int = 100,
        offsets: Mapping[str, int] | None = None,
        part_id_chars: int = DEFAULT_PART_ID_CHARS,
        db_size: int = DB_SIZE,
        ready_timeout_s: float = 30.0,
        **options: Any,
    ):
        super().__init__(s7_layout(offsets, part_id_chars), self._read_db, self._write_db, **options)
        self.host, self.port, self.db = host, port, db
        self.ready_timeout_s = ready_timeout_s
        self.memory = bytearray(db_size)
        self.server: Server | None = None

    async def __aenter__(self) -> SimulatedS7Plc:
        self.start_server()
        for text in ("part_id", "lot"):  # the STRINGs' declared maximum, as the PLC's DB declaration sets it
            await self.set(text, "")
        await self.start()
        await self.wait_ready(self.ready_timeout_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
        self.stop_server()

    def start_server(self) -> None:
        logging.getLogger("snap7").setLevel(logging.WARNING)
        server = Server(log=False)
        server.register_area(SrvArea.DB, self.db, self.memory)  # the same bytearray: no copy
        server.start_to(self.host, self.port)
        self.server = server

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    async def _read_db(self, start: int, end: int) -> bytes:
        return bytes(self.memory[start:end])

    async def _write_db(self, offset: int, data: bytes) -> None:
        self.memory[offset : offset + len(data)] = data

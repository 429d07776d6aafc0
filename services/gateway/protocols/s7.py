"""Siemens S7: the register handshake (registers.py) in a data block of the PLC, the gateway its client.

The gateway connects to the PLC (ISO-on-TCP, port 102, rack / slot), reads the PLC's fields from the
station's data block every `poll_ms` and writes its own into it, at the byte offsets of `layout`
(docs/s7.md has the DB to declare). The DB must be a non-optimized ("standard") block and the CPU must
allow PUT/GET (S7-1200/1500: both are settings in TIA Portal). A lost connection is Error, and it connects
again with backoff. python-snap7 is imported only when a connection is made."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from lineguard.contracts import registers as contract
from lineguard.services.gateway.registers import ClientEndpoint, RegisterSettings, check_overlap

if TYPE_CHECKING:
    from lineguard.services.gateway.endpoint import PlcEndpoint, TriggerHandler

KEY = "s7"
MAX_OFFSET = 0xFFFF  # a DB holds at most 64 KiB


def byte_size(name: str, chars: int) -> int:
    """Bytes field `name` takes; `chars`: the n of a text field's STRING[n] (part id, lot)."""
    kind = contract.SPECS[name].kind
    if kind == contract.STRING:
        return contract.string_size("s7", chars)
    return 2 if kind == contract.WORD else 4


class DbLayout(BaseModel):
    """Where each field starts: a byte offset in the data block. Defaults: lineguard.contracts.registers."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    part_id_chars: int = Field(
        contract.DEFAULT_PART_ID_CHARS,
        ge=1,
        le=contract.MAX_PART_ID_CHARS,  # what the inspection record's part_id column holds (S7 allows 254)
        description="n of the part id's STRING[n]",
    )
    lot_chars: int = Field(
        contract.DEFAULT_LOT_CHARS,
        ge=1,
        le=contract.MAX_LOT_CHARS,  # what the inspection record's lot column holds
        description="n of the lot's STRING[n]",
    )
    plc_heartbeat: int = contract.S7_DEFAULTS["plc_heartbeat"]
    trigger: int = contract.S7_DEFAULTS["trigger"]
    sequence: int = contract.S7_DEFAULTS["sequence"]
    recipe: int = contract.S7_DEFAULTS["recipe"]
    ack_sequence: int = contract.S7_DEFAULTS["ack_sequence"]
    part_id: int = contract.S7_DEFAULTS["part_id"]
    heartbeat: int = contract.S7_DEFAULTS["heartbeat"]
    busy: int = contract.S7_DEFAULTS["busy"]
    done: int = contract.S7_DEFAULTS["done"]
    verdict: int = contract.S7_DEFAULTS["verdict"]
    reasons: int = contract.S7_DEFAULTS["reasons"]
    result_sequence: int = contract.S7_DEFAULTS["result_sequence"]
    error: int = contract.S7_DEFAULTS["error"]
    selftest: int = contract.S7_DEFAULTS["selftest"]
    selftest_state: int = contract.S7_DEFAULTS["selftest_state"]
    lot: int = contract.S7_DEFAULTS["lot"]

    @field_validator(*contract.SPECS, mode="after")
    @classmethod
    def _fits(cls, offset: int, info: ValidationInfo) -> int:
        name = info.field_name
        assert name is not None
        option = contract.TEXT_CHARS.get(name)
        size = byte_size(name, info.data.get(option, contract.TEXT_DEFAULTS[option]) if option else 0)
        if offset % 2:
            raise ValueError(f"{name} at byte {offset}: a WORD, DWORD or STRING starts at an even byte in an S7 DB")
        if not 0 <= offset <= MAX_OFFSET - size + 1:
            raise ValueError(f"{name} needs {size} bytes from {offset}: beyond a DB's {MAX_OFFSET + 1} bytes")
        check_overlap(name, offset, info.data, byte_size, "bytes")
        return offset

    def layout(self) -> contract.Layout:
        return contract.Layout({n: getattr(self, n) for n in contract.SPECS}, self.part_id_chars, "s7", self.lot_chars)


class Settings(RegisterSettings):
    protocol: Literal["s7"] = "s7"
    host: str = Field("127.0.0.1", description="the PLC's address")
    port: int = Field(102, ge=1, le=65535, description="ISO-on-TCP; 102 on every S7 CPU")
    rack: int = Field(0, ge=0, le=7)
    slot: int = Field(1, ge=0, le=31, description="the CPU's slot: 1 for S7-1200/1500, 2 for most S7-300")
    db: int = Field(100, ge=1, le=65535, description="the data block holding this station's fields")
    layout: DbLayout = Field(default_factory=DbLayout)


def open_endpoints(stations: Sequence[tuple[str, Settings]], on_trigger: TriggerHandler) -> list[PlcEndpoint]:
    """One connection per station (each its own DB, perhaps on one CPU)."""
    quiet_snap7()
    return [S7Endpoint(station_id, settings, on_trigger) for station_id, settings in stations]


class S7Endpoint(ClientEndpoint):
    """The gateway as the S7 client of one station's data block (a PlcEndpoint)."""

    protocol = KEY

    def __init__(self, station: str, settings: Settings, on_trigger: TriggerHandler):
        super().__init__(station, settings.layout.layout(), settings, on_trigger)
        self.settings = settings
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        s = self.settings
        return f"s7://{s.host}:{s.port}/rack{s.rack}/slot{s.slot}/DB{s.db}"

    async def connect(self) -> None:
        from snap7 import AsyncClient

        s = self.settings
        self._client = AsyncClient()
        await self._client.connect(s.host, s.rack, s.slot, tcp_port=s.port)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.disconnect()

    async def read(self, start: int, end: int) -> bytes:
        if self._client is None:
            raise ConnectionError("not connected")
        return bytes(await self._client.db_read(self.settings.db, start, end - start))

    async def write(self, offset: int, data: bytes) -> None:
        if self._client is None:
            raise ConnectionError("not connected")
        await self._client.db_write(self.settings.db, offset, bytearray(data))


def quiet_snap7() -> None:
    """python-snap7 logs each connection at INFO; the gateway logs what a connection means for the station."""
    import logging

    logging.getLogger("snap7").setLevel(logging.WARNING)

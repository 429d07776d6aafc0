"""Modbus TCP: the register handshake (registers.py) over holding registers, as server or as client.

- `mode: server`: the gateway is a Modbus TCP server (pymodbus) and the PLC polls it: writes its fields,
  reads ours. Stations configured on the same host and port share one server, each its own unit
  (`device_id`) with a datastore of its own. Only the mapped registers exist: any other address is
  exception 02, a write to the gateway's registers is 02, a part id or lot length over its field is 03, a unit
  id no station has 0B (KnownUnits).
- `mode: client`: the gateway connects to the PLC's Modbus server, reads the PLC's fields every `poll_ms`
  and writes ours into its registers; a lost connection is Error, and it connects again with backoff.

Register addresses are 0-based, as on the wire (docs/modbus.md has the map). pymodbus is imported only
when endpoints are opened (every service validates the config, and so imports this module)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from lineguard.contracts import registers as contract
from lineguard.services.gateway.recipes import RecipeBook
from lineguard.services.gateway.registers import (
    ClientEndpoint,
    RegisterSettings,
    RegisterStation,
    beat,
    check_overlap,
    poll,
)

if TYPE_CHECKING:  # every service validates the config, and so imports this module: keep it light
    from lineguard.services.gateway.endpoint import PlcEndpoint, SelfTestRunner, TriggerHandler
    from lineguard.services.gateway.handshake import Result

KEY = "modbus"
log = structlog.get_logger("lineguard.gateway")

MAX_ADDRESS = 0xFFFF
MAX_READ = 125  # registers one read request may ask for (Modbus spec)
_READS = frozenset({3, 4})  # read holding / input registers: the same registers here
_WRITES = frozenset({6, 16, 23})  # write single, write multiple, read/write multiple


def register_count(name: str, chars: int) -> int:
    """Registers field `name` takes; `chars`: the characters a text field (part id, lot) holds."""
    spec = contract.SPECS[name]
    if spec.kind == contract.STRING:
        return contract.string_size("modbus", chars) // 2
    return 1 if spec.kind == contract.WORD else 2


class RegisterMap(BaseModel):
    """Where each field starts: a holding-register address, 0-based. Defaults: lineguard.contracts.registers."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    part_id_chars: int = Field(
        contract.DEFAULT_PART_ID_CHARS,
        ge=1,
        le=contract.MAX_PART_ID_CHARS,  # what the inspection record's part_id column holds
        description="characters the part id field holds (two per register, after one length register)",
    )
    lot_chars: int = Field(
        contract.DEFAULT_LOT_CHARS,
        ge=1,
        le=contract.MAX_LOT_CHARS,  # what the inspection record's lot column holds
        description="characters the lot field holds (two per register, after one length register)",
    )
    plc_heartbeat: int = contract.MODBUS_DEFAULTS["plc_heartbeat"]
    trigger: int = contract.MODBUS_DEFAULTS["trigger"]
    sequence: int = contract.MODBUS_DEFAULTS["sequence"]
    recipe: int = contract.MODBUS_DEFAULTS["recipe"]
    ack_sequence: int = contract.MODBUS_DEFAULTS["ack_sequence"]
    part_id: int = contract.MODBUS_DEFAULTS["part_id"]
    heartbeat: int = contract.MODBUS_DEFAULTS["heartbeat"]
    busy: int = contract.MODBUS_DEFAULTS["busy"]
    done: int = contract.MODBUS_DEFAULTS["done"]
    verdict: int = contract.MODBUS_DEFAULTS["verdict"]
    reasons: int = contract.MODBUS_DEFAULTS["reasons"]
    result_sequence: int = contract.MODBUS_DEFAULTS["result_sequence"]
    error: int = contract.MODBUS_DEFAULTS["error"]
    selftest: int = contract.MODBUS_DEFAULTS["selftest"]
    selftest_state: int = contract.MODBUS_DEFAULTS["selftest_state"]
    lot: int = contract.MODBUS_DEFAULTS["lot"]

    @field_validator(*contract.SPECS, mode="after")
    @classmethod
    def _fits(cls, address: int, info: ValidationInfo) -> int:
        name = info.field_name
        assert name is not None
        option = contract.TEXT_CHARS.get(name)
        count = register_count(name, info.data.get(option, contract.TEXT_DEFAULTS[option]) if option else 0)
        if not 0 <= address <= MAX_ADDRESS - count + 1:
            raise ValueError(f"{name} needs {count} register(s) from {address}: beyond address {MAX_ADDRESS}")
        check_overlap(name, address, info.data, register_count, "registers")
        return address

    def layout(self) -> contract.Layout:
        return contract.Layout(
            {n: 2 * getattr(self, n) for n in contract.SPECS}, self.part_id_chars, "modbus", self.lot_chars
        )


class Settings(RegisterSettings):
    protocol: Literal["modbus"] = "modbus"
    mode: Literal["server", "client"] = Field(
        "server", description="server: the PLC polls the gateway; client: the gateway polls the PLC"
    )
    host: str = Field(
        "127.0.0.1", description="server: the address to listen on (a cell network's, not 0.0.0.0); client: the PLC's"
    )
    port: int = Field(5020, ge=1, le=65535, description="server: where to listen; client: the PLC's (usually 502)")
    device_id: int = Field(1, ge=0, le=247, description="the Modbus unit id of this station's registers")
    map: RegisterMap = Field(default_factory=RegisterMap)


def open_endpoints(stations: Sequence[tuple[str, Settings]], on_trigger: TriggerHandler) -> list[PlcEndpoint]:
    """Server mode: one server per host and port, a unit per station. Client mode: one connection per station."""
    quiet_pymodbus()
    servers: dict[tuple[str, int], list[tuple[str, Settings]]] = {}
    endpoints: list[PlcEndpoint] = []
    for station_id, settings in stations:
        if settings.mode == "server":
            servers.setdefault((settings.host, settings.port), []).append((station_id, settings))
        else:
            endpoints.append(ModbusClientEndpoint(station_id, settings, on_trigger))
    for (host, port), served in servers.items():
        units = [s.device_id for _, s in served]
        if len(set(units)) != len(units):
            raise ValueError(
                f"stations on the Modbus server {host}:{port} need device_ids of their own; got "
                + ", ".join(f"{sid}: {s.device_id}" for sid, s in served)
            )
        endpoints.append(ModbusServerEndpoint(host, port, served, on_trigger))
    return endpoints


class ModbusServerEndpoint:
    """One pymodbus TCP server; each station a unit whose registers the PLC reads and writes (a PlcEndpoint)."""

    protocol = KEY

    def __init__(self, host: str, port: int, stations: Sequence[tuple[str, Settings]], on_trigger: TriggerHandler):

        self.host, self.port = host, port
        self.stations = tuple(s for s, _ in stations)
        self.on_trigger = on_trigger
        self._settings = dict(stations)
        # The registers as the gateway holds them, per station: bytes by address x 2. The PLC's writes land
        # here (through the server's action) and its reads are answered from here.
        self._memory = {s: bytearray(2 * (MAX_ADDRESS + 1)) for s in self.stations}
        self._wake = asyncio.Event()
        self._links: dict[str, RegisterStation] = {
            s: RegisterStation(
                s,
                settings.map.layout(),
                on_trigger,
                functools.partial(self._store, s),
                connected=True,
                plc_heartbeat_timeout_s=settings.plc_heartbeat_timeout_ms / 1000,
            )
            for s, settings in stations
        }
        self._server: Any = None
        self._stopping = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        return f"modbus://{self.host}:{self.port}"

    async def _store(self, station: str, offset: int, data: bytes) -> None:
        self._memory[station][offset : offset + len(data)] = data

    async def start(self) -> None:
        from pymodbus.server import ModbusTcpServer

        for link in self._links.values():
            # The registers show the station's state from the first read on (Error until the PLC's heartbeat is
            # seen), not zeros, which read as "no error" from a gateway that would refuse the trigger.
            await link.connected()
        devices = [self._device(s) for s in self.stations]
        self._server = ModbusTcpServer(devices, address=(self.host, self.port))
        self._server.context = KnownUnits(self._server.context, self.endpoint)
        try:
            await self._server.serve_forever(background=True)
        except (OSError, RuntimeError) as exc:
            why = _bind_error(self.host, self.port) or str(exc)
            raise OSError(f"the Modbus TCP server cannot listen on {self.host}:{self.port}: {why}") from exc
        log.info("Modbus TCP server listening", endpoint=self.endpoint, stations=list(self.stations))
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        async def reader(station: str, start: int, end: int) -> bytes:
            return bytes(self._memory[station][start:end])

        stations = [(self._links[s], functools.partial(reader, s)) for s in self.stations]
        period = min(self._settings[s].poll_ms for s in self.stations) / 1000
        await poll(stations, period, self._stopping, self._wake)

    def _device(self, station: str) -> Any:
        from pymodbus.simulator import DataType, SimData, SimDevice

        settings = self._settings[station]
        layout = settings.map.layout()
        blocks = [
            SimData(
                getattr(settings.map, name),
                count=register_count(name, layout.chars(name)),
                values=0,
                datatype=DataType.REGISTERS,
                readonly=spec.writer == contract.GATEWAY,  # the PLC may not write a result
            )
            for name, spec in contract.SPECS.items()
        ]
        return SimDevice(settings.device_id, simdata=blocks, action=functools.partial(self._action, station))

    async def _action(
        self,
        station: str,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> Any:
        """Every request to a station's registers, after pymodbus checked the addresses: answer reads from the
        gateway's registers, check and take the PLC's writes."""
        from pymodbus.constants import ExcCodes

        memory = self._memory[station]
        if function_code in _READS or (function_code in _WRITES and values is None):
            for i in range(count):
                registers[address - start_address + i] = int.from_bytes(
                    memory[2 * (address + i) : 2 * (address + i) + 2]
                )
            return None
        if function_code not in _WRITES or values is None:
            log.warning("Modbus function refused", station=station, function_code=function_code, address=address)
            return ExcCodes.ILLEGAL_FUNCTION
        settings = self._settings[station]
        for name, what in (("part_id", "part id"), ("lot", "lot")):
            length_at, chars = getattr(settings.map, name), self._links[station].layout.chars(name)
            if address <= length_at < address + len(values) and values[length_at - address] > chars:
                log.warning(
                    f"Modbus write refused: {what} too long for its registers",
                    station=station,
                    address=length_at,
                    length=int(values[length_at - address]),
                    max_chars=chars,
                )
                return ExcCodes.ILLEGAL_VALUE
        for i, value in enumerate(values):
            memory[2 * (address + i) : 2 * (address + i) + 2] = int(value).to_bytes(2)
        self._wake.set()
        return None

    async def stop(self) -> None:
        self._stopping.set()
        if self._poller is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._server is not None:
            await self._server.shutdown()

    async def run_heartbeat(self, stopping: asyncio.Event) -> None:
        period = min(self._settings[s].heartbeat_ms for s in self.stations) / 1000
        await beat(list(self._links.values()), period, stopping)

    async def deliver(self, station: str, result: Result) -> None:
        await self._links[station].deliver(result)

    async def set_busy(self, station: str, busy: bool) -> None:
        """Nothing to do: a register station shows its own busy (one part at a time, until its result)."""

    async def set_error(self, station: str, reason: str | None) -> None:
        await self._links[station].set_down(reason)

    async def set_warning(self, station: str, reason: str | None) -> None:
        await self._links[station].set_warning(reason)

    def link(self, station: str) -> RegisterStation:
        return self._links[station]

    def use_recipes(self, recipes: RecipeBook) -> None:
        for link in self._links.values():
            link.recipes = recipes

    def use_selftests(self, run: SelfTestRunner, stations: frozenset[str]) -> None:
        for station, link in self._links.items():
            link.selftests = run if station in stations else None


class KnownUnits:
    """A pymodbus server's devices (its SimCore), each a station's unit, with a clean reply to any other unit id.

    SimCore looks an unknown unit id up as device 0 and, with no station there, raises a KeyError: exception 04
    (device failure) and a traceback in pymodbus's log, for what is a PLC asking the wrong unit. Here it is exception
    0x0B (gateway target device failed to respond: no such device behind this server) and one log line naming the
    unit id, once per id (a PLC asks again every poll); and a station configured as unit 0 answers unit 0 alone."""

    def __init__(self, core: Any, endpoint: str):
        self._core = core
        self._endpoint = endpoint
        self._logged: set[int] = set()

    def device_ids(self) -> list[int]:
        return list(self._core.device_ids())

    def _unknown(self, device_id: int) -> Any:
        from pymodbus.constants import ExcCodes

        if device_id not in self._logged:
            self._logged.add(device_id)
            log.warning(
                "Modbus request to a unit id no station has: exception 0x0B (logged once per unit id)",
                endpoint=self._endpoint,
                unit_id=device_id,
                units=self.device_ids(),
            )
        return ExcCodes.GATEWAY_NO_RESPONSE

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1) -> Any:
        if device_id not in self._core.devices:
            return self._unknown(device_id)
        return await self._core.async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: list[Any]) -> Any:
        if device_id not in self._core.devices:
            return self._unknown(device_id)
        return await self._core.async_setValues(device_id, func_code, address, values)

    def __getattr__(self, name: str) -> Any:
        # Whatever else pymodbus's request path asks of its devices table (a later version's) goes to the real one.
        return getattr(self._core, name)


class ModbusClientEndpoint(ClientEndpoint):
    """The gateway as the Modbus TCP client of one station's registers in the PLC (a PlcEndpoint)."""

    protocol = KEY

    def __init__(self, station: str, settings: Settings, on_trigger: TriggerHandler):
        super().__init__(station, settings.map.layout(), settings, on_trigger)
        self.settings = settings
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        return f"modbus://{self.settings.host}:{self.settings.port}/{self.settings.device_id}"

    async def connect(self) -> None:
        from pymodbus.client import AsyncModbusTcpClient

        s = self.settings
        # pymodbus's own reconnecting is off: serve_client reconnects, so a lost PLC is seen as Error at once.
        self._client = AsyncModbusTcpClient(
            s.host, port=s.port, timeout=s.timeout_ms / 1000, retries=0, reconnect_delay=0
        )
        if not await self._client.connect():
            raise ConnectionError(f"no Modbus TCP server at {s.host}:{s.port}")

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def read(self, start: int, end: int) -> bytes:
        client = self._client
        if client is None:
            raise ConnectionError("not connected")
        out = bytearray()
        first, last = start // 2, (end + 1) // 2
        for address in range(first, last, MAX_READ):
            count = min(MAX_READ, last - address)
            reply = await client.read_holding_registers(address, count=count, device_id=self.settings.device_id)
            if reply.isError():
                raise ConnectionError(f"the PLC refused to read registers {address}..{address + count - 1}: {reply}")
            out.extend(b"".join(int(r).to_bytes(2) for r in reply.registers))
        return bytes(out)

    async def write(self, offset: int, data: bytes) -> None:
        client = self._client
        if client is None:
            raise ConnectionError("not connected")
        values = [int.from_bytes(data[i : i + 2]) for i in range(0, len(data), 2)]
        reply = await client.write_registers(offset // 2, values, device_id=self.settings.device_id)
        if reply.isError():
            raise ConnectionError(f"the PLC refused the write to registers from {offset // 2}: {reply}")


def quiet_pymodbus() -> None:
    """pymodbus logs every connection attempt and malformed frame at its own levels; keep its errors only:
    the gateway logs what they mean for the station."""
    import logging

    logging.getLogger("pymodbus").setLevel(logging.ERROR)


def _bind_error(host: str, port: int) -> str | None:
    """Why the OS refuses to bind `host`:`port` (e.g. "Address already in use"): pymodbus raises only "Could not
    start listen, please check address", which names no cause."""
    try:
        socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None

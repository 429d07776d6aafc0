"""A simulated PLC that runs its own OPC UA server, the gateway its client (the `opcua-client` protocol).

An asyncua Server on loopback with the variables a PLC program would declare for the vision cell (`PLC/Trigger`,
`PLC/Sequence`, `PLC/PartId`, `PLC/Verdict`, ... in namespace NAMESPACE_URI): it triggers parts by counting
`Trigger` up (counter mode) or by setting `Sequence` and raising the Boolean `Trigger` (bool mode), watches
`ResultSequence` change (the gateway writes it last) and records each result, and reports like the other simulated
PLCs (lineguard.sim.plc's PlcRunReport). `node_map()` is the station's `plc.nodes` for it. `stop_server()` /
`start_server()` play a PLC restarted mid-run (its variables keep their values, as a PLC's retained DB does);
`security` plays a production PLC (Basic256Sha256 / SignAndEncrypt, one user)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from asyncua import Server, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from lineguard.contracts import opcua as contract
from lineguard.contracts import verdict_name
from lineguard.contracts.registers import reasons_of
from lineguard.sim.plc import PlcResult, PlcRunReport, ResultCallback, paced, tally, wait_until

NAMESPACE_URI = "urn:lineguard:sim:plc"
SERVER_URI = "urn:lineguard:sim:plc-server"  # its ApplicationUri, also in its certificate
# The PLC's variables: browse name (string NodeId PLC/<name>), built-in type, the station's plc.nodes field.
VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("Sequence", "UInt32", "sequence"),
    ("PartId", "String", "part_id"),
    ("Lot", "String", "lot"),  # the production lot, written at a lot change (set_lot)
    ("Verdict", "Int16", "verdict"),  # a PLC's INT, not the contract's Int32: the gateway writes the node's type
    ("Reasons", "String", "reasons"),
    ("ReasonBits", "UInt32", ""),  # for a map whose reasons are the bitfield
    ("InspectionId", "String", "inspection_id"),
    ("ResultSequence", "UInt32", "result_sequence"),
    ("Busy", "Boolean", "busy"),
    ("Error", "Int16", "error"),
    ("Heartbeat", "UInt32", "heartbeat"),
)


def node_id(name: str) -> str:
    return f"nsu={NAMESPACE_URI};s=PLC/{name}"


@dataclass(frozen=True)
class PlcSecurity:
    """A PLC server that takes Basic256Sha256 / SignAndEncrypt only and one user; its certificate in `folder`."""

    folder: Path
    user: str
    password: str

    @property
    def certificate(self) -> Path:
        return self.folder / "plc-server.der"

    @property
    def private_key(self) -> Path:
        return self.folder / "plc-server.pem"

    def make_certificate(self, host: str) -> None:
        if self.certificate.is_file():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        key = cert_gen.generate_private_key()
        cert = cert_gen.generate_self_signed_app_certificate(
            key,
            "simulated PLC",
            {},
            [x509.UniformResourceIdentifier(SERVER_URI), x509.DNSName(host)],
            extended=[ExtendedKeyUsageOID.SERVER_AUTH],
        )
        self.certificate.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        self.private_key.write_bytes(cert_gen.dump_private_key_as_pem(key))


class _OneUser(UserManager):
    def __init__(self, user: str, password: str):
        self._user, self._password = user, password

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username == self._user and password == self._password:
            return User(role=UserRole.User, name=username)
        return None


@dataclass
class _Sent:
    sequence: int
    at: float


@dataclass
class _Got:
    sequence: int
    inspection_id: str
    verdict: int
    reasons: list[str]
    at: float


@dataclass
class ServerPlc:
    """`async with ServerPlc(port) as plc: report = await plc.run(20, rate_hz=10)` (the gateway connects to it)."""

    port: int
    host: str = "127.0.0.1"
    trigger: Literal["counter", "bool"] = "counter"
    reasons_as_bits: bool = False
    security: PlcSecurity | None = None
    values: dict[str, Any] = field(default_factory=dict)  # the variables, kept across a restart
    results: list[_Got] = field(default_factory=list)
    server: Server | None = None
    next_sequence: int = 1
    _sent: dict[int, _Sent] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _idx: int = 0
    _fresh: bool = True

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/plc/"

    def node_map(self, *, part_id: bool = True, status: bool = True, lot: bool = False) -> dict[str, str]:
        """The station's `plc.nodes` for this PLC."""
        nodes = {
            "trigger": node_id("Trigger"),
            "verdict": node_id("Verdict"),
            "result_sequence": node_id("ResultSequence"),
        }
        if self.trigger == "bool":
            nodes["sequence"] = node_id("Sequence")
        nodes["reasons"] = node_id("ReasonBits" if self.reasons_as_bits else "Reasons")
        nodes["inspection_id"] = node_id("InspectionId")
        if part_id:
            nodes["part_id"] = node_id("PartId")
        if lot:
            nodes["lot"] = node_id("Lot")
        if status:
            nodes.update(busy=node_id("Busy"), error=node_id("Error"), heartbeat=node_id("Heartbeat"))
        return nodes

    async def __aenter__(self) -> ServerPlc:
        await self.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_server()

    def _types(self) -> list[tuple[str, str]]:
        return [("Trigger", "UInt32" if self.trigger == "counter" else "Boolean"), *((n, t) for n, t, _ in VARIABLES)]

    async def start_server(self) -> None:
        logging.getLogger("asyncua").setLevel(logging.ERROR)
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("simulated PLC")
        await server.set_application_uri(SERVER_URI)
        if self.security is not None:
            self.security.make_certificate(self.host)
            await server.load_certificate(str(self.security.certificate))
            await server.load_private_key(self.security.private_key)
            server.set_security_policy(
                [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], permission_ruleset=SimpleRoleRuleset()
            )
            server.set_identity_tokens([ua.UserNameIdentityToken])
            server.iserver.set_user_manager(_OneUser(self.security.user, self.security.password))
        self._idx = idx = await server.register_namespace(NAMESPACE_URI)
        folder = await server.nodes.objects.add_folder(ua.NodeId("PLC", idx), ua.QualifiedName("PLC", idx))  # type: ignore[arg-type]
        for name, ua_type in self._types():
            initial = self.values.get(name, "" if ua_type == "String" else False if ua_type == "Boolean" else 0)
            var = await folder.add_variable(
                ua.NodeId(f"PLC/{name}", idx),  # type: ignore[arg-type]
                ua.QualifiedName(name, idx),
                ua.Variant(initial, ua.VariantType[ua_type]),
            )
            await var.set_writable()
        await server.start()
        self.server = server
        self._fresh = True  # the subscription's first notification is the value it found, not a write
        sub = await server.create_subscription(1, self)
        await sub.subscribe_data_change(server.get_node(self._nid("ResultSequence")), queuesize=64)

    async def stop_server(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        for name, _ in self._types():
            self.values[name] = await server.get_node(self._nid(name)).read_value()
        await server.stop()

    def _nid(self, name: str) -> ua.NodeId:
        return ua.NodeId(f"PLC/{name}", self._idx)  # type: ignore[arg-type]

    async def read(self, name: str) -> Any:
        assert self.server is not None
        return await self.server.get_node(self._nid(name)).read_value()

    async def write(self, name: str, value: Any) -> None:
        assert self.server is not None
        ua_type = dict(self._types())[name]
        await self.server.write_attribute_value(
            self._nid(name), ua.DataValue(ua.Variant(value, ua.VariantType[ua_type]))
        )

    # asyncua's subscription handler (server side): the gateway wrote ResultSequence, the last of its Write.
    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        fresh, self._fresh = self._fresh, False
        if val and not fresh:
            asyncio.get_running_loop().create_task(self._record(int(val), time.monotonic()))

    async def _record(self, sequence: int, at: float) -> None:
        reasons_raw = await self.read("ReasonBits" if self.reasons_as_bits else "Reasons")
        reasons = reasons_of(int(reasons_raw)) if self.reasons_as_bits else contract.split_reasons(reasons_raw or "")
        got = _Got(sequence, await self.read("InspectionId"), int(await self.read("Verdict")), sorted(reasons), at)
        async with self._changed:
            self.results.append(got)
            self._changed.notify_all()

    async def set_lot(self, lot: str) -> None:
        """Write the Lot variable, as a PLC program does at a lot change: every part triggered while it stands is
        of that lot."""
        await self.write("Lot", lot)

    async def trigger_part(self, sequence: int | None = None, part_id: str = "") -> int:
        """Trigger one part: the part id, then (bool) the sequence and the rising edge, or (counter) the count."""
        sequence = self.next_sequence if sequence is None else sequence
        self.next_sequence = sequence + 1
        await self.write("PartId", part_id)
        self._sent[sequence] = _Sent(sequence, time.monotonic())
        if self.trigger == "bool":
            await self.write("Trigger", False)
            await self.write("Sequence", sequence)
            await self.write("Trigger", True)
        else:
            await self.write("Trigger", sequence)
        return sequence

    async def result(self, sequence: int, timeout_s: float = 10.0) -> _Got:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: any(r.sequence == sequence for r in self.results)), timeout_s
            )
            return next(r for r in self.results if r.sequence == sequence)

    async def run(
        self,
        parts: int,
        rate_hz: float,
        *,
        on_result: ResultCallback | None = None,
        result_timeout_s: float = 30.0,
        part_id: str = "",
    ) -> PlcRunReport:
        """Trigger `parts` at `rate_hz` (bool mode: one at a time, the trigger falls with its result); every one
        must get exactly one result within `result_timeout_s`."""
        ticks = paced(parts, rate_hz)
        first = self.next_sequence
        sequences = list(range(first, first + parts))
        seen = since = len(self.results)
        async for i in ticks:
            await self.trigger_part(sequences[i], part_id or f"part-{sequences[i]}")
            if self.trigger == "bool":
                with contextlib.suppress(TimeoutError):
                    await self.result(sequences[i], result_timeout_s)
                await self.write("Trigger", False)
            seen = await self._deliver(seen, on_result)
        wanted = set(sequences)
        await wait_until(self._changed, lambda: {r.sequence for r in self.results} >= wanted, result_timeout_s)
        await self._deliver(seen, on_result)
        return self.report(sequences, since)

    async def _deliver(self, seen: int, on_result: ResultCallback | None) -> int:
        """Hand the results from index `seen` on to `on_result`; the index it has handed up to."""
        fresh = self.results[seen:]
        if on_result is not None:
            for got in fresh:
                outcome = on_result(self._plc_result(got))
                if asyncio.iscoroutine(outcome):
                    await outcome
        return seen + len(fresh)

    def _plc_result(self, got: _Got) -> PlcResult:
        sent = self._sent.get(got.sequence)
        latency = got.at - sent.at if sent is not None else math.nan
        return PlcResult(got.sequence, got.inspection_id, verdict_name(got.verdict), got.reasons, latency)

    def report(self, sequences: list[int], since: int = 0) -> PlcRunReport:
        """Every sequence got exactly one result (among the results from index `since` on), and nothing else came."""
        received = [(got.sequence, self._plc_result(got)) for got in self.results[since:]]
        return tally([(s, s) for s in sequences], received, set(sequences))

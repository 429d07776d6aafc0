"""OPC UA client mode: the gateway connects to the PLC's own OPC UA server (S7-1500, TwinCAT and most modern PLCs run
one), watches a trigger node there and writes each result into nodes of the PLC's.

The station's `nodes` map names the PLC's variables by NodeId string (`ns=3;s="DB_Vision"."Trigger"`,
`nsu=urn:beckhoff:plc;s=MAIN.iTrigger`, `i=1001`):

- `trigger` alone: a sequence counter; every change to a new non-zero value is a trigger with that sequence;
- `trigger` + `sequence`: a Boolean whose rising edge is a trigger, with the sequence read from `sequence`;
- `part_id` (optional): read with the trigger;
- results: `verdict` and `result_sequence` (written last, in the same Write), optional `reasons`, `inspection_id`;
- status (optional): `busy`, `error` (lineguard.contracts.registers.Error codes), `heartbeat` (counts up).

The runtime (asyncua) is opcua_client_link.py, imported only when endpoints are opened."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lineguard.config.seams import PlcSettings
from lineguard.services.gateway.protocols.opcua_security import Mode, Policy, Profile

if TYPE_CHECKING:  # every service validates the config, and so imports this module: keep it light
    from lineguard.services.gateway.endpoint import PlcEndpoint, TriggerHandler

KEY = "opcua-client"

# OPC UA Part 6 5.3.1.10's NodeId string: an optional ns=<index> or nsu=<uri>, then i= / s= / g= / b=.
_NODE_ID = re.compile(
    r"(?:ns=\d{1,5};|nsu=[^;]+;)?(?:i=\d{1,10}|s=.+|g=[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{12}|b=[A-Za-z0-9+/]+={0,2})",
    re.DOTALL,
)
# The nodes the gateway writes, in the order of one result's Write: result_sequence last, the PLC's "complete".
RESULT_NODES: tuple[str, ...] = ("inspection_id", "verdict", "reasons", "result_sequence")
STATUS_NODES: tuple[str, ...] = ("busy", "error", "heartbeat")
READ_NODES: tuple[str, ...] = ("trigger", "sequence", "part_id", "lot")


class NodeMap(BaseModel):
    """Where the station's fields are in the PLC's address space: NodeId strings."""

    model_config = ConfigDict(extra="forbid")

    trigger: str = Field(description="a sequence counter (alone), or a Boolean trigger (with `sequence`)")
    sequence: str | None = Field(None, description="the part's sequence, read when the Boolean `trigger` rises")
    part_id: str | None = Field(None, description="a String read with the trigger (carrier, tray position)")
    lot: str | None = Field(
        None, description="a String the PLC sets at a lot change, read with every trigger: the parts' production lot"
    )
    verdict: str = Field(description="an integer: 1 PASS, 2 FAIL, 3 REWORK, 4 ERROR (0 while none)")
    result_sequence: str = Field(description="an integer: the trigger's sequence this result answers; written last")
    reasons: str | None = Field(
        None, description="a String (reason codes, comma separated) or an integer (the reason bits of docs/modbus.md)"
    )
    inspection_id: str | None = Field(None, description="a String: the inspection id (UUIDv7)")
    busy: str | None = Field(None, description="a Boolean: parts of this station in flight")
    error: str | None = Field(None, description="an integer: 0, or why the station is in Error or refused a trigger")
    heartbeat: str | None = Field(None, description="an integer the gateway counts up every heartbeat_ms")

    @field_validator(*READ_NODES, *RESULT_NODES, *STATUS_NODES, mode="after")
    @classmethod
    def _is_node_id(cls, value: str | None) -> str | None:
        if value is not None and not _NODE_ID.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an OPC UA NodeId string (ns=<index>;s=<name>, nsu=<uri>;s=<name>, ns=<i>;i=<n>, "
                "g=<guid> or b=<base64>)"
            )
        return value

    @model_validator(mode="after")
    def _distinct(self) -> NodeMap:
        seen: dict[str, str] = {}
        for name in (*READ_NODES, *RESULT_NODES, *STATUS_NODES):
            value = getattr(self, name)
            if value is None:
                continue
            if value in seen:
                raise ValueError(f"{name} and {seen[value]} name the same node {value}: each field needs its own")
            seen[value] = name
        return self

    def named(self) -> dict[str, str]:
        """Every configured field and its NodeId string."""
        return {n: v for n in (*READ_NODES, *RESULT_NODES, *STATUS_NODES) if (v := getattr(self, n)) is not None}


class OpcuaClientSecurity(BaseModel):
    """How the gateway logs in to the PLC's server: the channel's policy and mode, its own certificate, the PLC's
    certificate in a trust list, and a user. The production profile refuses policy None and anonymous logins."""

    model_config = ConfigDict(extra="forbid")

    profile: Profile = Field(
        "production", description="production: a secure policy and a user login; demo: may use None and anonymous"
    )
    policy: Policy = Field("Basic256Sha256", description="the security policy of the channel to the PLC")
    mode: Mode = Field("SignAndEncrypt", description="Sign or SignAndEncrypt")
    pki_dir: Path = Field(
        Path("pki/opcua-client"),
        description="own/ (the gateway's client certificate, made on first start: the PLC must trust it), trusted/ "
        "(the PLC servers' certificates or their CAs), crl/, rejected/ (refused PLC certificates, to inspect)",
    )
    certificate: Path | None = Field(None, description="the gateway's client certificate (DER or PEM), not own/'s")
    private_key: Path | None = Field(None, description="its private key (PEM), with `certificate`")
    certificate_days: int = Field(5 * 365, ge=1, description="how long a generated client certificate is valid")
    application_uri: str | None = Field(
        None, description="the gateway's ApplicationUri; default urn:<host name>:lineguard:gateway"
    )
    user: str | None = Field(None, description="the user name to log in with (none: anonymous, demo only)")
    password_file: Path | None = Field(None, description="a file holding the user's password (a mounted secret)")
    password_env: str | None = Field(None, description="an environment variable holding the user's password")

    @model_validator(mode="after")
    def _rules(self) -> OpcuaClientSecurity:
        if self.profile == "production":
            if self.policy == "None":
                raise ValueError("the production profile refuses security policy None (profile: demo to allow it)")
            if self.user is None:
                raise ValueError("the production profile logs in as a user: give `user` and its password source")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give the client's certificate and private_key together, or neither (one is made)")
        if (self.password_file is not None) and (self.password_env is not None):
            raise ValueError("give one of password_file and password_env")
        if self.user is not None and self.password_file is None and self.password_env is None:
            raise ValueError(f"user {self.user!r} needs a password_file or password_env (never the password itself)")
        return self

    def password(self) -> str | None:
        """The user's password, read now (when the gateway connects: the other services validate without it)."""
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"OPC UA client user {self.user!r}: cannot read password_file: {exc}") from None
        elif self.password_env is not None:
            import os

            text = os.environ.get(self.password_env, "")
        else:
            return None
        if not text:
            raise ValueError(f"OPC UA client user {self.user!r}: its password is empty or unset")
        return text


class Settings(PlcSettings):
    protocol: Literal["opcua-client"] = "opcua-client"
    endpoint: str = Field(
        pattern=r"^opc\.tcp://", description="the PLC's OPC UA server, opc.tcp://<host>:<port>[/path]"
    )
    nodes: NodeMap
    security: OpcuaClientSecurity = Field(default_factory=OpcuaClientSecurity)
    publishing_interval_ms: int = Field(
        10, ge=0, le=10_000, description="the subscription's publishing interval for the trigger (and its sampling)"
    )
    heartbeat_ms: int = Field(1000, ge=10, le=60_000, description="how often the `heartbeat` node counts up")
    timeout_ms: int = Field(2000, ge=10, le=60_000, description="how long one request (or connecting) may take")
    watchdog_ms: int = Field(1000, ge=100, le=60_000, description="how often the connection is checked alive")
    reconnect_ms: int = Field(200, ge=10, le=60_000, description="the first wait before connecting again")
    reconnect_max_ms: int = Field(5000, ge=10, le=600_000, description="the wait doubles up to this")


def open_endpoints(stations: Sequence[tuple[str, Settings]], on_trigger: TriggerHandler) -> list[PlcEndpoint]:
    """One connection per station (each its own trigger and result nodes, perhaps on one PLC)."""
    from lineguard.services.gateway.protocols.opcua_client_link import OpcuaClientEndpoint
    from lineguard.services.gateway.protocols.opcua_server import quiet_asyncua

    quiet_asyncua()
    return [OpcuaClientEndpoint(station_id, settings, on_trigger) for station_id, settings in stations]

"""The OPC UA server's security, on asyncua: its identity, certificates and trust list, who logs in and what each
role may do. `secure(server, security, endpoint)` applies it all to a server between init() and start().

What the settings mean is opcua_security.py. Three of asyncua's defaults are replaced here, each a hole:
- its PermissiveUserManager gives the user name `admin` admin rights with any password: lineguard's UserManager
  knows only the configured users and never hands out asyncua's Admin role;
- its SimpleRoleRuleset lets every user write and call anything: AccessRules allows reading to every role, method
  calls by the method's required role (METHOD_ROLES), and no writes or address-space changes to anybody;
- a channel opened with SecurityPolicy None falls through to a policy without any permission checks even where no
  None endpoint is offered: where None is not offered, such a channel gets DISCOVERY_ONLY (GetEndpoints and
  FindServers, which clients need to find the secure endpoints, and nothing in a session).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import ipaddress
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import structlog
from asyncua import Server, ua
from asyncua.common.utils import Buffer, ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import PermissionRuleset, User, UserRole
from asyncua.crypto.security_policies import SecurityPolicyFactory, SecurityPolicyNone
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server import user_managers
from asyncua.ua.ua_binary import struct_from_binary
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from lineguard.services.gateway.protocols.opcua_client import OpcuaClientSecurity
from lineguard.services.gateway.protocols.opcua_security import (
    ROLES,
    OpcuaSecurity,
    OpcuaUser,
    Role,
    hash_password,
    verify_password,
)

log = structlog.get_logger("lineguard.gateway")

PRODUCT_NAME = "lineguard gateway"
MANUFACTURER_NAME = "lineguard"
PRODUCT_URI = "urn:lineguard:product:gateway"

# The role a method needs, by its BrowseName (the same on every station and instance). A method not named here
# needs the engineer role: a new method is closed until someone decides who may call it.
METHOD_ROLES: dict[str, Role] = {
    # lineguard's simple profile
    "Trigger": "operator",
    "SetLot": "operator",  # the lot of the parts it triggers: a PLC's, as Trigger
    "GetResult": "viewer",  # reads a result the PLC missed: no more than reading its variables
    # OPC 40100: running jobs and reading results
    "StartSingleJob": "operator",
    "StartContinuous": "operator",
    "Stop": "operator",
    "Abort": "operator",
    "Reset": "operator",
    "Halt": "operator",
    "SelectModeAutomatic": "operator",
    "SimulationMode": "operator",  # the PLC's self-test: golden parts, results IsSimulated (docs/drift.md)
    "GetResultById": "operator",
    "GetResultComponentsById": "operator",
    "GetResultListFiltered": "operator",
    "ReleaseResultHandle": "operator",
    # OPC 40100: selecting among the recipes there are (a PLC switches product so)
    "GetRecipeListFiltered": "operator",
    "PrepareRecipe": "operator",
    "UnprepareRecipe": "operator",
    "GetRecipeById": "operator",
    "ReleaseRecipeHandle": "operator",
    "PrepareProduct": "operator",
    "UnprepareProduct": "operator",
    # OPC 40100: changing the recipes
    "AddRecipe": "engineer",
    "RemoveRecipe": "engineer",
    "LinkProduct": "engineer",
    "UnlinkProduct": "engineer",
    # Part 9 / Part 5 methods a generic client calls to read events and subscriptions
    "ConditionRefresh": "viewer",
    "ConditionRefresh2": "viewer",
    "GetMonitoredItems": "viewer",
}


def _ids(*names: str) -> frozenset[ua.NodeId]:
    return frozenset(ua.NodeId(getattr(ua.ObjectIds, f"{n}Request_Encoding_DefaultBinary")) for n in names)


# Everything a session may do that changes nothing: browse, read, subscribe.
VIEW_REQUESTS = _ids(
    "CloseSession",
    "Cancel",
    "Read",
    "Browse",
    "BrowseNext",
    "TranslateBrowsePathsToNodeIds",
    "RegisterNodes",
    "UnregisterNodes",
    "HistoryRead",
    "CreateSubscription",
    "ModifySubscription",
    "DeleteSubscriptions",
    "TransferSubscriptions",
    "SetPublishingMode",
    "Publish",
    "Republish",
    "CreateMonitoredItems",
    "ModifyMonitoredItems",
    "DeleteMonitoredItems",
    "SetMonitoringMode",
    "SetTriggering",
)
# NodeId is annotated with the wire types (ua.Int32), int subclasses nobody constructs; asyncua passes ints.
CALL_REQUEST = ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)  # type: ignore[arg-type]


@dataclass
class LineguardUser(User):
    """asyncua's User (always its plain User role, never Admin) with lineguard's role."""

    lineguard_role: Role = "viewer"


def _may(user: Any, needed: Role) -> bool:
    return isinstance(user, LineguardUser) and ROLES.index(user.lineguard_role) >= ROLES.index(needed)


class AccessRules(PermissionRuleset):
    """asyncua asks this before every request of a session: may this user do it?"""

    def __init__(self, server: Server):
        self._aspace = server.iserver.aspace

    def check_validity(self, user: Any, action_type_id: ua.NodeId, body: Buffer) -> bool:
        if not isinstance(user, LineguardUser):  # a session not (yet) activated by our user manager
            return False
        if action_type_id in VIEW_REQUESTS:
            return True
        if action_type_id == CALL_REQUEST:
            return self._may_call(user, body)
        # Write, HistoryUpdate, AddNodes, DeleteNodes, Add/DeleteReferences, RegisterServer: nobody. A client
        # changes the line only through methods; results and the address space are the gateway's alone.
        log.warning(
            "OPC UA request refused", user=user.name, role=user.lineguard_role, request=_request_name(action_type_id)
        )
        return False

    def _may_call(self, user: LineguardUser, body: Buffer) -> bool:
        try:
            params = struct_from_binary(ua.CallParameters, body.copy())
        except Exception:  # noqa: BLE001 - an undecodable call is refused; asyncua answers it with the fault
            return False
        for call in params.MethodsToCall:
            method = self._method_name(call.MethodId)
            needed = METHOD_ROLES.get(method, "engineer")
            if not _may(user, needed):
                log.warning(
                    "OPC UA method call refused", user=user.name, role=user.lineguard_role, method=method, needs=needed
                )
                return False
        return True

    def _method_name(self, node_id: ua.NodeId) -> str:
        value = self._aspace.read_attribute_value(node_id, ua.AttributeIds.BrowseName).Value
        name = value.Value if value is not None else None
        return name.Name if isinstance(name, ua.QualifiedName) else str(node_id)


class _DiscoveryOnly(PermissionRuleset):
    """A channel without security where the server offers none: discovery only, no session may do anything."""

    def check_validity(self, user: Any, action_type_id: ua.NodeId, body: Buffer) -> bool:
        log.warning("OPC UA request on a channel without security refused", request=_request_name(action_type_id))
        return False


def _request_name(type_id: ua.NodeId) -> str:
    name = ua.ObjectIdNames.get(type_id.Identifier, str(type_id)) if isinstance(type_id.Identifier, int) else ""
    return name.removesuffix("_Encoding_DefaultBinary") or str(type_id)


class _LoginBudget:
    """Password checks cost ~27 ms of the server's event loop each: a token bucket caps how many a client that
    guesses can make us do (a good login gives its token back, so a PLC reconnecting is never held up)."""

    def __init__(self, capacity: float = 10, per_s: float = 2):
        self.capacity, self.per_s = capacity, per_s
        self.tokens, self.at = capacity, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_s)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def give_back(self) -> None:
        self.tokens = min(self.capacity, self.tokens + 1)


def _fingerprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest()


@dataclass
class _Login:
    name: str
    role: Role
    password_hash: str | None


class UserManager(user_managers.UserManager):
    """asyncua's user manager: the configured users only, by password or by user certificate."""

    def __init__(
        self,
        users: list[OpcuaUser],
        *,
        anonymous: Role | None,
        insecure_channels: bool,
        trusted: ClientCertificates | None,
    ):
        self._by_name = {u.name: _Login(u.name, u.role, u.load_password_hash()) for u in users}
        self._by_certificate: dict[bytes, _Login] = {}
        for u in users:
            if u.certificate is not None:
                self._by_certificate[_load_der(u.certificate, f"user {u.name!r}'s certificate")] = self._by_name[u.name]
        self._anonymous = anonymous
        self._insecure_channels = insecure_channels
        self._trusted = trusted
        self._budget = _LoginBudget()
        self._dummy_hash = hash_password("lineguard: no such user")

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        # asyncua passes the secure channel's client certificate with a user name, the user certificate with an
        # X.509 token, and the channel's (if any) with an anonymous token.
        # A channel without security passes b"" (or None) for its certificate.
        certificate = bytes(certificate) if certificate else None
        if username is not None:
            return self._password_login(username, password or "", certificate)
        if certificate is not None and (login := self._by_certificate.get(certificate)) is not None:
            return self._user(login.name, login.role, "certificate")
        if self._anonymous is None:
            log.warning("OPC UA login refused: anonymous access is off, or the user certificate is unknown")
            return None
        return self._user("anonymous", self._anonymous, "anonymous")

    def _password_login(self, username: str, password: str, channel_certificate: bytes | None) -> User | None:
        if channel_certificate is None and not self._insecure_channels:
            log.warning("OPC UA login refused: a channel without security", user=username)
            return None
        # asyncua checks the certificate a client names in CreateSession; this is the one it opened its channel with,
        # which may differ.
        trusted = self._trusted
        if channel_certificate is not None and trusted is not None and not trusted.is_trusted_der(channel_certificate):
            log.warning("OPC UA login refused: the channel's client certificate is not trusted", user=username)
            return None
        if not self._budget.take():
            log.warning("OPC UA login refused unchecked: too many password checks in a short time", user=username)
            return None
        login = self._by_name.get(username)
        stored = login.password_hash if login is not None else None
        # An unknown name costs the same hash as a known one, so timing does not tell which names exist.
        ok = verify_password(stored or self._dummy_hash, password) and login is not None and stored is not None
        if not ok or login is None:
            log.warning("OPC UA login refused: unknown user or wrong password", user=username)
            return None
        self._budget.give_back()
        return self._user(login.name, login.role, "password")

    @staticmethod
    def _user(name: str, role: Role, how: str) -> LineguardUser:
        log.info("OPC UA login", user=name, role=role, by=how)
        return LineguardUser(role=UserRole.User, name=name, lineguard_role=role)


def _load_der(path: Path, what: str) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from None
    try:
        cert = x509.load_pem_x509_certificate(raw) if b"-----BEGIN" in raw else x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise ValueError(f"{what} {path} is not an X.509 certificate (DER or PEM): {exc}") from None
    return cert.public_bytes(serialization.Encoding.DER)


class ClientCertificates:
    """The trust list: which client application certificates may open a session. A certificate is trusted when
    it (self-signed) or the CA that issued it is in trusted/; refused ones are copied to rejected/ for an engineer
    to inspect and move. trusted/ and crl/ are read again at every session, so trusting needs no restart."""

    def __init__(self, pki_dir: Path, *, peer: str = "client"):
        # peer "server": the gateway is the client (opcua_client_link.py) and checks the PLC server's certificate.
        self.peer = peer
        self.trusted_dir, self.crl_dir, self.rejected_dir = pki_dir / "trusted", pki_dir / "crl", pki_dir / "rejected"
        for folder in (self.trusted_dir, self.crl_dir, self.rejected_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._store = TrustStore([self.trusted_dir], [self.crl_dir])
        self._trusted_der: set[bytes] = set()
        # Time range, ApplicationUri in the certificate, key usage and client-auth use: the trust check is ours.
        self._checks = CertificateValidator(
            CertificateValidatorOptions.EXT_VALIDATION
            | (CertificateValidatorOptions.PEER_SERVER if peer == "server" else CertificateValidatorOptions.PEER_CLIENT)
        )

    async def load(self) -> None:
        if any(self.trusted_dir.iterdir()):  # asyncua's TrustStore refuses to load from an empty folder
            await self._store.load()
        trusted: set[bytes] = set()
        for path in sorted(self.trusted_dir.glob("*")):
            if path.suffix.lower() in (".der", ".pem", ".crt", ".cer"):
                try:
                    trusted.add(_load_der(path, "trusted certificate"))
                except ValueError as exc:
                    log.warning("OPC UA trust list: a file is skipped", reason=str(exc))
        self._trusted_der = trusted

    def is_trusted_der(self, der: bytes) -> bool:
        if der in self._trusted_der:
            return True
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return False
        return bool(self._trusted_der) and self._store.is_trusted(cert) and not self._store.is_revoked(cert)

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        """asyncua's certificate validator, at CreateSession: raises a ServiceError with the reason."""
        await self.load()
        der = cert.public_bytes(serialization.Encoding.DER)
        subject = cert.subject.rfc4514_string()
        try:
            await self._checks.validate(cert, app)
        except ServiceError as exc:
            log.warning(f"OPC UA {self.peer} certificate refused", subject=subject, reason=ua.StatusCode(exc.code).name)  # type: ignore[arg-type]
            raise
        if self._store.is_revoked(cert):
            log.warning(f"OPC UA {self.peer} certificate refused: revoked", subject=subject)
            raise ServiceError(ua.StatusCodes.BadCertificateRevoked)
        if not self.is_trusted_der(der):
            rejected = self.rejected_dir / f"{_fingerprint(der)}.der"
            rejected.write_bytes(der)
            log.warning(
                f"OPC UA {self.peer} certificate refused: not trusted; to trust it, move it to the trust list",
                subject=subject,
                application_uri=app.ApplicationUri,
                certificate=str(rejected),
                trusted_dir=str(self.trusted_dir),
            )
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)


def application_uri(security: OpcuaSecurity | OpcuaClientSecurity) -> str:
    return security.application_uri or f"urn:{socket.gethostname()}:lineguard:gateway"


def _host_names(endpoint: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(socket.gethostname())]
    host = urlparse(endpoint).hostname
    if host and host not in ("0.0.0.0", "::"):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def server_certificate(
    security: OpcuaSecurity | OpcuaClientSecurity, app_uri: str, endpoint: str, *, role: str = "server"
) -> tuple[Path, Path]:
    """The server's (or, role "client", the gateway's client) certificate and key: the given ones, or own/'s, made
    when missing or no longer fitting (expired, another ApplicationUri). A new one must be trusted again by every
    peer."""
    if security.certificate is not None and security.private_key is not None:
        return security.certificate, security.private_key
    own = security.pki_dir / "own"
    own.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = own / "cert.der", own / "private_key.pem"
    reason = "none yet"
    if cert_path.is_file() and key_path.is_file():
        cert = x509.load_der_x509_certificate(cert_path.read_bytes())
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
        if cert.not_valid_after_utc <= datetime.now(UTC):
            reason = f"it expired on {cert.not_valid_after_utc:%Y-%m-%d}"
        elif app_uri not in uris:
            reason = f"it names {uris}, not {app_uri}"
        else:
            return cert_path, key_path
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        PRODUCT_NAME,
        {"organizationName": MANUFACTURER_NAME},
        [x509.UniformResourceIdentifier(app_uri), *_host_names(endpoint)],
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=security.certificate_days,
    )
    key_path.touch(mode=0o600)
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    log.warning(
        f"OPC UA {role} certificate made: {'clients' if role == 'server' else 'the PLC'} must trust it",
        because=reason,
        certificate=str(cert_path),
        thumbprint=_fingerprint(cert.public_bytes(serialization.Encoding.DER)),
        valid_until=f"{cert.not_valid_before_utc + timedelta(days=security.certificate_days):%Y-%m-%d}",
    )
    return cert_path, key_path


def _policy_types(security: OpcuaSecurity) -> list[ua.SecurityPolicyType]:
    out: list[ua.SecurityPolicyType] = []
    for policy in security.offered_policies():
        if policy == "None":
            out.append(ua.SecurityPolicyType.NoSecurity)
            continue
        asyncua_name = policy.replace("_", "")  # Aes128_Sha256_RsaOaep -> Aes128Sha256RsaOaep
        out.extend(ua.SecurityPolicyType[f"{asyncua_name}_{mode}"] for mode in security.modes)
    return out


def set_identity(server: Server) -> None:
    """Before init(), which writes these into the server's BuildInfo."""
    server.set_server_name(PRODUCT_NAME)
    server.product_uri = PRODUCT_URI
    server.manufacturer_name = MANUFACTURER_NAME
    server.application_type = ua.ApplicationType.Server


async def write_identity(server: Server, security: OpcuaSecurity) -> None:
    """After init(): the ApplicationUri (NamespaceArray[1], ServerArray) and the BuildInfo with lineguard's version."""
    await server.set_application_uri(application_uri(security))
    version = importlib.metadata.version("lineguard")
    built = datetime.fromtimestamp(Path(__file__).stat().st_mtime, tz=UTC)
    await server.set_build_info(PRODUCT_URI, MANUFACTURER_NAME, PRODUCT_NAME, version, version, built)


async def secure(server: Server, security: OpcuaSecurity, endpoint: str) -> None:
    """Policies, certificates, the trust list, users and roles; between init() and start()."""
    anonymous = security.anonymous()
    insecure = "None" in security.offered_policies()
    trusted: ClientCertificates | None = None
    if security.needs_certificate():
        cert_path, key_path = server_certificate(security, application_uri(security), endpoint)
        await server.load_certificate(cert_path)
        await server.load_private_key(key_path)
        trusted = ClientCertificates(security.pki_dir)
        await trusted.load()
        server.set_certificate_validator(trusted)
    if not security.users and anonymous is None:
        raise ValueError(
            f"the OPC UA server at {endpoint} has no users and no anonymous access, so nobody could use it: add "
            "plc.security.users (docs/opcua.md), or use profile: demo"
        )
    server.iserver.set_user_manager(
        UserManager(security.users, anonymous=anonymous, insecure_channels=insecure, trusted=trusted)
    )
    server.allow_remote_admin(False)
    tokens: list[type] = [ua.UserNameIdentityToken, ua.X509IdentityToken]
    if anonymous is not None:
        tokens.append(ua.AnonymousIdentityToken)
    server.set_identity_tokens(tokens)
    # Annotated as asyncua's SimpleRoleRuleset, used as any PermissionRuleset (check_validity only).
    server.set_security_policy(_policy_types(security), permission_ruleset=AccessRules(server))  # type: ignore[arg-type]
    if not insecure:
        # asyncua serves a None channel from a policy without permission checks when no None endpoint exists:
        # give such a channel a policy of its own that allows discovery and nothing else (see the module doc).
        server._policies.append(
            SecurityPolicyFactory(SecurityPolicyNone, ua.MessageSecurityMode.None_, permission_ruleset=_DiscoveryOnly())
        )
    details = {
        "profile": security.profile,
        "policies": security.offered_policies(),
        "modes": security.modes if security.needs_certificate() else [],
        "anonymous": anonymous or "refused",
        "users": [f"{u.name} ({u.role})" for u in security.users],
        "trust_list": str(trusted.trusted_dir) if trusted is not None else None,
    }
    if security.profile == "demo":
        log.warning(
            "OPC UA demo profile: not for a production line"
            + (": security policy None is offered" if insecure else "")
            + (f", anonymous clients may act as {anonymous}" if anonymous else ""),
            endpoint=endpoint,
            **details,
        )
    else:
        log.info("OPC UA security", endpoint=endpoint, **details)

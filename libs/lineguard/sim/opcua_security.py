"""A PLC's OPC UA client security, as a real controller has it: its application certificate (self-signed) and how it
sets up a client (a security policy and mode, a user login). The simulated PLC (`lineguard plc simulate`), the tests
and the benchmarks use it."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import cert_gen, security_policies
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}


@dataclass(frozen=True)
class ClientCertificate:
    """A client application's certificate (DER) and key (PEM), and the ApplicationUri the certificate names."""

    certificate: Path
    private_key: Path
    application_uri: str

    def trust(self, pki_dir: Path) -> None:
        """Put it in a gateway's trust list (what an engineer does by moving it to trusted/)."""
        (pki_dir / "trusted").mkdir(parents=True, exist_ok=True)
        shutil.copy(self.certificate, pki_dir / "trusted" / self.certificate.name)


def make_certificate(folder: Path, name: str, *, client_auth: bool = True) -> ClientCertificate:
    """A self-signed application (or, with a user's name, user) certificate, as UaExpert or a PLC makes one."""
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"urn:{socket.gethostname()}:lineguard-test:{name}"
    key = cert_gen.generate_private_key()
    uses = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [ExtendedKeyUsageOID.SERVER_AUTH]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {}, [x509.UniformResourceIdentifier(uri), x509.DNSName(socket.gethostname())], extended=uses
    )
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return ClientCertificate(cert_path, key_path, uri)


def client_setup(
    app: ClientCertificate,
    *,
    policy: str = "Basic256Sha256",
    mode: str = "SignAndEncrypt",
    user: str | None = None,
    password: str | None = None,
    user_certificate: ClientCertificate | None = None,
) -> Callable[[Client], Awaitable[None]]:
    """What to do to a fresh asyncua Client before connect() (SimulatedPlc's `setup`)."""

    async def setup(client: Client) -> None:
        client.application_uri = app.application_uri
        await client.set_security(POLICIES[policy], str(app.certificate), str(app.private_key), mode=MODES[mode])
        if user is not None:
            client.set_user(user)
            client.set_password(password or "")
        if user_certificate is not None:
            await client.load_client_certificate(str(user_certificate.certificate))
            await client.load_private_key(user_certificate.private_key)

    return setup

"""The bus's credentials: an nkey per identity, and the TLS certificates, made and laid out for a deployment.

Why nkeys and not passwords: the server holds only public keys (its config is no secret), a client proves its
identity by signing the server's nonce (nothing reusable travels, TLS or not), and a seed is one 58-character
file per identity, which the container of that one service mounts. `write_credentials(out, line, hosts)` (what
`lineguard nats creds` runs) lays out:

    <out>/clients/<identity>.nk    each identity's seed (0600): hand each service only its own
    <out>/clients/ca.pem           the CA the clients verify the server with (nats.tls.ca_file)
    <out>/server/authorization.conf  the users and their permissions (lineguard.bus.permissions), for nats-server
    <out>/server/server-cert.pem, server-key.pem   the server's TLS certificate (for `hosts`) and key (0600)
    <out>/ca/ca-cert.pem, ca-key.pem  the CA; keep its key off the line, it is needed only to issue a new cert

Seeds and certificates already there are kept (a rerun only rewrites authorization.conf, e.g. after the table
changed); `rotate` names the identities (or "tls") to make anew."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nkeys

from lineguard.bus.permissions import IDENTITIES, server_authorization

SEED_SUFFIX = ".nk"
CERT_DAYS = 825  # the longest a TLS client (Apple's, browsers') accepts for a server certificate


class CredentialError(RuntimeError):
    pass


def new_seed() -> bytes:
    """A fresh user nkey seed (`SU...`)."""
    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)


def public_key(seed: bytes) -> str:
    """The seed's public key (`U...`), what the server's config names."""
    pair = nkeys.from_seed(bytearray(seed.strip()))
    try:
        return pair.public_key.decode()
    finally:
        pair.wipe()


def seed_file(folder: str | Path, identity: str) -> Path:
    return Path(folder) / f"{identity}{SEED_SUFFIX}"


def read_public_key(path: Path) -> str:
    try:
        return public_key(path.read_bytes())
    except FileNotFoundError:
        raise CredentialError(f"NATS credential {path} not found (make it with `lineguard nats creds`)") from None
    except nkeys.NkeysError as exc:
        raise CredentialError(f"NATS credential {path} is not an nkey seed ({exc})") from None


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (0600 from the start, never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def clients(self) -> Path:
        return self.root / "clients"

    @property
    def ca_file(self) -> Path:
        return self.clients / "ca.pem"

    @property
    def authorization(self) -> Path:
        return self.root / "server" / "authorization.conf"

    @property
    def server_cert(self) -> Path:
        return self.root / "server" / "server-cert.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server" / "server-key.pem"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca-cert.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca-key.pem"


def write_credentials(
    out: str | Path, line: str, hosts: Iterable[str] = ("localhost", "127.0.0.1"), rotate: Iterable[str] = ()
) -> Layout:
    """Make (or keep) every identity's seed and the TLS material, and write the server's authorization."""
    layout = Layout(Path(out))
    renew = set(rotate)
    unknown = renew - {*IDENTITIES, "tls"}
    if unknown:
        raise CredentialError(
            f"cannot rotate {', '.join(sorted(unknown))}: not an identity ({', '.join(IDENTITIES)}) or tls"
        )
    keys = {}
    for identity in IDENTITIES:
        path = seed_file(layout.clients, identity)
        if identity in renew or not path.exists():
            write_private(path, new_seed())
        keys[identity] = read_public_key(path)
    layout.authorization.parent.mkdir(parents=True, exist_ok=True)
    layout.authorization.write_text(server_authorization(keys, line))
    if "tls" in renew or not (layout.server_cert.exists() and layout.ca_cert.exists()):
        write_tls(layout, list(hosts))
    return layout


def write_tls(layout: Layout, hosts: list[str]) -> None:
    """A CA (kept unless missing) and a server certificate for `hosts` (names or IP addresses) issued by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise CredentialError("the server certificate needs at least one host name or address")
    now = datetime.datetime.now(datetime.UTC)
    pem = serialization.Encoding.PEM

    def key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    if layout.ca_cert.exists() and layout.ca_key.exists():
        ca_cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
        loaded = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lineguard NATS CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=10 * 365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        write_private(layout.ca_key, key_bytes(ca_key))
        layout.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_private(layout.server_key, key_bytes(server_key))
    layout.server_cert.write_bytes(server_cert.public_bytes(pem))
    layout.ca_file.parent.mkdir(parents=True, exist_ok=True)
    layout.ca_file.write_bytes(ca_cert.public_bytes(pem))


def server_config(
    layout: Layout,
    config_dir: Path,
    *,
    max_payload: int,
    store_dir: str | None = None,
    monitor: str | None = None,
    max_file_store: str | None = None,
) -> str:
    """A nats-server config, to be written in `config_dir`, for a secured line: TLS on every client connection,
    the users of `layout`'s authorization.conf (included, so a rerun of `lineguard nats creds` takes effect on a
    reload), JetStream. `monitor`: "host:port" of the monitoring endpoint (default none: it is off).
    `max_file_store`: JetStream's storage ceiling ("1TB"; default: the server's, 75% of the free disk)."""
    # nats-server reads an include relative to the config's folder, and a certificate's path as given.
    include = os.path.relpath(layout.authorization.resolve(), config_dir.resolve())
    lines = [
        "# lineguard: a secured line (docs/security.md, NATS). Clients must use TLS and sign in with their nkey.",
        f"max_payload: {max_payload}",
        jetstream_block(store_dir=store_dir, max_file_store=max_file_store),
        "tls {",
        f'  cert_file: "{layout.server_cert.resolve()}"',
        f'  key_file: "{layout.server_key.resolve()}"',
        "  timeout: 2",
        "}",
        f'include "{include}"',
    ]
    if monitor:
        lines.append(f'http: "{monitor}"')
    return "\n".join(lines) + "\n"


def jetstream_block(*, store_dir: str | None = None, max_file_store: str | None = None) -> str:
    options = ([f'store_dir: "{store_dir}"'] if store_dir else []) + (
        [f"max_file_store: {max_file_store}"] if max_file_store else []
    )
    return f"jetstream {{ {', '.join(options)} }}" if options else "jetstream {}"

"""Who may do what on the gateway's OPC UA server: the security settings (profile, policies, certificates, users and
their roles) and how a password is checked.

Light on purpose (pydantic and the standard library only): every service validates the line's configuration and so
imports it. The asyncua side (the user manager, the permission rules, the certificates) is opcua_access.py.

Passwords are never in the YAML: a user names a file or an environment variable holding the password (a Docker or
Kubernetes secret), or gives its scrypt hash (`hash_password`, or `python -m
lineguard.services.gateway.protocols.opcua_security`). The gateway keeps only the hash.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["viewer", "operator", "engineer"]
# Least privilege, in order: each role may do what the ones before it may.
ROLES: tuple[Role, ...] = ("viewer", "operator", "engineer")
Policy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
SECURE_POLICIES: tuple[Policy, ...] = ("Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
Mode = Literal["Sign", "SignAndEncrypt"]
Profile = Literal["production", "demo"]

# scrypt as Django's ScryptPasswordHasher has it (N 2^14, r 8, p 1: 16 MiB, about 27 ms on a 2-core box). A login
# is checked on the server's event loop (asyncua's user manager is synchronous), so it must stay short.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_PREFIX = "scrypt"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=length)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`: what a user's `password_hash` holds."""
    if not password:
        raise ValueError("a password may not be empty")
    salt = salt if salt is not None else os.urandom(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, 32)
    return f"{_PREFIX}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _PREFIX:
        raise ValueError("a password hash is scrypt$<n>$<r>$<p>$<salt>$<hash> (made by hash_password)")
    try:
        n, r, p = (int(v) for v in parts[1:4])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError as exc:
        raise ValueError(f"a password hash's numbers or base64 are malformed: {exc}") from None
    if n < 2**14 or n & (n - 1) or r < 8 or p < 1 or len(salt) < 16 or len(digest) < 32:
        raise ValueError("a password hash needs n >= 2^14 (a power of two), r >= 8, p >= 1, 16 salt and 32 hash bytes")
    return n, r, p, salt, digest


def verify_password(stored: str, password: str) -> bool:
    n, r, p, salt, digest = _parse_hash(stored)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)


class _Strict(BaseModel):
    # A typo in a field name is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class OpcuaUser(_Strict):
    """One login: a user name with a password (from one source), and/or an X.509 user certificate."""

    name: str = Field(min_length=1, description="the user name a client logs in with (and the name in the logs)")
    role: Role = Field(description="viewer: read and subscribe; operator: also start jobs; engineer: also recipes")
    password_file: Path | None = Field(None, description="a file holding the password (a mounted secret)")
    password_env: str | None = Field(None, description="an environment variable holding the password")
    password_hash: str | None = Field(None, description="the password's scrypt hash (hash_password)")
    certificate: Path | None = Field(None, description="an X.509 user certificate (DER or PEM) that logs in as him")

    @field_validator("password_hash")
    @classmethod
    def _hash_is_scrypt(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_hash(value)
        return value

    @model_validator(mode="after")
    def _one_password_source(self) -> OpcuaUser:
        sources = [s for s in ("password_file", "password_env", "password_hash") if getattr(self, s) is not None]
        if len(sources) > 1:
            raise ValueError(
                f"user {self.name!r}: give one of password_file, password_env, password_hash, not {sources}"
            )
        if not sources and self.certificate is None:
            raise ValueError(
                f"user {self.name!r} needs a password (password_file, password_env or password_hash) or a certificate"
            )
        return self

    def password_source(self) -> str | None:
        """Where the password comes from, for messages (never the password)."""
        if self.password_file is not None:
            return f"password_file {self.password_file}"
        if self.password_env is not None:
            return f"password_env {self.password_env}"
        return "password_hash" if self.password_hash is not None else None

    def load_password_hash(self) -> str | None:
        """The hash to check logins against, reading the file or the variable now (when the gateway starts: the
        other services validate this configuration without the secret)."""
        if self.password_hash is not None:
            return self.password_hash
        if self.password_file is not None:
            try:
                password = self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"OPC UA user {self.name!r}: cannot read password_file: {exc}") from None
        elif self.password_env is not None:
            password = os.environ.get(self.password_env, "")
            if not password:
                raise ValueError(f"OPC UA user {self.name!r}: the environment variable {self.password_env} is unset")
        else:
            return None
        if not password:
            raise ValueError(f"OPC UA user {self.name!r}: the password from {self.password_source()} is empty")
        return hash_password(password)


class OpcuaSecurity(_Strict):
    """The security of one OPC UA server. Stations that share an endpoint must give the same."""

    profile: Profile = Field(
        "production",
        description="production: secure policies only, no anonymous access; demo (lineguard demo): may offer None "
        "and anonymous access, and says so when it starts",
    )
    policies: list[Policy] | None = Field(
        None,
        min_length=1,
        description="the security policies offered; default: production Basic256Sha256, Aes128_Sha256_RsaOaep and "
        "Aes256_Sha256_RsaPss; demo None",
    )
    modes: list[Mode] = Field(
        ["Sign", "SignAndEncrypt"], min_length=1, description="the message security modes offered with each policy"
    )
    anonymous_role: Role | Literal["none"] | None = Field(
        None, description="what an anonymous client may do; production: none (only); demo default: operator"
    )
    pki_dir: Path = Field(
        Path("pki/opcua"),
        description="own/ (the server's certificate, made on first start), trusted/ (client certificates or their "
        "CAs), crl/ (revocation lists), rejected/ (refused client certificates, to inspect and move to trusted/)",
    )
    certificate: Path | None = Field(None, description="the server's certificate (DER or PEM), instead of own/'s")
    private_key: Path | None = Field(None, description="its private key (PEM), with `certificate`")
    certificate_days: int = Field(5 * 365, ge=1, description="how long a generated server certificate is valid")
    application_uri: str | None = Field(
        None, description="the server's ApplicationUri; default urn:<host name>:lineguard:gateway"
    )
    users: list[OpcuaUser] = Field(default_factory=list, description="who may log in, and their roles")

    @model_validator(mode="after")
    def _profile_rules(self) -> OpcuaSecurity:
        if self.profile == "production":
            if self.policies is not None and "None" in self.policies:
                raise ValueError("the production profile offers no None policy (profile: demo to allow it)")
            if self.anonymous_role not in (None, "none"):
                raise ValueError("the production profile allows no anonymous access (profile: demo to allow it)")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give the server's certificate and private_key together, or neither (one is made)")
        names = [u.name for u in self.users]
        if len(names) != len(set(names)):
            raise ValueError(f"user names must be unique: {sorted(n for n in set(names) if names.count(n) > 1)}")
        return self

    def offered_policies(self) -> list[Policy]:
        if self.policies is not None:
            return list(dict.fromkeys(self.policies))
        return ["None"] if self.profile == "demo" else list(SECURE_POLICIES)

    def anonymous(self) -> Role | None:
        """The role an anonymous client gets, or None where anonymous access is refused."""
        if self.anonymous_role is None:
            return "operator" if self.profile == "demo" else None
        return None if self.anonymous_role == "none" else self.anonymous_role

    def needs_certificate(self) -> bool:
        return any(p != "None" for p in self.offered_policies())


def main() -> None:
    """Print the scrypt hash of a password read from the terminal (or stdin), for a user's `password_hash`."""
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    print(hash_password(password))


if __name__ == "__main__":
    main()

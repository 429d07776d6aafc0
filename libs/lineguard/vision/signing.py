"""Model cards signed with ed25519: who vouches for a model, checked before it loads.

The signature covers the card's canonical form (sorted-keys JSON of the card as its file holds it, without
`signature`), and the card holds the model file's sha256, so one signature covers the weights, the class names
and how the model is fed: a permuted class list or a swapped file under the old signature is refused.

`signed_by` is the key id: the first 16 hex digits of the sha256 of the raw public key. A trusted set is a folder
of public keys (`*.pub`, PEM); the package ships the project's in lineguard/vision/models/trusted."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lineguard.vision.errors import ModelLoadError

SIGNATURE = "signature"
SIGNED_BY = "signed_by"


def packaged_trusted_keys_dir() -> Path:
    """The public keys shipped with the package (the project's release key)."""
    return Path(str(files("lineguard.vision.models") / "trusted"))


def canonical_bytes(card: Mapping[str, Any]) -> bytes:
    """What a signature covers: the card without its signature, keys sorted, no whitespace."""
    body = {k: v for k, v in card.items() if k != SIGNATURE}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def generate_keypair(out: Path) -> tuple[Path, Path]:
    """`out` (private key, PEM, 0600) and `out`.pub (public key, PEM); refuses to overwrite."""
    out = Path(out)
    public_path = out.with_name(out.name + ".pub")
    for path in (out, public_path):
        if path.exists():
            raise FileExistsError(f"{path} exists: a signing key is not overwritten")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start: the key is never readable by others, not even for a moment.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return out, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an ed25519 private key")
    return key


def sign_card(card: Mapping[str, Any], private: Ed25519PrivateKey) -> dict[str, Any]:
    """The card with `signed_by` and `signature` set (any old signature replaced)."""
    signed = {k: v for k, v in card.items() if k not in (SIGNATURE, SIGNED_BY)}
    signed[SIGNED_BY] = key_id(private.public_key())
    signed[SIGNATURE] = base64.b64encode(private.sign(canonical_bytes(signed))).decode()
    return signed


def sign_card_file(path: Path, private: Ed25519PrivateKey) -> Path:
    """Sign the card file `path` in place (written as ModelCard writes a card)."""
    path = Path(path)
    path.write_text(json.dumps(sign_card(json.loads(path.read_text()), private), indent=2) + "\n")
    return path


@dataclass(frozen=True)
class Trust:
    """Which signers a loader accepts; allow_unsigned lets a card without a signature load (a signed card is still
    checked)."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    allow_unsigned: bool = False
    source: str = ""

    @classmethod
    def from_dir(cls, folder: Path | None, *, allow_unsigned: bool = False) -> Trust:
        folder = Path(folder) if folder is not None else packaged_trusted_keys_dir()
        keys: dict[str, Ed25519PublicKey] = {}
        for path in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
            public = serialization.load_pem_public_key(path.read_bytes())
            if isinstance(public, Ed25519PublicKey):
                keys[key_id(public)] = public
        return cls(keys, allow_unsigned, str(folder))


def verify_card(model: Path, card: Mapping[str, Any] | None, trust: Trust) -> str | None:
    """The signer's key id, or None for an unsigned card that trust allows; ModelLoadError says why not."""
    if card is None or SIGNATURE not in card:
        if trust.allow_unsigned:
            return None
        what = "has no model card" if card is None else "its model card is not signed"
        raise ModelLoadError(
            model, f"{what}: only models signed by a trusted key load (model.allow_unsigned lets an unsigned one)"
        )
    signer = card.get(SIGNED_BY)
    public = trust.keys.get(signer) if isinstance(signer, str) else None
    if public is None:
        raise ModelLoadError(
            model, f"signed by key {signer!r}, which is not one of the trusted keys in {trust.source or '(none)'}"
        )
    try:
        public.verify(base64.b64decode(str(card[SIGNATURE]), validate=True), canonical_bytes(card))
    except (InvalidSignature, ValueError):
        raise ModelLoadError(
            model, f"the model card's signature does not verify with key {signer}: the card was changed after signing"
        ) from None
    return str(signer)

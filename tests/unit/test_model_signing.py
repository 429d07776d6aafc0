"""Models you can trust (lineguard.vision.signing, lineguard.vision.model.load_model): the file must be the one its
card's sha256 names, and the card must be signed by a trusted key, or the model does not load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lineguard.config import ModelSettings
from lineguard.services.inference.detect import load_configured_model
from lineguard.testing.models import TEST_KEY, trust_dir, write_signed_card
from lineguard.vision.model import ModelLoadError, load_model, packaged_model_path
from lineguard.vision.signing import Trust, canonical_bytes, generate_keypair, load_private_key, sign_card


def shipped_card() -> dict[str, Any]:
    return json.loads(packaged_model_path().with_suffix(".json").read_text())


def copy_packaged(tmp_path: Path, card: dict[str, Any]) -> Path:
    path = tmp_path / "m.onnx"
    shutil.copyfile(packaged_model_path(), path)
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


@pytest.fixture
def trust(tmp_path: Path) -> Trust:
    return Trust.from_dir(trust_dir(tmp_path / "trusted"))


def test_the_packaged_model_is_signed_by_the_shipped_key_and_loads() -> None:
    card = shipped_card()
    assert card["signed_by"] in Trust.from_dir(None).keys
    detector = load_configured_model(ModelSettings(trusted_keys_dir=None))
    assert detector.card.signed_by == card["signed_by"]
    detector.close()


def test_a_tampered_model_is_refused_naming_both_hashes(tmp_path: Path, trust: Trust) -> None:
    path = copy_packaged(tmp_path, shipped_card())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError) as err:
        load_model(path, trust=trust)
    message = str(err.value)
    assert message.startswith(f"model {path}: sha256 is ") and shipped_card()["onnx_sha256"] in message
    assert "the file is not the one the card describes" in message
    # Without a trusted set (a library caller) the sha256 is still checked.
    with pytest.raises(ModelLoadError, match="sha256 is"):
        load_model(path)


def test_permuted_class_names_under_the_old_signature_are_refused(tmp_path: Path, trust: Trust) -> None:
    card = shipped_card()
    card["classes"] = card["classes"][1:] + card["classes"][:1]
    path = copy_packaged(tmp_path, card)
    with pytest.raises(ModelLoadError, match=r"signature does not verify with key .*changed after signing"):
        load_model(path, trust=trust)


def test_a_model_signed_by_an_untrusted_key_is_refused(tmp_path: Path, trust: Trust) -> None:
    path = copy_packaged(tmp_path, sign_card(shipped_card(), Ed25519PrivateKey.generate()))
    with pytest.raises(ModelLoadError, match=r"signed by key '[0-9a-f]{16}', which is not one of the trusted keys"):
        load_model(path, trust=trust)


def test_an_unsigned_model_is_refused_unless_allowed(tmp_path: Path) -> None:
    card = {k: v for k, v in shipped_card().items() if k not in ("signature", "signed_by")}
    path = copy_packaged(tmp_path, card)
    settings = ModelSettings(path=str(path), trusted_keys_dir=str(trust_dir(tmp_path / "trusted")))
    with pytest.raises(ModelLoadError, match="its model card is not signed: only models signed by a trusted key"):
        load_configured_model(settings)
    detector = load_configured_model(settings.model_copy(update={"allow_unsigned": True}))
    assert detector.card.signature is None
    detector.close()
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelLoadError, match="has no model card"):
        load_configured_model(settings)


def test_a_signed_card_must_name_the_files_sha256(tmp_path: Path, trust: Trust) -> None:
    card = {k: v for k, v in shipped_card().items() if k != "onnx_sha256"}
    path = copy_packaged(tmp_path, sign_card(card, TEST_KEY))
    with pytest.raises(ModelLoadError, match="its signed card gives no onnx_sha256"):
        load_model(path, trust=trust)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_signs_what_verifies(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "keys" / "release")
    assert private.stat().st_mode & 0o777 == 0o600 and public.name == "release.pub"
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path / "keys" / "release")
    path = copy_packaged(tmp_path, {})
    write_signed_card(path, shipped_card())  # any card: re-signed below with the new key
    card = sign_card(json.loads(path.with_suffix(".json").read_text()), load_private_key(private))
    path.with_suffix(".json").write_text(json.dumps(card))
    load_model(path, trust=Trust.from_dir(public.parent)).close()
    # The canonical form is independent of key order and whitespace.
    assert canonical_bytes(dict(reversed(card.items()))) == canonical_bytes(card)


def test_lineguard_model_keygen_and_sign_make_a_model_the_service_trusts(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lineguard.cli import app

    runner = CliRunner()
    made = runner.invoke(app, ["model", "keygen", str(tmp_path / "keys" / "release")])
    assert made.exit_code == 0, made.output
    card = {k: v for k, v in shipped_card().items() if k not in ("signature", "signed_by")}
    path = copy_packaged(tmp_path, card)
    signed = runner.invoke(app, ["model", "sign", str(path), "--key", str(tmp_path / "keys" / "release")])
    assert signed.exit_code == 0, signed.output
    settings = ModelSettings(path=str(path), trusted_keys_dir=str(tmp_path / "keys"))
    load_configured_model(settings).close()
    # A file that is not the card's is not signed.
    path.write_bytes(path.read_bytes() + b"\0")
    refused = runner.invoke(app, ["model", "sign", str(path), "--key", str(tmp_path / "keys" / "release")])
    assert refused.exit_code == 1 and "the file's sha256 is" in refused.output

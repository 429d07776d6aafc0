"""The OPC UA security settings and password hashes (services/gateway/protocols/opcua_security.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from lineguard.config import ConfigError, parse_config
from lineguard.services.gateway.protocols.opcua_security import (
    OpcuaSecurity,
    OpcuaUser,
    hash_password,
    verify_password,
)


def test_a_hash_verifies_its_password_only() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password(stored, "s3cret")
    assert not verify_password(stored, "s3cret ")
    assert hash_password("s3cret") != stored  # salted


@pytest.mark.parametrize(
    "bad", ["s3cret", "bcrypt$1$2$3$4$5", "scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44, "scrypt$x$8$1$a$b"]
)
def test_a_malformed_or_weak_hash_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="password hash"):
        OpcuaUser(name="op", role="operator", password_hash=bad)


def test_the_default_is_the_production_profile() -> None:
    security = OpcuaSecurity()
    assert security.profile == "production"
    assert security.offered_policies() == ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
    assert security.anonymous() is None and security.needs_certificate()


def test_the_demo_profile_offers_none_and_anonymous_operators() -> None:
    demo = OpcuaSecurity(profile="demo")
    assert demo.offered_policies() == ["None"] and demo.anonymous() == "operator" and not demo.needs_certificate()
    assert OpcuaSecurity(profile="demo", anonymous_role="none").anonymous() is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"policies": ["None", "Basic256Sha256"]}, "offers no None policy"),
        ({"anonymous_role": "viewer"}, "allows no anonymous access"),
        ({"certificate": "server.der"}, "together"),
        ({"users": [{"name": "a", "role": "viewer", "password_env": "X"}] * 2}, "unique"),
    ],
)
def test_production_refuses_what_is_not_secure(settings: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OpcuaSecurity(**settings)


def test_a_user_has_one_password_source_and_never_a_plain_password() -> None:
    with pytest.raises(ValidationError, match="give one of"):
        OpcuaUser(name="op", role="operator", password_env="A", password_file=Path("b"))
    with pytest.raises(ValidationError, match="needs a password"):
        OpcuaUser(name="op", role="operator")
    with pytest.raises(ValidationError, match="Extra inputs"):
        OpcuaUser.model_validate({"name": "op", "role": "operator", "password": "plain"})


def test_passwords_are_read_when_the_gateway_starts_and_kept_as_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("from-a-file\n")
    by_file = OpcuaUser(name="a", role="engineer", password_file=tmp_path / "pw").load_password_hash()
    assert by_file is not None and verify_password(by_file, "from-a-file")
    monkeypatch.setenv("LG_TEST_PW", "from-env")
    by_env = OpcuaUser(name="b", role="operator", password_env="LG_TEST_PW").load_password_hash()
    assert by_env is not None and verify_password(by_env, "from-env")
    monkeypatch.delenv("LG_TEST_PW")
    with pytest.raises(ValueError, match="LG_TEST_PW is unset"):
        OpcuaUser(name="b", role="operator", password_env="LG_TEST_PW").load_password_hash()
    with pytest.raises(ValueError, match="cannot read password_file"):
        OpcuaUser(name="c", role="operator", password_file=tmp_path / "missing").load_password_hash()


def test_the_line_config_names_the_field_of_a_bad_security_setting(line_config_dict) -> None:
    raw = line_config_dict()
    raw["stations"][0]["plc"] = {"protocol": "opcua", "security": {"profile": "production", "policies": ["None"]}}
    with pytest.raises(ConfigError, match=r"stations\[0\]\.plc\.security: .*offers no None policy"):
        parse_config(yaml.safe_dump(raw), "line.yaml")

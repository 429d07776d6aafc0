"""The committed contracts: generated code is current, subjects and ids are well formed."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

from lineguard import contracts
from lineguard.contracts import heartbeat_subject, kind_subjects, msg_id, new_inspection_id, subject

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "libs" / "lineguard" / "v1"


def test_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    protos = sorted((ROOT / "proto").glob("lineguard/v1/*.proto"))
    assert protos, "no .proto files found"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            *map(str, protos),
        ],
        check=True,
    )
    fresh = tmp_path / "lineguard" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    committed = sorted(p.name for p in GENERATED.iterdir() if p.suffix in (".py", ".pyi") and p.name != "__init__.py")
    assert names == committed, "generated files differ from the committed set: regenerate (see docs/contracts.md)"
    _match, mismatch, errors = filecmp.cmpfiles(fresh, GENERATED, names, shallow=False)
    assert not mismatch and not errors, f"stale generated code: {mismatch + errors}; regenerate (docs/contracts.md)"


def test_inspection_ids_are_uuid7_and_time_ordered() -> None:
    ids = [new_inspection_id() for _ in range(200)]
    assert all(i[14] == "7" for i in ids), "version nibble must be 7"
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_subjects_and_message_ids() -> None:
    assert subject("frame", "l1", "s1") == "lg.frame.l1.s1"
    assert msg_id("abc", "inference") == "abc:inference"
    with pytest.raises(ValueError, match="unknown message kind"):
        subject("frames", "l1", "s1")
    with pytest.raises(ValueError, match="cannot be part of a NATS subject"):
        subject("frame", "l1.x", "s1")
    assert contracts.verdict_name(2) == "FAIL"


def test_heartbeat_subject_is_a_subject_like_any_other() -> None:
    assert heartbeat_subject("l1", "inference") == "lg.heartbeat.l1.inference"
    assert kind_subjects("heartbeat") == "lg.heartbeat.>"
    with pytest.raises(ValueError, match="cannot be part of a NATS subject"):
        heartbeat_subject("l1", "infer.ence")


def test_the_40100_drift_warning_names_the_register_plcs_error_code() -> None:
    from lineguard.contracts import machine_vision
    from lineguard.contracts.registers import Error

    assert machine_vision.WARNING_ERROR_CODE == Error.DRIFT_WARNING

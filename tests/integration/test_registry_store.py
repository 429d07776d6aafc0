"""The model registry on a real nats-server: push, list, promote, fetch, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.hashing import file_sha256
from lineguard.natsserver import EmbeddedNats
from lineguard.registry import (
    MODELS_BUCKET,
    PROMOTED_BUCKET,
    ModelRegistry,
    RegistryError,
    connect_registry,
)
from lineguard.testing.models import MODEL_ID, model_version


async def test_push_list_promote_fetch_round_trip(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    v1 = model_version(tmp_path, "1.0.0")
    v2 = model_version(tmp_path, "2.0.0", description="the same weights, pushed again as 2.0.0")
    async with connect_registry(fresh_nats.url) as registry:
        assert await registry.list_models() == []
        assert await registry.promoted("l1") is None
        pushed = await registry.push(v1)
        await registry.push(v2, v2.with_suffix(".json"))

        listed = await registry.list_models()
        assert [(v.model_id, v.version) for v in listed] == [(MODEL_ID, "1.0.0"), (MODEL_ID, "2.0.0")]
        assert listed[0] == pushed
        assert pushed.sha256 == file_sha256(v1) and pushed.size == v1.stat().st_size
        assert pushed.classes == ["open", "short", "mousebite", "spur", "copper", "pin-hole"]
        assert listed[1].card.description == "the same weights, pushed again as 2.0.0"

        first = await registry.promote(MODEL_ID, "1.0.0", "l1", by="tester")
        second = await registry.promote(MODEL_ID, "2.0.0", "l1")
        assert (await registry.promoted("l1")) == second
        assert second.revision > first.revision and second.sha256 == pushed.sha256 and "@" in second.by
        assert [p.version for p in await registry.promotions("l1")] == ["1.0.0", "2.0.0"]
        assert await registry.promoted("l2") is None
        assert (await registry.lines()).keys() == {"l1"}

        fetched = await registry.fetch(MODEL_ID, "2.0.0", tmp_path / "cache")
        assert fetched == tmp_path / "cache" / MODEL_ID / "2.0.0" / f"{MODEL_ID}.onnx"
        assert file_sha256(fetched) == pushed.sha256
        assert json.loads(fetched.with_suffix(".json").read_text())["version"] == "2.0.0"

        # A cached copy that was tampered with is downloaded again, not trusted.
        fetched.write_bytes(b"tampered")
        assert file_sha256(await registry.fetch(MODEL_ID, "2.0.0", tmp_path / "cache")) == pushed.sha256

    # Provisioning again (another process, a restart) keeps what is there.
    async with connect_registry(fresh_nats.url) as registry:
        assert [v.version for v in await registry.list_models()] == ["1.0.0", "2.0.0"]
        assert (await registry.promoted("l1")).version == "2.0.0"
        status = await registry.models.status()
        assert status.bucket == MODELS_BUCKET
        assert (await registry.promoted_kv.status()).bucket == PROMOTED_BUCKET


async def test_push_refuses_a_file_its_card_does_not_describe(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    model = model_version(tmp_path, "1.0.0")
    card = json.loads(model.with_suffix(".json").read_text())
    card["onnx_sha256"] = "0" * 64
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(card))
    async with connect_registry(fresh_nats.url) as registry:
        with pytest.raises(RegistryError, match=r"its sha256 is [0-9a-f]{64}, but its card says 0{64}"):
            await registry.push(model, wrong)
        del card["onnx_sha256"]
        with pytest.raises(RegistryError, match="'onnx_sha256' must be the model file's sha256"):
            await registry.push(model, card)
        with pytest.raises(RegistryError, match=r"version '\.\./x' must be letters"):
            await registry.push(model, {**card, "version": "../x", "onnx_sha256": file_sha256(model)})
        lonely = tmp_path / "missing.onnx"
        lonely.write_bytes(model.read_bytes())
        with pytest.raises(RegistryError, match=r"no model card missing\.json beside it"):
            await registry.push(lonely)
        assert await registry.list_models() == []


async def test_a_version_never_changes_but_pushing_it_again_is_harmless(
    fresh_nats: EmbeddedNats, tmp_path: Path
) -> None:
    original = model_version(tmp_path / "a", "1.0.0")
    other_file = model_version(tmp_path / "b", "1.0.0", data=b"other weights")
    other_card = model_version(tmp_path / "c", "1.0.0", description="edited afterwards")
    async with connect_registry(fresh_nats.url) as registry:
        first = await registry.push(original)
        assert await registry.push(original) == first  # idempotent: same file, same card
        with pytest.raises(RegistryError, match=r"1\.0\.0 is already in the registry with a different model file"):
            await registry.push(other_file)
        with pytest.raises(RegistryError, match=r"1\.0\.0 is already in the registry with a different card"):
            await registry.push(other_card)
        [only] = await registry.list_models()
        assert only == first
        assert file_sha256(await registry.fetch(MODEL_ID, "1.0.0", tmp_path / "cache")) == file_sha256(original)


async def test_promoting_an_unknown_version_is_refused(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    async with connect_registry(fresh_nats.url) as registry:
        await registry.push(model_version(tmp_path, "1.0.0"))
        await registry.promote(MODEL_ID, "1.0.0", "l1")
        with pytest.raises(RegistryError, match=r"model deeppcb-yolo11n has no version '9\.9' \(pushed: 1\.0\.0\)"):
            await registry.promote(MODEL_ID, "9.9", "l1")
        with pytest.raises(RegistryError, match="no model 'nope' in the registry"):
            await registry.promote("nope", "1.0.0", "l1")
        with pytest.raises(RegistryError, match="no model 'nope'"):
            await registry.fetch("nope", "1.0.0", tmp_path / "cache")
        assert (await registry.promoted("l1")).version == "1.0.0"  # the refusals changed nothing


async def test_processes_provisioning_at_once_share_the_buckets(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    import asyncio

    import nats

    connections = [await nats.connect(fresh_nats.url) for _ in range(3)]
    try:
        registries = await asyncio.gather(*(ModelRegistry.open(nc.jetstream()) for nc in connections))
        await registries[0].push(model_version(tmp_path, "1.0.0"))
        await registries[1].promote(MODEL_ID, "1.0.0", "l1")
        assert [v.version for v in await registries[2].list_models()] == ["1.0.0"]
        assert (await registries[2].promoted("l1")).version == "1.0.0"
    finally:
        for nc in connections:
            await nc.close()


def test_the_cli_pushes_lists_and_promotes(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    runner = CliRunner()
    v1 = model_version(tmp_path, "1.0.0")
    v2 = model_version(tmp_path, "2.0.0")
    nats_url = ["--nats", fresh_nats.url]

    result = runner.invoke(app, ["model", "list", *nats_url])
    assert result.exit_code == 0 and "holds no models yet" in result.output

    result = runner.invoke(app, ["model", "push", str(v1), *nats_url])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{MODEL_ID} 1.0.0: in the registry ({v1.stat().st_size} bytes")
    assert runner.invoke(app, ["model", "push", str(v1), *nats_url]).exit_code == 0  # again: no change
    result = runner.invoke(app, ["model", "push", str(v2), "--card", str(v2.with_suffix(".json")), *nats_url])
    assert result.exit_code == 0, result.output

    result = runner.invoke(app, ["model", "promote", MODEL_ID, "1.0.0", "--line", "l1", *nats_url])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"line l1: {MODEL_ID} 1.0.0 promoted by ")
    result = runner.invoke(app, ["model", "promote", MODEL_ID, "2.0.0", *nats_url])  # default line: l1
    assert result.exit_code == 0 and f"(was {MODEL_ID} 1.0.0)" in result.output

    result = runner.invoke(app, ["model", "promote", MODEL_ID, "3.0.0", *nats_url])
    assert result.exit_code == 1
    assert "error: model deeppcb-yolo11n has no version '3.0.0' (pushed: 1.0.0, 2.0.0)" in result.output

    result = runner.invoke(app, ["model", "list", *nats_url])
    assert result.exit_code == 0
    header, first, second = result.output.splitlines()
    assert header.split() == ["MODEL", "VERSION", "SIZE", "SHA256", "CLASSES", "PUSHED", "PROMOTED", "ON"]
    assert first.split()[:2] == [MODEL_ID, "1.0.0"] and first.split()[-1] == "-"
    assert second.split()[:2] == [MODEL_ID, "2.0.0"] and second.split()[-1] == "l1"

    listed = json.loads(runner.invoke(app, ["model", "list", "--json", *nats_url]).output)
    assert [m["version"] for m in listed["models"]] == ["1.0.0", "2.0.0"]
    assert listed["promoted"]["l1"]["version"] == "2.0.0"


def test_the_cli_reads_the_nats_url_and_line_from_the_config(
    fresh_nats: EmbeddedNats, tmp_path: Path, line_config_dict
) -> None:
    from lineguard.sim.lineconfig import write_config

    path = write_config(tmp_path / "line.yaml", line_config_dict(nats_url=fresh_nats.url, line="l7"))
    runner = CliRunner()
    model = model_version(tmp_path, "1.0.0")
    assert runner.invoke(app, ["model", "push", str(model), "--config", str(path)]).exit_code == 0
    result = runner.invoke(app, ["model", "promote", MODEL_ID, "1.0.0", "--config", str(path)])
    assert result.exit_code == 0 and result.output.startswith(f"line l7: {MODEL_ID} 1.0.0")


def test_the_cli_names_an_unreachable_server() -> None:
    from lineguard.natsserver import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["model", "list", "--nats", url])
    assert result.exit_code == 1
    assert f"error: cannot reach NATS at {url}" in result.output

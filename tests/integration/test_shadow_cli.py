"""`lineguard model shadow start / stop / report`, `model rollback` and `model promote --require-shadow` against a
real nats-server and a real (SQLite) MES database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.natsserver import EmbeddedNats
from lineguard.registry import connect_registry
from lineguard.services.results.db import upgrade_database
from lineguard.services.results.records import decision_rows
from lineguard.services.results.schema import ShadowVerdict
from lineguard.services.results.store import write_rows
from lineguard.testing.models import MODEL_ID, model_version, tiny_model
from lineguard.testing.records import sample_decision
from lineguard.v1.decision_pb2 import Verdict

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_rollback_shadow_start_and_stop_from_the_shell(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    async def setup() -> None:
        async with connect_registry(fresh_nats.url) as registry:
            await registry.push(model_version(tmp_path / "a", "1.0.0"))
            await registry.push(model_version(tmp_path / "b", "2.0.0"))
            await registry.push(tiny_model(tmp_path / "two.onnx", batch=1, model_id="two-classes"))
            await registry.promote(MODEL_ID, "1.0.0", "l1")
            await registry.promote(MODEL_ID, "2.0.0", "l1")

    asyncio.run(setup())
    url = ["--nats", fresh_nats.url]
    refused = cli("model", "shadow", "start", "two-classes", "1", *url)
    started = cli("model", "shadow", "start", MODEL_ID, "1.0.0", "--share", "0.5", *url)
    stopped = cli("model", "shadow", "stop", *url)
    rolled = cli("model", "rollback", *url)

    async def promoted() -> str:
        async with connect_registry(fresh_nats.url) as registry:
            return str(await registry.promoted("l1"))

    assert refused.exit_code == 1 and "SHADOW_CLASSES_DIFFER" in refused.output
    assert started.exit_code == 0 and f"{MODEL_ID} 1.0.0 in shadow on 50% of parts" in started.output
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    assert rolled.exit_code == 0 and f"rolled back to {MODEL_ID} 1.0.0 (was {MODEL_ID} 2.0.0)" in rolled.output
    assert asyncio.run(promoted()) == f"{MODEL_ID} 1.0.0"


def test_the_report_and_the_promotion_gate_read_the_mes_database(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'mes.db'}"
    upgrade_database(db)
    engine = sa.create_engine(db)
    ids = []
    for seq, candidate in ((1, "FAIL"), (2, "PASS")):  # the second: a new escape
        decision = sample_decision(seq, verdict=Verdict.VERDICT_FAIL)
        write_rows(engine, decision_rows(decision))
        ids.append(decision.part.inspection_id)
        with engine.begin() as conn:
            conn.execute(
                sa.insert(ShadowVerdict).values(
                    inspection_id=decision.part.inspection_id,
                    model_id=MODEL_ID,
                    model_version="2.0.0",
                    verdict=candidate,
                    reason_codes="",
                    detections=[],
                    decided_at=datetime.now(UTC),
                )
            )
    engine.dispose()

    async def push() -> None:
        async with connect_registry(fresh_nats.url) as registry:
            await registry.push(model_version(tmp_path / "b", "2.0.0"))

    asyncio.run(push())
    report = cli("model", "shadow", "report", "--url", db, "--out", str(tmp_path / "report.md"))
    gated = cli("model", "promote", MODEL_ID, "2.0.0", "--nats", fresh_nats.url, "--require-shadow", "2", "--url", db)

    assert report.exit_code == 0, report.output
    assert f"# Shadow report: {MODEL_ID} 2.0.0" in report.output and "agreement 50.0%" in report.output
    assert ids[1] in (tmp_path / "report.md").read_text()
    assert gated.exit_code == 1 and "new escapes" in gated.output and ids[1] in gated.output

"""People's confirmations of verdicts on real SQLite and PostgreSQL databases: the API's POST and GET (roles, who is
the token's name, 404, 422, a database role that may not write), `lineguard confirm`, the inspection row never
changed, and the shadow report counting them (the latest confirmation of a part wins)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from lineguard.config.model import ApiSettings
from lineguard.modelops.shadow_report import read_report
from lineguard.services.results.api.app import create_app
from lineguard.services.results.api.tokens import create_token
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.schema import ShadowVerdict
from lineguard.services.results.store import write_decision
from lineguard.testing.postgres import empty_database
from lineguard.testing.records import sample_decision
from lineguard.v1.decision_pb2 import Verdict

LINEGUARD = str(Path(sys.executable).with_name("lineguard"))


@dataclass
class Api:
    client: TestClient
    engine: Engine
    url: str
    ids: list[str]  # FAIL, PASS, FAIL
    tokens: dict[str, str]

    def post(self, inspection_id: str, token: str | None = "quality", **body: Any) -> Any:
        return self.client.post(f"/v1/inspections/{inspection_id}/confirmations", json=body, headers=self._auth(token))

    def get(self, inspection_id: str, token: str | None = "reader") -> Any:
        return self.client.get(f"/v1/inspections/{inspection_id}/confirmations", headers=self._auth(token))

    def _auth(self, token: str | None) -> dict[str, str]:
        return {} if token is None else {"Authorization": f"Bearer {self.tokens.get(token, token)}"}


def _row(engine: Engine, inspection_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM inspections WHERE inspection_id = :i"), {"i": inspection_id}).one()
    return dict(row._mapping)


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    with empty_database(request.param, tmp_path) as url:
        upgrade_database(url)
        engine = make_engine(url)
        ids = []
        for seq, verdict in enumerate((Verdict.VERDICT_FAIL, Verdict.VERDICT_PASS, Verdict.VERDICT_FAIL), 1):
            decision = sample_decision(seq, verdict=verdict, serial=f"LG-{seq:08d}")
            assert write_decision(engine, decision)
            ids.append(decision.part.inspection_id)
        tokens = {
            role: create_token(engine, role, name)
            for role, name in (("reader", "mes"), ("quality", "Ana Q."), ("admin", "ops"))
        }
        with TestClient(create_app(engine, ApiSettings(rate_per_s=1000, burst=1000))) as client:
            yield Api(client, engine, url, ids, tokens)
        engine.dispose()


def test_a_quality_token_overrules_a_verdict_and_the_inspection_stays_as_decided(api: Api) -> None:
    before = _row(api.engine, api.ids[0])
    kept = api.post(api.ids[0], verdict="PASS", comment="the short is dust on the lens, board re-inspected")
    assert kept.status_code == 201, kept.text
    body = kept.json()
    assert (body["verdict"], body["recorded_verdict"], body["overrules"]) == ("PASS", "FAIL", True)
    assert body["confirmed_by"] == "Ana Q." and body["inspection_id"] == api.ids[0]
    assert abs(datetime.fromisoformat(body["confirmed_at"]) - datetime.now(UTC)).total_seconds() < 60
    confirmed = api.post(api.ids[0], token="admin", verdict="FAIL", comment="")  # the line's own: no why needed
    assert confirmed.status_code == 201 and confirmed.json()["overrules"] is False

    listed = api.get(api.ids[0])
    assert listed.status_code == 200
    assert [(c["verdict"], c["confirmed_by"]) for c in listed.json()] == [("PASS", "Ana Q."), ("FAIL", "ops")]
    assert api.get(api.ids[1]).json() == []
    assert _row(api.engine, api.ids[0]) == before, "a confirmation never changes the record"


def test_who_may_confirm_and_what_is_refused_with_the_reason(api: Api) -> None:
    target = api.ids[1]  # the line passed it
    assert api.post(target, token=None, verdict="PASS").status_code == 401
    refused = api.post(target, token="reader", verdict="PASS")
    assert refused.status_code == 403 and "needs a quality or admin token" in refused.json()["detail"]

    bad = api.post(target, verdict="OK")
    assert bad.status_code == 422
    [problem] = bad.json()["detail"]
    assert problem["loc"] == ["body", "verdict"] and "'PASS', 'REWORK' or 'FAIL'" in problem["msg"]
    assert api.post(target, verdict="ERROR").status_code == 422
    assert api.post(target, comment="no verdict").status_code == 422

    silent = api.post(target, verdict="FAIL", comment="  ")
    assert silent.status_code == 422
    assert silent.json()["detail"] == [
        {
            "loc": ["body", "comment"],
            "msg": "comment: say why when overruling the line's PASS with FAIL",
            "type": "value_error",
        }
    ]
    too_long = api.post(target, verdict="FAIL", comment="x" * 2001)
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["loc"] == ["body", "comment"]

    for call in (
        lambda: api.post("0190a0b0-0000-7000-8000-000000000000", verdict="PASS"),
        lambda: api.get("0190a0b0-0000-7000-8000-000000000000"),
    ):
        missing = call()
        assert missing.status_code == 404 and "no inspection '0190a0b0-0000-7000-8000-000000000000'" in missing.text
    assert api.get(target).json() == [], "nothing refused was kept"
    assert api.client.get("/v1/inspections", headers=api._auth("reader")).status_code == 200, "the API serves on"


def test_a_database_role_that_may_not_write_is_a_503_saying_so_and_reads_go_on(tmp_path: Path) -> None:
    path = tmp_path / "lineguard.db"
    upgrade_database(f"sqlite:///{path}")
    writer = make_engine(f"sqlite:///{path}")
    decision = sample_decision(1)
    write_decision(writer, decision)
    token = create_token(writer, "quality", "qe")
    writer.dispose()
    reader = make_engine(f"sqlite:///file:{path}?mode=ro&uri=true")  # as docs/mes-schema.md opens it for readers
    try:
        client = TestClient(create_app(reader, ApiSettings(rate_per_s=1000, burst=1000)))
        auth = {"Authorization": f"Bearer {token}"}
        route = f"/v1/inspections/{decision.part.inspection_id}/confirmations"
        refused = client.post(route, json={"verdict": "FAIL"}, headers=auth)
        assert refused.status_code == 503
        assert "needs INSERT on verdict_confirmations" in refused.json()["detail"]
        assert "readonly" in refused.json()["detail"]
        assert client.get(route, headers=auth).json() == []
    finally:
        reader.dispose()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINEGUARD, *args], capture_output=True, text=True, timeout=60, check=False)


def test_lineguard_confirm_keeps_a_persons_verdict_and_refuses_bad_ones(api: Api) -> None:
    before = _row(api.engine, api.ids[2])
    done = _cli(
        "confirm", api.ids[2], "--verdict", "rework", "--why", "a spur, reworkable", "--by", "Bo", "--url", api.url
    )
    assert done.returncode == 0, done.stderr
    assert f"{api.ids[2]}: REWORK by Bo" in done.stdout and "overrules the line's FAIL" in done.stdout
    [kept] = api.get(api.ids[2]).json()
    assert (kept["verdict"], kept["confirmed_by"], kept["comment"]) == ("REWORK", "Bo", "a spur, reworkable")

    unknown = _cli("confirm", "nope", "--verdict", "PASS", "--why", "x", "--by", "Bo", "--url", api.url)
    assert unknown.returncode == 1 and "no inspection 'nope'" in unknown.stderr
    bad = _cli("confirm", api.ids[2], "--verdict", "GOOD", "--by", "Bo", "--url", api.url)
    assert bad.returncode == 2 and "GOOD" in bad.stderr
    silent = _cli("confirm", api.ids[2], "--verdict", "PASS", "--by", "Bo", "--url", api.url)
    assert silent.returncode == 2
    # The option the person has to give, not the API's body field (`comment`).
    assert silent.stderr.strip() == "error: --why: say why when overruling the line's FAIL with PASS"
    rambling = _cli("confirm", api.ids[2], "--verdict", "PASS", "--why", "x" * 2001, "--by", "Bo", "--url", api.url)
    assert rambling.returncode == 2 and rambling.stderr.strip() == "error: --why: at most 2000 characters (got 2001)"
    nobody = _cli("confirm", api.ids[2], "--verdict", "PASS", "--why", "dust", "--by", " ", "--url", api.url)
    assert nobody.returncode == 2 and nobody.stderr.strip().startswith("error: --by: who confirms: 1 to ")
    assert len(api.get(api.ids[2]).json()) == 1
    assert _row(api.engine, api.ids[2]) == before


def _candidate_passes(api: Api, inspection_id: str) -> None:
    """The shadow candidate cand v2's verdict on `inspection_id`: PASS."""
    with api.engine.begin() as conn:
        conn.execute(
            sa.insert(ShadowVerdict).values(
                inspection_id=inspection_id,
                model_id="cand",
                model_version="2",
                verdict="PASS",
                reason_codes="",
                detections=[],
                decided_at=datetime.now(UTC),
            )
        )


def test_the_shadow_report_counts_confirmations_and_the_latest_wins(api: Api) -> None:
    # The candidate passes all three parts: id 0 and 2 the line failed (new escapes until a person says good).
    for inspection_id in api.ids:
        _candidate_passes(api, inspection_id)
    assert read_report(api.url).new_escapes == [api.ids[0], api.ids[2]]

    assert api.post(api.ids[0], verdict="FAIL", comment="").status_code == 201
    assert api.post(api.ids[0], token="admin", verdict="PASS", comment="re-inspected: dust").status_code == 201
    assert api.post(api.ids[1], verdict="PASS").status_code == 201
    done = _cli("confirm", api.ids[2], "--verdict", "FAIL", "--by", "Bo", "--url", api.url)
    assert done.returncode == 0, done.stderr

    report = read_report(api.url)
    assert report.confirmed == 3
    assert report.new_escapes == [api.ids[2]], "id 0 was last confirmed good; id 2 confirmed bad"
    # Truth: id 0 good, id 1 good, id 2 bad. The candidate passes all: 1 escape of 1 bad, no false reject.
    assert (report.candidate.bad, report.candidate.escapes, report.candidate.good) == (1, 1, 2)
    assert report.candidate.false_rejects == 0
    # The line failed id 0 (good: a false reject) and id 2 (bad: caught).
    assert (report.live.escapes, report.live.false_rejects) == (0, 1)


def test_the_shadow_reports_json_writes_decided_at_in_utc_with_a_z(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    _candidate_passes(api, api.ids[0])  # the line failed it: a disagreement
    # A PostgreSQL session in the plant's zone hands decided_at back as a +02:00 value; SQLite as text with no zone.
    monkeypatch.setenv("PGTZ", "Europe/Berlin")
    printed = _cli("model", "shadow", "report", "--json", "--url", api.url)
    assert printed.returncode == 0, printed.stderr
    [disagreement] = json.loads(printed.stdout)["disagreements"]
    assert disagreement["decided_at"] == "2026-05-28T20:26:41.179206Z"  # sample_decision(1)'s verdict

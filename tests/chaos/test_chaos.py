"""The chaos harness at CI's scale (lineguard.testing.chaos; full scale: benchmarks/chaos.py, docs/faults.md).

300 numbered parts at 5 parts/s through the six-process line on PostgreSQL while every service is SIGKILLed once and
SIGTERMed once (a supervisor starting each again), results and inference are frozen for 4 s (slow consumers), the
database's connections are cut and it refuses connections for 4 s, and the nats-server is SIGKILLed and started
again. Each test is one invariant of the same run."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.testing.chaos import EVERY_FAULT, Verdict, chaos_run
from lineguard.testing.postgres import OwnCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PARTS, RATE_HZ = 300, 5.0
# A few minutes of parts: JetStream refuses a line's 2 GiB streams on a disk short of space (docs/faults.md).
SMALL_STREAMS = {"nats": {"stream_max_bytes": 256 * 1024 * 1024}}


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Verdict:
    # PostgreSQL of the run's own, so that the pg-kill fault may SIGKILL the server (never the machine's).
    with OwnCluster() as cluster:
        return chaos_run(
            tmp_path_factory.mktemp("chaos") / "line",
            parts=PARTS,
            rate_hz=RATE_HZ,
            cluster=cluster,
            config_overrides=SMALL_STREAMS,
        )


def broken(chaos: Verdict, invariant: str) -> str:
    return f"{chaos.violations.get(invariant)}\nfigures: {chaos.figures}"


def test_every_fault_was_played(chaos: Verdict) -> None:
    played = "\n".join(chaos.figures["faults"])
    for fault in EVERY_FAULT:
        kind, _, name = fault.partition(":")
        expected = {"kill": f"SIGKILL {name}", "term": f"SIGTERM {name}", "slow": f"SIGSTOP {name}"}.get(kind)
        expected = expected or {
            "nats": "nats-server started again",
            "pg-cut": "connections cut",
            "pg-kill": "PostgreSQL started again",
        }.get(kind)
        assert (expected or "PostgreSQL database back") in played, fault
    # Most parts were still accepted and judged: the run exercised the line, not only its outage.
    assert chaos.figures["accepted"] >= PARTS // 3 and chaos.figures["rows"] >= PARTS // 3


def test_no_part_is_passed_without_a_complete_pass_decision(chaos: Verdict) -> None:
    assert "escape" not in chaos.violations, broken(chaos, "escape")
    assert chaos.figures["escapes"] == 0


def test_every_trigger_is_answered_within_its_deadline_and_grace(chaos: Verdict) -> None:
    for invariant in ("late", "unanswered", "hung_call"):
        assert invariant not in chaos.violations, broken(chaos, invariant)


def test_one_result_per_part_at_the_plc_and_one_row_per_part(chaos: Verdict) -> None:
    for invariant in ("duplicate", "missing_row", "untriggered", "plc_columns"):
        assert invariant not in chaos.violations, broken(chaos, invariant)


def test_nothing_is_dead_lettered_without_its_reason(chaos: Verdict) -> None:
    assert "dead_letters" not in chaos.violations, broken(chaos, "dead_letters")


def test_consumption_resumes_within_5_s_of_the_nats_restart(chaos: Verdict) -> None:
    assert "resume" not in chaos.violations, broken(chaos, "resume")
    assert chaos.figures["resumed_after_nats_s"] <= 5.0


def test_no_service_is_left_crash_looping(chaos: Verdict) -> None:
    for invariant in ("crash_loop", "stop"):
        assert invariant not in chaos.violations, broken(chaos, invariant)
    assert chaos.figures["restarts"] == chaos.figures["kills"]


def test_a_plc_that_gives_up_a_frozen_gateways_session_gets_each_result_once(tmp_path: Path) -> None:
    """The gateway frozen (SIGSTOP) for 2.5 s with parts in flight: the PLC's keep-alive probe goes unanswered, so
    it gives that session up and opens another while the old one is still open. The results the gateway hands over
    as it wakes may reach the session given up (which the PLC no longer listens to: counted there they were
    duplicates) or none (lost from the PLC's view: it reads them back with GetResult). Each part gets one result."""
    verdict = chaos_run(
        tmp_path / "line",
        parts=80,
        rate_hz=5.0,
        faults=["slow:gateway@8"],
        hold_s=2.5,
        config_overrides=SMALL_STREAMS,
    )
    assert verdict.figures["plc_reconnects"] >= 1, verdict.figures["faults"]  # the session was given up
    # A frozen gateway answers what fell due meanwhile late: "late" is not judged here, everything else is.
    for invariant in ("escape", "unanswered", "hung_call", "duplicate", "conflict", "missing_row", "plc_columns"):
        assert invariant not in verdict.violations, broken(verdict, invariant)

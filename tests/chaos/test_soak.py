"""The soak at CI's size (lineguard.testing.soak; an hour: benchmarks/soak.py, figures in docs/faults.md): a minute
of parts at 2/s while 100 OPC UA sessions open and close against the gateway's server. Every part one result and
one row, every session opened and closed, and no process's file descriptors, threads or memory growing past what
its pools fill to, from its first quarter to its last."""

from __future__ import annotations

import os

import pytest

from lineguard.localline import SERVICES
from lineguard.testing.soak import Soak, soak_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DURATION_S, RATE_HZ, SESSIONS, WARMUP_S = 60.0, 2.0, 100, 10.0
RSS_GROWTH_MIB = 30.0  # a minute's noise (allocator, caches filling), far below a leak of a session or a part each
# Pools that fill lazily in the first minute: asyncio.to_thread's executor (min(32, CPUs + 4) threads) and a database
# connection each of its threads opens (SQLite: the file, its -wal and -shm). A descriptor or a thread per session or
# per part would be 100 or 120 here.
THREAD_GROWTH = min(32, (os.cpu_count() or 1) + 4)
FD_GROWTH = 3 * THREAD_GROWTH


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> Soak:
    return soak_run(
        tmp_path_factory.mktemp("soak") / "line",
        duration_s=DURATION_S,
        rate_hz=RATE_HZ,
        sessions=SESSIONS,
        sample_s=2.0,
        config_overrides={"nats": {"stream_max_bytes": 256 * 1024 * 1024}},
    )


def test_every_part_one_result_and_one_row_while_sessions_come_and_go(soak: Soak) -> None:
    parts = round(DURATION_S * RATE_HZ)
    assert (soak.results, soak.missing, soak.duplicates) == (parts, 0, 0)
    assert soak.rows == parts and soak.plc_columns_ok, soak.plc_columns
    assert (soak.sessions_opened, soak.sessions_closed) == (SESSIONS, SESSIONS), soak.session_errors[:5]
    assert all(soak.alive.values()) and soak.codes == dict.fromkeys(SERVICES, 0)


def test_no_process_grows_its_descriptors_threads_or_memory(soak: Soak) -> None:
    growth = soak.growth(WARMUP_S)
    assert set(growth) >= {*SERVICES, "nats-server"}
    for name, metrics in growth.items():
        assert metrics["fds"]["growth"] <= FD_GROWTH, (name, metrics)
        assert metrics["threads"]["growth"] <= THREAD_GROWTH, (name, metrics)
        assert metrics["rss_mib"]["growth"] <= RSS_GROWTH_MIB, (name, metrics)

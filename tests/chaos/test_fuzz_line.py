"""Fuzzing messages into a running line (issue 13): random and mutated protobuf messages published on every subject a
service consumes while parts run (lineguard.testing.fuzz, the decoder fuzz test's strategies).

The line is `lineguard demo`'s (six processes, the secured nats-server, SQLite). The PLC runs one round of the
simulator's boards (24 parts, every board once), then a second round of the same boards while the fuzzed messages are
published, each by the identity that produces its kind (what a buggy producer or a stolen producer's key sends).
Only messages the services' own decoder refuses are sent (those it accepts are real messages of a part, handled as
such; the decoder fuzz test covers the split): each must be dead-lettered by every service consuming its kind, with
its reason in that service's log; every service keeps serving (alive, the second round judged, no restart); and the
second round's verdicts are the first round's, part by part."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest

from lineguard.bus import BadMessage, Bus
from lineguard.bus.client import connect_options
from lineguard.bus.permissions import SERVICE_ROLES
from lineguard.config import NatsSettings
from lineguard.contracts import subject
from lineguard.localline import SERVICES, LocalLine
from lineguard.sim.plc import PlcRunReport, SimulatedPlc
from lineguard.testing.chaos import dead_letter_entries, dead_letters_stored
from lineguard.testing.fuzz import CONSUMED, Fuzzed, decoded, decoders, draw_batch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROUND = 24  # the simulator's playlist (24 boards): both rounds see the same boards in the same order
RATE_HZ = 2.0
PER_KIND = 10  # refused messages published per consumed kind
STREAM_MAX_BYTES = 256 * 1024 * 1024  # a short run; JetStream refuses a line's 2 GiB streams on a disk short of space
PRODUCER = {kind: name for name, role in SERVICE_ROLES.items() for kind in role.produces}
CONSUMERS = {kind: [name for name, role in SERVICE_ROLES.items() if kind in role.consumes] for kind in CONSUMED}


@dataclass
class FuzzRun:
    clean: PlcRunReport
    fuzzed: PlcRunReport
    sent: Counter[str] = field(default_factory=Counter)  # refused messages published, by kind
    dead_stored: dict[str, int] = field(default_factory=dict)  # by dead-letter subject
    dead_logged: Counter[tuple[str, str]] = field(default_factory=Counter)  # (service, kind) of each logged one
    empty_reasons: int = 0
    alive_after: dict[str, bool] = field(default_factory=dict)
    pids_before: dict[str, int] = field(default_factory=dict)
    pids_after: dict[str, int] = field(default_factory=dict)
    codes: dict[str, int | None] = field(default_factory=dict)


async def refused_batch(settings: NatsSettings) -> list[Fuzzed]:
    """Up to PER_KIND drawn messages of each kind that the services' decoder refuses, shuffled."""
    bus = await Bus.connect(settings, "decision")  # any identity: the decoders only decode
    try:
        workers = decoders(bus)
        chosen: dict[str, list[Fuzzed]] = {kind: [] for kind in CONSUMED}
        for item in draw_batch(60 * len(CONSUMED)):
            if isinstance(decoded(workers, item), BadMessage) and len(chosen[item.kind]) < PER_KIND:
                chosen[item.kind].append(item)
    finally:
        await bus.close()
    batch = [item for items in chosen.values() for item in items]
    random.Random(13).shuffle(batch)
    return batch


async def publish(line: LocalLine, batch: list[Fuzzed], over_s: float) -> Counter[str]:
    """Each message by its kind's producer, evenly over `over_s`; stored on the kind's stream (acked by JetStream)."""
    assert line.nats is not None
    conns = {name: await nats.connect(**connect_options(line.nats.settings(), name)) for name in set(PRODUCER.values())}
    sent: Counter[str] = Counter()
    try:
        for item in batch:
            js = conns[PRODUCER[item.kind]].jetstream()
            await js.publish(subject(item.kind, "l1", item.station), item.payload)
            sent[item.kind] += 1
            await asyncio.sleep(over_s / len(batch))
    finally:
        for nc in conns.values():
            await nc.close()
    return sent


async def drive(line: LocalLine) -> FuzzRun:
    assert line.nats is not None
    batch = await refused_batch(line.nats.settings())
    async with SimulatedPlc(line.opcua_endpoint) as plc:
        clean = await plc.run(ROUND, RATE_HZ, result_timeout_s=60)
        pids_before = {name: line.processes[name].pid for name in SERVICES}
        publishing = asyncio.create_task(publish(line, batch, over_s=0.8 * ROUND / RATE_HZ))
        fuzzed = await plc.run(ROUND, RATE_HZ, result_timeout_s=60)
        sent = await publishing
    # The dead letters of the last messages published, and the services' logs of them, a moment behind.
    await asyncio.sleep(3.0)
    run = FuzzRun(clean=clean, fuzzed=fuzzed, sent=sent, pids_before=pids_before)
    run.alive_after = {name: line.processes[name].poll() is None for name in SERVICES}
    run.pids_after = {name: line.processes[name].pid for name in SERVICES}
    run.dead_stored = await dead_letters_stored(line)
    return run


def logged_dead_letters(logs: Path) -> tuple[Counter[tuple[str, str]], int]:
    """Each dead letter a service logged, by (service, kind of its subject); and how many had no reason."""
    counted: Counter[tuple[str, str]] = Counter()
    empty = 0
    for _, entry in dead_letter_entries(logs):
        counted[(str(entry.get("service")), str(entry.get("subject", "")).split(".")[1])] += 1
        empty += not str(entry.get("reason") or "").strip()
    return counted, empty


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory: pytest.TempPathFactory) -> FuzzRun:
    line = LocalLine(
        workdir=tmp_path_factory.mktemp("fuzz-line") / "line",
        deadline_ms=10_000,  # a loaded test machine: no part of either round may time out
        config_overrides={"nats": {"stream_max_bytes": STREAM_MAX_BYTES}},
    )
    line.start()
    try:
        run = asyncio.run(drive(line))
    finally:
        codes = line.stop(timeout_s=30)
    run.codes = codes
    run.dead_logged, run.empty_reasons = logged_dead_letters(line.logs)
    return run


def verdicts(report: PlcRunReport) -> list[tuple[str, tuple[str, ...]]]:
    return [(r.verdict, tuple(sorted(r.reasons))) for r in report.results]


def test_every_consumed_kind_was_fuzzed(fuzz_run: FuzzRun) -> None:
    assert set(fuzz_run.sent) == set(CONSUMED)
    assert all(count >= PER_KIND // 2 for count in fuzz_run.sent.values()), fuzz_run.sent


def test_each_fuzzed_message_is_dead_lettered_by_each_consumer_with_its_reason(fuzz_run: FuzzRun) -> None:
    expected_logged = Counter(
        {(service, kind): count for kind, count in fuzz_run.sent.items() for service in CONSUMERS[kind]}
    )
    assert fuzz_run.dead_logged == expected_logged
    assert fuzz_run.empty_reasons == 0
    expected_stored = {
        f"lg.dead.{kind}": count * len(CONSUMERS[kind]) for kind, count in fuzz_run.sent.items() if count
    }
    assert fuzz_run.dead_stored == expected_stored


def test_every_service_keeps_serving(fuzz_run: FuzzRun) -> None:
    assert all(fuzz_run.alive_after.values()), fuzz_run.alive_after
    assert fuzz_run.pids_after == fuzz_run.pids_before  # nothing crashed and came back
    assert fuzz_run.fuzzed.ok, fuzz_run.fuzzed  # every part of the fuzzed round got exactly one result
    assert fuzz_run.codes == dict.fromkeys(SERVICES, 0)


def test_the_parts_verdicts_are_unaffected(fuzz_run: FuzzRun) -> None:
    assert fuzz_run.clean.ok and len(fuzz_run.clean.results) == ROUND
    assert not any("TIMEOUT" in r.reasons for r in (*fuzz_run.clean.results, *fuzz_run.fuzzed.results))
    assert verdicts(fuzz_run.fuzzed) == verdicts(fuzz_run.clean)
    # Both kinds of part were judged, so an unchanged list says something.
    assert {v for v, _ in verdicts(fuzz_run.clean)} >= {"PASS", "FAIL"}

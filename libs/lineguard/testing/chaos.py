"""The chaos harness (issue 13): numbered parts through the whole line while its processes are killed and restarted.

The line runs as `lineguard demo` runs it (LocalLine: six service processes, a secured nats-server, the MES database);
a PLC triggers parts over OPC UA at a set rate and reconnects whenever the gateway goes; meanwhile a schedule of
faults is played:

- `kill:<service>` / `term:<service>`: SIGKILL / SIGTERM of one service's process; a supervisor (what compose's
  `restart: always` or Kubernetes does) starts it again once it has exited;
- `nats`: the nats-server SIGKILLed and started again on the same port and store;
- `pg-cut`: every connection to the line's PostgreSQL database cut (pg_terminate_backend); `pg-away`: the database
  refuses connections for a while (lineguard.testing.postgres: the throwaway database only, never the server);
- `slow:<service>`: the service frozen (SIGSTOP) for a while and let go (SIGCONT): a consumer that falls behind.

Then the line is stopped (results last) and the invariants are checked (`Verdict.violations`):

- no escape: every PASS the PLC got is a row judged PASS by a complete decision (a model's result with the image's
  size, the part's code read, no reason), and the row's PLC columns say PASS;
- every trigger answered: each Trigger call returned at once, and each accepted part got its result within the
  recipe's deadline + the gateway's grace (+ `margin_s`), except the parts a SIGKILLed gateway held (the PLC's own
  watchdog fails those; they are counted);
- one result per part at the PLC (`plc_outcome`: two different results for one trigger are a `conflict`, the same
  one handed over twice a `duplicate`; a result and its read-back are one), counted on the PLC's current session
  only (`ReconnectingPlc`: a session it gave up is not listened to, and the parts it triggered there are read back),
  one row per accepted part (a part the killed gateway held may have none: counted), no row the PLC never
  triggered, and every row's PLC columns agreeing with what the PLC got;
- nothing lost silently: every dead letter on the bus has its reason in the service's log (counted by reason);
- consumption resumed within 5 s of the nats-server's restart (a part triggered after it judged and answered);
- no service left crash-looping: each started exactly as often as the schedule stopped it, all six alive at the end.

`tests/chaos/` runs it at small scale in CI; `benchmarks/chaos.py` at full scale (docs/faults.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import signal
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import sqlalchemy as sa
from asyncua import ua

from lineguard.bus.client import connect_options
from lineguard.bus.permissions import ADMIN
from lineguard.contracts import DEAD_KIND, stream_name
from lineguard.localline import SERVICES, LocalLine
from lineguard.sim.plc import PlcResult, SimulatedPlc, paced, percentile
from lineguard.sim.plc_columns import check_plc_columns, read_plc_rows
from lineguard.testing.postgres import OwnCluster, cut_connections, give_database_back, take_database_away

GRACE_MS = 500  # gateway.result_grace_ms, the default
RESUME_BOUND_S = 5.0
_PART_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)  # the bound on consumption resuming after the bus restarted
EVERY_FAULT: tuple[str, ...] = (
    *(f"kill:{name}" for name in SERVICES),
    *(f"term:{name}" for name in SERVICES),
    "slow:results",
    "slow:inference",
    "pg-cut",
    "pg-away",
    "pg-kill",
    "nats",
)


@dataclass(frozen=True)
class Fault:
    at_s: float  # from the first trigger
    what: str  # kill:<service>, term:<service>, slow:<service>, nats, pg-cut, pg-away, pg-kill
    hold_s: float = 0.0  # slow: how long frozen; pg-away: how long refused


def spread(faults: Iterable[str], duration_s: float, *, hold_s: float = 4.0) -> list[Fault]:
    """The faults evenly over [10 %, 75 %] of the run, in the order given (the last ones with the quietest end);
    a fault written `<what>@<seconds>` is played at that time instead (to replay one interleaving)."""
    names = list(faults)
    if not names:
        return []
    start, end = 0.10 * duration_s, 0.75 * duration_s
    step = (end - start) / max(1, len(names) - 1)
    schedule = []
    for i, name in enumerate(names):
        what, _, at = name.partition("@")
        hold = hold_s if what.split(":")[0] in ("slow", "pg-away") else 0.0
        schedule.append(Fault(float(at) if at else round(start + i * step, 2), what, hold))
    return sorted(schedule, key=lambda f: f.at_s)


@dataclass
class Sent:
    sequence: int
    called_at: float  # perf_counter, the clock SimulatedPlc stamps arrivals with
    inspection_id: str = ""  # "" when the Trigger call was refused or never answered
    refused: str = ""  # why the call gave no inspection id (the PLC rejects the part itself)
    session: int = -1  # the PLC session it was triggered on


@dataclass
class Run:
    """What a chaos run saw: its triggers, the PLC's results, the faults played, the supervisor's restarts."""

    parts: int
    rate_hz: float
    deadline_ms: int
    sent: list[Sent] = field(default_factory=list)
    results: dict[str, list[tuple[float, PlcResult]]] = field(default_factory=dict)  # by inspection id
    result_sessions: dict[str, list[int]] = field(default_factory=dict)  # which PLC session got each of those
    log: list[str] = field(default_factory=list)
    gateway_kills: list[float] = field(default_factory=list)  # perf_counter
    nats_back_at: float | None = None
    kills: Counter[str] = field(default_factory=Counter)  # scheduled stops per service
    restarts: Counter[str] = field(default_factory=Counter)  # supervisor's starts per service
    started: float = 0.0
    elapsed_s: float = 0.0
    plc_reconnects: int = 0


class ReconnectingPlc:
    """The simulated PLC as a real one behaves on a line whose gateway may go: when its session is lost it keeps
    its own time (a part it cannot trigger is rejected by the PLC itself) and connects again.

    A session is given up when its client reports the connection lost, which includes a keep-alive probe unanswered
    for 1 s while the connection is in fact still open (a gateway frozen or starved of CPU): the old session is then
    closed in the background while the new one subscribes, and the gateway may hand a result to either or both.
    A PLC acts on its current session only, so what comes on a session after it was given up is not a result at
    the PLC; and once connected again it reads back (GetResult) the parts triggered on an earlier session that have
    no result yet, so a result handed to the session it gave up is not lost."""

    def __init__(self, run: Run, endpoint: str, station: str = "s1"):
        self.run = run
        self.endpoint = endpoint
        self.station = station
        self.plc: SimulatedPlc | None = None
        self.sessions: list[SimulatedPlc] = []
        self.given_up_at: dict[int, float] = {}  # session index -> perf_counter when the PLC stopped listening to it
        self._connecting: asyncio.Task[None] | None = None
        self._closing: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        while True:
            plc = SimulatedPlc(self.endpoint, self.station, connect_timeout_s=60.0)
            try:
                await plc.__aenter__()
            except (ConnectionError, OSError, TimeoutError) as exc:
                self._note(f"PLC could not connect: {exc!r}")
                await asyncio.sleep(0.5)
                continue
            self.sessions.append(plc)
            self.plc = plc
            self._note(f"PLC session {len(self.sessions) - 1} connected")
            return

    def _note(self, what: str) -> None:
        at = time.perf_counter() - self.run.started if self.run.started else 0.0  # 0: before the first trigger
        self.run.log.append(f"{at:7.1f} s {what}")

    def collect(self) -> None:
        """Every session's results, up to when the PLC gave it up, into run.results (a result may come in a later
        session than its trigger's: a gateway stopping answers its parts, and events sent meanwhile reach the
        session then open), in arrival order."""
        merged: dict[str, list[tuple[float, PlcResult]]] = {}
        sessions: dict[str, list[int]] = {}
        seen = [
            (arrival, index, result)
            for index, session in enumerate(self.sessions)
            for arrival, result in session._received
            if arrival <= self.given_up_at.get(index, math.inf)
        ]
        for arrival, index, result in sorted(seen, key=lambda s: s[0]):
            merged.setdefault(result.inspection_id, []).append((arrival, result))
            sessions.setdefault(result.inspection_id, []).append(index)
        self.run.results = merged
        self.run.result_sessions = sessions

    def _drop(self) -> None:
        """Give up the session (its results stay in its list): closed, or its client would retry forever."""
        if self.plc is not None:
            losses = "; ".join(self.plc.connection_losses) or "its call failed"
            index = self.sessions.index(self.plc)
            self.given_up_at[index] = time.perf_counter()
            self._note(f"PLC session {index} given up: {losses}")
            self._closing.append(asyncio.create_task(self._close(self.plc)))
            self.plc = None
            self.run.plc_reconnects += 1

    @staticmethod
    async def _close(session: SimulatedPlc) -> None:
        with contextlib.suppress(Exception):  # a session already gone
            await asyncio.wait_for(session.__aexit__(None, None, None), 5)

    def connected(self) -> bool:
        if self.plc is not None and self.plc.connection_losses:
            self._drop()
        if self.plc is None and (self._connecting is None or self._connecting.done()):
            self._connecting = asyncio.create_task(self.connect())
        return self.plc is not None

    async def trigger(self, sequence: int, timeout_s: float) -> Sent:
        sent = Sent(sequence, time.perf_counter())
        if not self.connected():
            sent.refused = "no session"
            return sent
        assert self.plc is not None
        sent.session = self.sessions.index(self.plc)
        try:
            sent.inspection_id = await asyncio.wait_for(self.plc.trigger(sequence), timeout_s)
        except TimeoutError:
            sent.refused = "unanswered"
        except Exception as exc:  # noqa: BLE001 - a refused call or a session gone: the PLC rejects the part
            sent.refused = type(exc).__name__
            if not isinstance(exc, ua.UaStatusCodeError):  # a Bad status is an answer; anything else lost the session
                self._drop()
        return sent

    async def read_back(self, sent: list[Sent]) -> None:
        """GetResult, on the current session, of each part triggered on an earlier session that has no result: what
        a PLC does for the parts in flight when it connected again (BadNotFound while a part is still in flight: its
        result then comes as an event on this session). A session lost meanwhile is given up at the next trigger."""
        if not self.connected():
            return
        assert self.plc is not None
        current = self.sessions.index(self.plc)
        self.collect()
        for part in sent:
            if not part.inspection_id or part.session >= current or part.inspection_id in self.run.results:
                continue
            try:
                await asyncio.wait_for(self.plc.read_result(part.sequence), 2.0)
            except Exception:  # noqa: BLE001 - a refused or unanswered call: tried again on the next pass
                return

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self.plc is not None:
            await self._close(self.plc)
        await asyncio.gather(*self._closing)


async def _supervise(line: LocalLine, run: Run, stop: asyncio.Event) -> None:
    """Start again every service whose process exited, as a supervisor would (one second's back-off)."""
    while not stop.is_set():
        for name in SERVICES:
            proc = line.processes[name]
            if proc.poll() is not None:
                run.log.append(f"{time.perf_counter() - run.started:7.1f} s {name} exited {proc.returncode}: restarted")
                await asyncio.sleep(1.0)
                line.respawn(name)
                run.restarts[name] += 1
        await asyncio.sleep(0.2)


async def _play(
    line: LocalLine,
    run: Run,
    plc: ReconnectingPlc,
    faults: list[Fault],
    db_url: str | None,
    cluster: OwnCluster | None,
) -> None:
    def note(what: str) -> None:
        run.log.append(f"{time.perf_counter() - run.started:7.1f} s {what}")

    for fault in faults:
        await asyncio.sleep(max(0.0, run.started + fault.at_s - time.perf_counter()))
        kind, _, name = fault.what.partition(":")
        if kind in ("kill", "term"):
            sig = signal.SIGKILL if kind == "kill" else signal.SIGTERM
            run.kills[name] += 1
            if name == "gateway" and kind == "kill":
                run.gateway_kills.append(time.perf_counter())
            line.signal(name, sig)
            note(f"{sig.name} {name}")
        elif kind == "slow":
            line.signal(name, signal.SIGSTOP)
            note(f"SIGSTOP {name} for {fault.hold_s:g} s")
            await asyncio.sleep(fault.hold_s)
            line.signal(name, signal.SIGCONT)
            note(f"SIGCONT {name}")
        elif kind == "nats":
            assert line.nats is not None and line.nats.process is not None
            line.nats.process.kill()
            await asyncio.to_thread(line.nats.process.wait)
            note("SIGKILL nats-server")
            await asyncio.sleep(1.0)
            await asyncio.to_thread(line.nats.start)
            run.nats_back_at = time.perf_counter()
            note("nats-server started again")
        elif kind == "pg-cut" and db_url is not None:
            cut = await asyncio.to_thread(cut_connections, db_url)
            note(f"PostgreSQL: {len(cut)} connections cut")
        elif kind == "pg-away" and db_url is not None:
            await asyncio.to_thread(take_database_away, db_url)
            note(f"PostgreSQL database refuses connections for {fault.hold_s:g} s")
            await asyncio.sleep(fault.hold_s)
            await asyncio.to_thread(give_database_back, db_url)
            note("PostgreSQL database back")
        elif kind == "pg-kill" and cluster is not None:
            # The server itself, as a power cut or the OOM killer ends it; its supervisor starts it a second later.
            await asyncio.to_thread(cluster.kill)
            note("SIGKILL PostgreSQL")
            await asyncio.sleep(1.0)
            await asyncio.to_thread(cluster.start)
            note("PostgreSQL started again")
        else:
            raise ValueError(f"unknown fault {fault.what!r} (or a PostgreSQL fault on a line without PostgreSQL)")


async def drive(
    line: LocalLine,
    run: Run,
    faults: list[Fault],
    *,
    db_url: str | None,
    cluster: OwnCluster | None = None,
    result_wait_s: float = 120.0,
) -> None:
    """Trigger run.parts parts at run.rate_hz while the faults play and a supervisor restarts what stops; then wait
    for the results still due (each part's deadline + grace, or until `result_wait_s`)."""
    plc = ReconnectingPlc(run, line.opcua_endpoint)
    await plc.connect()
    stop = asyncio.Event()
    supervisor = asyncio.create_task(_supervise(line, run, stop))
    run.started = time.perf_counter()
    chaos = asyncio.create_task(_play(line, run, plc, faults, db_url, cluster))

    async def read_back() -> None:
        while not stop.is_set():
            await plc.read_back(run.sent)
            await asyncio.sleep(0.5)

    reading_back = asyncio.create_task(read_back())
    bound_s = (run.deadline_ms + GRACE_MS) / 1000
    try:
        async for i in paced(run.parts, run.rate_hz):
            run.sent.append(await plc.trigger(i + 1, timeout_s=bound_s))
        await chaos
        run.elapsed_s = time.perf_counter() - run.started
        wanted = {s.inspection_id for s in run.sent if s.inspection_id}
        # Every result is due by its part's deadline + grace: waiting longer would only wait for the parts a killed
        # gateway took with it (a margin for a loaded machine, and at most result_wait_s).
        last_due = max((s.called_at for s in run.sent), default=time.perf_counter()) + bound_s + 5.0
        deadline = min(time.perf_counter() + result_wait_s, max(last_due, time.perf_counter() + 1.0))
        while time.perf_counter() < deadline and not wanted <= run.results.keys():
            plc.connected()  # reconnect, should the last fault have taken the session: results come to any session
            await asyncio.sleep(0.25)
            plc.collect()
        # Quiet for a while: a service crash-looping would be restarted again meanwhile.
        await asyncio.sleep(5.0)
    finally:
        chaos.cancel()
        stop.set()
        await supervisor
        await reading_back
        plc.collect()
        await plc.close()


@dataclass
class Verdict:
    figures: dict[str, Any]
    violations: dict[str, str]  # invariant (escape, late, unanswered, duplicate, missing_row, ...) -> what broke it

    @property
    def ok(self) -> bool:
        return not self.violations


def _complete_pass(row: sa.Row[Any]) -> bool:
    return (
        row.verdict == "PASS"
        and not row.reason_codes
        and row.model_id is not None
        and row.image_width is not None
        and row.serial is not None
    )


def dead_letter_entries(logs: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each dead letter the services logged (structlog's JSON lines under `logs`), with its log file's stem."""
    for log in sorted(logs.glob("*.log")):
        for text in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(text)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == "dead-lettered":
                yield log.stem, entry


def dead_letter_reasons(logs: Path) -> Counter[str]:
    """Every dead letter the services logged, by service and reason (part ids masked)."""
    reasons: Counter[str] = Counter()
    for stem, entry in dead_letter_entries(logs):
        reason = _PART_ID.sub("<id>", str(entry.get("reason")))  # counted by kind, not by part
        reasons[f"{entry.get('service', stem)}: {reason}"] += 1
    return reasons


async def dead_letters_stored(line: LocalLine) -> dict[str, int]:
    """How many dead letters the bus holds, by subject (the admin may read a stream's info, not its messages)."""
    assert line.nats is not None
    nc = await nats.connect(**connect_options(line.nats.settings(), ADMIN))
    try:
        info = await nc.jetstream().stream_info(stream_name(DEAD_KIND), subjects_filter=f"lg.{DEAD_KIND}.>")
        return dict(info.state.subjects or {})
    finally:
        await nc.close()


def plc_outcome(got: list[PlcResult]) -> str | None:
    """What the PLC's results for one trigger say: "conflict" (two different results: the fail-safe breach),
    "duplicate" (the same result as an event more than once: handed over twice), None (one result; an event and
    its read-back by GetResult are one result read twice)."""
    if len({(r.verdict, tuple(r.reasons)) for r in got}) > 1:
        return "conflict"
    if sum(1 for r in got if not r.read_back) > 1:
        return "duplicate"
    return None


def judge(run: Run, line: LocalLine, db_url: str, dead_stored: dict[str, int], codes: dict[str, int | None]) -> Verdict:
    """The invariants over what the PLC got, the rows, the dead letters and the supervisor's counts."""
    violations: dict[str, str] = {}
    bound_s = (run.deadline_ms + GRACE_MS) / 1000 + 0.1
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT inspection_id, sequence, verdict, reason_codes, model_id, image_width, serial, "
                    "plc_verdict, plc_delivered_at FROM inspections"
                )
            ).all()
    finally:
        engine.dispose()
    by_id = {r.inspection_id: r for r in rows}
    accepted = [s for s in run.sent if s.inspection_id]
    triggered = {s.inspection_id: s for s in accepted}

    def held_by_killed_gateway(sent: Sent) -> bool:
        return any(sent.called_at <= kill <= sent.called_at + bound_s for kill in run.gateway_kills)

    first: list[PlcResult] = []
    escapes: list[int] = []
    late: list[tuple[int, float]] = []
    unanswered: list[int] = []
    lost_with_gateway: list[int] = []
    no_row: list[int] = []
    duplicated: list[tuple[int, list[tuple[str, str, bool, int, float]]]] = []
    conflicting: list[tuple[int, list[tuple[str, str, bool, int, float]]]] = []
    for sent in accepted:
        got = run.results.get(sent.inspection_id, [])
        # Each: verdict, reasons, read back, the PLC session it came in, seconds after the run began.
        sessions = run.result_sessions.get(sent.inspection_id, [-1] * len(got))
        shown = [
            (r.verdict, ",".join(r.reasons), r.read_back, n, round(t - run.started, 2))
            for (t, r), n in zip(got, sessions, strict=True)
        ]
        outcome = plc_outcome([r for _, r in got])
        if outcome == "conflict":
            conflicting.append((sent.sequence, shown))
        elif outcome == "duplicate":
            duplicated.append((sent.sequence, shown))
        if not got:
            (lost_with_gateway if held_by_killed_gateway(sent) else unanswered).append(sent.sequence)
        else:
            arrival, result = got[0]
            first.append(result)
            if arrival - sent.called_at > bound_s and not held_by_killed_gateway(sent):
                late.append((sent.sequence, round(arrival - sent.called_at, 3)))
            row = by_id.get(sent.inspection_id)
            if result.verdict == "PASS" and (row is None or not _complete_pass(row) or row.plc_verdict != "PASS"):
                escapes.append(sent.sequence)
        if sent.inspection_id not in by_id:
            no_row.append(sent.sequence)
    rows_without_trigger = [r.sequence for r in rows if r.inspection_id not in triggered]
    results_never_triggered = [i for i in run.results if i not in triggered]
    # A part the killed gateway took with it may have no row (its trigger never reached the bus); any other may not.
    no_row_unexcused = [q for q in no_row if q not in lost_with_gateway]
    check = check_plc_columns(read_plc_rows(db_url), first)
    hung_calls = [s.sequence for s in run.sent if s.refused == "unanswered" and not held_by_killed_gateway(s)]

    # Consumption resumed after the bus came back: the first part triggered after it, judged (not timed out).
    resumed_s = math.nan
    if run.nats_back_at is not None:
        after = [
            (seen[0][0], s)
            for s in accepted
            if s.called_at >= run.nats_back_at
            and (seen := run.results.get(s.inspection_id))
            and "TIMEOUT" not in seen[0][1].reasons
        ]
        if after:
            resumed_s = min(arrival for arrival, _ in after) - run.nats_back_at

    logged = dead_letter_reasons(line.logs)
    stored_total, logged_total = sum(dead_stored.values()), sum(logged.values())
    crashes = {n: run.restarts[n] - run.kills[n] for n in SERVICES if run.restarts[n] != run.kills[n]}
    dead_at_end = [n for n, code in codes.items() if code not in (0, None)]

    if escapes:
        violations["escape"] = f"ESCAPE: the PLC got PASS without a complete PASS decision for parts {escapes[:20]}"
    if late:
        violations["late"] = f"{len(late)} results after deadline + grace ({bound_s:g} s): {late[:10]}"
    if unanswered:
        violations["unanswered"] = f"{len(unanswered)} accepted parts never answered: {unanswered[:20]}"
    if hung_calls:
        violations["hung_call"] = f"{len(hung_calls)} Trigger calls unanswered within {bound_s:g} s: {hung_calls[:20]}"
    if conflicting:
        violations["conflict"] = (
            f"{len(conflicting)} parts given two different results at the PLC (verdict, reasons, read back, "
            f"session, at s): {conflicting[:20]}"
        )
    if duplicated:
        violations["duplicate"] = (
            f"{len(duplicated)} parts whose result came twice at the PLC (verdict, reasons, read back, session, "
            f"at s): {duplicated[:20]}"
        )
    if no_row_unexcused:
        violations["missing_row"] = f"{len(no_row_unexcused)} accepted parts without a row: {no_row_unexcused[:20]}"
    if rows_without_trigger or results_never_triggered:
        violations["untriggered"] = (
            f"rows / results the PLC never triggered: {rows_without_trigger[:10]} / {results_never_triggered[:10]}"
        )
    if not check.ok:
        violations["plc_columns"] = f"{check.line}: {check.disagreements[:10]}"
    if stored_total != logged_total:
        violations["dead_letters"] = f"{stored_total} dead letters on the bus but {logged_total} logged with a reason"
    if run.nats_back_at is not None and not resumed_s <= RESUME_BOUND_S:
        violations["resume"] = f"consumption resumed {resumed_s:.2f} s after the nats-server restart (bound 5 s)"
    if crashes:
        violations["crash_loop"] = f"services restarted more often than stopped (crash loop?): {crashes}"
    if dead_at_end:
        violations["stop"] = f"services that did not stop cleanly at the end: {dead_at_end}"

    latencies = [seen[0][0] - s.called_at for s in accepted if (seen := run.results.get(s.inspection_id))]
    verdicts = Counter(r.verdict for r in first)
    figures = {
        "parts": run.parts,
        "rate_hz": run.rate_hz,
        "elapsed_s": round(run.elapsed_s, 1),
        "accepted": len(accepted),
        "refused_at_trigger": dict(Counter(s.refused for s in run.sent if s.refused)),
        "results_at_plc": len(first),
        "verdicts": dict(verdicts),
        "fail_timeouts": sum(1 for r in first if "TIMEOUT" in r.reasons),
        "latency_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "latency_max_ms": round(max(latencies, default=math.nan) * 1000, 1),
        "result_bound_s": bound_s,
        "lost_with_killed_gateway": len(lost_with_gateway),
        "lost_with_killed_gateway_without_row": len([q for q in no_row if q in lost_with_gateway]),
        "rows": len(rows),
        "escapes": len(escapes),
        "duplicates": len(duplicated),
        "conflicts": len(conflicting),
        "read_back": sum(1 for got in run.results.values() if any(r.read_back for _, r in got)),
        "plc_columns_agree": f"{check.agree} of {check.rows}",
        "dead_letters_stored": dead_stored,
        "dead_letters_logged": dict(logged),
        "resumed_after_nats_s": round(resumed_s, 2),
        "plc_reconnects": run.plc_reconnects,
        "kills": dict(run.kills),
        "restarts": dict(run.restarts),
        "faults": run.log,
    }
    return Verdict(figures, violations)


def wait_for_rows(db_url: str, inspection_ids: set[str], timeout_s: float) -> None:
    engine = sa.create_engine(db_url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                have = set(conn.execute(sa.text("SELECT inspection_id FROM inspections")).scalars())
            if inspection_ids <= have:
                return
            time.sleep(1.0)
    finally:
        engine.dispose()


def chaos_run(
    workdir: Path,
    *,
    parts: int,
    rate_hz: float,
    faults: Iterable[str] = EVERY_FAULT,
    database_url: str | None = None,
    cluster: OwnCluster | None = None,
    deadline_ms: int = 3000,
    hold_s: float = 4.0,
    rows_wait_s: float = 60.0,
    config_overrides: dict[str, Any] | None = None,
) -> Verdict:
    """One run: start the line in `workdir` (PostgreSQL at `database_url`, or on `cluster`, a server of the run's own
    that the pg-kill fault may SIGKILL; else SQLite), trigger `parts` parts at
    `rate_hz` with `faults` spread over the run, wait up to `rows_wait_s` for the rows of the parts the PLC got a
    result for (a trigger a killed service held comes again after the consumer's ack_wait, 30 s), stop, judge.
    `config_overrides`: merged into the line's configuration (LocalLine's)."""
    if cluster is not None:
        database_url = cluster.url
    line = LocalLine(
        workdir=workdir, database_url=database_url, deadline_ms=deadline_ms, config_overrides=config_overrides or {}
    )
    db_url = database_url or f"sqlite:///{line.database_path}"
    run = Run(parts=parts, rate_hz=rate_hz, deadline_ms=deadline_ms)
    # Without PostgreSQL (SQLite) its faults have nothing to act on; the machine's own server is never killed.
    usable = {"pg-cut", "pg-away"} if database_url is not None else set()
    usable |= {"pg-kill"} if cluster is not None else set()
    chosen = [f for f in faults if not f.startswith("pg-") or f.partition("@")[0] in usable]
    schedule = spread(chosen, parts / rate_hz, hold_s=hold_s)
    line.start()
    try:
        asyncio.run(drive(line, run, schedule, db_url=database_url, cluster=cluster))
        wait_for_rows(db_url, {i for i, got in run.results.items() if got}, rows_wait_s)
        stored = asyncio.run(dead_letters_stored(line))
    finally:
        codes = line.stop(timeout_s=30)
    return judge(run, line, db_url, stored, codes)

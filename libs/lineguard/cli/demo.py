"""`lineguard demo`: the whole line on this machine, driven by a simulated PLC."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lineguard.localline import RESULTS_ADMIN, LineStartError, LocalLine
from lineguard.natsserver import free_port
from lineguard.sim.plc_columns import PlcColumns, check_plc_columns, read_plc_rows

if TYPE_CHECKING:
    from lineguard.sim.plc import PlcResult, PlcRunReport


class Plc(StrEnum):
    """The simulated PLCs `--plc` picks."""

    OPCUA = "opcua"
    OPCUA_40100 = "opcua-40100"
    MODBUS = "modbus"
    S7 = "s7"
    OPCUA_CLIENT = "opcua-client"
    EXTERNAL = "external"  # no simulated PLC: the line serves an outside one until Ctrl-C


EXTERNAL_MODBUS_PORT = 5020  # Modbus TCP's 502 needs root


def _register_plc(plc: Plc, folder: Path) -> dict[str, Any] | None:
    """The station's plc section for a register protocol or OPC UA client mode, on a free loopback port (None: the
    OPC UA server)."""
    from lineguard.natsserver import free_port

    if plc is Plc.OPCUA_CLIENT:  # the simulated PLC serves its variables, the gateway is its OPC UA client
        from lineguard.sim.opcua_client_plc import ServerPlc

        port = free_port()
        return {
            "protocol": "opcua-client",
            "endpoint": ServerPlc(port).endpoint,
            "nodes": ServerPlc(port).node_map(),
            "security": {"profile": "demo", "policy": "None", "pki_dir": str(folder / "pki" / "opcua-client")},
        }
    if plc is Plc.MODBUS:  # the gateway serves, the simulated PLC polls it
        return {"protocol": "modbus", "mode": "server", "host": "127.0.0.1", "port": free_port()}
    if plc is Plc.S7:  # the simulated PLC serves its data block, the gateway is its client
        return {"protocol": "s7", "host": "127.0.0.1", "port": free_port(), "db": 100}
    return None


def demo(
    parts: Annotated[int, typer.Option(min=1, help="parts the simulated PLC triggers")] = 50,
    rate: Annotated[float, typer.Option(min=0.1, help="triggers per second")] = 5.0,
    workdir: Annotated[
        Path | None, typer.Option(help="where the database, logs and NATS store go (default: a new folder)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="stdout: the summary as one JSON object alone (the table goes to stderr)")
    ] = False,
    plc: Annotated[
        Plc,
        typer.Option(
            help="the simulated PLC: opcua (the simple profile's Trigger), opcua-40100 (OPC 40100 StartSingleJob), "
            "modbus (Modbus TCP, the gateway the server), s7 (an S7 data block, the gateway the client), opcua-client "
            "(the PLC's own OPC UA server, the gateway its client), external (no simulated PLC: serve an outside one, "
            "station s1 on OPC UA and s2 on Modbus TCP 127.0.0.1:5020, until Ctrl-C)"
        ),
    ] = Plc.OPCUA,
    api_port: Annotated[
        int, typer.Option(min=0, max=65535, help="the MES query API on 127.0.0.1 while the line runs (0: a free port)")
    ] = 8080,
) -> None:
    """Run the whole line: embedded NATS, SQLite, six services, and a simulated PLC triggering parts."""
    err = Console(stderr=True)
    out = Console()
    folder = workdir or Path(tempfile.mkdtemp(prefix="lineguard-demo-"))
    what = "serving an outside PLC" if plc is Plc.EXTERNAL else f"{parts} parts at {rate:g}/s"
    err.print(f"[bold]lineguard demo[/]: {what}, working in {folder}")
    api = {"enabled": True, "host": "127.0.0.1", "port": api_port or free_port()}
    overrides: dict[str, Any] = {"api": api}
    if plc is Plc.EXTERNAL:
        overrides["stations"] = _external_stations()
    line = LocalLine(workdir=folder, plc=_register_plc(plc, folder), config_overrides=overrides)
    # The services run in sessions of their own (a terminal's Ctrl-C reaches the demo alone, which stops them in
    # order): a SIGTERM (kill, timeout, a supervisor's stop) takes the same way out, not the default one that left
    # the six services and NATS running, holding their ports.
    signal.signal(signal.SIGTERM, _interrupt)
    with err.status("starting NATS and the six services..."):
        try:
            line.start()
        except LineStartError as exc:
            err.print(f"[red]the line did not start:[/] {exc}")
            raise typer.Exit(1) from None
    try:
        err.print(
            f"NATS at {line.nats.url if line.nats else '?'}: TLS, and each service signs in with its own nkey, made "
            f"for this run in {line.nats_credentials} (docs/security.md, NATS)",
            highlight=False,
        )
        err.print(
            f"MES query API at http://127.0.0.1:{api['port']} (/docs) and the operator dashboard at its /dashboard "
            "while the line runs; a reader token (it signs in to both):"
        )
        err.print(_reader_token(line), highlight=False, soft_wrap=True)
        # The recipe, model and drift commands default to a NATS on 127.0.0.1:4222, not this run's.
        err.print(f"other lineguard commands reach this line with --config {line.config_path}", highlight=False)
        if plc is Plc.EXTERNAL:
            _serve_external(line, overrides["stations"], err)
            return
        _warn_plc_security(line, plc, err)
        try:
            report, elapsed = _drive(line, parts, rate, err, plc)
        except KeyboardInterrupt:
            interrupted = True
        else:
            interrupted = False
            rows = _wait_for_rows(line, parts)
    finally:
        exit_codes = line.stop()  # a second time after _serve_external's: the processes are gone, nothing is done
    if interrupted:
        _report_stop(line, exit_codes, err, "interrupted")
        raise typer.Exit(130)
    # Read once the line has stopped: the results service wrote every decision and ack before it did.
    plc_columns = check_plc_columns(read_plc_rows(f"sqlite:///{line.database_path}"), report.results)
    summary = _summary(report, rows, parts, elapsed, line, exit_codes, plc_columns)
    # With --json, stdout is the JSON line alone (for a script's pipe); the table goes to the terminal.
    _print_summary(err if as_json else out, summary)
    if as_json:
        print(json.dumps(summary), flush=True)
    if not report.ok or summary["database_rows"] != parts or not plc_columns.ok:
        raise typer.Exit(1)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _warn_plc_security(line: LocalLine, plc: Plc, err: Console) -> None:
    if line.plc is None:
        err.print(
            f"[yellow]OPC UA at {line.opcua_endpoint} runs the demo security profile: security policy None and "
            "anonymous operators, not for a production line[/] (docs/opcua.md, Security)"
        )
    elif plc is Plc.OPCUA_CLIENT:
        err.print(
            f"[yellow]the simulated PLC's OPC UA server at {line.plc['endpoint']}: the gateway connects with the demo "
            "security profile, policy None and anonymous, not for a production line[/] (docs/opcua.md, client mode)"
        )
    else:
        err.print(
            f"[yellow]{plc.value} on 127.0.0.1:{line.plc['port']} has no security of its own: keep it inside a "
            f"segmented cell network[/] (docs/{plc.value}.md)"
        )


def _drive(line: LocalLine, parts: int, rate: float, console: Console, plc: Plc) -> tuple[PlcRunReport, float]:
    # asyncua is only needed once the line runs
    from lineguard.sim.machine_vision import MachineVisionPlc
    from lineguard.sim.plc import SimulatedPlc

    verdicts: Counter[str] = Counter()
    progress = Progress(
        TextColumn("[bold]parts"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "[green]pass {task.fields[passed]}[/] [red]fail {task.fields[failed]}[/] "
            "[yellow]rework {task.fields[rework]}[/]"
        ),
        TextColumn("{task.fields[rate]:.1f} parts/s"),
        TimeElapsedColumn(),
        console=console,
    )
    started = time.monotonic()
    with progress:
        task = progress.add_task("parts", total=parts, passed=0, failed=0, rework=0, rate=0.0)

        def on_result(result: PlcResult) -> None:
            verdicts[result.verdict] += 1
            done = sum(verdicts.values())
            progress.update(
                task,
                completed=done,
                passed=verdicts["PASS"],
                failed=verdicts["FAIL"] + verdicts["ERROR"],
                rework=verdicts["REWORK"],
                rate=done / max(time.monotonic() - started, 1e-6),
            )

        async def run() -> PlcRunReport:
            if plc is Plc.MODBUS:
                from lineguard.sim.modbus import SimulatedModbusPlc

                assert line.plc is not None
                async with SimulatedModbusPlc("127.0.0.1", line.plc["port"]) as modbus:
                    return await modbus.run(parts, rate, on_result=on_result, result_timeout_s=60.0)
            if plc is Plc.S7:
                from lineguard.sim.s7 import SimulatedS7Plc

                assert line.plc is not None
                async with SimulatedS7Plc(line.plc["port"], db=line.plc["db"]) as s7:
                    return await s7.run(parts, rate, on_result=on_result, result_timeout_s=60.0)
            if plc is Plc.OPCUA_CLIENT:
                from lineguard.sim.opcua_client_plc import ServerPlc

                assert line.plc is not None
                async with ServerPlc(urlsplit(line.plc["endpoint"]).port or 4840) as server_plc:
                    await _gateway_connected(server_plc)
                    return await server_plc.run(parts, rate, on_result=on_result, result_timeout_s=60.0)
            if plc is Plc.OPCUA_40100:
                async with MachineVisionPlc(line.opcua_endpoint, station="s1") as vision:
                    return await vision.run(parts, rate, on_result=on_result, result_timeout_s=60.0)
            async with SimulatedPlc(line.opcua_endpoint, station="s1") as simple:
                return await simple.run(parts, rate, on_result=on_result, result_timeout_s=60.0)

        report = asyncio.run(run())
    return report, time.monotonic() - started


def _external_stations() -> list[dict[str, Any]]:
    """Two stations, since a station speaks one protocol: s1 the demo's OPC UA server (simple and OPC 40100
    profiles, on a free port), s2 a Modbus TCP server on 127.0.0.1:5020 (docs/modbus.md's map)."""
    from lineguard.sim.lineconfig import demo_config_dict

    opcua = f"opc.tcp://127.0.0.1:{free_port()}/lineguard/"
    s1 = demo_config_dict(nats_url="", database_url="", opcua_endpoint=opcua)["stations"][0]
    s1["plc"]["profiles"] = ["simple", "machine-vision"]
    modbus = {"protocol": "modbus", "mode": "server", "host": "127.0.0.1", "port": EXTERNAL_MODBUS_PORT}
    return [s1, {**s1, "id": "s2", "plc": modbus}]


def _serve_external(line: LocalLine, stations: list[dict[str, Any]], err: Console) -> None:
    """Serve the outside PLC until Ctrl-C; the endpoints as plain lines on stdout, for a person or a script."""
    opcua, modbus = stations[0]["plc"], stations[1]["plc"]
    print(f"endpoint s1 opcua {opcua['endpoint']}", flush=True)
    print(f"endpoint s2 modbus {modbus['host']}:{modbus['port']}", flush=True)
    err.print(
        f"[yellow]s1: OPC UA at {opcua['endpoint']}, the demo security profile: security policy None and anonymous "
        "operators (no user, no password), not for a production line[/] (docs/opcua.md, Security); its nodes "
        "Objects/Stations/s1 (simple profile) and the OPC 40100 VisionSystem s1",
        highlight=False,
    )
    err.print(
        f"[yellow]s2: Modbus TCP server at {modbus['host']}:{modbus['port']}, unit 1, docs/modbus.md's register map; "
        "no security of its own: keep it inside a segmented cell network[/] (docs/modbus.md)",
        highlight=False,
    )
    err.print("serving an outside PLC: Ctrl-C stops the line", highlight=False)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        exit_codes = line.stop()
    if not _report_stop(line, exit_codes, err, "stopped"):
        raise typer.Exit(1)


def _report_stop(line: LocalLine, exit_codes: dict[str, int | None], err: Console, how: str) -> bool:
    """What a line stopped before its end left (the rows written, where the logs are); False if a service did not
    stop cleanly."""
    rows = _wait_for_rows(line, 0, timeout_s=0.0)
    err.print(f"{how}: {sum(rows.values())} rows in {line.database_path}, logs in {line.logs}", highlight=False)
    if all(code == 0 for code in exit_codes.values()):
        return True
    err.print(f"[red]a service did not stop cleanly:[/] {exit_codes}", highlight=False)
    return False


async def _gateway_connected(server_plc: Any, timeout_s: float = 60.0) -> None:
    """Trigger only once the gateway is connected and subscribed (it counts the PLC's Heartbeat up then): a count it
    finds already raised when it subscribes is the PLC's past, not a new part."""
    deadline = time.monotonic() + timeout_s
    while await server_plc.read("Heartbeat") == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway did not connect to the simulated PLC at {server_plc.endpoint}")
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # its trigger subscription's first value (the count found) comes before the heartbeat


def _wait_for_rows(line: LocalLine, expected: int, timeout_s: float = 30.0) -> dict[str, int]:
    """The results service writes asynchronously: give it a moment to catch up."""
    engine = sa.create_engine(f"sqlite:///{line.database_path}")
    deadline = time.monotonic() + timeout_s
    counts: dict[str, int] = {}
    try:
        while True:
            with engine.connect() as conn:
                counts = dict(conn.execute(sa.text("SELECT verdict, COUNT(*) FROM inspections GROUP BY verdict")).all())
            if sum(counts.values()) >= expected or time.monotonic() > deadline:
                return counts
            time.sleep(0.2)
    finally:
        engine.dispose()


def _summary(
    report: PlcRunReport,
    rows: dict[str, int],
    parts: int,
    elapsed: float,
    line: LocalLine,
    exit_codes: dict[str, int | None],
    plc_columns: PlcColumns,
) -> dict[str, Any]:
    verdicts = Counter(r.verdict for r in report.results)
    return {
        "parts": parts,
        "results_at_plc": len(report.results),
        "pass": verdicts["PASS"],
        "fail": verdicts["FAIL"],
        "rework": verdicts["REWORK"],
        "error": verdicts["ERROR"],
        # Parts the line could not judge in time, each a FAIL: refused at once (OVERLOAD) or at the deadline (TIMEOUT).
        "overload": sum(1 for r in report.results if "OVERLOAD" in r.reasons),
        "timeout": sum(1 for r in report.results if "TIMEOUT" in r.reasons),
        "missing": len(report.missing),
        "duplicates": len(report.duplicates),
        "latency_p50_ms": round(report.p50_s * 1000, 1),
        "latency_p99_ms": round(report.p99_s * 1000, 1),
        "parts_per_s": round(len(report.results) / elapsed, 2) if elapsed else 0.0,
        "database": str(line.database_path),
        "database_rows": sum(rows.values()),
        "database_verdicts": rows,
        "plc_columns_agree": plc_columns.agree,
        "plc_columns_rows": plc_columns.rows,
        "plc_columns_disagree": plc_columns.disagreements,
        "workdir": str(line.workdir),
        "logs": str(line.logs),
        "clean_shutdown": all(code == 0 for code in exit_codes.values()),
    }


def _reader_token(line: LocalLine) -> str:
    """A reader token for the demo's API, made by the results service's admin module (by module path)."""
    command = [sys.executable, "-m", RESULTS_ADMIN, "api", "token", "create", "--role", "reader", "--name", "demo"]
    made = subprocess.run(
        [*command, "--config", str(line.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return made.stdout.strip() if made.returncode == 0 else f"(none: {made.stderr.strip()[-200:]})"


def _print_summary(console: Console, s: dict[str, Any]) -> None:
    table = Table(title="lineguard demo", show_header=False)
    table.add_row("parts triggered", str(s["parts"]))
    table.add_row("results at the PLC", f"{s['results_at_plc']} (missing {s['missing']}, duplicated {s['duplicates']})")
    table.add_row("pass / fail / rework / error", f"{s['pass']} / {s['fail']} / {s['rework']} / {s['error']}")
    if s["overload"] or s["timeout"]:
        table.add_row(
            "not judged in time (FAIL)",
            f"{s['overload']} OVERLOAD (refused at once), {s['timeout']} TIMEOUT (at the deadline)",
        )
    table.add_row("trigger to PLC result", f"p50 {s['latency_p50_ms']} ms, p99 {s['latency_p99_ms']} ms")
    table.add_row("throughput", f"{s['parts_per_s']} parts/s")
    table.add_row("database rows", f"{s['database_rows']} in {s['database']}")
    table.add_row("logs", s["logs"])
    console.print(table)
    # Every row's plc_verdict / plc_delivered_at against what the simulated PLC received.
    console.print(f"PLC columns: {s['plc_columns_agree']} of {s['plc_columns_rows']} agree", highlight=False)
    for line in s["plc_columns_disagree"]:
        console.print(f"[red]PLC columns disagree with what the PLC received:[/] {line}", highlight=False)

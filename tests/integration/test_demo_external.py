"""`lineguard demo --plc external` as a person runs it: a subprocess that prints its endpoints, serves an outside
PLC (here a real asyncua client, lineguard.sim.plc.SimulatedPlc, on the printed OPC UA endpoint, and a Modbus
TCP client on station s2's) and stops on Ctrl-C (SIGINT) with exit code 0; and on a SIGTERM (kill, timeout, a
supervisor) it stops its services too, leaving none of them running."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lineguard.cli.demo import EXTERNAL_MODBUS_PORT
from lineguard.sim.modbus import SimulatedModbusPlc
from lineguard.sim.plc import SimulatedPlc


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _start(workdir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """The external demo started in `workdir`, once it has printed its endpoints: (process, {protocol: address})."""
    if not _port_free(EXTERNAL_MODBUS_PORT):
        pytest.skip(f"127.0.0.1:{EXTERNAL_MODBUS_PORT} is taken (another demo?)")
    proc = _launch(workdir, "--plc", "external")
    endpoints: dict[str, str] = {}
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    while len(endpoints) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("endpoint "):
            _, _station, protocol, address = line.split()
            endpoints[protocol] = address
    if set(endpoints) != {"opcua", "modbus"}:
        _kill_all(proc, workdir)
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"no endpoints printed: {endpoints}; {err[-2000:]}")
    return proc, endpoints


def _launch(workdir: Path, *options: str) -> subprocess.Popen[str]:
    # A session of its own, as a shell's foreground job: a Ctrl-C is a SIGINT to its whole process group.
    command = [sys.executable, "-c", "from lineguard.cli import main; main()", "demo"]
    return subprocess.Popen(
        [*command, *options, "--api-port", "0", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,
    )


def _kill_all(proc: subprocess.Popen[str], workdir: Path) -> None:
    """After a failed assertion: the demo and whatever of its line still runs (each in a session of its own)."""
    for pid in [proc.pid, *_running_in(workdir)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _running_in(workdir: Path) -> list[int]:
    """The live (not zombie) processes whose command line names `workdir`: the line's services and its NATS."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile
        if str(workdir) in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_a_sigterm_stops_the_demo_and_every_service_of_it(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    proc, _ = _start(workdir)
    try:
        assert len(_running_in(workdir)) >= 8  # the demo, its six services and NATS
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert "stopped:" in err, err[-2000:]
        assert _running_in(workdir) == []  # none left holding its ports
    finally:
        _kill_all(proc, workdir)


def test_external_demo_serves_an_outside_plc_until_sigint(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    proc, endpoints = _start(workdir)
    try:
        assert endpoints["modbus"] == f"127.0.0.1:{EXTERNAL_MODBUS_PORT}"

        async def one_part() -> None:
            async with SimulatedPlc(endpoints["opcua"], station="s1") as plc:
                report = await plc.run(1, 1.0, result_timeout_s=60.0)
            assert report.ok, report
            assert report.results[0].verdict in {"PASS", "FAIL", "REWORK"}
            host, port = endpoints["modbus"].split(":")
            async with SimulatedModbusPlc(host, int(port)) as modbus:  # station s2, polling the gateway's server
                report = await modbus.run(1, 1.0, result_timeout_s=60.0)
            assert report.ok, report

        asyncio.run(one_part())
        # A terminal's Ctrl-C reaches the whole foreground group: NATS took it too and went first, the gateway then
        # failing on its lost connection ("a service did not stop cleanly", exit 1).
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        assert "policy None and anonymous" in err
        assert "stopped: 2 rows" in err and "did not stop cleanly" not in err, err[-2000:]
    finally:
        _kill_all(proc, workdir)


def test_a_ctrl_c_mid_run_stops_the_demo_and_says_what_it_left(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    proc = _launch(workdir, "--parts", "500", "--rate", "5")
    try:
        database = workdir / "lineguard.db"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not _rows(database):  # mid-run: parts judged, most still to come
            time.sleep(0.5)
        assert _rows(database), "no part was written within 180 s"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-2000:]
        assert f"interrupted: {_rows(database)} rows in {database}" in err, err[-2000:]
        assert "Traceback" not in err and "did not stop cleanly" not in err, err[-2000:]
        assert _running_in(workdir) == []
    finally:
        _kill_all(proc, workdir)


def _rows(database: Path) -> int:
    import sqlite3

    if not database.exists():
        return 0
    with contextlib.closing(sqlite3.connect(database)) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM inspections").fetchone()[0])
        except sqlite3.OperationalError:  # the migration has not made the table yet
            return 0

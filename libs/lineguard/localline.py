"""The whole line on one machine: embedded NATS, SQLite, all six services as processes.

`lineguard demo`, the end-to-end tests and the benchmarks start the line this
way, so what they exercise is what a user runs: separate processes talking over
a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

from lineguard.bus.client import connect_options
from lineguard.bus.permissions import ADMIN
from lineguard.bus.provision import provision_line
from lineguard.config import NatsSettings
from lineguard.contracts import kind_subjects, stream_name
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.sim.lineconfig import demo_config_dict, write_config

SERVICES: tuple[str, ...] = ("capture", "inference", "ocr", "decision", "gateway", "results")
RESULTS_ADMIN = "lineguard.services.results.admin"  # `lineguard db upgrade`'s module: the migrator's step


class LineStartError(RuntimeError):
    pass


@dataclass
class LocalLine:
    workdir: Path
    database_url: str | None = None
    deadline_ms: int = 3000
    config_overrides: dict[str, Any] = field(default_factory=dict)
    plc_profiles: list[str] | None = None  # the OPC UA profiles every station serves (None: the demo's)
    nats: EmbeddedNats | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    config_path: Path | None = None
    opcua_endpoint: str = ""
    plc: dict[str, Any] | None = None  # the station's plc section, when not the demo's OPC UA server

    @property
    def database_path(self) -> Path:
        return self.workdir / "lineguard.db"

    @property
    def nats_credentials(self) -> Path:
        """The run's NATS credentials (lineguard.bus.credentials' layout): each service's seed, the CA, the admin's."""
        return self.workdir / "secrets" / "nats"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def start(self, ready_timeout_s: float = 120.0) -> LocalLine:
        if (self.workdir / "nats").exists() or self.database_path.exists():
            # An earlier run's heartbeats and rows would make this one look ready early and count wrong.
            raise LineStartError(f"{self.workdir} already holds a run; choose an empty or new folder")
        # Owner-only (0700): it holds the run's keys, its config and its rows. A folder the caller made
        # keeps its mode (it may be theirs to share); what is written in it is 0600 / 0700 all the same.
        if not self.workdir.exists():
            self.workdir.mkdir(parents=True)
            self.workdir.chmod(0o700)
        self.logs.mkdir(mode=0o700, exist_ok=True)
        # Secured as a deployment is (docs/security.md): credentials made for this run, TLS, per-service permissions.
        line_id = self.config_overrides.get("line", "l1")
        self.nats = EmbeddedNats.secured(
            self.workdir / "nats", self.nats_credentials, line_id, log_file=self.logs / "nats.log", own_session=True
        ).start()
        self.opcua_endpoint = f"opc.tcp://127.0.0.1:{free_port()}/lineguard/"
        config = demo_config_dict(
            nats_url=self.nats.url,
            database_url=self.database_url or f"sqlite:///{self.database_path}",
            opcua_endpoint=self.opcua_endpoint,
            deadline_ms=self.deadline_ms,
            plc=self.plc,
        )
        config["nats"].update(self.nats.settings().model_dump(include={"credentials_dir", "tls"}, exclude_none=True))
        # The archive's default folder is relative to the working directory: a run's images belong in its own folder.
        config.setdefault("archive", {"kind": "folder", "path": str(self.workdir / "images")})
        if self.plc_profiles is not None:
            for station in config["stations"]:
                station["plc"]["profiles"] = list(self.plc_profiles)
        _deep_update(config, self.config_overrides)
        # What a deployment's admin does once (`lineguard nats provision`): the services may not make streams.
        try:
            asyncio.run(provision_line(NatsSettings(**config["nats"])))
        except BaseException:
            self.stop()
            raise
        self.config_path = write_config(self.workdir / "line.yaml", config)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._migrate(env)
        for name in SERVICES:
            self.respawn(name)
        try:
            asyncio.run(self._wait_ready(ready_timeout_s))
        except BaseException:
            self.stop()
            raise
        return self

    def respawn(self, name: str) -> subprocess.Popen[bytes]:
        """Start service `name`'s process (again, once it has exited: what a supervisor such as compose's
        `restart: always` does), appending to its log."""
        running = self.processes.get(name)
        if running is not None and running.poll() is None:
            raise LineStartError(f"service {name} is still running (pid {running.pid})")
        if self.config_path is None:
            raise LineStartError("the line was never started: no configuration to start a service with")
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the service writes it until it is stopped
        # By module path, not by import: the library never imports a service.
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", f"lineguard.services.{name}", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        log.close()  # the child holds its own copy
        return self.processes[name]

    def signal(self, name: str, sig: int) -> None:
        """Send `sig` to service `name`'s process (SIGKILL, SIGTERM, SIGSTOP / SIGCONT: the chaos harness)."""
        proc = self.processes[name]
        if proc.poll() is None:
            proc.send_signal(sig)

    def _migrate(self, env: dict[str, str]) -> None:
        """The migrator's step before the writer starts, as compose's one-shot service and Helm's hook run it."""
        with open(self.logs / "migrate.log", "ab") as log:
            # By module path, as the services are: the library never imports a service.
            done = subprocess.run(
                [sys.executable, "-m", RESULTS_ADMIN, "db", "upgrade", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=300,
                check=False,
            )
        if done.returncode != 0:
            self.stop()
            log_path = self.logs / "migrate.log"
            raise LineStartError(f"the database migration failed: {_last_error(log_path)} (log: {log_path})")

    async def _wait_ready(self, timeout_s: float) -> None:
        """Every service heartbeats once it serves: wait for all six on the heartbeat stream."""
        assert self.nats is not None
        nc = await nats.connect(**connect_options(self.nats.settings(), ADMIN))
        js = nc.jetstream()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                self._check_alive()
                try:
                    info = await js.stream_info(stream_name("heartbeat"), subjects_filter=kind_subjects("heartbeat"))
                    seen = {s.rsplit(".", 1)[-1] for s in (info.state.subjects or {})}
                except Exception:  # noqa: BLE001 - the stream not made yet, the server starting: nothing seen yet
                    seen = set()
                if seen >= set(SERVICES):
                    return
                if time.monotonic() > deadline:
                    missing = ", ".join(sorted(set(SERVICES) - seen))
                    raise LineStartError(f"services not ready after {timeout_s:.0f}s: {missing} (logs in {self.logs})")
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                log = self.logs / f"{name}.log"
                raise LineStartError(f"service {name} exited with {proc.returncode}: {_last_error(log)} (log: {log})")

    def stop(self, timeout_s: float = 20.0) -> dict[str, int | None]:
        """SIGTERM the services that publish (each answers and publishes what it holds), and once they are gone the
        results service (which writes everything on the bus, acks included, before it stops); then stop NATS.

        Stopped all at once, the results service could stop before the gateway's last acks reached the bus, and
        the rows of parts the PLC got would say it never did."""
        codes = self._terminate([n for n in self.processes if n != "results"], timeout_s)
        codes.update(self._terminate([n for n in self.processes if n == "results"], timeout_s))
        if self.nats is not None:
            self.nats.stop()
        return {name: codes[name] for name in self.processes}

    def _terminate(self, names: list[str], timeout_s: float) -> dict[str, int | None]:
        for name in names:
            if self.processes[name].poll() is None:
                self.processes[name].send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout_s
        for name in names:
            proc = self.processes[name]
            try:
                codes[name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def __enter__(self) -> LocalLine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _last_error(log: Path) -> str:
    """The cause from the service's last error log line (JSON), else the log's last line."""
    lines = log.read_text(errors="replace").splitlines()
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
            return str(entry.get("error") or entry.get("event"))
    return lines[-1] if lines else "no output"


def _deep_update(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value

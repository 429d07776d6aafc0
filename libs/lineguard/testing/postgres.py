"""A throwaway PostgreSQL database per test run, dropped afterwards (or, for a test of both dialects, SQLite's file)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

ADMIN_URL_ENV = "LINEGUARD_TEST_PG"
DEFAULT_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def throwaway_database(admin_url: str | None = None) -> Iterator[str]:
    """Create an empty database, yield its SQLAlchemy URL, drop it on exit."""
    admin = admin_url or os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN)
    name = f"lineguard_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def empty_database(dialect: str, folder: Path) -> Iterator[str]:
    """An empty database's URL: "sqlite", a new file in `folder`; "postgresql", a throwaway_database."""
    if dialect == "sqlite":
        yield f"sqlite:///{folder / 'lineguard.db'}"
    elif dialect == "postgresql":
        with throwaway_database() as url:
            yield url
    else:
        raise ValueError(f"dialect {dialect!r}: sqlite or postgresql")


def _admin_url(url: str) -> str:
    """The maintenance database of the server `url`'s database is on (the shared server, or a cluster's own)."""
    return make_url(url).set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)


def _admin(url: str, sql: str) -> None:
    with psycopg.connect(_admin_url(url), autocommit=True) as conn:
        conn.execute(sql)


def take_database_away(url: str) -> None:
    """An outage of one database (a throwaway one, never the server): new connections refused, open ones cut."""
    _admin(url, f'ALTER DATABASE "{make_url(url).database}" ALLOW_CONNECTIONS false')
    cut_connections(url)


def cut_connections(url: str, *, busy_only: bool = False) -> list[str]:
    """pg_terminate_backend on the connections to one database; the state each was in when cut.

    busy_only: only those running a statement or inside a transaction ('active', 'idle in transaction'),
    that is, a writer cut mid-batch."""
    states = ("active", "idle in transaction") if busy_only else None
    with psycopg.connect(_admin_url(url), autocommit=True) as conn:
        # The backends chosen first, then cut one by one: within one WHERE clause PostgreSQL may call
        # pg_terminate_backend before the other conditions, on any backend of the server.
        found = conn.execute(
            "SELECT pid, state FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (make_url(url).database,),
        ).fetchall()
        return [
            state or ""
            for pid, state in found
            if (states is None or state in states)
            and conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        ]


def give_database_back(url: str) -> None:
    _admin(url, f'ALTER DATABASE "{make_url(url).database}" ALLOW_CONNECTIONS true')


def _postgres_bin(tool: str) -> Path:
    """A server binary of the newest PostgreSQL installed (Debian keeps them out of PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise FileNotFoundError(f"{tool}: no PostgreSQL server installed under /usr/lib/postgresql")
    return found[-1]


class OwnCluster:
    """A PostgreSQL cluster of the test's own (initdb into a folder, on a free loopback port), so that a test may
    SIGKILL its postmaster, as a power cut or the OOM killer does, and start it again (crash recovery from the WAL).

    The shared server is never touched. As root, the cluster runs as the `postgres` user (initdb refuses root), in
    a folder of its own under the system's temporary folder (pytest's tmp_path is root's alone, mode 0700)."""

    def __init__(self) -> None:
        from lineguard.natsserver import free_port

        self.folder = Path(tempfile.mkdtemp(prefix="lineguard-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/lineguard"
        self._as: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *argv: str | Path) -> None:
        done = subprocess.run([*self._as, *map(str, argv)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr or done.stdout}")

    def __enter__(self) -> OwnCluster:
        if self._as:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(_postgres_bin("initdb"), "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync")
        self.start()
        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE lineguard")
        return self

    def _admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server (after a kill: it replays its WAL first) and wait until it takes connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=on"
        self._run(
            _postgres_bin("pg_ctl"), "-D", self.data, "-o", options, "-l", self.folder / "server.log", "-w", "start"
        )

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: no shutdown checkpoint, open transactions lost, the stale pid
        file left behind, as after a crash."""
        pid = self.postmaster_pid()
        for victim in [pid, *_children(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._run(_postgres_bin("pg_ctl"), "-D", self.data, "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the postmaster's backends), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name, in parentheses, may hold spaces: the fields after its closing one are plain.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

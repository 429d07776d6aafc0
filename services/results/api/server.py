"""Serving the API with uvicorn, in the results service's event loop or in `lineguard-api`'s own.

The socket is bound here, before uvicorn starts: a port in use is an error at start with the
address named, not uvicorn's sys.exit from inside a task. Signals stay the service's own."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from sqlalchemy import Engine

from lineguard.config import LineConfig
from lineguard.config.model import ApiSettings
from lineguard.services.results.api.app import create_app
from lineguard.services.results.dashboard.live import LiveFeed


class ApiBindError(OSError):
    pass


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The process's SIGTERM belongs to whoever runs it (the service's graceful stop): stopping is should_exit.
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP, and without
    # it uvicorn's response (headers and body written apart) waits out the client's delayed ACK, ~40 ms a request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ApiBindError(f"the API cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class ApiServer:
    """The API on a bound socket; `serve()` until `stop()`."""

    def __init__(
        self, engine: Engine, settings: ApiSettings, line: LineConfig | None = None, feed: LiveFeed | None = None
    ) -> None:
        self.socket = bind(settings.host, settings.port)
        self.port: int = self.socket.getsockname()[1]
        self.feed = feed if feed is not None or line is None else LiveFeed.of(line)
        config = uvicorn.Config(
            create_app(engine, settings, line, self.feed),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(config)

    async def serve(self) -> None:
        try:
            await self._server.serve(sockets=[self.socket])
        finally:
            self.socket.close()

    def stop(self) -> None:
        if self.feed is not None:  # ends the dashboard's event streams, which would hold the shutdown
            self.feed.close()
        self._server.should_exit = True

"""What every service process does around its own work.

A service is a `setup(ctx)` coroutine that registers its consumers and tasks on
a `ServiceContext`; `service_main(name, setup)` does the rest: command line,
configuration, logs, /metrics and health, the bus, heartbeats, and a graceful
stop on SIGTERM: the service reports not ready, runs its `before_stop` steps while it
still serves (the gateway answers the parts in flight), then its workers finish the
message in hand and hand the rest back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from google.protobuf.message import Message

from lineguard import __version__
from lineguard.bus import Bus, Delivery, Handler, Worker
from lineguard.config import ConfigError, LineConfig, ServiceSettings, load_config
from lineguard.contracts import heartbeat_subject, msg_id, now_ns, past_deadline, subject
from lineguard.runtime import tracing
from lineguard.runtime.duplicates import report_duplicate
from lineguard.runtime.http import HealthServer
from lineguard.runtime.logging import configure_logging
from lineguard.runtime.metrics import PUBLISHED, READY, STALE_SKIPPED
from lineguard.v1.common_pb2 import Part
from lineguard.v1.heartbeat_pb2 import HealthStatus, Heartbeat

log = structlog.get_logger("lineguard.runtime")


@dataclass
class ServiceContext:
    name: str
    config: LineConfig
    bus: Bus
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    workers: list[Worker[Any]] = field(default_factory=list)
    tasks: list[Coroutine[Any, Any, None]] = field(default_factory=list)
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    finishing: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    ready: bool = False
    not_ready_reason: str = "starting"
    # Sent in every heartbeat: what the service runs, and (degraded) why it is not what was asked for.
    detail: str = ""
    degraded: bool = False

    @property
    def settings(self) -> ServiceSettings:
        return getattr(self.config.services, self.name)

    def consume(
        self,
        kind: str,
        message_type: type[Message],
        handler: Handler[Any],
        *,
        max_ack_pending: int = 1000,
        retry_forever: bool = False,
    ) -> Worker[Any]:
        """Handle every `lg.<kind>.<line>.*` message with `handler` (see lineguard.bus.worker)."""
        worker = Worker(
            self.bus,
            kind=kind,
            line=self.config.line,
            message_type=message_type,
            handler=handler,
            max_ack_pending=max_ack_pending,
            retry_forever=retry_forever,
            stations=[s.id for s in self.config.stations],
        )
        self.workers.append(worker)
        return worker

    def run_task(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background loop of the service's own for as long as it runs."""
        self.tasks.append(coro)

    def on_stop(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run `cleanup` once the workers have stopped, before the bus closes."""
        self.cleanups.append(cleanup)

    def before_stop(self, finish: Callable[[], Awaitable[None]]) -> None:
        """Run `finish` when a stop is asked for, while consumers and tasks still run; it bounds its own wait."""
        self.finishing.append(finish)

    def deadline_ms(self, part: Part) -> int | None:
        """The deadline `part` is judged by: the one the gateway stamped from its recipe version (the version the
        decision service judges it by, whatever is activated meanwhile), else its recipe's in the line's YAML; None
        for a recipe the YAML lacks on a part that carries none."""
        if part.deadline_ms:
            return part.deadline_ms
        recipe = self.config.recipes.get(part.recipe_id)
        return recipe.deadline_ms if recipe is not None else None

    def is_stale(self, delivery: Delivery[Any]) -> bool:
        """True (logged, counted) when the part's deadline has passed: skip the work, ack the message."""
        part = delivery.message.part
        deadline_ms = self.deadline_ms(part)
        if deadline_ms is None or not past_deadline(part, deadline_ms):
            return False
        STALE_SKIPPED.labels(self.name, delivery.kind).inc()
        log.warning(
            "skipping a part whose verdict is already due",
            kind=delivery.kind,
            late_ms=round((now_ns() - part.triggered_unix_ns) / 1e6 - deadline_ms, 1),
        )
        return True

    async def publish(self, kind: str, message: Message, *, stage: str | None = None) -> None:
        """Publish a message about one part to `lg.<kind>.<line>.<station>`, id'd by inspection + stage."""
        part = message.part  # type: ignore[attr-defined]
        subj, mid = subject(kind, part.line, part.station), msg_id(part.inspection_id, stage or kind)
        payload = message.SerializeToString()
        ack = await self.bus.publish(subj, payload, msg_id=mid)
        if ack.duplicate:
            await report_duplicate(self.bus.js, self.name, kind, subj, mid, payload, ack)
        PUBLISHED.labels(self.name, kind).inc()


Setup = Callable[[ServiceContext], Awaitable[None]]


async def run_service(
    name: str,
    config: LineConfig,
    setup: Setup,
    *,
    stopping: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run one service until SIGTERM / SIGINT (or until `stopping` is set); `ready` is set once it serves."""
    traced = tracing.configure(config.tracing, name, config.line)
    try:
        await _run_service(name, config, setup, stopping, ready)
    finally:
        if traced:
            # Off the event loop: the last export may wait on the collector for up to tracing.timeout_s.
            await asyncio.to_thread(tracing.shutdown)


async def _run_service(
    name: str, config: LineConfig, setup: Setup, stopping: asyncio.Event | None, ready: asyncio.Event | None
) -> None:
    bus = await Bus.connect(config.nats, name)
    # The stop asked for; ctx.stopping is set once the service's before_stop steps are done.
    requested = stopping or asyncio.Event()
    ctx = ServiceContext(name=name, config=config, bus=bus)
    settings = ctx.settings
    health = HealthServer(settings.http_host, settings.http_port, lambda: ctx.ready, lambda: ctx.not_ready_reason)
    port = await health.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, requested.set)
    log.info(
        "service starting",
        version=__version__,
        nats=config.nats.url,
        http_port=port,
        pid=os.getpid(),
        tracing=config.tracing.endpoint or "off",
    )
    running: list[asyncio.Task[None]] = []
    try:
        await setup(ctx)
        for worker in ctx.workers:
            await worker.start()
        running = [asyncio.create_task(w.run(ctx.stopping), name=f"{name}-{w.kind}") for w in ctx.workers]
        running += [asyncio.create_task(t) for t in ctx.tasks]
        running.append(asyncio.create_task(_heartbeat(ctx)))
        ctx.ready = True
        READY.labels(name).set(1)
        if ready is not None:
            ready.set()
        log.info("service ready", consumes=[w.kind for w in ctx.workers])
        stop_wait = asyncio.create_task(requested.wait())
        done, _ = await asyncio.wait([stop_wait, *running], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_wait and task.exception() is not None:
                log.error("a service task failed; stopping", task=task.get_name(), error=repr(task.exception()))
                raise task.exception()  # type: ignore[misc]
        ctx.ready = False
        READY.labels(name).set(0)
        ctx.not_ready_reason = "stopping"
        for finish in ctx.finishing:
            log.info("finishing before the stop", step=getattr(finish, "__qualname__", repr(finish)))
            await finish()
    finally:
        ctx.ready = False
        READY.labels(name).set(0)
        ctx.stopping.set()
        log.info("service stopping")
        # Workers notice `stopping` at once (their pull request goes with it) and finish the message in hand.
        if running:
            _, pending = await asyncio.wait(running, timeout=10)
            for task in pending:
                task.cancel()
        else:  # the setup or a worker's start failed: the loops it registered never ran (and would warn, unawaited)
            for coro in ctx.tasks:
                coro.close()
        for cleanup in reversed(ctx.cleanups):
            with contextlib.suppress(Exception):
                await cleanup()
        await bus.close()
        await health.stop()
        log.info("service stopped")


async def _heartbeat(ctx: ServiceContext) -> None:
    instance = f"{socket.gethostname()}:{os.getpid()}"
    seq = 0
    subj = heartbeat_subject(ctx.config.line, ctx.name)
    while not ctx.stopping.is_set():
        seq += 1
        status = HealthStatus.HEALTH_STATUS_DEGRADED if ctx.degraded else HealthStatus.HEALTH_STATUS_OK
        beat = Heartbeat(
            service=ctx.name,
            instance=instance,
            line=ctx.config.line,
            sequence=seq,
            sent_unix_ns=now_ns(),
            status=status,
            version=__version__,
            detail=ctx.detail,
        )
        with contextlib.suppress(Exception):  # a missed heartbeat is not worth stopping for
            await ctx.bus.publish(subj, beat, msg_id=f"hb:{instance}:{seq}")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ctx.stopping.wait(), timeout=ctx.settings.heartbeat_s)


def service_main(name: str, setup: Setup) -> None:
    """The console script `lineguard-<name>`."""
    app = typer.Typer(add_completion=False, help=f"lineguard {name} service")

    @app.command()
    def _main(
        config: Annotated[
            Path | None, typer.Option("--config", "-c", help="the line's YAML (default $LINEGUARD_CONFIG)")
        ] = None,
        validate_config: Annotated[
            bool, typer.Option("--validate-config", help="check the configuration and exit")
        ] = False,
    ) -> None:
        try:
            cfg = load_config(config)
        except ConfigError as exc:
            typer.echo(f"configuration error:\n{exc}", err=True)
            raise typer.Exit(2) from None
        if validate_config:
            typer.echo(f"{cfg.line}: configuration is valid ({len(cfg.stations)} stations, {len(cfg.recipes)} recipes)")
            return
        configure_logging(name, cfg.log_level)
        try:
            asyncio.run(run_service(name, cfg, setup))
        except KeyboardInterrupt:
            pass
        except Exception as exc:
            log.exception("service failed", error=f"{type(exc).__name__}: {exc}")
            raise typer.Exit(1) from None

    app()

"""Is the line behind the gateway alive? The services' heartbeats on the bus say, and a station whose services are
silent goes to Error (every PLC protocol shows it: endpoint.py's set_error).

Plain bookkeeping, no I/O (service.py feeds it heartbeats and the bus's connection state, and applies what it
says). A station needs capture, inference, ocr and decision (`gateway.watch_services`); one that has not beaten for
`gateway.missed_heartbeats` x its own `services.<name>.heartbeat_s` is down. A service is watched from its first
heartbeat the gateway sees (the gateway may start first; a part triggered before is FAIL / TIMEOUT at its deadline,
fail safe). While the gateway's own bus connection is down no heartbeat can arrive: silence then proves nothing,
and the clocks start again when the connection is back."""

from __future__ import annotations

from dataclasses import dataclass, field

from lineguard.config import LineConfig


@dataclass
class ServiceWatch:
    timeouts_s: dict[str, float]  # service -> how long it may be silent
    seen: dict[str, float] = field(default_factory=dict)  # service -> monotonic time of its last heartbeat

    @classmethod
    def of(cls, config: LineConfig) -> ServiceWatch:
        beats = config.gateway.missed_heartbeats
        return cls({s: beats * getattr(config.services, s).heartbeat_s for s in config.gateway.watch_services})

    def beat(self, service: str, now: float) -> None:
        if service in self.timeouts_s:
            self.seen[service] = now

    def bus_back(self, now: float) -> None:
        """The gateway's bus connection is back: silence while it was away is not the services'."""
        for service in self.seen:
            self.seen[service] = now

    def reason(self, now: float) -> str | None:
        """Why the stations are in Error (the silent services), or None while every watched service beats."""
        # The same text for as long as the same services are silent: the stations show it once per change.
        silent = [
            f"{service} (no heartbeat for over {self.timeouts_s[service]:g} s)"
            for service, seen in sorted(self.seen.items())
            if now - seen > self.timeouts_s[service]
        ]
        return "service down: " + ", ".join(silent) if silent else None

"""What becomes of a message whose handling failed: one rule for every consumer.

- `BadMessage`: it can never be handled: dead-lettered at once, its text the reason;
- `HandBack`: this instance cannot handle it now (it is stopping): handed back at once, never given up on;
- anything else: retried after a delay (a `Retry`'s own, else `nak_delay_s`); once it has been delivered
  `max_deliver` times it is dead-lettered with the cause, except that a consumer made to retry forever
  never gives up on `Retry` (a store whose outage JetStream should buffer, however long).

`Delivery.fail` (lineguard.bus.worker) applies it; this module only decides, so it is tested without a server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lineguard.bus.errors import BadMessage, HandBack, Retry

Action = Literal["dead_letter", "give_up", "retry", "hand_back"]
Outcome = Literal["retry", "dead"]  # the worker's metrics label for a failed message


@dataclass(frozen=True)
class Settlement:
    """Nak the message after `delay_s` (retry, hand_back) or dead-letter it with `reason` (dead_letter, give_up)."""

    action: Action
    delay_s: float = 0.0
    reason: str = ""

    @property
    def outcome(self) -> Outcome:
        return "dead" if self.action in ("dead_letter", "give_up") else "retry"


def settle_failure(
    exc: BaseException, *, tries: int, max_deliver: int, nak_delay_s: float, retry_forever: bool = False
) -> Settlement:
    """The settlement of a message delivered `tries` times whose handling raised `exc`."""
    if isinstance(exc, BadMessage):
        return Settlement("dead_letter", reason=str(exc))
    if isinstance(exc, HandBack):
        return Settlement("hand_back")
    if tries >= max_deliver and not (retry_forever and isinstance(exc, Retry)):
        return Settlement("give_up", reason=f"gave up after {tries} deliveries: {describe(exc)}")
    delay = exc.delay_s if isinstance(exc, Retry) and exc.delay_s is not None else nak_delay_s
    return Settlement("retry", delay_s=delay)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

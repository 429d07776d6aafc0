"""OPC UA subscriptions that sleep while nothing happens.

asyncua's server runs each subscription as a loop that wakes every publishing interval to look for notifications:
a PLC subscribed at 10 ms (lineguard's simulated PLC's, a usual choice) costs the gateway 100 wake-ups a second,
~27 ms of CPU a second with nothing to send (benchmarks/line_messages.py --idle, docs/benchmarks.md), per
subscription. A quiet subscription sleeps instead until a notification is queued (or its publishing is enabled),
its keep-alive falls due (MaxKeepAliveCount intervals without a message, as asyncua counts them) or it owes a
publish that no Publish request was there for. A notification is sent at the first moment the interval allows:
at once when the last publish is an interval old or more, else when it is (the loop's cycle, taken from the last
publish), never more often than once an interval; what is queued in between goes in the same message. A
subscription whose client sends no Publish requests is counted cycle by cycle as asyncua does (its lifetime).

Only the gateway's own servers get it (`make_quiet`): a bare asyncua server in the same process (a benchmark's raw
side, a test's) keeps asyncua's loop. It relies on asyncua's InternalSubscription internals (pinned in
pyproject.toml): its counters, `_trigger_publish` and `_subscription_loop`."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from asyncua import Server
from asyncua.server import subscription_service
from asyncua.server.address_space import AddressSpace
from asyncua.server.internal_subscription import InternalSubscription

# The address spaces of the servers whose subscriptions are quiet.
_QUIET: weakref.WeakSet[AddressSpace] = weakref.WeakSet()


class QuietSubscription(InternalSubscription):
    """asyncua's subscription, woken by what it has to send rather than by a timer (for a quiet server's)."""

    def __init__(self, data: Any, aspace: AddressSpace, *args: Any, **kwargs: Any) -> None:
        super().__init__(data, aspace, *args, **kwargs)
        self._quiet = aspace in _QUIET
        self._wake = asyncio.Event()

    async def _trigger_publish(self) -> None:
        self._wake.set()
        await super()._trigger_publish()

    async def _subscription_loop(self) -> None:
        if not self._quiet:
            await super()._subscription_loop()
            return
        try:
            await self._quiet_loop()
        except asyncio.CancelledError:
            self.logger.info("exiting _subscription_loop for %s", self.data.SubscriptionId)
            raise
        except Exception:
            self.logger.exception("Exception in subscription loop")
            raise

    async def _quiet_loop(self) -> None:
        period = self.data.RevisedPublishingInterval / 1000.0
        last = time.monotonic()
        await self.publish_results()
        while not self._closing:
            if self._publish_cycles_count > 0:
                # A publish is owed and no request was there: every cycle counts towards the lifetime, as asyncua's.
                await self._sleep_until(last + period)
                last = max(last + period, time.monotonic() - period)
                await self.publish_results()
                continue
            cycles = max(1, self.data.RevisedMaxKeepAliveCount - self._keep_alive_count)
            woken = await self._wait(last + cycles * period)
            if woken:
                self._wake.clear()
                await self._sleep_until(last + period)  # at most one message an interval
            else:
                # The quiet cycles asyncua would have counted one by one: the next is the keep-alive's.
                self._keep_alive_count = max(self._keep_alive_count, self.data.RevisedMaxKeepAliveCount - 1)
            last = time.monotonic()
            await self.publish_results()

    async def _wait(self, until: float) -> bool:
        """True when woken by a notification before `until` (monotonic), False at `until`."""
        if self._wake.is_set():
            return True
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, until - time.monotonic()))
        except TimeoutError:
            return False
        return True

    @staticmethod
    async def _sleep_until(until: float) -> None:
        delay = until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def make_quiet(server: Server) -> None:
    """Give `server`'s subscriptions from now on the quiet loop (before clients subscribe: at its start)."""
    # asyncua builds every subscription from this module-level name; the class keeps asyncua's loop for servers not
    # registered here, so replacing it process-wide changes only the gateway's.
    subscription_service.InternalSubscription = QuietSubscription  # type: ignore[misc]
    _QUIET.add(server.iserver.aspace)

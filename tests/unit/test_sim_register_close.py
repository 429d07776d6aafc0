"""The simulated register PLC stops even when a cancel is swallowed by Python 3.11's asyncio.wait_for (a reply that
completes as the cancel lands is returned instead of the cancel raised): a test that closed it then hung for good."""

from __future__ import annotations

import asyncio
import time

from lineguard.sim.modbus import modbus_layout
from lineguard.sim.registers import RegisterPlc


async def test_close_ends_a_poll_whose_cancel_wait_for_swallowed() -> None:
    layout = modbus_layout()
    memory = bytearray(2 * 0x10000)
    replies: list[asyncio.Future[bytes]] = []

    async def read(start: int, end: int) -> bytes:
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        replies.append(reply)
        return await asyncio.wait_for(reply, timeout=5)  # as pymodbus's execute waits for its response

    async def write(offset: int, data: bytes) -> None:
        memory[offset : offset + len(data)] = data

    plc = RegisterPlc(layout, read, write, heartbeat_s=0.01)
    await plc.start()
    while not replies:
        await asyncio.sleep(0.001)
    start, end = layout.gateway_span()
    # The stop's cancel lands first, then the reply completes before the poll's task runs again: wait_for returns
    # the reply and the cancel is gone. Later polls are never answered, so only the stop can end the loop.
    closing = asyncio.ensure_future(plc.close())
    replies[-1].set_result(bytes(memory[start:end]))
    started = time.monotonic()
    # (On a timeout wait_for cancels the close, and a close awaiting its tasks would pass that cancel on and
    # return: the time taken is what tells.)
    await asyncio.wait_for(closing, timeout=3)
    assert time.monotonic() - started < 1.0
    assert all(task.done() for task in plc._tasks)

"""The gateway keeps what it holds for good out of the garbage collector's full collections (gc.freeze at ready).

With both OPC UA profiles a full collection walked ~1,000,000 objects here, ~0.5 s of CPU with the event loop held
(benchmarks/gateway.py --breakdown, docs/benchmarks.md): every PLC of the gateway waited that long. Real gateway and
nats-server (conftest's started_gateway)."""

from __future__ import annotations

import gc
from pathlib import Path


async def test_a_running_gateway_leaves_its_address_space_out_of_full_collections(
    tmp_path: Path, started_gateway
) -> None:
    gc.unfreeze()  # whatever an earlier test left: this one counts the gateway's
    async with started_gateway(tmp_path, quick_deadline_ms=300) as gateway:
        assert gateway.service is not None
        frozen = gc.get_freeze_count()
        # The address space of both profiles (the 40100 NodeSet's types and instances), the libraries: frozen;
        # what a full collection still walks is what came after, a small part of it.
        assert frozen > 100_000, frozen
        assert len(gc.get_objects()) < frozen / 4, (len(gc.get_objects()), frozen)
    # Stopped: back under the collector, so a process that starts many gateways (a test run) frees each one's.
    assert gc.get_freeze_count() == 0

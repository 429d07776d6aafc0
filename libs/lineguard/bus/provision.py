"""Making a line's streams, the model registry's buckets and the recipe store's, as the admin identity
(`lineguard nats provision`).

On an open server every service makes what it needs at start (lineguard.bus.streams.provision_streams); on a
secured one only the admin identity may, once per deployment and again after the limits in the configuration
change. The services then only check that the streams are there."""

from __future__ import annotations

from pathlib import Path

import nats

from lineguard.bus.client import connect_options
from lineguard.bus.permissions import ADMIN
from lineguard.bus.streams import line_streams, provision_streams
from lineguard.config import NatsSettings
from lineguard.recipes.store import provision_recipes
from lineguard.registry import provision_registry


async def provision_line(settings: NatsSettings, *, seed: Path | None = None) -> list[str]:
    """Create or update the streams, the registry's buckets and the recipe store as admin (`seed`, else the admin's
    seed in `credentials_dir`); the names of the streams provisioned."""
    nc = await nats.connect(**connect_options(settings, ADMIN, seed=seed), name="lineguard-provision")
    try:
        js = nc.jetstream()
        specs = line_streams(settings)
        await provision_streams(js, specs)
        await provision_registry(js)
        await provision_recipes(js)
        return [spec.name for spec in specs]
    finally:
        await nc.close()

"""The PLC protocols the gateway speaks, one module each (the PLC_PROTOCOLS seam, lineguard.config.seams).

A protocol module declares `KEY` (what a station's `plc.protocol` names), `Settings` (a subclass of
lineguard.config.seams.PlcSettings with `protocol: Literal[KEY]` and the protocol's own options) and
`open_endpoints(stations, on_trigger) -> list[PlcEndpoint]` (lineguard.services.gateway.endpoint), and
is listed once, as an entry point in pyproject.toml ([project.entry-points."lineguard.plc"])."""

"""Fuzzing the decoders every input meets (issue 13), with hypothesis: whatever arrives, a decoded value or the
decoder's own clear refusal, never another exception (a traceback in a service is a message lost or a crash loop).

- the bus: every service reads every kind through lineguard.bus.worker.Worker, whose _decode is the one protobuf
  decoder path (and the subject / station check); random bytes and mutated valid messages of each kind it consumes,
  on a Worker of a real bus: a message, or BadMessage (which the worker dead-letters with its text as the reason);
- image headers (lineguard.imageheader.read_header): random bytes and mutated PNG / JPEG / BMP / TIFF headers: a
  positive size, or HeaderError;
- register decoding (lineguard.contracts.registers, the gateway's Modbus and S7 reads): any bytes of the PLC's span
  decode, and the part id is text or PartIdError with its error code;
- the config loader (lineguard.config.parse_config): random text and random YAML mappings with the config's own keys:
  a LineConfig, or ConfigError whose message renders."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from lineguard.bus import BadMessage, Bus
from lineguard.bus.worker import Worker
from lineguard.config import ConfigError, LineConfig, NatsSettings, parse_config
from lineguard.contracts.registers import PartIdError
from lineguard.imageheader import PNG_SIGNATURE, HeaderError, read_header
from lineguard.sim.modbus import modbus_layout
from lineguard.sim.s7 import s7_layout
from lineguard.testing.fuzz import CONSUMED, FUZZ, decoded, decoders, fuzzed


@pytest.fixture
async def workers(nats_url: str) -> AsyncIterator[dict[str, Worker[Any]]]:
    # Small streams: decoding stores nothing, and JetStream refuses a line's 2 GiB streams on a disk short of space.
    bus = await Bus.connect(NatsSettings(url=nats_url, stream_max_bytes=64 * 1024 * 1024), "fuzz")
    try:
        yield decoders(bus)
    finally:
        await bus.close()


@FUZZ
@given(data=st.data())
async def test_every_consumed_kind_decodes_or_is_refused_with_a_reason(
    workers: dict[str, Worker[Any]], data: st.DataObject
) -> None:
    drawn = fuzzed(data)
    message = decoded(workers, drawn)
    if isinstance(message, BadMessage):
        assert str(message), "a dead letter's reason may not be empty"
        return
    assert isinstance(message, CONSUMED[drawn.kind])
    part = getattr(message, "part", None)
    if part is not None:  # what passed names the configured station on its own subject
        assert part.inspection_id and (part.line, part.station) == ("l1", "s1") and drawn.station == "s1"


IMAGE_STARTS = [PNG_SIGNATURE + struct.pack(">I", 13) + b"IHDR", b"\xff\xd8\xff\xc0", b"BM", b"II*\x00", b"MM\x00*"]


@FUZZ
@given(start=st.sampled_from([b"", *IMAGE_STARTS]), rest=st.binary(max_size=512))
def test_an_image_header_gives_a_size_or_a_header_error(start: bytes, rest: bytes) -> None:
    try:
        header = read_header(start + rest)
    except HeaderError as refused:
        assert str(refused)
        return
    assert header.width > 0 and header.height > 0 and header.encoding in {"png", "jpeg", "bmp", "tiff"}


@FUZZ
@given(style=st.sampled_from(["modbus", "s7"]), data=st.data())
def test_any_plc_registers_decode_and_a_bad_part_id_names_its_error(style: str, data: st.DataObject) -> None:
    layout = modbus_layout() if style == "modbus" else s7_layout()
    start, end = layout.plc_span()
    fields = layout.decode_plc(data.draw(st.binary(min_size=end - start, max_size=end - start)), start)
    assert 0 <= fields.sequence <= 0xFFFFFFFF and 0 <= fields.recipe <= 0xFFFF
    try:
        text = fields.part_id.text()
    except PartIdError as refused:
        assert refused.code and str(refused)
        return
    assert text.isascii() and len(text) <= layout.part_id_chars


CONFIG_KEYS = ["line", "nats", "stations", "recipes", "database", "model", "gateway", "url", "id", "camera", "plc"]
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(), inner),
    max_leaves=20,
)


@FUZZ
@given(text=st.one_of(st.text(max_size=400), yaml_values.map(lambda v: yaml.safe_dump(v, sort_keys=False))))
def test_any_yaml_is_a_valid_config_or_a_clear_error(text: str) -> None:
    try:
        config = parse_config(text, "fuzz.yaml")
    except ConfigError as refused:
        message = str(refused)
        assert "fuzz.yaml" in message and "Traceback" not in message
        return
    assert isinstance(config, LineConfig)

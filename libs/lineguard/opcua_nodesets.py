"""The OPC 40100 NodeSet's structures in asyncua, for the gateway's server and lineguard's own clients.

asyncua (2.1.0) builds one class for BinaryIdBaseDataType and gives it to its three subtypes (their
definitions in the NodeSet only inherit fields), so it sends a RecipeIdExternalDataType with the base
type's encoding and cannot decode one sent with its own, as a standard client (UaExpert, a PLC) does.
`load_machine_vision_types` loads the definitions and then registers each subtype under its own encoding."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

from asyncua import ua

# subtype of BinaryIdBaseDataType: (DataType, its DefaultBinary encoding), numeric NodeIds in the NodeSet
_BINARY_ID_SUBTYPES: dict[str, tuple[int, int]] = {
    "RecipeIdExternalDataType": (3002, 5002),
    "RecipeIdInternalDataType": (3013, 5268),
    "ConfigurationIdDataType": (3008, 5090),
}


async def load_machine_vision_types(session: Any, mv_idx: int) -> None:
    """`session`: an asyncua Server or Client that has the NodeSet (imported, or on the server it talks to)."""
    # Over a connection, the structures with a field of a subtype (ResultDataType's ExternalRecipeId, ...) cannot be
    # built before the subtypes are registered: asyncua logs each as an error with its traceback, "please report".
    # So a first pass without its log, the subtypes, then a second pass for what the first left, logged as usual.
    with _quiet("asyncua.common.structures104"):
        await session.load_data_type_definitions()
    base = ua.BinaryIdBaseDataType  # type: ignore[attr-defined]  # made by load_data_type_definitions
    # Each name is bound to the base class by then: its "Browsename collision" warning is this rebinding, on purpose.
    with _quiet("asyncua.ua.uatypes"):
        for name, (datatype, encoding) in _BINARY_ID_SUBTYPES.items():
            subtype: type = dataclasses.dataclass(type(name, (base,), {}))
            ua.register_extension_object(
                name,
                ua.NodeId(encoding, mv_idx),  # type: ignore[arg-type]
                subtype,
                ua.NodeId(datatype, mv_idx),  # type: ignore[arg-type]
            )
    await session.load_data_type_definitions()


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def is_decoded_as(value: Any, type_name: str) -> bool:
    """`value` decoded as the NodeSet structure `type_name`; a subtype sent with the base type's encoding (by an
    asyncua client) counts too. By name: a client in the same process reloads the classes."""
    names = {type_name, "BinaryIdBaseDataType"} if type_name in _BINARY_ID_SUBTYPES else {type_name}
    return type(value).__name__ in names

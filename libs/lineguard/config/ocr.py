"""A recipe's identity reads (`recipes.<id>.ocr`): which codes, how long the reading ladder may take, and
the fields read from them with their checks. Each failed check is a reason code the decision uses."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


# A regular expression in the config: one that does not compile is an error at its field path.
Regex = Annotated[str, AfterValidator(_compiles)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldRule(_Strict):
    """One field of the part's identity (a serial, a GTIN, a batch): where it is read and what it must be."""

    source: Literal["code", "text"] = Field(
        "code", description="code: a code's text (or a GS1 element with `ai`); text: a printed line"
    )
    symbology: str | None = Field(None, description="only codes of this zxing format (e.g. DataMatrix); default any")
    ai: str | None = Field(None, pattern=r"^\d{2,4}$", description="GS1 application identifier: 01, 10, 21, 17, 11")
    pattern: Regex | None = Field(None, description="regular expression the value must match in full (FORMAT_MISMATCH)")
    min_length: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=1)
    checksum: str | None = Field(
        None, description="check digit scheme (CHECKSUM): gs1-mod10, digits-mod10, luhn, or one registered"
    )
    match_text: bool = Field(
        False, description="the code's value must equal a printed text line (CODE_TEXT_MISMATCH: a wrong label)"
    )
    unique_window: int = Field(
        0, ge=0, description="a value seen on this line within the last N parts is DUPLICATE_SERIAL; 0: no check"
    )
    required: bool = Field(True, description="nothing read is NO_READ (a FAIL)")

    @field_validator("checksum")
    @classmethod
    def _known_checksum(cls, name: str | None) -> str | None:
        if name is not None:
            from lineguard.ocr import checksums

            if name not in checksums.names():
                raise ValueError(f"unknown checksum {name!r} (known: {', '.join(checksums.names())})")
        return name

    @field_validator("symbology")
    @classmethod
    def _known_symbology(cls, name: str | None) -> str | None:
        return None if name is None else _check_formats([name])[0]

    @model_validator(mode="after")
    def _lengths(self) -> FieldRule:
        if self.min_length and self.max_length and self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} is above max_length {self.max_length}")
        if self.source == "text" and (self.ai or self.symbology or self.match_text):
            raise ValueError("ai, symbology and match_text are for fields read from a code")
        return self


def _check_formats(names: list[str]) -> list[str]:
    from lineguard.ocr.codes import formats_named  # imported when validated: it imports zxing and OpenCV

    formats_named(names)
    return names


class OcrSettings(_Strict):
    formats: list[str] = Field(
        default_factory=list,
        description="zxing formats read (DataMatrix, QRCode, Code128, EAN13, ...): fewer is faster with fewer false "
        "reads, and the ladder stops once each is read; empty: DataMatrix, QR and every 1D format, stop at the "
        "first read",
    )
    budget_ms: float = Field(40.0, gt=0, description="time the reading ladder may take per part")
    fields: dict[str, FieldRule] = Field(
        default_factory=dict, description="the identity fields read and checked; `serial` is the part's serial"
    )
    text_roi: list[int] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="x, y, width, height of the printed line: recognition only (levelled first), about 25 ms; "
        "default: detection + recognition over code_roi, several times slower",
    )
    read_text: bool | None = Field(
        None, description="read printed text; default: when a field has source text or match_text"
    )

    def wants_text(self) -> bool:
        if self.read_text is not None:
            return self.read_text
        return any(rule.source == "text" or rule.match_text for rule in self.fields.values())

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, names: list[str]) -> list[str]:
        return _check_formats(names)

"""Check digits by name, the one registry recipe fields pick theirs from (`fields.<name>.checksum`).

A checksum is a function of the whole value that says whether its check digit is right. Another package
adds one with `register("name", fn)` before the configuration is validated."""

from __future__ import annotations

from collections.abc import Callable

Checksum = Callable[[str], bool]

_CHECKSUMS: dict[str, Checksum] = {}


def register(name: str, check: Checksum) -> None:
    _CHECKSUMS[name] = check


def names() -> list[str]:
    return sorted(_CHECKSUMS)


def get(name: str) -> Checksum:
    try:
        return _CHECKSUMS[name]
    except KeyError:
        raise KeyError(f"unknown checksum {name!r} (known: {', '.join(names())})") from None


def gs1_check_digit(digits: str) -> int:
    """The GS1 mod 10 check digit of `digits` (the value without its last digit): weights 3, 1, 3, ...
    from the right."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10


def gs1_mod10(value: str) -> bool:
    """GTIN-8/12/13/14, SSCC, GLN: all digits, the last one the mod 10 check digit of the others."""
    return len(value) >= 2 and value.isascii() and value.isdigit() and gs1_check_digit(value[:-1]) == int(value[-1])


def luhn(value: str) -> bool:
    """Luhn (mod 10, doubling every second digit from the right): many serial schemes use it."""
    if len(value) < 2 or not (value.isascii() and value.isdigit()):
        return False
    total = 0
    for i, d in enumerate(reversed(value)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def digits_mod10(value: str) -> bool:
    """A serial such as `LG-1234567-8`: the digits of the value, GS1 mod 10 over all but the last. Letters and
    separators are ignored, so the prefix can change without a new checksum."""
    digits = "".join(c for c in value if c.isascii() and c.isdigit())
    return gs1_mod10(digits)


register("gs1-mod10", gs1_mod10)
register("luhn", luhn)
register("digits-mod10", digits_mod10)

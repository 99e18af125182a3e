"""Exact conversion between decimal strings (the human edges) and integers (everything else).

A step is a positive decimal such as "0.01". ``to_steps("1.23", step)`` gives 123; a value that
is not a whole number of steps is an error, never a rounding. No float is ever involved: floats
are refused outright, because ``int(x * 10**n)`` on a float is how exchanges lose money.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_DECIMAL = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?")  # ASCII digits only
MAX_DIGITS = 38


class AmountError(ValueError):
    """A decimal string that cannot be represented exactly (or is not a decimal at all)."""


class Step:
    """A positive decimal step kept as an integer mantissa and a count of decimal places."""

    __slots__ = ("mantissa", "places", "text")

    def __init__(self, text: str) -> None:
        mantissa, places = parse_decimal(text)
        if mantissa <= 0:
            raise AmountError(f"step must be positive, was {text}")
        self.mantissa = mantissa
        self.places = places
        self.text = format_decimal(mantissa, places)

    def __repr__(self) -> str:
        return f"Step({self.text!r})"


def parse_decimal(text: object) -> tuple[int, int]:
    """'12.340' -> (12340, 3). Rejects floats, exponents, empty strings and junk."""
    if not isinstance(text, str):
        raise AmountError(f"expected a decimal string, got {type(text).__name__} {text!r}")
    m = _DECIMAL.fullmatch(text)
    if m is None or (not m.group(2) and not m.group(3)):
        raise AmountError(f"expected a decimal string like '12.34', was {text!r}")
    sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    if len(whole) + len(frac) > MAX_DIGITS:
        raise AmountError(f"too many digits (at most {MAX_DIGITS}): {text!r}")
    value = int(whole + frac or "0")
    return (-value if sign == "-" else value), len(frac)


def format_decimal(mantissa: int, places: int) -> str:
    """(12340, 3) -> '12.340'."""
    if places <= 0:
        return str(mantissa * 10**-places)
    sign = "-" if mantissa < 0 else ""
    digits = str(abs(mantissa)).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def to_steps(text: object, step: Step, what: str = "value") -> int:
    """Number of whole steps in ``text``; AmountError if it is not a multiple of the step."""
    mantissa, places = parse_decimal(text)
    # value = mantissa / 10**places ; steps = value / (step.mantissa / 10**step.places)
    num = mantissa * 10**step.places
    den = step.mantissa * 10**places
    steps, rest = divmod(num, den)
    if rest:
        raise AmountError(f"{what} must be a multiple of {step.text}, was {text}")
    return steps


def from_steps(count: int, step: Step) -> str:
    """Steps back to a decimal string with the step's number of places: 123, '0.01' -> '1.23'."""
    return format_decimal(count * step.mantissa, step.places)


def units_step(decimals: int) -> Step:
    """The step of one minor unit of an asset with ``decimals`` places (8 -> '0.00000001')."""
    return Step(format_decimal(1, decimals))


def ratio_ppm(text: object, what: str = "rate") -> int:
    """A fee rate such as '0.001' as integer parts per million (1000)."""
    return to_steps(text, Step("0.000001"), what)


MAX_INT = 2**63 - 1  # every amount on the wire is a signed 64-bit integer


def positive_field(convert: Callable[[str], int], text: str | None, what: str) -> int:
    """A request's optional positive amount field, converted exactly by ``convert`` (e.g. a
    market's ``price_to_ticks``): 0 when absent; AmountError when off the tick/lot, not
    positive or past 64 bits. The one decimal-field parser of every edge."""
    if text is None:
        return 0
    value = convert(text)
    if value <= 0:
        raise AmountError(f"{what} must be positive, was {text}")
    if value > MAX_INT:
        raise AmountError(f"{what} is too large: {text}")
    return value

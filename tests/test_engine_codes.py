"""The engine's hot-path integer codes (engine/codes.py) are the protocol's enum values: a
renumbered enum member, or a code that drifted, fails here (not in an ``assert`` that
``python -O`` strips)."""

from __future__ import annotations

import pytest

from engine import codes
from protocol.enums import (
    CancelReason,
    ExecType,
    Liquidity,
    OrderStatus,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
    TriggerKind,
)

EXPECTED = {
    "BUY": Side.BUY, "SELL": Side.SELL,
    "LIMIT": OrderType.LIMIT, "MARKET": OrderType.MARKET,
    "GTC": TimeInForce.GTC, "IOC": TimeInForce.IOC, "FOK": TimeInForce.FOK,
    "GTD": TimeInForce.GTD,
    "STOP_LOSS": TriggerKind.STOP_LOSS, "TAKE_PROFIT": TriggerKind.TAKE_PROFIT,
    "NEWEST": StpMode.CANCEL_NEWEST, "OLDEST": StpMode.CANCEL_OLDEST, "BOTH": StpMode.CANCEL_BOTH,
    "E_NEW": ExecType.NEW, "E_PART": ExecType.PARTIAL_FILL, "E_FILL": ExecType.FILL,
    "E_CXL": ExecType.CANCELED, "E_EXP": ExecType.EXPIRED, "E_REPL": ExecType.REPLACED,
    "E_TRIG": ExecType.TRIGGERED,
    "S_NEW": OrderStatus.NEW, "S_PART": OrderStatus.PARTIALLY_FILLED,
    "S_FILLED": OrderStatus.FILLED, "S_CXL": OrderStatus.CANCELED, "S_EXP": OrderStatus.EXPIRED,
    "MAKER": Liquidity.MAKER, "TAKER": Liquidity.TAKER,
    "C_USER": CancelReason.USER, "C_IOC": CancelReason.IOC_REMAINDER,
    "C_FOK": CancelReason.FOK_UNFILLABLE, "C_STP": CancelReason.SELF_TRADE,
    "C_FUNDS": CancelReason.NO_FUNDS, "C_DISCONNECT": CancelReason.DISCONNECT,
    "C_TIME": CancelReason.EXPIRE_TIME, "C_LINKED": CancelReason.LINKED,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_code_is_its_protocol_enum_value(name: str) -> None:
    value = getattr(codes, name)
    assert type(value) is int  # a plain int on the hot path, not the enum member
    assert value == EXPECTED[name].value, (name, value, EXPECTED[name])


def test_every_code_of_the_module_is_checked() -> None:
    defined = {n for n in vars(codes) if n.isupper()}
    assert defined == set(EXPECTED)


def test_no_engine_module_keeps_a_copy_of_them() -> None:
    """engine/codes.py is the one definition: no other engine module assigns these names."""
    import re
    from pathlib import Path

    names = "|".join(sorted(EXPECTED))
    assign = re.compile(rf"^(?:{names})(?:\s*,\s*(?:{names}))*\s*=", re.M)
    engine_dir = Path(codes.__file__).parent
    copies = {p.name: assign.findall(p.read_text()) for p in engine_dir.glob("*.py")
              if p.name != "codes.py"}  # fmt: skip
    assert {k: v for k, v in copies.items() if v} == {}


def test_the_fields_the_core_unpacks_are_the_messages_first_fields() -> None:
    """engine.core reads a NewOrder and a Cancel with one ``astuple()`` and unpacks their first
    fields by position: a field inserted or reordered in protocol/messages.py must fail here."""
    from engine.core import CANCEL_FIELDS, NEW_ORDER_FIELDS
    from protocol.messages import Cancel, NewOrder

    assert NewOrder.__struct_fields__[: len(NEW_ORDER_FIELDS)] == NEW_ORDER_FIELDS
    assert Cancel.__struct_fields__[: len(CANCEL_FIELDS)] == CANCEL_FIELDS

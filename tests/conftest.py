"""Shared fixtures for the engine tests: the default exchange, a fresh engine, and two helpers.

``send(cmd)`` applies one command and returns the messages it produced for its origin. The
origin defaults to ``b"acct<N>"`` for a command that names account N (``b"gw"`` otherwise), so
unsolicited reports to a resting order's owner land in that owner's own list
(``engine.outbox[b"acct2"]``), apart from the reply to the command itself.

``fund(account, USD="1000", BTC="0.5")`` deposits whole-asset decimal amounts, converted with
``Decimal`` here (not with the code under test).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal

import pytest

from engine import build as engine_build
from engine.core import Engine
from protocol.config import Exchange, load
from protocol.messages import Deposit, LedgerReply


def origin_of(cmd: object) -> bytes:
    account = getattr(cmd, "account", None)
    return b"gw" if account is None else f"acct{account}".encode()


def minor_units(decimals: int, text: str) -> int:
    """'1.5' with 8 decimals -> 150000000, exactly; fails on a value finer than the unit."""
    value = Decimal(text).scaleb(decimals)
    assert value == value.to_integral_value(), f"{text} is finer than {decimals} decimals"
    return int(value)


@pytest.fixture
def exchange() -> Exchange:
    return load()


@pytest.fixture
def engine(exchange: Exchange) -> Engine:
    return Engine(exchange)


@pytest.fixture
def send(engine: Engine) -> Callable[..., list]:
    clock = itertools.count(1_000_000)

    def send(cmd: object, origin: bytes | None = None) -> list:
        origin = origin_of(cmd) if origin is None else origin
        box = engine.outbox[origin]
        before = len(box)
        engine.apply(cmd, next(clock), origin)
        return box[before:]

    return send


@pytest.fixture
def fund(engine: Engine, send: Callable[..., list]) -> Callable[..., None]:
    def fund(account: int, **amounts: str) -> None:
        for asset, text in amounts.items():
            units = minor_units(engine.exchange.assets[asset], text)
            (reply,) = send(Deposit(0, account, asset, units))
            assert isinstance(reply, LedgerReply), reply

    return fund


def pytest_report_header() -> str:
    return f"engine build: {engine_build()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # -q hides the header: say it again at the end, where a run's log always shows it
    terminalreporter.write_line(f"engine build: {engine_build()}")

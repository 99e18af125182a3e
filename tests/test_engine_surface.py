"""The engine's one surface (issue 13's first step): the process shell and the journal replay
use ``apply``, ``refuse`` and ``drain`` (plus ``discard_output`` for a replay nobody hears), and
never the handler table or the outbox behind them, so a compiled core can keep both private."""

from __future__ import annotations

import re
from pathlib import Path

from engine.core import Engine
from protocol.config import Exchange
from protocol.enums import RejectCode
from protocol.messages import Balances, BalancesRequest, Deposit, LedgerReply, Ping, Pong, Rejected

ENGINE = Path(__file__).resolve().parent.parent / "engine"


def test_the_shell_and_the_replay_touch_only_the_surface() -> None:
    inner = re.compile(r"\.(handlers|outbox)\b")
    for name in ("server.py", "journal.py"):
        found = [ln.strip() for ln in (ENGINE / name).read_text().splitlines() if inner.search(ln)]
        assert found == [], (name, found)


def test_drain_returns_each_destinations_messages_in_order_and_empties(exchange: Exchange) -> None:
    e = Engine(exchange)
    assert e.apply(Deposit(1, 5, "USD", 100), 10, b"admin") == 1  # a write: its seq
    assert e.apply(BalancesRequest(2, 5), 11, b"web") == 0  # a read
    e.refuse(b"web", 3, RejectCode.MALFORMED, "not a command")
    assert e.apply(Ping(4), 12, b"admin") == 0
    out = dict(e.drain())
    assert [type(m) for m in out[b"admin"]] == [LedgerReply, Pong]
    assert [type(m) for m in out[b"web"]] == [Balances, Rejected]
    assert out[b"web"][1] == Rejected(3, RejectCode.MALFORMED, "not a command")
    assert e.drain() == [] and not e.outbox

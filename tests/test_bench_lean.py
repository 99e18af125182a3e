"""The benchmark's ceiling engine (bench/lean.py) does the engine's work, or its figure means
nothing: on the seeded mixed workload it must end with the same open orders and the same
balances, to the unit, as engine.core (locks, fills at the maker's price, maker/taker fees)."""

from __future__ import annotations

from bench.lean import LeanEngine
from bench.workload import funding, mixed
from engine.core import Engine
from protocol import config


def test_lean_engine_ends_in_the_engines_state_on_the_mixed_workload() -> None:
    ex = config.load()
    cmds = funding(ex, 40) + list(mixed(ex, 30_000, seed=5, accounts=40))
    engine, lean = Engine(ex, epoch=1), LeanEngine(ex)
    trades = 0
    for i in range(0, len(cmds), 256):
        for c in cmds[i : i + 256]:
            assert engine.apply(c, i + 1, b"gw") == lean.handlers[type(c)](c, i + 1, b"gw")
        engine.outbox.clear()
        engine.market_data(i + 1)
        lean.outbox.clear()
        trades += sum(len(t) for t, *_ in lean.market_data(i + 1))
    assert trades > 1_000  # the stream really trades
    assert lean.resting() == {oid: o.leaves for oid, o in engine.orders.items()}
    assert lean.accounts == engine.ledger.accounts
    engine.validate()

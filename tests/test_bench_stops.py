"""The core benchmark's stop stream (bench.workload.mixed_with_stops) must really exercise stop
orders, or its figure says nothing about them: about a tenth of its new orders are stops, of
every kind, all accepted, and the wandering price triggers some of them, counted here from the
engine's own reports, not from the generator's bookkeeping. The cascade measurement must
trigger every stop it set up."""

from __future__ import annotations

from bench.engine_bench import CoreStream, cascade_run, stops_pass
from bench.workload import funding, mixed_with_stops
from engine.core import Engine
from protocol import config
from protocol.enums import ExecType
from protocol.messages import ExecReport, NewOrder, Rejected


def test_the_stop_stream_places_stops_of_every_kind_and_some_trigger() -> None:
    ex = config.load()
    plan = mixed_with_stops(ex, 20_000, seed=3, accounts=20)
    cmds = plan.commands
    engine = Engine(ex, epoch=1)
    for d in funding(ex, 20):
        engine.apply(d, 1, b"gw")
    stops = {c.req: c for c in cmds if type(c) is NewOrder and c.trigger}
    new_orders = sum(1 for c in cmds if type(c) is NewOrder)
    kinds = {(c.trigger, c.side, c.type) for c in stops.values()}
    rejected = triggered = 0
    for i in range(0, len(cmds), 256):
        for c in cmds[i : i + 256]:
            engine.apply(c, i + 2, b"gw")
        for m in engine.outbox[b"gw"]:
            if type(m) is Rejected and m.req in stops:
                rejected += 1
            elif type(m) is ExecReport and m.exec_type == ExecType.TRIGGERED:
                triggered += 1
        engine.outbox.clear()
        engine.market_data(i + 2)
    assert 0.07 < len(stops) / new_orders < 0.13
    assert kinds == {(t, s, o) for t in (1, 2) for s in (1, 2) for o in (1, 2)}
    assert rejected == 0  # planned against the last price: every stop waits
    assert triggered > 100  # the price wanders through some of them
    assert triggered == plan.triggered() and len(stops) == plan.placed()
    assert sum(len(b.stop_orders) for b in engine.books.values()) == plan.waiting_at_end > 0
    engine.validate()


def test_the_benchmarks_stop_pass_sees_what_was_planned() -> None:
    ex = config.load()
    stream = CoreStream(ex, 3_000, 10_000, 2, 20, stop_share=0.10)
    assert stream.stops is not None
    got = stops_pass(ex, stream)
    assert got["placed"] == stream.stops.placed(3_000) > 0
    assert got["triggered"] == stream.stops.triggered(3_000) > 0
    assert got["rejected_stops"] == 0
    assert got["all"]["n"] == 10_000


def test_the_cascade_triggers_every_stop_with_one_order() -> None:
    got = cascade_run(config.load(), 200, accounts=10)
    assert got["ms"] > 0
    assert got["messages"] >= 3 * 200  # per stop: TRIGGERED, its fill, the maker's fill

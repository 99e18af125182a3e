"""The engine, in whichever build runs (``engine.build()``), loads a journal and a snapshot
written by the engine before the compiled core (``tests/data/engine_v1``) into the same state,
answers that fixture's stream with the same bytes, and gives the same replies and state as the
other build for seeded streams (the differential test: this process against a child running
the other build).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine import journal
from engine.core import Engine
from protocol.config import loads
from protocol.enums import RejectCode
from protocol.messages import (
    ExecReport,
    Executions,
    FillsReply,
    OpenOrders,
    OrderHistory,
    OrderInfo,
    OrderState,
    Rejected,
)
from tests.engine_streams import run, stream

APPENDED_ORDER_STATE = (
    "trigger", "stop_price", "waiting", "expire_ts", "display_qty", "trailing_bps",
    "trail_price", "list_id",
)  # fmt: skip
APPENDED_EXEC_REPORT = ("order_type", "trigger", "stop_price")

FIXTURE = Path(__file__).parent / "data" / "engine_v1"
EXPECT = json.loads((FIXTURE / "expected.json").read_text())
EXCHANGE = loads((FIXTURE / "exchange.toml").read_text())
ROOT = Path(__file__).resolve().parent.parent


def v1_hash(e: Engine) -> str:
    """``state_hash()`` as the engine of the fixture computed it: the state's fields of then
    (the ones appended since, the markets' last prices and waiting stop orders, left out;
    orders without the appended order fields encode as they did)."""
    import hashlib

    import msgspec

    then = list(msgspec.structs.astuple(e.state()))[:7]
    return hashlib.blake2b(msgspec.msgpack.encode(then), digest_size=16).hexdigest()


def v1_replies(out: list[tuple[bytes, list]]) -> list:
    """Replies as the engine of the fixture encoded them, the changes made on purpose since
    undone (everything else must be the same bytes):
    - an order's state (OrderInfo, OpenOrders, OrderHistory) and execution reports (alone, in
      Executions and in FillsReply) without the fields appended since;
    - tif 4 was invalid and is GTD now: the fixture's orders with tif 4 have no expiry time,
      so they are still rejected, with INVALID_EXPIRE_TIME instead of INVALID_TIME_IN_FORCE;
    - post-only orders may be GTD too, which the reject of an IOC/FOK one now says, and the
      reject of a tif out of range says 1..4."""
    import msgspec

    n = len(OrderState.__struct_fields__) - len(APPENDED_ORDER_STATE)
    tags = {OrderInfo: 103, OpenOrders: 104, OrderHistory: 114}

    def state(o: OrderState) -> list:
        return list(msgspec.structs.astuple(o))[:n]

    reports = len(ExecReport.__struct_fields__) - len(APPENDED_EXEC_REPORT)

    def report(r: ExecReport) -> list:
        return [100, *list(msgspec.structs.astuple(r))[:reports]]

    def message(m: object) -> object:
        if type(m) is ExecReport:
            return report(m)
        if type(m) is Executions:
            return [101, m.req, [report(r) for r in m.reports]]
        if type(m) is FillsReply:
            return [111, m.req, [report(r) for r in m.fills]]
        if type(m) is Rejected and m.code == RejectCode.INVALID_EXPIRE_TIME:
            return msgspec.structs.replace(
                m, code=RejectCode.INVALID_TIME_IN_FORCE, reason="tif must be 1..3, was 4"
            )
        if type(m) is Rejected and m.reason == "post-only orders must be GTC or GTD":
            return msgspec.structs.replace(m, reason="post-only orders must be GTC")
        if type(m) is Rejected and m.reason.startswith("tif must be 1..4, was "):
            return msgspec.structs.replace(m, reason=m.reason.replace("1..4", "1..3"))
        if type(m) is OrderInfo:
            return [tags[OrderInfo], m.req, state(m.order)]
        if type(m) is OpenOrders or type(m) is OrderHistory:
            return [tags[type(m)], m.req, [state(o) for o in m.orders]]
        return m

    return [(origin, [message(m) for m in msgs]) for origin, msgs in out]


def recovered(tmp_path: Path, pattern: str) -> Engine:
    for f in FIXTURE.glob(pattern):
        shutil.copy(f, tmp_path)
    e = Engine(EXCHANGE, epoch=2)
    journal.recover(tmp_path, e)
    return e


def test_todays_snapshot_and_journal_load_into_the_same_state(tmp_path: Path) -> None:
    e = recovered(tmp_path, "*.*[gp]")  # the snapshot and both journal segments
    assert (tmp_path / "snapshot-0000000000001652.snap").exists()
    assert e.seq == EXPECT["seq"]
    assert len(e.orders) == EXPECT["open_orders"]
    assert v1_hash(e) == EXPECT["state_hash"]
    e.validate()
    alone = recovered(tmp_path / "alone" if (tmp_path / "alone").mkdir() is None else tmp_path,
                      "journal-*.log")  # fmt: skip
    assert alone.state_hash() == e.state_hash()  # the appended state too (last prices)


def test_todays_journal_alone_replays_into_the_same_state(tmp_path: Path) -> None:
    e = recovered(tmp_path, "journal-*.log")
    assert e.seq == EXPECT["seq"]
    assert v1_hash(e) == EXPECT["state_hash"]


def test_the_fixture_stream_gets_todays_replies_byte_for_byte() -> None:
    e = Engine(EXCHANGE, epoch=1)
    cmds = list(stream(EXCHANGE, EXPECT["commands"], EXPECT["seed"]))
    assert OrderState.__struct_fields__[-len(APPENDED_ORDER_STATE) :] == APPENDED_ORDER_STATE
    assert ExecReport.__struct_fields__[-len(APPENDED_EXEC_REPORT) :] == APPENDED_EXEC_REPORT
    assert run(e, cmds, EXPECT["batch"], project=v1_replies) == EXPECT["replies_hash"]
    assert v1_hash(e) == EXPECT["state_hash"]


# ------------------------------------------------------------------ differential test
DIFF_SEEDS = (1, 2, 3)
DIFF_COMMANDS = 6_000

CHILD = """
import json, sys
import engine
from engine.core import Engine
from protocol.config import loads
from tests.engine_streams import run, stream
ex = loads(open(sys.argv[1]).read())
out = {"build": engine.build()}
for seed in map(int, sys.argv[2].split(",")):
    e = Engine(ex, epoch=1)
    cmds = list(stream(ex, int(sys.argv[3]), seed, advanced=True))
    out[seed] = [run(e, cmds, 64), e.state_hash()]
print(json.dumps(out))
"""


def digests() -> dict[str, list[str]]:
    out = {}
    for seed in DIFF_SEEDS:
        e = Engine(EXCHANGE, epoch=1)
        cmds = list(stream(EXCHANGE, DIFF_COMMANDS, seed, advanced=True))
        out[str(seed)] = [run(e, cmds, 64), e.state_hash()]
        e.validate()
    return out


def test_compiled_and_interpreted_builds_give_the_same_replies_and_state() -> None:
    mine = engine.build()
    other = "interpreted" if mine == "compiled" else "compiled"
    if other == "compiled" and any(engine.compiled_path(m) is None for m in engine.KERNEL):
        pytest.skip("no compiled kernel here to compare with (make install builds it)")
    env = dict(os.environ, EXCHANGE_ENGINE_BUILD=other, PYTHONPATH=str(ROOT))
    seeds = ",".join(map(str, DIFF_SEEDS))
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(FIXTURE / "exchange.toml"), seeds, str(DIFF_COMMANDS)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=True,
    )  # fmt: skip
    theirs = json.loads(child.stdout)
    assert theirs.pop("build") == other
    assert digests() == theirs

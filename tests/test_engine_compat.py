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
from tests.engine_streams import run, stream

FIXTURE = Path(__file__).parent / "data" / "engine_v1"
EXPECT = json.loads((FIXTURE / "expected.json").read_text())
EXCHANGE = loads((FIXTURE / "exchange.toml").read_text())
ROOT = Path(__file__).resolve().parent.parent


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
    assert e.state_hash() == EXPECT["state_hash"]
    e.validate()


def test_todays_journal_alone_replays_into_the_same_state(tmp_path: Path) -> None:
    e = recovered(tmp_path, "journal-*.log")
    assert e.seq == EXPECT["seq"]
    assert e.state_hash() == EXPECT["state_hash"]


def test_the_fixture_stream_gets_todays_replies_byte_for_byte() -> None:
    e = Engine(EXCHANGE, epoch=1)
    cmds = list(stream(EXCHANGE, EXPECT["commands"], EXPECT["seed"]))
    assert run(e, cmds, EXPECT["batch"]) == EXPECT["replies_hash"]
    assert e.state_hash() == EXPECT["state_hash"]


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
    out[seed] = [run(e, list(stream(ex, int(sys.argv[3]), seed)), 64), e.state_hash()]
print(json.dumps(out))
"""


def digests() -> dict[str, list[str]]:
    out = {}
    for seed in DIFF_SEEDS:
        e = Engine(EXCHANGE, epoch=1)
        out[str(seed)] = [run(e, list(stream(EXCHANGE, DIFF_COMMANDS, seed)), 64), e.state_hash()]
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

"""Writes ``tests/data/engine_v1``: a journal and a snapshot made by the engine as it was
before the compiled core (commit c8cb827), the state they must rebuild, and a digest of every
reply and market-data message the stream got, per batch of ``BATCH`` commands (outboxes sorted by
destination: the order of destinations within a batch is not part of the contract).

Run once, at that commit, with ``python -m tests.data.make_engine_v1``; the files are a
fixture, not output to regenerate: ``tests/test_engine_compat.py`` checks that every later
engine, compiled or interpreted, loads them into the same ``state_hash()``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import msgspec

from engine import journal
from engine.core import Engine
from protocol.config import loads
from protocol.messages import WRITE_COMMANDS
from tests.engine_streams import stream

HERE = Path(__file__).parent / "engine_v1"
SEED, COMMANDS, BATCH, SNAPSHOT_AFTER = 20261202, 4_000, 40, 2_000


def main() -> None:
    ex = loads((HERE / "exchange.toml").read_text())
    for old in [*HERE.glob("*.log"), *HERE.glob("*.snap")]:
        old.unlink()
    engine = Engine(ex, epoch=1)
    jl = journal.Journal(HERE, 1, fsync=False)
    cmds = list(stream(ex, COMMANDS, SEED))
    ts, snapped = 1_700_000_000_000_000_000, False
    replies = hashlib.blake2b(digest_size=16)
    for start in range(0, len(cmds), BATCH):
        ts += 1_000_003
        first, entries = engine.seq + 1, []
        for cmd, origin in cmds[start : start + BATCH]:
            engine.apply(cmd, ts, origin)
            if isinstance(cmd, WRITE_COMMANDS):
                entries.append((origin, cmd))
        replies.update(msgspec.msgpack.encode(sorted(engine.drain())))
        replies.update(msgspec.msgpack.encode(engine.market_data(ts)))
        if entries:
            jl.write(first, ts, entries)
        if not snapped and start >= SNAPSHOT_AFTER:
            journal.write_snapshot(HERE, engine)
            jl.open(engine.seq + 1)
            snapped = True
    jl.close()
    engine.validate()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    expect = {
        "written_by": commit,
        "seed": SEED,
        "commands": COMMANDS,
        "seq": engine.seq,
        "open_orders": len(engine.orders),
        "state_hash": engine.state_hash(),
        "batch": BATCH,
        "replies_hash": replies.hexdigest(),
    }
    (HERE / "expected.json").write_text(json.dumps(expect, indent=1) + "\n")
    shutil.rmtree(HERE / "__pycache__", ignore_errors=True)
    print(expect)


if __name__ == "__main__":
    main()

"""Writes ``tests/data/engine_v1``: a journal and a snapshot made by the engine as it was
before the compiled core (commit c8cb827, with watchers' copies put in a fixed order), the
state they must rebuild, and a digest of every reply and market-data message its stream got,
per batch of ``BATCH`` commands (see ``tests.engine_streams.run``).

Run once, with ``EXCHANGE_ENGINE_BUILD=interpreted python -m tests.data.make_engine_v1``; the
files are a fixture, not output to regenerate: ``tests/test_engine_compat.py`` checks that
every later engine, compiled or interpreted, loads them into the same ``state_hash()`` and
answers the stream with the same replies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from engine import journal
from engine.core import Engine
from protocol.config import loads
from tests.engine_streams import run, stream

HERE = Path(__file__).parent / "engine_v1"
SEED, COMMANDS, BATCH, SNAPSHOT_AFTER = 20261202, 4_000, 40, 1_650


def main() -> None:
    ex = loads((HERE / "exchange.toml").read_text())
    for old in [*HERE.glob("*.log"), *HERE.glob("*.snap")]:
        old.unlink()
    engine = Engine(ex, epoch=1)
    jl = journal.Journal(HERE, 1, fsync=False)
    snapped = False

    def write(ts: int, entries: list[tuple[bytes, object]]) -> None:
        nonlocal snapped
        if entries:
            jl.write(engine.seq + 1 - len(entries), ts, entries)
        if not snapped and engine.seq >= SNAPSHOT_AFTER:
            journal.write_snapshot(HERE, engine)
            jl.open(engine.seq + 1)
            snapped = True

    run(engine, list(stream(ex, COMMANDS, SEED)), BATCH, write)
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
        "replies_hash": run(Engine(ex, epoch=1), list(stream(ex, COMMANDS, SEED)), BATCH),
    }
    (HERE / "expected.json").write_text(json.dumps(expect, indent=1) + "\n")
    shutil.rmtree(HERE / "__pycache__", ignore_errors=True)
    print(expect)


if __name__ == "__main__":
    main()

"""How long a snapshot stops the engine: written in process (what the engine did before) against
forked to a child (what it does now: the pause is ``os.fork()``), for N open orders.

``python -m bench.snapshot_pause [N ...]`` (default 90,000 and 1,000,000): N resting orders
as bench/order_memory.py places them, then, three times each, the in-process write and the
fork (the child writes the same snapshot; the parent only waits for it after timing the fork).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.order_memory import open_orders, rss_kib
from engine import build, journal


def measure(n: int) -> None:
    e = open_orders(n)
    inline, forked, child = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for _ in range(3):
            t0 = time.perf_counter()
            journal.write_snapshot(d, e)
            inline.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    journal.write_snapshot(d, e)
                    code = 0
                finally:
                    os._exit(code)
            forked.append(time.perf_counter() - t0)
            _, status = os.waitpid(pid, 0)
            child.append(time.perf_counter() - t0)
            assert os.waitstatus_to_exitcode(status) == 0
        size = max(p.stat().st_size for p in d.glob("*.snap"))
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    print(
        f"{n:>9,} open orders ({build()} kernel, RSS {rss_kib() / 1024:,.0f} MiB, snapshot "
        f"{size / 1e6:.1f} MB): in process {ms(inline):,.1f} ms; forked: engine paused "
        f"{ms(forked):,.2f} ms, child done after {ms(child):,.1f} ms (medians of 3)",
        flush=True,
    )


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [90_000, 1_000_000]:
        measure(n)

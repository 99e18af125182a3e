"""The longest single commands of a growing book: each resting order timed alone.

``python -m bench.index_pause [N]`` (default 200,000): one account places N resting buys over 50
prices; prints the latency percentiles and the slowest commands with their position. The
slowest sit where the order indexes (a dict of every open order, and the account's own) pass
two thirds full and double: 2**k * 2/3 open orders.
"""

from __future__ import annotations

import sys
import time

from engine import build
from engine.core import Engine
from protocol import config
from protocol.messages import Deposit, NewOrder


def main(n: int) -> None:
    ex = config.load()
    m = next(iter(ex.markets.values()))
    e = Engine(ex, 1)
    for asset in ex.assets:
        e.apply(Deposit(1, 1, asset, 10**17), 1, b"g")
    e.drain()
    mid = m.max_price // 1000
    cmds = [NewOrder(i, 1, m.symbol, 1, 1, 1, mid - i % 50, m.min_qty) for i in range(n)]
    on_new_order, clock, took = e.handlers[NewOrder], time.perf_counter_ns, []
    for i, c in enumerate(cmds):
        t0 = clock()
        on_new_order(c, 5, b"g")
        took.append(clock() - t0)
        if i % 256 == 255:
            e.drain()
            e.market_data(5)
    s = sorted(took)
    pct = [f"p{p} {s[int(n * p / 100)] / 1000:.1f} us" for p in (50, 99, 99.9)]
    print(f"{build()} kernel, {n:,} resting orders: {', '.join(pct)}, max {s[-1] / 1e6:.1f} ms")
    slowest = sorted(range(n), key=lambda i: -took[i])[:6]
    print("slowest (open orders before it: ms): " + ", ".join(
        f"{i:,}: {took[i] / 1e6:.1f}" for i in sorted(slowest)))  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)

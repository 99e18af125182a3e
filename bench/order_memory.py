"""Memory per open order: RSS growth over N resting orders / N, in whichever engine build this
process runs (``EXCHANGE_ENGINE_BUILD``).

``python -m bench.order_memory [N]`` (default 1,000,000): one account, one market, N resting
buys spread over 2,000 price levels and 50 accounts, every fourth with a client order id (the
indexes an open order costs: the book, the id index, the account index, the client-id index).
Replies are drained as the process shell does, so only what the open orders hold remains.
"""

from __future__ import annotations

import gc
import json
import resource
import sys

from engine import build
from engine.core import Engine
from protocol import config
from protocol.messages import Deposit, NewOrder


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def open_orders(n: int) -> Engine:
    """A funded engine with ``n`` resting orders (the shape described above)."""
    ex = config.load()
    spec = max(ex.markets.values(), key=lambda m: m.max_price)
    e = Engine(ex, epoch=1)
    accounts = 50
    for a in range(1, accounts + 1):
        e.apply(Deposit(0, a, spec.quote, 2**62 // accounts), 1, b"m")
    e.drain()
    top = spec.max_price // 2
    for i in range(n):
        e.apply(
            NewOrder(i, 1 + i % accounts, spec.symbol, 1, 1, 1, top - i % 2_000, spec.min_qty,
                     0, f"c{i}" if i % 4 == 0 else ""),
            2, b"m",
        )  # fmt: skip
        if i % 256 == 255:
            e.drain()
            e.market_data(2)
    e.drain()
    e.market_data(2)
    assert len(e.orders) == n, len(e.orders)
    return e


def main(n: int) -> dict:
    gc.collect()
    before = rss_kib()
    e = open_orders(n)
    gc.collect()
    grown = rss_kib() - before
    return {
        "build": build(),
        "open_orders": len(e.orders),
        "bytes_per_order": round(grown * 1024 / n, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)))

"""Seeded mixed workloads shared by the benchmarks and the recovery tests.

The mix (per command): 60% resting limit orders placed a few ticks behind the touch, 25%
cancels of a random open order, 15% marketable limit orders (IOC) that cross the spread. Over
every market of the config, with N funded accounts, so the ledger is exercised on every fill.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from protocol.config import Exchange
from protocol.messages import Cancel, Deposit, NewOrder

BUY, SELL = 1, 2
LIMIT, GTC, IOC = 1, 1, 2


def funding(ex: Exchange, accounts: int, req_base: int = 1) -> list[Deposit]:
    """Deposits that give every trading account plenty of every asset."""
    out = []
    req = req_base
    for acct in range(1, accounts + 1):
        for asset, decimals in ex.assets.items():
            out.append(Deposit(req, acct, asset, 10**9 * 10**decimals))
            req += 1
    return out


def mixed(ex: Exchange, n: int, seed: int = 1, accounts: int = 100,
          req_base: int = 1_000_000) -> Iterator[object]:  # fmt: skip
    """``n`` commands of the 60/25/15 mix. Prices wander around a per-market mid."""
    rng = random.Random(seed)
    markets = list(ex.markets.values())
    mids = {m.symbol: max(1, m.max_price // 1000) for m in markets}
    open_ids: list[tuple[int, str, int]] = []  # (account, market, order id)
    next_id = _first_order_id = 1  # the engine numbers orders from 1, in command order
    req = req_base
    for _ in range(n):
        req += 1
        m = markets[rng.randrange(len(markets))]
        mid = mids[m.symbol]
        acct = rng.randint(1, accounts)
        r = rng.random()
        if r < 0.25 and open_ids:
            i = rng.randrange(len(open_ids))
            open_ids[i], open_ids[-1] = open_ids[-1], open_ids[i]
            a, sym, oid = open_ids.pop()
            yield Cancel(req, a, sym, oid)
            continue
        side = BUY if rng.random() < 0.5 else SELL
        qty = m.min_qty * rng.randint(1, 20)
        if r < 0.85:
            off = rng.randint(1, 20)
            price = mid - off if side == BUY else mid + off
            yield NewOrder(req, acct, m.symbol, side, LIMIT, GTC, price, qty)
            open_ids.append((acct, m.symbol, next_id))
        else:
            off = rng.randint(0, 5)
            price = mid + off if side == BUY else mid - off
            yield NewOrder(req, acct, m.symbol, side, LIMIT, IOC, price, qty)
        next_id += 1
        if rng.random() < 0.01:
            mids[m.symbol] = max(50, mid + rng.randint(-3, 3))
    del _first_order_id

"""Seeded mixed workloads shared by the benchmarks and the recovery tests.

``mixed()`` (per command): 60% resting limit orders placed a few ticks behind the touch, 25%
cancels of a random open order, 15% marketable limit orders (IOC) that cross the spread. Over
every market of the config, with N funded accounts, so the ledger is exercised on every fill.

``ZmqMix`` is the closed-loop variant for a live engine (bench/zmq_client.py): it learns order
ids from the replies, cancels only its own resting orders and caps how many it keeps open, so a
run of any length leaves the books bounded.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from protocol.config import Exchange
from protocol.messages import Cancel, Deposit, ExecReport, Executions, NewOrder

BUY, SELL = 1, 2
LIMIT, GTC, IOC = 1, 1, 2


def funding(ex: Exchange, accounts: int, req_base: int = 1) -> list[Deposit]:
    """Deposits that give every trading account plenty of every asset.

    10**7 whole units of each asset per account: far more than the workloads trade, and small
    enough that thousands of accounts stay under the engine's 2**63-1 cap per asset.
    """
    out = []
    req = req_base
    for acct in range(1, accounts + 1):
        for asset, decimals in ex.assets.items():
            out.append(Deposit(req, acct, asset, 10**7 * 10**decimals))
            req += 1
    return out


def mixed(ex: Exchange, n: int, seed: int = 1, accounts: int = 100,
          req_base: int = 1_000_000, max_open: int = 0) -> Iterator[object]:  # fmt: skip
    """``n`` commands of the 60/25/15 mix. Prices wander around a per-market mid.

    With ``max_open``, a command is a cancel whenever that many orders may be open, so the books
    stay bounded (some of those cancels name orders that filled: they are rejected).
    """
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
        if (r < 0.25 or len(open_ids) >= max_open > 0) and open_ids:
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


class ZmqMix:
    """Order flow for a live engine: resting limits, cancels of them, some marketable IOCs.

    ``next()`` returns the next command (``req`` 0: the client stamps it). Per command: a cancel
    of a random own open order with probability ``cancel_share`` (always, once ``max_open``
    orders are open), a marketable IOC limit with ``ioc_share``, else a GTC limit a few ticks
    behind the touch. Feed every reply to ``on_reply`` (resting orders become cancellable) and
    every unsolicited event to ``on_event`` (filled orders are no longer cancelled).
    """

    def __init__(
        self,
        ex: Exchange,
        seed: int = 7,
        accounts: int = 50,
        max_open: int = 2_000,
        cancel_share: float = 0.40,
        ioc_share: float = 0.10,
    ) -> None:
        self.rng = random.Random(seed)
        self.markets = list(ex.markets.values())
        self.mids = {m.symbol: max(1, m.max_price // 1000) for m in self.markets}
        self.accounts = accounts
        self.max_open = max_open
        self.cancel_share = cancel_share
        self.ioc_share = ioc_share
        self.open: list[tuple[int, str, int]] = []  # (account, market, order id)
        self.filled: set[int] = set()
        self.n_cancel = self.n_gtc = self.n_ioc = 0

    def next(self) -> Any:
        # random() only (randrange/randint cost ~1 us a command in the client's hot loop)
        rnd = self.rng.random
        r = rnd()
        open_ = self.open
        while open_ and (len(open_) >= self.max_open or r < self.cancel_share):
            i = int(rnd() * len(open_))
            open_[i], open_[-1] = open_[-1], open_[i]
            acct, sym, oid = open_.pop()
            if oid in self.filled:
                self.filled.discard(oid)
                continue
            self.n_cancel += 1
            return Cancel(0, acct, sym, oid)
        m = self.markets[int(rnd() * len(self.markets))]
        mid = self.mids[m.symbol]
        acct = 1 + int(rnd() * self.accounts)
        side = BUY if rnd() < 0.5 else SELL
        qty = m.min_qty * (1 + int(rnd() * 20))
        if r < self.cancel_share + self.ioc_share:
            self.n_ioc += 1
            off = int(rnd() * 6)  # 0..5 ticks through the touch
            price = mid + off if side == BUY else mid - off
            return NewOrder(0, acct, m.symbol, side, LIMIT, IOC, price, qty)
        self.n_gtc += 1
        off = 1 + int(rnd() * 20)  # 1..20 ticks behind it
        price = mid - off if side == BUY else mid + off
        return NewOrder(0, acct, m.symbol, side, LIMIT, GTC, price, qty)

    def on_reply(self, cmd: Any, msg: Executions) -> None:
        if type(cmd) is NewOrder and cmd.tif == GTC and msg.reports:
            last = msg.reports[-1]
            if last.leaves_qty and last.status in (1, 2):  # NEW or PARTIALLY_FILLED: resting
                self.open.append((cmd.account, cmd.market, last.order_id))

    def on_event(self, msg: Any) -> None:
        if type(msg) is ExecReport and msg.status == 3:  # a resting order of ours FILLED
            self.filled.add(msg.order_id)

    def counts(self) -> dict[str, int]:
        return {"new_gtc": self.n_gtc, "new_ioc": self.n_ioc, "cancel": self.n_cancel}

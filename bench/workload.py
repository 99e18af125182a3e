"""Seeded mixed workloads shared by the benchmarks and the recovery tests.

``mixed()`` (per command): 60% resting limit orders placed a few ticks behind the touch, 25%
cancels of a random open order, 15% marketable limit orders (IOC) that cross the spread. Over
every market of the config, with N funded accounts, so the ledger is exercised on every fill.

``mixed_with_stops()`` is the same mix with a share of the new orders replaced by stop orders
(stop-loss and take-profit, limit and market, both sides) whose stops lie a few ticks either
side of the market's last price, so the wandering price triggers some of them (cascades
included). Whether a stop is accepted, and the id it gets, depend on the last price, which only
matching decides: the stream is planned against a real engine (the oracle), so every stop is
accepted and every cancel names an order id the engine gave out, as in ``mixed()``.

``ZmqMix`` is the closed-loop variant for a live engine (bench/zmq_client.py): it learns order
ids from the replies, cancels only its own resting orders and caps how many it keeps open, so a
run of any length leaves the books bounded.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from protocol.config import Exchange
from protocol.messages import Cancel, Deposit, ExecReport, Executions, NewOrder, Rejected

BUY, SELL = 1, 2
LIMIT, MARKET, GTC, IOC = 1, 2, 1, 2
STOP_LOSS, TAKE_PROFIT = 1, 2  # protocol.enums.TriggerKind
E_TRIG = 8  # protocol.enums.ExecType.TRIGGERED
MAKER = 1  # protocol.enums.Liquidity


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


class StopStream:
    """What ``mixed_with_stops()`` planned: the commands, and what its oracle engine saw."""

    def __init__(self) -> None:
        self.commands: list[object] = []
        self.placed_at: list[int] = []  # index of each stop order in ``commands`` (accepted)
        self.placed_by_kind: dict[str, int] = {}  # "stop-loss buy limit": count
        self.rejected_stops = 0  # none is planned to be; more than 0 is a planning bug
        self.triggered_at: dict[int, int] = {}  # command index -> stops it triggered
        self.trades = 0
        self.waiting_at_end = 0

    def placed(self, start: int = 0) -> int:
        """Stop orders placed from command ``start`` on."""
        return sum(1 for i in self.placed_at if i >= start)

    def triggered(self, start: int = 0) -> int:
        """Stops triggered by the commands from ``start`` on."""
        return sum(n for i, n in self.triggered_at.items() if i >= start)


def mixed_with_stops(ex: Exchange, n: int, seed: int = 1, accounts: int = 100,
                     req_base: int = 1_000_000, max_open: int = 0, stop_share: float = 0.10,
                     max_offset: int = 30) -> StopStream:  # fmt: skip
    """``n`` commands of the 60/25/15 mix (as ``mixed()``, same parameters) where a share
    ``stop_share`` of the new orders are stops instead: trigger, side and type (limit or
    market) drawn evenly, the stop 1..``max_offset`` ticks from the market's last price on the
    side where it waits (a stop-loss buy above it, a stop-loss sell below it, take-profits the
    other way round), a stop-limit's price 0..5 ticks through its stop (it trades when it
    triggers, unless the book has moved on).

    Planned by applying each command to a fresh engine funded with ``funding(ex, accounts)``,
    as the benchmark funds the one it runs the stream on (the engine is deterministic): stops
    are placed against the real last price, so none is rejected, and cancels name order ids
    from the engine's replies. The stream is the same on either engine build.
    """
    from engine.core import Engine  # here: the other workloads need no engine

    origin = b"plan"
    oracle = Engine(ex, epoch=1)
    for c in funding(ex, accounts):
        oracle.apply(c, 1, origin)
    oracle.outbox.clear()
    oracle.market_data(1)
    out = StopStream()
    rng = random.Random(seed)
    markets = list(ex.markets.values())
    mids = {m.symbol: max(1, m.max_price // 1000) for m in markets}
    open_ids: list[tuple[int, str, int]] = []  # (account, market, order id)
    req = req_base
    ts = 1
    for i in range(n):
        if i % 256 == 0:
            ts += 1
            oracle.market_data(ts)  # the changed sets, as the benchmark drains them
        req += 1
        m = markets[rng.randrange(len(markets))]
        mid = mids[m.symbol]
        acct = rng.randint(1, accounts)
        r = rng.random()
        cmd: object
        kind = ""  # "gtc", a stop's kind, or "" (cancels and IOCs are not remembered)
        if (r < 0.25 or len(open_ids) >= max_open > 0) and open_ids:
            j = rng.randrange(len(open_ids))
            open_ids[j], open_ids[-1] = open_ids[-1], open_ids[j]
            a, sym, oid = open_ids.pop()
            cmd = Cancel(req, a, sym, oid)
        else:
            side = BUY if rng.random() < 0.5 else SELL
            qty = m.min_qty * rng.randint(1, 20)
            if rng.random() < stop_share:
                last = oracle.books[m.symbol].last or mid
                cmd, kind = _stop_order(rng, req, acct, m.symbol, side, qty, last, max_offset)
            elif r < 0.85:
                off = rng.randint(1, 20)
                price = mid - off if side == BUY else mid + off
                cmd, kind = NewOrder(req, acct, m.symbol, side, LIMIT, GTC, price, qty), "gtc"
            else:
                off = rng.randint(0, 5)
                price = mid + off if side == BUY else mid - off
                cmd = NewOrder(req, acct, m.symbol, side, LIMIT, IOC, price, qty)
            if rng.random() < 0.01:
                mids[m.symbol] = max(50, mid + rng.randint(-3, 3))
        out.commands.append(cmd)
        oracle.apply(cmd, ts, origin)
        oid = _tally(out, oracle.outbox[origin], i, req, kind)
        oracle.outbox.clear()
        if oid:
            open_ids.append((acct, m.symbol, oid))
    out.waiting_at_end = sum(len(b.stop_orders) for b in oracle.books.values())
    return out


def _stop_order(rng: random.Random, req: int, acct: int, symbol: str, side: int, qty: int,
                last: int, max_offset: int) -> tuple[NewOrder, str]:  # fmt: skip
    """A stop order a few ticks from ``last``, where it waits (not yet reached), and its kind."""
    trigger = STOP_LOSS if rng.random() < 0.5 else TAKE_PROFIT
    otype = LIMIT if rng.random() < 0.5 else MARKET
    off = rng.randint(1, max_offset)
    through = rng.randint(0, 5)
    rises = (trigger == STOP_LOSS) == (side == BUY)  # waits for the price to rise to it
    stop = last + off if rises else max(1, last - off)
    price = 0  # a stop-market order (a buy carries the engine's protection price)
    if otype == LIMIT:
        price = stop + through if side == BUY else max(1, stop - through)
    tif = GTC if otype == LIMIT else IOC
    kind = (
        f"{'stop-loss' if trigger == STOP_LOSS else 'take-profit'} "
        f"{'buy' if side == BUY else 'sell'} {'limit' if otype == LIMIT else 'market'}"
    )
    return NewOrder(req, acct, symbol, side, otype, tif, price, qty, trigger=trigger,
                    stop_price=stop), kind  # fmt: skip


def _tally(out: StopStream, msgs: list, i: int, req: int, kind: str) -> int:
    """Count what command ``i`` did (its messages ``msgs``); the id of the order it placed if
    it is one to remember (a GTC or a stop), else 0."""
    oid = triggered = 0
    for msg in msgs:
        t = type(msg)
        if t is ExecReport:
            if msg.exec_type == E_TRIG:
                triggered += 1
            elif msg.trade_id and msg.liquidity == MAKER:  # one maker report per trade
                out.trades += 1
        elif t is Executions and kind and msg.req == req:  # this order's reply
            oid = msg.reports[0].order_id
            if kind != "gtc":
                out.placed_at.append(i)
                out.placed_by_kind[kind] = out.placed_by_kind.get(kind, 0) + 1
        elif t is Rejected and kind and kind != "gtc" and msg.req == req:
            out.rejected_stops += 1
    if triggered:
        out.triggered_at[i] = triggered
    return oid


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

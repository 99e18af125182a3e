"""A local L2 book rebuilt from the engine's snapshot + depth deltas, and a 24h rolling ticker.

Both are plain state machines with no I/O, so they are tested directly against the engine and
against a straightforward reference.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sortedcontainers import SortedDict

from protocol.messages import BookSnapshot, Depth, Trade

DAY_NS = 24 * 3600 * 1_000_000_000


class LocalBook:
    """Price -> total lots per side. Deltas carry absolute totals (0 removes the level)."""

    __slots__ = ("market", "epoch", "seq", "bids", "asks", "synced", "last_trade_id")

    def __init__(self, market: str) -> None:
        self.market = market
        self.epoch = 0
        self.seq = 0
        self.bids: SortedDict = SortedDict()  # keyed by -price: first item is the best bid
        self.asks: SortedDict = SortedDict()
        self.synced = False
        self.last_trade_id = 0

    def load(self, snap: BookSnapshot) -> None:
        """Take the snapshot's levels into new maps: whoever still holds the old ones sees the
        book as it was (gateways/http/streams.py sends its subscribers the difference)."""
        self.epoch, self.seq = snap.epoch, snap.seq
        self.bids = SortedDict({-p: q for p, q, _ in snap.bids})
        self.asks = SortedDict({p: q for p, q, _ in snap.asks})
        self.last_trade_id = snap.last_trade_id
        self.synced = True

    def apply(self, d: Depth) -> None:
        for price, qty in d.bids:
            if qty:
                self.bids[-price] = qty
            else:
                self.bids.pop(-price, None)
        for price, qty in d.asks:
            if qty:
                self.asks[price] = qty
            else:
                self.asks.pop(price, None)
        self.seq = d.seq

    def best_bid(self) -> tuple[int, int]:
        if not self.bids:
            return 0, 0
        k, q = self.bids.peekitem(0)
        return -k, q

    def best_ask(self) -> tuple[int, int]:
        return self.asks.peekitem(0) if self.asks else (0, 0)

    def levels(self, depth: int = 0) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids, asks), best first, ``depth`` levels each (0 = all)."""
        n = depth or max(len(self.bids), len(self.asks))
        bids = [(-k, v) for k, v in self.bids.items()[:n]]
        asks = list(self.asks.items()[:n])
        return bids, asks


@dataclass
class TickerView:
    market: str
    open: int  # ticks; 0 if no trade in the window
    high: int
    low: int
    last: int
    volume: int  # lots
    quote_volume: int  # quote minor units
    change: int  # last - open, ticks
    trades: int
    first_trade_id: int
    last_trade_id: int


class Ticker24h:
    """Rolling 24 hours of trades: O(1) amortised per trade, with monotonic deques for the
    window's high and low. The window is (now - 24h, now]; ``now`` is the engine clock of the
    newest trade, or the caller's clock when asking."""

    def __init__(self, market: str, tick_lot_quote: int, window_ns: int = DAY_NS) -> None:
        self.market = market
        self.tlq = tick_lot_quote
        self.window = window_ns
        self.trades: deque[Trade] = deque()
        self.highs: deque[Trade] = deque()  # prices non-increasing
        self.lows: deque[Trade] = deque()  # prices non-decreasing
        self.volume = 0
        self.quote_volume = 0
        self.last = 0
        self.last_trade_id = 0

    def add(self, t: Trade) -> None:
        self.trades.append(t)
        self.volume += t.qty
        self.quote_volume += t.price * t.qty * self.tlq
        self.last = t.price
        self.last_trade_id = t.trade_id
        while self.highs and self.highs[-1].price <= t.price:
            self.highs.pop()
        self.highs.append(t)
        while self.lows and self.lows[-1].price >= t.price:
            self.lows.pop()
        self.lows.append(t)
        self.expire(t.ts)

    def expire(self, now: int) -> None:
        cutoff = now - self.window
        trades = self.trades
        while trades and trades[0].ts <= cutoff:
            old = trades.popleft()
            self.volume -= old.qty
            self.quote_volume -= old.price * old.qty * self.tlq
            if self.highs and self.highs[0] is old:
                self.highs.popleft()
            if self.lows and self.lows[0] is old:
                self.lows.popleft()

    def view(self, now: int | None = None) -> TickerView:
        if now is not None:
            self.expire(now)
        if not self.trades:
            return TickerView(self.market, 0, 0, 0, self.last, 0, 0, 0, 0, 0, self.last_trade_id)
        first = self.trades[0]
        return TickerView(
            self.market,
            first.price,
            self.highs[0].price,
            self.lows[0].price,
            self.last,
            self.volume,
            self.quote_volume,
            self.last - first.price,
            len(self.trades),
            first.trade_id,
            self.last_trade_id,
        )

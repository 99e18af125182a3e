"""Candles (klines) built from trades, for every interval, in integer ticks and lots.

The bridge uses these for live candles (the one in progress updates with every trade) and,
until ClickHouse has them, for history. Candle boundaries are UTC multiples of the interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.market_api import INTERVALS
from protocol.messages import Trade


@dataclass
class Candle:
    open_time: int  # seconds
    open: int
    high: int
    low: int
    close: int
    volume: int  # lots
    quote_volume: int  # quote minor units
    trades: int

    def add(self, t: Trade, tlq: int) -> None:
        self.high = max(self.high, t.price)
        self.low = min(self.low, t.price)
        self.close = t.price
        self.volume += t.qty
        self.quote_volume += t.price * t.qty * tlq
        self.trades += 1


class CandleBook:
    """Candles of one market for every interval, the newest ``keep`` of each."""

    def __init__(self, market: str, tick_lot_quote: int, keep: int = 1500) -> None:
        self.market = market
        self.tlq = tick_lot_quote
        self.keep = keep
        self.candles: dict[str, dict[int, Candle]] = {iv: {} for iv in INTERVALS}

    def add(self, t: Trade) -> list[tuple[str, Candle]]:
        """Fold one trade in; returns the (interval, candle) pairs it changed."""
        secs = t.ts // 1_000_000_000
        changed = []
        for iv, length in INTERVALS.items():
            start = secs - secs % length
            series = self.candles[iv]
            c = series.get(start)
            if c is None:
                c = Candle(start, t.price, t.price, t.price, t.price, 0, 0, 0)
                series[start] = c
                if len(series) > self.keep:
                    del series[min(series)]
            c.add(t, self.tlq)
            changed.append((iv, c))
        return changed

    def history(
        self, interval: str, start: int = 0, end: int | None = None, limit: int = 500
    ) -> list[Candle]:
        """Candles with ``start <= open_time < end`` (seconds), oldest first, the newest
        ``limit`` of them."""
        series = self.candles[interval]
        rows = [c for t, c in sorted(series.items()) if t >= start and (end is None or t < end)]
        return rows[-limit:]

    def forget_through(self, ts_ns: int) -> None:
        """Drop the candles that start at or before ``ts_ns``: after a seed that holds every
        trade since ``ts_ns`` only, those may lack trades."""
        for series in self.candles.values():
            for start in [s for s in series if s * 1_000_000_000 <= ts_ns]:
                del series[start]

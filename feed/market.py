"""The market data one process keeps for its clients: one implementation behind the websocket
bridge (feed/bridge.py) and the HTTP gateway's REST routes and Binance-style streams.

``MarketData`` holds the engine feed (a local L2 book per market, resynced from snapshots:
feed/subscriber.py) and the trade history (recent trades, 24h tickers and candles, seeded from
the recorder's ClickHouse and the engine, then live: feed/history.py), and answers reads:

- ``depth(market, limit)``: the local book as integers (``BookDepth``: epoch, seq, levels),
  ``depth_view`` the same as decimal strings (protocol.market_api.DepthView);
- ``recent_trades`` / ``trade_views``, ``ticker`` (TickerData) / ``ticker_raw`` (integers);
- ``klines``: ClickHouse through the recorder's ``/klines`` first, the live candles as fallback
  (no recorder, or it cannot answer), with the candle in progress as seen live;
- ``health()``: engine reachable, every book synced, every market's history seeded.

It serves no socket itself. Consumers hook in with ``add_listener``; every listener sees every
event, in the order they were added:

- ``on_trades(market, trades)``: raw feed trades (may repeat or skip ids; for counters);
- ``on_depth(market, delta)``: a depth delta already applied to ``books[market]``, or
  ``(market, None)`` after the book was (re)loaded from a snapshot;
- ``on_history(market, trades, changed_candles, live)``: trades folded into the history exactly
  once and in id order (``live``), or the market seeded (``live`` False, no trades).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import ClientError, ClientSession, ClientTimeout

from feed.book import LocalBook, TickerView
from feed.candles import Candle
from feed.history import Applied, History
from feed.subscriber import Feed
from protocol import market_api as A
from protocol.config import Exchange, MarketSpec
from protocol.messages import Depth, Trade

SIDE = {1: "buy", 2: "sell"}

OnTrades = Callable[[str, list[Trade]], None]
OnDepth = Callable[[str, Depth | None], None]


class BookDepth(msgspec.Struct):
    """The local book at depth sequence ``seq`` of engine run ``epoch``; levels best first,
    (price ticks, total lots)."""

    market: str
    epoch: int
    seq: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    synced: bool


class Health(msgspec.Struct):
    ok: bool
    engine: bool
    synced: bool
    seeded: bool


class MarketData:
    def __init__(
        self,
        ex: Exchange,
        recorder_url: str | None = None,
        name: str = "bridge",
        recent_trades: int | None = None,
    ) -> None:
        """``name`` picks the feed's CURVE key pair; ``recent_trades`` per market (default
        ``[bridge] recent_trades``)."""
        self.ex = ex
        self.recorder_url = recorder_url  # history from ClickHouse via the recorder
        self.http: ClientSession | None = None
        self._on_trades: list[OnTrades] = []
        self._on_depth: list[OnDepth] = []
        self._on_history: list[Applied] = []
        self.feed = Feed.for_exchange(
            ex, name=name, on_trades=self._trades, on_depth=self._depth, tickers=False
        )
        self.books: dict[str, LocalBook] = self.feed.books
        self.history = History(
            ex,
            self.feed.engine,
            self.recorder_get if recorder_url else None,
            recent_trades if recent_trades is not None else ex.bridge.recent_trades,
            self._applied,
        )
        tapes = self.history.tapes.items()
        self.candles = {m: t.candles for m, t in tapes}
        self.trades: dict[str, deque[Trade]] = {m: t.recent for m, t in tapes}
        self.tickers = {m: t.ticker for m, t in tapes}

    def add_listener(
        self,
        on_trades: OnTrades | None = None,
        on_depth: OnDepth | None = None,
        on_history: Applied | None = None,
    ) -> None:
        if on_trades:
            self._on_trades.append(on_trades)
        if on_depth:
            self._on_depth.append(on_depth)
        if on_history:
            self._on_history.append(on_history)

    async def start(self, wait: float | None = None) -> None:
        """Subscribe and sync every book (``wait``: seconds to wait for the engine; None:
        do not wait, it syncs when the engine comes)."""
        await self.feed.start(wait=wait)

    async def close(self) -> None:
        await self.history.close()
        await self.feed.close()
        if self.http is not None:
            await self.http.close()
            self.http = None

    # ------------------------------------------------------------------ feed events
    def _trades(self, market: str, trades: list[Trade]) -> None:
        for f in self._on_trades:
            f(market, trades)
        self.history.live(market, trades)  # it calls _applied with what is new

    def _depth(self, market: str, d: Depth | None) -> None:
        for f in self._on_depth:
            f(market, d)
        if d is None:
            self.history.resynced(market, self.books[market].last_trade_id)

    def _applied(
        self, market: str, trades: list[Trade], changed: dict[str, Candle], live: bool
    ) -> None:
        for f in self._on_history:
            f(market, trades, changed, live)

    # ------------------------------------------------------------------------ reads
    def spec(self, market: str) -> MarketSpec:
        return self.ex.markets[market]

    def depth(self, market: str, limit: int = 0) -> BookDepth:
        """The local book, ``limit`` levels a side (0: all)."""
        book = self.books[market]
        bids, asks = book.levels(limit)
        return BookDepth(market, book.epoch, book.seq, bids, asks, book.synced)

    def depth_view(self, market: str, limit: int = 0) -> A.DepthView:
        d = self.depth(market, limit)
        return depth_view(self.ex.markets[market], d.epoch, d.seq, d.bids, d.asks, True)

    def recent_trades(self, market: str, limit: int) -> list[Trade]:
        """The newest ``limit`` trades, oldest first."""
        trades = self.trades[market]
        if limit >= len(trades):
            return list(trades)
        return list(trades)[-limit:]

    def trade_views(self, market: str, limit: int) -> list[A.TradeView]:
        spec = self.ex.markets[market]
        return [trade_view(spec, t) for t in self.recent_trades(market, limit)]

    def ticker_raw(self, market: str) -> TickerView:
        return self.tickers[market].view(time.time_ns())

    def ticker(self, market: str) -> A.TickerData:
        return ticker_view(self.ex.markets[market], self.ticker_raw(market))

    def live_klines(
        self, market: str, interval: str, start: int = 0, end: int | None = None, limit: int = 500
    ) -> list[A.Kline]:
        spec = self.ex.markets[market]
        rows = self.candles[market].history(interval, start, end, limit)
        return [kline_view(spec, interval, c) for c in rows]

    async def klines(
        self, market: str, interval: str, start: int, end: int, limit: int
    ) -> list[A.Kline]:
        """Candles with ``start <= open_time < end`` (seconds), oldest first, at most
        ``limit``: from ClickHouse, else from the live candles."""
        stored = await self.recorded_klines(self.ex.markets[market], interval, start, end, limit)
        if stored is not None:
            return stored
        return self.live_klines(market, interval, start, end, limit)

    async def recorded_klines(
        self, spec: MarketSpec, interval: str, start: int, end: int, limit: int
    ) -> list[A.Kline] | None:
        """Kline history from ClickHouse (through the recorder, which owns embedded chDB);
        None when the recorder is not running, and the live candles answer."""
        if not self.recorder_url:
            return None
        params = {
            "market": spec.symbol,
            "interval": interval,
            "start": start,
            "end": end,
            "limit": limit,
        }
        status, body = await self.recorder_get("/klines", params)
        if status != 200:
            return None
        try:
            rows = msgspec.json.decode(body, type=list[Candle])
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        live = self.candles[spec.symbol].history(interval, limit=1)
        out = [kline_view(spec, interval, c, closed=True) for c in rows]
        if live and out and out[-1].open_time == live[-1].open_time:
            out[-1] = kline_view(spec, interval, live[-1])  # the candle in progress, as seen live
        return out

    async def recorder_get(self, path: str, params: dict[str, Any]) -> tuple[int, bytes]:
        """GET the recorder's query API: (status, body); status 0 if it cannot be reached."""
        assert self.recorder_url
        if self.http is None:
            self.http = ClientSession(timeout=ClientTimeout(total=10))
        try:
            async with self.http.get(f"{self.recorder_url}{path}", params=params) as r:
                return r.status, await r.read()
        except (ClientError, TimeoutError) as e:
            return 0, str(e).encode()

    def health(self) -> Health:
        """Healthy: the engine answers, every book is synced, every market's trade history
        seeded (a seed without a reachable recorder ends after RECORDER_WAIT seconds)."""
        engine, synced, seeded = (
            self.feed.engine.available,
            self.feed.synced(),
            self.history.seeded(),
        )
        return Health(engine and synced and seeded, engine, synced, seeded)


# ---------------------------------------------------------------------------- views


def depth_view(
    spec: MarketSpec,
    epoch: int,
    seq: int,
    bids: list[tuple[int, int]],
    asks: list[tuple[int, int]],
    snapshot: bool = False,
) -> A.DepthView:
    """Levels (ticks, lots) as the bridge shows them: a snapshot, or one engine depth delta."""
    return A.DepthView(
        spec.symbol,
        epoch,
        seq,
        seq,
        [(spec.price_text(p), spec.qty_text(q)) for p, q in bids],
        [(spec.price_text(p), spec.qty_text(q)) for p, q in asks],
        snapshot=snapshot,
    )


def trade_view(spec: MarketSpec, t: Trade) -> A.TradeView:
    return A.TradeView(
        t.trade_id,
        spec.price_text(t.price),
        spec.qty_text(t.qty),
        SIDE.get(t.taker_side, "?"),
        t.ts,
    )


def kline_view(spec: MarketSpec, interval: str, c: Candle, closed: bool | None = None) -> A.Kline:
    if closed is None:
        closed = c.open_time + A.INTERVALS[interval] <= time.time()
    return A.Kline(
        spec.symbol,
        interval,
        c.open_time,
        spec.price_text(c.open),
        spec.price_text(c.high),
        spec.price_text(c.low),
        spec.price_text(c.close),
        spec.qty_text(c.volume),
        spec.quote_text(c.quote_volume),
        c.trades,
        closed,
    )


def ticker_view(spec: MarketSpec, t: TickerView) -> A.TickerData:
    def px(v: int) -> str | None:
        return spec.price_text(v) if v else None

    pct = None
    if t.open:
        pct = f"{t.change * 100 / t.open:.2f}"  # display only; prices stay exact strings
    return A.TickerData(
        spec.symbol,
        px(t.open),
        px(t.high),
        px(t.low),
        px(t.last),
        spec.qty_text(t.volume),
        spec.quote_text(t.quote_volume),
        spec.price_text(t.change) if t.open else None,
        pct,
        t.trades,
        time.time_ns(),
    )

"""Binance-compatible websocket market streams, the ones ccxt.pro's ``binance`` uses.

An aiohttp server on ``[http_gateway] host:ws_port``, fed by the process's ``MarketData``
(feed/market.py, shared with the REST routes), so the REST depth snapshot and the depth stream
read the same in-process book:

- ``/ws``, ``/ws/<n>`` (ccxt opens ``/ws/0``, ``/ws/1`` ...): raw payloads; ``/ws/<stream>[/..]``
  subscribes at connect. ``/stream``, ``/stream/<..>``: combined payloads
  ``{"stream": name, "data": payload}``, ``/stream?streams=a/b`` subscribes at connect.
- Requests ``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [names], "id": ..}`` answer
  ``{"result": null, "id": ..}``; ``LIST_SUBSCRIPTIONS`` the names; ``SET_PROPERTY`` /
  ``GET_PROPERTY`` ``combined``. A bad request gets ``{"error": {"code", "msg"}, "id"}`` with
  Binance's codes (0 unknown property, 1 bad value type, 2 invalid request, 3 invalid JSON) and
  the connection goes on.
- Streams (symbols lowercase, ``btcusd`` for ``BTC-USD``): ``<s>@depth`` (every 1 s) and
  ``<s>@depth@100ms`` (depthUpdate), ``<s>@trade``, ``<s>@aggTrade`` (one per trade),
  ``<s>@kline_<iv>`` for protocol.market_api.INTERVALS, ``<s>@ticker``, ``<s>@miniTicker``
  (at most one a second per market, on change), ``<s>@bookTicker`` (on every best-price
  change). A new ticker, kline or bookTicker subscriber gets the current one at once.
  Amounts are decimal strings, times ms, ``m`` = the buyer was the maker.

Update ids. A depthUpdate covers ids ``U..u`` and carries each changed level's total at ``u``
(``"0"``: gone); ``depth_snapshot`` (GET /api/v3/depth) carries ``lastUpdateId``, the id of
the same book the streams have published. So Binance's recipe (and ccxt's) holds: drop events
with ``u <= lastUpdateId``, apply the one with ``U <= lastUpdateId + 1 <= u``, then each next
event has ``U`` = the previous ``u`` + 1. While this process sees the engine's run
continuously, an id *is* the engine's depth sequence number of that market.

Resync and engine restart: when the local book is reloaded from an engine snapshot (this
process's feed missed a message, or the engine restarted: a new epoch, whose sequence starts
again), the streams do not break the id chain and do not restart it. They compare the levels
they had published with the reloaded book and send the difference as one depthUpdate from the
last published id + 1 to the new book's id; the ids stay increasing (after a restart they are
the engine's sequence plus an offset). A client's book therefore stays exact across both, with
no gap to handle. A client that does miss an event (its own connection) sees ``U`` != last
``u`` + 1: ccxt raises ChecksumError from ``watch_order_book``, and the next call subscribes
again and loads a fresh snapshot. While the book is resyncing, the snapshot and the streams
stay at the last published state.

Bounded (rule 7): connections and streams per connection are capped (``StreamLimits``), each
connection has a send queue limit (a slower client is dropped with Close 1008 and counted:
feed/fanout.py), client messages are at most 64 KiB. The server pings every 20 s (aiohttp
closes a connection that does not answer within 10 s). ``metrics`` (``StreamMetrics``) are the
counters to export.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from decimal import Decimal
from typing import Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web
from sortedcontainers import SortedDict

from feed.bridge import decode_client
from feed.candles import Candle
from feed.fanout import Client, Fanout, FanoutMetrics
from feed.frames import StrictWebSocket, ws_frame
from feed.market import MarketData
from gateways.http.symbols import SymbolMap
from protocol.config import Exchange, HttpGatewayConfig, MarketSpec
from protocol.market_api import INTERVALS
from protocol.messages import Depth, Trade

log = logging.getLogger("gateways.http.streams")

DEPTH_PAUSE = {"depth": 1.0, "depth@100ms": 0.1}  # seconds a depthUpdate collects changes
STATS_PAUSE = 1.0  # seconds between ticker / miniTicker / kline pushes per market
PING = 20.0
MAX_MESSAGE = 64 * 1024
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
KINDS = (
    "depth",
    "depth@100ms",
    "trade",
    "aggTrade",
    "ticker",
    "miniTicker",
    "bookTicker",
    *(f"kline_{iv}" for iv in INTERVALS),
)
ID_TEXT = re.compile(r"^[A-Za-z0-9]{1,36}$")
DAY_MS = 86_400_000


class StreamLimits(msgspec.Struct, forbid_unknown_fields=True):
    max_connections: int = 5_000
    max_streams: int = 1_024  # per connection (Binance's own limit; ccxt assumes it)
    send_queue: int = 2_000  # KiB of unsent data per connection; a slower client is dropped

    @classmethod
    def of(cls, ex: Exchange) -> StreamLimits:
        """The bridge's caps for connections and send queue (the same browsers and bots)."""
        return cls(ex.bridge.max_connections, 1_024, ex.bridge.send_queue)


class StreamMetrics(FanoutMetrics):
    depth_updates: int = 0  # depthUpdate events built (each sent to every subscriber)
    book_reloads: int = 0  # books reloaded from an engine snapshot after the first sync


# ------------------------------------------------------------------------ event shapes


class DepthUpdate(msgspec.Struct):
    e: str
    E: int
    s: str
    U: int
    u: int
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]


class TradeEvent(msgspec.Struct):
    e: str
    E: int
    s: str
    t: int
    p: str
    q: str
    T: int
    m: bool
    M: bool


class AggTradeEvent(msgspec.Struct):
    e: str
    E: int
    s: str
    a: int
    p: str
    q: str
    f: int
    l: int  # noqa: E741
    T: int
    m: bool
    M: bool


class KlineData(msgspec.Struct):
    t: int
    T: int
    s: str
    i: str
    f: int
    L: int
    o: str
    c: str
    h: str
    l: str  # noqa: E741
    v: str
    n: int
    x: bool
    q: str
    V: str
    Q: str
    B: str


class KlineEvent(msgspec.Struct):
    e: str
    E: int
    s: str
    k: KlineData


class TickerEvent(msgspec.Struct):
    e: str
    E: int
    s: str
    p: str
    P: str
    w: str
    x: str
    c: str
    Q: str
    b: str
    B: str
    a: str
    A: str
    o: str
    h: str
    l: str  # noqa: E741
    v: str
    q: str
    O: int  # noqa: E741
    C: int
    F: int
    L: int
    n: int


class MiniTickerEvent(msgspec.Struct):
    e: str
    E: int
    s: str
    c: str
    o: str
    h: str
    l: str  # noqa: E741
    v: str
    q: str


class BookTickerEvent(msgspec.Struct):
    u: int
    s: str
    b: str
    B: str
    a: str
    A: str


class BadRequest(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


# ------------------------------------------------------------------------ book state


class _Pending:
    """Depth changes waiting for the next depthUpdate of one stream: ids ``first..last``."""

    __slots__ = ("first", "last", "bids", "asks")

    def __init__(self, first: int) -> None:
        self.first = first
        self.last = first - 1
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}


class _Published:
    """What the streams have published of one market's book: the level maps (the local
    book's own while it is synced; LocalBook.load replaces them, so after a reload these
    still hold the published state), its epoch, id offset and last update id."""

    __slots__ = (
        "market",
        "symbol",
        "stream",
        "epoch",
        "offset",
        "uid",
        "bids",
        "asks",
        "pending",
        "bbo",
        "klines",
        "stats_at",
        "stats_due",
    )

    def __init__(self, market: str, symbol: str) -> None:
        self.market = market
        self.symbol = symbol
        self.stream = symbol.lower()
        self.epoch = 0
        self.offset = 0
        self.uid = 0
        self.bids: SortedDict = SortedDict()  # -price -> lots
        self.asks: SortedDict = SortedDict()
        self.pending: dict[str, _Pending] = {}
        self.bbo: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.klines: dict[str, dict[int, Candle]] = {}  # changed since the last push
        self.stats_at = 0.0
        self.stats_due = False

    def best(self) -> tuple[int, int, int, int]:
        bid, bq = self.bids.peekitem(0) if self.bids else (0, 0)
        ask, aq = self.asks.peekitem(0) if self.asks else (0, 0)
        return -bid, bq, ask, aq


def _changes(old: SortedDict, new: SortedDict) -> dict[int, int]:
    out = {k: q for k, q in new.items() if old.get(k) != q}
    out.update({k: 0 for k in old if k not in new})
    return out


class BinanceStreams:
    def __init__(
        self,
        ex: Exchange,
        market: MarketData,
        cfg: HttpGatewayConfig | None = None,
        limits: StreamLimits | None = None,
    ) -> None:
        self.ex = ex
        self.market = market
        self.cfg = cfg or ex.http_gateway
        self.limits = limits or StreamLimits.of(ex)
        self.symbols = SymbolMap(ex)
        self.metrics = StreamMetrics()
        self.fan = Fanout(self.metrics)
        self.enc = msgspec.json.Encoder()
        self.books: dict[str, _Published] = {}
        self.by_stream: dict[str, _Published] = {}  # lowercase symbol -> its market
        for m in ex.markets:
            pub = _Published(m, self.symbols.binance[m])
            self.books[m] = pub
            self.by_stream[pub.stream] = pub
            book = market.books[m]
            if book.synced:  # the market data started before us: adopt its state
                pub.epoch, pub.uid, pub.bids, pub.asks = book.epoch, book.seq, book.bids, book.asks
        self.timers: set[asyncio.TimerHandle] = set()
        self.runner: web.AppRunner | None = None
        self.routes: list[web.RouteDef] = []  # more routes on this server (private.py's)
        self.site: web.TCPSite | None = None
        market.add_listener(on_depth=self.on_depth, on_history=self.on_history)

    # ---------------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        server = self.site._server if self.site else None
        if server is None or not server.sockets:  # type: ignore[attr-defined]
            return 0
        return server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/ws", self.ws_raw),
                web.get("/ws/{tail:.*}", self.ws_raw),
                web.get("/stream", self.ws_combined),
                web.get("/stream/{tail:.*}", self.ws_combined),
                *self.routes,
            ]
        )
        return app

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, self.cfg.host, self.cfg.ws_port, backlog=1024)
        await self.site.start()
        log.info("Binance-style streams on ws://%s:%d/ws", self.cfg.host, self.port)

    async def stop(self) -> None:
        for t in self.timers:
            t.cancel()
        self.timers.clear()
        for c in list(self.fan.clients):
            self.fan.drop(c)
            await c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = self.site = None

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        handle: asyncio.TimerHandle

        def run() -> None:
            self.timers.discard(handle)
            fn(*args)

        handle = asyncio.get_running_loop().call_later(delay, run)
        self.timers.add(handle)

    # -------------------------------------------------------------------- publishing
    def wants(self, stream: str) -> bool:
        return bool(self.fan.subs.get(stream))

    def publish(self, stream: str, event: msgspec.Struct) -> None:
        subs = self.fan.subs.get(stream)
        if not subs:
            return
        raw = self.enc.encode(event)
        plain = wrapped = b""
        for c in list(subs):
            if c.combined:
                if not wrapped:
                    wrapped = ws_frame(b'{"stream":"%s","data":%s}' % (stream.encode(), raw))
                self.fan.write(c, wrapped)
            else:
                if not plain:
                    plain = ws_frame(raw)
                self.fan.write(c, plain)

    def send(self, c: Client, stream: str, event: msgspec.Struct) -> None:
        raw = self.enc.encode(event)
        if c.combined:
            raw = b'{"stream":"%s","data":%s}' % (stream.encode(), raw)
        self.fan.push(c, raw)

    # ------------------------------------------------------------------------- depth
    def on_depth(self, market: str, d: Depth | None) -> None:
        pub = self.books[market]
        if d is None:
            self._reloaded(pub)
            return
        book = self.market.books[market]
        uid = d.seq + pub.offset
        if d.epoch != pub.epoch or uid != pub.uid + 1 or pub.bids is not book.bids:
            # Cannot happen (the feed applies only deltas that follow on, after a load it
            # told us of). Should it, skip an id: clients see the gap and load a snapshot,
            # rather than build on a book that may be wrong.
            log.error(
                "%s: depth %d/%d does not follow id %d: breaking the chain",
                market,
                d.epoch,
                d.seq,
                pub.uid,
            )
            pub.offset = pub.uid + 2 - book.seq if book.epoch == d.epoch else pub.uid + 2
            pub.epoch, pub.uid, pub.bids, pub.asks = (
                book.epoch,
                book.seq + pub.offset,
                book.bids,
                book.asks,
            )
            return
        pub.uid = uid
        self._add(pub, uid, {-p: q for p, q in d.bids}, dict(d.asks))

    def _reloaded(self, pub: _Published) -> None:
        """The local book was (re)loaded from a snapshot: publish the difference between what
        subscribers have and the new book as one update, ids continuing (module docstring)."""
        book = self.market.books[pub.market]
        if not book.synced:
            return
        if pub.epoch:
            self.metrics.book_reloads += 1
        if book.epoch != pub.epoch or book.seq + pub.offset < pub.uid:
            # a new engine run: its sequence starts again; keep ours increasing
            pub.offset = 0 if book.seq > pub.uid or not pub.epoch else pub.uid + 1 - book.seq
        bids, asks = _changes(pub.bids, book.bids), _changes(pub.asks, book.asks)
        uid = book.seq + pub.offset
        if uid <= pub.uid and (bids or asks):  # changed without a new id: make one
            pub.offset += pub.uid + 1 - uid
            uid = pub.uid + 1
        before = pub.uid
        pub.epoch, pub.uid, pub.bids, pub.asks = book.epoch, uid, book.bids, book.asks
        if uid > before:
            self._add(pub, uid, bids, asks, first=before + 1)

    def _add(
        self,
        pub: _Published,
        uid: int,
        bids: dict[int, int],
        asks: dict[int, int],
        first: int | None = None,
    ) -> None:
        """Fold changes (ids ``first``..``uid``) into each depth stream that has subscribers."""
        for kind, pause in DEPTH_PAUSE.items():
            p = pub.pending.get(kind)
            if p is None:
                if not self.fan.subs.get(f"{pub.stream}@{kind}"):
                    continue
                p = pub.pending[kind] = _Pending(first if first is not None else uid)
                self._later(pause, self._flush, pub, kind)
            p.bids.update(bids)
            p.asks.update(asks)
            p.last = uid
        best = pub.best()
        if best != pub.bbo:
            pub.bbo = best
            if self.wants(f"{pub.stream}@bookTicker"):
                self.publish(f"{pub.stream}@bookTicker", self.book_ticker(pub))
            if self.wants(f"{pub.stream}@ticker"):
                self._stats(pub)  # the ticker shows the best bid and ask too

    def _flush(self, pub: _Published, kind: str) -> None:
        p = pub.pending.pop(kind)
        spec = self.ex.markets[pub.market]
        self.metrics.depth_updates += 1
        event = DepthUpdate(
            "depthUpdate",
            _now_ms(),
            pub.symbol,
            p.first,
            p.last,
            [(spec.price_text(-k), spec.qty_text(q)) for k, q in sorted(p.bids.items())],
            [(spec.price_text(k), spec.qty_text(q)) for k, q in sorted(p.asks.items())],
        )
        self.publish(f"{pub.stream}@{kind}", event)

    def depth_snapshot(self, spec: MarketSpec, limit: int = 100) -> dict[str, Any]:
        """GET /api/v3/depth: the published book, ``limit`` levels a side (1..5000)."""
        pub = self.books[spec.symbol]
        n = max(1, min(limit, 5000))
        return {
            "lastUpdateId": pub.uid,
            "bids": [[spec.price_text(-k), spec.qty_text(q)] for k, q in pub.bids.items()[:n]],
            "asks": [[spec.price_text(k), spec.qty_text(q)] for k, q in pub.asks.items()[:n]],
        }

    # ----------------------------------------------------------- trades, tickers, klines
    def on_history(
        self, market: str, trades: list[Trade], changed: dict[str, Candle], live: bool
    ) -> None:
        pub = self.books[market]
        if live and trades:
            spec = self.ex.markets[market]
            s, now = pub.symbol, _now_ms()
            want_trade = self.wants(f"{pub.stream}@trade")
            want_agg = self.wants(f"{pub.stream}@aggTrade")
            for t in trades:
                p, q, ms, m = (
                    spec.price_text(t.price),
                    spec.qty_text(t.qty),
                    t.ts // 1_000_000,
                    t.taker_side == 2,
                )
                if want_trade:
                    self.publish(
                        f"{pub.stream}@trade",
                        TradeEvent("trade", now, s, t.trade_id, p, q, ms, m, True),
                    )
                if want_agg:
                    self.publish(
                        f"{pub.stream}@aggTrade",
                        AggTradeEvent(
                            "aggTrade",
                            now,
                            s,
                            t.trade_id,
                            p,
                            q,
                            t.trade_id,
                            t.trade_id,
                            ms,
                            m,
                            True,
                        ),
                    )
        for iv, c in changed.items():
            pub.klines.setdefault(iv, {})[c.open_time] = c
        self._stats(pub)

    def _stats(self, pub: _Published) -> None:
        """Ticker, miniTicker and changed klines: at most one push a second per market; a
        change inside the pause is pushed when it ends."""
        now = time.monotonic()
        wait = pub.stats_at + STATS_PAUSE - now
        if wait > 0:
            if not pub.stats_due:
                pub.stats_due = True
                self._later(wait, self._stats_now, pub)
            return
        pub.stats_at = now
        klines, pub.klines = pub.klines, {}
        if self.wants(f"{pub.stream}@ticker"):
            self.publish(f"{pub.stream}@ticker", self.ticker(pub))
        if self.wants(f"{pub.stream}@miniTicker"):
            self.publish(f"{pub.stream}@miniTicker", self.mini_ticker(pub))
        for iv, candles in klines.items():
            stream = f"{pub.stream}@kline_{iv}"
            if self.wants(stream):
                for c in sorted(candles.values(), key=lambda c: c.open_time):
                    self.publish(stream, self.kline(pub, iv, c))

    def _stats_now(self, pub: _Published) -> None:
        pub.stats_due = False
        self._stats(pub)

    def ticker(self, pub: _Published) -> TickerEvent:
        spec = self.ex.markets[pub.market]
        t = self.market.ticker_raw(pub.market)
        recent = self.market.trades[pub.market]
        last_qty = spec.qty_text(recent[-1].qty) if recent else "0"
        bid, bq, ask, aq = pub.best()
        now = _now_ms()
        px = spec.price_text
        pct = "0.000"
        if t.open:
            pct = str((Decimal(t.change) * 100 / Decimal(t.open)).quantize(Decimal("0.001")))
        avg = "0"
        if t.volume:
            avg = str(
                (
                    Decimal(spec.quote_text(t.quote_volume)) / Decimal(spec.qty_text(t.volume))
                ).quantize(Decimal(px(1)))
            )
        return TickerEvent(
            "24hrTicker",
            now,
            pub.symbol,
            px(t.change),
            pct,
            avg,
            "0",  # the close before the window is not kept
            px(t.last),
            last_qty,
            px(bid),
            spec.qty_text(bq),
            px(ask),
            spec.qty_text(aq),
            px(t.open),
            px(t.high),
            px(t.low),
            spec.qty_text(t.volume),
            spec.quote_text(t.quote_volume),
            now - DAY_MS,
            now,
            t.first_trade_id if t.trades else -1,
            t.last_trade_id if t.trades else -1,
            t.trades,
        )

    def mini_ticker(self, pub: _Published) -> MiniTickerEvent:
        spec = self.ex.markets[pub.market]
        t = self.market.ticker_raw(pub.market)
        px = spec.price_text
        return MiniTickerEvent(
            "24hrMiniTicker",
            _now_ms(),
            pub.symbol,
            px(t.last),
            px(t.open),
            px(t.high),
            px(t.low),
            spec.qty_text(t.volume),
            spec.quote_text(t.quote_volume),
        )

    def kline(self, pub: _Published, iv: str, c: Candle) -> KlineEvent:
        spec = self.ex.markets[pub.market]
        length = INTERVALS[iv]
        px = spec.price_text
        data = KlineData(
            c.open_time * 1000,
            (c.open_time + length) * 1000 - 1,
            pub.symbol,
            iv,
            -1,  # trade ids per candle are not kept
            -1,
            px(c.open),
            px(c.close),
            px(c.high),
            px(c.low),
            spec.qty_text(c.volume),
            c.trades,
            c.open_time + length <= time.time(),
            spec.quote_text(c.quote_volume),
            "0",  # taker buy volumes are not kept
            "0",
            "0",
        )
        return KlineEvent("kline", _now_ms(), pub.symbol, data)

    def book_ticker(self, pub: _Published) -> BookTickerEvent:
        spec = self.ex.markets[pub.market]
        bid, bq, ask, aq = pub.bbo
        return BookTickerEvent(
            pub.uid,
            pub.symbol,
            spec.price_text(bid),
            spec.qty_text(bq),
            spec.price_text(ask),
            spec.qty_text(aq),
        )

    # --------------------------------------------------------------------- websocket
    async def ws_raw(self, request: web.Request) -> web.StreamResponse:
        return await self.ws_handler(request, combined=False)

    async def ws_combined(self, request: web.Request) -> web.StreamResponse:
        return await self.ws_handler(request, combined=True)

    async def ws_handler(self, request: web.Request, combined: bool) -> web.StreamResponse:
        names = [n for n in request.match_info.get("tail", "").split("/") if n and not n.isdigit()]
        names += [n for n in request.query.get("streams", "").split("/") if n]
        try:
            streams = self.parse_streams(names)
        except BadRequest as e:
            self.metrics.bad_requests += 1
            return web.json_response({"code": -1100, "msg": e.msg}, status=400)
        if len(self.fan.clients) >= self.limits.max_connections:
            self.metrics.refused += 1
            return web.json_response(
                {"code": -1003, "msg": "Too many websocket connections; try again later."},
                status=503,
            )
        ws = StrictWebSocket(heartbeat=PING, max_msg_size=MAX_MESSAGE)
        await ws.prepare(request)
        c = Client(ws, request.transport, self.limits.send_queue * 1024)  # type: ignore[arg-type]
        c.combined = combined
        self.fan.add(c)
        self.metrics.connections_total += 1
        try:
            if streams:
                self.subscribe(c, streams)
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:  # a protocol error: aiohttp sent the close
                    break
                if msg.type != WSMsgType.TEXT:
                    self.reply_error(
                        c, None, BadRequest(3, "Invalid JSON: send JSON in text frames")
                    )
                    continue
                self.on_request(c, msg.data)
        finally:
            self.fan.drop(c)
        return ws

    def reply(self, c: Client, rid: object, result: object = None) -> None:
        self.fan.push(c, self.enc.encode({"result": result, "id": rid}))

    def reply_error(self, c: Client, rid: object, e: BadRequest) -> None:
        self.metrics.bad_requests += 1
        self.fan.push(c, self.enc.encode({"error": {"code": e.code, "msg": e.msg}, "id": rid}))

    def on_request(self, c: Client, text: str) -> None:
        rid: object = None
        try:
            try:
                req = decode_client(_ANY, text)
            except msgspec.DecodeError as e:
                raise BadRequest(3, f"Invalid JSON: {e}") from None
            if not isinstance(req, dict):
                raise BadRequest(2, "Invalid request: expected an object with method, params, id")
            rid = req.get("id")
            if not _valid_id(rid):
                rid = None
                raise BadRequest(
                    2,
                    "Invalid request: request ID must be an integer, a string of up to 36 "
                    "letters and digits, or null",
                )
            extra = set(req) - {"method", "params", "id"}
            if extra:
                raise BadRequest(2, f"Invalid request: unknown field(s) {sorted(extra)}")
            self.dispatch(c, rid, req)
        except BadRequest as e:
            self.reply_error(c, rid, e)

    def dispatch(self, c: Client, rid: object, req: dict[str, Any]) -> None:
        method = req.get("method")
        if method is None:
            raise BadRequest(2, "Invalid request: missing field `method`")
        if method not in METHODS:
            raise BadRequest(
                2,
                f"Invalid request: unknown variant {method!r}, expected one of "
                + ", ".join(f"`{m}`" for m in METHODS),
            )
        params = req.get("params", [])
        if not isinstance(params, list):
            raise BadRequest(2, "Invalid request: params must be an array")
        if method == "LIST_SUBSCRIPTIONS":
            return self.reply(c, rid, sorted(c.streams))
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return self.property(c, rid, method, params)
        if not all(isinstance(p, str) for p in params):
            raise BadRequest(2, "Invalid request: stream names must be strings")
        streams = self.parse_streams(params)
        if method == "UNSUBSCRIBE":
            for s in streams:
                self.fan.unsubscribe(c, s)
            return self.reply(c, rid)
        new = [s for s in streams if s not in c.streams]
        if len(c.streams) + len(new) > self.limits.max_streams:
            raise BadRequest(
                2,
                f"Invalid request: too many streams: at most {self.limits.max_streams} "
                f"per connection (has {len(c.streams)}, asked for {len(new)} more)",
            )
        self.reply(c, rid)
        self.subscribe(c, new)

    def property(self, c: Client, rid: object, method: str, params: list[Any]) -> None:
        if not params or not isinstance(params[0], str):
            raise BadRequest(2, "Invalid request: property name must be a string")
        if params[0] != "combined":
            raise BadRequest(0, "Unknown property")
        if method == "GET_PROPERTY":
            return self.reply(c, rid, c.combined)
        if len(params) != 2 or not isinstance(params[1], bool):
            raise BadRequest(1, "Invalid value type: expected Boolean")
        c.combined = params[1]
        self.reply(c, rid)

    def parse_streams(self, names: list[str]) -> list[str]:
        """Canonical stream names (lowercase symbol), in order, without repeats; a bad one
        fails the whole request."""
        out: dict[str, None] = {}
        bad = []
        for name in names:
            sym, _, kind = name.partition("@")
            if sym.lower() not in self.by_stream or kind not in KINDS:
                bad.append(name)
            else:
                out[f"{sym.lower()}@{kind}"] = None
        if bad:
            raise BadRequest(
                2,
                f"Invalid request: invalid stream(s) {bad[:5]}: streams are <symbol>@<kind>, "
                f"symbol one of {sorted(self.by_stream)[:20]}, kind one of {list(KINDS)}",
            )
        return list(out)

    def subscribe(self, c: Client, streams: list[str]) -> None:
        for s in streams:
            self.fan.subscribe(c, s)
        for s in streams:
            self.initial(c, s)

    def initial(self, c: Client, stream: str) -> None:
        """What a new ticker, kline or bookTicker subscriber gets at once."""
        sym, _, kind = stream.partition("@")
        pub = self.by_stream[sym]
        if kind == "ticker":
            self.send(c, stream, self.ticker(pub))
        elif kind == "miniTicker":
            self.send(c, stream, self.mini_ticker(pub))
        elif kind == "bookTicker":
            pub.bbo = pub.best()
            self.send(c, stream, self.book_ticker(pub))
        elif kind.startswith("kline_"):
            rows = self.market.candles[pub.market].history(kind[6:], limit=1)
            if rows:
                self.send(c, stream, self.kline(pub, kind[6:], rows[-1]))


_ANY = msgspec.json.Decoder()


def _valid_id(rid: object) -> bool:
    if rid is None:
        return True
    if isinstance(rid, bool):
        return False
    if isinstance(rid, int):
        return -(2**63) <= rid < 2**63
    return isinstance(rid, str) and bool(ID_TEXT.match(rid))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

"""The websocket bridge: engine market data -> browsers and HTTP clients, plus the dashboard.

One process (aiohttp on uvloop). Its market data is a ``feed.market.MarketData`` (the one
implementation the HTTP gateway shares): a local book per market with the feed library, and
recent trades, candles and 24h tickers (feed/history.py: seeded at start from the recorder's
ClickHouse and the engine, then continued live by trade id). The bridge serves:

- websocket ``/ws``: streams ``trades@M``, ``depth@M`` (a snapshot on subscribe, then diffs
  carrying the engine's depth sequence numbers), ``ticker@M``, ``kline_<iv>@M``
  (see protocol/market_api.py);
- HTTP JSON: ``/api/markets``, ``/api/depth``, ``/api/trades``, ``/api/ticker``,
  ``/api/klines``, ``/health``, ``/stats`` (counters as JSON); ``/metrics`` the same counters
  for Prometheus (text exposition format);
- the dashboard page at ``/``.

Each message is encoded once and the same bytes go to every subscriber (feed/fanout.py, shared
with the Binance-style streams). Every connection has a bounded send queue: a browser that
cannot keep up is disconnected and counted, never allowed to delay the others or to grow
memory. Connections and subscriptions per connection are capped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from feed.candles import Candle
from feed.fanout import Client, Fanout, FanoutMetrics
from feed.frames import StrictWebSocket, ws_frame
from feed.market import MarketData, depth_view, kline_view, trade_view
from protocol import market_api as A
from protocol import salvage
from protocol.config import Exchange, MarketSpec
from protocol.json_api import market_view
from protocol.messages import Depth, Trade
from protocol.metrics import Exporter

log = logging.getLogger("feed.bridge")

WEB = Path(__file__).with_name("web")
CHART_JS = WEB / "node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js"
TICKER_PAUSE = 0.25  # seconds between ticker pushes per market
MAX_MESSAGE = 64 * 1024  # bytes of one client message; a bigger one: close 1009


class Metrics(FanoutMetrics):
    md_messages: int = 0
    lag_ms: float = 0.0  # engine timestamp of the newest market data vs our clock


class Bridge:
    def __init__(self, ex: Exchange, recorder_url: str | None = None) -> None:
        self.ex = ex
        self.cfg = ex.bridge
        self.metrics = Metrics()
        self.fan = Fanout(self.metrics)
        self.clients = self.fan.clients
        self.subs = self.fan.subs
        self.market = MarketData(ex, recorder_url, name="bridge")
        self.market.add_listener(
            on_trades=self.on_trades, on_depth=self.on_depth, on_history=self.on_history
        )
        self.feed = self.market.feed
        self.history = self.market.history
        self.candles = self.market.candles
        self.enc = msgspec.json.Encoder()
        self.last_ticker: dict[str, float] = {}
        self.ticker_due: set[str] = set()
        self.exporter = Exporter("bridge")  # GET /metrics; the same counters as JSON: /stats
        self.exporter.add(self.metrics, gauges=("connections", "subscriptions"))
        self.exporter.add(self.feed.stats, prefix="feed_")

    # --------------------------------------------------------------------- fan-out
    def publish(self, stream: str, data: object) -> None:
        if not self.subs.get(stream):
            return
        frame = ws_frame(self.enc.encode(A.StreamMsg(stream, data)))  # type: ignore[arg-type]
        self.fan.publish(stream, frame)

    def push(self, c: Client, payload: bytes) -> None:
        self.fan.push(c, payload)

    # ------------------------------------------------------------------ feed events
    def on_trades(self, market: str, trades: list[Trade]) -> None:
        self.metrics.md_messages += 1
        self.metrics.lag_ms = (time.time_ns() - trades[-1].ts) / 1e6

    def on_history(
        self, market: str, trades: list[Trade], changed: dict[str, Candle], live: bool
    ) -> None:
        """New trades applied (``live``), or the market seeded: subscribers see its ticker
        and current candles at once."""
        spec = self.ex.markets[market]
        if live:
            self.publish(f"trades@{market}", [trade_view(spec, t) for t in trades])
        else:
            changed = {}
            for iv in A.INTERVALS:
                rows = self.candles[market].history(iv, limit=1)
                if rows:
                    changed[iv] = rows[-1]
        for iv, c in changed.items():
            self.publish(f"kline_{iv}@{market}", kline_view(spec, iv, c))
        self.push_ticker(market)

    def push_ticker(self, market: str) -> None:
        """At most 4 ticker pushes a second per market; a trade inside the pause is not lost:
        the pause ends with a push of the latest ticker."""
        now = time.monotonic()
        wait = self.last_ticker.get(market, 0.0) + TICKER_PAUSE - now
        if wait <= 0:
            self.last_ticker[market] = now
            self.publish(f"ticker@{market}", self.ticker(market))
        elif market not in self.ticker_due:
            self.ticker_due.add(market)
            asyncio.get_running_loop().call_later(wait, self._ticker_due, market)

    def _ticker_due(self, market: str) -> None:
        self.ticker_due.discard(market)
        self.push_ticker(market)

    def on_depth(self, market: str, d: Depth | None) -> None:
        """Called before the history hears of a resync (MarketData's order), as before."""
        self.metrics.md_messages += 1
        if d is None:  # (re)synced: everyone starts again from a snapshot
            self.publish(f"depth@{market}", self.depth_snapshot(market))
            return
        self.metrics.lag_ms = (time.time_ns() - d.ts) / 1e6 if d.ts else self.metrics.lag_ms
        spec = self.ex.markets[market]
        self.publish(f"depth@{market}", depth_view(spec, d.epoch, d.seq, d.bids, d.asks))

    def depth_snapshot(self, market: str, limit: int = 0) -> A.DepthView:
        return self.market.depth_view(market, limit)

    def ticker(self, market: str) -> A.TickerData:
        return self.market.ticker(market)

    # ------------------------------------------------------------------- websocket
    async def ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = StrictWebSocket(heartbeat=30, max_msg_size=MAX_MESSAGE)
        if len(self.clients) >= self.cfg.max_connections:
            self.metrics.refused += 1
            raise web.HTTPServiceUnavailable(text="too many websocket connections")
        await ws.prepare(request)
        c = Client(ws, request.transport, self.cfg.send_queue * 1024)  # type: ignore[arg-type]
        self.fan.add(c)
        self.metrics.connections_total += 1
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:  # a protocol error: aiohttp sent the close
                    break
                if msg.type != WSMsgType.TEXT:
                    self.reply(c, None, error=(1001, "send JSON text frames"))
                    continue
                self.on_request(c, msg.data)
        finally:
            self.fan.drop(c)
        return ws

    def reply(
        self, c: Client, rid: object, result: object = None, error: tuple[int, str] | None = None
    ) -> None:
        if error:
            self.metrics.bad_requests += 1
            body = {"id": rid, "error": {"code": error[0], "reason": error[1]}}
        else:
            body = {"id": rid, "result": result}
        self.push(c, self.enc.encode(body))

    def on_request(self, c: Client, text: str) -> None:
        try:
            req = decode_client(REQUEST, text)
        except msgspec.ValidationError as e:
            return self.reply(c, salvage.json_id(salvage.json_object(text)), error=(1007, str(e)))
        except msgspec.DecodeError as e:
            return self.reply(c, None, error=(1001, f"not valid JSON: {e}"))
        if req.op == "list":
            return self.reply(c, req.id, sorted(c.streams))
        bad = [s for s in req.streams if not self.valid_stream(s)]
        if bad:
            return self.reply(
                c,
                req.id,
                error=(
                    1007,
                    f"unknown stream(s) {bad}: streams are "
                    "trades@M, depth@M, ticker@M, kline_<iv>@M "
                    f"with iv in {list(A.INTERVALS)}",
                ),
            )
        if req.op == "unsubscribe":
            for s in req.streams:
                self.fan.unsubscribe(c, s)
            return self.reply(c, req.id, sorted(c.streams))
        self.subscribe(c, req)

    def subscribe(self, c: Client, req: A.WsRequest) -> None:
        new = [s for s in dict.fromkeys(req.streams) if s not in c.streams]
        if len(c.streams) + len(new) > self.cfg.max_subscriptions:
            return self.reply(
                c,
                req.id,
                error=(1004, f"at most {self.cfg.max_subscriptions} streams per connection"),
            )
        for s in new:
            self.fan.subscribe(c, s)
        self.reply(c, req.id, sorted(c.streams))
        for s in new:
            self.initial(c, s)

    def initial(self, c: Client, stream: str) -> None:
        """What a new subscriber gets at once, so it needs no separate HTTP call."""
        kind, market = stream.split("@", 1)
        data: object
        if kind == "depth":
            data = self.depth_snapshot(market)
        elif kind == "ticker":
            data = self.ticker(market)
        elif kind.startswith("kline_"):
            rows = self.candles[market].history(kind[6:], limit=1)
            if not rows:
                return
            data = kline_view(self.ex.markets[market], kind[6:], rows[-1])
        else:
            return
        self.push(c, self.enc.encode(A.StreamMsg(stream, data)))  # type: ignore[arg-type]

    def valid_stream(self, s: str) -> bool:
        kind, _, market = s.partition("@")
        if market not in self.ex.markets:
            return False
        return kind in ("trades", "depth", "ticker") or (
            kind.startswith("kline_") and kind[6:] in A.INTERVALS
        )

    # ------------------------------------------------------------------------- HTTP
    def market_of(self, request: web.Request) -> MarketSpec:
        market = request.query.get("market", "")
        spec = self.ex.markets.get(market)
        if spec is None:
            raise _bad(f"unknown market {market!r}; markets: {list(self.ex.markets)}")
        return spec

    async def api_markets(self, request: web.Request) -> web.Response:
        return self.json([market_view(s) for s in self.ex.markets.values()])

    async def api_depth(self, request: web.Request) -> web.Response:
        spec = self.market_of(request)
        limit = _int(request, "limit", 100, 1, 5000)
        return self.json(self.depth_snapshot(spec.symbol, limit))

    async def api_trades(self, request: web.Request) -> web.Response:
        spec = self.market_of(request)
        limit = _int(request, "limit", 100, 1, self.cfg.recent_trades)
        return self.json(self.market.trade_views(spec.symbol, limit))

    async def api_ticker(self, request: web.Request) -> web.Response:
        if "market" not in request.query:
            return self.json([self.ticker(m) for m in self.ex.markets])
        return self.json(self.ticker(self.market_of(request).symbol))

    async def api_klines(self, request: web.Request) -> web.Response:
        spec = self.market_of(request)
        interval = request.query.get("interval", "1m")
        if interval not in A.INTERVALS:
            raise _bad(f"unknown interval {interval!r}; intervals: {list(A.INTERVALS)}")
        start = _int(request, "start", 0, 0, 2**40)
        end = _int(request, "end", 2**40, 0, 2**40)
        if end <= start:
            raise _bad(f"end ({end}) must be after start ({start})")
        limit = _int(request, "limit", 500, 1, 5000)
        return self.json(await self.market.klines(spec.symbol, interval, start, end, limit))

    async def site(self, request: web.Request) -> web.Response:
        """GET /api/v1/site as the trading gateway answers it (docs/web.md), saying that the
        page served here is watch-only, and where to trade."""
        name = hostname(request.host) or "127.0.0.1"
        gw = self.ex.http_gateway
        return self.json({"market_ws": f"ws://{request.host}/ws", "private_ws": "",
                          "signup": False, "trade_at": f"http://{name}:{gw.port}/"})  # fmt: skip

    async def favicon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def health(self, request: web.Request) -> web.Response:
        """Healthy: the engine answers, every book is synced, every market's trade history
        seeded (a seed without a reachable recorder ends after RECORDER_WAIT seconds)."""
        h = self.market.health()
        return self.json(h, status=200 if h.ok else 503)

    async def stats(self, request: web.Request) -> web.Response:
        return self.json({"bridge": self.metrics, "feed": self.feed.stats})

    async def metrics_handler(self, request: web.Request) -> web.Response:
        body, content_type = self.exporter.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB / "index.html")

    async def chart_js(self, request: web.Request) -> web.FileResponse:
        if not CHART_JS.exists():
            raise web.HTTPNotFound(text="lightweight-charts is not installed: run make install")
        return web.FileResponse(CHART_JS)

    def json(self, obj: object, status: int = 200) -> web.Response:
        return web.Response(
            body=self.enc.encode(obj), status=status, content_type="application/json"
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/ws", self.ws_handler),
                web.get("/api/markets", self.api_markets),
                web.get("/api/depth", self.api_depth),
                web.get("/api/trades", self.api_trades),
                web.get("/api/ticker", self.api_ticker),
                web.get("/api/klines", self.api_klines),
                web.get("/api/v1/site", self.site),
                web.get("/health", self.health),
                web.get("/stats", self.stats),
                web.get("/metrics", self.metrics_handler),
                web.get("/vendor/lightweight-charts.js", self.chart_js),
                web.get("/favicon.ico", self.favicon),
                web.static("/static", WEB / "static"),
            ]
        )
        return app


def _bad(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=msgspec.json.encode({"error": text}).decode(), content_type="application/json"
    )


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{name} must be an integer, was {raw!r}") from None
    if not lo <= value <= hi:
        raise _bad(f"{name} must be in {lo}..{hi}, was {value}")
    return value


REQUEST = msgspec.json.Decoder(A.WsRequest)


def hostname(host: str) -> str:
    """The host name of a Host header (its port dropped; ``[::1]`` kept whole), or "" if it is
    not a plain name or address: what a page is told to connect back to."""
    if host.startswith("["):  # [::1]:8070
        return host[: host.find("]") + 1] if "]" in host else ""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    ok = name and all(ch.isalnum() or ch in ".-" for ch in name)
    return name if ok else ""


def decode_client(decoder: msgspec.json.Decoder, text: str | bytes) -> Any:
    """Every decode of what a client sent goes through here. msgspec signals input nested
    deeper than the interpreter's recursion limit (``[[[[...`` 40 KB long fits in one frame)
    with RecursionError; that is a bad request like any other, so it becomes a DecodeError."""
    try:
        return decoder.decode(text)
    except RecursionError:
        raise msgspec.DecodeError("JSON nested too deeply") from None

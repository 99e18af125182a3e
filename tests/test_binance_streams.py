"""The Binance-compatible websocket streams (gateways/http/streams.py) as ccxt and a raw client
see them.

A real engine process; in the test's event loop the gateway's market data (``MarketData``) and
``BinanceStreams`` on a free port, and real websocket/HTTP clients (aiohttp, ccxt.pro). Orders go
straight to the engine (``Desk``); expected values come from the engine's own answers (fills,
book snapshots), turned into decimal text here with ``Decimal``. Markets ``X00-USD`` ... have a
base asset each, since Binance symbols (``X00USD``) must differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from feed.market import MarketData
from gateways.http.streams import BinanceStreams, StreamLimits
from gateways.http.symbols import SymbolMap
from protocol import config
from protocol.messages import Deposit, Depth, LedgerReply
from tests.fixtures_feed import BUY, REPLY_TIMEOUT, SELL, Desk, async_test
from tests.procs import DEFAULT_CONFIG, EngineProc, eventually_async

MARKETS = [f"X{i:02d}-USD" for i in range(12)]
_free = iter(MARKETS)


def px(ticks: int) -> str:
    return str(Decimal(ticks).scaleb(-2))  # tick 0.01


def qty(lots: int) -> str:
    return str(Decimal(lots).scaleb(-4))  # lot 0.0001


def write_config(path: Path) -> Path:
    text = DEFAULT_CONFIG.read_text()
    for m in MARKETS:
        base = m.split("-")[0]
        text += f"\n[assets.{base}]\ndecimals = 8\n"
        text += (
            f'\n[markets.{m}]\nbase = "{base}"\nquote = "USD"\ntick = "0.01"\nlot = "0.0001"\n'
            'min_qty = "0.0001"\nmax_qty = "1000"\nmax_price = "10000000"\n'
            'maker_fee = "0.001"\ntaker_fee = "0.002"\n'
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class Engine:
    def __init__(self, workdir: Path) -> None:
        self.config = write_config(workdir / "exchange.toml")
        self.proc = EngineProc(workdir / "engine", config=self.config)


@pytest.fixture(name="engine", scope="module")
def engine_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    eng = Engine(tmp_path_factory.mktemp("binance"))
    asyncio.run(eng.proc.astart())
    yield eng
    eng.proc.cleanup()
    print(eng.proc.logs())


@pytest.fixture(name="market")
def market_fixture() -> str:
    m = next(_free, None)
    assert m is not None, "all markets taken: add to MARKETS"
    return m


def sym(market: str) -> str:
    return market.replace("-", "")


class Gateway:
    """MarketData + BinanceStreams in this loop, on a free port."""

    def __init__(self, engine: Engine, limits: StreamLimits | None = None) -> None:
        self.ex = config.load(engine.config)
        config.use_engine(self.ex, engine.proc.commands, engine.proc.market_data)
        self.ex.http_gateway.ws_port = 0
        self.market = MarketData(self.ex, None, name="binance-test")
        self.streams = BinanceStreams(self.ex, self.market, limits=limits)

    async def start(self) -> Gateway:
        await self.market.start(wait=REPLY_TIMEOUT)
        await eventually_async(lambda: self.market.health().ok, 20, 0.02, "market data healthy")
        await self.streams.start()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.streams.port}{path}"

    async def close(self) -> None:
        await self.streams.stop()
        await self.market.close()


@contextlib.asynccontextmanager
async def running(engine: Engine, market: str, **kw: Any) -> AsyncIterator[tuple[Gateway, Desk]]:
    gw = await Gateway(engine, **kw).start()
    desk = await Desk(engine.proc).start()
    base = market.split("-")[0]
    for account in (desk.maker, desk.taker):
        reply = await desk.client.request(Deposit(0, account, base, 10**15))
        assert isinstance(reply, LedgerReply), reply
    try:
        yield gw, desk
    finally:
        await desk.close()
        await gw.close()


class Ws:
    """A raw Binance-style client: ``events`` (payloads, unwrapped), ``replies``, ``wrapped``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict] = []
        self.wrapped: list[str] = []  # stream names of combined payloads
        self.replies: list[dict] = []
        self.closed = False
        self.close_code: int | None = None
        self.ids = iter(range(1, 10**6))

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, gw: Gateway, path: str = "/ws/0") -> Ws:
        return cls(await http.ws_connect(gw.url(path), heartbeat=None))

    async def read_one(self, timeout: float) -> None:
        msg = await self.ws.receive(timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            self.closed, self.close_code = True, self.ws.close_code
            return
        obj = json.loads(msg.data)
        if "stream" in obj and "data" in obj:
            self.wrapped.append(obj["stream"])
            self.events.append(obj["data"])
        elif "result" in obj or "error" in obj:
            self.replies.append(obj)
        else:
            self.events.append(obj)

    async def until(self, pred: Any, timeout: float = REPLY_TIMEOUT, what: str = "") -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (got := pred()):
            left = deadline - loop.time()
            if left <= 0 or self.closed:
                raise AssertionError(
                    f"not true in {timeout}s: {what} (closed={self.closed}, "
                    f"replies={self.replies[-3:]}, events={self.events[-3:]})"
                )
            with contextlib.suppress(TimeoutError):
                await self.read_one(left)
        return got

    async def send(self, body: Any) -> dict:
        before = len(self.replies)
        await self.ws.send_str(body if isinstance(body, str) else json.dumps(body))
        await self.until(lambda: len(self.replies) > before, what=f"a reply to {body!r:.80}")
        return self.replies[before]

    async def call(self, method: str, params: list | None = None) -> dict:
        body: dict[str, Any] = {"method": method, "id": next(self.ids)}
        if params is not None:
            body["params"] = params
        return await self.send(body)

    def of(self, e: str) -> list[dict]:
        return [x for x in self.events if x.get("e") == e]


async def rest_depth(http: aiohttp.ClientSession, gw: Gateway, market: str) -> dict:
    """What the REST gateway's GET /api/v3/depth answers (it serves this very function; the
    route itself is tested against the gateway process in tests/test_http_streams.py)."""
    return gw.streams.depth_snapshot(gw.ex.markets[market], 5000)


def apply_binance(snapshot: dict, events: list[dict]) -> tuple[dict, dict, int]:
    """Binance's recipe: drop u <= lastUpdateId, the first applied has U <= id+1 <= u, then
    each next U is the previous u + 1 (asserted)."""
    bids = {p: q for p, q in snapshot["bids"]}
    asks = {p: q for p, q in snapshot["asks"]}
    last = snapshot["lastUpdateId"]
    first = True
    for ev in events:
        if ev["u"] <= last:
            continue
        if first:
            assert ev["U"] <= last + 1 <= ev["u"], (last, ev)
            first = False
        else:
            assert ev["U"] == last + 1, f"gap: {last} then {ev['U']}..{ev['u']}"
        for side, levels in ((bids, ev["b"]), (asks, ev["a"])):
            for p, q in levels:
                if Decimal(q):
                    side[p] = q
                else:
                    side.pop(p, None)
        last = ev["u"]
    return bids, asks, last


async def engine_book(desk: Desk, market: str) -> tuple[dict, dict, int]:
    snap = await desk.book(market)
    return (
        {px(p): qty(q) for p, q, _ in snap.bids},
        {px(p): qty(q) for p, q, _ in snap.asks},
        snap.seq,
    )


async def trade_some(desk: Desk, market: str, base: int = 5_000_000) -> None:
    """New levels, a bigger level, a cancel, trades through levels."""
    for i in range(3):
        await desk.rest(market, BUY, base - 10_000 - 100 * i, 10 + i)
        await desk.rest(market, SELL, base + 10_000 + 100 * i, 20 + i)
    await desk.rest(market, BUY, base - 5_000, 7)
    extra = await desk.rest(market, SELL, base + 10_000, 5)
    await desk.rest(market, SELL, base + 5_000, 3)
    await desk.cancel(market, extra)
    await desk.take(market, BUY, base + 10_000, 10)
    await desk.take(market, SELL, base - 10_000, 27)


async def book_matches(
    ws: Ws, http: aiohttp.ClientSession, gw: Gateway, desk: Desk, market: str, snap: dict
) -> None:
    """Events after ``snap`` rebuild the engine's book exactly, with ids = its depth seq."""
    want_bids, want_asks, seq = await engine_book(desk, market)
    await ws.until(
        lambda: any(e["u"] >= seq for e in ws.of("depthUpdate")), what=f"depth up to {seq}"
    )
    bids, asks, last = apply_binance(snap, ws.of("depthUpdate"))
    assert (bids, asks) == (want_bids, want_asks)
    again = await rest_depth(http, gw, market)
    assert again["lastUpdateId"] == last
    assert ({p: q for p, q in again["bids"]}, {p: q for p, q in again["asks"]}) == (bids, asks)


# --------------------------------------------------------------------------------- depth


@pytest.mark.parametrize("stream", ["depth@100ms", "depth"])
@async_test
async def test_depth_diffs_follow_on_from_the_rest_snapshot_and_rebuild_the_engines_book(
    engine: Engine, market: str, stream: str
) -> None:
    async with running(engine, market) as (gw, desk), aiohttp.ClientSession() as http:
        await desk.rest(market, BUY, 4_900_000, 1)  # something in the book before we look
        _, _, seq = await engine_book(desk, market)
        # the feed delivers the engine's update to the gateway's book a moment later
        await eventually_async(lambda: gw.streams.books[market].uid >= seq, 20, 0.02, "caught up")
        ws = await Ws.connect(http, gw)
        name = f"{sym(market).lower()}@{stream}"
        assert await ws.call("SUBSCRIBE", [name]) == {"result": None, "id": 1}
        snap = await rest_depth(http, gw, market)
        assert snap["lastUpdateId"] == seq  # the engine's depth sequence, nothing added
        await trade_some(desk, market)
        await book_matches(ws, http, gw, desk, market, snap)
        ev = ws.of("depthUpdate")[-1]
        assert ev["s"] == sym(market) and isinstance(ev["E"], int)
        if stream == "depth":  # one event a second collects several engine updates
            assert any(e["u"] > e["U"] for e in ws.of("depthUpdate"))
        await ws.ws.close()


@async_test
async def test_a_missed_feed_message_is_sent_as_one_diff_that_keeps_the_ids_contiguous(
    engine: Engine, market: str
) -> None:
    """The gateway's own feed loses a depth message: its book reloads from an engine
    snapshot, and subscribers get the difference, ids following on, never a wrong book."""
    async with running(engine, market) as (gw, desk), aiohttp.ClientSession() as http:
        ws = await Ws.connect(http, gw)
        await ws.call("SUBSCRIBE", [f"{sym(market).lower()}@depth@100ms"])
        snap = await rest_depth(http, gw, market)
        await desk.rest(market, BUY, 4_990_000, 10)
        feed = gw.market.feed
        handle = feed.handle
        dropped: list[Depth] = []

        def lossy(msg: Any) -> None:
            if isinstance(msg, Depth) and msg.market == market and not dropped:
                dropped.append(msg)  # as if ZeroMQ had dropped it
                return
            handle(msg)

        feed.handle = lossy  # type: ignore[method-assign]
        await desk.rest(market, SELL, 5_010_000, 4)  # lost
        await desk.rest(market, SELL, 5_020_000, 5)  # shows the gap: a reload
        await eventually_async(lambda: gw.streams.metrics.book_reloads >= 1, 20, 0.02, "reload")
        await trade_some(desk, market)
        assert dropped
        await book_matches(ws, http, gw, desk, market, snap)
        await ws.ws.close()


@async_test
async def test_an_engine_restart_keeps_update_ids_increasing_and_the_book_exact(
    tmp_path: Path,
) -> None:
    """A new engine run starts its sequence again; the streams go on from their last id and
    send the reloaded book's difference, so a client's book stays exact."""
    eng = Engine(tmp_path)
    market = MARKETS[-1]
    await eng.proc.astart()
    try:
        async with running(eng, market) as (gw, desk), aiohttp.ClientSession() as http:
            ws = await Ws.connect(http, gw)
            await ws.call("SUBSCRIBE", [f"{sym(market).lower()}@depth@100ms"])
            snap = await rest_depth(http, gw, market)
            await trade_some(desk, market)
            await book_matches(ws, http, gw, desk, market, snap)
            before = ws.of("depthUpdate")[-1]["u"]
            epoch = gw.market.books[market].epoch
            await eng.proc.astop()
            await eng.proc.astart()  # same ports and data: the book comes back, new epoch
            await eventually_async(
                lambda: gw.market.books[market].epoch != epoch and gw.market.health().ok,
                30,
                0.05,
                "resynced to the new engine run",
            )
            await desk.rest(market, SELL, 5_030_000, 9)  # a change in the new run
            await desk.take(market, SELL, 4_989_900, 1)
            bids, asks, seq = await engine_book(desk, market)
            await ws.until(
                lambda: any(e["u"] > before + 1 for e in ws.of("depthUpdate")), what="new run"
            )
            await eventually_async(
                lambda: gw.streams.books[market].uid == seq + gw.streams.books[market].offset,
                20,
                0.02,
                "streams at the new run's seq",
            )
            uid = gw.streams.books[market].uid
            await ws.until(lambda: ws.of("depthUpdate")[-1]["u"] >= uid, what="the last event")
            got_bids, got_asks, last = apply_binance(snap, ws.of("depthUpdate"))
            assert (got_bids, got_asks) == (bids, asks)
            assert last == uid > before
            assert gw.streams.metrics.book_reloads >= 1
            await ws.ws.close()
    finally:
        eng.proc.cleanup()
        print(eng.proc.logs())


# -------------------------------------------------------------------------------- trades


@async_test
async def test_trade_and_aggtrade_events_carry_every_trade_in_binance_shape(
    engine: Engine, market: str
) -> None:
    s = sym(market)
    async with running(engine, market) as (gw, desk), aiohttp.ClientSession() as http:
        ws = await Ws.connect(http, gw, f"/ws/{s.lower()}@trade")  # raw stream path
        assert await ws.call("SUBSCRIBE", [f"{s.lower()}@aggTrade"]) == {"result": None, "id": 1}
        await desk.rest(market, SELL, 5_000_000, 10)
        await desk.rest(market, SELL, 5_000_100, 10)
        await desk.rest(market, BUY, 4_999_000, 10)
        fills = await desk.take(market, BUY, 5_000_100, 15)  # two trades, buyer takes
        fills += await desk.take(market, SELL, 4_999_000, 4)  # seller takes: buyer is maker
        await ws.until(lambda: len(ws.of("aggTrade")) >= 3, what="3 aggTrades")
        await ws.until(lambda: len(ws.of("trade")) >= 3, what="3 trades")
        want = [
            {
                "s": s,
                "t": f.trade_id,
                "p": px(f.last_px),
                "q": qty(f.last_qty),
                "T": f.ts // 1_000_000,
                "m": f.side == SELL,
                "M": True,
            }
            for f in fills
        ]
        got = [{k: e[k] for k in want[0]} for e in ws.of("trade")]
        assert got == want
        agg = ws.of("aggTrade")
        assert [(e["a"], e["f"], e["l"]) for e in agg] == [(w["t"],) * 3 for w in want]
        assert [(e["p"], e["q"], e["m"]) for e in agg] == [(w["p"], w["q"], w["m"]) for w in want]
        await ws.ws.close()


@async_test
async def test_ticker_kline_and_book_ticker_streams(engine: Engine, market: str) -> None:
    s = sym(market).lower()
    async with running(engine, market) as (gw, desk), aiohttp.ClientSession() as http:
        ws = await Ws.connect(http, gw, "/stream")  # combined: wrapped payloads
        names = [f"{s}@ticker", f"{s}@miniTicker", f"{s}@kline_1m", f"{s}@bookTicker"]
        assert await ws.call("SUBSCRIBE", names) == {"result": None, "id": 1}
        await ws.until(lambda: len(ws.events) >= 3, what="ticker, miniTicker, bookTicker")
        await desk.rest(market, SELL, 5_000_000, 10)
        await desk.rest(market, BUY, 4_990_000, 10)
        fills = await desk.take(market, BUY, 5_000_000, 4)
        fills += await desk.take(market, BUY, 5_000_000, 2)

        def last(e: str) -> dict:
            got = ws.of(e)
            return got[-1] if got else {}

        await ws.until(
            lambda: last("24hrTicker").get("n") == 2 and last("24hrTicker")["A"] == qty(4),
            what="a ticker with both trades and the book after them",
        )
        t = last("24hrTicker")
        assert (t["c"], t["o"], t["h"], t["l"], t["v"]) == (px(5_000_000),) * 4 + (qty(6),)
        assert (t["b"], t["B"], t["a"], t["A"]) == (px(4_990_000), qty(10), px(5_000_000), qty(4))
        assert (t["F"], t["L"]) == (fills[0].trade_id, fills[1].trade_id)
        minute = fills[-1].ts // 60_000_000_000
        same = [f for f in fills if f.ts // 60_000_000_000 == minute]  # a minute may turn
        want_v = qty(sum(f.last_qty for f in same))
        await ws.until(lambda: last("kline").get("k", {}).get("n") == len(same), what="the kline")
        k = last("kline")["k"]
        assert (k["i"], k["o"], k["c"], k["v"]) == ("1m", px(5_000_000), px(5_000_000), want_v)
        assert k["t"] == minute * 60_000 and k["T"] - k["t"] == 59_999
        await ws.until(lambda: last("24hrMiniTicker").get("v") == qty(6), what="miniTicker")
        books = [e for e in ws.events if "e" not in e]
        assert books[-1]["b"] == px(4_990_000) and books[-1]["A"] == qty(4)
        assert books[-1]["u"] == gw.streams.books[market].uid
        assert set(ws.wrapped) == set(names)
        await ws.ws.close()


# ------------------------------------------------------------------------------ requests


@async_test
async def test_subscribe_unsubscribe_list_and_properties(engine: Engine, market: str) -> None:
    s = sym(market).lower()
    async with running(engine, market) as (gw, desk), aiohttp.ClientSession() as http:
        ws = await Ws.connect(http, gw)
        a, b = f"{s}@trade", f"{s}@depth"
        assert await ws.call("SUBSCRIBE", [a, b, a]) == {"result": None, "id": 1}
        assert await ws.call("LIST_SUBSCRIPTIONS") == {"result": sorted([a, b]), "id": 2}
        assert await ws.call("UNSUBSCRIBE", [b]) == {"result": None, "id": 3}
        assert await ws.call("LIST_SUBSCRIPTIONS") == {"result": [a], "id": 4}
        assert await ws.call("GET_PROPERTY", ["combined"]) == {"result": False, "id": 5}
        assert await ws.call("SET_PROPERTY", ["combined", True]) == {"result": None, "id": 6}
        assert await ws.call("GET_PROPERTY", ["combined"]) == {"result": True, "id": 7}
        await desk.rest(market, SELL, 5_000_000, 10)
        await desk.take(market, BUY, 5_000_000, 10)
        await ws.until(lambda: ws.of("trade"), what="a trade")
        assert ws.wrapped == [a] and not ws.of("depthUpdate")
        await ws.ws.close()


BAD = [
    # (frame, code, words the msg must contain, id echoed)
    ('{"method":"SUBSCRIBE","params":["nope@trade"],"id":1}', 2, ["invalid stream", "nope"], 1),
    ('{"method":"SUBSCRIBE","params":["x00usd@depth7"],"id":2}', 2, ["invalid stream"], 2),
    ('{"method":"SUBSCRIBE","params":["x00usd@kline_7m"],"id":"a3"}', 2, ["kline_7m"], "a3"),
    ('{"method":"SUBSCRIBE","params":"x00usd@trade","id":4}', 2, ["params"], 4),
    ('{"method":"SUBSCRIBE","params":[1],"id":5}', 2, ["strings"], 5),
    ('{"method":"subscribe","params":[],"id":6}', 2, ["unknown variant", "SUBSCRIBE"], 6),
    ('{"params":[],"id":7}', 2, ["missing field `method`"], 7),
    ('{"method":"LIST_SUBSCRIPTIONS","id":8,"x":1}', 2, ["unknown field"], 8),
    ('{"method":"LIST_SUBSCRIPTIONS","id":{"a":1}}', 2, ["request ID"], None),
    ('{"method":"SET_PROPERTY","params":["color",true],"id":9}', 0, ["Unknown property"], 9),
    ('{"method":"SET_PROPERTY","params":["combined",1],"id":10}', 1, ["Boolean"], 10),
    ('{"method":"GET_PROPERTY","params":[5],"id":11}', 2, ["property name"], 11),
    ('{"method": "SUBSCRIBE", "params": [', 3, ["Invalid JSON"], None),
    ("[1,2]", 2, ["object"], None),
    ("[" * 30000, 3, ["Invalid JSON"], None),
]


@async_test
async def test_bad_requests_get_binance_errors_and_the_connection_goes_on(
    engine: Engine, market: str
) -> None:
    async with running(engine, market) as (gw, _desk), aiohttp.ClientSession() as http:
        ws = await Ws.connect(http, gw)
        for frame, code, words, rid in BAD:
            reply = await ws.send(frame)
            assert set(reply) == {"error", "id"}, reply
            assert reply["id"] == rid and reply["error"]["code"] == code, (frame, reply)
            assert all(w in reply["error"]["msg"] for w in words), (frame, reply)
        await ws.ws.send_bytes(b"{}")
        await ws.until(lambda: len(ws.replies) == len(BAD) + 1, what="binary frame refused")
        assert ws.replies[-1]["error"]["code"] == 3
        assert await ws.call("LIST_SUBSCRIPTIONS") == {"result": [], "id": 1}
        assert gw.streams.metrics.bad_requests == len(BAD) + 1
        async with http.get(gw.url("/ws/nope@trade")) as r:  # a bad stream in the URL
            assert r.status == 400 and (await r.json())["code"] == -1100
        await ws.ws.close()


@async_test
async def test_too_many_streams_and_connections_are_refused(engine: Engine, market: str) -> None:
    s = sym(market).lower()
    limits = StreamLimits(max_connections=2, max_streams=3, send_queue=2000)
    async with (
        running(engine, market, limits=limits) as (gw, _desk),
        aiohttp.ClientSession() as http,
    ):
        ws = await Ws.connect(http, gw)
        assert await ws.call("SUBSCRIBE", [f"{s}@trade", f"{s}@depth"]) == {"result": None, "id": 1}
        reply = await ws.call("SUBSCRIBE", [f"{s}@ticker", f"{s}@kline_1m"])
        assert reply["error"]["code"] == 2 and "too many streams" in reply["error"]["msg"]
        assert await ws.call("LIST_SUBSCRIPTIONS") == {
            "result": [f"{s}@depth", f"{s}@trade"],
            "id": 3,
        }
        other = await Ws.connect(http, gw)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await Ws.connect(http, gw)
        assert refused.value.status == 503
        m = gw.streams.metrics
        assert (m.refused, m.connections, m.subscriptions) == (1, 2, 2)
        await other.ws.close()
        await ws.ws.close()


def small_rcvbuf_socket(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@async_test
async def test_a_slow_client_is_dropped_and_counted_while_a_fast_one_keeps_receiving(
    engine: Engine, market: str
) -> None:
    s = sym(market).lower()
    limits = StreamLimits(send_queue=16)
    connector = aiohttp.TCPConnector(socket_factory=small_rcvbuf_socket)
    async with (
        running(engine, market, limits=limits) as (gw, desk),
        aiohttp.ClientSession() as http,
        aiohttp.ClientSession(connector=connector) as slow_http,
    ):
        # What a dropped client has queued (megabytes in kernel buffers) takes this one loop,
        # which also runs the gateway and the fast client, longer than the 10 s linger.
        gw.streams.fan.linger = 120.0
        fast = await Ws.connect(http, gw)
        await fast.call("SUBSCRIBE", [f"{s}@trade"])
        slow = await slow_http.ws_connect(gw.url("/ws/0"), heartbeat=None)
        await slow.send_str(
            json.dumps(
                {
                    "method": "SUBSCRIBE",
                    "params": [f"{s}@trade", f"{s}@aggTrade", f"{s}@depth@100ms"],
                    "id": 1,
                }
            )
        )
        await eventually_async(lambda: gw.streams.metrics.subscriptions == 4, 20, what="subscribed")
        levels = [(5_000_000 + i, 1) for i in range(20)]
        trades = 0
        while gw.streams.metrics.dropped_slow == 0 and trades < 100_000:
            await desk.rest_many(market, SELL, levels)
            trades += len(await desk.take(market, BUY, levels[-1][0], len(levels)))
        assert gw.streams.metrics.dropped_slow == 1
        slow_ws = Ws(slow)
        await asyncio.gather(
            slow_ws.until(lambda: slow_ws.closed, timeout=120, what="the slow one closed"),
            fast.until(
                lambda: len(fast.of("trade")) == trades, timeout=120, what="the fast one has all"
            ),
        )
        assert not fast.closed
        m = gw.streams.metrics
        assert (m.connections, m.subscriptions) == (1, 1)
        got = [e["t"] for e in slow_ws.of("trade")]
        assert got == [e["t"] for e in fast.of("trade")][: len(got)] and len(got) < trades
        assert slow_ws.close_code == 1008
        await fast.ws.close()


# ---------------------------------------------------------------------------------- ccxt


def exchange_info(ex: Any) -> dict:
    """The least exchangeInfo ccxt's load_markets needs (the gateway's REST serves the real
    one; this test must not depend on it)."""
    symbols = SymbolMap(ex)
    out = []
    for m, spec in ex.markets.items():
        out.append(
            {
                "symbol": symbols.binance[m],
                "status": "TRADING",
                "baseAsset": spec.base,
                "quoteAsset": spec.quote,
                "baseAssetPrecision": spec.base_decimals,
                "quotePrecision": spec.quote_decimals,
                "orderTypes": ["LIMIT", "MARKET", "LIMIT_MAKER"],
                "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False,
                "permissions": ["SPOT"],
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": spec.price_text(1),
                        "maxPrice": spec.price_text(spec.max_price),
                        "tickSize": spec.price_text(1),
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": spec.qty_text(spec.min_qty),
                        "maxQty": spec.qty_text(spec.max_qty),
                        "stepSize": spec.qty_text(1),
                    },
                ],
            }
        )
    return {"timezone": "UTC", "serverTime": 0, "rateLimits": [], "symbols": out}


@async_test
async def test_ccxt_pro_watch_order_book_and_watch_trades_stay_in_step(
    engine: Engine, market: str
) -> None:
    import ccxt.pro

    async with running(engine, market) as (gw, desk):
        rest = web.Application()
        info = exchange_info(gw.ex)

        async def info_handler(request: web.Request) -> web.Response:
            return web.json_response(info)

        async def depth_handler(request: web.Request) -> web.Response:
            spec = gw.streams.symbols.spec(request.query["symbol"])
            limit = int(request.query.get("limit", "100"))
            return web.json_response(gw.streams.depth_snapshot(spec, limit))

        rest.add_routes(
            [
                web.get("/api/v3/exchangeInfo", info_handler),
                web.get("/api/v3/depth", depth_handler),
            ]
        )
        runner = web.AppRunner(rest)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}/api/v3"
        client = ccxt.pro.binance(
            {
                "urls": {
                    "api": {
                        "public": base,
                        "private": base,
                        "ws": {"spot": f"ws://127.0.0.1:{gw.streams.port}/ws"},
                    }
                },
                "options": {
                    "fetchMarkets": {"types": ["spot"]},
                    "fetchCurrencies": False,
                    "fetchMargins": False,
                },
            }
        )
        symbol = f"{market.split('-')[0]}/USD"
        try:
            await client.load_markets()
            await desk.rest(market, BUY, 4_990_000, 10)
            await desk.rest(market, SELL, 5_010_000, 10)

            async def in_step() -> None:
                want_bids, want_asks, seq = await engine_book(desk, market)
                while True:
                    ob = await asyncio.wait_for(client.watch_order_book(symbol), REPLY_TIMEOUT)
                    bids = {
                        px(round(Decimal(str(p)) * 100)): qty(round(Decimal(str(q)) * 10_000))
                        for p, q in ob["bids"]
                    }
                    asks = {
                        px(round(Decimal(str(p)) * 100)): qty(round(Decimal(str(q)) * 10_000))
                        for p, q in ob["asks"]
                    }
                    if ob["nonce"] >= seq:
                        assert ob["nonce"] == seq and (bids, asks) == (want_bids, want_asks)
                        return

            await in_step()
            await trade_some(desk, market)
            await in_step()
            first = asyncio.ensure_future(client.watch_trades(symbol))  # subscribes
            stream = f"{sym(market).lower()}@trade"
            await eventually_async(lambda: gw.streams.wants(stream), 20, 0.02, "subscribed")
            fills = await desk.take(market, BUY, 5_010_000, 3)
            fills += await desk.take(market, SELL, 4_990_000, 2)
            want = [f.trade_id for f in fills]
            got = {int(t["id"]): t for t in await asyncio.wait_for(first, REPLY_TIMEOUT)}
            while not set(want) <= set(got):  # each call returns the trades new since the last
                for t in await asyncio.wait_for(client.watch_trades(symbol), REPLY_TIMEOUT):
                    got[int(t["id"])] = t
            for f in fills:
                t = got[f.trade_id]
                assert t["side"] == ("buy" if f.side == BUY else "sell")
                assert Decimal(str(t["price"])) == Decimal(px(f.last_px))
                assert Decimal(str(t["amount"])) == Decimal(qty(f.last_qty))
                assert t["timestamp"] == f.ts // 1_000_000
            assert want
            await trade_some(desk, market, base=5_100_000)
            await in_step()
        finally:
            await client.close()
            await runner.cleanup()

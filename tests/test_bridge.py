"""The websocket bridge (``python -m feed``) as a browser or a program sees it.

Real processes on loopback: the engine, the bridge, and real websocket/HTTP clients (aiohttp).
Orders go straight to the engine (``Desk``), so every expected value comes from the engine's own
answers (trade ids, fill prices, book snapshots), converted to decimal strings here with
``Decimal`` rather than with the code under test. Most tests share one engine and bridge and
take a market of their own; tests that stop processes or need other limits get a private stack.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from feed.frames import MaskedFramesOnly
from protocol.messages import BookSnapshot, ExecReport
from tests.fixtures_feed import (
    BUY,
    POOL,
    SELL,
    BridgeProc,
    Desk,
    FeedStack,
    WsClient,
    async_test,
    desk_on,
    feed_stack_fixture,  # noqa: F401
    http_json,
    market_fixture,  # noqa: F401
    metrics,
    own_feed_stack_fixture,  # noqa: F401
    stop_all,
    write_feed_config,
)
from tests.fixtures_recorder import RecorderProc, recorder_procs_fixture  # noqa: F401
from tests.procs import EngineProc, eventually_async

INTERVAL_SECS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}
NS = 1_000_000_000
KLINE_FIELDS = ("open_time", "open", "high", "low", "close", "volume", "quote_volume", "trades")


# ------------------------------------------------------- decimal text, independently made


def px(ticks: int) -> str:
    """Pool markets (BTC-USD clones): tick 0.01."""
    return str(Decimal(ticks).scaleb(-2))


def qty(lots: int) -> str:
    """Lot 0.0001."""
    return str(Decimal(lots).scaleb(-4))


def quote(units: int) -> str:
    """USD has 6 decimals."""
    return str(Decimal(units).scaleb(-6))


def book_text(snap: BookSnapshot) -> tuple[list[list[str]], list[list[str]]]:
    return (
        [[px(p), qty(q)] for p, q, _ in snap.bids],
        [[px(p), qty(q)] for p, q, _ in snap.asks],
    )


def trade_text(f: ExecReport) -> dict[str, Any]:
    """How a taker's fill report must appear as a websocket/HTTP trade."""
    side = "buy" if f.side == BUY else "sell"
    return {
        "id": f.trade_id,
        "price": px(f.last_px),
        "qty": qty(f.last_qty),
        "side": side,
        "ts": f.ts,
    }


def klines_reference(fills: list[ExecReport], interval: str) -> dict[int, dict[str, Any]]:
    """Candles recomputed from the fills: open_time (s) -> the fields a Kline carries."""
    length = INTERVAL_SECS[interval]
    out: dict[int, list[ExecReport]] = {}
    for f in fills:
        secs = f.ts // NS
        out.setdefault(secs - secs % length, []).append(f)
    return {
        start: {
            "open_time": start,
            "open": px(fs[0].last_px),
            "high": px(max(f.last_px for f in fs)),
            "low": px(min(f.last_px for f in fs)),
            "close": px(fs[-1].last_px),
            "volume": qty(sum(f.last_qty for f in fs)),
            "quote_volume": quote(sum(f.last_px * f.last_qty for f in fs)),  # tick x lot = 1e-6 USD
            "trades": len(fs),
        }
        for start, fs in out.items()
    }


def latest_klines(ws: WsClient, stream: str) -> dict[int, dict[str, Any]]:
    """The newest kline message per open_time, with the fields the reference has."""
    return {k["open_time"]: {f: k[f] for f in KLINE_FIELDS} for k in ws.by_stream[stream]}


def last_of(ws: WsClient, stream: str) -> dict[str, Any]:
    """The newest message of ``stream`` (an empty dict before the first)."""
    got = ws.by_stream[stream]
    return got[-1] if got else {}


async def api(http: aiohttp.ClientSession, bridge: BridgeProc, path: str) -> Any:
    status, body = await http_json(http, bridge.url(path))
    assert status == 200, (path, status, body)
    return body


async def bridge_caught_up(
    http: aiohttp.ClientSession, stack: FeedStack, desk: Desk, market: str
) -> BookSnapshot:
    """Wait until the bridge's book is at the engine's depth sequence; returns the snapshot."""
    snap = await desk.book(market)

    async def caught_up() -> bool:
        body = await api(http, stack.bridge, f"/api/depth?market={market}&limit=5000")
        return body["last_seq"] == snap.seq and body["epoch"] == snap.epoch

    await eventually_async(caught_up, 20, 0.02, f"bridge book of {market} at seq {snap.seq}")
    return snap


# ------------------------------------------------------------------------------ streams


@async_test
async def test_trades_stream_delivers_every_trade_once_in_order(
    feed_stack: FeedStack, market: str
) -> None:
    async with aiohttp.ClientSession() as http, desk_on(feed_stack.engine) as desk:
        ws = await WsClient.connect(http, feed_stack.bridge)
        assert await ws.subscribe(f"trades@{market}") == [f"trades@{market}"]
        await desk.rest(market, SELL, 5_000_000, 100)
        await desk.rest(market, SELL, 5_000_150, 100)
        await desk.rest(market, BUY, 4_999_000, 100)
        fills = await desk.take(market, BUY, 5_000_000, 30)
        fills += await desk.take(market, BUY, 5_000_150, 100)  # two fills in one command
        fills += await desk.take(market, SELL, 4_990_000, 25)
        assert len(fills) == 4
        await ws.until(lambda: len(ws.trades(market)) >= 4, what="4 trades")
        assert ws.trades(market) == [trade_text(f) for f in fills]
        # One message per engine batch: the command that filled twice is one message.
        assert [len(batch) for batch in ws.by_stream[f"trades@{market}"]] == [1, 2, 1]
        await ws.close()


@async_test
async def test_depth_stream_sends_a_snapshot_then_contiguous_diffs_that_rebuild_the_book(
    feed_stack: FeedStack, market: str
) -> None:
    stream = f"depth@{market}"
    async with aiohttp.ClientSession() as http, desk_on(feed_stack.engine) as desk:
        for i in range(3):
            await desk.rest(market, BUY, 4_990_000 - 100 * i, 10 + i)
            await desk.rest(market, SELL, 5_010_000 + 100 * i, 20 + i)
        snap = await bridge_caught_up(http, feed_stack, desk, market)
        ws = await WsClient.connect(http, feed_stack.bridge)
        await ws.subscribe(stream)
        await ws.until(lambda: ws.by_stream[stream], what="the first depth message")
        first = ws.by_stream[stream][0]
        assert first["snapshot"] is True
        assert (first["epoch"], first["last_seq"]) == (snap.epoch, snap.seq)
        assert (first["bids"], first["asks"]) == book_text(snap)
        # Changes of every kind: new levels, a bigger level, a cancel, trades through levels.
        await desk.rest(market, BUY, 4_995_000, 7)
        extra = await desk.rest(market, SELL, 5_010_000, 5)
        await desk.rest(market, SELL, 5_005_000, 3)
        await desk.cancel(market, extra)
        await desk.take(market, BUY, 5_010_000, 10)  # clears 5_005_000, eats into 5_010_000
        await desk.take(market, SELL, 4_990_000, 17 + 10)  # clears two bid levels
        final = await desk.book(market)
        await ws.until(
            lambda: last_of(ws, stream)["last_seq"] >= final.seq, what="diffs up to the end"
        )
        bids = {p: q for p, q in first["bids"]}
        asks = {p: q for p, q in first["asks"]}
        last = first["last_seq"]
        for diff in ws.by_stream[stream][1:]:
            assert not diff.get("snapshot", False)
            assert diff["epoch"] == snap.epoch
            assert diff["first_seq"] == last + 1, "diffs must be contiguous"
            last = diff["last_seq"]
            for side, levels in ((bids, diff["bids"]), (asks, diff["asks"])):
                for p, q in levels:
                    if Decimal(q):
                        side[p] = q
                    else:
                        side.pop(p, None)
        assert last == final.seq
        want_bids, want_asks = book_text(final)
        assert sorted(bids.items(), key=lambda x: -Decimal(x[0])) == [tuple(x) for x in want_bids]
        assert sorted(asks.items(), key=lambda x: Decimal(x[0])) == [tuple(x) for x in want_asks]
        await ws.close()


def ticker_reference(fills: list[ExecReport]) -> dict[str, Any]:
    prices = [f.last_px for f in fills]
    change = prices[-1] - prices[0]
    return {
        "open": px(prices[0]),
        "high": px(max(prices)),
        "low": px(min(prices)),
        "last": px(prices[-1]),
        "volume": qty(sum(f.last_qty for f in fills)),
        "quote_volume": quote(sum(f.last_px * f.last_qty for f in fills)),
        "change": px(change),
        "change_pct": f"{change * 100 / prices[0]:.2f}",
        "trades": len(fills),
    }


@async_test
async def test_ticker_stream_catches_up_with_the_latest_trade(
    feed_stack: FeedStack, market: str
) -> None:
    """Ticker pushes are throttled, but a burst of trades must still end in a push of the
    final state: a ticker that stops one trade short stays wrong until the next trade."""
    stream = f"ticker@{market}"
    async with aiohttp.ClientSession() as http, desk_on(feed_stack.engine) as desk:
        ws = await WsClient.connect(http, feed_stack.bridge)
        await ws.subscribe(stream)
        await ws.until(lambda: ws.by_stream[stream], what="the ticker on subscribe")
        t0 = ws.by_stream[stream][0]
        assert (t0["market"], t0["trades"], t0["last"], t0["open"]) == (market, 0, None, None)
        for price in (5_000_000, 5_002_000):
            await desk.rest(market, SELL, price, 10)
        for price in (4_999_000, 4_997_000):
            await desk.rest(market, BUY, price, 10)
        fills = []
        for side, price in (
            (BUY, 5_000_000),
            (SELL, 4_999_000),
            (BUY, 5_002_000),
            (SELL, 4_997_000),
        ):
            fills += await desk.take(market, side, price, 10)  # a burst: within milliseconds
        assert [f.last_px for f in fills] == [5_000_000, 4_999_000, 5_002_000, 4_997_000]
        want = ticker_reference(fills)
        await ws.until(
            lambda: last_of(ws, stream)["trades"] == 4,
            timeout=10,
            what="a ticker push showing all 4 trades",
        )
        got = ws.by_stream[stream][-1]
        assert {k: got[k] for k in want} == want
        await ws.close()


@pytest.mark.parametrize("other", ["1h", "5m"])
@async_test
async def test_kline_streams_match_candles_recomputed_from_the_trades(
    feed_stack: FeedStack, market: str, other: str
) -> None:
    streams = [f"kline_1m@{market}", f"kline_{other}@{market}"]
    async with aiohttp.ClientSession() as http, desk_on(feed_stack.engine) as desk:
        ws = await WsClient.connect(http, feed_stack.bridge)
        assert await ws.subscribe(*streams) == sorted(streams)
        asks, bids = [3_000_000, 3_000_500, 3_001_000], [2_990_000, 2_989_500]
        for price in asks:
            await desk.rest(market, SELL, price, 15)
        for price in bids:
            await desk.rest(market, BUY, price, 25)
        fills = []
        for side, price in (
            (BUY, asks[0]),
            (SELL, bids[0]),
            (BUY, asks[1]),
            (SELL, bids[1]),
            (BUY, asks[2]),
        ):
            fills += await desk.take(market, side, price, 15 if side == BUY else 25)
        assert [f.last_px for f in fills] == [asks[0], bids[0], asks[1], bids[1], asks[2]]
        for stream, iv in zip(streams, ["1m", other], strict=True):
            want = klines_reference(fills, iv)
            await ws.until(
                lambda s=stream, w=want: latest_klines(ws, s) == w, what=f"{stream} candles"
            )
            assert all(k["market"] == market and k["interval"] == iv for k in ws.by_stream[stream])
        # A new subscriber gets the current candle at once.
        late = await WsClient.connect(http, feed_stack.bridge)
        await late.subscribe(streams[0])
        await late.until(lambda: late.by_stream[streams[0]], what="the current candle")
        newest = max(klines_reference(fills, "1m"))
        assert latest_klines(late, streams[0]) == {newest: klines_reference(fills, "1m")[newest]}
        await late.close()
        await ws.close()


# ------------------------------------------------------------------ requests and errors


@async_test
async def test_subscribe_unsubscribe_and_list_are_acknowledged_and_take_effect(
    feed_stack: FeedStack, market: str
) -> None:
    sentinel = feed_stack.new_market()
    async with aiohttp.ClientSession() as http, desk_on(feed_stack.engine) as desk:
        ws = await WsClient.connect(http, feed_stack.bridge)
        streams = [f"trades@{market}", f"ticker@{market}", f"trades@{sentinel}"]
        assert await ws.request("subscribe", streams) == {"id": 1, "result": sorted(streams)}
        again = await ws.request("subscribe", [f"trades@{market}"])  # already there: no-op
        assert again == {"id": 2, "result": sorted(streams)}
        assert await ws.request("list") == {"id": 3, "result": sorted(streams)}
        left = sorted(streams[1:])
        assert await ws.request("unsubscribe", [f"trades@{market}"]) == {"id": 4, "result": left}
        assert await ws.request("unsubscribe", [f"depth@{market}"]) == {"id": 5, "result": left}
        # A trade in the unsubscribed market, then one in the sentinel market: once the
        # sentinel's arrives, the first would have arrived before it (one ordered stream).
        await desk.rest(market, SELL, 5_000_000, 10)
        await desk.take(market, BUY, 5_000_000, 10)
        await desk.rest(sentinel, SELL, 5_000_000, 10)
        (fill,) = await desk.take(sentinel, BUY, 5_000_000, 10)
        await ws.until(lambda: ws.trades(sentinel), what="the sentinel trade")
        assert ws.trades(sentinel) == [trade_text(fill)]
        assert ws.trades(market) == []
        await ws.close()


BAD_FRAMES = [
    # (frame, code, words the reason must contain, id echoed)
    ('{"op":"subscribe","streams":["foo@F00-USD"],"id":7}', 1007, ["foo@F00-USD"], 7),
    ('{"op":"subscribe","streams":["trades@NOPE-USD"],"id":8}', 1007, ["NOPE-USD"], 8),
    ('{"op":"subscribe","streams":["kline_7m@F00-USD"],"id":"a"}', 1007, ["kline_7m"], "a"),
    ('{"op":"subscribe","streams":["trades@"],"id":9}', 1007, ["trades@"], 9),
    ('{"op":"subscribe","streams":["trades@F00-USD","x@F00-USD"],"id":10}', 1007, ["x@"], 10),
    ('{"op": "subscribe", "streams": [', 1001, ["JSON"], None),
    ("hello", 1001, ["JSON"], None),
    ('{"op":"subscribe","streams":"trades@F00-USD","id":11}', 1007, ["array", "streams"], 11),
    ('{"op":"subscribe","streams":[1,2],"id":12}', 1007, ["str", "streams"], 12),
    ('{"op":5,"id":13}', 1007, ["op"], 13),
    ('{"op":"subscribe_all","streams":[],"id":14}', 1007, ["op"], 14),
    ('{"streams":["trades@F00-USD"],"id":15}', 1007, ["op"], 15),
    ('{"op":"list","id":{"a":1}}', 1007, ["id"], None),  # not an id: not echoed (salvage)
    ('{"op":"list","id":16,"extra":true}', 1007, ["extra"], 16),
    ("[1, 2, 3]", 1007, ["object"], None),
    ("null", 1007, ["object"], None),
]


@pytest.mark.parametrize(("frame", "code", "words", "rid"), BAD_FRAMES)
@async_test
async def test_bad_request_gets_a_clear_error_and_the_connection_stays_usable(
    feed_stack: FeedStack, frame: str, code: int, words: list[str], rid: Any
) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await WsClient.connect(http, feed_stack.bridge)
        reply = await ws.send_raw(frame)
        assert set(reply) == {"id", "error"}, reply
        assert reply["id"] == rid
        assert reply["error"]["code"] == code
        reason = reply["error"]["reason"]
        assert all(w in reason for w in words), reason
        assert await ws.request("list") == {"id": 1, "result": []}  # nothing half-subscribed
        assert await ws.subscribe(f"ticker@{POOL[0]}") == [f"ticker@{POOL[0]}"]
        await ws.close()


@async_test
async def test_binary_frames_and_a_burst_of_bad_requests_leave_the_session_working(
    feed_stack: FeedStack, market: str
) -> None:
    async with aiohttp.ClientSession() as http, desk_on(feed_stack.engine) as desk:
        before = (await metrics(http, feed_stack.bridge))["bridge"]["bad_requests"]
        ws = await WsClient.connect(http, feed_stack.bridge)
        await ws.ws.send_bytes(b'{"op":"list","id":1}')
        await ws.until(lambda: ws.replies, what="a reply to a binary frame")
        assert ws.replies[0]["error"]["code"] == 1001
        assert "text" in ws.replies[0]["error"]["reason"]
        for frame, _code, _words, _rid in BAD_FRAMES:
            await ws.ws.send_str(frame)
        await ws.until(lambda: len(ws.replies) == 1 + len(BAD_FRAMES), what="every error")
        assert all("error" in r for r in ws.replies)
        assert await ws.subscribe(f"trades@{market}") == [f"trades@{market}"]
        await desk.rest(market, SELL, 5_000_000, 10)
        (fill,) = await desk.take(market, BUY, 5_000_000, 10)
        await ws.until(lambda: ws.trades(market), what="a trade after the errors")
        assert ws.trades(market) == [trade_text(fill)]
        after = (await metrics(http, feed_stack.bridge))["bridge"]["bad_requests"]
        assert after - before >= 1 + len(BAD_FRAMES)
        await ws.close()


def all_streams(markets: list[str]) -> list[str]:
    kinds = ["trades", "depth", "ticker", *(f"kline_{iv}" for iv in INTERVAL_SECS)]
    return [f"{k}@{m}" for m in markets for k in kinds]


@async_test
async def test_too_many_subscriptions_are_refused_whole_and_the_connection_stays_usable(
    feed_stack: FeedStack,
) -> None:
    streams = all_streams(POOL[:6])  # 54 valid streams; the shipped limit is 50
    async with aiohttp.ClientSession() as http:
        ws = await WsClient.connect(http, feed_stack.bridge)
        reply = await ws.request("subscribe", streams[:51])
        assert reply["error"]["code"] == 1004, reply
        assert "50" in reply["error"]["reason"]
        assert (await ws.request("list"))["result"] == []
        assert len(await ws.subscribe(*streams[:45])) == 45
        reply = await ws.request("subscribe", streams[40:51])  # 5 known + 6 new = 51
        assert reply["error"]["code"] == 1004, reply
        assert len((await ws.request("list"))["result"]) == 45
        assert len(await ws.subscribe(*streams[45:50])) == 50
        assert (await ws.request("unsubscribe", [streams[0]]))["result"] == sorted(streams[1:50])
        assert len(await ws.subscribe(streams[53])) == 50
        await ws.close()


# --------------------------------------------------------------------------------- HTTP


@async_test
async def test_http_market_data_endpoints_agree_with_the_engine(
    feed_stack: FeedStack, market: str
) -> None:
    bridge = feed_stack.bridge
    async with aiohttp.ClientSession() as http, desk_on(feed_stack.engine) as desk:
        markets = await api(http, bridge, "/api/markets")
        assert [m["symbol"] for m in markets] == ["BTC-USD", "ETH-USD", "ETH-BTC", *POOL]
        mine = next(m for m in markets if m["symbol"] == market)
        assert {k: mine[k] for k in ("base", "quote", "tick", "lot", "min_qty")} == {
            "base": "BTC",
            "quote": "USD",
            "tick": "0.01",
            "lot": "0.0001",
            "min_qty": "0.0001",
        }
        for i in range(4):
            await desk.rest(market, SELL, 6_000_000 + 100 * i, 30)
            await desk.rest(market, BUY, 5_990_000 - 100 * i, 30)
        fills = await desk.take(market, BUY, 6_000_100, 45)
        fills += await desk.take(market, SELL, 5_990_000, 10)
        snap = await bridge_caught_up(http, feed_stack, desk, market)

        depth = await api(http, bridge, f"/api/depth?market={market}")
        assert (depth["epoch"], depth["last_seq"], depth["snapshot"]) == (
            snap.epoch,
            snap.seq,
            True,
        )
        assert (depth["bids"], depth["asks"]) == book_text(snap)
        top = await api(http, bridge, f"/api/depth?market={market}&limit=1")
        assert (top["bids"], top["asks"]) == tuple(side[:1] for side in book_text(snap))

        trades = await api(http, bridge, f"/api/trades?market={market}")
        assert trades == [trade_text(f) for f in fills]
        assert await api(http, bridge, f"/api/trades?market={market}&limit=2") == trades[-2:]

        ticker = await api(http, bridge, f"/api/ticker?market={market}")
        want = ticker_reference(fills)
        assert {k: ticker[k] for k in want} == want
        every = await api(http, bridge, "/api/ticker")
        assert [t["market"] for t in every] == [m["symbol"] for m in markets]
        assert {k: every[3 + POOL.index(market)][k] for k in want} == want

        for iv in ("1m", "1d"):
            want_k = klines_reference(fills, iv)
            rows = await api(http, bridge, f"/api/klines?market={market}&interval={iv}")
            got = {r["open_time"]: {k: r[k] for k in next(iter(want_k.values()))} for r in rows}
            assert got == want_k, iv
        start = min(want_k)  # the 1d candle
        q = f"/api/klines?market={market}&interval=1d"
        assert len(await api(http, bridge, f"{q}&start={start}&end={start + 1}")) == 1
        assert await api(http, bridge, f"{q}&start={start + 1}") == []
        assert await api(http, bridge, f"{q}&end={start}") == []


HTTP_BAD = [
    ("/api/depth", ["market"]),
    ("/api/depth?market=NOPE-USD", ["NOPE-USD"]),
    ("/api/depth?market=F00-USD&limit=abc", ["limit", "integer", "abc"]),
    ("/api/depth?market=F00-USD&limit=0", ["limit"]),
    ("/api/depth?market=F00-USD&limit=100000000", ["limit", "100000000"]),
    ("/api/trades?market=nope", ["nope"]),
    ("/api/trades?market=F00-USD&limit=1000001", ["limit"]),
    ("/api/trades?market=F00-USD&limit=-1", ["limit"]),
    ("/api/ticker?market=NOPE-USD", ["NOPE-USD"]),
    ("/api/klines?market=NOPE-USD", ["NOPE-USD"]),
    ("/api/klines?market=F00-USD&interval=7m", ["interval", "7m"]),
    ("/api/klines?market=F00-USD&interval=", ["interval"]),
    ("/api/klines?market=F00-USD&start=200&end=100", ["end", "start"]),
    ("/api/klines?market=F00-USD&start=100&end=100", ["end", "start"]),
    ("/api/klines?market=F00-USD&start=-5", ["start"]),
    ("/api/klines?market=F00-USD&start=1e3", ["start", "integer"]),
    ("/api/klines?market=F00-USD&limit=999999999", ["limit"]),
]


@pytest.mark.parametrize(("path", "words"), HTTP_BAD)
@async_test
async def test_http_bad_parameters_get_400_with_a_reason(
    feed_stack: FeedStack, path: str, words: list[str]
) -> None:
    async with aiohttp.ClientSession() as http:
        status, body = await http_json(http, feed_stack.bridge.url(path))
        assert status == 400, (status, body)
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body
        assert all(w in body["error"] for w in words), body


@async_test
async def test_health_and_metrics_describe_a_working_bridge(feed_stack: FeedStack) -> None:
    async with aiohttp.ClientSession() as http:
        status, body = await http_json(http, feed_stack.bridge.url("/health"))
        assert (status, body) == (
            200,
            {"ok": True, "engine": True, "synced": True, "seeded": True},
        )
        m = await metrics(http, feed_stack.bridge)
        assert {"connections", "dropped_slow", "messages_out", "bad_requests"} <= set(m["bridge"])
        assert {"depth_gaps", "resyncs", "trade_gaps"} <= set(m["feed"])
        assert m["feed"]["depth_gaps"] == 0


# ------------------------------------------------------------ private stacks: limits, faults


def small_rcvbuf_socket(addr_info: Any) -> socket.socket:
    """A client socket with a tiny receive buffer, so a client that never reads backs up
    into the server quickly (set before connect, as the kernel requires)."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def pump(ws: WsClient) -> None:
    while not ws.closed:
        await ws.read_one(120)


@async_test
async def test_slow_client_is_dropped_and_counted_while_a_fast_client_keeps_receiving(
    own_feed_stack: Any,
) -> None:
    stack = await own_feed_stack(pool=1, bridge={"send_queue": 256})
    market = POOL[0]
    every = all_streams([market])
    streams = [f"trades@{market}", f"depth@{market}", f"kline_1m@{market}"]
    connector = aiohttp.TCPConnector(socket_factory=small_rcvbuf_socket)
    async with (
        aiohttp.ClientSession() as http,
        aiohttp.ClientSession(connector=connector) as slow_http,
        desk_on(stack.engine) as desk,
    ):
        fast = await WsClient.connect(http, stack.bridge)
        await fast.subscribe(*streams)
        slow = await slow_http.ws_connect(stack.bridge.url("/ws"), heartbeat=None)
        await slow.send_str(json.dumps({"op": "subscribe", "streams": every, "id": 1}))

        async def both_subscribed() -> bool:
            m = (await metrics(http, stack.bridge))["bridge"]
            return m["subscriptions"] == len(streams) + len(every)

        await eventually_async(both_subscribed, 20, what="both clients subscribed")
        reader = asyncio.ensure_future(pump(fast))
        fills: list[ExecReport] = []
        levels = [(5_000_000 + i, 1) for i in range(20)]

        async def cycle() -> None:  # 20 one-lot asks, then one buy through all of them
            await desk.rest_many(market, SELL, levels)
            got = await desk.take(market, BUY, levels[-1][0], len(levels))
            assert len(got) == len(levels)
            fills.extend(got)

        dropped = False
        while not dropped and len(fills) < 100_000:  # the slow one never reads a byte
            for _ in range(20):
                await cycle()
            dropped = (await metrics(http, stack.bridge))["bridge"]["dropped_slow"] >= 1
        assert dropped, f"a client that never reads was not dropped after {len(fills)} trades"
        for _ in range(5):  # and trading goes on
            await cycle()
        ids = [f.trade_id for f in fills]
        await eventually_async(
            lambda: [t["id"] for t in fast.trades(market)] == ids, 30, what="fast client complete"
        )
        assert not fast.closed
        m = (await metrics(http, stack.bridge))["bridge"]
        assert (m["dropped_slow"], m["connections"], m["subscriptions"]) == (1, 1, len(streams))
        # The slow client, reading at last, finds a prefix of the trades and then the close.
        slow_ws = WsClient(slow)
        await slow_ws.until(lambda: slow_ws.closed, timeout=30, what="the slow client closed")
        got = [t["id"] for t in slow_ws.trades(market)]
        assert got == ids[: len(got)] and len(got) < len(ids)
        assert slow_ws.close_code == 1008
        reader.cancel()
        await fast.close()


@async_test
async def test_connections_beyond_the_limit_are_refused_and_counted(own_feed_stack: Any) -> None:
    stack = await own_feed_stack(pool=1, bridge={"max_connections": 2})
    async with aiohttp.ClientSession() as http:
        a = await WsClient.connect(http, stack.bridge)
        b = await WsClient.connect(http, stack.bridge)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await WsClient.connect(http, stack.bridge)
        assert refused.value.status == 503
        m = (await metrics(http, stack.bridge))["bridge"]
        assert (m["refused"], m["connections"]) == (1, 2)
        assert (await a.request("list"))["result"] == []  # the others are unaffected
        await b.close()

        async def one_left() -> bool:
            return (await metrics(http, stack.bridge))["bridge"]["connections"] == 1

        await eventually_async(one_left, 20, what="the closed connection counted out")
        c = await WsClient.connect(http, stack.bridge)
        assert (await c.request("list"))["result"] == []
        await c.close()
        await a.close()


@async_test
async def test_engine_restart_is_reported_by_health_and_depth_restarts_from_a_snapshot(
    own_feed_stack: Any,
) -> None:
    stack = await own_feed_stack(pool=1)
    market, stream = POOL[0], f"depth@{POOL[0]}"
    engine = stack.engine
    async with aiohttp.ClientSession() as http:
        ws = await WsClient.connect(http, stack.bridge)
        await ws.subscribe(stream)
        async with desk_on(engine) as desk:
            await desk.rest(market, BUY, 4_000_000, 12)
            before = await desk.book(market)
        await ws.until(lambda: last_of(ws, stream).get("last_seq") == before.seq)
        await engine.astop()

        async def health(want_status: int) -> dict | None:
            status, body = await http_json(http, stack.bridge.url("/health"))
            return body if status == want_status else None

        down = await eventually_async(lambda: health(503), 20, what="health 503")
        assert down["ok"] is False and down["engine"] is False
        await engine.astart()
        assert engine.epoch != before.epoch
        up = await eventually_async(lambda: health(200), 20, what="health 200 again")
        assert up == {"ok": True, "engine": True, "synced": True, "seeded": True}
        await ws.until(
            lambda: last_of(ws, stream).get("epoch") == engine.epoch, what="a new-epoch snapshot"
        )
        snap = ws.by_stream[stream][-1]
        assert snap["snapshot"] is True
        assert (snap["bids"], snap["asks"]) == ([[px(4_000_000), qty(12)]], [])  # recovered
        async with desk_on(engine) as desk:
            await desk.rest(market, SELL, 4_100_000, 3)
            after = await desk.book(market)
        await ws.until(lambda: last_of(ws, stream).get("last_seq") == after.seq)
        diff = ws.by_stream[stream][-1]
        assert (diff["epoch"], diff["first_seq"]) == (engine.epoch, snap["last_seq"] + 1)
        assert diff["asks"] == [[px(4_100_000), qty(3)]]
        await ws.close()


@async_test
async def test_two_bridges_can_serve_from_one_engine(own_feed_stack: Any) -> None:
    """Websocket capacity scales by running more bridge processes on the same engine; each
    must get its own book snapshots (and so become healthy)."""
    stack = await own_feed_stack(pool=1)
    second = BridgeProc(
        stack.workdir / "bridge2", config=stack.config, engine=stack.engine, name="bridge2"
    )
    try:
        await second.astart(healthy=False)
        async with aiohttp.ClientSession() as http:

            async def both_healthy() -> bool:
                codes = [
                    (await http_json(http, b.url("/health")))[0] for b in (stack.bridge, second)
                ]
                assert codes == [200, 200], f"health: {codes}"
                return True

            await eventually_async(both_healthy, 10, 0.1, "both bridges healthy")
    finally:
        second.cleanup()
        print(second.logs())


# ------------------------------------------------- hostile frames (raw sockets, RFC 6455)

DEEP = "[" * 20_000 + "]" * 20_000  # 40 KB: deeper than Python's recursion limit


@pytest.mark.parametrize(
    "frame",
    [
        DEEP,
        '{"op":"list","id":7,"x":' + DEEP + "}",
        '{"op":"subscribe","streams":' + DEEP + ',"id":8}',
        '{"op":"list","id":' + DEEP + "}",
        '{"op":' + DEEP + "}",
    ],
    ids=["array", "unknown-field", "streams", "id", "op"],
)
@async_test
async def test_deeply_nested_json_gets_an_error_reply_and_the_session_stays(
    feed_stack: FeedStack, frame: str
) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await WsClient.connect(http, feed_stack.bridge)
        reply = await ws.send_raw(frame)
        assert reply["id"] is None, reply
        assert reply["error"]["code"] in (1001, 1007), reply
        assert await ws.request("list") == {"id": 1, "result": []}
        await ws.close()
    assert "RecursionError" not in feed_stack.bridge.log()


async def raw_ws(bridge: BridgeProc) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A websocket opened by hand (RFC 6455 4.1): nothing between the test and the bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def client_frame(payload: bytes, opcode: int = 0x1, masked: bool = True) -> bytes:
    """One final frame as a client builds it (RFC 6455 5.2), masked unless told not to."""
    n, first, bit = len(payload), 0x80 | opcode, 0x80 if masked else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, payload) of the next server frame; server frames are never masked."""
    first, second = await asyncio.wait_for(reader.readexactly(2), 20)
    assert not second & 0x80, "a server frame must not be masked"
    n = second & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(n)


async def expect_close(reader: asyncio.StreamReader, code: int, words: str) -> None:
    opcode, body = await read_frame(reader)
    while opcode != 0x8:  # replies sent before the close may come first
        opcode, body = await read_frame(reader)
    assert struct.unpack("!H", body[:2])[0] == code, body
    assert words in body[2:].decode(), body
    assert await asyncio.wait_for(reader.read(), 20) == b"", "the connection must be closed"


@async_test
async def test_masked_frames_of_every_length_form_are_served_even_cut_into_pieces(
    feed_stack: FeedStack,
) -> None:
    reader, writer = await raw_ws(feed_stack.bridge)
    for rid in (1, "x" * 300, "y" * 60_000):  # 7-bit, 16-bit and (60 KB) 16-bit lengths
        body = json.dumps({"op": "list", "id": rid}).encode()
        frame = client_frame(body)
        for i in range(0, len(frame), 7):  # cut through the header, the mask and the payload
            writer.write(frame[i : i + 7])
            await writer.drain()
        opcode, reply = await read_frame(reader)
        assert (opcode, json.loads(reply)) == (0x1, {"id": rid, "result": []})
    writer.write(client_frame(b"", opcode=0x9))  # a masked ping gets a pong
    assert await read_frame(reader) == (0xA, b"")
    writer.close()


@pytest.mark.parametrize("after", [b"", b'{"op":"list","id":1}'], ids=["first", "after-one"])
@async_test
async def test_an_unmasked_client_frame_gets_close_1002_and_the_connection_ends(
    feed_stack: FeedStack, after: bytes
) -> None:
    """RFC 6455 5.1: a server MUST close the connection upon an unmasked client frame."""
    reader, writer = await raw_ws(feed_stack.bridge)
    if after:
        writer.write(client_frame(after))
        assert await read_frame(reader) == (0x1, b'{"id":1,"result":[]}')
    writer.write(client_frame(b'{"op":"list","id":2}', masked=False))
    await expect_close(reader, 1002, "masked")
    writer.close()
    async with aiohttp.ClientSession() as http:  # the bridge serves on
        ws = await WsClient.connect(http, feed_stack.bridge)
        assert await ws.request("list") == {"id": 1, "result": []}
        await ws.close()


@async_test
async def test_a_message_over_64_kib_gets_close_1009(feed_stack: FeedStack) -> None:
    """The size is judged from the frame header (aiohttp), so only the header is sent: bytes
    left unread by a closing server would make its kernel reset the connection."""
    reader, writer = await raw_ws(feed_stack.bridge)
    writer.write(client_frame(b"z" * 70_000)[:14])  # 2 + 8 length bytes + the mask key
    await expect_close(reader, 1009, "")
    writer.close()


def test_the_mask_check_follows_frame_headers_however_the_bytes_are_cut() -> None:
    frames = [client_frame(b"a" * n) for n in (0, 1, 125, 126, 300, 65_535, 65_536)]
    stream = b"".join(frames)
    for cut in (1, 2, 3, 5, 13, 4096):
        guard = MaskedFramesOnly(None, None)
        assert all(guard.all_masked(stream[i : i + cut]) for i in range(0, len(stream), cut))
        assert (guard.head, guard.skip) == (b"", 0)  # exactly at a frame boundary
        bad = client_frame(b"{}", masked=False)
        assert not guard.all_masked(client_frame(b"ok") + bad)


# --------------------------------------------- history across restarts (engine + recorder)


async def make_trades(desk: Desk, market: str, n: int, base: int) -> list[ExecReport]:
    """``n`` trades at varying prices and sizes, alternately bought and sold by the taker."""
    fills: list[ExecReport] = []
    for i in range(n):
        price, size = base + (i * 37) % 500, 3 + i % 5
        side = SELL if i % 2 else BUY
        await desk.rest(market, BUY if side == SELL else SELL, price, size)
        fills += await desk.take(market, side, price, size)
    assert len(fills) == n
    return fills


def clickhouse_ticker(rec: RecorderProc, market: str) -> dict[str, Any]:
    """The 24h ticker as ClickHouse computes it, in the bridge's decimal text."""
    (row,) = rec.sql(
        "SELECT count(), sum(qty_lots), sum(quote_units), argMin(price_ticks, trade_id), "
        "max(price_ticks), min(price_ticks), argMax(price_ticks, trade_id) FROM trades "
        f"WHERE market = '{market}' AND ts > now64(9) - INTERVAL 1 DAY"
    )
    n, volume, quote_units, open_, high, low, last = (int(v) for v in row)
    return {
        "trades": n,
        "volume": qty(volume),
        "quote_volume": quote(quote_units),
        "open": px(open_),
        "high": px(high),
        "low": px(low),
        "last": px(last),
    }


def clickhouse_trades(rec: RecorderProc, market: str) -> list[dict[str, Any]]:
    rows = rec.sql(
        "SELECT trade_id, price_ticks, qty_lots, CAST(taker_side, 'Int8'), "
        f"toUnixTimestamp64Nano(ts) FROM trades WHERE market = '{market}' "
        "ORDER BY trade_id"
    )
    side = {BUY: "buy", SELL: "sell"}
    return [
        {"id": int(i), "price": px(int(p)), "qty": qty(int(q)), "side": side[int(s)], "ts": int(t)}
        for i, p, q, s, t in rows
    ]


async def ticker_of(http: aiohttp.ClientSession, bridge: BridgeProc, market: str) -> dict:
    return await api(http, bridge, f"/api/ticker?market={market}")


@async_test
async def test_a_restarted_bridge_resumes_ticker_trades_and_candles_from_clickhouse(
    tmp_path: Any, recorder_procs: Any
) -> None:
    market = "BTC-USD"
    engine = EngineProc(tmp_path / "engine", config=write_feed_config(tmp_path / "e.toml", 0))
    bridge: BridgeProc | None = None
    try:
        await engine.astart()
        rec = recorder_procs(engine)
        await asyncio.to_thread(rec.start)
        bridge = BridgeProc(
            tmp_path / "bridge", config=rec.config, engine=engine, recorder=rec.url("")
        )
        await bridge.astart()
        async with desk_on(engine) as desk:
            fills = await make_trades(desk, market, 40, 5_000_000)
        await eventually_async(lambda: rec.count() == 40, 60, 0.1, "ClickHouse has every trade")
        # The engine's recent-trade memory is not in its snapshot: after this restart only
        # ClickHouse knows the 40 trades, so a bridge that seeds from the engine alone fails.
        await engine.astop()
        await engine.astart()
        bridge.stop()
        await bridge.astart()
        async with aiohttp.ClientSession() as http:
            truth = clickhouse_ticker(rec, market)
            assert truth["trades"] == 40
            ticker = await ticker_of(http, bridge, market)
            assert {k: ticker[k] for k in truth} == truth
            assert await api(http, bridge, f"/api/trades?market={market}&limit=1000") == (
                clickhouse_trades(rec, market)
            )
            assert [t["id"] for t in clickhouse_trades(rec, market)] == [f.trade_id for f in fills]
            ws = await WsClient.connect(http, bridge)
            streams = [f"kline_1m@{market}", f"kline_1d@{market}"]
            await ws.subscribe(*streams, f"trades@{market}")
            await ws.until(lambda: all(ws.by_stream[s] for s in streams), what="candles")
            for stream, iv in zip(streams, ("1m", "1d"), strict=True):
                status, rows = rec.get(f"/klines?market={market}&interval={iv}")
                assert status == 200, rows
                want = rows[-1]
                got = ws.by_stream[stream][0]
                assert (got["open_time"], got["trades"]) == (want["open_time"], want["trades"])
                assert (got["open"], got["close"], got["volume"]) == (
                    px(want["open"]),
                    px(want["close"]),
                    qty(want["volume"]),
                )
            # Live trades after the restart continue the seeded figures, each counted once.
            async with desk_on(engine) as desk:
                await make_trades(desk, market, 7, 5_100_000)
            await eventually_async(lambda: rec.count() == 47, 60, 0.1, "ClickHouse has 47")

            async def ticker_at_47() -> bool:
                return (await ticker_of(http, bridge, market))["trades"] == 47

            await eventually_async(ticker_at_47, 30, 0.05, "the ticker at 47 trades")
            truth = clickhouse_ticker(rec, market)
            ticker = await ticker_of(http, bridge, market)
            assert {k: ticker[k] for k in truth} == truth
            await ws.until(lambda: len(ws.trades(market)) == 7, what="7 live trades")
            assert [t["id"] for t in ws.trades(market)] == list(range(41, 48))
            await ws.close()
        assert f"{market}: seeded from the recorder and the engine: 40 trades" in bridge.log()
        assert "partial" not in bridge.log()
    finally:
        stop_all(bridge, engine)


@async_test
async def test_without_a_recorder_the_bridge_seeds_from_the_engine_and_says_when_partial(
    own_feed_stack: Any,
) -> None:
    stack = await own_feed_stack(pool=1)
    market = POOL[0]
    async with aiohttp.ClientSession() as http:
        async with desk_on(stack.engine) as desk:
            fills = await make_trades(desk, market, 12, 4_000_000)
        stack.bridge.stop()
        await stack.bridge.astart()
        ticker = await ticker_of(http, stack.bridge, market)
        assert {k: ticker[k] for k in ticker_reference(fills)} == ticker_reference(fills)
        trades = await api(http, stack.bridge, f"/api/trades?market={market}")
        assert trades == [trade_text(f) for f in fills]
        assert f"{market}: seeded from the engine only: 12 trades in the last 24h (complete)" in (
            stack.bridge.log()
        )
        # An engine restart empties its memory; with no recorder the bridge cannot know the
        # day's trades, and says so instead of showing a quiet zero as the truth.
        await stack.engine.astop()
        await stack.engine.astart()
        stack.bridge.stop()
        await stack.bridge.astart()
        assert f"{market}: the 24h figures are partial: no recorder" in stack.bridge.log()
        async with desk_on(stack.engine) as desk:
            (fill,) = await make_trades(desk, market, 1, 4_100_000)
        assert fill.trade_id == 13

        async def one_trade() -> bool:
            return (await ticker_of(http, stack.bridge, market))["trades"] == 1

        await eventually_async(one_trade, 30, 0.05, "the new trade in the ticker")
        assert (await api(http, stack.bridge, f"/api/trades?market={market}")) == [trade_text(fill)]
        assert "older than the engine's memory" not in stack.bridge.log()

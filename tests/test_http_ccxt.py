"""ccxt's ``binance`` class (async, from PyPI, unpatched) against the real ``/api/v3`` gateway.

A real engine and a real ``python -m gateways.http`` (tests/fixtures_http.py); ccxt only has
its ``urls`` pointed at the gateway. Every result is checked against the engine's own view,
asked directly over an ``EngineClient`` (Balances, OpenOrders, OrderStatus, Fills, Snapshot,
Trades), and against amounts computed here with ``Decimal`` from the documented rules (fills
print at the maker's price; fees on the asset received, rounded down: maker 0.1 %, taker 0.2 %).
Public data (book, trades, candles, tickers) reaches the gateway over the market-data feed, so
those checks poll until they hold, under generous deadlines; nothing asserts on timing.

Each reject must arrive as the ccxt exception class a Binance user expects. ccxt's client-side
throttle is switched off (``enableRateLimit``) to keep the module quick; the gateway's own rate
limit is tested on a second stack with a tiny order rate.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import itertools
import json
import os
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any
from urllib.parse import urlencode

import aiohttp
import ccxt.async_support as ccxt
import pytest

from engine.client import EngineClient
from protocol import messages as M
from protocol.enums import OrderStatus
from tests.fixtures_http import (
    REPLY_TIMEOUT,
    HttpStack,
    Trader,
    ccxt_binance,
    fresh_ms,
    http_stack_fixture,  # noqa: F401
    running_stack,
)
from tests.procs import eventually_async

TEST_TIMEOUT = 60.0  # one whole test; beyond it the test fails instead of hanging
FEED_TIMEOUT = 20.0  # the gateway's public data follows the engine over the feed
MAKER, TAKER = Decimal("0.001"), Decimal("0.002")
TICK, LOT = Decimal("0.01"), Decimal("0.0001")  # every Qnn-USD pool market
BASE_PLACES, USD_PLACES = 8, 6
_engine_ids = itertools.count(1)
_exchanges: list[Any] = []
_engines: dict[HttpStack, EngineClient] = {}


# ------------------------------------------------------------------------------ helpers


def async_test(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Run an ``async def`` test in a fresh loop under TEST_TIMEOUT, with an engine client of
    its own on every stack it uses (``engine()``); every ccxt exchange made with ``client``
    and those engine clients are closed afterwards, pass or fail."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stacks = [v for v in kwargs.values() if isinstance(v, HttpStack)]

        async def body() -> Any:
            try:
                for s in stacks:
                    name = f"ccxt-test-{os.getpid()}-{next(_engine_ids)}"
                    _engines[s] = EngineClient.for_exchange(s.ex, name)
                    await _engines[s].start(wait=REPLY_TIMEOUT)
                return await asyncio.wait_for(fn(*args, **kwargs), TEST_TIMEOUT)
            finally:
                while _exchanges:
                    await _exchanges.pop().close()
                for s in stacks:
                    if s in _engines:
                        await _engines.pop(s).close()

        return asyncio.run(body())

    return wrapper


def client(stack: HttpStack, who: Trader | None = None, **options: Any) -> Any:
    """A ``ccxt.async_support.binance`` on the gateway (closed after the test)."""
    ex = ccxt_binance(stack, who)
    ex.enableRateLimit = False
    ex.options.update(options)
    _exchanges.append(ex)
    return ex


@dataclass
class Market:
    name: str  # Q07-USD
    base: str  # Q07
    symbol: str  # ccxt: Q07/USD
    id: str  # Binance: Q07USD


def market(stack: HttpStack) -> Market:
    name = stack.new_market()
    base, quote = name.split("-")
    return Market(name, base, f"{base}/{quote}", base + quote)


def d(x: Any) -> Decimal:
    """A ccxt number (float) or string as the Decimal it stands for."""
    return Decimal(str(x))


def price(ticks: int) -> Decimal:
    return ticks * TICK


def qty(lots: int) -> Decimal:
    return lots * LOT


def units(n: int, places: int) -> Decimal:
    return Decimal(n).scaleb(-places)


def text(value: Decimal, places: int) -> str:
    return f"{value.quantize(Decimal(1).scaleb(-places)):f}"


def fee(amount: Decimal, rate: Decimal, places: int) -> Decimal:
    return (amount * rate).quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)


async def engine(stack: HttpStack, cmd: Any) -> Any:
    reply = await _engines[stack].request(cmd, REPLY_TIMEOUT)
    assert not isinstance(reply, M.Rejected), reply
    return reply


async def open_ids(stack: HttpStack, who: Trader, mkt: str = "") -> set[str]:
    reply = await engine(stack, M.OpenOrdersRequest(0, who.account, mkt))
    return {str(o.order_id) for o in reply.orders}


async def state(stack: HttpStack, who: Trader, mkt: Market, order_id: str) -> M.OrderState:
    reply = await engine(stack, M.OrderStatusRequest(0, who.account, mkt.name, int(order_id)))
    return reply.order  # type: ignore[no-any-return]


async def fills(stack: HttpStack, who: Trader, mkt: Market) -> list[M.ExecReport]:
    reply = await engine(stack, M.FillsRequest(0, who.account, mkt.name, 1000))
    return reply.fills  # type: ignore[no-any-return]


async def balances(stack: HttpStack, who: Trader) -> dict[str, tuple[int, int]]:
    reply = await engine(stack, M.BalancesRequest(0, who.account))
    return {b.asset: (b.available, b.locked) for b in reply.balances}


def check_trades_match_fills(order: dict, mine: list[M.ExecReport], mkt: Market) -> None:
    """An order's ``trades``/``fee`` as ccxt parsed them equal the engine's fills of it."""
    mine = [f for f in mine if str(f.order_id) == order["id"]]
    assert [t["id"] for t in order["trades"]] == [str(f.trade_id) for f in mine]
    for t, f in zip(order["trades"], mine, strict=True):
        buyer = f.side == 1
        assert d(t["price"]) == price(f.last_px)
        assert d(t["amount"]) == qty(f.last_qty)
        assert t["fee"]["currency"] == (mkt.base if buyer else "USD")
        assert d(t["fee"]["cost"]) == units(f.fee, BASE_PLACES if buyer else USD_PLACES)
    total = sum((units(f.fee, BASE_PLACES if f.side == 1 else USD_PLACES) for f in mine),
                Decimal(0))  # fmt: skip
    if mine:
        assert d(order["fee"]["cost"]) == total
    assert d(order["filled"]) == sum((qty(f.last_qty) for f in mine), Decimal(0))


async def poll(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """``check`` (which asserts) until it passes: the gateway's public data trails the engine."""

    async def ok() -> Any:
        return (await check()) or True

    return await eventually_async(ok, FEED_TIMEOUT, 0.05, what)


async def raises(cls: type[BaseException], coro: Awaitable[Any]) -> BaseException:
    """The exception ``coro`` raised, which must be exactly a ``cls`` (or a subclass)."""
    with pytest.raises(cls) as info:
        await coro
    return info.value


async def signed_raw(stack: HttpStack, who: Trader, method: str, path: str, **params: Any,
                     ) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    """A signed /api/v3 request by hand: (status, headers, decoded JSON)."""
    query = urlencode({**params, "timestamp": fresh_ms()})
    sig = hmac.new(who.secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    body = f"{query}&signature={sig}".encode()
    headers = {"X-MBX-APIKEY": who.key, "Content-Type": "application/x-www-form-urlencoded"}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, stack.url + path, data=body, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.json(content_type=None)


# ------------------------------------------------------------------------ market data


@async_test
async def test_load_markets_has_every_configured_market_with_its_filters(
    http_stack: HttpStack,
) -> None:
    cfg = tomllib.loads(http_stack.config.read_text())["markets"]
    ex = client(http_stack)
    markets = await ex.load_markets()
    assert len(markets) == len(cfg)
    for name, m in cfg.items():
        symbol = f"{m['base']}/{m['quote']}"
        got = markets[symbol]
        assert (got["id"], got["base"], got["quote"]) == (m["base"] + m["quote"], m["base"],
                                                          m["quote"])  # fmt: skip
        assert got["spot"] and got["active"] and got["type"] == "spot", name
        assert not (got["margin"] or got["swap"] or got["future"] or got["option"]), name
        assert d(got["precision"]["price"]) == Decimal(m["tick"]), name
        assert d(got["precision"]["amount"]) == Decimal(m["lot"]), name
        limits = got["limits"]
        assert d(limits["amount"]["min"]) == Decimal(m["min_qty"]), name
        assert d(limits["amount"]["max"]) == Decimal(m["max_qty"]), name
        assert d(limits["price"]["min"]) == Decimal(m["tick"]), name
        assert d(limits["price"]["max"]) == Decimal(m["max_price"]), name
        assert {"LIMIT", "LIMIT_MAKER", "MARKET"} <= set(got["info"]["orderTypes"])
    before = time.time_ns() // 1_000_000
    server = await ex.fetch_time()
    after = time.time_ns() // 1_000_000
    assert before <= server <= after  # the same clock: the gateway's own time, in ms


@async_test
async def test_book_trades_candles_and_tickers_follow_the_engine(http_stack: HttpStack) -> None:
    mkt, other = market(http_stack), market(http_stack)
    maker = await http_stack.funded(USD="1000", **{mkt.base: "10"})
    taker = await http_stack.funded(USD="1000", **{mkt.base: "10"})
    mx, tx = client(http_stack, maker), client(http_stack, taker)
    s = mkt.symbol
    for side, amount, px in [("sell", 0.5, 100), ("sell", 1, 100.5), ("sell", 2, 101),
                             ("buy", 1, 99), ("buy", 0.25, 98.5)]:  # fmt: skip
        await mx.create_order(s, "limit", side, amount, px)
    await tx.create_order(s, "limit", "buy", 0.7, 100.5, {"timeInForce": "IOC"})
    await tx.create_order(s, "market", "sell", 0.1)

    snap = await engine(http_stack, M.SnapshotRequest(0, mkt.name))
    bids = [[float(price(p)), float(qty(q))] for p, q, _ in snap.bids]
    asks = [[float(price(p)), float(qty(q))] for p, q, _ in snap.asks]
    assert bids == [[99.0, 0.9], [98.5, 0.25]] and asks == [[100.5, 0.8], [101.0, 2.0]]

    async def book() -> None:
        got = await tx.fetch_order_book(s)
        assert (got["bids"], got["asks"]) == (bids, asks)
        assert isinstance(got["nonce"], int)

    await poll(book, "fetch_order_book equals the engine's book")

    trades = (await engine(http_stack, M.TradesRequest(0, mkt.name, 1))).trades
    assert [(price(t.price), qty(t.qty)) for t in trades] == [
        (Decimal("100"), Decimal("0.5")), (Decimal("100.5"), Decimal("0.2")),
        (Decimal("99"), Decimal("0.1")),
    ]  # fmt: skip
    expected = [
        (str(t.trade_id), float(price(t.price)), float(qty(t.qty)),
         "buy" if t.taker_side == 1 else "sell", t.ts // 1_000_000)
        for t in trades
    ]  # fmt: skip

    def rows(got: list[dict]) -> list[tuple]:
        return [(t["id"], t["price"], t["amount"], t["side"], t["timestamp"]) for t in got]

    async def agg_trades() -> None:
        got = await tx.fetch_trades(s)
        assert rows(got) == expected
        assert all("a" in t["info"] for t in got)  # GET /api/v3/aggTrades

    await poll(agg_trades, "fetch_trades (aggTrades) equals the engine's trades")
    plain = await tx.fetch_trades(s, params={"fetchTradesMethod": "publicGetTrades"})
    assert rows(plain) == expected
    for t, e in zip(plain, trades, strict=True):  # GET /api/v3/trades
        assert d(t["info"]["quoteQty"]) == price(e.price) * qty(e.qty)
        assert d(t["cost"]) == price(e.price) * qty(e.qty)

    candles: dict[int, list] = {}  # the 1m candles the trades make, by open time (ms)
    for t in trades:
        start = t.ts // 60_000_000_000 * 60_000
        p, q = float(price(t.price)), qty(t.qty)
        c = candles.setdefault(start, [start, p, p, p, p, Decimal(0)])
        c[2], c[3], c[4], c[5] = max(c[2], p), min(c[3], p), p, c[5] + q
    want = [[*c[:5], float(c[5])] for c in candles.values()]

    async def ohlcv() -> None:
        assert await tx.fetch_ohlcv(s, "1m") == want

    await poll(ohlcv, "fetch_ohlcv (klines) equals candles of the engine's trades")

    async def ticker() -> None:
        t = await tx.fetch_ticker(s)
        assert (t["symbol"], t["last"], t["open"], t["high"], t["low"]) == (s, 99, 100, 100.5, 99)
        assert (d(t["baseVolume"]), d(t["quoteVolume"])) == (Decimal("0.8"), Decimal("80"))
        assert (t["bid"], t["bidVolume"], t["ask"], t["askVolume"]) == (99, 0.9, 100.5, 0.8)

    await poll(ticker, "fetch_ticker (ticker/24hr) follows the trades and the book")
    some = await tx.fetch_tickers([s, other.symbol])
    assert set(some) == {s, other.symbol} and some[s]["last"] == 99
    assert some[other.symbol]["last"] is None or some[other.symbol]["baseVolume"] == 0
    every = await tx.fetch_tickers()
    assert set(every) == set(await tx.load_markets())
    bbo = await tx.fetch_bids_asks([s])
    assert set(bbo) == {s}
    assert (bbo[s]["bid"], bbo[s]["bidVolume"], bbo[s]["ask"], bbo[s]["askVolume"]) == (
        99, 0.9, 100.5, 0.8)  # fmt: skip
    last = await tx.fetch_last_prices([s])
    assert last[s]["price"] == 99


# --------------------------------------------------------------------------- balances


@async_test
async def test_fetch_balance_is_the_engines_balances_exactly(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    who = await http_stack.funded(USD="1000.123456", **{mkt.base: "2.5"})
    ex = client(http_stack, who)
    await ex.create_order(mkt.symbol, "limit", "buy", 0.5, 90)  # locks 45 USD
    await ex.create_order(mkt.symbol, "limit", "sell", 0.3, 110)  # locks 0.3 base
    bal = await ex.fetch_balance()
    eng = await balances(http_stack, who)
    places = {a: http_stack.ex.assets[a] for a in eng}
    assert eng["USD"] == (955_123456, 45_000000) and places["USD"] == USD_PLACES
    assert eng[mkt.base] == (220_000000, 30_000000) and places[mkt.base] == BASE_PLACES
    info = {b["asset"]: (b["free"], b["locked"]) for b in bal["info"]["balances"]}
    assert info == {
        a: (text(units(f, places[a]), places[a]), text(units(u, places[a]), places[a]))
        for a, (f, u) in eng.items()
    }
    assert info["USD"] == ("955.123456", "45.000000")
    for asset, (free, used) in eng.items():
        got = bal[asset]
        assert d(got["free"]) == units(free, places[asset]), asset
        assert d(got["used"]) == units(used, places[asset]), asset
        assert d(got["total"]) == units(free + used, places[asset]), asset
    assert bal["info"]["canTrade"] is True


# ----------------------------------------------------------------------------- orders


@async_test
async def test_limit_gtc_ioc_fok_and_post_only(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    a = await http_stack.funded(USD="1000", **{mkt.base: "5"})
    b = await http_stack.funded(USD="1000")
    ax, bx = client(http_stack, a), client(http_stack, b)
    s = mkt.symbol

    rest = await ax.create_order(s, "limit", "sell", 1, 100)
    assert (rest["status"], rest["filled"], rest["remaining"], rest["type"]) == (
        "open", 0, 1, "limit")  # fmt: skip
    assert rest["timeInForce"] == "GTC" and rest["info"]["type"] == "LIMIT"
    o = await state(http_stack, a, mkt, rest["id"])
    assert (o.price, o.qty, o.leaves_qty, o.client_order_id) == (10000, 10000, 10000,
                                                                rest["clientOrderId"])  # fmt: skip
    assert await open_ids(http_stack, a, mkt.name) == {rest["id"]}

    ioc = await bx.create_order(s, "limit", "buy", 0.4, 100, {"timeInForce": "IOC"})
    assert (ioc["status"], ioc["timeInForce"], d(ioc["filled"]), d(ioc["cost"])) == (
        "closed", "IOC", Decimal("0.4"), Decimal("40"))  # fmt: skip
    assert ioc["fee"] == {"currency": mkt.base, "cost": float(fee(Decimal("0.4"), TAKER, 8))}
    check_trades_match_fills(ioc, await fills(http_stack, b, mkt), mkt)
    assert len(ioc["trades"]) == 1 and (await state(http_stack, b, mkt, ioc["id"])).cum_qty == 4000

    fok = await bx.create_order(s, "limit", "buy", 1, 100, {"timeInForce": "FOK"})
    assert (fok["status"], fok["filled"], fok["trades"]) == ("expired", 0, [])
    assert (await state(http_stack, a, mkt, rest["id"])).leaves_qty == 6000  # nothing traded
    assert fok["id"] not in await open_ids(http_stack, b)

    fok2 = await bx.create_order(s, "limit", "buy", 0.6, 100, {"timeInForce": "FOK"})
    assert (fok2["status"], d(fok2["filled"]), d(fok2["cost"])) == ("closed", Decimal("0.6"),
                                                                    Decimal("60"))  # fmt: skip
    check_trades_match_fills(fok2, await fills(http_stack, b, mkt), mkt)
    assert await open_ids(http_stack, a, mkt.name) == set()

    none = await bx.create_order(s, "limit", "buy", 0.5, 100, {"timeInForce": "IOC"})
    assert (none["status"], none["filled"]) == ("expired", 0)  # no ask left: nothing, not open

    po = await ax.create_order(s, "limit", "sell", 1, 101, {"postOnly": True})
    assert (po["status"], po["postOnly"], po["info"]["type"]) == ("open", True, "LIMIT_MAKER")
    o = await state(http_stack, a, mkt, po["id"])
    assert o.post_only and o.price == 10100 and o.leaves_qty == 10000
    got = await ax.fetch_order(po["id"], s)
    assert (got["postOnly"], got["type"], got["status"]) == (True, "limit", "open")
    gone = await ax.cancel_order(po["id"], s)  # the cancel still says what kind of order it was
    assert (gone["status"], gone["postOnly"], gone["info"]["type"]) == ("canceled", True,
                                                                        "LIMIT_MAKER")  # fmt: skip

    bal = await balances(http_stack, b)  # 1000 - 40 - 60 USD; 0.4 + 0.6 base less taker fees
    assert bal["USD"] == (900_000000, 0)
    assert bal[mkt.base] == (100_000000 - 80000 - 120000, 0)


@async_test
async def test_market_orders_by_amount_and_by_quote_cost(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    a = await http_stack.funded(USD="1000", **{mkt.base: "5"})
    b = await http_stack.funded(USD="1000", **{mkt.base: "5"})
    ax, bx = client(http_stack, a), client(http_stack, b)
    s = mkt.symbol
    await ax.create_order(s, "limit", "sell", 0.3, 100)
    await ax.create_order(s, "limit", "sell", 1, 101)
    await ax.create_order(s, "limit", "buy", 1, 99)

    # 50 USD: 0.3 at 100 (30 USD), then 20 / 101 = 0.19801.. -> 0.1980 at 101 (19.998 USD)
    buy = await bx.create_market_buy_order_with_cost(s, 50)
    assert buy["info"]["origQuoteOrderQty"] == "50.000000"  # sent as quoteOrderQty
    assert (buy["status"], buy["type"], buy["side"]) == ("closed", "market", "buy")
    assert (d(buy["filled"]), d(buy["cost"])) == (Decimal("0.498"), Decimal("49.998"))
    assert [(t["price"], d(t["amount"])) for t in buy["trades"]] == [
        (100, Decimal("0.3")), (101, Decimal("0.198"))]  # fmt: skip
    check_trades_match_fills(buy, await fills(http_stack, b, mkt), mkt)
    o = await state(http_stack, b, mkt, buy["id"])
    assert (o.quote_qty, o.cum_qty, o.cum_quote) == (50_000000, 4980, 49_998000)

    # amount x price: ccxt sends quoteOrderQty = 0.1 x 101 = 10.1
    buy2 = await bx.create_order(s, "market", "buy", 0.1, 101)
    assert buy2["info"]["origQuoteOrderQty"] == "10.100000"
    assert (buy2["status"], d(buy2["filled"]), d(buy2["cost"])) == ("closed", Decimal("0.1"),
                                                                    Decimal("10.1"))  # fmt: skip
    check_trades_match_fills(buy2, await fills(http_stack, b, mkt), mkt)

    sell = await bx.create_order(s, "market", "sell", 0.25)
    assert (sell["status"], sell["type"], sell["side"]) == ("closed", "market", "sell")
    assert (d(sell["filled"]), d(sell["cost"]), sell["price"]) == (Decimal("0.25"),
                                                                  Decimal("24.75"), 99)  # fmt: skip
    assert sell["fee"] == {"currency": "USD", "cost": float(fee(Decimal("24.75"), TAKER, 6))}
    check_trades_match_fills(sell, await fills(http_stack, b, mkt), mkt)
    assert await open_ids(http_stack, b) == set()


@async_test
async def test_fetch_order_open_orders_cancel_and_cancel_all(http_stack: HttpStack) -> None:
    mkt, mkt2 = market(http_stack), market(http_stack)
    a = await http_stack.funded(USD="1000", **{mkt.base: "5", mkt2.base: "5"})
    b = await http_stack.funded(USD="1000")
    ax, bx = client(http_stack, a), client(http_stack, b)
    s = mkt.symbol
    sell = await ax.create_order(s, "limit", "sell", 1, 100)
    buy = await ax.create_order(s, "limit", "buy", 0.5, 95, {"clientOrderId": "mine-1"})
    assert buy["clientOrderId"] == "mine-1"
    far = await ax.create_order(s, "limit", "buy", 0.2, 90)
    elsewhere = await ax.create_order(mkt2.symbol, "limit", "sell", 1, 200)
    await bx.create_order(s, "limit", "buy", 0.25, 100, {"timeInForce": "IOC"})

    part = await ax.fetch_order(sell["id"], s)
    o = await state(http_stack, a, mkt, sell["id"])
    assert (part["status"], d(part["filled"]), d(part["remaining"]), d(part["cost"])) == (
        "open", qty(o.cum_qty), qty(o.leaves_qty), units(o.cum_quote, 6))  # fmt: skip
    assert (d(part["filled"]), d(part["cost"])) == (Decimal("0.25"), Decimal("25"))
    assert (part["clientOrderId"], part["price"], part["amount"], part["side"]) == (
        o.client_order_id, 100, 1, "sell")  # fmt: skip
    by_cid = await ax.fetch_order(None, s, {"clientOrderId": "mine-1"})
    assert (by_cid["id"], by_cid["status"], by_cid["price"], by_cid["amount"]) == (
        buy["id"], "open", 95, 0.5)  # fmt: skip

    listed = await ax.fetch_open_orders(s)
    assert {o["id"] for o in listed} == await open_ids(http_stack, a, mkt.name)
    assert {o["id"] for o in listed} == {sell["id"], buy["id"], far["id"]}
    everywhere = await ax.fetch_open_orders()
    assert {o["id"] for o in everywhere} == await open_ids(http_stack, a)
    assert {o["id"] for o in everywhere} == {sell["id"], buy["id"], far["id"], elsewhere["id"]}
    assert {o["symbol"] for o in everywhere} == {s, mkt2.symbol}

    gone = await ax.cancel_order(far["id"], s)
    assert (gone["id"], gone["status"]) == (far["id"], "canceled")
    assert (await state(http_stack, a, mkt, far["id"])).status == OrderStatus.CANCELED
    assert (await ax.fetch_order(far["id"], s))["status"] == "canceled"
    by_cid = await ax.cancel_order(None, s, {"clientOrderId": "mine-1"})
    assert (by_cid["id"], by_cid["status"]) == (buy["id"], "canceled")

    before = await open_ids(http_stack, a, mkt.name)
    more = await ax.create_order(s, "limit", "buy", 0.1, 91)
    cancelled = await ax.cancel_all_orders(s)
    assert {o["id"] for o in cancelled} == before | {more["id"]} == {sell["id"], more["id"]}
    assert all(o["status"] == "canceled" for o in cancelled)
    partial = next(o for o in cancelled if o["id"] == sell["id"])
    assert d(partial["filled"]) == Decimal("0.25")
    assert await open_ids(http_stack, a, mkt.name) == set()
    assert await open_ids(http_stack, a) == {elsewhere["id"]}  # only that symbol's
    assert await ax.fetch_open_orders(s) == []
    bal = await balances(http_stack, a)
    assert bal["USD"][1] == 0 and bal[mkt.base][1] == 0

    # allOrders: every order of the symbol, open or closed, oldest first, as the engine has them
    every = await ax.fetch_orders(s)
    assert [o["id"] for o in every] == sorted(
        [sell["id"], buy["id"], far["id"], more["id"]], key=int)  # fmt: skip
    assert {o["id"]: o["status"] for o in every} == {
        sell["id"]: "canceled", buy["id"]: "canceled", far["id"]: "canceled",
        more["id"]: "canceled"}  # fmt: skip
    assert d(next(o for o in every if o["id"] == sell["id"])["filled"]) == Decimal("0.25")
    assert [o["id"] for o in await ax.fetch_orders(s, None, 2)] == [o["id"] for o in every[-2:]]
    assert await ax.fetch_closed_orders(s) == []  # ccxt's closed: filled; these were canceled
    assert [o["id"] for o in await ax.fetch_orders(mkt2.symbol)] == [elsewhere["id"]]
    (took,) = await bx.fetch_closed_orders(s)  # b's own IOC, filled; never one of a's
    assert (took["side"], d(took["filled"])) == ("buy", Decimal("0.25"))
    assert took["id"] not in {o["id"] for o in every}


@async_test
async def test_fetch_my_trades_is_the_engines_fills(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    a = await http_stack.funded(USD="1000", **{mkt.base: "5"})
    b = await http_stack.funded(USD="1000", **{mkt.base: "5"})
    ax, bx = client(http_stack, a), client(http_stack, b)
    s = mkt.symbol
    await ax.create_order(s, "limit", "sell", 0.5, 100.25)
    await ax.create_order(s, "limit", "buy", 0.5, 99.75)
    await bx.create_order(s, "limit", "buy", 0.5, 100.25)  # takes a's whole ask
    await bx.create_order(s, "market", "sell", 0.4)  # takes 0.4 of a's bid
    await bx.create_order(s, "limit", "sell", 0.1, 100.5)  # rests, then a takes it
    await ax.create_order(s, "limit", "buy", 0.1, 100.5)
    for who, ex in ((a, ax), (b, bx)):
        mine = await fills(http_stack, who, mkt)
        assert len(mine) == 3
        got = await ex.fetch_my_trades(s)
        assert [(t["id"], t["order"]) for t in got] == [
            (str(f.trade_id), str(f.order_id)) for f in mine]  # fmt: skip
        for t, f in zip(got, mine, strict=True):
            buyer, maker = f.side == 1, f.liquidity == 1
            places = BASE_PLACES if buyer else USD_PLACES
            assert t["symbol"] == s and t["side"] == ("buy" if buyer else "sell")
            assert t["takerOrMaker"] == ("maker" if maker else "taker")
            assert (d(t["price"]), d(t["amount"])) == (price(f.last_px), qty(f.last_qty))
            assert d(t["cost"]) == price(f.last_px) * qty(f.last_qty)
            assert t["fee"]["currency"] == (mkt.base if buyer else "USD")
            assert d(t["fee"]["cost"]) == units(f.fee, places)
            received = qty(f.last_qty) if buyer else price(f.last_px) * qty(f.last_qty)
            assert units(f.fee, places) == fee(received, MAKER if maker else TAKER, places)
            assert t["timestamp"] == f.ts // 1_000_000
    assert [t["takerOrMaker"] for t in await ax.fetch_my_trades(s)] == ["maker", "maker", "taker"]


# ---------------------------------------------------------------------------- rejects


@async_test
async def test_rejects_arrive_as_the_ccxt_classes_binance_users_expect(
    http_stack: HttpStack,
) -> None:
    mkt = market(http_stack)
    a = await http_stack.funded(USD="1000", **{mkt.base: "5"})
    b = await http_stack.funded(USD="10")
    ax, bx = client(http_stack, a), client(http_stack, b)
    s = mkt.symbol
    real = await ax.create_order(s, "limit", "sell", 1, 100)
    before = await balances(http_stack, b)

    e = await raises(ccxt.InsufficientFunds, bx.create_order(s, "limit", "buy", 1, 99))
    assert json.loads(bx.last_http_response) == {"code": -2010, "msg": str(e)[len("binance ") :]}
    assert await balances(http_stack, b) == before and await open_ids(http_stack, b) == set()

    # someone else's real order looks exactly like one that does not exist
    for call in ("fetch_order", "cancel_order"):
        other = await raises(ccxt.OrderNotFound, getattr(bx, call)(real["id"], s))
        unknown = await raises(ccxt.OrderNotFound, getattr(bx, call)("987654321", s))
        assert str(other) == str(unknown), call
    cid = {"clientOrderId": real["clientOrderId"]}
    other = await raises(ccxt.OrderNotFound, bx.fetch_order(None, s, cid))
    unknown = await raises(ccxt.OrderNotFound, bx.fetch_order(None, s, {"clientOrderId": "x1"}))
    assert str(other) == str(unknown)
    assert await open_ids(http_stack, a, mkt.name) == {real["id"]}  # b's cancel did nothing

    await raises(ccxt.BadSymbol, ax.public_get_depth({"symbol": "NOPEUSD"}))
    await raises(ccxt.BadSymbol, ax.public_get_aggtrades({"symbol": "NOPEUSD"}))
    await raises(ccxt.BadSymbol, ax.private_get_openorders({"symbol": "NOPEUSD"}))

    raw = {"symbol": mkt.id, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
    for bad, filt in [({"quantity": "1", "price": "50.001"}, "PRICE_FILTER"),
                      ({"quantity": "1.00001", "price": "50"}, "LOT_SIZE"),
                      ({"quantity": "2000", "price": "50"}, "LOT_SIZE")]:  # fmt: skip
        e = await raises(ccxt.InvalidOrder, ax.private_post_order({**raw, **bad}))
        assert filt in str(e) and '"code":-1013' in str(e), bad
    await raises(ccxt.OrderImmediatelyFillable,
                 ax.create_order(s, "limit", "buy", 0.1, 100, {"postOnly": True}))  # fmt: skip
    assert await open_ids(http_stack, a, mkt.name) == {real["id"]}  # none of those was placed


@async_test
async def test_authentication_failures(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    who = await http_stack.funded(USD="100")
    reader = await http_stack.funded("read", USD="100")

    wrong = client(http_stack, who)
    wrong.secret = "s" * len(who.secret)
    e = await raises(ccxt.AuthenticationError, wrong.fetch_balance())
    assert '"code":-1022' in str(e)
    nobody = client(http_stack, who)
    nobody.apiKey = "k_00000000deadbeef"
    e = await raises(ccxt.AuthenticationError, nobody.fetch_balance())
    assert '"code":-2015' in str(e)

    ro = client(http_stack, reader)
    e = await raises(ccxt.AuthenticationError, ro.create_order(mkt.symbol, "limit", "buy", 1, 50))
    assert '"code":-2015' in str(e)
    bal = await ro.fetch_balance()  # reading is allowed
    assert bal["info"]["canTrade"] is False and bal["USD"]["free"] == 100
    # after one successful signed call ccxt reads -2015 as a temporary ban (as on Binance)
    e = await raises(ccxt.DDoSProtection, ro.create_order(mkt.symbol, "limit", "buy", 1, 50))
    assert '"code":-2015' in str(e)
    await raises(ccxt.DDoSProtection, ro.cancel_all_orders(mkt.symbol))
    assert await open_ids(http_stack, reader) == set()
    assert (await balances(http_stack, reader))["USD"] == (100_000000, 0)


@async_test
async def test_timestamp_outside_the_window_is_invalid_nonce(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    who = await http_stack.funded(USD="1000")
    ex = client(http_stack, who)
    await ex.load_markets()
    for skew in (70_000, -2_000):  # 70 s behind (recvWindow 10 s), 2 s ahead (1 s allowed)
        ex.options["timeDifference"] = skew
        e = await raises(ccxt.InvalidNonce, ex.fetch_balance())
        assert '"code":-1021' in str(e)
        await raises(ccxt.InvalidNonce, ex.create_order(mkt.symbol, "limit", "buy", 1, 50))
    assert await open_ids(http_stack, who) == set()
    ex.options["timeDifference"] = 3_000  # inside the window
    placed = await ex.create_order(mkt.symbol, "limit", "buy", 1, 50)
    assert await open_ids(http_stack, who) == {placed["id"]}


# ------------------------------------------------------------------- other routes


@async_test
async def test_sapi_fapi_dapi_answer_a_binance_json_error(http_stack: HttpStack) -> None:
    async with aiohttp.ClientSession() as session:
        for method, path in [("GET", "/sapi/v1/capital/config/getall"),
                             ("GET", "/sapi/v1/margin/allPairs"),
                             ("GET", "/sapi/v1/margin/isolated/allPairs"),
                             ("GET", "/fapi/v1/exchangeInfo"), ("GET", "/dapi/v1/exchangeInfo"),
                             ("POST", "/sapi/v1/asset/get-funding-asset"),
                             ("DELETE", "/fapi/v1/allOpenOrders")]:  # fmt: skip
            async with session.request(method, http_stack.url + path) as r:
                body = await r.text()
                assert r.status == 404, (path, body)
                assert r.headers["Content-Type"].startswith("application/json"), path
                err = await r.json()
                assert set(err) == {"code", "msg"} and isinstance(err["code"], int), path
                assert err["code"] < 0 and "<html" not in body.lower(), path
    who = await http_stack.funded(USD="1")
    for options in ({"fetchMargins": True}, {"fetchCurrencies": True}):
        ex = client(http_stack, who, **options)
        e = await raises(ccxt.ExchangeError, ex.load_markets())
        assert '"code":-1016' in str(e), options  # an answer, not a timeout
    ex = client(http_stack, who)
    e = await raises(ccxt.ExchangeError, ex.fetch_deposit_address("USD"))
    assert '"code":-1016' in str(e)


# ---------------------------------------------------------------------- rate limits


@pytest.fixture(name="limited_stack", scope="module")
def limited_stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpStack]:
    """A second engine and gateway whose accounts may send 2 orders, then one per 100 s."""
    yield from running_stack(
        tmp_path_factory.mktemp("http-limited"),
        http_gateway={"orders_per_second": 0.01, "order_burst": 2},
    )


@async_test
async def test_account_order_rate_limit_is_ddos_protection_with_retry_after(
    limited_stack: HttpStack,
) -> None:
    mkt = market(limited_stack)
    who = await limited_stack.funded(USD="1000")
    ex = client(limited_stack, who)
    placed = [await ex.create_order(mkt.symbol, "limit", "buy", 0.1, 50 + i) for i in range(2)]
    e = await raises(ccxt.DDoSProtection, ex.create_order(mkt.symbol, "limit", "buy", 0.1, 60))
    assert '"code":-1015' in str(e)
    status, headers, body = await signed_raw(
        limited_stack, who, "POST", "/api/v3/order", symbol=mkt.id, side="BUY", type="LIMIT",
        timeInForce="GTC", quantity="0.1", price="61",
    )  # fmt: skip
    assert status == 429 and body["code"] == -1015
    assert int(headers["Retry-After"]) >= 1
    assert await open_ids(limited_stack, who) == {o["id"] for o in placed}
    assert len(await ex.fetch_open_orders(mkt.symbol)) == 2  # reads are not order-limited

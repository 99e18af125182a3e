"""ccxt.pro against the real HTTP gateway process (``python -m gateways.http``): its Binance
streams and its REST ``/api/v3/depth`` share one book and one id sequence, and
``watch_order_book`` / ``watch_trades`` stay in step with the engine, across an engine restart
too. Orders go straight to the engine; expected values are the engine's own answers.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from decimal import Decimal
from typing import Any

import aiohttp

from engine.client import EngineClient
from protocol.messages import BookSnapshot, Executions, NewOrder, SnapshotRequest
from tests.fixtures_feed import async_test
from tests.fixtures_http import REPLY_TIMEOUT, HttpStack, ccxt_binance, http_stack_fixture  # noqa: F401
from tests.procs import eventually_async
from tests.test_binance_streams import Ws, apply_binance, px, qty

BUY, SELL, LIMIT, GTC, IOC = 1, 2, 1, 1, 2
_ids = (f"{os.getpid()}-{i}" for i in itertools.count(1))


class Desk:
    """Orders through one engine client kept for the whole test (the stack's
    ``engine_request`` opens a client per call, too slow for a stream of orders)."""

    def __init__(self, stack: HttpStack, market: str) -> None:
        self.stack, self.market = stack, market
        self.maker = self.taker = 0
        self.client = EngineClient.for_exchange(stack.ex, f"http-streams-desk-{next(_ids)}")

    async def start(self) -> Desk:
        await self.client.start(wait=REPLY_TIMEOUT)
        base = self.market.split("-")[0]
        self.maker = (await self.stack.funded(USD="1000000000", **{base: "1000000"})).account
        self.taker = (await self.stack.funded(USD="1000000000", **{base: "1000000"})).account
        return self

    async def order(self, account: int, side: int, tif: int, price: int, q: int) -> Executions:
        cmd = NewOrder(0, account, self.market, side, LIMIT, tif, price, q)
        reply = await self.client.request(cmd, timeout=REPLY_TIMEOUT)
        assert isinstance(reply, Executions), reply
        return reply

    async def rest(self, side: int, price: int, q: int) -> None:
        await self.order(self.maker, side, GTC, price, q)

    async def take(self, side: int, price: int, q: int) -> list:
        return [
            r for r in (await self.order(self.taker, side, IOC, price, q)).reports if r.trade_id
        ]

    async def book(self) -> tuple[dict, dict, int]:
        snap = await self.client.request(SnapshotRequest(0, self.market), timeout=REPLY_TIMEOUT)
        assert isinstance(snap, BookSnapshot), snap
        bids = {px(p): qty(q) for p, q, _ in snap.bids}
        asks = {px(p): qty(q) for p, q, _ in snap.asks}
        return bids, asks, snap.seq

    async def close(self) -> None:
        await self.client.close()

    async def churn(self, base: int = 5_000_000) -> None:
        for i in range(3):
            await self.rest(BUY, base - 10_000 - 100 * i, 10 + i)
            await self.rest(SELL, base + 10_000 + 100 * i, 20 + i)
        await self.take(BUY, base + 10_000, 10)
        await self.take(SELL, base - 10_000, 4)


def levels(side: Any) -> dict[str, str]:
    """ccxt's [[price, amount]] (floats) as the engine's decimal text (tick 0.01, lot 0.0001)."""
    return {px(round(Decimal(str(p)) * 100)): qty(round(Decimal(str(a)) * 10_000)) for p, a in side}


async def in_step(client: Any, symbol: str, desk: Desk, uid: Any = None) -> int:
    """watch_order_book until its book is the engine's; returns the nonce."""
    bids, asks, seq = await desk.book()
    want = uid() if uid else seq
    while True:
        ob = await asyncio.wait_for(client.watch_order_book(symbol), REPLY_TIMEOUT)
        if ob["nonce"] >= want:
            assert (levels(ob["bids"]), levels(ob["asks"])) == (bids, asks)
            return ob["nonce"]


@async_test
async def test_rest_depth_and_the_depth_stream_share_ids_in_the_gateway_process(
    http_stack: HttpStack,
) -> None:
    market = http_stack.new_market()
    s = market.replace("-", "")
    desk = await Desk(http_stack, market).start()
    assert http_stack.gateway is not None
    async with aiohttp.ClientSession() as http:
        await desk.rest(BUY, 4_900_000, 1)
        ws = Ws(await http.ws_connect(f"ws://127.0.0.1:{http_stack.gateway.ws_port}/ws/0"))
        assert await ws.call("SUBSCRIBE", [f"{s.lower()}@depth@100ms"]) == {"result": None, "id": 1}
        async with http.get(f"{http_stack.url}/api/v3/depth?symbol={s}&limit=1000") as r:
            assert r.status == 200
            snap = await r.json()
        await desk.churn()
        bids, asks, seq = await desk.book()
        await ws.until(lambda: any(e["u"] >= seq for e in ws.of("depthUpdate")), what="seq")
        assert apply_binance(snap, ws.of("depthUpdate")) == (bids, asks, seq)
        await ws.ws.close()
    await desk.close()


@async_test
async def test_rest_depth_answers_binance_errors(http_stack: HttpStack) -> None:
    async with aiohttp.ClientSession() as http:
        for query, code in (
            ("", -1102),
            ("?symbol=NOPE", -1121),
            ("?symbol=BTCUSD&limit=x", -1100),
        ):
            async with http.get(f"{http_stack.url}/api/v3/depth{query}") as r:
                assert r.status == 400 and (await r.json())["code"] == code, query


@async_test
async def test_ccxt_pro_watch_order_book_and_watch_trades_follow_the_engine(
    http_stack: HttpStack,
) -> None:
    market = http_stack.new_market()
    symbol = market.replace("-", "/")
    desk = await Desk(http_stack, market).start()
    client = ccxt_binance(http_stack, pro=True)
    try:
        await client.load_markets()
        await desk.rest(BUY, 4_990_000, 10)
        await in_step(client, symbol, desk)
        await desk.churn()
        await in_step(client, symbol, desk)
        first = asyncio.ensure_future(client.watch_trades(symbol))  # subscribes
        await eventually_async(lambda: len(client.clients) >= 2, 20, 0.02, "trades socket")
        got: dict[int, dict] = {}
        fills: list = []
        while True:  # until the subscription is live, trades made before it are not streamed
            fills += await desk.take(BUY, 5_010_000, 1)
            done, _ = await asyncio.wait({first}, timeout=0.5)
            if done:
                got.update({int(t["id"]): t for t in first.result()})
                break
        fills += await desk.take(SELL, 4_990_000, 2)
        want = {f.trade_id: f for f in fills if f.trade_id >= min(got)}
        while not set(want) <= set(got):
            for t in await asyncio.wait_for(client.watch_trades(symbol), REPLY_TIMEOUT):
                got[int(t["id"])] = t
        for tid, f in want.items():
            t = got[tid]
            assert t["side"] == ("buy" if f.side == BUY else "sell")
            assert Decimal(str(t["price"])) == Decimal(px(f.last_px))
            assert Decimal(str(t["amount"])) == Decimal(qty(f.last_qty))
            assert t["timestamp"] == f.ts // 1_000_000
        await in_step(client, symbol, desk)
    finally:
        await client.close()
        await desk.close()


@async_test
async def test_ccxt_pro_order_book_stays_exact_across_an_engine_restart(
    http_stack: HttpStack,
) -> None:
    """Last in this module: it restarts the module's engine."""
    market = http_stack.new_market()
    symbol = market.replace("-", "/")
    desk = await Desk(http_stack, market).start()
    client = ccxt_binance(http_stack, pro=True)
    try:
        await client.load_markets()
        await desk.churn()
        before = await in_step(client, symbol, desk)
        await http_stack.engine.astop()
        await http_stack.engine.astart()  # same ports and data; a new epoch, seq from 0
        await desk.rest(SELL, 5_040_000, 3)
        await desk.take(BUY, 5_010_000, 1)
        after = await in_step(client, symbol, desk, uid=lambda: before + 1)
        assert after > before
    finally:
        await client.close()
        await desk.close()

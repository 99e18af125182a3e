"""The market maker: its quoting logic as pure functions (marketmaker/quoting.py), and the bot
against the real engine and JSON gateway: two-sided quotes on every market, never more locked
than its balance budget, quotes that follow the price, trades printed, and a restarted
``python -m marketmaker`` process that resumes from the market's price, not its configured one."""

from __future__ import annotations

import asyncio
import json
import random
from decimal import Decimal
from pathlib import Path

from aiohttp import web

from engine.client import EngineClient
from marketmaker import quoting
from marketmaker.bot import MarketMaker, Params
from marketmaker.quoting import BUY, PPM, SELL, QuoteParams, Shape
from protocol import config
from protocol.messages import BookSnapshot, SnapshotRequest, Trade, TradesReply, TradesRequest
from tests.fixtures_gateway import Stack, async_test, write_exchange_config
from tests.procs import Proc, eventually_async, free_port

BTC = config.load().markets["BTC-USD"]
MID = BTC.price_to_ticks("50000.00")


def _ladder(mid: int = MID, inventory: int = 0, vol: int = 0, seed: int = 1, **kw):
    p = QuoteParams(**kw)
    shape = Shape.draw(random.Random(seed), p)
    quotes = quoting.ladder(mid, 2_000, inventory, vol, shape, p, min_qty=BTC.min_qty)
    bids = [q for q in quotes if q.side == BUY]
    asks = [q for q in quotes if q.side == SELL]
    return bids, asks


def _spread(bids, asks) -> int:
    return asks[0].price - bids[0].price


def _centre(bids, asks) -> int:
    return (asks[0].price + bids[0].price) // 2


def test_ladder_is_on_the_tick_and_lot_and_never_crossed() -> None:
    for seed in range(20):
        bids, asks = _ladder(seed=seed, inventory=(seed - 10) * 100_000, vol=seed * 200)
        assert len(bids) == len(asks) == QuoteParams().levels
        for q in bids + asks:
            assert isinstance(q.price, int) and isinstance(q.qty, int)
            assert q.qty >= BTC.min_qty
            # exactly representable at the edge: the decimal text converts back to the same
            assert BTC.price_to_ticks(BTC.price_text(q.price)) == q.price
            assert BTC.qty_to_lots(BTC.qty_text(q.qty)) == q.qty
        assert [q.price for q in bids] == sorted({q.price for q in bids}, reverse=True)
        assert [q.price for q in asks] == sorted({q.price for q in asks})
        assert bids[0].price < asks[0].price


def test_ladder_spread_widens_with_volatility() -> None:
    calm = _spread(*_ladder(vol=0))
    moving = _spread(*_ladder(vol=2_000))  # trades moved 20 bp on average
    wild = _spread(*_ladder(vol=50_000))
    assert calm < moving < wild
    assert wild <= 2 * MID * QuoteParams().max_half_spread_ppm // PPM + 1  # capped


def test_ladder_leans_against_the_inventory() -> None:
    flat_bids, flat_asks = _ladder(inventory=0)
    long_bids, long_asks = _ladder(inventory=600_000)  # long base: wants to sell
    short_bids, short_asks = _ladder(inventory=-600_000)
    assert _centre(long_bids, long_asks) < _centre(flat_bids, flat_asks)
    assert _centre(short_bids, short_asks) > _centre(flat_bids, flat_asks)
    assert long_asks[0].price < flat_asks[0].price  # a cheaper offer...
    assert long_bids[0].price < flat_bids[0].price  # ...and a lower bid
    assert sum(q.qty for q in long_asks) > sum(q.qty for q in long_bids)  # more on offer
    assert sum(q.qty for q in short_bids) > sum(q.qty for q in short_asks)


def test_ladder_sizes_grow_with_distance_and_vary() -> None:
    for seed in range(20):
        bids, asks = _ladder(seed=seed)
        for side in (bids, asks):
            sizes = [q.qty for q in side]
            third = len(sizes) // 3
            assert sum(sizes[:third]) < sum(sizes[-third:]), sizes
            assert sizes[0] < sizes[-1]
            assert len(set(sizes)) > len(sizes) // 2, sizes  # not all alike
            gaps = [abs(a.price - b.price) for a, b in zip(side, side[1:], strict=False)]
            assert len(set(gaps)) > len(gaps) // 2, gaps  # uneven steps


def test_sizes_are_rounded_the_way_people_type_them() -> None:
    assert quoting.round_significant(10_666, 2) == 11_000
    assert quoting.round_significant(3_449, 2) == 3_400
    assert quoting.round_significant(7, 2) == 7
    assert quoting.round_significant(0, 2) == 0


def test_volatility_is_the_mean_move_between_trades() -> None:
    assert quoting.volatility_ppm([]) == 0
    assert quoting.volatility_ppm([100]) == 0
    assert quoting.volatility_ppm([100, 100, 100]) == 0
    assert quoting.volatility_ppm([100, 101, 100, 101]) == 1 * PPM // 101
    assert quoting.volatility_ppm([100, 110, 100]) > quoting.volatility_ppm([100, 101, 100])


def test_inventory_is_a_clamped_share_of_the_limit() -> None:
    assert quoting.inventory_ppm(0, 100) == 0
    assert quoting.inventory_ppm(50, 100) == 500_000
    assert quoting.inventory_ppm(-500, 100) == -PPM
    assert quoting.inventory_ppm(5, 0) == 0


def test_resume_price_prefers_the_book_then_the_last_trade_then_the_start() -> None:
    assert quoting.resume_price(100_000, 100_010, 99_000, 5) == (100_005, "book mid")
    assert quoting.resume_price(100_000, None, 99_000, 5) == (99_000, "last trade")
    assert quoting.resume_price(None, 100_010, 99_000, 5) == (99_000, "last trade")
    assert quoting.resume_price(None, None, None, 5) == (5, "configured start")
    # a couple of stray orders far apart is not a market: the last trade, inside them, is
    assert quoting.resume_price(50_000, 200_000, 99_000, 5)[0] == 99_000
    assert quoting.resume_price(50_000, 200_000, 10_000, 5)[0] == 50_001
    assert quoting.resume_price(50_000, 200_000, None, 5) == (125_000, "book mid")


class FakeEngine:
    """The engine as the maker's resume sees it: a book and a recent-trade memory."""

    def __init__(self, bids=(), asks=(), last_trade_id=0, trades=()) -> None:
        self.bids, self.asks = list(bids), list(asks)
        self.last_trade_id, self.trades = last_trade_id, list(trades)

    async def wait_available(self, timeout: float) -> None:
        return None

    async def request(self, cmd):
        if isinstance(cmd, SnapshotRequest):
            return BookSnapshot(cmd.req, cmd.market, 1, 0, self.bids, self.asks, self.last_trade_id)
        assert isinstance(cmd, TradesRequest)
        return TradesReply(cmd.req, cmd.market, self.trades, 1 if self.trades else 0)


async def _resumed(engine: FakeEngine, recorder: str, patience: float = 60.0) -> MarketMaker:
    ex = config.load()
    bot = MarketMaker(ex, None, None, Params(recorder_patience=patience), engine, recorder)  # type: ignore[arg-type]
    await bot.resume()
    return bot


def test_resume_takes_the_last_trade_from_the_engine_memory() -> None:
    trades = [Trade(i, MID + 100 * i, 1, 1, 0, i) for i in range(1, 6)]
    bot = asyncio.run(_resumed(FakeEngine(last_trade_id=5, trades=trades), ""))
    assert bot.ref["BTC-USD"] == MID + 500
    assert bot.resumed_from["BTC-USD"] == "last trade"
    assert list(bot.history["BTC-USD"]) == [t.price for t in trades]  # seeds the volatility


def test_resume_after_an_engine_restart_asks_the_recorder() -> None:
    async def body() -> tuple[MarketMaker, list[str]]:
        queries: list[str] = []

        async def sql(request: web.Request) -> web.Response:
            queries.append(await request.text())
            return web.json_response({"columns": ["trade_id", "price_ticks"],
                                      "rows": [[41, MID + 700], [40, MID + 600]]})  # fmt: skip

        app = web.Application()
        app.add_routes([web.post("/sql", sql)])
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            # traded 41 times, but its memory is empty after the restart
            bot = await _resumed(FakeEngine(last_trade_id=41), f"http://127.0.0.1:{port}")
        finally:
            await runner.cleanup()
        return bot, queries

    bot, queries = asyncio.run(body())
    assert bot.ref["BTC-USD"] == MID + 700, bot.resumed_from
    assert list(bot.history["BTC-USD"]) == [MID + 600, MID + 700]
    assert any("'BTC-USD'" in q for q in queries)


def test_resume_waits_for_a_recorder_that_is_not_up_yet() -> None:
    recorder = f"http://127.0.0.1:{free_port()}"  # nothing listens
    bot = asyncio.run(_resumed(FakeEngine(last_trade_id=41), recorder))
    assert "BTC-USD" not in bot.ref  # does not quote a traded market at the configured start
    gave_up = asyncio.run(_resumed(FakeEngine(last_trade_id=41), recorder, patience=0))
    assert gave_up.resumed_from["BTC-USD"] == "configured start"


def _have(quotes) -> dict[str, tuple[int, int]]:
    return {_cid(q): (q.price, q.qty) for q in quotes}


def _cid(q) -> str:
    return f"{q.side}-{q.level}"


def test_plan_sends_nothing_when_the_book_is_as_wanted() -> None:
    bids, asks = _ladder()
    assert quoting.plan(bids + asks, _have(bids + asks), _cid, QuoteParams()) == []


def test_plan_moves_only_the_quotes_that_drifted_too_far() -> None:
    p = QuoteParams()
    bids, asks = _ladder()
    resting = _have(bids + asks)
    moved_bids, moved_asks = _ladder(mid=MID + 3)  # the mid moved 3 ticks (0.06 bp)
    actions = quoting.plan(moved_bids + moved_asks, resting, _cid, p)
    assert {(a.op, a.cid) for a in actions} == {("replace", "buy-0"), ("replace", "sell-0")}
    far_bids, far_asks = _ladder(mid=MID * 101 // 100)  # 1%: everything moves
    assert len(quoting.plan(far_bids + far_asks, resting, _cid, p)) == len(resting)
    # a level that is gone is cancelled, a new one placed, a filled one topped up
    resting["buy-99"] = (1, 1)
    del resting["sell-3"]
    resting["sell-5"] = (resting["sell-5"][0], 1)
    actions = {(a.op, a.cid) for a in quoting.plan(bids + asks, resting, _cid, p)}
    assert actions == {("cancel", "buy-99"), ("place", "sell-3"), ("replace", "sell-5")}


async def _stack(tmp_path: Path) -> tuple[Stack, config.Exchange]:
    path = write_exchange_config(tmp_path / "exchange.toml", pool=0)  # just the shipped markets
    stack = Stack(tmp_path, path)
    await stack.astart_engine()
    await stack.aadd_gateway("gateway")
    return stack, config.load(path)


@async_test
async def test_market_maker_keeps_every_market_two_sided_within_its_balances(tmp_path) -> None:
    stack, ex = await _stack(tmp_path)
    try:
        mm = await stack.funded(USD="1000000", BTC="20", ETH="300")
        noise = await stack.funded(USD="100000", BTC="2", ETH="30")
        maker, taker = await stack.session(mm), await stack.session(noise)
        params = Params(interval=0, cross_probability=1.0, seed=3)
        bot = MarketMaker(ex, maker, taker, params)
        for _ in range(8):
            await bot.tick()

        orders = await maker.request("open_orders")
        for market in ex.markets:
            mine = [o for o in orders if o["market"] == market]
            bids = [Decimal(o["price"]) for o in mine if o["side"] == "buy"]
            asks = [Decimal(o["price"]) for o in mine if o["side"] == "sell"]
            assert len(bids) == len(asks) == params.levels, (market, mine)
            assert max(bids) < min(asks), market  # never crossed (quotes are post-only)

        balances = {b["asset"]: b for b in await maker.request("balances")}
        for asset, b in balances.items():
            total = Decimal(b["available"]) + Decimal(b["locked"])
            assert Decimal(b["locked"]) <= total * Decimal(str(params.balance_fraction)), asset

        assert bot.trades_printed > 0
        assert bot.errors == 0
    finally:
        stack.close()


@async_test
async def test_market_maker_quotes_follow_its_reference_price(tmp_path) -> None:
    stack, ex = await _stack(tmp_path)
    try:
        mm = await stack.funded(USD="1000000", BTC="20", ETH="300")
        maker = await stack.session(mm)
        bot = MarketMaker(ex, maker, None, Params(interval=0, walk_bps=50, seed=11))
        await bot.tick()
        spec = ex.markets["BTC-USD"]
        for _ in range(5):
            await bot.tick()
            ref = bot.ref["BTC-USD"]
            orders = [o for o in await maker.request("open_orders", market="BTC-USD")]
            bids = [spec.price_to_ticks(o["price"]) for o in orders if o["side"] == "buy"]
            asks = [spec.price_to_ticks(o["price"]) for o in orders if o["side"] == "sell"]
            assert max(bids) < ref < min(asks), (ref, bids, asks)
    finally:
        stack.close()


class MarketMakerProc(Proc):
    """``python -m marketmaker`` against a test stack's gateway and engine."""

    def __init__(self, workdir: Path, stack: Stack, credentials: Path) -> None:
        super().__init__("marketmaker", workdir)
        self.stack = stack
        self.credentials = credentials

    def args(self) -> list[str]:
        s = self.stack
        return [
            "--config", str(s.config),
            "--credentials", str(self.credentials),
            "--port", str(s.gateway.port),
            "--commands", s.engine.commands,
            "--market-data", s.engine.market_data,
            "--interval", "0.2",
            "--recorder", "",  # none: the engine remembers every trade of this test
        ]  # fmt: skip


@async_test
async def test_restarted_market_maker_resumes_from_the_market_price(tmp_path) -> None:
    stack, ex = await _stack(tmp_path)
    spec = ex.markets["BTC-USD"]
    engine = EngineClient(stack.engine.commands, b"test-mm-book")
    proc: MarketMakerProc | None = None
    try:
        await engine.start(wait=20)
        mm = await stack.funded(USD="1000000", BTC="20", ETH="300")
        creds = tmp_path / "credentials.json"
        creds.write_text(json.dumps({"mm": {"api_key": mm.key, "secret": mm.secret}}))
        proc = MarketMakerProc(tmp_path / "mm", stack, creds)

        async def top() -> tuple[int | None, int | None]:
            snap = await engine.request(SnapshotRequest(0, "BTC-USD", 1))
            assert isinstance(snap, BookSnapshot)
            return (snap.bids[0][0] if snap.bids else None, snap.asks[0][0] if snap.asks else None)

        async def quoted_around(text: str) -> bool:
            price = spec.price_to_ticks(text)
            bid, ask = await top()
            return bool(bid and ask and bid < price < ask and (ask - bid) * 200 < price)  # 0.5%

        async def run_once(around: str, source: str, left: tuple = (None, None)) -> None:
            assert proc is not None
            proc.spawn()
            await eventually_async(
                lambda: quoted_around(around), 30, 0.1, f"quotes around {around}\n{proc.log()}"
            )
            assert f"BTC-USD: resuming at {around} ({source})" in proc.log(), proc.log()
            assert await asyncio.to_thread(proc.stop) == 0, proc.log()
            # SIGTERM cancels every quote: what is left are other people's orders
            await eventually_async(lambda: _left(top, left), 30, 0.1, "quotes cancelled on stop")

        await run_once("50000.00", "configured start")  # the market never traded

        seller = await stack.session(await stack.funded(BTC="1"))
        buyer = await stack.session(await stack.funded(USD="100000"))
        await seller.request("place", market="BTC-USD", side="sell", price="61234.56", qty="0.01")
        await buyer.request("place", market="BTC-USD", side="buy", price="61234.56", qty="0.01")
        await run_once("61234.56", "last trade")  # not 50000.00 again

        # people's orders 1% apart: a book (its mid is the truth), too wide to pass for quotes
        await buyer.request("place", market="BTC-USD", side="buy", price="69700.00", qty="0.01")
        await seller.request("place", market="BTC-USD", side="sell", price="70400.00", qty="0.01")
        await run_once(
            "70050.00",
            "book mid",
            (spec.price_to_ticks("69700.00"), spec.price_to_ticks("70400.00")),
        )
    finally:
        if proc is not None:
            proc.cleanup()
        await engine.close()
        stack.close()


async def _left(top, wanted: tuple) -> bool:
    return await top() == wanted

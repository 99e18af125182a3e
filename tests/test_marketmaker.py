"""The market maker against the real engine and JSON gateway: two-sided quotes on every market,
never more locked than its balance budget, quotes that follow the price, trades printed."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from marketmaker.bot import MarketMaker, Params
from protocol import config
from tests.fixtures_gateway import Stack, async_test, write_exchange_config


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

"""The market maker: keeps every market two-sided and prints the odd trade so candles form.

It is an ordinary client of the JSON gateway (two sessions: a maker account and a small
"noise" taker account). Every tick, per market:
- the reference price takes a seeded random step, pulled back towards its start so it stays in
  a sane band;
- the maker reconciles its quotes with ``levels`` bids and asks around the reference, each
  identified by a stable client order id: unchanged quotes stay (keeping queue position),
  moved ones are cancel-replaced, missing ones are placed;
- quote sizes are scaled down so the maker never asks for more than a fraction of its
  balances (fetched every few ticks);
- with probability ``cross_probability`` the noise account sends a small market order, which
  trades against the book and prints.
Everything is in integer ticks and lots; decimal strings are made by the market's spec.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

from gateways.json_tcp.client import JsonClient, JsonError
from protocol.config import Exchange, MarketSpec

log = logging.getLogger("marketmaker")


@dataclass
class Params:
    levels: int = 5
    spread_bps: int = 10  # between the best bid and best ask
    step_bps: int = 5  # between levels
    size_lots: int = 0  # 0: 50 x the market's minimum size
    interval: float = 0.5
    walk_bps: int = 8  # random step of the reference per tick (max)
    reversion: float = 0.02  # pull back towards the start each tick
    cross_probability: float = 0.3
    balance_fraction: float = 0.4  # at most this much of each balance locked in quotes
    seed: int = 7
    start_prices: dict[str, str] = field(
        default_factory=lambda: {"BTC-USD": "50000.00", "ETH-USD": "3000.00", "ETH-BTC": "0.06000"}
    )


@dataclass
class Quote:
    side: str
    price: int  # ticks
    qty: int  # lots


class MarketMaker:
    def __init__(
        self,
        ex: Exchange,
        maker: JsonClient,
        taker: JsonClient | None,
        params: Params | None = None,
    ) -> None:
        self.ex = ex
        self.maker = maker
        self.taker = taker
        self.p = params or Params()
        self.rng = random.Random(self.p.seed)
        self.ref: dict[str, int] = {}
        self.start: dict[str, int] = {}
        for sym, spec in ex.markets.items():
            text = self.p.start_prices.get(sym)
            ticks = spec.price_to_ticks(text) if text else spec.max_price // 1000
            self.ref[sym] = self.start[sym] = ticks
        self.balances: dict[str, int] = {}
        self.ticks = 0
        self.trades_printed = 0
        self.errors = 0

    async def run(self, ticks: int | None = None) -> None:
        while ticks is None or self.ticks < ticks:
            await self.tick()
            await asyncio.sleep(self.p.interval)

    async def tick(self) -> None:
        if self.ticks % 10 == 0 or not self.balances:
            try:
                await self.refresh_balances()
            except JsonError as e:  # e.g. 4001 while the engine (re)starts: try next tick
                log.info("balances not available yet: %s", e)
                return
        self.ticks += 1
        for sym, spec in self.ex.markets.items():
            self.walk(sym, spec)
            try:
                await self.reconcile(spec, self.quotes(spec))
                if self.taker is not None and self.rng.random() < self.p.cross_probability:
                    await self.cross(spec)
            except JsonError as e:
                self.errors += 1
                log.warning("%s: %s", sym, e)

    def walk(self, sym: str, spec: MarketSpec) -> None:
        ref = self.ref[sym]
        step = ref * self.rng.randint(-self.p.walk_bps, self.p.walk_bps) // 10_000
        pull = int((self.start[sym] - ref) * self.p.reversion)
        self.ref[sym] = min(spec.max_price, max(1, ref + step + pull))

    def quotes(self, spec: MarketSpec) -> list[Quote]:
        """The quotes wanted now: ``levels`` each side, sized within the balance budget."""
        ref, p = self.ref[spec.symbol], self.p
        half = max(1, ref * p.spread_bps // 20_000)
        step = max(1, ref * p.step_bps // 10_000)
        size = p.size_lots or self.default_size(spec, ref)
        bids = [Quote("buy", ref - half - i * step, size) for i in range(p.levels)]
        asks = [Quote("sell", ref + half + i * step, size) for i in range(p.levels)]
        bids = [q for q in bids if q.price > 0]
        quote_budget = self.balances.get(spec.quote, 0) * p.balance_fraction / len(self.ex.markets)
        base_budget = self.balances.get(spec.base, 0) * p.balance_fraction / len(self.ex.markets)
        need_quote = sum(q.price * q.qty * spec.tick_lot_quote for q in bids)
        need_base = sum(q.qty * spec.lot_units for q in asks)
        for quotes, need, budget in (
            (bids, need_quote, quote_budget),
            (asks, need_base, base_budget),
        ):
            if need > budget:
                scale = budget / need if need else 0
                for q in quotes:
                    q.qty = int(q.qty * scale) // spec.min_qty * spec.min_qty
        return [q for q in bids + asks if q.qty >= spec.min_qty]

    def default_size(self, spec: MarketSpec, ref: int) -> int:
        """Lots per quote: a tenth of what the balance budget allows at every level."""
        share = self.p.balance_fraction / len(self.ex.markets) / (10 * self.p.levels)
        by_quote = self.balances.get(spec.quote, 0) * share // (ref * spec.tick_lot_quote)
        by_base = self.balances.get(spec.base, 0) * share // spec.lot_units
        lots = int(min(by_quote, by_base)) // spec.min_qty * spec.min_qty
        return max(spec.min_qty, min(lots, spec.max_qty))

    async def reconcile(self, spec: MarketSpec, wanted: list[Quote]) -> None:
        sym = spec.symbol
        open_orders = await self.maker.request("open_orders", market=sym)
        have = {o["client_order_id"]: o for o in open_orders}
        ops = []
        keep = set()
        for i, q in enumerate(wanted):
            cid = f"mm-{sym}-{q.side}-{i}"
            keep.add(cid)
            price, qty = spec.price_text(q.price), spec.qty_text(q.qty)
            cur = have.get(cid)
            if cur is None:
                ops.append(
                    self.maker.send(
                        "place",
                        market=sym,
                        side=q.side,
                        price=price,
                        qty=qty,
                        client_order_id=cid,
                        post_only=True,
                    )
                )
            elif cur["price"] != price or cur["qty"] != qty:
                total = spec.qty_text(q.qty + spec.qty_to_lots(cur["cum_qty"]))
                ops.append(
                    self.maker.send(
                        "replace", market=sym, client_order_id=cid, price=price, qty=total
                    )
                )
        ops.extend(
            self.maker.send("cancel", market=sym, client_order_id=cid) for cid in have.keys() - keep
        )
        for result in await asyncio.gather(*ops, return_exceptions=True):
            if isinstance(result, JsonError) and result.code not in (3006, 3008):
                self.errors += 1  # 3006: filled meanwhile; 3008: the book moved under a quote
                log.debug("%s: %s", sym, result)

    async def cross(self, spec: MarketSpec) -> None:
        assert self.taker is not None
        side = "buy" if self.rng.random() < 0.5 else "sell"
        qty = spec.qty_text(spec.min_qty * self.rng.randint(1, 10))
        try:
            reports = await self.taker.request(
                "place", market=spec.symbol, side=side, type="market", qty=qty
            )
        except JsonError as e:
            if e.code in (2001, 3013):  # out of funds, or an empty side: nothing to print
                return
            raise
        self.trades_printed += sum(1 for r in reports if r.get("last_qty"))

    async def refresh_balances(self) -> None:
        rows = await self.maker.request("balances")
        self.balances = {
            r["asset"]: self.ex.amount_to_units(r["asset"], r["available"])
            + self.ex.amount_to_units(r["asset"], r["locked"])
            for r in rows
        }

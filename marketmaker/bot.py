"""The market maker: keeps every market two-sided and prints the odd trade so candles form.

It is an ordinary client of the JSON gateway (two sessions: a maker account and a small
"noise" taker account), plus a read-only view of the engine (``engine``: snapshots and recent
trades, and the live trades a feed passes to ``observe``). Per market:

- on start it resumes from the market's truth (``quoting.resume_price``): the book's mid, else
  the last trade (from the engine's memory, or from the recorder's ClickHouse when the engine
  forgot it across a restart), and only for a market that never traded its configured start
  price; the recent trades seed its volatility. It does not quote a market before it knows
  where it is;
- every tick the reference price takes a seeded random step, pulled back towards where it
  resumed, so it stays in a sane band;
- the wanted book (``quoting.ladder``): ``levels`` bids and asks whose spread widens with the
  recent volatility, whose centre and sizes lean against the maker's inventory (position
  gained since it started), with uneven gaps and sizes that grow with the distance;
- quotes are reconciled with the fewest orders (``quoting.plan``): each level has a stable
  client order id; a resting quote near enough to its wanted price and size stays (keeping
  queue position), others are cancel-replaced or placed, unwanted ones cancelled;
- quote sizes are scaled down so the maker never locks more than a fraction of its balances;
- with probability ``cross_probability`` the noise account sends a small market order, which
  trades against the book and prints.
Everything is in integer ticks and lots; decimal strings are made by the market's spec.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections import deque
from dataclasses import dataclass, field

import aiohttp

from engine.client import EngineClient, EngineError
from gateways.json_tcp.client import JsonClient, JsonError
from marketmaker import quoting
from marketmaker.quoting import PPM, Quote, QuoteParams, Shape
from protocol.config import Exchange, MarketSpec
from protocol.messages import BookSnapshot, SnapshotRequest, Trade, TradesReply, TradesRequest

log = logging.getLogger("marketmaker")

HISTORY = 64  # trade prices per market behind the volatility estimate
ENGINE_WAIT = 5.0  # seconds to wait for the engine's answer before a tick gives up on it


@dataclass
class Params:
    quoting: QuoteParams = field(default_factory=QuoteParams)
    size_lots: int = 0  # first level's size; 0: from the balance budget (default_size)
    depth_share: float = 0.1  # of the per-market balance budget, quoted on each side
    inventory_sizes: int = 20  # full lean at a position of this many first-level sizes
    redraw_probability: float = 0.2  # per tick and market: one level's shape is re-drawn
    interval: float = 0.5
    walk_bps: int = 3  # random step of the reference per tick (max)
    reversion: float = 0.005  # pull back towards where it resumed, each tick
    cross_probability: float = 0.3
    balance_fraction: float = 0.4  # at most this much of each balance locked in quotes
    seed: int = 7
    recorder_patience: float = 60.0  # seconds a traded market waits for its last price
    start_prices: dict[str, str] = field(
        default_factory=lambda: {"BTC-USD": "50000.00", "ETH-USD": "3000.00", "ETH-BTC": "0.06000"}
    )

    @property
    def levels(self) -> int:
        return self.quoting.levels


class MarketMaker:
    def __init__(
        self,
        ex: Exchange,
        maker: JsonClient,
        taker: JsonClient | None,
        params: Params | None = None,
        engine: EngineClient | None = None,
        recorder: str = "",
    ) -> None:
        self.ex = ex
        self.maker = maker
        self.taker = taker
        self.engine = engine  # None: no view of the engine, start from the configured prices
        self.recorder = recorder  # the recorder's query API, for trades the engine forgot
        self.waiting_since: dict[str, float] = {}
        self.p = params or Params()
        self.rng = random.Random(self.p.seed)
        self.ref: dict[str, int] = {}
        self.anchor: dict[str, int] = {}
        self.configured: dict[str, int] = {}
        for sym, spec in ex.markets.items():
            text = self.p.start_prices.get(sym)
            self.configured[sym] = spec.price_to_ticks(text) if text else spec.max_price // 1000
        self.resumed_from: dict[str, str] = {}
        self.history: dict[str, deque[int]] = {m: deque(maxlen=HISTORY) for m in ex.markets}
        self.last_trade_id: dict[str, int] = dict.fromkeys(ex.markets, 0)
        self.shapes = {m: Shape.draw(self.rng, self.p.quoting) for m in ex.markets}
        self.balances: dict[str, int] = {}
        self.start_balances: dict[str, int] = {}
        self.ticks = 0
        self.trades_printed = 0
        self.orders_sent = 0
        self.errors = 0

    # ------------------------------------------------------------------ the truth
    async def resume(self) -> bool:
        """Take each market's price from the engine (or the configured start without one)."""
        for sym in self.ex.markets:
            if sym in self.ref:
                continue
            if self.engine is None:
                price, source = self.configured[sym], "configured start (no engine view)"
            else:
                try:
                    await self.engine.wait_available(ENGINE_WAIT)
                    truth = await self._truth(sym)
                except EngineError as e:
                    log.info("%s: engine not answering yet (%s); not quoting it yet", sym, e)
                    continue
                if truth is None:
                    continue
                price, source = truth
            self.ref[sym] = self.anchor[sym] = price
            self.resumed_from[sym] = source
            log.info("%s: resuming at %s (%s)", sym, self.ex.markets[sym].price_text(price), source)
        return len(self.ref) == len(self.ex.markets)

    async def _truth(self, sym: str) -> tuple[int, str] | None:
        """The market's price now (``quoting.resume_price``), or None while it traded but no
        one can say at what price yet (the engine forgot its trades across a restart and the
        recorder is not answering): the maker waits ``recorder_patience`` seconds for it."""
        assert self.engine is not None
        snap = await self.engine.request(SnapshotRequest(0, sym, depth=1))
        assert isinstance(snap, BookSnapshot), snap
        last_id = snap.last_trade_id
        if last_id:
            first = max(1, last_id - HISTORY + 1)
            reply = await self.engine.request(TradesRequest(0, sym, first, HISTORY))
            assert isinstance(reply, TradesReply), reply
            self.observe(sym, reply.trades)
        if last_id and not self.history[sym] and self.recorder:
            try:
                self.observe(sym, await recorded_trades(self.recorder, sym, HISTORY))
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as e:
                now = asyncio.get_running_loop().time()
                why = f"{e.__class__.__name__}: {e}"[:200]
                if sym not in self.waiting_since:
                    self.waiting_since[sym] = now
                    log.info("%s: traded; waiting for the recorder's last price (%s)", sym, why)
                if now - self.waiting_since[sym] < self.p.recorder_patience:
                    return None
                log.warning("%s: no trade price from the engine or the recorder: %s", sym, why)
        last = self.history[sym][-1] if self.history[sym] else None
        bid = snap.bids[0][0] if snap.bids else None
        ask = snap.asks[0][0] if snap.asks else None
        return quoting.resume_price(bid, ask, last, self.configured[sym])

    def observe(self, market: str, trades: list[Trade]) -> None:
        """Trades of ``market`` (from the feed or the engine), each counted once."""
        history = self.history.get(market)
        if history is None:
            return
        for t in trades:
            if t.trade_id > self.last_trade_id[market]:
                self.last_trade_id[market] = t.trade_id
                history.append(t.price)

    # ------------------------------------------------------------------ the loop
    async def run(self, ticks: int | None = None) -> None:
        while ticks is None or self.ticks < ticks:
            await self.tick()
            await asyncio.sleep(self.p.interval)

    async def tick(self) -> None:
        if not await self.resume() and not self.ref:
            return
        try:
            await self.refresh_balances()
        except JsonError as e:  # e.g. 4001 while the engine (re)starts: try next tick
            log.info("balances not available yet: %s", e)
            return
        self.ticks += 1
        for sym, spec in self.ex.markets.items():
            if sym not in self.ref:
                continue
            self.walk(sym, spec)
            if self.rng.random() < self.p.redraw_probability:
                self.shapes[sym].redraw(self.rng, self.p.quoting)
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
        pull = int((self.anchor[sym] - ref) * self.p.reversion)
        self.ref[sym] = min(spec.max_price, max(1, ref + step + pull))

    # ------------------------------------------------------------------ the book
    def inventory_ppm(self, spec: MarketSpec, size: int) -> int:
        """The position in the market's base gained since the maker started, as a lean."""
        gained = self.balances.get(spec.base, 0) - self.start_balances.get(spec.base, 0)
        return quoting.inventory_ppm(gained // spec.lot_units, self.p.inventory_sizes * size)

    def quotes(self, spec: MarketSpec) -> list[Quote]:
        """The quotes wanted now, sized within the balance budget."""
        ref, p = self.ref[spec.symbol], self.p
        size = p.size_lots or self.default_size(spec, ref)
        wanted = quoting.ladder(
            ref,
            size,
            self.inventory_ppm(spec, size),
            quoting.volatility_ppm(list(self.history[spec.symbol])),
            self.shapes[spec.symbol],
            p.quoting,
            min_qty=spec.min_qty,
            max_qty=spec.max_qty,
            max_price=spec.max_price,
        )
        bids = [q for q in wanted if q.side == quoting.BUY]
        asks = [q for q in wanted if q.side == quoting.SELL]
        share = p.balance_fraction / len(self.ex.markets)
        for quotes, need, budget in (
            (bids, sum(q.price * q.qty * spec.tick_lot_quote for q in bids),
             self.balances.get(spec.quote, 0) * share),
            (asks, sum(q.qty * spec.lot_units for q in asks),
             self.balances.get(spec.base, 0) * share),
        ):  # fmt: skip
            if need > budget:
                scale_ppm = int(budget * PPM // need) if need else 0
                for q in quotes:
                    q.qty = quoting.round_significant(q.qty * scale_ppm // PPM, 2)
        return [q for q in bids + asks if q.qty >= spec.min_qty]

    def default_size(self, spec: MarketSpec, ref: int) -> int:
        """First level's lots: the ladder of one side uses ``depth_share`` of the budget."""
        qp = self.p.quoting
        weights = sum(PPM + i * qp.size_growth_ppm for i in range(qp.levels)) / PPM
        share = self.p.balance_fraction / len(self.ex.markets) * self.p.depth_share / weights
        by_quote = self.balances.get(spec.quote, 0) * share // (ref * spec.tick_lot_quote)
        by_base = self.balances.get(spec.base, 0) * share // spec.lot_units
        lots = int(min(by_quote, by_base))
        return max(spec.min_qty, min(lots, spec.max_qty))

    @staticmethod
    def cid(spec: MarketSpec, q: Quote) -> str:
        return f"mm-{spec.symbol}-{q.side}-{q.level}"

    async def reconcile(self, spec: MarketSpec, wanted: list[Quote]) -> None:
        sym = spec.symbol
        open_orders = await self.maker.request("open_orders", market=sym)
        rows = {o["client_order_id"]: o for o in open_orders if o["client_order_id"]}
        have = {
            cid: (spec.price_to_ticks(o["price"]), spec.qty_to_lots(o["leaves_qty"]))
            for cid, o in rows.items()
        }
        ops = []
        for a in quoting.plan(wanted, have, lambda q: self.cid(spec, q), self.p.quoting):
            q = a.quote
            if a.op == "place":
                assert q is not None
                ops.append(
                    self.maker.send(
                        "place",
                        market=sym,
                        side=q.side,
                        price=spec.price_text(q.price),
                        qty=spec.qty_text(q.qty),
                        client_order_id=a.cid,
                        post_only=True,
                    )
                )
            elif a.op == "replace":
                assert q is not None
                total = spec.qty_text(q.qty + spec.qty_to_lots(rows[a.cid]["cum_qty"]))
                ops.append(
                    self.maker.send(
                        "replace",
                        market=sym,
                        client_order_id=a.cid,
                        price=spec.price_text(q.price),
                        qty=total,
                    )
                )
            else:
                ops.append(self.maker.send("cancel", market=sym, client_order_id=a.cid))
        self.orders_sent += len(ops)
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
        if not self.start_balances:
            self.start_balances = dict(self.balances)


async def recorded_trades(url: str, market: str, n: int) -> list[Trade]:
    """The last ``n`` trades of ``market`` in ClickHouse, oldest first, through the recorder's
    read-only SQL API (``POST /sql``); only trade id and price are filled in."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", market):
        raise ValueError(f"not a market symbol: {market!r}")
    query = (
        "SELECT trade_id, price_ticks FROM trades"  # noqa: S608 - a checked symbol
        f" WHERE market = '{market}' ORDER BY trade_id DESC LIMIT {int(n)}"
    )
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.post(f"{url.rstrip('/')}/sql", data=query) as r,
    ):
        body = await r.json()
        if r.status != 200:
            raise ValueError(f"recorder answered {r.status}: {body}")
    return [Trade(int(tid), int(price), 0, 0, 0, 0) for tid, price in reversed(body["rows"])]

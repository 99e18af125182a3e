"""The recorder: every trade the engine makes, in ClickHouse exactly once.

How nothing is lost or doubled:
- The source of truth for what to write is the engine's per-market recent-trade memory
  (``TradesRequest``): trade ids are contiguous per market for the life of the exchange, so the
  recorder asks for "everything after the last id I have" and cannot miss one, whatever the
  PUB feed dropped. The PUB feed only says *when* to ask (and carries best bid/offer history).
- At start (and after any failed insert) the last id per market is read back from ClickHouse,
  and only newer trades are inserted; each batch is one INSERT, atomic in MergeTree. A crash
  between insert and acknowledgement therefore re-reads, never re-inserts.
- ClickHouse away: rows stay buffered, inserts retry with exponential backoff, then catch up.
  Trades never exceed ``max_buffer`` rows (the rows being inserted included): pulls ask for at
  most what still fits and pause when it is full, and the engine keeps the rest (its last
  ``recent_trades_kept`` per market); none is dropped here. Best bid/offer rows are history that
  newer rows supersede: at most ``max_bbo_buffer`` wait (a failed insert puts its rows back);
  beyond it the oldest are dropped and counted in ``bbo_dropped`` (rule 7: bounded, counted).
  A bbo retry after a lost acknowledgement may write rows twice: history, not money.
- A gap older than the engine's memory (the recorder was down for more than its last 200,000
  trades of a market) cannot be filled from the engine and is counted in ``unrecoverable``
  and logged with its id range.

Query path: chDB lives inside this process, so the recorder answers kline and trade queries
(for the bridge and the CLI) and read-only SQL over HTTP; with a ClickHouse server, the same
code runs and anyone may also query the server directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

import msgspec
from aiohttp import web

from engine.client import EngineClient, EngineError
from feed.subscriber import Feed
from protocol import messages as M
from protocol.config import Exchange
from protocol.metrics import Exporter
from recorder.store import Store

log = logging.getLogger("recorder")

PULL_LIMIT = 100_000
BBO_BATCH = 10_000  # best bid/offer rows that make an insert due


class Metrics(msgspec.Struct):
    trades_written: int = 0
    inserts: int = 0
    insert_failures: int = 0
    buffered: int = 0
    bbo_written: int = 0
    bbo_buffered: int = 0
    bbo_dropped: int = 0  # oldest rows dropped while inserts failed (max_bbo_buffer reached)
    unrecoverable: int = 0
    lag_ms_last: float = 0.0  # engine trade time -> row committed, of the newest batch
    clickhouse_ok: bool = False


class Recorder:
    def __init__(
        self,
        ex: Exchange,
        store: Store,
        accounts: list[tuple[int, str, str]] | None = None,
        account_source: Callable[[], list[tuple[int, str, str]]] | None = None,
    ) -> None:
        self.ex = ex
        self.cfg = ex.recorder
        self.store = store
        self.accounts = accounts or []
        # re-read every accounts_every seconds; rows not copied yet go to ClickHouse
        self.account_source = account_source
        self.accounts_copied: set[tuple[int, str, str]] = set()
        self.accounts_pending: list[tuple[int, str, str]] = []  # written by the next flush
        self.metrics = Metrics()
        self.engine = EngineClient.for_exchange(ex, self.cfg.identity, timeout=10)
        self.feed = Feed.for_exchange(
            ex,
            name=self.cfg.identity,
            kinds=("trades", "bbo"),
            on_trades=self.on_trades,
            tickers=False,
            on_bbo=self.on_bbo,
        )
        self.written: dict[str, int] = {}  # last trade id in ClickHouse, per market
        self.pulled: dict[str, int] = {}  # last trade id buffered, per market
        self.rows: list[list] = [[] for _ in range(10)]  # column-oriented buffer
        self.inserting = 0  # trade rows of the insert in progress (still counted as buffered)
        self.bbo_rows: deque[list] = deque(maxlen=self.cfg.max_bbo_buffer)  # oldest go first
        self.wake = asyncio.Event()
        self.stopping = False
        self.oldest_buffered = 0.0
        self.exporter = Exporter("recorder")  # GET /metrics; the same counters as JSON: /stats
        self.exporter.add(self.metrics, gauges=("buffered", "bbo_buffered"))
        self.exporter.add(self.feed.stats, prefix="feed_")
        self.exporter.add(lambda: {"engine_available": self.engine.available}, what="EngineClient")

    # ----------------------------------------------------------------- lifecycle
    def prepare(self) -> None:
        applied = self.store.migrate()
        if applied:
            log.info("applied schema migrations %s", applied)
        self.store.sync_markets(self.ex)
        self.copy_accounts(self.accounts)
        self.written = {m: 0 for m in self.ex.markets} | self.store.last_trade_ids()
        self.pulled = dict(self.written)
        self.metrics.clickhouse_ok = True
        log.info("ClickHouse %s ready; last trade ids %s", self.store.url, self.written)

    async def run(self) -> None:
        await self.engine.start(wait=None)
        await self.feed.start(wait=None)
        tasks = [asyncio.ensure_future(self.pull_loop()), asyncio.ensure_future(self.flush_loop())]
        if self.account_source is not None:
            tasks.append(asyncio.ensure_future(self.accounts_loop()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        with contextlib.suppress(Exception):
            await self.flush(final=True)
        await self.feed.close()
        await self.engine.close()

    def copy_accounts(self, rows: list[tuple[int, str, str]]) -> None:
        """Insert the account rows not copied yet (new accounts, renames)."""
        new = [r for r in rows if r not in self.accounts_copied]
        if new:
            self.store.sync_accounts(new)
            self.accounts_copied.update(new)

    async def accounts_loop(self) -> None:
        """Accounts created while the recorder runs reach the accounts table within
        ``accounts_every`` seconds (the table is a ReplacingMergeTree: a rename replaces).
        The rows are written by flush(), so ClickHouse is written from one place at a time."""
        assert self.account_source is not None
        loop = asyncio.get_running_loop()
        while not self.stopping:
            await asyncio.sleep(self.cfg.accounts_every)
            try:
                rows = await loop.run_in_executor(None, self.account_source)
            except Exception as e:
                log.warning("reading the account store failed: %s", e)
                continue
            known = self.accounts_copied.union(self.accounts_pending)
            self.accounts_pending += [r for r in rows if r not in known]

    # --------------------------------------------------------------------- input
    def on_trades(self, market: str, trades: list[M.Trade]) -> None:
        if trades and trades[-1].trade_id > self.pulled.get(market, 0):
            self.wake.set()

    def on_bbo(self, b: M.Bbo) -> None:
        rows = self.bbo_rows
        if len(rows) == rows.maxlen:
            self.metrics.bbo_dropped += 1  # the deque drops the oldest row to take this one
        rows.append([b.market, b.ts, b.bid_price, b.bid_qty, b.ask_price, b.ask_qty])
        self.metrics.bbo_buffered = len(rows)

    async def pull_loop(self) -> None:
        """Ask the engine for every trade after the last one buffered, whenever the feed says
        there are new ones (and once a second regardless)."""
        while not self.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 1.0)
            self.wake.clear()
            for market in self.ex.markets:
                try:
                    while await self.pull(market):
                        pass
                except EngineError as e:
                    log.debug("pull %s: %s", market, e)

    async def pull(self, market: str) -> bool:
        """One TradesRequest for at most what the buffer still holds; True if there may be
        more. A full buffer pulls nothing: ClickHouse is behind, the engine keeps the trades."""
        room = min(PULL_LIMIT, self.cfg.max_buffer - self.buffered())
        if room <= 0:
            return False
        after = self.pulled[market]
        reply = await self.engine.request(M.TradesRequest(0, market, after + 1, room))
        if not isinstance(reply, M.TradesReply):
            return False
        if reply.trades and reply.trades[0].trade_id > after + 1:
            lost = reply.trades[0].trade_id - after - 1
            self.metrics.unrecoverable += lost
            log.error(
                "%s: trades %d..%d are older than the engine's memory and were not recorded",
                market,
                after + 1,
                reply.trades[0].trade_id - 1,
            )
        self.buffer(market, reply.trades, reply.accounts)
        return len(reply.trades) == room

    def buffer(self, market: str, trades: list[M.Trade], accounts: list[tuple[int, int]]) -> None:
        tlq = self.ex.markets[market].tick_lot_quote
        last = self.pulled[market]
        cols = self.rows
        for t, (maker, taker) in zip(trades, accounts, strict=True):
            if t.trade_id <= last:
                continue
            for col, value in zip(
                cols,
                (
                    market,
                    t.trade_id,
                    t.ts,
                    t.price,
                    t.qty,
                    t.price * t.qty * tlq,
                    t.taker_side,
                    maker,
                    taker,
                    t.seq,
                ),
                strict=True,
            ):
                col.append(value)
            last = t.trade_id
        if last != self.pulled[market]:
            if not self.oldest_buffered:
                self.oldest_buffered = time.monotonic()
            self.pulled[market] = last
            self.metrics.buffered = self.buffered()

    def buffered(self) -> int:
        return len(self.rows[0]) + self.inserting

    # -------------------------------------------------------------------- output
    async def flush_loop(self) -> None:
        pause = 0.1
        while not self.stopping:
            await asyncio.sleep(self.cfg.batch_ms / 1000 / 4)
            due = self.oldest_buffered and (
                time.monotonic() - self.oldest_buffered >= self.cfg.batch_ms / 1000
            )
            if (
                self.buffered() >= self.cfg.batch_rows
                or due
                or len(self.bbo_rows) >= min(BBO_BATCH, self.cfg.max_bbo_buffer)
                or self.accounts_pending
            ):
                if await self.flush():
                    pause = 0.1
                else:
                    await asyncio.sleep(pause)  # ClickHouse away: back off, keep the rows
                    pause = min(5.0, pause * 2)

    async def flush(self, final: bool = False) -> bool:
        loop = asyncio.get_running_loop()
        if self.rows[0]:
            rows, self.rows = self.rows, [[] for _ in range(10)]
            self.inserting = len(rows[0])
            try:
                await loop.run_in_executor(None, self.insert, rows)
            except Exception as e:
                self.metrics.insert_failures += 1
                self.metrics.clickhouse_ok = False
                log.warning("insert of %d trades failed (%s); will retry", len(rows[0]), e)
                self.rows = [old + new for old, new in zip(rows, self.rows, strict=True)]
                return False
            finally:
                self.inserting = 0
                self.metrics.buffered = self.buffered()
        if self.bbo_rows:
            bbo = list(self.bbo_rows)
            self.bbo_rows.clear()
            try:
                await loop.run_in_executor(None, self.store.insert_bbo, bbo)
                self.metrics.bbo_written += len(bbo)
            except Exception as e:
                log.warning("bbo insert of %d rows failed (%s); will retry", len(bbo), e)
                self.requeue_bbo(bbo)
                return False
            finally:
                self.metrics.bbo_buffered = len(self.bbo_rows)
        if self.accounts_pending:
            accounts = self.accounts_pending
            try:
                await loop.run_in_executor(None, self.copy_accounts, accounts)
            except Exception as e:
                log.warning("accounts insert failed: %s", e)
                return False
            self.accounts_pending = self.accounts_pending[len(accounts) :]
            log.info("accounts: %d new or renamed, copied to ClickHouse", len(accounts))
        return True

    def requeue_bbo(self, failed: list[list]) -> None:
        """Put the rows of a failed insert back before those that came meanwhile, within the
        bound: the oldest beyond ``max_bbo_buffer`` are dropped and counted."""
        newer = list(self.bbo_rows)
        keep = self.cfg.max_bbo_buffer - len(newer)
        self.metrics.bbo_dropped += max(0, len(failed) - keep)
        self.bbo_rows.clear()
        if keep > 0:
            self.bbo_rows.extend(failed[max(0, len(failed) - keep) :])
        self.bbo_rows.extend(newer)

    def insert(self, rows: list[list]) -> None:
        """Insert what ClickHouse does not have yet (it is re-read after any failure)."""
        if not self.metrics.clickhouse_ok:
            self.written = {m: 0 for m in self.ex.markets} | self.store.last_trade_ids()
            keep = [
                i
                for i, (m, tid) in enumerate(zip(rows[0], rows[1], strict=True))
                if tid > self.written.get(m, 0)
            ]
            rows = [[col[i] for i in keep] for col in rows]
        if rows[0]:
            self.store.insert_trades(rows)
        self.metrics.clickhouse_ok = True
        for m, tid in zip(rows[0], rows[1], strict=True):
            if tid > self.written.get(m, 0):
                self.written[m] = tid
        n = len(rows[0])
        self.metrics.trades_written += n
        self.metrics.inserts += 1
        self.metrics.buffered = self.buffered()
        if n:
            self.metrics.lag_ms_last = (time.time_ns() - max(rows[2])) / 1e6
        self.oldest_buffered = time.monotonic() if self.rows[0] else 0.0

    # ---------------------------------------------------------------------- HTTP
    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/klines", self.http_klines),
                web.get("/trades", self.http_trades),
                web.post("/sql", self.http_sql),
                web.get("/health", self.http_health),
                web.get("/metrics", self.http_metrics),
                web.get("/stats", self.http_stats),
            ]
        )
        return app

    async def http_klines(self, request: web.Request) -> web.Response:
        q = request.query
        market = q.get("market", "")
        if market not in self.ex.markets:
            return _error(f"unknown market {market!r}; markets: {list(self.ex.markets)}")
        try:
            start, end = int(q.get("start", 0)), int(q.get("end", 2**40))
            limit = int(q.get("limit", 500))
            candles = await asyncio.get_running_loop().run_in_executor(
                None, self.store.klines, market, q.get("interval", "1m"), start, end, limit
            )
        except ValueError as e:  # QueryError is a ValueError too
            return _error(str(e))
        return web.json_response([vars(c) for c in candles])

    async def http_trades(self, request: web.Request) -> web.Response:
        """``/trades?market=M&since=NS&after_id=N&limit=L``: ``{"last_id", "trades"}`` (see
        ``Store.trades_after``); the bridge seeds its 24h ticker and candles with it."""
        q = request.query
        market = q.get("market", "")
        if market not in self.ex.markets:
            return _error(f"unknown market {market!r}; markets: {list(self.ex.markets)}")
        try:
            since, after = int(q.get("since", 0)), int(q.get("after_id", 0))
            limit = int(q.get("limit", 10_000))
            last, rows = await asyncio.get_running_loop().run_in_executor(
                None, self.store.trades_after, market, since, after, limit
            )
        except ValueError as e:  # QueryError is a ValueError too
            return _error(str(e))
        return web.Response(
            body=msgspec.json.encode({"last_id": last, "trades": rows}),
            content_type="application/json",
        )

    async def http_sql(self, request: web.Request) -> web.Response:
        query = await request.text()
        try:
            cols, rows = await asyncio.get_running_loop().run_in_executor(
                None, self.store.sql, query
            )
        except Exception as e:
            return _error(str(e).splitlines()[0][:500])
        return web.Response(
            body=msgspec.json.encode({"columns": cols, "rows": rows}),
            content_type="application/json",
        )

    async def http_health(self, request: web.Request) -> web.Response:
        ok = self.metrics.clickhouse_ok
        return web.json_response(
            {"ok": ok, "engine": self.engine.available, "last_ids": self.written},
            status=200 if ok else 503,
        )

    async def http_metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.exporter.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def http_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=msgspec.json.encode(self.metrics), content_type="application/json")


def _error(text: str) -> web.Response:
    return web.json_response({"error": text}, status=400)

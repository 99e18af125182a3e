"""Each market's trade history as the bridge shows it: the recent trades, the rolling 24h
ticker and the candles, seeded from the truth when the bridge starts, then continued live with
every trade counted exactly once.

The truth is the recorder's ClickHouse (every trade, through the recorder's ``/trades`` query)
and the engine's recent-trade memory (``TradesRequest``: the newest trades, including those the
recorder has not written yet). Trade ids are contiguous per market for the life of the
exchange, so "exactly once" is a matter of ids:

- Seed (at the first book sync of the market): every trade of the last 24 hours from the
  recorder, then from the engine every trade after the recorder's last one (and the newest
  ``recent`` trades, for the recent-trades list). Without a recorder (not configured, or not
  reachable within ``RECORDER_WAIT`` seconds) all that the engine remembers, and the log says
  whether the 24h figures are complete or partial.
- Live: a trade of the feed is applied if its id is the next one. Trades that skip ids (the
  PUB socket dropped a message) make the market fetch the missing ids from the engine first;
  while a seed or such a catch-up runs, live trades wait (bounded: the oldest are dropped
  beyond ``MAX_WAITING``, and fetched again from the engine like any other gap).
- Every later book (re)sync, an engine restart included, compares the engine's last trade id
  with ours and catches up if the engine is ahead.

Known limit: an exchange whose trade ids start again from 1 (its data directory deleted while
the bridge runs) needs a bridge restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.client import EngineClient, EngineError
from feed.book import DAY_NS, Ticker24h
from feed.candles import Candle, CandleBook
from protocol.config import Exchange
from protocol.messages import Trade, TradesReply, TradesRequest

log = logging.getLogger("feed.bridge")

ENGINE_PAGE = 10_000  # trades per TradesRequest (the engine answers at most 100,000)
RECORDER_PAGE = 50_000  # trades per recorder /trades query
RECORDER_WAIT = 10.0  # seconds a seed waits for an unreachable recorder (it may be starting)
MAX_WAITING = 100_000  # live trades kept per market while a seed or catch-up runs

# (path, query) -> (HTTP status, body bytes); status 0 when the recorder is unreachable
RecorderGet = Callable[[str, dict[str, Any]], Awaitable[tuple[int, bytes]]]
# (market, trades, candles they changed, live): live False for a seed (history, not news)
Applied = Callable[[str, list[Trade], dict[str, Candle], bool], None]


class _Window(msgspec.Struct):
    last_id: int
    trades: list[Trade]


@dataclass
class Tape:
    """One market's history and where it stands."""

    market: str
    ticker: Ticker24h
    candles: CandleBook
    recent: deque[Trade]
    last_id: int = 0  # the newest trade applied
    seeded: bool = False
    busy: bool = False  # a seed or catch-up is running; live trades wait in ``waiting``
    again: bool = False  # a resync asked for a catch-up while one was running
    waiting: list[Trade] = field(default_factory=list)
    complete: bool = False  # the 24h figures hold every trade of the window
    engine_last_id: int = 0  # the engine's last trade id at the latest book sync


class History:
    def __init__(
        self,
        ex: Exchange,
        engine: EngineClient,
        recorder: RecorderGet | None,
        recent: int,
        applied: Applied,
    ) -> None:
        self.engine = engine
        self.recorder = recorder
        self.recent = recent
        self.applied = applied
        self.tapes = {
            m: Tape(
                m,
                Ticker24h(m, s.tick_lot_quote),
                CandleBook(m, s.tick_lot_quote),
                deque(maxlen=recent),
            )
            for m, s in ex.markets.items()
        }
        self.tasks: set[asyncio.Task] = set()
        self._window = msgspec.json.Decoder(_Window)

    def seeded(self) -> bool:
        return all(t.seeded for t in self.tapes.values())

    # ------------------------------------------------------------------ events
    def live(self, market: str, trades: list[Trade]) -> None:
        """Trades from the feed, in id order."""
        tape = self.tapes[market]
        fresh = [t for t in trades if t.trade_id > tape.last_id]
        if not fresh:
            return
        if tape.busy or not tape.seeded:
            tape.waiting += fresh
            if len(tape.waiting) > MAX_WAITING:  # bounded; the drain sees the gap and fetches
                del tape.waiting[: len(tape.waiting) // 2]
            return
        if fresh[0].trade_id != tape.last_id + 1:
            log.info(
                "%s: trades %d..%d missing from the feed: fetching them from the engine",
                market,
                tape.last_id + 1,
                fresh[0].trade_id - 1,
            )
            tape.waiting = fresh
            self._start(tape)
            return
        self._apply(tape, fresh)

    def resynced(self, market: str, engine_last_id: int) -> None:
        """The market's book was (re)synced from a snapshot that carried the engine's last
        trade id: seed the first time, afterwards catch up if the engine is ahead."""
        tape = self.tapes[market]
        tape.engine_last_id = engine_last_id
        if not tape.seeded or engine_last_id > tape.last_id:
            self._start(tape)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # ----------------------------------------------------------------- running
    def _start(self, tape: Tape) -> None:
        if tape.busy:
            tape.again = True
            return
        tape.busy = True
        task = asyncio.ensure_future(self._run(tape))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, tape: Tape) -> None:
        try:
            while True:
                tape.again = False
                if tape.seeded:
                    await self._catch_up(tape)
                else:
                    await self._seed(tape)
                if self._drain(tape) and not tape.again:
                    break
        except Exception:  # a bug: go on live rather than never becoming healthy
            log.exception("%s: seeding or catching up trades failed", tape.market)
            tape.seeded = True
        finally:
            tape.busy = False

    def _drain(self, tape: Tape) -> bool:
        """Apply the live trades that waited; False if they do not follow on (fetch first)."""
        waiting, tape.waiting = tape.waiting, []
        fresh = [t for t in waiting if t.trade_id > tape.last_id]
        if fresh and fresh[0].trade_id != tape.last_id + 1:
            tape.waiting = fresh
            return False
        if fresh:
            self._apply(tape, fresh)
        return True

    def _apply(self, tape: Tape, trades: list[Trade], live: bool = True) -> None:
        """Fold trades in; ``live`` ones are news for the subscribers, seeded ones history."""
        changed: dict[str, Candle] = {}
        for t in trades:
            tape.ticker.add(t)
            changed.update(tape.candles.add(t))
        tape.recent.extend(trades)
        tape.last_id = trades[-1].trade_id
        if live:
            self.applied(tape.market, trades, changed, True)

    # ------------------------------------------------------------------ sources
    async def _catch_up(self, tape: Tape) -> None:
        trades = await self._engine_trades(tape.market, tape.last_id + 1)
        if trades and trades[0].trade_id > tape.last_id + 1:
            log.warning(
                "%s: trades %d..%d are older than the engine's memory: not shown",
                tape.market,
                tape.last_id + 1,
                trades[0].trade_id - 1,
            )
        if trades:
            self._apply(tape, trades)

    async def _seed(self, tape: Tape) -> None:
        market = tape.market
        now = time.time_ns()
        cutoff = now - DAY_NS
        window = await self._recorded(market, cutoff)
        base, recorded_last = (window.trades, window.last_id) if window else ([], 0)
        tail = await self._engine_trades(market, max(1, recorded_last + 1 - self.recent))
        trades = base + [t for t in tail if t.trade_id > (base[-1].trade_id if base else 0)]
        if window is not None:
            joined = not tail or tail[0].trade_id <= recorded_last + 1
            covered = cutoff if joined else tail[0].ts  # every trade after this is here
        else:
            covered = tail[0].ts if tail else now
        if (trades[0].trade_id if trades else tape.engine_last_id + 1) == 1:
            covered = 0  # the exchange's whole history (or no trade yet)
        tape.complete = covered <= cutoff
        if trades:
            self._apply(tape, trades, live=False)
        tape.ticker.expire(now)
        tape.candles.forget_through(covered)  # older candles may lack trades
        # trades up to the engine's last id at the sync that neither source has are gone
        tape.last_id = max(tape.last_id, recorded_last, tape.engine_last_id)
        tape.seeded = True
        view = tape.ticker.view(now)
        log.info(
            "%s: seeded from %s: %d trades in the last 24h (%s), last trade id %d",
            market,
            "the recorder and the engine" if window else "the engine only",
            view.trades,
            "complete" if tape.complete else "PARTIAL",
            tape.last_id,
        )
        if not tape.complete:
            log.warning(
                "%s: the 24h figures are partial: %s; they hold the trades since %s",
                market,
                "no recorder" if window is None else "the recorder is behind the engine",
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(covered / 1e9)),
            )
        self.applied(market, [], {}, False)

    async def _recorded(self, market: str, cutoff: int) -> _Window | None:
        """Every trade of ``market`` after ``cutoff`` (ns) in ClickHouse, with the recorder's
        last trade id; None without a recorder."""
        if self.recorder is None:
            return None
        loop = asyncio.get_running_loop()
        give_up = loop.time() + RECORDER_WAIT
        out = _Window(0, [])
        after = 0
        while True:
            query = {"market": market, "since": cutoff, "after_id": after, "limit": RECORDER_PAGE}
            status, body = await self.recorder("/trades", query)
            if status == 0 and not out.trades and loop.time() < give_up:
                await asyncio.sleep(0.2)  # not reachable (yet): it may be starting with us
                continue
            if status != 200:
                log.warning("%s: recorder /trades answered %s: %s", market, status, body[:200])
                return None
            try:
                page = self._window.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                log.warning("%s: recorder /trades sent what this bridge cannot read: %s", market, e)
                return None
            out.last_id = max(out.last_id, page.last_id)
            out.trades += page.trades
            if len(page.trades) < RECORDER_PAGE:
                return out
            after = page.trades[-1].trade_id

    async def _engine_trades(self, market: str, from_id: int) -> list[Trade]:
        """The engine's remembered trades of ``market`` from ``from_id`` on (the oldest it
        still has, if that is later). Waits for the engine when it is away."""
        out: list[Trade] = []
        pause = 0.05
        while True:
            try:
                reply = await self.engine.request(TradesRequest(0, market, from_id, ENGINE_PAGE))
            except EngineError as e:
                log.debug("%s: engine trades not available yet (%s)", market, e)
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)
                continue
            if not isinstance(reply, TradesReply):
                log.warning("%s: engine answered %r to a TradesRequest", market, reply)
                return out
            out += reply.trades
            if len(reply.trades) < ENGINE_PAGE:
                return out
            from_id = reply.trades[-1].trade_id + 1

"""Subscriber library for the engine's ZeroMQ market data.

    feed = Feed("tcp://127.0.0.1:7002", "tcp://127.0.0.1:7001", markets=["BTC-USD"],
                on_trades=lambda market, trades: print(market, trades))
    await feed.start()
    feed.books["BTC-USD"].best_bid()      # a local L2 book, always in sync or resyncing
    feed.tickers["BTC-USD"].view()        # rolling 24h ticker

- Topic-prefix filtering: subscribe by market and kind (T trades, D depth, B best bid/offer).
- Every stream is sequenced per market within an engine run (``epoch``). A depth gap, or a new
  epoch (engine restart), marks the book unsynced; it buffers deltas, asks the engine for a
  snapshot over the command socket and replays the buffered deltas after it. No restart of
  anything is needed, and ``stats`` counts every gap and resync.
- Trades carry ``trade_id``s contiguous per market for the life of the exchange, so a consumer
  that must have every trade (the recorder) is told exactly which ids it missed (``on_gap``).
- Bounded: the SUB socket has a high-water mark (ZeroMQ drops beyond it; we see the gap), and
  at most ``max_pending`` deltas are buffered while a snapshot is on its way.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import zmq

from engine.client import EngineClient, EngineError
from engine.curve import ClientKeys, for_client, secure_client
from feed.book import LocalBook, Ticker24h
from protocol.messages import Bbo, BookSnapshot, Depth, MarketData, SnapshotRequest, Trade, Trades

log = logging.getLogger("feed")

KINDS = {"trades": b"T.", "depth": b"D.", "bbo": b"B."}


@dataclass
class FeedStats:
    messages: int = 0
    depth_gaps: int = 0
    trade_gaps: int = 0
    bbo_gaps: int = 0
    resyncs: int = 0
    epochs_seen: int = 0
    undecodable: int = 0


@dataclass
class _Market:
    book: LocalBook
    ticker: Ticker24h
    pending: list[Depth] = field(default_factory=list)
    resyncing: bool = False
    trade_epoch: int = 0
    trade_seq: int = 0
    bbo_epoch: int = 0
    bbo_seq: int = 0
    last_trade_id: int = 0


class Feed:
    def __init__(
        self,
        md_endpoint: str | list[str],
        commands_endpoint: str | list[str],
        markets: Iterable[str],
        tick_lot_quote: dict[str, int] | None = None,
        kinds: Iterable[str] = ("trades", "depth", "bbo"),
        on_trades: Callable[[str, list[Trade]], None] | None = None,
        on_depth: Callable[[str, Depth | None], None] | None = None,
        on_bbo: Callable[[Bbo], None] | None = None,
        on_gap: Callable[[str, int, int], None] | None = None,
        identity: bytes | None = None,
        hwm: int = 100_000,
        max_pending: int = 10_000,
        tickers: bool = True,
        curve: ClientKeys | None = None,
    ) -> None:
        self.md_endpoint = md_endpoint
        self.markets = list(markets)
        self.kinds = list(kinds)
        self.on_trades = on_trades
        self.on_depth = on_depth  # (market, delta) or (market, None) after a (re)sync
        self.on_bbo = on_bbo
        self.on_gap = on_gap  # (market, first missing trade id, last missing trade id)
        self.hwm = hwm
        self.max_pending = max_pending
        self.keep_tickers = tickers  # the recorder does not need them (a third of its CPU)
        self.stats = FeedStats()
        tlq = tick_lot_quote or {}
        self.state = {m: _Market(LocalBook(m), Ticker24h(m, tlq.get(m, 1))) for m in self.markets}
        self.books = {m: s.book for m, s in self.state.items()}
        self.tickers = {m: s.ticker for m, s in self.state.items()}
        ident = identity or f"feed-{os.getpid()}-{id(self):x}".encode()
        self.curve = curve
        self.engine = EngineClient(
            commands_endpoint, ident, on_restart=self._on_restart, curve=curve
        )
        self.ctx: zmq.Context = zmq.Context.instance()
        self.sub: zmq.Socket | None = None
        self._decoder = msgspec.msgpack.Decoder(MarketData)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def for_exchange(
        cls, ex: Any, markets: Iterable[str] | None = None, name: str = "feed", **kw: Any
    ) -> Feed:
        """A feed on the configured endpoints (``ex`` is a protocol.config.Exchange); ``name``
        picks its CURVE keys when the config turns CURVE on."""
        names = list(markets) if markets is not None else list(ex.markets)
        tlq = {m: ex.markets[m].tick_lot_quote for m in names}
        kw.setdefault("curve", for_client(ex, name))
        from protocol.config import engine_endpoints, market_data_endpoints

        return cls(market_data_endpoints(ex), engine_endpoints(ex), names, tlq, **kw)

    async def start(self, wait: float | None = 10.0) -> None:
        self._loop = asyncio.get_running_loop()
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, self.hwm)
        sub.setsockopt(zmq.LINGER, 0)
        secure_client(sub, self.curve)
        for m in self.markets:
            for kind in self.kinds:
                sub.setsockopt(zmq.SUBSCRIBE, KINDS[kind] + m.encode())
        # every engine's PUB of a replicated setup: only the primary publishes; after a
        # failover the new one's messages carry a new epoch and the books resync
        for endpoint in (
            [self.md_endpoint] if isinstance(self.md_endpoint, str) else self.md_endpoint
        ):
            sub.connect(endpoint)
        self.sub = sub
        self._loop.add_reader(sub.getsockopt(zmq.FD), self._drain)
        await self.engine.start(wait=wait)
        if "depth" in self.kinds:
            for m in self.markets:
                self._resync(m)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self.sub is not None:
            assert self._loop is not None
            self._loop.remove_reader(self.sub.FD)
            self.sub.close(0)
            self.sub = None
        await self.engine.close()

    def synced(self) -> bool:
        return all(b.synced for b in self.books.values()) if "depth" in self.kinds else True

    # ------------------------------------------------------------------- receiving
    def _drain(self) -> None:
        sub = self.sub
        while sub is not None and cast(int, sub.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                _topic, payload = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except ValueError:
                self.stats.undecodable += 1
                continue
            try:
                msg = self._decoder.decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.stats.undecodable += 1
                continue
            self.stats.messages += 1
            self.handle(msg)

    def handle(self, msg: Any) -> None:
        """Process one market-data message (public so tests can drop or reorder on purpose)."""
        st = self.state.get(msg.market)
        if st is None:
            return
        match msg:
            case Depth():
                self._on_depth(st, msg)
            case Trades():
                self._on_trades(st, msg)
            case Bbo():
                if msg.epoch == st.bbo_epoch and msg.seq != st.bbo_seq + 1:
                    self.stats.bbo_gaps += 1
                st.bbo_epoch, st.bbo_seq = msg.epoch, msg.seq
                if self.on_bbo:
                    self.on_bbo(msg)

    def _on_depth(self, st: _Market, d: Depth) -> None:
        book = st.book
        if not book.synced:
            st.pending.append(d)
            if len(st.pending) > self.max_pending:
                del st.pending[: len(st.pending) // 2]  # bounded; the replay will see the gap
            return
        if d.epoch == book.epoch and d.seq <= book.seq:
            return  # already in the snapshot
        if d.epoch != book.epoch or d.seq != book.seq + 1:
            if d.epoch != book.epoch:
                self.stats.epochs_seen += 1
            else:
                self.stats.depth_gaps += 1
            log.info(
                "%s: depth %s at seq %d (have %d): resyncing",
                d.market,
                "new epoch" if d.epoch != book.epoch else "gap",
                d.seq,
                book.seq,
            )
            book.synced = False
            st.pending = [d]
            self._resync(d.market)
            return
        book.apply(d)
        if self.on_depth:
            self.on_depth(d.market, d)

    def _on_trades(self, st: _Market, msg: Trades) -> None:
        missed_message = msg.epoch == st.trade_epoch and msg.seq != st.trade_seq + 1
        st.trade_epoch, st.trade_seq = msg.epoch, msg.seq
        first = msg.trades[0].trade_id if msg.trades else 0
        last_known = st.last_trade_id
        missed_ids = bool(last_known) and first > last_known + 1
        if missed_message or missed_ids:
            self.stats.trade_gaps += 1  # one gap, however it showed itself
        if missed_ids and self.on_gap:
            self.on_gap(msg.market, last_known + 1, first - 1)
        fresh = [t for t in msg.trades if t.trade_id > last_known]
        if not fresh:
            return
        st.last_trade_id = fresh[-1].trade_id
        if self.keep_tickers:
            for t in fresh:
                st.ticker.add(t)
        if self.on_trades:
            self.on_trades(msg.market, fresh)

    def expect_trades_after(self, market: str, trade_id: int) -> None:
        """Report (``on_gap``) any trade after ``trade_id`` that this feed does not see."""
        self.state[market].last_trade_id = trade_id

    # --------------------------------------------------------------------- resync
    def _on_restart(self, epoch: int) -> None:
        for m, st in self.state.items():
            if st.book.synced and st.book.epoch != epoch and "depth" in self.kinds:
                st.book.synced = False
                self._resync(m)

    def _resync(self, market: str) -> None:
        st = self.state[market]
        if st.resyncing:
            return
        st.resyncing = True
        task = asyncio.ensure_future(self._snapshot(market))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _snapshot(self, market: str) -> None:
        st = self.state[market]
        pause = 0.05
        try:
            while True:
                try:
                    snap = await self.engine.request(SnapshotRequest(0, market))
                except EngineError as e:  # the engine is starting or restarting: wait for it
                    log.debug("%s: snapshot not available yet (%s)", market, e)
                    await asyncio.sleep(pause)
                    pause = min(2.0, pause * 2)
                    continue
                assert isinstance(snap, BookSnapshot)
                if self._replay(st, snap):
                    break
        finally:
            st.resyncing = False

    def _replay(self, st: _Market, snap: BookSnapshot) -> bool:
        """Load ``snap`` and the buffered deltas after it; False if they do not connect."""
        self.stats.resyncs += 1
        st.book.load(snap)
        pending, st.pending = st.pending, []
        for d in pending:
            if d.epoch != snap.epoch or d.seq <= snap.seq:
                continue  # older run, or already inside the snapshot
            if d.seq != st.book.seq + 1:
                st.book.synced = False
                st.pending = [x for x in pending if x.epoch == snap.epoch and x.seq > d.seq - 1]
                return False
            st.book.apply(d)
        if self.on_depth:
            self.on_depth(snap.market, None)
        return True

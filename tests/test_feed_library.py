"""The market-data subscriber library (feed/): local books, resync, trade gaps, ticker, candles.

In-process tests drive a pure ``Engine`` with the seeded benchmark workload and hand its own
market-data output (``engine.market_data(ts)``) to ``LocalBook`` / ``Feed.handle``; the local
book must equal the engine's book at every step. Gap and restart tests run the real engine
process and a real ``Feed`` that asks it for snapshots; a relay of the test's own (a SUB socket
on the engine's PUB) hands the messages to ``feed.handle`` and drops or reorders one on purpose.
``Ticker24h`` and ``CandleBook`` are checked against straightforward recomputations from the
list of trades (hypothesis picks the trades).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Callable, Iterator

import msgspec
import pytest
import zmq
import zmq.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.workload import funding, mixed
from engine.core import Engine
from feed.book import LocalBook, Ticker24h, TickerView
from feed.candles import Candle, CandleBook
from feed.subscriber import Feed
from protocol.config import Exchange, load
from protocol.market_api import INTERVALS
from protocol.messages import BookSnapshot, Depth, MarketData, Trade, Trades
from tests.fixtures_engine import engine_procs_fixture  # noqa: F401
from tests.fixtures_feed import BUY, SELL, Desk, async_test
from tests.procs import EngineProc, endpoint, eventually_async, free_port

NS = 1_000_000_000


# ------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def ex() -> Exchange:
    return load()


def levels(snap: BookSnapshot) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    return [(p, q) for p, q, _ in snap.bids], [(p, q) for p, q, _ in snap.asks]


def funded_engine(ex: Exchange, accounts: int, epoch: int = 7) -> tuple[Engine, Iterator[int]]:
    engine = Engine(ex, epoch=epoch)
    clock = itertools.count(1_700_000_000 * NS, 1_000)
    for cmd in funding(ex, accounts):
        engine.apply(cmd, next(clock), b"gw")
    engine.market_data(next(clock))
    return engine, clock


def run_workload(
    ex: Exchange, seed: int, n: int, on_flush: Callable[[Engine, list], None]
) -> Engine:
    """Apply ``n`` commands of the mixed workload, flushing market data every 1..12 commands
    (so one message carries several changes) and calling ``on_flush(engine, messages)``."""
    engine, clock = funded_engine(ex, 30)
    rng = random.Random(seed)
    due = rng.randint(1, 12)
    for i, cmd in enumerate(mixed(ex, n, seed=seed, accounts=30), 1):
        engine.apply(cmd, next(clock), b"gw")
        if i == due or i == n:
            on_flush(engine, [msg for _, msg in engine.market_data(next(clock))])
            due = i + rng.randint(1, 12)
    return engine


def assert_same_book(local: LocalBook, engine: Engine, market: str) -> None:
    snap = engine.book_snapshot(engine.books[market])
    bids, asks = levels(snap)
    assert local.levels() == (bids, asks), f"{market}: local book differs at seq {local.seq}"
    assert local.seq == snap.seq
    assert local.best_bid() == (bids[0] if bids else (0, 0))
    assert local.best_ask() == (asks[0] if asks else (0, 0))
    assert local.levels(3) == (bids[:3], asks[:3])


# ------------------------------------------------------------- local book vs the engine


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_local_book_from_snapshot_and_deltas_equals_engine_book_at_every_step(
    ex: Exchange, seed: int
) -> None:
    """Each market's LocalBook loads an engine snapshot taken at a random moment (possibly with
    changes not yet published), then applies the Depth messages after it; at every flush it
    must equal the engine's own book."""
    rng = random.Random(seed)
    load_at = {m: rng.randint(1, 300) for m in ex.markets}  # flush count at which to load
    books: dict[str, LocalBook] = {}
    flushes = itertools.count(1)
    applied = dict.fromkeys(ex.markets, 0)

    def on_flush(engine: Engine, msgs: list) -> None:
        k = next(flushes)
        for msg in msgs:
            book = books.get(msg.market)
            if type(msg) is Depth and book is not None and msg.seq > book.seq:
                assert msg.seq == book.seq + 1, "the engine's depth sequence skipped a number"
                book.apply(msg)
                applied[msg.market] += 1
        for m in ex.markets:
            if k == load_at[m]:
                books[m] = LocalBook(m)
                books[m].load(engine.book_snapshot(engine.books[m]))
        for m, book in books.items():
            assert_same_book(book, engine, m)

    engine = run_workload(ex, seed, 5_000, on_flush)
    assert set(books) == set(ex.markets)
    assert all(n > 50 for n in applied.values()), applied  # the deltas did the work
    assert all(len(b.bids) > 5 and len(b.asks) > 5 for b in books.values())
    engine.validate()


def test_feed_handle_rebuilds_books_trades_and_tickers_from_engine_output(ex: Exchange) -> None:
    """``Feed.handle`` gets everything the engine published, including messages from before
    each book's snapshot (a subscriber buffers those): books equal the engine's, every trade
    arrives once and in order, tickers add up, and no gap is reported."""
    feed = Feed.for_exchange(ex, kinds=("trades", "depth"))
    got: dict[str, list[Trade]] = {m: [] for m in ex.markets}
    printed: dict[str, list[Trade]] = {m: [] for m in ex.markets}
    gaps: list[tuple] = []
    feed.on_trades = lambda m, trades: got[m].extend(trades)
    feed.on_gap = lambda *g: gaps.append(g)
    backlog: list = []
    flushes = itertools.count(1)

    def on_flush(engine: Engine, msgs: list) -> None:
        for msg in msgs:
            if type(msg) is Trades:
                printed[msg.market].extend(msg.trades)
        k = next(flushes)
        if k < 40:  # not subscribed yet: the messages wait in the socket
            backlog.extend(msgs)
            return
        if k == 40:
            for m in ex.markets:
                feed.books[m].load(engine.book_snapshot(engine.books[m]))
            msgs, backlog[:] = backlog + msgs, []
        for msg in msgs:
            feed.handle(msg)
        for m in ex.markets:
            assert_same_book(feed.books[m], engine, m)

    run_workload(ex, 11, 4_000, on_flush)
    assert got == printed
    assert all(len(t) > 20 for t in got.values())
    assert gaps == []
    s = feed.stats
    assert (s.depth_gaps, s.trade_gaps, s.resyncs, s.epochs_seen) == (0, 0, 0, 0)
    for m, trades in printed.items():
        spec = ex.markets[m]
        view = feed.tickers[m].view()
        assert view.trades == len(trades)
        assert view.volume == sum(t.qty for t in trades)
        assert view.quote_volume == sum(t.price * t.qty * spec.tick_lot_quote for t in trades)
        assert (view.high, view.low) == (
            max(t.price for t in trades),
            min(t.price for t in trades),
        )


def test_depth_message_delivered_twice_is_ignored(ex: Exchange) -> None:
    feed = Feed.for_exchange(ex, markets=["BTC-USD"], kinds=("depth",))
    engine, clock = funded_engine(ex, 30)
    feed.books["BTC-USD"].load(engine.book_snapshot(engine.books["BTC-USD"]))
    cmds = (c for c in mixed(ex, 10_000, seed=5, accounts=30) if c.market == "BTC-USD")
    seen = 0
    for cmd in itertools.islice(cmds, 400):
        engine.apply(cmd, next(clock), b"gw")
        for _, msg in engine.market_data(next(clock)):
            if type(msg) is Depth:
                feed.handle(msg)
                feed.handle(msg)  # a duplicate, e.g. a replay after a reconnect
                seen += 1
    assert seen > 100
    assert_same_book(feed.books["BTC-USD"], engine, "BTC-USD")
    assert feed.stats.depth_gaps == 0
    assert feed.books["BTC-USD"].synced


# ------------------------------------------------------------------------- trade gaps


def engine_trades(ex: Exchange, market: str, messages: int) -> list[Trades]:
    """The first ``messages`` Trades messages the engine published for ``market``."""
    out: list[Trades] = []

    def on_flush(engine: Engine, msgs: list) -> None:
        out.extend(m for m in msgs if type(m) is Trades and m.market == market)

    run_workload(ex, 21, 6_000, on_flush)
    assert len(out) >= messages
    return out[:messages]


def test_dropped_trades_message_is_reported_with_the_exact_missing_ids(ex: Exchange) -> None:
    msgs = engine_trades(ex, "ETH-USD", 40)
    feed = Feed.for_exchange(ex, markets=["ETH-USD"], kinds=("trades",))
    gaps: list[tuple[str, int, int]] = []
    got: list[int] = []
    feed.on_gap = lambda *g: gaps.append(g)
    feed.on_trades = lambda m, trades: got.extend(t.trade_id for t in trades)
    dropped = msgs[17]
    for msg in msgs:
        if msg is not dropped:
            feed.handle(msg)
    first, last = dropped.trades[0].trade_id, dropped.trades[-1].trade_id
    assert gaps == [("ETH-USD", first, last)]
    every = [t.trade_id for m in msgs for t in m.trades]
    assert got == [i for i in every if not first <= i <= last]


def test_one_lost_trades_message_counts_as_one_trade_gap(ex: Exchange) -> None:
    """``stats.trade_gaps`` counts gaps: one lost message is one gap, however it is noticed
    (its stream sequence number and its trade ids both show it)."""
    msgs = engine_trades(ex, "ETH-USD", 40)
    feed = Feed.for_exchange(ex, markets=["ETH-USD"], kinds=("trades",))
    for msg in msgs[:17] + msgs[18:]:
        feed.handle(msg)
    assert feed.stats.trade_gaps == 1, f"one lost message, counted {feed.stats.trade_gaps} times"


def test_trades_after_a_known_id_report_what_came_before_the_first_message(
    ex: Exchange,
) -> None:
    """A consumer resuming after trade id N (the recorder) hears of ids it never saw."""
    msgs = engine_trades(ex, "BTC-USD", 10)
    feed = Feed.for_exchange(ex, markets=["BTC-USD"], kinds=("trades",))
    gaps: list[tuple[str, int, int]] = []
    feed.on_gap = lambda *g: gaps.append(g)
    start = msgs[4].trades[0].trade_id
    assert start > 2
    feed.expect_trades_after("BTC-USD", 1)
    for msg in msgs[4:]:
        feed.handle(msg)
    assert gaps == [("BTC-USD", 2, start - 1)]


def test_replayed_trades_are_not_counted_twice(ex: Exchange) -> None:
    msgs = engine_trades(ex, "BTC-USD", 12)
    feed = Feed.for_exchange(ex, markets=["BTC-USD"], kinds=("trades",))
    calls: list[list[int]] = []
    feed.on_trades = lambda m, trades: calls.append([t.trade_id for t in trades])
    for msg in msgs:
        feed.handle(msg)
    before = feed.tickers["BTC-USD"].view()
    for msg in msgs[5:]:
        feed.handle(msg)  # the same messages once more
    assert feed.tickers["BTC-USD"].view() == before
    assert len(calls) == len(msgs)
    assert [i for c in calls for i in c] == [t.trade_id for m in msgs for t in m.trades]


# ------------------------------------------------- gaps and restarts against the engine


class Relay:
    """The engine's depth messages for one market, through a SUB socket of the test's own,
    handed to ``feed.handle`` one at a time; ``policy(msg)`` returns "pass", "drop" or "hold"
    (a held message is delivered right after the next one: a reordering)."""

    def __init__(self, md_endpoint: str, market: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"D." + market.encode())
        self.sub.connect(md_endpoint)
        self.decoder = msgspec.msgpack.Decoder(MarketData)
        self.received: list[Depth] = []
        self.feed: Feed | None = None
        self.policy: Callable[[Depth], str] = lambda msg: "pass"
        self.held: Depth | None = None
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            _topic, payload = await self.sub.recv_multipart()
            msg = self.decoder.decode(payload)
            self.received.append(msg)
            if self.feed is None:
                continue
            action = self.policy(msg)
            if action == "drop":
                continue
            if action == "hold":
                self.held = msg
                continue
            self.feed.handle(msg)
            if self.held is not None:
                held, self.held = self.held, None
                self.feed.handle(held)

    def last_seq(self) -> int:
        return self.received[-1].seq if self.received else 0

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.sub.close(0)
        self.ctx.term()


async def feed_matches_engine(feed: Feed, desk: Desk, market: str) -> bool:
    snap = await desk.book(market)
    book = feed.books[market]
    assert book.synced, "not synced"
    assert (book.epoch, book.seq) == (snap.epoch, snap.seq), (book.seq, snap.seq)
    assert book.levels() == levels(snap)
    return True


@pytest.mark.parametrize("fault", ["drop", "reorder"])
@async_test
async def test_lost_depth_message_is_noticed_and_book_resyncs_from_engine_snapshot(
    engine_procs: Callable[..., EngineProc], fault: str
) -> None:
    engine = await engine_procs().astart()
    market = "BTC-USD"
    relay = Relay(engine.market_data, market)
    desk = await Desk(engine).start()
    # The Feed's own SUB socket listens where nobody publishes: the relay is its only source.
    feed = Feed(endpoint(free_port()), engine.commands, [market], kinds=("depth",))
    try:
        # Warm up until the relay's subscription is live (ZeroMQ's slow joiner).
        async def relay_live() -> bool:
            await desk.cancel(market, await desk.rest(market, BUY, 4_000_000, 10))
            return len(relay.received) > 0

        await eventually_async(relay_live, 20, 0.05, "the relay receives depth messages")
        relay.feed = feed
        await feed.start()
        await eventually_async(feed.synced, 20, what="feed synced from its first snapshot")
        base = feed.books[market].seq
        victim = base + 8
        if fault == "drop":
            relay.policy = lambda msg: "drop" if msg.seq == victim else "pass"
        else:
            relay.policy = lambda msg: "hold" if msg.seq == victim else "pass"
        for i in range(20):  # one order per engine batch: one Depth message each
            side, price = (BUY, 4_990_000 - i * 100) if i % 2 else (SELL, 5_010_000 + i * 100)
            await desk.rest(market, side, price, 10 + i)
        final = (await desk.book(market)).seq
        assert final == base + 20
        await eventually_async(lambda: relay.last_seq() >= final, 20, what="all deltas relayed")
        await eventually_async(
            lambda: feed_matches_engine(feed, desk, market), 20, 0.05, "book resynced"
        )
        assert feed.stats.depth_gaps == 1
        assert feed.stats.resyncs >= 2  # the first sync and the one after the gap
        assert len(feed.books[market].bids) == 10 and len(feed.books[market].asks) == 10
    finally:
        await feed.close()
        await relay.close()
        await desk.close()


@async_test
async def test_engine_restart_new_epoch_resyncs_book_without_false_trade_gaps(
    engine_procs: Callable[..., EngineProc],
) -> None:
    engine = await engine_procs().astart()
    market = "ETH-USD"
    desk = await Desk(engine).start()
    gaps: list[tuple] = []
    trades: list[int] = []
    feed = Feed(
        engine.market_data,
        engine.commands,
        [market],
        on_gap=lambda *g: gaps.append(g),
        on_trades=lambda m, ts: trades.extend(t.trade_id for t in ts),
    )
    try:
        await feed.start()
        await eventually_async(feed.synced, 20, what="feed synced")
        for i in range(5):
            await desk.rest(market, BUY, 290_000 - i, 100)
        await desk.rest(market, SELL, 310_000, 100)
        await eventually_async(
            lambda: feed_matches_engine(feed, desk, market), 20, 0.05, "synced before restart"
        )

        # A first trade, seen before the restart (the Feed's SUB may join late: retry).
        async def first_trade_seen() -> bool:
            await desk.take(market, SELL, 290_000, 1)
            return bool(trades)

        await eventually_async(first_trade_seen, 20, 0.2, "a trade before the restart")
        old_epoch, resyncs = engine.epoch, feed.stats.resyncs
        await engine.astop()
        await engine.astart()
        assert engine.epoch != old_epoch

        def desk_sees_new_engine() -> bool:
            return desk.client.available and desk.client.epoch == engine.epoch

        await eventually_async(desk_sees_new_engine, 20, what="desk reconnected")
        await eventually_async(
            lambda: feed_matches_engine(feed, desk, market), 20, 0.05, "resynced after restart"
        )
        assert feed.books[market].epoch == engine.epoch
        assert feed.stats.resyncs > resyncs
        # Life goes on in the new epoch: deltas and trades, trade ids continuing.
        await desk.rest(market, SELL, 309_000, 50)
        seen = len(trades)
        fills = await desk.take(market, SELL, 289_990, 150)
        await eventually_async(
            lambda: feed_matches_engine(feed, desk, market), 20, 0.05, "deltas in the new epoch"
        )
        await eventually_async(lambda: len(trades) > seen, 20, what="trades after the restart")
        # Every trade since the first one seen, without a hole, up to the last one printed.
        assert trades == list(range(trades[0], fills[-1].trade_id + 1))
        assert gaps == []
    finally:
        await feed.close()
        await desk.close()


# ------------------------------------------------------------------------------ ticker


def ticker_reference(
    market: str, trades: list[Trade], horizon: int, window: int, tlq: int
) -> TickerView:
    """The 24h ticker recomputed from scratch: the trades with ts in (horizon - window,
    horizon]; ``last`` (and its id) stay those of the newest trade ever seen."""
    last = trades[-1].price if trades else 0
    last_id = trades[-1].trade_id if trades else 0
    inside = [t for t in trades if horizon - window < t.ts]
    if not inside:
        return TickerView(market, 0, 0, 0, last, 0, 0, 0, 0, 0, last_id)
    prices = [t.price for t in inside]
    return TickerView(
        market,
        prices[0],
        max(prices),
        min(prices),
        last,
        sum(t.qty for t in inside),
        sum(t.price * t.qty * tlq for t in inside),
        last - prices[0],
        len(inside),
        inside[0].trade_id,
        last_id,
    )


ticker_events = st.lists(
    st.one_of(
        st.tuples(st.just("trade"), st.integers(0, 15), st.integers(1, 60), st.integers(1, 9)),
        st.tuples(st.just("view"), st.integers(0, 40), st.just(0), st.just(0)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(events=ticker_events, window=st.integers(1, 60), tlq=st.sampled_from([1, 100]))
def test_ticker24h_matches_recomputation_from_the_trades_in_the_window(
    events: list[tuple[str, int, int, int]], window: int, tlq: int
) -> None:
    """Trades and clock readings in time order (equal timestamps allowed); after every trade
    and at every reading the rolling ticker equals the recomputation."""
    ticker = Ticker24h("BTC-USD", tlq, window_ns=window)
    trades: list[Trade] = []
    now = 1_000
    for kind, dt, price, qty in events:
        now += dt
        if kind == "trade":
            t = Trade(len(trades) + 1, price, qty, BUY if price % 2 else SELL, now, now)
            trades.append(t)
            ticker.add(t)
            got = ticker.view()
        else:
            got = ticker.view(now)
        assert got == ticker_reference("BTC-USD", trades, now, window, tlq)


def test_ticker24h_day_window_expires_old_trades() -> None:
    ticker = Ticker24h("BTC-USD", 1)
    day = 24 * 3600 * NS
    for i, (price, ts) in enumerate([(100, 0), (300, 10 * NS), (200, day), (150, day + NS)], 1):
        ticker.add(Trade(i, price, 2, BUY, ts, i))
    v = ticker.view(day + NS)  # (1 ns, day + 1 s]: the first trade (ts 0) has left
    assert (v.open, v.high, v.low, v.last, v.trades, v.volume) == (300, 300, 150, 150, 3, 6)
    v = ticker.view(day + 10 * NS)  # the 300 trade leaves exactly 24 h after it printed
    assert (v.open, v.high, v.low, v.trades, v.change) == (200, 200, 150, 2, -50)
    v = ticker.view(3 * day)
    assert (v.open, v.high, v.low, v.last, v.trades, v.volume) == (0, 0, 0, 150, 0, 0)


# ----------------------------------------------------------------------------- candles


def candle_reference(trades: list[Trade], length: int, tlq: int) -> dict[int, tuple]:
    buckets: dict[int, list[Trade]] = {}
    for t in trades:
        secs = t.ts // NS
        buckets.setdefault(secs - secs % length, []).append(t)
    out = {}
    for start, ts in buckets.items():
        prices = [t.price for t in ts]
        out[start] = (
            start,
            prices[0],
            max(prices),
            min(prices),
            prices[-1],
            sum(t.qty for t in ts),
            sum(t.price * t.qty * tlq for t in ts),
            len(ts),
        )
    return out


def as_tuple(c: Candle) -> tuple:
    return (c.open_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades)


candle_trades = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 1, 7, 59, 61, 299, 900, 3_601, 14_400, 86_399, 90_000]),
        st.integers(0, NS - 1),
        st.integers(1, 1_000),
        st.integers(1, 50),
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(steps=candle_trades, keep=st.sampled_from([2, 5, 1500]), tlq=st.sampled_from([1, 100]))
def test_candlebook_matches_per_interval_recomputation_for_every_interval(
    steps: list[tuple[int, int, int, int]], keep: int, tlq: int
) -> None:
    book = CandleBook("BTC-USD", tlq, keep=keep)
    trades: list[Trade] = []
    secs = 1_700_000_000
    for i, (dsecs, ns, price, qty) in enumerate(steps, 1):
        secs += dsecs
        ts = max(secs * NS + ns, trades[-1].ts if trades else 0)  # never back in time
        t = Trade(i, price, qty, BUY, ts, i)
        trades.append(t)
        changed = book.add(t)
        assert [iv for iv, _ in changed] == list(INTERVALS)
        for iv, c in changed:
            s = ts // NS
            assert c.open_time == s - s % INTERVALS[iv] and c.close == price
    for iv, length in INTERVALS.items():
        want = candle_reference(trades, length, tlq)
        kept = sorted(want)[-keep:]
        got = {k: as_tuple(c) for k, c in book.candles[iv].items()}
        assert got == {k: want[k] for k in kept}, iv
        assert [as_tuple(c) for c in book.history(iv)] == [want[k] for k in kept][-500:]
        lo, hi = kept[0], kept[-1]
        inside = [want[k] for k in kept if lo < k < hi]
        assert [as_tuple(c) for c in book.history(iv, lo + 1, hi)] == inside
        assert [as_tuple(c) for c in book.history(iv, limit=1)] == [want[hi]]


def test_candles_align_to_utc_interval_boundaries() -> None:
    book = CandleBook("BTC-USD", 1)
    t0 = 1_700_000_000  # 2023-11-14T22:13:20Z
    for i, (secs, price) in enumerate([(t0, 10), (t0 + 39, 12), (t0 + 40, 9), (t0 + 90, 11)]):
        book.add(Trade(i + 1, price, 1, BUY, secs * NS, i + 1))
    m1 = [as_tuple(c) for c in book.history("1m")]
    assert m1 == [
        (1_699_999_980, 10, 12, 10, 12, 2, 22, 2),  # 22:13:00 .. 22:13:59
        (1_700_000_040, 9, 11, 9, 11, 2, 20, 2),  # 22:14:00 .. 22:14:59
    ]
    (d1,) = book.history("1d")
    assert as_tuple(d1) == (1_699_920_000, 10, 12, 9, 11, 4, 42, 4)  # 2023-11-14T00:00Z

"""The recorder: every engine trade in ClickHouse exactly once, candles, queries, failures.

Real pieces throughout: the engine process on loopback, the recorder either as its own process
(``python -m recorder``) or, where a fault must be injected, the real ``Recorder`` class in this
process around a hand-written ``FlakyStore`` (a real Store whose inserts fail for a while) or a
``LossyRecorder`` (a real Recorder that hears few feed notifications). ClickHouse is embedded
chDB in a temporary directory. chDB opens one data directory per process: while a recorder
process runs it is queried through its HTTP API, and its directory is opened with ``Store``
only after it stopped; in-process tests close their Store before the next one opens.

Expected values never come from the recorder: the engine's own memory (``TradesRequest``) gives
the trades, notional comes from the Decimal tick and lot, candles are computed in Python.

A real ClickHouse server >= 20 is not installable here (Debian ships clickhouse-server 18.16,
older than clickhouse-connect supports), so the server path is tested only as far as a URL on a
port that refuses connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from protocol.config import Exchange, load
from recorder.service import Recorder
from recorder.store import INTERVAL_SECONDS, MIGRATIONS, TRADE_COLUMNS, QueryError, Store
from tests.fixtures_engine import engine_procs_fixture  # noqa: F401
from tests.fixtures_recorder import (
    TRADE_QUERY,
    FlakyStore,
    LossyRecorder,
    RecorderProc,
    engine_trades,
    expected_rows,
    http,
    opened,
    python_candles,
    recorder_procs_fixture,  # noqa: F401
    run_async,
    run_workload,
    stored_rows,
    table_rows,
    trade_count,
)
from tests.procs import EngineProc, eventually, eventually_async, free_port

INTERVALS = ["1m", "5m", "15m", "1h", "4h", "1d"]
NS = 1_000_000_000
DAY0 = 1_767_225_600  # 2026-01-01T00:00:00Z
WAIT = 60.0  # generous: a loaded 2-core box; a hang still fails, just later


def _exchange(engine: EngineProc | None = None, **recorder: Any) -> Exchange:
    ex = load()
    if engine is not None:
        ex.engine.commands, ex.engine.market_data = engine.commands, engine.market_data
    for key, value in recorder.items():
        setattr(ex.recorder, key, value)
    return ex


def _chdb(tmp_path: Path, name: str = "ch") -> str:
    return f"chdb://{tmp_path / name}"


def _candle_input(ex: Exchange, rows: list[tuple]) -> dict[str, list[tuple]]:
    """expected_rows-shaped rows -> per market (trade_id, ts, price, qty, quote units)."""
    out: dict[str, list[tuple]] = {m: [] for m in ex.markets}
    for r in rows:
        out[r[0]].append((r[1], r[2], r[3], r[4], r[5]))
    return out


# ==================================================================== migrations (Store)


def test_migrations_apply_once_and_are_recorded_in_schema_migrations(tmp_path: Path) -> None:
    url = _chdb(tmp_path)
    every = [v for v, _, _ in MIGRATIONS]
    query = "SELECT version, name, applied FROM schema_migrations ORDER BY version"
    with opened(url) as store:
        assert store.migrate() == every
        assert store.migrate() == []
        rows = store.client.query(query).result_rows
    with opened(url) as store:  # a restart: nothing is applied again
        assert store.migrate() == []
        again = store.client.query(query).result_rows
        tables = {r[0] for r in store.client.query("SHOW TABLES").result_rows}
    assert [(r[0], r[1]) for r in rows] == [(v, name) for v, name, _ in MIGRATIONS]
    assert again == rows
    assert {"trades", "markets", "candles_1m", "candles_1m_mv", "trades_v", "bbo"} <= tables
    assert {"accounts", "schema_migrations"} <= tables


def test_restarted_recorder_does_not_reapply_migrations(
    engine_procs: Callable[..., EngineProc], recorder_procs: Callable[..., RecorderProc]
) -> None:
    engine = engine_procs().start()
    rec = recorder_procs(engine).start()
    assert rec.stop() == 0
    rec.start()
    rows = rec.sql("SELECT version, name FROM schema_migrations ORDER BY version")
    assert rec.stop() == 0
    logs = rec.logs().split("----- recorder run 2 -----")
    assert f"applied schema migrations {[v for v, _, _ in MIGRATIONS]}" in logs[0]
    assert "applied schema migrations" not in logs[1]
    assert [tuple(r) for r in rows] == [(v, name) for v, name, _ in MIGRATIONS]


# ==================================================================== candles (Store)


def _synthetic_trades(ex: Exchange, markets: list[str], n: int, seed: int) -> list[tuple]:
    """Trades with chosen timestamps over ~11 days from 5 hours before a UTC midnight: bursts
    sharing one timestamp (one engine batch), long quiet gaps, and trades exactly on and 1 ns
    before interval boundaries. Rows in expected_rows' shape, ordered by time."""
    rng = random.Random(seed)
    rows = []
    for market in markets:
        tlq = ex.markets[market].tick_lot_quote
        ts = (DAY0 - 5 * 3600) * NS + rng.randrange(NS)
        price = 1_000_000
        for tid in range(1, n + 1):
            r = rng.random()
            if r < 0.15:
                pass  # same batch, same timestamp
            elif r < 0.20:
                step = rng.choice([60, 300, 900, 3600, 14400]) * NS
                ts = ts - ts % step + step - rng.choice([0, 1])  # on a boundary, or 1 ns before
            elif r < 0.23:
                ts += rng.randrange(3600 * NS, 3 * 3600 * NS)  # a quiet spell
            else:
                ts += rng.randrange(1, 40 * NS)
            price = max(1, price + rng.randint(-50, 50))
            qty = rng.randint(1, 500)
            side = rng.choice([1, 2])
            rows.append((market, tid, ts, price, qty, price * qty * tlq, side, 7, 8, tid))
    rows.sort(key=lambda r: (r[2], r[0], r[1]))
    return rows


def _insert_in_batches(store: Store, rows: list[tuple], seed: int) -> int:
    """Insert as the recorder does (column-oriented, several markets per batch), in batches
    of random size, so minutes are split across inserts (partial 1m states to merge)."""
    rng = random.Random(seed)
    i = batches = 0
    while i < len(rows):
        size = rng.randint(1, 400)
        chunk = rows[i : i + size]
        store.insert_trades([list(col) for col in zip(*chunk, strict=True)])
        i += size
        batches += 1
    return batches


RANGE = (DAY0 - 4 * 3600 + 17, DAY0 + 5 * 86400 + 1)  # on no interval's boundary
LIMITS = (1, 3, 10_000)
BAD_KLINES = [
    ("7m", 0, 100, 10, "unknown interval"),
    ("1m", 100, 100, 10, "must be after"),
    ("1m", 200, 100, 10, "must be after"),
    ("1m", 0, 100, 0, "limit must be"),
    ("1m", 0, 100, 10_001, "limit must be"),
    ("1m", 0, 100, -1, "limit must be"),
]


@pytest.fixture(name="candles", scope="module")
def candles_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """~6,000 synthetic trades of two markets through Store.insert_trades, and what
    Store.klines answers about them. The Store is closed before any test runs (chDB opens one
    data directory per process, and other tests open theirs)."""
    ex = _exchange()
    rows = _synthetic_trades(ex, ["BTC-USD", "ETH-BTC"], 3000, seed=11)
    trades = {m: v for m, v in _candle_input(ex, rows).items() if v}
    with opened(_chdb(tmp_path_factory.mktemp("candles"))) as store:
        store.migrate()
        batches = _insert_in_batches(store, rows, seed=12)
        full = {(m, iv): store.klines(m, iv, 0, 2**40, 10_000) for m in trades for iv in INTERVALS}
        ranged = {
            (iv, limit): store.klines("BTC-USD", iv, *RANGE, limit)
            for iv in INTERVALS
            for limit in LIMITS
        }
        empty = store.klines("ETH-USD", "1h", 0, 2**40, 100)
        bad = []
        for interval, start, end, limit, _ in BAD_KLINES:
            try:
                store.klines("BTC-USD", interval, start, end, limit)
                bad.append(None)
            except QueryError as e:
                bad.append(str(e))
    return {
        "trades": trades,
        "batches": batches,
        "full": full,
        "ranged": ranged,
        "empty": empty,
        "bad": bad,
    }


def test_trade_columns_match_the_insert_order_used_by_these_tests() -> None:
    assert TRADE_COLUMNS == [
        "market",
        "trade_id",
        "ts",
        "price_ticks",
        "qty_lots",
        "quote_units",
        "taker_side",
        "maker_account",
        "taker_account",
        "seq",
    ]


@pytest.mark.parametrize("interval", INTERVALS)
def test_klines_of_every_interval_equal_candles_computed_in_python(
    candles: dict[str, Any], interval: str
) -> None:
    assert candles["batches"] > 20  # minutes split across inserts: partial states merged
    for market, rows in candles["trades"].items():
        want = python_candles(rows, INTERVAL_SECONDS[interval])
        assert len(want) > 1
        assert candles["full"][(market, interval)] == want, f"{market} {interval}"


@pytest.mark.parametrize("interval", INTERVALS)
def test_klines_keep_the_newest_limit_candles_opening_inside_the_range(
    candles: dict[str, Any], interval: str
) -> None:
    start, end = RANGE
    every = [
        c
        for c in python_candles(candles["trades"]["BTC-USD"], INTERVAL_SECONDS[interval])
        if start <= c.open_time < end
    ]
    assert len(every) > 3
    for limit in LIMITS:
        assert candles["ranged"][(interval, limit)] == every[-limit:], limit


def test_klines_of_a_market_without_trades_are_empty(candles: dict[str, Any]) -> None:
    assert candles["empty"] == []


def test_klines_reject_bad_requests(candles: dict[str, Any]) -> None:
    for case, error in zip(BAD_KLINES, candles["bad"], strict=True):
        assert error is not None and case[-1] in error, (case, error)


def test_trades_view_shows_exact_decimal_prices_and_quantities(tmp_path: Path) -> None:
    ex = _exchange()
    tlq = ex.markets["ETH-BTC"].tick_lot_quote
    with opened(_chdb(tmp_path)) as store:
        store.migrate()
        store.sync_markets(ex)
        rows = [("ETH-BTC", 1, DAY0 * NS, 123_457, 1_001, 123_457 * 1_001 * tlq, 1, 1, 2, 1)]
        store.insert_trades([list(col) for col in zip(*rows, strict=True)])
        got = store.client.query(
            "SELECT toString(price), toString(qty), toString(notional), toTypeName(price), "
            "toTypeName(qty) FROM trades_v"
        ).result_rows
    # ETH-BTC: tick 0.00001 BTC, lot 0.001 ETH; BTC has 8 decimals
    price, qty = Decimal("1.23457"), Decimal("1.001")
    assert [tuple(Decimal(v) for v in r[:3]) for r in got] == [(price, qty, price * qty)]
    assert all(t.startswith("Decimal") for t in got[0][3:]), got


def test_trades_view_notional_adds_up_exactly(tmp_path: Path) -> None:
    """Ten trades of 0.1 USD each are 1 USD: the view's notional is for analysts to sum."""
    ex = _exchange()
    tlq = ex.markets["BTC-USD"].tick_lot_quote  # tick 0.01 USD x lot 0.0001 BTC = 1 micro-USD
    with opened(_chdb(tmp_path)) as store:
        store.migrate()
        store.sync_markets(ex)
        rows = [
            ("BTC-USD", i, DAY0 * NS, 1_000, 100, 1_000 * 100 * tlq, 1, 1, 2, i)
            for i in range(1, 11)
        ]
        assert rows[0][5] == 100_000  # 0.1 USD
        store.insert_trades([list(col) for col in zip(*rows, strict=True)])
        ((total,),) = store.client.query("SELECT toString(sum(notional)) FROM trades_v").result_rows
    assert Decimal(total) == Decimal("1"), total


def test_trades_view_shows_each_trade_once_after_a_restart(tmp_path: Path) -> None:
    """Every recorder start writes the markets table again (Recorder.prepare); the view must
    not show a trade once per start. Merges are stopped: ReplacingMergeTree collapses the
    copies only whenever a background merge happens to run, which nothing promises."""
    ex = _exchange()
    with opened(_chdb(tmp_path)) as store:
        store.migrate()
        store.client.command("SYSTEM STOP MERGES markets")
        store.sync_markets(ex)  # the first start
        store.sync_markets(ex)  # a restart
        rows = [("BTC-USD", i, DAY0 * NS, 1_000, 1, 1_000, 1, 1, 2, i) for i in (1, 2, 3)]
        store.insert_trades([list(col) for col in zip(*rows, strict=True)])
        (shown,) = store.client.query("SELECT count() FROM trades_v").result_rows[0]
    assert shown == 3


# ==================================================================== read-only SQL (Store)


def test_sql_refuses_writes_and_the_store_still_records_afterwards(tmp_path: Path) -> None:
    """An analyst's INSERT through the read-only SQL path is refused, and must not change
    anything else: reads still work and the recorder's own inserts still work."""
    with opened(_chdb(tmp_path)) as store:
        store.migrate()
        assert store.sql("SELECT count() FROM trades")[1] == [[0]]
        for query in (
            "INSERT INTO accounts VALUES (1, 'x', 'client')",
            "DROP TABLE trades",
            "ALTER TABLE trades DELETE WHERE 1",
        ):
            with pytest.raises((ClickHouseError, QueryError), match="(?i)readonly"):
                store.sql(query)
        assert store.sql("SELECT count() FROM accounts")[1] == [[0]]
        store.insert_trades([[v] for v in ("BTC-USD", 1, DAY0 * NS, 1, 1, 1, 1, 1, 2, 1)])
        assert store.sql("SELECT count() FROM trades")[1] == [[1]]


# ==================================================================== the whole path


def test_recorder_holds_exactly_the_engines_trades_and_their_candles(
    engine_procs: Callable[..., EngineProc], recorder_procs: Callable[..., RecorderProc]
) -> None:
    ex = _exchange()
    engine = engine_procs().start()
    rec = recorder_procs(engine, batch_ms=20).start()
    run_async(run_workload(engine.commands, ex, 4000, seed=3))
    truth = run_async(engine_trades(engine.commands, ex))
    n = trade_count(truth)
    assert n > 300 and all(truth.values()), {m: len(v) for m, v in truth.items()}
    eventually(lambda: rec.count() == n, WAIT, 0.1, f"{n} trades in ClickHouse")
    live = stored_rows(rec.sql(TRADE_QUERY))
    http_candles = {
        (m, iv): rec.get(f"/klines?market={m}&interval={iv}&limit=10000")
        for m in ex.markets
        for iv in INTERVALS
    }
    metrics = rec.metrics()
    assert rec.stop() == 0

    want = expected_rows(ex, truth)
    assert live == want
    assert metrics["trades_written"] == n and metrics["unrecoverable"] == 0
    candle_input = _candle_input(ex, want)
    with opened(rec.clickhouse) as store:
        assert table_rows(store) == want
        for market, rows in candle_input.items():
            for iv in INTERVALS:
                expected = python_candles(rows, INTERVAL_SECONDS[iv])
                assert store.klines(market, iv, 0, 2**40, 10_000) == expected, (market, iv)
                status, body = http_candles[(market, iv)]
                assert status == 200
                assert body == [vars(c) for c in expected], (market, iv)


def test_kill_9_mid_stream_then_restart_records_every_trade_once(
    engine_procs: Callable[..., EngineProc], recorder_procs: Callable[..., RecorderProc]
) -> None:
    ex = _exchange()
    engine = engine_procs().start()
    rec = recorder_procs(engine, batch_ms=10, batch_rows=50).start()

    async def first_half() -> int:
        work = asyncio.ensure_future(run_workload(engine.commands, ex, 8000, seed=5, chunk=50))
        await eventually_async(
            lambda: asyncio.to_thread(lambda: rec.metrics()["trades_written"] >= 100),
            WAIT,
            0.01,
            "the recorder writing",
        )
        code = rec.kill()  # kill -9, while trades keep coming (most likely)
        await work
        return code

    assert run_async(first_half()) == -9
    # what the killed recorder left: for every market a gap-free prefix of the engine's trades
    with opened(rec.clickhouse) as store:
        at_crash = table_rows(store)
    truth = run_async(engine_trades(engine.commands, ex))
    last = {m: max((r[1] for r in at_crash if r[0] == m), default=0) for m in ex.markets}
    assert len(at_crash) >= 100
    assert at_crash == [r for r in expected_rows(ex, truth) if r[1] <= last[r[0]]]
    # more trades while it is down, a restart, and more trades after it
    run_async(run_workload(engine.commands, ex, 3000, seed=6, fund=False))
    rec.start()
    run_async(run_workload(engine.commands, ex, 1000, seed=7, fund=False))
    truth = run_async(engine_trades(engine.commands, ex))
    n = trade_count(truth)
    assert n > len(at_crash)
    eventually(lambda: rec.count() == n, WAIT, 0.1, f"{n} trades after the restart")
    assert rec.stop() == 0
    with opened(rec.clickhouse) as store:
        rows = table_rows(store)
    assert rows == expected_rows(ex, truth)


# ==================================================================== faults, in process


async def _serve(rec: Recorder) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(rec.app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def _with_recorder(rec: Recorder, body: Callable[[str], Awaitable[Any]]) -> Any:
    """Prepare and run ``rec`` (with its HTTP API), run ``body(base_url)``, stop it."""
    rec.prepare()
    runner, base = await _serve(rec)
    task = asyncio.ensure_future(rec.run())
    try:
        return await body(base)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await rec.stop()
        await runner.cleanup()


async def _record_workload(rec: Recorder, engine: EngineProc, seeds: list[int]) -> dict:
    """Workloads through the engine while ``rec`` runs; returns the engine's trades and the
    recorder's /stats once every trade is written."""
    ex = rec.ex

    async def body(base: str) -> dict:
        for i, seed in enumerate(seeds):
            await run_workload(engine.commands, ex, 3000, seed=seed, fund=i == 0)
        truth = await engine_trades(engine.commands, ex)
        n = trade_count(truth)
        assert n > 200

        def stored() -> int:
            return rec.store.client.query("SELECT count() FROM trades").result_rows[0][0]

        # trades_written is not the measure here: rows whose acknowledgement was lost are in
        # the table but were never counted as written
        await eventually_async(
            lambda: rec.metrics.buffered == 0 and stored() == n, WAIT, 0.05, f"{n} trades stored"
        )
        async with aiohttp.ClientSession() as session, session.get(f"{base}/stats") as r:
            assert r.status == 200
            metrics = await r.json()
        return {"truth": truth, "metrics": metrics}

    return await _with_recorder(rec, body)


def test_clickhouse_failing_n_inserts_then_back_loses_and_doubles_nothing(
    engine_procs: Callable[..., EngineProc], tmp_path: Path
) -> None:
    engine = engine_procs().start()
    ex = _exchange(engine, batch_ms=20)
    store = FlakyStore(_chdb(tmp_path), failures=4)
    try:
        rec = Recorder(ex, store)
        out = run_async(_record_workload(rec, engine, [21, 22]))
        rows = table_rows(store)
    finally:
        store.close()
    assert store.failed == 4 and store.calls > 4
    assert out["metrics"]["insert_failures"] == 4
    assert out["metrics"]["clickhouse_ok"] is True
    assert rows == expected_rows(ex, out["truth"])


def test_clickhouse_away_shows_in_health_and_metrics_then_catches_up(
    engine_procs: Callable[..., EngineProc], tmp_path: Path
) -> None:
    engine = engine_procs().start()
    ex = _exchange(engine, batch_ms=20)
    store = FlakyStore(_chdb(tmp_path), down=True)

    async def body(base: str) -> dict:
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> tuple[int, Any]:
                async with session.get(f"{base}{path}") as r:
                    return r.status, await r.json()

            await run_workload(engine.commands, ex, 3000, seed=23)

            async def away() -> bool:
                status, health = await get("/health")
                _, metrics = await get("/stats")
                return (
                    status == 503
                    and health["ok"] is False
                    and metrics["insert_failures"] >= 3
                    and metrics["buffered"] > 0
                    and metrics["clickhouse_ok"] is False
                )

            await eventually_async(away, WAIT, 0.05, "the outage visible in /health, /stats")
            store.down = False
            await run_workload(engine.commands, ex, 2000, seed=24, fund=False)
            truth = await engine_trades(engine.commands, ex)
            n = trade_count(truth)

            async def caught_up() -> bool:
                status, _ = await get("/health")
                _, metrics = await get("/stats")
                return status == 200 and metrics["trades_written"] == n

            await eventually_async(caught_up, WAIT, 0.05, f"{n} trades written after it")
            return {"truth": truth, "metrics": (await get("/stats"))[1]}

    try:
        out = run_async(_with_recorder(Recorder(ex, store), body))
        rows = table_rows(store)
    finally:
        store.close()
    assert out["metrics"]["insert_failures"] == store.failed >= 3
    assert out["metrics"]["buffered"] == 0
    assert rows == expected_rows(ex, out["truth"])


def test_lost_insert_acknowledgements_do_not_double_trades(
    engine_procs: Callable[..., EngineProc], tmp_path: Path
) -> None:
    engine = engine_procs().start()
    ex = _exchange(engine, batch_ms=20)
    store = FlakyStore(_chdb(tmp_path), failures=3, commit_first=True)
    try:
        rec = Recorder(ex, store)
        out = run_async(_record_workload(rec, engine, [31, 32]))
        rows = table_rows(store)
    finally:
        store.close()
    # a retry whose rows were all committed already inserts nothing (and so cannot fail)
    assert store.failed >= 1
    assert out["metrics"]["insert_failures"] == store.failed
    assert rows == expected_rows(ex, out["truth"])


@pytest.mark.parametrize("keep", [10, 10**9], ids=["most-dropped", "all-dropped"])
def test_lost_feed_notifications_do_not_lose_trades(
    engine_procs: Callable[..., EngineProc], tmp_path: Path, keep: int
) -> None:
    """The recorder pulls trades by id from the engine; the PUB feed only says when to ask."""
    engine = engine_procs().start()
    ex = _exchange(engine, batch_ms=20)
    store = Store(_chdb(tmp_path))
    try:
        rec = LossyRecorder(ex, store, keep=keep)
        out = run_async(_record_workload(rec, engine, [41, 42]))
        rows = table_rows(store)
    finally:
        store.close()
    assert rec.heard > 10
    assert rec.dropped >= rec.heard * 0.9
    assert out["metrics"]["unrecoverable"] == 0
    assert rows == expected_rows(ex, out["truth"])


class WatchedRecorder(Recorder):
    """A real Recorder that notes the most it ever held and every best bid/offer it heard."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peak_trades = 0
        self.peak_bbo = 0
        self.bbo_heard: list[tuple] = []

    def note(self) -> None:
        self.peak_trades = max(self.peak_trades, self.buffered())
        self.peak_bbo = max(self.peak_bbo, len(self.bbo_rows))

    def buffer(self, *args: Any) -> None:
        super().buffer(*args)
        self.note()

    def on_bbo(self, b: Any) -> None:
        super().on_bbo(b)
        self.bbo_heard.append((b.market, b.ts, b.bid_price, b.bid_qty, b.ask_price, b.ask_qty))
        self.note()

    async def flush(self, final: bool = False) -> bool:
        try:
            return await super().flush(final)
        finally:
            self.note()


BBO_QUERY = (
    "SELECT market, toUnixTimestamp64Nano(ts), bid_ticks, bid_lots, ask_ticks, ask_lots FROM bbo"
)


def test_failing_inserts_hold_bounded_buffers_drop_oldest_bbo_and_lose_no_trade(
    engine_procs: Callable[..., EngineProc], tmp_path: Path
) -> None:
    """ClickHouse's tables vanish (renamed away: every insert and read-back fails for real)
    while trades and best bid/offer changes keep coming. The trade buffer stops at max_buffer
    (the engine keeps the rest), the bbo buffer at max_bbo_buffer, dropping its oldest rows and
    counting them; when the tables come back every trade is there exactly once and the newest
    bbo rows are too."""
    engine = engine_procs().start()
    bound, bbo_bound = 100, 40
    ex = _exchange(engine, batch_ms=20, max_buffer=bound, max_bbo_buffer=bbo_bound)
    store = Store(_chdb(tmp_path))
    rec = WatchedRecorder(ex, store)

    def command(sql: str) -> None:
        store.client.command(sql)

    async def body(base: str) -> dict:
        loop = asyncio.get_running_loop()
        await run_workload(engine.commands, ex, 500, seed=51)
        await eventually_async(lambda: rec.metrics.buffered == 0, WAIT, 0.05, "first trades in")
        await loop.run_in_executor(None, command, "RENAME TABLE trades TO away_t, bbo TO away_b")
        for seed in (52, 53):
            await run_workload(engine.commands, ex, 3000, seed=seed, fund=False)
        truth_down = trade_count(await engine_trades(engine.commands, ex))

        def away() -> bool:
            m = rec.metrics
            return m.insert_failures >= 3 and m.buffered >= bound and len(rec.bbo_rows) >= bbo_bound

        await eventually_async(away, WAIT, 0.05, "both buffers full while inserts fail")
        down = {
            "heard": len(rec.bbo_heard),
            "buffered": rec.metrics.buffered,
            "bbo_buffered": len(rec.bbo_rows),
            "written_before": rec.metrics.trades_written,
            "truth": truth_down,
        }
        await loop.run_in_executor(None, command, "RENAME TABLE away_t TO trades, away_b TO bbo")
        truth = await engine_trades(engine.commands, ex)
        n = trade_count(truth)

        def caught_up() -> bool:
            m = rec.metrics
            return m.trades_written == n and m.buffered == 0 and len(rec.bbo_rows) == 0

        await eventually_async(caught_up, WAIT, 0.05, f"{n} trades written once it is back")
        return {"truth": truth, "down": down}

    try:
        out = run_async(_with_recorder(rec, body))
        rows = table_rows(store)
        bbo = {tuple(int(v) if i else v for i, v in enumerate(r))
               for r in store.client.query(BBO_QUERY).result_rows}  # fmt: skip
    finally:
        store.close()
    down, m = out["down"], rec.metrics
    # while it was down: both buffers at their bound, never past it; trades waited in the engine
    assert down["buffered"] == bound and down["truth"] > down["written_before"] + bound
    assert down["bbo_buffered"] == bbo_bound
    assert rec.peak_trades == bound and rec.peak_bbo == bbo_bound
    # trades: exactly once, none lost
    assert m.unrecoverable == 0
    assert rows == expected_rows(ex, out["truth"])
    # bbo: every row heard was either written or counted as dropped; the newest are there
    assert m.bbo_dropped > 0
    assert len(rec.bbo_heard) == m.bbo_written + m.bbo_dropped
    assert len(bbo) <= m.bbo_written and bbo <= set(rec.bbo_heard)
    assert set(rec.bbo_heard[down["heard"] - bbo_bound : down["heard"]]) <= bbo


# ==================================================================== a ClickHouse server URL


def _refusing_url() -> str:
    return f"http://default:@127.0.0.1:{free_port()}/default"


def test_prepare_against_a_refusing_server_fails_cleanly() -> None:
    url = _refusing_url()
    with pytest.raises(ClickHouseError, match="(?i)refused"):
        Recorder(_exchange(), Store(url)).prepare()


def test_recorder_process_keeps_retrying_while_the_server_refuses(
    engine_procs: Callable[..., EngineProc], recorder_procs: Callable[..., RecorderProc]
) -> None:
    engine = engine_procs().start()
    url = _refusing_url()
    rec = recorder_procs(engine, clickhouse=url)
    rec.spawn_on_free_port()

    eventually(
        lambda: not rec.running or rec.log().count("not ready") >= 2,
        WAIT,
        0.1,
        "two retries logged (or an exit)",
    )
    assert rec.running, f"the recorder exited with {rec.popen.poll()}:\n{rec.log()}"  # type: ignore[union-attr]
    assert url.split("@")[1].split("/")[0] in rec.log()
    assert "Traceback" not in rec.log()
    rec.stop()


# ==================================================================== bad requests


@pytest.fixture(name="stack", scope="module")
def stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecorderProc]:
    """One engine with some trades and one recorder process, shared by the bad-data tests."""
    tmp = tmp_path_factory.mktemp("bad-data")
    engine = EngineProc(tmp / "engine")
    rec = RecorderProc(tmp / "recorder", engine=engine, batch_ms=20)
    try:
        engine.start()
        rec.start()
        ex = _exchange()
        run_async(run_workload(engine.commands, ex, 2000, seed=9))
        n = trade_count(run_async(engine_trades(engine.commands, ex)))
        eventually(lambda: rec.count() == n, WAIT, 0.1, "trades recorded")
        yield rec
    finally:
        rec.cleanup()
        engine.cleanup()
        print(rec.logs(), engine.logs())


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("market=NOPE-USD&interval=1m", "unknown market 'NOPE-USD'"),
        ("interval=1m", "unknown market ''"),
        ("market=BTC-USD&interval=7m", "unknown interval '7m'"),
        ("market=BTC-USD&interval=1m&start=2000&end=1000", "must be after start"),
        ("market=BTC-USD&interval=1m&start=1000&end=1000", "must be after start"),
        ("market=BTC-USD&interval=1m&limit=0", "limit must be 1..10000, was 0"),
        ("market=BTC-USD&interval=1m&limit=1000000000", "limit must be 1..10000"),
        ("market=BTC-USD&interval=1m&limit=-5", "limit must be 1..10000"),
        ("market=BTC-USD&interval=1m&limit=ten", "ten"),
        ("market=BTC-USD&interval=1m&start=yesterday", "yesterday"),
    ],
)
def test_http_klines_reject_bad_requests_with_a_reason(
    stack: RecorderProc, query: str, reason: str
) -> None:
    status, body = stack.get(f"/klines?{query}")
    assert status == 400, body
    assert reason in body["error"]


def test_http_klines_and_cli_answer_good_requests(stack: RecorderProc) -> None:
    status, body = stack.get("/klines?market=BTC-USD&interval=1h&limit=5")
    assert status == 200 and body and sum(c["trades"] for c in body) > 0
    out = stack.cli("klines", "BTC-USD", "1h", "--limit", "5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split()[:3] == ["open", "time", "(UTC)"]
    assert len(out.stdout.splitlines()) == 1 + len(body)
    out = stack.cli("sql", "SELECT count() FROM trades")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["count()", str(stack.count())]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["klines", "NOPE-USD", "1m"], "unknown market 'NOPE-USD'"),
        (["klines", "BTC-USD", "7m"], "unknown interval '7m'"),
        (
            ["klines", "BTC-USD", "1m", "--since", "2026-01-02", "--until", "2026-01-01"],
            "must be after start",
        ),
        (["klines", "BTC-USD", "1m", "--limit", "0"], "limit must be 1..10000, was 0"),
        (["klines", "BTC-USD", "1m", "--limit", "99999999"], "limit must be 1..10000"),
        (["sql", "SELEKT 1"], "only a single SELECT"),
        (["sql", "SELECT * FROM no_such_table"], "no_such_table"),
    ],
)
def test_cli_rejects_bad_requests_with_a_message(
    stack: RecorderProc, args: list[str], reason: str
) -> None:
    out = stack.cli(*args)
    assert out.returncode != 0
    assert reason in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_rejects_an_unreadable_time_with_a_message(stack: RecorderProc) -> None:
    out = stack.cli("klines", "BTC-USD", "1m", "--since", "last tuesday")
    assert out.returncode != 0
    assert "last tuesday" in out.stderr
    assert "Traceback" not in out.stderr, out.stderr


def test_http_sql_refuses_writes_and_changes_nothing(
    engine_procs: Callable[..., EngineProc], recorder_procs: Callable[..., RecorderProc]
) -> None:
    ex = _exchange()
    engine = engine_procs().start()
    rec = recorder_procs(engine, batch_ms=20).start()
    run_async(run_workload(engine.commands, ex, 2000, seed=13))
    truth = run_async(engine_trades(engine.commands, ex))
    eventually(lambda: rec.count() == trade_count(truth), WAIT, 0.1, "trades recorded")
    for query in (
        "DROP TABLE trades",
        "TRUNCATE TABLE trades",
        "ALTER TABLE trades DELETE WHERE 1",
        "CREATE TABLE evil (a UInt8) ENGINE = Memory",
        "INSERT INTO trades (market, trade_id) VALUES ('BTC-USD', 999999)",
    ):
        status, body = http(rec.url("/sql"), query.encode())
        assert status == 400, (query, body)
        assert "readonly" in body["error"].lower(), (query, body)
    assert rec.stop() == 0
    with opened(rec.clickhouse) as store:
        assert table_rows(store) == expected_rows(ex, truth)
        tables = {r[0] for r in store.client.query("SHOW TABLES").result_rows}
    assert "evil" not in tables


def test_recorder_keeps_recording_and_answering_after_a_refused_sql_write(
    engine_procs: Callable[..., EngineProc], recorder_procs: Callable[..., RecorderProc]
) -> None:
    ex = _exchange()
    engine = engine_procs().start()
    rec = recorder_procs(engine, batch_ms=20).start()
    status, body = http(rec.url("/sql"), b"INSERT INTO accounts VALUES (1, 'x', 'client')")
    assert status == 400 and "readonly" in body["error"].lower(), body
    run_async(run_workload(engine.commands, ex, 2000, seed=17))
    n = trade_count(run_async(engine_trades(engine.commands, ex)))

    def written() -> bool:
        metrics = rec.metrics()
        assert metrics["trades_written"] == n, metrics
        return True

    eventually(written, 15, 0.1, f"{n} trades written after the refused INSERT")
    assert rec.metrics()["insert_failures"] == 0
    status, body = http(rec.url("/sql"), b"SELECT count() FROM trades")
    assert (status, body.get("rows")) == (200, [[n]]), body


def test_accounts_created_while_running_reach_the_accounts_table_once(
    engine_procs: Callable[..., EngineProc], recorder_procs: Callable[..., RecorderProc]
) -> None:
    from gateways.accounts import AccountStore

    engine = engine_procs().start()
    rec = recorder_procs(engine, accounts_every=0.2)
    rec.accounts.parent.mkdir(parents=True, exist_ok=True)
    store = AccountStore(rec.accounts)
    try:
        first = store.create_account("mm")
        rec.start()
        at_start = rec.sql("SELECT account, name, class FROM accounts")
        assert at_start == [[first, "mm", "market_maker"]]
        later = [store.create_account(n) for n in ("alice", "noise")]
        want = [[first, "mm", "market_maker"], [later[0], "alice", "client"]]
        want.append([later[1], "noise", "liquidity_taker"])

        def copied() -> bool:
            return rec.sql("SELECT account, name, class FROM accounts ORDER BY account") == want

        eventually(copied, WAIT, 0.1, "accounts made after start in ClickHouse")
        assert "new or renamed, copied to ClickHouse" in rec.log()
        assert rec.stop() == 0
    finally:
        store.close()
    with opened(rec.clickhouse) as ch:  # each account once: copied rows are not copied again
        assert ch.sql("SELECT count() FROM accounts")[1] == [[3]]

"""``python -m bench recorder``: how fast trades get into embedded ClickHouse, how far behind the
recorder runs, and how fast candles come back.

1. Store insert: ``Store.insert_trades`` of ready column batches (``batch_rows`` rows each, as
   the recorder flushes) into a fresh chDB, the 1m-candle materialized view included.
2. Buffer + insert: the recorder's own in-process path without sockets: ``Recorder.buffer``
   of synthetic ``Trade`` lists as a ``TradesReply`` carries them, then ``Recorder.insert``.
3. Catch-up, the whole path: an engine process (``EngineServer``, this module's ``engine-child``)
   whose recent-trade memory is pre-filled with N trades per market; a ``Recorder`` here pulls
   them (``TradesRequest`` over ZeroMQ), buffers and inserts them. Trades/s from the first pull to
   the last row committed: the most it can ingest, the ceiling of any sustained rate.
4. Live: the same engine child makes trades at a fixed offered rate, stamped with the wall clock
   and announced on the PUB feed as the engine does; the recorder follows with the shipped
   config. Lag per trade = engine timestamp -> its INSERT returned. A rate is sustained when
   lag p99 stays under 1 s (a recorder falling behind sees its lag grow without bound).
5. Klines: 1,440 minutes of synthetic trades of one market (inserted 10 minutes per INSERT),
   then ``Store.klines`` over the day for 1m (1,440 candles), 1h (24) and 1d (1).

Throughputs are medians over runs, query times medians (and p99) over repeated queries. Child
processes are stopped on exit and die with the benchmark (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.engine_bench import children, machine_info
from bench.procs import Children, LoadMeter, free_ports, interrupt_on_sigterm
from protocol import config
from protocol.messages import Trade

TARGETS = {"ingest": 200_000, "kline_ms": 20.0, "lag_p99_ms": 1000.0}
NS = 1_000_000_000
DAY0 = 1_767_225_600  # 2026-01-01T00:00:00Z, the klines phase's day


def say(*parts: object) -> None:
    print(*parts, flush=True)


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


# ---------------------------------------------------------------------- synthetic trades
class TradeMaker:
    """Plausible trades, round-robin over the markets: contiguous ids per market, a price
    random walk around each market's mid, quantities of 1..64 lots."""

    def __init__(self, ex: config.Exchange, first_ids: dict[str, int] | None = None) -> None:
        self.markets = list(ex.markets.values())
        self.next_id = {m.symbol: (first_ids or {}).get(m.symbol, 1) for m in self.markets}
        self.price = {m.symbol: max(100, m.max_price // 1000) for m in self.markets}
        self.walk = itertools.cycle([3, -1, 0, -2, 1, 2, -3, 0, 1, -1, 2, -2])
        self.qty = itertools.cycle(range(1, 65))
        self.turn = itertools.cycle(range(len(self.markets)))

    def make(self, n: int, ts: int) -> dict[str, list[tuple[Trade, int, int]]]:
        """``n`` trades stamped ``ts``: per market, (trade, maker account, taker account)."""
        out: dict[str, list[tuple[Trade, int, int]]] = {m.symbol: [] for m in self.markets}
        walk, qty, turn = self.walk, self.qty, self.turn
        for _ in range(n):
            sym = self.markets[next(turn)].symbol
            tid = self.next_id[sym]
            self.next_id[sym] = tid + 1
            self.price[sym] = px = max(1, self.price[sym] + next(walk))
            q = next(qty)
            out[sym].append((Trade(tid, px, q, 1 + (tid & 1), ts, tid), 1 + q % 7, 8 + q % 5))
        return out


def columns_of(ex: config.Exchange, made: dict[str, list[tuple[Trade, int, int]]]) -> list[list]:
    """Column-oriented rows in TRADE_COLUMNS order, as Recorder.buffer builds them."""
    cols: list[list] = [[] for _ in range(10)]
    for sym, rows in made.items():
        tlq = ex.markets[sym].tick_lot_quote
        for t, maker, taker in rows:
            for col, v in zip(
                cols,
                (sym, t.trade_id, t.ts, t.price, t.qty, t.price * t.qty * tlq, t.taker_side,
                 maker, taker, t.seq),
                strict=True,
            ):  # fmt: skip
                col.append(v)
    return cols


# ------------------------------------------------------------------------ 1. Store insert
def insert_phase(args: argparse.Namespace, ex: config.Exchange) -> dict[str, Any]:
    from recorder.store import Store

    n, batch = args.insert_trades, ex.recorder.batch_rows
    say(
        f"\n## 1. Store.insert_trades: {n:,} trades in INSERTs of {batch:,} "
        f"(columns ready), {args.runs} runs"
    )
    rates = []
    for run in range(args.runs):
        maker = TradeMaker(ex)
        batches = [columns_of(ex, maker.make(batch, (DAY0 + i) * NS)) for i in range(0, n // batch)]
        with scratch("bench-rec-insert-") as tmp:
            store = Store(f"chdb://{tmp / 'ch'}")
            try:
                store.migrate()
                t0 = time.perf_counter()
                for cols in batches:
                    store.insert_trades(cols)
                dt = time.perf_counter() - t0
                (count,) = store.client.query("SELECT count() FROM trades").result_rows[0]
            finally:
                store.close()
        assert count == len(batches) * batch, count
        rates.append(count / dt)
        say(f"  run {run + 1}: {count:,} trades in {dt:.3f}s = {count / dt:,.0f} trades/s")
    return {"rates": rates, "median": statistics.median(rates)}


# ---------------------------------------------------------------------- 2. buffer + insert
def buffer_phase(args: argparse.Namespace, ex: config.Exchange) -> dict[str, Any]:
    from recorder.service import Recorder
    from recorder.store import Store

    n, batch = args.insert_trades, ex.recorder.batch_rows
    say(
        f"\n## 2. Recorder.buffer + Recorder.insert in process: {n:,} trades, "
        f"replies of 10,000 a market, INSERTs of {batch:,}, {args.runs} runs"
    )
    rates = []
    for run in range(args.runs):
        maker = TradeMaker(ex)
        replies = []
        for i in range(n // 30_000):
            for sym, rows in maker.make(30_000, (DAY0 + i) * NS).items():
                replies.append((sym, [r[0] for r in rows], [(r[1], r[2]) for r in rows]))
        with scratch("bench-rec-buffer-") as tmp:
            store = Store(f"chdb://{tmp / 'ch'}")
            try:
                rec = Recorder(ex, store)
                rec.prepare()
                t0 = time.perf_counter()
                for sym, trades, accounts in replies:
                    rec.buffer(sym, trades, accounts)
                    if rec.buffered() >= batch:
                        rows, rec.rows = rec.rows, [[] for _ in range(10)]
                        rec.insert(rows)
                if rec.buffered():
                    rows, rec.rows = rec.rows, [[] for _ in range(10)]
                    rec.insert(rows)
                dt = time.perf_counter() - t0
                count = rec.metrics.trades_written
            finally:
                store.close()
        rates.append(count / dt)
        say(f"  run {run + 1}: {count:,} trades in {dt:.3f}s = {count / dt:,.0f} trades/s")
    return {"rates": rates, "median": statistics.median(rates)}


# ------------------------------------------------------------ 3 and 4. through an engine
def child_main(argv: list[str]) -> int:
    """``python -m bench.recorder_bench engine-child ...``: an EngineServer that makes trades
    into its own recent-trade memory (and, live, announces them on its PUB socket)."""
    import uvloop

    from engine.server import EngineServer

    p = argparse.ArgumentParser(prog="engine-child")
    p.add_argument("--commands", required=True)
    p.add_argument("--market-data", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--prefill", type=int, default=0, help="trades per market already made")
    p.add_argument("--rate", type=float, default=0.0, help="trades/s after a SIGUSR1")
    p.add_argument("--seconds", type=float, default=0.0)
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    ex = config.load()
    ex.engine.commands, ex.engine.market_data = args.commands, args.market_data
    server = EngineServer(ex, Path(args.data_dir))
    server.recover()
    server.bind()
    engine = server.engine
    maker = TradeMaker(ex)
    if args.prefill:
        ts = time.time_ns()
        for _ in range(args.prefill // 10_000):
            for sym, rows in maker.make(10_000 * len(ex.markets), ts).items():
                engine.books[sym].recent.extend(rows)
        for sym, book in engine.books.items():
            book.next_trade_id = maker.next_id[sym]

    async def generate(go: asyncio.Event) -> None:
        await go.wait()
        total, made, t0 = int(args.rate * args.seconds), 0, time.perf_counter()
        while made < total:
            await asyncio.sleep(0.002)
            due = min(total, int(args.rate * (time.perf_counter() - t0))) - made
            if due <= 0:
                continue
            ts = time.time_ns()
            for sym, rows in maker.make(due, ts).items():
                book = engine.books[sym]
                book.recent.extend(rows)
                book.trades.extend(r[0] for r in rows)
                book.next_trade_id = maker.next_id[sym]
                engine.dirty.add(book)
            server._publish(ts)  # the engine's own Trades notification path
            made += due
        print("DONE", json.dumps({"made": made, "seconds": time.perf_counter() - t0}), flush=True)

    async def main() -> None:
        go = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, go.set)
        task = asyncio.ensure_future(generate(go)) if args.rate else None
        await server.serve()
        if task is not None:
            task.cancel()

    uvloop.run(main())
    return 0


class _Engine:
    """The engine child on free ports, with its log, stopped on exit."""

    def __init__(self, kids: Children, tmp: Path, **child: float) -> None:
        cmd, md = free_ports(2)
        self.commands, self.market_data = f"tcp://127.0.0.1:{cmd}", f"tcp://127.0.0.1:{md}"
        argv = [
            "bench.recorder_bench",
            "engine-child",
            "--commands",
            self.commands,
            "--market-data",
            self.market_data,
            "--data-dir",
            str(tmp / "engine"),
        ]
        for key, value in child.items():
            argv += [f"--{key}", str(value)]
        self.child = kids.spawn(argv, tmp / "engine.log")
        self.child.wait_log("engine ready", timeout=30.0)

    def go(self) -> None:
        """Start making trades (live)."""
        self.child.proc.send_signal(signal.SIGUSR1)

    def done(self) -> dict[str, Any]:
        """What the live generator reported when it had made every trade."""
        for line in self.child.text().splitlines():
            if line.startswith("DONE "):
                return json.loads(line[5:])
        raise RuntimeError(f"the engine child made no report:\n{self.child.text()[-2000:]}")


def _timed_parts(ex: config.Exchange, url: str) -> tuple[Any, Any]:
    """A Recorder that notes its first pull, over a Store that notes every commit's lags."""
    from recorder.service import Recorder
    from recorder.store import Store

    class TimedStore(Store):
        def __init__(self, url: str) -> None:
            super().__init__(url)
            self.rows = 0
            self.lags_ms: list[float] = []
            self.last_commit = 0.0

        def insert_trades(self, columns: list[list]) -> None:
            super().insert_trades(columns)
            now = time.time_ns()
            self.last_commit = time.perf_counter()
            self.rows += len(columns[0])
            self.lags_ms += [(now - ts) / 1e6 for ts in columns[2]]

    class TimedRecorder(Recorder):
        first_pull = 0.0

        async def pull(self, market: str) -> bool:
            if not self.first_pull and self.engine.available:
                self.first_pull = time.perf_counter()
            return await super().pull(market)

    store = TimedStore(url)
    return TimedRecorder(ex, store), store


async def _follow(
    rec: Any, store: Any, total: int, go: Callable[[], None] | None, budget: float
) -> None:
    """Run ``rec`` until ``store`` holds ``total`` trades; call ``go`` once it is ready."""
    rec.prepare()
    task = asyncio.ensure_future(rec.run())
    try:
        deadline = time.monotonic() + 30
        while not (rec.engine.available and rec.feed.engine.available):
            if time.monotonic() > deadline:
                raise RuntimeError("the recorder did not reach the engine")
            await asyncio.sleep(0.01)
        if go is not None:
            await asyncio.sleep(0.3)  # the PUB/SUB subscription settles (slow joiner)
            go()
        else:
            rec.wake.set()  # as a first feed notification would
        deadline = time.monotonic() + budget
        while store.rows + rec.metrics.unrecoverable < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {store.rows:,} of {total:,} trades after {budget:.0f}s")
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await rec.stop()


def catchup_phase(args: argparse.Namespace, ex: config.Exchange) -> dict[str, Any]:
    per_market = args.prefill
    total = per_market * len(ex.markets)
    say(
        f"\n## 3. Catch-up through an engine process: {per_market:,} trades per market in its "
        f"memory ({total:,}), pulled, buffered and inserted by a Recorder, {args.catchup_runs} runs"
    )
    rates = []
    for run in range(args.catchup_runs):
        with scratch("bench-rec-catchup-") as tmp:
            kids = children()
            try:
                eng = _Engine(kids, tmp, prefill=per_market)
                ex.engine.commands, ex.engine.market_data = eng.commands, eng.market_data
                rec, store = _timed_parts(ex, f"chdb://{tmp / 'ch'}")
                try:
                    asyncio.run(_follow(rec, store, total, None, 120))
                finally:
                    store.close()
            finally:
                kids.close(5.0)
        dt = store.last_commit - rec.first_pull
        rates.append(total / dt)
        say(
            f"  run {run + 1}: {total:,} trades in {dt:.3f}s = {total / dt:,.0f} trades/s "
            f"({rec.metrics.inserts} INSERTs)"
        )
    return {"rates": rates, "median": statistics.median(rates)}


def live_phase(args: argparse.Namespace, ex: config.Exchange) -> dict[str, Any]:
    say(
        f"\n## 4. Live: the engine child makes trades at a fixed rate for {args.live_seconds:g}s;"
        f" the recorder follows (batch_rows {ex.recorder.batch_rows:,}, batch_ms "
        f"{ex.recorder.batch_ms}); lag = engine timestamp -> INSERT returned"
    )
    out = []
    for rate in args.rates:
        total = int(rate * args.live_seconds)
        with scratch("bench-rec-live-") as tmp:
            kids = children()
            try:
                eng = _Engine(kids, tmp, rate=rate, seconds=args.live_seconds)
                ex.engine.commands, ex.engine.market_data = eng.commands, eng.market_data
                rec, store = _timed_parts(ex, f"chdb://{tmp / 'ch'}")
                budget = args.live_seconds + 60
                meter = LoadMeter()
                meter.watch(eng.child.pid)
                try:
                    asyncio.run(_follow(rec, store, total, eng.go, budget))
                    made = eng.done()
                    foreign = meter.foreign_cores()
                except RuntimeError as e:
                    say(f"  {rate:>9,}/s: {e}")
                    out.append({"rate": rate, "kept_up": False, "error": str(e)})
                    continue
                finally:
                    store.close()
            finally:
                kids.close(5.0)
        lags = store.lags_ms
        res = {
            "rate": rate,
            "made_per_s": made["made"] / made["seconds"],
            "trades": store.rows,
            "unrecoverable": rec.metrics.unrecoverable,
            "inserts": rec.metrics.inserts,
            "lag_p50_ms": pct(lags, 0.50),
            "lag_p99_ms": pct(lags, 0.99),
            "lag_max_ms": max(lags),
            "foreign_cores": foreign,
        }
        res["kept_up"] = res["lag_p99_ms"] < TARGETS["lag_p99_ms"] and not res["unrecoverable"]
        out.append(res)
        say(
            f"  {rate:>9,}/s (made at {res['made_per_s']:,.0f}/s): {store.rows:,} trades in "
            f"{res['inserts']} INSERTs, {res['unrecoverable']:,} lost; lag p50 "
            f"{res['lag_p50_ms']:.0f} ms, p99 {res['lag_p99_ms']:.0f} ms, max "
            f"{res['lag_max_ms']:.0f} ms -> {'kept up' if res['kept_up'] else 'FELL BEHIND'}"
            f" (other load: {foreign:.2f} cores)"
        )
    sustained = 0
    for r in out:  # the highest rate below which every offered rate kept up
        if not r["kept_up"]:
            break
        sustained = r["rate"]
    return {"runs": out, "sustained": sustained}


# -------------------------------------------------------------------------- 5. klines
def klines_phase(args: argparse.Namespace, ex: config.Exchange) -> dict[str, Any]:
    from recorder.store import Store

    per_min, market = args.trades_per_minute, "BTC-USD"
    say(
        f"\n## 5. Klines over one day: 1,440 minutes x {per_min} trades of {market} "
        f"(one INSERT per 10 minutes), each query {args.queries} times"
    )
    one = config.load()
    for sym in [s for s in one.markets if s != market]:
        del one.markets[sym]
    maker = TradeMaker(one)
    res: dict[str, Any] = {}
    with scratch("bench-rec-klines-") as tmp:
        store = Store(f"chdb://{tmp / 'ch'}")
        try:
            store.migrate()
            for ten in range(144):
                made: dict[str, list] = {market: []}
                for minute in range(ten * 10, ten * 10 + 10):
                    for k in range(per_min):
                        ts = (DAY0 + minute * 60) * NS + k * (60 * NS // per_min)
                        made[market] += maker.make(1, ts)[market]
                store.insert_trades(columns_of(ex, made))
            day = (DAY0, DAY0 + 86_400)
            for interval, want in (("1m", 1440), ("1h", 24), ("1d", 1)):
                got = store.klines(market, interval, *day, 10_000)  # warm-up, and a check
                assert len(got) == want and sum(c.trades for c in got) == 1440 * per_min, (
                    interval,
                    len(got),
                )
                times = []
                for _ in range(args.queries):
                    t0 = time.perf_counter()
                    store.klines(market, interval, *day, 10_000)
                    times.append((time.perf_counter() - t0) * 1000)
                res[interval] = {
                    "candles": want,
                    "median_ms": statistics.median(times),
                    "p99_ms": pct(times, 0.99),
                }
                say(
                    f"  {interval:>3} ({want:>5,} candles): median "
                    f"{res[interval]['median_ms']:.2f} ms, p99 {res[interval]['p99_ms']:.2f} ms"
                )
        finally:
            store.close()
    return res


# ------------------------------------------------------------------------------ summary
def summary(results: dict[str, Any]) -> list[str]:
    rows = []

    def row(what: str, value: str, target: str, ok: bool | None) -> None:
        verdict = "-" if ok is None else ("ok" if ok else "MISSED")
        rows.append(f"| {what} | {value} | {target} | {verdict} |")

    ingest = TARGETS["ingest"]
    for key, what in (
        ("insert", "Store.insert_trades, trades/s (median)"),
        ("buffer", "Recorder buffer + insert in process, trades/s (median)"),
        ("catchup", "ingest through an engine (catch-up), trades/s (median)"),
    ):
        if key in results:
            med = results[key]["median"]
            row(what, f"{med:,.0f}", f">= {ingest:,}", med >= ingest)
    live = results.get("live")
    if live:
        row(
            "live: highest rate kept up (lag p99 < 1 s, it and every lower one)",
            f"{live['sustained']:,}/s",
            f">= {ingest:,}/s",
            live["sustained"] >= ingest,
        )
        for r in live["runs"]:
            if "lag_p99_ms" in r:
                row(
                    f"live at {r['rate']:,}/s: lag p50 / p99 (trade ts -> committed)",
                    f"{r['lag_p50_ms']:.0f} / {r['lag_p99_ms']:.0f} ms",
                    "p99 < 1,000 ms",
                    r["kept_up"],
                )
    for interval, res in (results.get("klines") or {}).items():
        row(
            f"klines {interval} over a day ({res['candles']:,} candles), median / p99",
            f"{res['median_ms']:.2f} / {res['p99_ms']:.2f} ms",
            f"< {TARGETS['kline_ms']:g} ms",
            res["median_ms"] < TARGETS["kline_ms"],
        )
    return ["| measure | result | target | |", "|---|---|---|---|", *rows]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="short smoke run (about a minute)")
    p.add_argument("--config", help="exchange TOML (default: the shipped one)")
    p.add_argument(
        "--only",
        default="insert,buffer,catchup,live,klines",
        help="comma-separated phases (insert, buffer, catchup, live, klines)",
    )
    p.add_argument("--runs", type=int, help="runs of phases 1-2 (default 5, quick 2)")
    p.add_argument("--insert-trades", type=int, help="trades per run of 1-2 (default 1,000,000)")
    p.add_argument("--catchup-runs", type=int, help="catch-up runs (default 3, quick 1)")
    p.add_argument("--prefill", type=int, help="catch-up: trades per market (default 200,000)")
    p.add_argument(
        "--rates", type=lambda s: [int(x) for x in s.split(",")], help="live offered rates"
    )
    p.add_argument("--live-seconds", type=float, help="live: seconds per rate (default 10)")
    p.add_argument("--trades-per-minute", type=int, help="klines: trades a minute (default 100)")
    p.add_argument("--queries", type=int, help="klines: timed queries each (default 200)")
    p.add_argument("--json", help="also write the results here")


def _defaults(args: argparse.Namespace) -> None:
    for name, full, short in (
        ("runs", 5, 2),
        ("insert_trades", 1_000_000, 300_000),
        ("catchup_runs", 3, 1),
        ("prefill", 200_000, 50_000),
        ("rates", [50_000, 100_000, 200_000, 300_000, 400_000], [50_000, 200_000]),
        ("live_seconds", 10.0, 3.0),
        ("trades_per_minute", 100, 20),
        ("queries", 200, 30),
    ):
        if getattr(args, name) is None:
            setattr(args, name, short if args.quick else full)


def run(args: argparse.Namespace) -> int:
    _defaults(args)
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    interrupt_on_sigterm()
    logging.basicConfig(level=logging.WARNING, format="  [log] %(name)s: %(message)s")
    ex = config.load(args.config)
    say("# Recorder benchmark (embedded chDB)")
    args.cpu, args.client_cpu = -1, -1  # machine_info's fields; nothing is pinned here
    for line in machine_info(args)[:2]:
        say("  " + line)
    say(f"  mode: {'quick' if args.quick else 'full'}; config: recorder {ex.recorder}")
    fns = {
        "insert": insert_phase,
        "buffer": buffer_phase,
        "catchup": catchup_phase,
        "live": live_phase,
        "klines": klines_phase,
    }
    results: dict[str, Any] = {}
    failures = []
    t0 = time.perf_counter()
    try:
        for name in phases:
            try:
                results[name] = fns[name](args, ex)
            except (RuntimeError, OSError, ValueError, AssertionError) as e:
                failures.append(name)
                say(f"  !! phase {name} failed: {e}")
    except KeyboardInterrupt:
        say("\ninterrupted; child processes stopped")
        return 130
    say(f"\n## Summary ({time.perf_counter() - t0:.0f}s)\n")
    for line in summary(results):
        say(line)
    foreign = [r.get("foreign_cores", 0.0) for r in (results.get("live") or {}).get("runs", [])]
    if max(foreign, default=0.0) > 0.2:
        say(
            f"\nWARNING: other processes kept up to {max(foreign):.2f} of {os.cpu_count()} cores "
            "busy during the live runs; lags are higher and noisier than on an idle machine."
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["engine-child"]:
        sys.exit(child_main(sys.argv[2:]))
    sys.exit("usage: python -m bench recorder [--quick] (this module's entry is for its child)")

"""``python -m bench engine``: how fast is the matching engine, in three settings.

1. Core, in process: the engine's command handlers (dispatched by type, as ``Engine.apply``
   does with no account watched, minus its call) over the seeded mixed workload (60% resting
   limits, 25% cancels, 15% marketable IOCs; ledger on: every order locks funds, every fill
   settles with fees), on one pinned core, draining ``engine.outbox`` and
   ``engine.market_data(ts)`` every 256 commands as the process shell does (one timestamp per
   batch). Throughput is the median of
   N timed runs, each on a fresh engine after a warm-up; per-command latency comes from a
   separate sampled pass with ``perf_counter_ns`` around ``apply()``. The same stream through
   the naive reference matcher (bench/baseline.py: sorted lists, no ledger) gives a ratio, and
   through the leanest Python engine we could write for the same work (bench/lean.py: ledger,
   reports and market data, but lists and tuples, no validation or history) gives the ceiling.
2. Through ZeroMQ: the real engine process (``python -m engine``, pinned) and a separate client
   process (bench/zmq_client.py, pinned to another core) using ``EngineClient``: round-trip
   latency at a fixed offered rate, then sustained orders/s with a bounded in-flight window
   (bound by that client's CPU); then, on a fresh engine, the sustained rate with a pipelined
   raw client (bench/zmq_pipeline.py) that leaves the engine the bottleneck; and the transport
   floor: a bare pyzmq echo at the same rate (bench/zmq_echo.py).
3. Recovery: a journal of N commands written with ``engine.journal.Journal`` (batches of 1000),
   replayed by ``journal.recover()`` into a fresh engine; seconds per million commands.
4. Replication (``--only replication``, not in the default run; bench/replication_bench.py):
   phase 2's pipelined and 10k/s paced clients with the replicated journal off, on, and on with
   a standby following, in alternating rounds on one NATS cluster; then failover time.

Everything runs on loopback with temporary directories; child processes are stopped on exit,
on Ctrl-C and on SIGTERM (and die with the benchmark if it is killed: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

from bench import replication_bench
from bench.baseline import NaiveEngine
from bench.lean import LeanEngine
from bench.procs import Child, Children, LoadMeter, free_ports, interrupt_on_sigterm, percentiles
from bench.workload import E_TRIG, StopStream, funding, mixed, mixed_with_stops
from engine import build as engine_build
from engine.core import Engine
from protocol import config
from protocol.messages import Cancel, ExecReport, NewOrder, Rejected

ORIGIN = b"bench-gw"
DRAIN_EVERY = 256  # commands per simulated batch: outbox cleared, market data drained

TARGETS = {
    "core": 350_000,  # commands/s, engine core in process
    "zmq_p99_us": 200.0,  # round trip at 10k orders/s
    "sustained": 100_000,  # orders/s through ZeroMQ
    "recovery_s_per_m": 3.0,  # seconds per million journaled commands
}


def say(*parts: object) -> None:
    print(*parts, flush=True)


# ------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Run the block on one core (if it is ours), then restore the previous affinity."""
    before = os.sched_getaffinity(0)
    if cpu >= 0 and cpu in before:
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def fmt_pct(p: dict[str, float]) -> str:
    return (
        f"p50 {p['p50_us']:.1f} us  p99 {p['p99_us']:.1f} us  "
        f"p99.9 {p['p999_us']:.1f} us  max {p['max_us']:.1f} us  (n={p['n']:,})"
    )


def fmt_cpu(cpu: dict[str, float]) -> str:
    parts = [f"client process {cpu['client_cpu_pct']:.0f}%"]
    if "engine_cpu_pct" in cpu:
        parts.insert(0, f"engine process {cpu['engine_cpu_pct']:.0f}%")
    return "CPU (% of one core, all threads): " + ", ".join(parts)


def mix_of(stream: CoreStream) -> str:
    kinds: dict[str, int] = {}
    for c in stream.measured:
        k = kind_of(c)
        kinds[k] = kinds.get(k, 0) + 1
    return ", ".join(f"{k} {v / len(stream.measured):.0%}" for k, v in sorted(kinds.items()))


def kind_of(cmd: object) -> str:
    if type(cmd) is Cancel:
        return "cancel"
    if type(cmd) is NewOrder and cmd.trigger:
        return "new stop (waits)"
    if type(cmd) is NewOrder:
        return "new IOC (marketable)" if cmd.tif == 2 else "new GTC (resting)"
    return type(cmd).__name__


def machine_info(args: argparse.Namespace) -> list[str]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = []
    for pkg in ("msgspec", "pyzmq", "uvloop", "sortedcontainers"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{pkg} ?")
    return [
        f"nproc: {os.cpu_count()} (usable: {sorted(os.sched_getaffinity(0))})  cpu: {cpu_model}",
        f"python: {platform.python_implementation()} {platform.python_version()} "
        f"on {platform.system()} {platform.release()}  ({', '.join(versions)})",
        f"engine core pinned to cpu {args.cpu}; ZeroMQ client pinned to cpu {args.client_cpu}; "
        f"gc enabled; mode: {'quick' if args.quick else 'full'}; engine kernel: {engine_build()}",
    ]


# --------------------------------------------------------------------- 1. engine core
class CoreStream:
    """One seeded command stream: deposits, warm-up, then the measured commands. With
    ``stop_share``, that share of the new orders are stop orders (``mixed_with_stops``), in the
    warm-up too, so stops are waiting when the measured part starts; ``stops`` says what its
    planning engine saw."""

    def __init__(
        self,
        ex: config.Exchange,
        warmup: int,
        n: int,
        seed: int,
        accounts: int,
        max_open: int = 0,
        stop_share: float = 0.0,
    ) -> None:
        self.funding = funding(ex, accounts)
        self.stops: StopStream | None = None
        if stop_share:
            self.stops = mixed_with_stops(
                ex, warmup + n, seed=seed, accounts=accounts, max_open=max_open,
                stop_share=stop_share,
            )  # fmt: skip
            cmds, self.stops.commands = self.stops.commands, []
        else:
            cmds = list(mixed(ex, warmup + n, seed=seed, accounts=accounts, max_open=max_open))
        self.warmup = cmds[:warmup]
        self.measured = cmds[warmup:]


def _drive(
    apply: Callable[[Any, int, bytes], int] | None,
    drain: Callable[[int], object],
    cmds: list,
    ts: int,
    handlers: dict[type, Callable[[Any, int, bytes], int]] | None = None,
) -> tuple[float, int]:
    """Apply ``cmds`` in batches of DRAIN_EVERY, one timestamp per batch; (seconds, last ts).

    With ``handlers`` (the engine's), each command goes straight to its handler, as
    ``engine.server`` dispatches it; otherwise through ``apply``.
    """
    t0 = time.perf_counter()
    for start in range(0, len(cmds), DRAIN_EVERY):
        ts += 1
        if handlers is None:
            assert apply is not None
            for c in cmds[start : start + DRAIN_EVERY]:
                apply(c, ts, ORIGIN)
        else:
            for c in cmds[start : start + DRAIN_EVERY]:
                handlers[type(c)](c, ts, ORIGIN)
        drain(ts)
    return time.perf_counter() - t0, ts


def _engine_drain(engine: Engine) -> Callable[[int], object]:
    outbox_clear = engine.outbox.clear
    market_data = engine.market_data

    def drain(ts: int) -> object:
        outbox_clear()
        return market_data(ts)

    return drain


def fresh_engine(ex: config.Exchange, stream: CoreStream) -> tuple[Engine, int]:
    """A new engine, funded and warmed up; returns it and the last batch timestamp."""
    engine = Engine(ex, epoch=1)
    drain = _engine_drain(engine)
    for c in stream.funding:
        engine.apply(c, 1, ORIGIN)
    check_funding(engine)
    ts = 1
    _, ts = _drive(engine.apply, drain, stream.warmup, ts, engine.handlers)
    gc.collect()
    return engine, ts


def check_funding(engine: Engine) -> None:
    """The workload numbers orders as the engine does only if every deposit went in."""
    bad = [m for msgs in engine.outbox.values() for m in msgs if type(m) is Rejected]
    engine.outbox.clear()
    engine.market_data(1)
    if bad:
        raise RuntimeError(
            f"{len(bad)} funding deposits rejected (first: {bad[0].reason}); use fewer --accounts"
        )


def core_run(ex: config.Exchange, stream: CoreStream) -> tuple[float, Engine]:
    engine, ts = fresh_engine(ex, stream)
    dt, _ = _drive(engine.apply, _engine_drain(engine), stream.measured, ts, engine.handlers)
    return len(stream.measured) / dt, engine


OTHER_BUILD = {"compiled": "interpreted", "interpreted": "compiled"}


def other_build_run(args: argparse.Namespace, capped: bool) -> float:
    """One core run of the same stream on the other engine build (a child process: one
    process holds one build), pinned to the same core; commands/s."""
    other = OTHER_BUILD[engine_build()]
    env = dict(os.environ, EXCHANGE_ENGINE_BUILD=other)
    argv = [
        sys.executable, "-m", "bench.core_child", str(args.warmup), str(args.commands),
        str(args.seed), str(args.accounts), str(args.max_open if capped else 0), str(args.cpu),
    ]  # fmt: skip
    if args.config:
        env["EXCHANGE_CONFIG"] = args.config
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    got = json.loads(out)
    if got["build"] != other:
        raise RuntimeError(f"the child ran the {got['build']} build, not {other}")
    return float(got["rate"])


def baseline_run(ex: config.Exchange, stream: CoreStream) -> tuple[float, NaiveEngine]:
    naive = NaiveEngine(ex)
    out_clear = naive.out.clear

    def drain(ts: int) -> None:
        out_clear()

    _, ts = _drive(naive.apply, drain, stream.funding, 0)
    _, ts = _drive(naive.apply, drain, stream.warmup, ts)
    gc.collect()
    dt, _ = _drive(naive.apply, drain, stream.measured, ts)
    return len(stream.measured) / dt, naive


def lean_run(ex: config.Exchange, stream: CoreStream) -> tuple[float, LeanEngine]:
    lean = LeanEngine(ex)
    outbox_clear = lean.outbox.clear
    market_data = lean.market_data

    def drain(ts: int) -> None:
        outbox_clear()
        market_data(ts)

    _, ts = _drive(None, drain, stream.funding, 0, lean.handlers)
    _, ts = _drive(None, drain, stream.warmup, ts, lean.handlers)
    gc.collect()
    dt, _ = _drive(None, drain, stream.measured, ts, lean.handlers)
    return len(stream.measured) / dt, lean


def latency_pass(ex: config.Exchange, stream: CoreStream, stride: int) -> dict[str, Any]:
    """perf_counter_ns around every ``stride``-th apply(); also the cost of each drain."""
    engine, ts = fresh_engine(ex, stream)
    apply = engine.apply
    drain = _engine_drain(engine)
    pc = time.perf_counter_ns
    cmds = stream.measured
    samples: list[int] = []
    sampled_at: list[int] = []
    drains: list[int] = []
    for start in range(0, len(cmds), DRAIN_EVERY):
        ts += 1
        for j, c in enumerate(cmds[start : start + DRAIN_EVERY], start):
            if j % stride:
                apply(c, ts, ORIGIN)
            else:
                t0 = pc()
                apply(c, ts, ORIGIN)
                samples.append(pc() - t0)
                sampled_at.append(j)
        t0 = pc()
        drain(ts)
        drains.append(pc() - t0)
    overhead = sorted(-(pc() - pc()) for _ in range(10_001))[5_000]
    by_kind: dict[str, list[int]] = {}
    for dt, j in zip(samples, sampled_at, strict=True):
        by_kind.setdefault(kind_of(cmds[j]), []).append(dt)
    return {
        "all": percentiles(samples),
        "by_kind": {k: percentiles(v) for k, v in sorted(by_kind.items())},
        "drain": percentiles(drains),
        "timer_overhead_ns": overhead,
    }


def cross_check(engine: Engine, naive: NaiveEngine | LeanEngine) -> str:
    mine = {oid: o.leaves for oid, o in engine.orders.items()}
    theirs = naive.resting()
    if mine == theirs:
        return f"agree on all {len(mine):,} resting orders"
    diff = len(set(mine.items()) ^ set(theirs.items()))
    return f"DISAGREE: engine {len(mine):,} resting, baseline {len(theirs):,}, {diff:,} differ"


def profile_core(ex: config.Exchange, stream: CoreStream, top: int = 25) -> None:
    import cProfile
    import pstats

    engine, ts = fresh_engine(ex, stream)
    prof = cProfile.Profile()
    prof.enable()
    _drive(engine.apply, _engine_drain(engine), stream.measured, ts, engine.handlers)
    prof.disable()
    say(f"\n  cProfile of one core pass ({len(stream.measured):,} commands), by own time:")
    pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def core_phase(args: argparse.Namespace, ex: config.Exchange) -> dict[str, Any]:
    say(
        f"\n## 1. Engine core, in process (ledger on), cpu {args.cpu}: "
        f"{args.commands:,} mixed commands after {args.warmup:,} warm-up, "
        f"drain every {DRAIN_EVERY}"
    )
    t0 = time.perf_counter()
    stream = CoreStream(ex, args.warmup, args.commands, args.seed, args.accounts)
    capped = CoreStream(ex, args.warmup, args.commands, args.seed, args.accounts, args.max_open)
    mix, capped_mix = mix_of(stream), mix_of(capped)
    say(f"  workloads generated in {time.perf_counter() - t0:.1f}s: {mix}")
    say(
        f"  and, for the 'capped' runs, the same generator with at most {args.max_open:,} "
        f"orders open (a cancel whenever the cap is reached): {capped_mix}"
    )
    res: dict[str, Any] = {
        "engine_runs": [],
        "baseline_runs": [],
        "lean_runs": [],
        "capped_runs": [],
        "other_runs": [],
        "other_capped_runs": [],
        "build": engine_build(),
        "other_build": OTHER_BUILD[engine_build()],
        "foreign_cores": [],
        "max_open": args.max_open,
        "capped_mix": capped_mix,
    }
    say(
        "  engine, baseline, lean and capped runs alternate (fresh state each run); "
        "'other load' = cores busy with processes that are not this benchmark"
    )
    runners: list[tuple[str, Callable[..., tuple[float, Any]], CoreStream, str]] = [
        ("engine", core_run, stream, "ledger on"),
        ("baseline", baseline_run, stream, "no ledger"),
        ("lean", lean_run, stream, "ledger on"),
        ("capped", core_run, capped, "engine, book capped"),
    ]
    last: dict[str, Any] = {}
    with pinned(args.cpu):
        for i in range(args.runs):
            for name, runner, cmds, what in runners:
                meter = LoadMeter()
                rate, last[name] = runner(ex, cmds)
                noise = meter.foreign_cores()
                res[f"{name}_runs"].append(rate)
                res["foreign_cores"].append(noise)
                say(
                    f"  run {i + 1}/{args.runs}  {name:<8} {rate:>9,.0f} cmds/s ({what})   "
                    f"other load {noise:.2f} cores"
                )
            if args.other_build:
                for key, capped_run in (("other_runs", False), ("other_capped_runs", True)):
                    meter = LoadMeter()
                    rate = other_build_run(args, capped_run)
                    noise = meter.foreign_cores()
                    res[key].append(rate)
                    res["foreign_cores"].append(noise)
                    what = "capped" if capped_run else "growing"
                    label = res["other_build"][:6] + "."
                    say(
                        f"  run {i + 1}/{args.runs}  {label:<8} {rate:>9,.0f} "
                        f"cmds/s (engine, {what} book, the other build, same core)   "
                        f"other load {noise:.2f} cores"
                    )
        engine, naive, lean = last["engine"], last["baseline"], last["lean"]
        open_orders = len(engine.orders)
        res["engine_median"] = statistics.median(res["engine_runs"])
        res["baseline_median"] = statistics.median(res["baseline_runs"])
        res["ratio"] = res["engine_median"] / res["baseline_median"]
        res["lean_median"] = statistics.median(res["lean_runs"])
        res["capped_median"] = statistics.median(res["capped_runs"])
        res["lean_ratio"] = res["engine_median"] / res["lean_median"]
        say(f"  engine   median: {res['engine_median']:>9,.0f} cmds/s  (ledger on)")
        say(f"  baseline median: {res['baseline_median']:>9,.0f} cmds/s  (no ledger)")
        say(f"  lean     median: {res['lean_median']:>9,.0f} cmds/s  (ledger on, no frills)")
        say(
            f"  capped   median: {res['capped_median']:>9,.0f} cmds/s  "
            f"(engine, at most {args.max_open:,} orders open)"
        )
        if args.other_build:
            res["other_median"] = statistics.median(res["other_runs"])
            res["other_capped_median"] = statistics.median(res["other_capped_runs"])
            res["build_ratio"] = res["engine_median"] / res["other_median"]
            res["build_capped_ratio"] = res["capped_median"] / res["other_capped_median"]
            say(
                f"  {res['other_build']} build median: {res['other_median']:>9,.0f} cmds/s "
                f"growing, {res['other_capped_median']:,.0f} capped"
            )
            say(
                f"  {res['build']}/{res['other_build']}: {res['build_ratio']:.2f}x growing, "
                f"{res['build_capped_ratio']:.2f}x capped (same stream, same core, alternating)"
            )
        say(f"  engine/baseline: {res['ratio']:.2f}x  (engine with ledger on)")
        say(f"  engine/lean:     {res['lean_ratio']:.2f}x")
        res["cross_check"] = cross_check(engine, naive)
        res["lean_check"] = cross_check(engine, lean)
        say(f"  book cross-check: {res['cross_check']} ({open_orders:,} open at the end)")
        say(f"  lean cross-check: {res['lean_check']}")
        del engine, naive, lean
        meter = LoadMeter()
        lat = latency_pass(ex, stream, args.stride)
        lat["foreign_cores"] = meter.foreign_cores()
        res["latency"] = lat
        say(
            f"  apply() latency, every {args.stride}th command sampled "
            f"(timer overhead ~{lat['timer_overhead_ns']} ns, included; "
            f"other load {lat['foreign_cores']:.2f} cores):"
        )
        say(f"    all                   {fmt_pct(lat['all'])}")
        for k, p in lat["by_kind"].items():
            say(f"    {k:<21} {fmt_pct(p)}")
        say(f"    drain per {DRAIN_EVERY} cmds   {fmt_pct(lat['drain'])}")
        if args.profile:
            profile_core(ex, stream)
    return res


# ------------------------------------------------------- 1b. stop orders, cascades
def stops_pass(ex: config.Exchange, stream: CoreStream) -> dict[str, Any]:
    """Every measured command of the stop stream timed alone (``perf_counter_ns`` around
    ``apply()``), and what each did, read from the outbox after its timer stopped: stops
    placed (a stop command not rejected), stops triggered (TRIGGERED reports)."""
    engine, ts = fresh_engine(ex, stream)
    apply = engine.apply
    drain = _engine_drain(engine)
    pc = time.perf_counter_ns
    cmds = stream.measured
    samples: list[int] = []
    triggered_by: dict[int, int] = {}  # command index -> stops it triggered
    placed = rejected_stops = 0
    for start in range(0, len(cmds), DRAIN_EVERY):
        ts += 1
        box = engine.outbox[ORIGIN]  # the list the engine appends to until the drain
        for j, c in enumerate(cmds[start : start + DRAIN_EVERY], start):
            n0 = len(box)
            t0 = pc()
            apply(c, ts, ORIGIN)
            samples.append(pc() - t0)
            trig = 0
            for m in box[n0:]:
                if type(m) is ExecReport and m.exec_type == E_TRIG:
                    trig += 1
                elif type(m) is Rejected and type(c) is NewOrder and m.req == c.req:
                    rejected_stops += bool(c.trigger)
            if trig:
                triggered_by[j] = trig
            if type(c) is NewOrder and c.trigger:
                placed += 1
        drain(ts)
    placed -= rejected_stops
    slowest = sorted(range(len(samples)), key=samples.__getitem__)[-5:][::-1]
    worst = slowest[0]
    with_trig = [samples[j] for j in triggered_by]
    biggest = max(triggered_by, key=lambda j: (triggered_by[j], samples[j]), default=-1)
    return {
        "all": percentiles(samples),
        "triggering": percentiles(with_trig),
        "placed": placed,
        "rejected_stops": rejected_stops,
        "triggered": sum(triggered_by.values()),
        "triggering_commands": len(triggered_by),
        "cascades": sum(1 for v in triggered_by.values() if v > 1),
        "worst": {
            "us": samples[worst] / 1000,
            "kind": kind_of(cmds[worst]),
            "triggered": triggered_by.get(worst, 0),
        },
        "slowest": [(samples[j] / 1000, kind_of(cmds[j]), triggered_by.get(j, 0)) for j in slowest],
        "largest_cascade": {
            "triggered": triggered_by.get(biggest, 0),
            "us": samples[biggest] / 1000 if biggest >= 0 else 0.0,
        },
        "waiting_at_end": sum(len(b.stop_orders) for b in engine.books.values()),
        "open_at_end": len(engine.orders),
    }


def cascade_run(ex: config.Exchange, n: int, accounts: int = 50) -> dict[str, Any]:
    """One aggressive order that triggers ``n`` waiting stops at once; its apply() timed.

    On a fresh engine's first market: a trade at P (the last price); stop-loss buys (stop
    limits, one lot each, owners spread over half the accounts) at P+1 .. P+n, their limit
    P+n+1; one ask of a lot at P+n and, behind it at P+n+1, n asks of a lot (the other
    accounts), so each triggered stop fills once. Then an IOC buy of a lot at P+n: it fills at
    P+n, which reaches every stop; they trigger one after the other, lowest first, each taking
    an ask at P+n+1. Raises if any stop did not trigger and fill.
    """
    engine = Engine(ex, epoch=1)
    for c in funding(ex, accounts):
        engine.apply(c, 1, ORIGIN)
    check_funding(engine)
    spec = next(iter(ex.markets.values()))
    sym, lot = spec.symbol, spec.min_qty
    p = max(1, spec.max_price // 1000)
    if p + n + 1 > spec.max_price:
        raise ValueError(f"{sym}: {n:,} stops above {p} do not fit under its max price")
    half = accounts // 2
    req = 10_000_000
    setup: list[object] = [
        NewOrder(req, 1, sym, 2, 1, 1, p, lot),
        NewOrder(req + 1, 2, sym, 1, 1, 2, p, lot),  # the trade that sets the last price
    ]
    req += 2
    for k in range(1, n + 1):
        setup.append(NewOrder(req, 1 + k % half, sym, 1, 1, 1, p + n + 1, lot, trigger=1,
                              stop_price=p + k))  # fmt: skip
        setup.append(NewOrder(req + 1, 1 + half + k % (accounts - half), sym, 2, 1, 1,
                              p + n + 1, lot))  # fmt: skip
        req += 2
    setup.append(NewOrder(req, 1 + half, sym, 2, 1, 1, p + n, lot))
    ts = 2
    drain = _engine_drain(engine)
    for i, cmd in enumerate(setup):
        engine.apply(cmd, ts, ORIGIN)
        if i % DRAIN_EVERY == 0:
            bad = [m for m in engine.outbox[ORIGIN] if type(m) is Rejected]
            if bad:
                raise RuntimeError(f"cascade setup rejected: {bad[0].reason}")
            drain(ts)
            ts += 1
    drain(ts)
    book = engine.books[sym]
    if len(book.stop_orders) != n:
        raise RuntimeError(f"{len(book.stop_orders):,} stops waiting, not {n:,}")
    ts += 1
    aggressor = NewOrder(req + 1, 1, sym, 1, 1, 2, p + n, lot)
    gc.collect()
    c0 = time.thread_time_ns()
    t0 = time.perf_counter_ns()
    engine.apply(aggressor, ts, ORIGIN)
    dt = time.perf_counter_ns() - t0
    cpu = time.thread_time_ns() - c0  # what preemption by other processes does not inflate
    out = engine.outbox[ORIGIN]
    triggered = sum(1 for m in out if type(m) is ExecReport and m.exec_type == E_TRIG)
    messages = len(out)
    t1 = time.perf_counter_ns()
    drain(ts)
    dt_drain = time.perf_counter_ns() - t1
    if triggered != n or book.stop_orders or book.last != p + n + 1:
        raise RuntimeError(
            f"cascade of {n:,}: {triggered:,} triggered, {len(book.stop_orders):,} still "
            f"waiting, last price {book.last} (expected {p + n + 1})"
        )
    return {"ms": dt / 1e6, "cpu_ms": cpu / 1e6, "per_stop_us": dt / 1000 / n,
            "drain_ms": dt_drain / 1e6, "messages": messages}  # fmt: skip


def stops_phase(args: argparse.Namespace, ex: config.Exchange) -> dict[str, Any]:
    share = args.stop_share
    say(
        f"\n## 1b. Stop orders, in process, cpu {args.cpu}: the core stream with "
        f"{share:.0%} of new orders stops, {args.commands:,} commands after {args.warmup:,} "
        f"warm-up (stops in both), alternating with the plain stream; then cascades"
    )
    t0 = time.perf_counter()
    plain = CoreStream(ex, args.warmup, args.commands, args.seed, args.accounts)
    stream = CoreStream(ex, args.warmup, args.commands, args.seed, args.accounts, stop_share=share)
    plan = stream.stops
    assert plan is not None
    say(
        f"  workloads generated in {time.perf_counter() - t0:.1f}s (the stop stream planned "
        f"against an engine): {mix_of(stream)}"
    )
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(plan.placed_by_kind.items()))
    say(
        f"  planned: {plan.placed():,} stops placed ({kinds}), {plan.rejected_stops} rejected, "
        f"{plan.triggered():,} triggered, {plan.waiting_at_end:,} waiting at the end; in the "
        f"measured part {plan.placed(args.warmup):,} placed, "
        f"{plan.triggered(args.warmup):,} triggered"
    )
    res: dict[str, Any] = {"share": share, "stops_runs": [], "plain_runs": [],
                           "foreign_cores": []}  # fmt: skip
    with pinned(args.cpu):
        for i in range(args.runs):
            for name, cmds in (("plain", plain), ("stops", stream)):
                meter = LoadMeter()
                rate, _ = core_run(ex, cmds)
                noise = meter.foreign_cores()
                res[f"{name}_runs"].append(rate)
                res["foreign_cores"].append(noise)
                say(
                    f"  run {i + 1}/{args.runs}  {name:<6} {rate:>9,.0f} cmds/s   "
                    f"other load {noise:.2f} cores"
                )
        res["stops_median"] = statistics.median(res["stops_runs"])
        res["plain_median"] = statistics.median(res["plain_runs"])
        res["ratio"] = res["stops_median"] / res["plain_median"]
        say(
            f"  stops median {res['stops_median']:,.0f} cmds/s, plain {res['plain_median']:,.0f}:"
            f" stops/plain {res['ratio']:.2f}x (same run, alternating)"
        )
        meter = LoadMeter()
        lat = stops_pass(ex, stream)
        lat["foreign_cores"] = meter.foreign_cores()
        res["latency"] = lat
        w, big = lat["worst"], lat["largest_cascade"]
        say(
            f"  every measured command timed alone (other load {lat['foreign_cores']:.2f} "
            f"cores): {lat['placed']:,} stops placed, {lat['rejected_stops']} rejected, "
            f"{lat['triggered']:,} triggered by {lat['triggering_commands']:,} commands "
            f"({lat['cascades']:,} triggered 2 or more); {lat['waiting_at_end']:,} waiting at "
            f"the end"
        )
        say(f"    all                   {fmt_pct(lat['all'])}")
        say(f"    commands that trigger {fmt_pct(lat['triggering'])}")
        say(
            f"    worst command: {w['us']:,.1f} us ({w['kind']}, {w['triggered']} stops "
            f"triggered); the largest cascade: {big['triggered']} stops in {big['us']:,.1f} us"
        )
        slow = "; ".join(f"{us:,.0f} us {k} ({t} triggered)" for us, k, t in lat["slowest"])
        say(f"    the 5 slowest: {slow}")
        res["cascade"] = {}
        for n in args.cascade:
            runs = []
            for _ in range(args.cascade_runs):
                meter = LoadMeter()
                got = cascade_run(ex, n, args.accounts)
                got["foreign_cores"] = meter.foreign_cores()
                runs.append(got)
            med = statistics.median(r["ms"] for r in runs)
            cpu = statistics.median(r["cpu_ms"] for r in runs)
            res["cascade"][n] = {"runs": runs, "median_ms": med, "per_stop_us": med * 1000 / n,
                                 "median_cpu_ms": cpu}  # fmt: skip
            each = " / ".join(f"{r['ms']:.2f}" for r in runs)
            say(
                f"  cascade: one IOC buy triggers {n:,} waiting stops (each then fills once): "
                f"median {med:,.2f} ms for the command, {med * 1000 / n:.2f} us per stop; "
                f"CPU time {cpu:,.2f} ms, {cpu * 1000 / n:.2f} us per stop "
                f"(runs {each} ms; its drain "
                f"{statistics.median(r['drain_ms'] for r in runs):.2f} ms; "
                f"{runs[0]['messages']:,} messages; other load "
                f"{max(r['foreign_cores'] for r in runs):.2f} cores)"
            )
    return res


# ------------------------------------------------------------------- 2. through ZeroMQ
def children() -> Children:
    """This benchmark's children: stopped gently first (SIGINT), then SIGKILL; they load the
    config this process loads (``EXCHANGE_CONFIG`` kept); none is pinned from outside (each
    pins itself with ``--cpu``)."""
    return Children(stop_signal=signal.SIGINT, stop_timeout=10.0, inherit_config=True)


def zmq_phase(args: argparse.Namespace) -> dict[str, Any]:
    say(
        f"\n## 2. Through ZeroMQ: engine process on cpu {args.cpu}, "
        f"client process on cpu {args.client_cpu} (EngineClient, uvloop)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    kids = children()
    try:
        floor = transport_floor(args, kids, tmp)
        engine, endpoint = spawn_engine(args, kids, tmp / "engine")
        meter = LoadMeter()
        meter.watch(engine.pid)
        client_log = tmp / "client.log"
        client = kids.spawn(
            [
                "bench.zmq_client",
                "--endpoint",
                endpoint,
                "--cpu",
                str(args.client_cpu),
                "--rate",
                str(args.rate),
                "--seconds",
                str(args.zmq_seconds),
                "--window",
                str(args.window),
                "--pacing",
                args.pacing,
                "--chunk",
                str(args.chunk),
                "--engine-pid",
                str(engine.pid),
                "--sat-seconds",
                str(args.sat_seconds),
                "--sat-warmup",
                str(args.sat_warmup),
            ],
            client_log,
            stdout=subprocess.PIPE,
        )
        budget = args.zmq_seconds * 1.3 + args.sat_seconds + args.sat_warmup + 90
        try:
            out, _ = client.proc.communicate(timeout=budget)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"client did not finish in {budget:.0f}s") from None
        if client.proc.returncode != 0 or not out.strip():
            raise RuntimeError(
                f"client failed ({client.proc.returncode}):\n{client.tail()}\n"
                f"engine log:\n{engine.tail()}"
            )
        res = json.loads(out.decode().strip().splitlines()[-1])
        res["floor"] = floor
        res["foreign_cores"] = meter.foreign_cores()
        res["engine_exit"] = engine.stop()
        res["engine_log"] = [
            line.split(" INFO ", 1)[-1]
            for line in engine.text().splitlines()
            if "pinned" in line or "stopped" in line or "snapshot" in line
        ]
        res["pipeline"] = pipeline_run(args, kids, tmp / "pipeline")
    finally:
        kids.close(5.0)
        shutil.rmtree(tmp, ignore_errors=True)
    say(
        f"  (0) transport floor: bare pyzmq ROUTER echo (cpu {args.cpu}) and blocking DEALER "
        f"(cpu {args.client_cpu}), {args.rate:,}/s, no event loop and no engine: "
        f"{fmt_pct(floor)}"
    )
    fr = res.get("fixed_rate")
    if fr:
        say(
            f"  (a) fixed rate {fr['offered_rate']:,}/s for {args.zmq_seconds:g}s: "
            f"{fr['orders']:,} orders in {fr['frames']:,} frames ({fr['pacing']} pacing), "
            f"{fr['answered']:,} answered, sent at {fr['achieved_send_rate']:,.0f}/s"
        )
        say(f"      round trip send()->reply: {fmt_pct(fr['latency'])}")
        say(f"      from scheduled send time: {fmt_pct(fr['latency_from_schedule'])}")
        say(f"      {fmt_cpu(fr['cpu'])}")
    sat = res.get("saturation")
    if sat:
        per_s = ", ".join(f"{x:,}" for x in sat["per_second"])
        say(
            f"  (b) saturation, window {sat['window']:,} in flight: "
            f"frames of {sat['chunk']:,}: {sat['orders_per_s']:,.0f} orders/s sustained "
            f"over {sat['seconds']:.1f}s "
            f"(per second: {per_s})"
        )
        say(f"      round trip under load: {fmt_pct(sat['latency_under_load'])}")
        say(f"      {fmt_cpu(sat['cpu'])}")
    pl = res["pipeline"]
    say(
        f"  (c) saturation with a pipelined raw client (bench/zmq_pipeline.py: pre-encoded "
        f"frames of {pl['chunk']}, window {pl['window']:,}, replies only counted) on a fresh "
        f"engine: {pl['orders_per_s']:,.0f} orders/s over {pl['seconds']:.1f}s "
        f"(per second: {', '.join(f'{x:,}' for x in pl['per_second'])}); mix {pl['mix']}"
    )
    say(f"      {fmt_cpu(pl['cpu'])}; other load {pl['foreign_cores']:.2f} cores")
    say(
        f"  mix sent: {res['mix']}; rejected replies: {res['rejected']:,} "
        f"(cancels of orders filled meanwhile); errors: {res['errors']} "
        f"{res.get('error_kinds') or ''}; "
        f"client open orders at end: {res['open_orders_at_end']:,}"
    )
    say(f"  engine exited with {res['engine_exit']}; log: {'; '.join(res['engine_log'])}")
    say(f"  other load during this phase: {res['foreign_cores']:.2f} cores")
    return res


def spawn_engine(args: argparse.Namespace, kids: Children, workdir: Path) -> tuple[Child, str]:
    """A fresh engine process on free loopback ports, pinned; (process, endpoint)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd_port, md_port = free_ports(2)
    endpoint = f"tcp://127.0.0.1:{cmd_port}"
    engine = kids.spawn(
        ["engine", "--data-dir", str(workdir / "data"),
         "--commands", endpoint, "--market-data", f"tcp://127.0.0.1:{md_port}",
         "--cpu", str(args.cpu)],
        workdir / "engine.log",
    )  # fmt: skip
    engine.wait_log("engine ready", timeout=30.0)
    return engine, endpoint


def pipeline_run(args: argparse.Namespace, kids: Children, workdir: Path) -> dict[str, Any]:
    """Sustained rate with the pipelined raw client (bench/zmq_pipeline.py) on a fresh engine."""
    engine, endpoint = spawn_engine(args, kids, workdir)
    meter = LoadMeter()
    meter.watch(engine.pid)
    client = kids.spawn(
        ["bench.zmq_pipeline", "--endpoint", endpoint,
         "--cpu", str(args.client_cpu), "--engine-pid", str(engine.pid),
         "--commands", str(args.pipeline_commands), "--window", str(args.window),
         "--chunk", str(args.chunk)],
        workdir / "pipeline.log",
        stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = client.proc.communicate(timeout=300)
    if client.proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"pipeline client failed ({client.proc.returncode}):\n{client.tail()}")
    res = json.loads(out.decode().strip().splitlines()[-1])
    res["foreign_cores"] = meter.foreign_cores()
    engine.stop()
    return res


def transport_floor(args: argparse.Namespace, kids: Children, tmp: Path) -> dict[str, float]:
    """Round trips of a bare pyzmq echo at the fixed rate: the machine's floor (bench.zmq_echo)."""
    from bench import zmq_echo

    (port,) = free_ports(1)
    endpoint = f"tcp://127.0.0.1:{port}"
    echo = kids.spawn(
        ["bench.zmq_echo", "--endpoint", endpoint, "--cpu", str(args.cpu)], tmp / "echo.log"
    )
    echo.wait_log("echo ready", timeout=30.0)
    payload = msgspec.msgpack.encode([NewOrder(1, 1, "BTC-USD", 1, 1, 1, 100_000, 10)])
    count = max(2_000, int(args.rate * min(args.zmq_seconds, 5.0)))
    with pinned(args.client_cpu):
        samples = zmq_echo.measure(endpoint, payload, args.rate, count)
    echo.stop()
    return percentiles(samples)


# ------------------------------------------------------------------------- 3. recovery
def recovery_phase(args: argparse.Namespace, ex: config.Exchange) -> dict[str, Any]:
    n = args.recovery_commands
    say(
        f"\n## 3. Recovery: journal of {n:,} commands, replayed into a fresh engine, cpu {args.cpu}"
    )
    res = replay_runs(args, ex, 0)
    say(f"  the same with at most {args.max_open:,} orders open (the 'capped' workload):")
    res["capped"] = replay_runs(args, ex, args.max_open)
    return res


def replay_runs(args: argparse.Namespace, ex: config.Exchange, max_open: int) -> dict[str, Any]:
    """Journal ``recovery_commands`` of the mixed workload, then time ``journal.recover``."""
    from engine import journal  # here, so the other phases run even if it cannot import

    n = args.recovery_commands
    tmp = Path(tempfile.mkdtemp(prefix="bench-journal-"))
    try:
        t0 = time.perf_counter()
        fund = funding(ex, args.accounts)
        cmds = fund + list(
            mixed(ex, n - len(fund), seed=args.seed + 1, accounts=args.accounts, max_open=max_open)
        )
        t1 = time.perf_counter()
        jr = journal.Journal(tmp, 1, fsync=False)
        seq = 1
        for ts, start in enumerate(range(0, n, args.journal_batch), 1):
            entries = [(ORIGIN, c) for c in cmds[start : start + args.journal_batch]]
            jr.write(seq, ts, entries)
            seq += len(entries)
        jr.close()
        size = sum(p.stat().st_size for p in tmp.iterdir())
        t2 = time.perf_counter()
        del cmds, fund
        say(
            f"  generated in {t1 - t0:.1f}s, journaled in {t2 - t1:.1f}s "
            f"({size / 1e6:.0f} MB, batches of {args.journal_batch})"
        )
        runs: list[float] = []
        foreign: list[float] = []
        hashes: set[str] = set()
        with pinned(args.cpu):
            for i in range(args.recovery_runs):
                engine = Engine(ex)
                gc.collect()
                meter = LoadMeter()
                t = time.perf_counter()
                rec = journal.recover(tmp, engine)
                dt = time.perf_counter() - t
                noise = meter.foreign_cores()
                foreign.append(noise)
                if rec.replayed != n or engine.seq != n:
                    raise RuntimeError(f"replayed {rec.replayed} of {n} (seq {engine.seq})")
                hashes.add(engine.state_hash())
                per_m = dt / (n / 1e6)
                runs.append(per_m)
                say(
                    f"  run {i + 1}/{args.recovery_runs}: {dt:.2f}s for {n:,} = "
                    f"{per_m:.2f} s per million ({n / dt:,.0f} cmds/s), "
                    f"{len(engine.orders):,} open orders rebuilt, other load {noise:.2f} cores"
                )
                del engine
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median(runs)
    same = "identical" if len(hashes) == 1 else f"DIFFERENT ({len(hashes)})"
    say(f"  median: {med:.2f} s per million; state_hash of the runs: {same}")
    return {
        "runs_s_per_m": runs,
        "median_s_per_m": med,
        "state_hash_consistent": len(hashes) == 1,
        "foreign_cores": foreign,
    }


# ---------------------------------------------------------------------------- summary
def summary(results: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, str, str]] = []

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    core = results.get("core")
    if core:
        v = core["engine_median"]
        ok = mark(v >= TARGETS["core"])
        rows.append(
            (
                "engine core, mixed workload, ledger on (median)",
                f"{v:,.0f} cmds/s ({ok})",
                f">= {TARGETS['core']:,} cmds/s",
            )
        )
        lat = core["latency"]["all"]
        rows.append(
            (
                "engine core apply() latency p50 / p99 / p99.9",
                f"{lat['p50_us']:.1f} / {lat['p99_us']:.1f} / {lat['p999_us']:.1f} us",
                "-",
            )
        )
        rows.append(
            (
                "baseline (sorted lists, no ledger, median)",
                f"{core['baseline_median']:,.0f} cmds/s",
                "-",
            )
        )
        if core.get("build_ratio"):
            rows.append(
                (
                    f"engine, {core['build']} / {core['other_build']} build (same run)",
                    f"{core['build_ratio']:.2f}x growing, {core['build_capped_ratio']:.2f}x capped",
                    "4.5x",
                )
            )
        rows.append(("engine / baseline", f"{core['ratio']:.2f}x", "-"))
        rows.append(
            (
                "leanest Python engine, same work (bench/lean.py, median)",
                f"{core['lean_median']:,.0f} cmds/s",
                "-",
            )
        )
        rows.append(("engine / lean", f"{core['lean_ratio']:.2f}x", "-"))
        rows.append(
            (
                f"engine core, book capped at {core['max_open']:,} open orders (median)",
                f"{core['capped_median']:,.0f} cmds/s",
                "-",
            )
        )
    rows += stops_rows(results.get("stops"))
    rows += replication_bench.rows(results.get("replication"))
    zmq = results.get("zmq")
    if zmq and zmq.get("fixed_rate"):
        fr = zmq["fixed_rate"]
        p = fr["latency"]
        rows.append(
            (
                f"ZMQ round trip p50 at {fr['offered_rate']:,}/s",
                f"{p['p50_us']:.0f} us",
                "-",
            )
        )
        rows.append(
            (
                f"ZMQ round trip p99 at {fr['offered_rate']:,}/s",
                f"{p['p99_us']:.0f} us ({mark(p['p99_us'] < TARGETS['zmq_p99_us'])})",
                f"< {TARGETS['zmq_p99_us']:.0f} us",
            )
        )
        rows.append(
            (f"ZMQ round trip p99.9 at {fr['offered_rate']:,}/s", f"{p['p999_us']:.0f} us", "-")
        )
        floor = zmq.get("floor")
        if floor:
            rows.append(
                (
                    "bare pyzmq echo p50 / p99 (this machine's floor)",
                    f"{floor['p50_us']:.0f} / {floor['p99_us']:.0f} us",
                    "-",
                )
            )
            rows.append(
                (
                    "engine round trip / bare echo, p50 and p99",
                    f"{p['p50_us'] / floor['p50_us']:.1f}x / {p['p99_us'] / floor['p99_us']:.1f}x",
                    "-",
                )
            )
    if zmq and zmq.get("saturation"):
        sat = zmq["saturation"]
        client_cpu = sat["cpu"].get("client_cpu_pct", 0)
        rows.append(
            (
                f"ZMQ sustained via EngineClient, window {sat['window']:,}",
                f"{sat['orders_per_s']:,.0f} orders/s (client at {client_cpu:.0f}% of a core)",
                "-",
            )
        )
    if zmq and zmq.get("pipeline"):
        v = zmq["pipeline"]["orders_per_s"]
        engine_cpu = zmq["pipeline"]["cpu"].get("engine_cpu_pct", 0)
        rows.append(
            (
                "ZMQ sustained, pipelined raw client (engine-bound)",
                f"{v:,.0f} orders/s ({mark(v >= TARGETS['sustained'])}; "
                f"engine at {engine_cpu:.0f}%)",
                f">= {TARGETS['sustained']:,} orders/s",
            )
        )
    rec = results.get("recovery")
    if rec:
        v = rec["median_s_per_m"]
        rows.append(
            (
                "recovery (journal replay), median",
                f"{v:.2f} s per million ({mark(v < TARGETS['recovery_s_per_m'])})",
                f"< {TARGETS['recovery_s_per_m']:.0f} s per million",
            )
        )
        if rec.get("capped"):
            rows.append(
                (
                    "recovery, book capped (median)",
                    f"{rec['capped']['median_s_per_m']:.2f} s per million",
                    "-",
                )
            )
    noise = _max_foreign(results)
    rows.append(
        (
            "other processes' CPU during the runs (max)",
            f"{noise:.2f} of {os.cpu_count()} cores",
            "~0 (idle machine)",
        )
    )
    width = [max(len(r[i]) for r in rows + [("metric", "value", "target")]) for i in range(3)]
    lines = [
        "| "
        + " | ".join(h.ljust(w) for h, w in zip(("metric", "value", "target"), width, strict=True))
        + " |",
        "|" + "|".join("-" * (w + 2) for w in width) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, width, strict=True)) + " |" for r in rows
    ]
    return lines


def stops_rows(stops: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    if not stops:
        return []
    lat = stops["latency"]
    rows = [
        (
            f"engine core, {stops['share']:.0%} of new orders stops (median)",
            f"{stops['stops_median']:,.0f} cmds/s ({stops['ratio']:.2f}x the plain stream)",
            "-",
        ),
        (
            "  stops placed / triggered (measured part)",
            f"{lat['placed']:,} / {lat['triggered']:,} ({lat['cascades']:,} commands triggered 2+)",
            "-",
        ),
        (
            "  apply() p99 / worst command",
            f"{lat['all']['p99_us']:.1f} us / {lat['worst']['us']:,.1f} us "
            f"({lat['worst']['kind']}, {lat['worst']['triggered']} triggered)",
            "-",
        ),
    ]
    for n, c in stops["cascade"].items():
        rows.append(
            (
                f"cascade: one order triggers {n:,} stops (median)",
                f"{c['median_ms']:,.2f} ms, {c['per_stop_us']:.2f} us per stop "
                f"(CPU {c['median_cpu_ms']:,.2f} ms)",
                "-",
            )
        )
    return rows


# ------------------------------------------------------------------------------- main
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="short smoke run (well under a minute)")
    p.add_argument("--config", help="exchange TOML (default: the shipped one)")
    p.add_argument("--cpu", type=int, default=1, help="core for the engine (default 1)")
    p.add_argument("--client-cpu", type=int, default=0, help="core for the ZMQ client")
    p.add_argument("--runs", type=int, help="timed core runs (default 5, quick 3)")
    p.add_argument("--commands", type=int, help="measured core commands (default 500,000)")
    p.add_argument("--warmup", type=int, help="warm-up commands per run (default 50,000)")
    p.add_argument("--stride", type=int, default=4, help="latency pass: time every Nth apply")
    p.add_argument(
        "--accounts",
        type=int,
        default=50,
        help="funded accounts",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--max-open", type=int, default=2_000, help="open-order cap of the 'capped' core runs"
    )
    p.add_argument("--rate", type=int, default=10_000, help="ZMQ fixed offered rate, orders/s")
    p.add_argument("--zmq-seconds", type=float, help="ZMQ fixed-rate duration (default 5)")
    p.add_argument(
        "--pacing",
        choices=("tick", "busy"),
        default="tick",
        help="fixed rate: send what is due every 1 ms loop tick, or spin (one order a frame)",
    )
    p.add_argument("--window", type=int, default=5_000, help="ZMQ saturation: in flight")
    p.add_argument("--chunk", type=int, default=500, help="ZMQ saturation: commands per frame")
    p.add_argument("--sat-seconds", type=float, help="ZMQ saturation duration (default 5)")
    p.add_argument(
        "--pipeline-commands", type=int, help="pipelined raw client: measured commands (600k)"
    )
    p.add_argument("--sat-warmup", type=float, help="unmeasured saturation lead-in (default 1)")
    p.add_argument("--recovery-commands", type=int, help="journal size (default 1,000,000)")
    p.add_argument("--recovery-runs", type=int, default=3)
    p.add_argument("--journal-batch", type=int, default=1_000)
    p.add_argument(
        "--only",
        default="core,zmq,recovery",
        help="comma list of phases: core (includes stops), stops, zmq, recovery, "
        "replication (not by default: bench/replication_bench.py)",
    )
    replication_bench.add_arguments(p)
    p.add_argument(
        "--stop-share",
        type=float,
        default=0.10,
        help="stop stream: share of new orders that are stop orders (default 0.10)",
    )
    p.add_argument(
        "--cascade",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[1_000, 10_000],
        help="cascade sizes: waiting stops one order triggers (default 1000,10000)",
    )
    p.add_argument("--cascade-runs", type=int, help="runs per cascade size (default 5, quick 3)")
    p.add_argument("--profile", action="store_true", help="cProfile one core pass")
    p.add_argument(
        "--no-other-build",
        dest="other_build",
        action="store_false",
        help="skip the core runs of the other engine build (compiled vs interpreted)",
    )
    p.add_argument("--json", help="also write the results as JSON to this file")


def _defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    replication_bench.defaults(args)
    for name, full, short in (
        ("runs", 5, 3),
        ("cascade_runs", 5, 3),
        ("commands", 500_000, 100_000),
        ("warmup", 50_000, 20_000),
        ("zmq_seconds", 5.0, 2.0),
        ("sat_seconds", 5.0, 2.0),
        ("sat_warmup", 1.0, 0.5),
        ("pipeline_commands", 600_000, 150_000),
        ("recovery_commands", 1_000_000, 200_000),
    ):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)


def _max_foreign(results: dict[str, Any]) -> float:
    vals: list[float] = []
    core = results.get("core") or {}
    vals += core.get("foreign_cores", [])
    vals.append((core.get("latency") or {}).get("foreign_cores", 0.0))
    stops = results.get("stops") or {}
    vals += stops.get("foreign_cores", [])
    vals.append((stops.get("latency") or {}).get("foreign_cores", 0.0))
    for c in (stops.get("cascade") or {}).values():
        vals += [r["foreign_cores"] for r in c["runs"]]
    vals.append((results.get("zmq") or {}).get("foreign_cores", 0.0))
    vals += (results.get("recovery") or {}).get("foreign_cores", [])
    vals += replication_bench.foreign(results.get("replication"))
    return max(vals, default=0.0)


def run(args: argparse.Namespace) -> int:
    _defaults(args)
    phases = {p.strip() for p in args.only.split(",") if p.strip()}
    interrupt_on_sigterm()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    ex = config.load(args.config)
    say("# Engine benchmark")
    for line in machine_info(args):
        say("  " + line)
    results: dict[str, Any] = {"args": vars(args)}
    t0 = time.perf_counter()
    failures = []
    try:
        if "core" in phases:
            phases.add("stops")  # the core benchmark includes the stop stream and cascades
        for name, fn in (
            ("core", lambda: core_phase(args, ex)),
            ("stops", lambda: stops_phase(args, ex)),
            ("zmq", lambda: zmq_phase(args)),
            ("recovery", lambda: recovery_phase(args, ex)),
            ("replication", lambda: replication_bench.replication_phase(args)),
        ):
            if name not in phases:
                continue
            try:
                results[name] = fn()
            except (RuntimeError, OSError, ValueError, ImportError) as e:
                failures.append(name)
                say(f"  !! phase {name} failed: {e}")
    except KeyboardInterrupt:
        say("\ninterrupted; child processes stopped")
        return 130
    say(f"\n## Summary ({time.perf_counter() - t0:.0f}s)\n")
    for line in summary(results):
        say(line)
    noise = _max_foreign(results)
    if noise > 0.1:
        say(
            f"\nWARNING: other processes kept up to {noise:.2f} of {os.cpu_count()} cores busy "
            "during the measurements; the figures above are lower and noisier than on an "
            "idle machine."
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 1 if failures else 0

"""``python -m bench ws``: trade -> websocket client latency and messages/s out of one bridge.

Setup: the real engine (``python -m engine``, pinned to ``--engine-cpu``, default 1) and one
websocket bridge (``python -m feed``, pinned to ``--bridge-cpu``, default 0), each pinned from
before exec so every thread of theirs stays on its core; a temporary data directory; the
shipped config with the bridge's connection cap raised. ``--clients`` websocket clients
(default 1,000; ``--quick`` 200) live in ``--client-procs`` child processes of this benchmark
(aiohttp on uvloop, ``python -m bench.ws_bench worker``), pinned to ``--client-cpus``; every
client subscribes to ``trades@BTC-USD``. The driver (this process) talks to the engine directly:
a maker rests a deep ask at 50,000.00 and a taker sends one-lot IOC buys at a fixed rate, so
every buy prints one trade, one ``Trades`` message on the engine's PUB socket and one websocket
message to each client.

1. Latency: ``--rate`` buys per second (default 20) for ``--seconds``. Each message's latency
   is the client's ``time.time_ns()`` when aiohttp hands it the frame minus the trade's ``ts``
   (the engine's ``time.time_ns()`` for the batch that printed it); all processes are on this
   machine and share that clock. Every client's every message is a sample.
2. Throughput: increasing offered trade rates (``--steps``); per step, the websocket frames the
   bridge sent per second (its own ``/stats`` counter ``messages_out``), what the clients
   received, latency, drops, and the CPU each process used.

On a 2-core machine the clients share a core with the engine (it is nearly idle here), so the
client processes can be the bottleneck of step 2: the CPU column says who was. Nothing here is
a test: it prints a table (and ``--json FILE`` writes the numbers).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.procs import cpu_seconds, free_ports

MARKET = "BTC-USD"
PRICE = 5_000_000  # 50,000.00 in ticks of 0.01
TARGET_P99_MS = 5.0  # trade -> websocket client, at 1,000 clients
TARGET_MSGS_PER_S = 50_000  # our yardstick: 50 trades/s to 1,000 clients from one bridge
MAKER, TAKER = 1, 2


def say(*parts: object) -> None:
    print(*parts, flush=True)


# ===================================================================== client worker


async def _client(session: Any, url: str, sub: str, lat: array.array, tss: array.array,
                  stats: dict[str, int], ready: asyncio.Event, want: int) -> None:  # fmt: skip
    """One websocket client: subscribe, then timestamp every frame and take the trade ts
    from its text (the last ``"ts":`` of the message; one batch, one ts)."""
    import aiohttp

    clock = time.time_ns
    try:
        ws = await session.ws_connect(url, heartbeat=None, max_msg_size=1 << 22)
    except (aiohttp.ClientError, OSError):
        stats["failed"] += 1
        if stats["ready"] + stats["failed"] >= want:
            ready.set()
        return
    await ws.send_str(sub)
    await ws.receive()  # the ack
    stats["ready"] += 1
    if stats["ready"] + stats["failed"] >= want:
        ready.set()
    async for msg in ws:
        now = clock()
        data = msg.data
        i = data.rfind('"ts":')
        if i < 0:
            continue
        ts = int(data[i + 5 : data.index("}", i)])
        lat.append(now - ts)
        tss.append(ts)
        stats["messages"] += 1
    stats["closed"] += 1


async def _worker(args: argparse.Namespace) -> None:
    import aiohttp

    lat, tss = array.array("q"), array.array("q")
    stats = {"ready": 0, "failed": 0, "messages": 0, "closed": 0}
    ready = asyncio.Event()
    sub = json.dumps({"op": "subscribe", "streams": [f"trades@{args.market}"], "id": 1})
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        for i in range(args.clients):
            tasks.append(asyncio.ensure_future(
                _client(session, args.url, sub, lat, tss, stats, ready, args.clients)))  # fmt: skip
            if i % 50 == 49:
                await asyncio.sleep(0.01)  # a gentle connect storm
        await ready.wait()
        sys.stdout.write(json.dumps({"ready": stats["ready"], "failed": stats["failed"]}) + "\n")
        sys.stdout.flush()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    Path(args.out).write_bytes(tss.tobytes() + lat.tobytes())  # noqa: ASYNC240 - once, at exit
    sys.stdout.write(json.dumps({"done": len(lat), **stats}) + "\n")
    sys.stdout.flush()


def worker_main(argv: list[str] | None = None) -> int:
    import uvloop

    p = argparse.ArgumentParser(prog="python -m bench.ws_bench worker")
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--market", default=MARKET)
    p.add_argument("--out", required=True)
    uvloop.run(_worker(p.parse_args(argv)))
    return 0


# ========================================================================= processes


def bench_config(path: Path, clients: int) -> Path:
    """The shipped config: more websocket connections allowed, no snapshot pause."""
    return procs.shipped_config(path, {"bridge": {"max_connections": max(5_000, clients + 100)}})


class Setup:
    """Engine + bridge (pinned), the client workers, and a temporary directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-ws-"))
        self.kids = procs.Children(many_files=True)
        self.workers: list[asyncio.subprocess.Process] = []
        cmd_port, md_port, self.port = free_ports(3)
        self.commands = f"tcp://127.0.0.1:{cmd_port}"
        self.market_data = f"tcp://127.0.0.1:{md_port}"
        self.config = bench_config(self.tmp / "exchange.toml", args.clients)
        self.engine = self._spawn(
            ["engine", "--config", str(self.config), "--data-dir", str(self.tmp / "data"),
             "--commands", self.commands, "--market-data", self.market_data,
             "--cpu", str(args.engine_cpu)], "engine", {args.engine_cpu},
        )  # fmt: skip
        self.engine.wait_log("engine ready")
        self.bridge = self._spawn(
            ["feed", "--config", str(self.config), "--port", str(self.port),
             "--commands", self.commands, "--market-data", self.market_data],
            "bridge", {args.bridge_cpu},
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def _spawn(self, argv: list[str], name: str, cpus: set[int]) -> procs.Child:
        return self.kids.spawn(argv, self.tmp / f"{name}.log", cpus=cpus)

    async def wait_bridge(self, http: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.bridge.proc.poll() is not None:
                raise RuntimeError(f"bridge exited:\n{self.bridge.tail()}")
            with contextlib.suppress(OSError, Exception):
                async with http.get(f"{self.url}/health") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"bridge not healthy in {timeout}s:\n{self.bridge.tail()}")

    async def start_workers(self) -> int:
        """Spawn the client processes; returns how many clients subscribed."""
        args = self.args
        n, k = args.clients, max(1, min(args.client_procs, args.clients))
        cpus = {int(c) for c in (args.client_cpus or "").split(",") if c.strip()}
        for i in range(k):
            share = n // k + (1 if i < n % k else 0)
            out = self.tmp / f"samples-{i}.bin"
            argv = [sys.executable, "-m", "bench.ws_bench", "worker", "--url", f"{self.url}/ws",
                    "--clients", str(share), "--out", str(out)]  # fmt: skip
            with open(self.tmp / f"worker-{i}.log", "wb") as log:  # noqa: ASYNC230
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                    **procs.popen_options(cpus, many_files=True, own_session=False),
                )  # fmt: skip
            self.workers.append(proc)
        ready = 0
        for i, proc in enumerate(self.workers):
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 300)
            if not line:
                raise RuntimeError(
                    f"client worker {i} died:\n{procs.tail(self.tmp / f'worker-{i}.log')}"
                )
            got = json.loads(line)
            ready += got["ready"]
        return ready

    async def stop_workers(self) -> tuple[array.array, array.array, list[dict]]:
        """Stop the clients; returns every sample (trade ts, latency) and their summaries."""
        for proc in self.workers:
            assert proc.stdin is not None
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
        tss, lat, summaries = array.array("q"), array.array("q"), []
        for i, proc in enumerate(self.workers):
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            await proc.wait()
            summaries.append(json.loads(line) if line else {"error": "no summary"})
            raw = (self.tmp / f"samples-{i}.bin").read_bytes()
            half = len(raw) // 2
            tss.frombytes(raw[:half])
            lat.frombytes(raw[half:])
        return tss, lat, summaries

    def pids(self) -> list[int]:
        return [self.bridge.pid, self.engine.pid, *(w.pid for w in self.workers)]

    def cpu(self) -> dict[str, float]:
        return {
            "bridge": cpu_seconds(self.bridge.pid),
            "engine": cpu_seconds(self.engine.pid),
            "clients": sum(cpu_seconds(w.pid) for w in self.workers),
        }

    def close(self) -> None:
        for w in self.workers:
            if w.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.kill()
        self.kids.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ============================================================================ driver


class Driver:
    """Trades through the engine's command socket: a deep resting ask, one-lot IOC buys."""

    def __init__(self, commands: str) -> None:
        from engine.client import EngineClient

        self.client = EngineClient(commands, f"bench-ws-{os.getpid()}".encode())
        self.trades = 0
        self.rejects = 0

    async def start(self) -> None:
        from protocol.messages import Deposit, NewOrder

        await self.client.start(wait=30)
        for account in (MAKER, TAKER):
            for asset in ("USD", "BTC"):
                await self.client.request(Deposit(0, account, asset, 10**15))
        await self.client.request(NewOrder(0, MAKER, MARKET, 2, 1, 1, PRICE, 10_000_000))

    def _done(self, fut: asyncio.Future) -> None:
        if fut.exception() is not None:
            self.rejects += 1
            return
        reports = getattr(fut.result(), "reports", None)
        if reports and any(r.trade_id for r in reports):
            self.trades += 1
        else:
            self.rejects += 1

    async def run(self, rate: float, seconds: float) -> tuple[int, int, int]:
        """Send ``rate`` buys per second for ``seconds``; returns (trade ts window start, end,
        buys sent). Buys due in the same loop turn leave in one frame (one engine batch)."""
        from protocol.messages import NewOrder

        loop = asyncio.get_running_loop()
        total = max(1, int(rate * seconds))
        t0 = loop.time()
        start_ns = time.time_ns()
        futs = []
        for i in range(total):
            due = t0 + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            fut = self.client.send(NewOrder(0, TAKER, MARKET, 1, 1, 2, PRICE, 1))
            fut.add_done_callback(self._done)
            futs.append(fut)
        await asyncio.wait(futs, timeout=60)
        return start_ns, time.time_ns(), total

    async def close(self) -> None:
        await self.client.close()


# ============================================================================ phases


def pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6 if sorted_ns else 0.0


def latency_stats(tss: array.array, lat: array.array, lo: int, hi: int) -> dict[str, Any]:
    s = sorted(v for t, v in zip(tss, lat, strict=True) if lo <= t <= hi)
    return {
        "samples": len(s),
        "p50_ms": pct(s, 0.50),
        "p90_ms": pct(s, 0.90),
        "p99_ms": pct(s, 0.99),
        "p999_ms": pct(s, 0.999),
        "max_ms": s[-1] / 1e6 if s else 0.0,
    }


async def bridge_metrics(http: Any, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/stats") as r:
        return (await r.json())["bridge"]


async def settle(http: Any, url: str, quiet: float = 0.5, timeout: float = 60.0) -> None:
    """Wait until the bridge has sent everything (its frame counter stops moving)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        now = (await bridge_metrics(http, url))["messages_out"]
        if now == last:
            return
        last = now
        await asyncio.sleep(quiet)


async def measured_run(setup: Setup, http: Any, driver: Driver, rate: float,
                       seconds: float) -> dict[str, Any]:  # fmt: skip
    meter = procs.LoadMeter()
    for pid in setup.pids():
        meter.watch(pid)
    m0, c0, t0 = await bridge_metrics(http, setup.url), setup.cpu(), time.perf_counter()
    lo, hi, sent = await driver.run(rate, seconds)
    m1, c1, t1 = await bridge_metrics(http, setup.url), setup.cpu(), time.perf_counter()
    foreign = meter.foreign_cores()
    await settle(http, setup.url)
    m2 = await bridge_metrics(http, setup.url)
    wall = t1 - t0
    return {
        "rate": rate,
        "sent": sent,
        "window": (lo, hi),
        "wall_s": wall,
        "msgs_out_per_s": (m1["messages_out"] - m0["messages_out"]) / wall,
        "msgs_out_total": m2["messages_out"] - m0["messages_out"],
        "dropped_slow": m2["dropped_slow"] - m0["dropped_slow"],
        "cpu": {k: 100 * (c1[k] - c0[k]) / wall for k in c0},
        "foreign_cores": foreign,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    setup = Setup(args)
    driver = Driver(setup.commands)
    try:
        async with aiohttp.ClientSession() as http:
            await setup.wait_bridge(http)
            await driver.start()
            say(f"  starting {args.clients:,} websocket clients in {args.client_procs} "
                f"process(es) ...")  # fmt: skip
            t = time.perf_counter()
            ready = await setup.start_workers()
            m = await bridge_metrics(http, setup.url)
            say(f"  {ready:,} clients subscribed in {time.perf_counter() - t:.1f} s "
                f"(bridge: {m['connections']:,} connections, {m['subscriptions']:,} "
                "subscriptions)")  # fmt: skip
            await driver.run(args.rate, min(1.0, args.seconds))  # warm-up, discarded
            await settle(http, setup.url)
            say(f"\n## 1. Latency at {args.rate:g} trades/s x {ready:,} clients for "
                f"{args.seconds:g} s")  # fmt: skip
            lat_run = await measured_run(setup, http, driver, args.rate, args.seconds)
            say(f"\n## 2. Throughput: offered trade rates {args.steps} (x {ready:,} clients), "
                f"{args.step_seconds:g} s each")  # fmt: skip
            steps = []
            for rate in args.steps:
                r = await measured_run(setup, http, driver, rate, args.step_seconds)
                steps.append(r)
                say(f"  {rate:>6g} trades/s: bridge sent {r['msgs_out_per_s']:>9,.0f} msgs/s; "
                    f"cpu bridge {r['cpu']['bridge']:.0f}%, clients {r['cpu']['clients']:.0f}%, "
                    f"engine {r['cpu']['engine']:.0f}%; dropped {r['dropped_slow']}; other "
                    f"load {r['foreign_cores']:.2f} cores")  # fmt: skip
            tss, lat, summaries = await setup.stop_workers()
    finally:
        with contextlib.suppress(Exception):
            await driver.close()
        setup.close()
    for run in [lat_run, *steps]:
        run["latency"] = latency_stats(tss, lat, *run.pop("window"))
        run["delivered_per_s"] = run["latency"]["samples"] / run["wall_s"]
    return {
        "clients": ready,
        "latency_run": lat_run,
        "steps": steps,
        "workers": summaries,
        "trades": driver.trades,
        "rejects": driver.rejects,
    }


# ============================================================================ report


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    width = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, width, strict=True)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in width) + "|", *map(line, rows)]


def report(res: dict[str, Any], args: argparse.Namespace) -> None:
    mark = lambda ok: "yes" if ok else "NO"  # noqa: E731
    n = res["clients"]
    lr = res["latency_run"]
    la = lr["latency"]
    say("\n## Per step (latency = engine trade ts -> client receive, every client's every "
        "message)")  # fmt: skip
    rows = [
        [f"{r['rate']:g}", f"{r['msgs_out_per_s']:,.0f}", f"{r['delivered_per_s']:,.0f}",
         f"{r['latency']['p50_ms']:.2f}", f"{r['latency']['p99_ms']:.2f}",
         f"{r['latency']['max_ms']:.1f}", str(r["dropped_slow"]),
         f"{r['cpu']['bridge']:.0f}% / {r['cpu']['clients']:.0f}% / {r['cpu']['engine']:.0f}%",
         f"{r['foreign_cores']:.2f}"]
        for r in [lr, *res["steps"]]
    ]  # fmt: skip
    for line in table(["trades/s", "bridge msgs/s out", "received/s", "p50 ms", "p99 ms",
                       "max ms", "dropped", "cpu bridge/clients/engine",
                       "other load (cores)"], rows):  # fmt: skip
        say(line)
    busiest = max(r["foreign_cores"] for r in [lr, *res["steps"]])
    if busiest > 0.2:
        say(f"  NOTE: other processes used up to {busiest:.2f} of the {os.cpu_count()} cores "
            "during the runs: these figures are pessimistic.")  # fmt: skip
    best = max([lr, *res["steps"]], key=lambda r: r["msgs_out_per_s"])
    at = f"{n:,} clients"
    offered = max(r["rate"] for r in [lr, *res["steps"]]) * n
    msgs_met = mark(best["msgs_out_per_s"] >= TARGET_MSGS_PER_S)
    if offered < TARGET_MSGS_PER_S:
        msgs_met = f"n/a (offered at most {offered:,.0f}/s)"
    say("\n## Summary")
    summary = [
        [f"p50 trade -> client, {at}, {lr['rate']:g} trades/s", f"{la['p50_ms']:.2f} ms", "", ""],
        [f"p99 trade -> client, {at}, {lr['rate']:g} trades/s", f"{la['p99_ms']:.2f} ms",
         f"< {TARGET_P99_MS:g} ms", mark(la["p99_ms"] < TARGET_P99_MS)],
        ["p99.9 / max, same run", f"{la['p999_ms']:.2f} / {la['max_ms']:.1f} ms", "", ""],
        [f"messages/s out of one bridge (best step, {best['rate']:g} trades/s)",
         f"{best['msgs_out_per_s']:,.0f}", f">= {TARGET_MSGS_PER_S:,}", msgs_met],
    ]  # fmt: skip
    for line in table(["metric", "value", "target", "met"], summary):
        say(line)
    if n < 1_000:
        say(f"  (only {n:,} clients: the p99 target is stated for 1,000)")
    say(f"  trades printed {res['trades']:,}, buys without a trade {res['rejects']}; "
        f"clients: {res['workers']}")  # fmt: skip


# ============================================================================== main


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="200 clients, short runs (~1 minute)")
    p.add_argument("--clients", type=int, help="websocket clients (1000; quick 200)")
    p.add_argument("--client-procs", type=int, default=2, help="client processes (2)")
    p.add_argument("--rate", type=float, default=20.0, help="latency run: trades per second")
    p.add_argument("--seconds", type=float, help="latency run length (10; quick 3)")
    p.add_argument("--steps", help="throughput: comma list of trades/s (25,50,100,200,400)")
    p.add_argument("--step-seconds", type=float, help="seconds per throughput step (3; quick 1.5)")
    p.add_argument("--bridge-cpu", type=int, default=0)
    p.add_argument("--engine-cpu", type=int, default=1)
    p.add_argument("--client-cpus", help="cores for the client processes (default: all but "
                   "the bridge's)")  # fmt: skip
    p.add_argument("--json", help="also write the results as JSON to this file")


def _defaults(args: argparse.Namespace) -> None:
    q = args.quick
    if args.clients is None:
        args.clients = 200 if q else 1_000
    if args.seconds is None:
        args.seconds = 3.0 if q else 10.0
    if args.step_seconds is None:
        args.step_seconds = 1.5 if q else 3.0
    args.steps = [float(x) for x in (args.steps or ("100,400" if q else "25,50,100,200,400"))
                  .split(",")]  # fmt: skip
    if args.client_cpus is None:
        rest = sorted(os.sched_getaffinity(0) - {args.bridge_cpu})
        args.client_cpus = ",".join(map(str, rest))


def run(args: argparse.Namespace) -> int:
    import uvloop

    _defaults(args)
    procs.interrupt_on_sigterm()
    driver_cpus = {int(c) for c in args.client_cpus.split(",") if c.strip()}
    if driver_cpus & os.sched_getaffinity(0):
        os.sched_setaffinity(0, driver_cpus & os.sched_getaffinity(0))  # off the bridge's core
    say("# Websocket bridge benchmark (python -m bench ws)")
    say(f"  nproc {os.cpu_count()}; bridge pinned to cpu {args.bridge_cpu}, engine to cpu "
        f"{args.engine_cpu}, clients and driver on cpus {args.client_cpus}; "
        f"mode: {'quick' if args.quick else 'full'}")  # fmt: skip
    t0 = time.perf_counter()
    try:
        res = uvloop.run(_main(args))
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    report(res, args)
    say(f"  total {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        sys.exit(worker_main(sys.argv[2:]))
    p = argparse.ArgumentParser(prog="python -m bench.ws_bench")
    add_arguments(p)
    sys.exit(run(p.parse_args()))

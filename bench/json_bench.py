"""``python -m bench json``: order throughput and order->ack latency through one JSON gateway.

Setup: the real engine (``python -m engine``, pinned to ``--engine-cpu``, default 1) and one
gateway (``python -m gateways.json_tcp``, pinned to ``--gateway-cpu``, default 0) on loopback,
each pinned from before exec so every thread of theirs stays on its core; a temporary data
directory and account store; a config copied from protocol/default.toml with the per-account
rate limits and the in-flight bound raised out of the way. The clients are the shipped
``JsonClient``s in this process (uvloop), pinned to the remaining cores when there are any.

1. Throughput: N concurrent clients (default 1, 4, 16), each its own funded account and
   connection, each keeping ``--window`` requests in flight: that many lanes per client, each
   placing a resting GTC limit buy (never crossing: nothing trades), awaiting the ack,
   cancelling it, awaiting that ack. Orders/s counts acknowledged order messages (places and
   cancels) between the end of a warm-up and the end of the timed run; the median of the runs
   is reported against the target.
2. Latency: one client offers a fixed ``--rate`` (default 5,000) order messages per second,
   alternating resting places and cancels of its own acked orders, for ``--seconds``. The
   round trip is timed from just before the request is written to the reply's arrival in the
   client (the future's completion). Pacing "spin" sends each order when due (used when the
   clients have a core of their own); "tick" sends what is due every event-loop tick (about
   1 ms, in small bursts; used when the clients share cores with the gateway or engine).

Nothing here is a test: it prints a table (and ``--json FILE`` writes the numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from bench import procs
from bench.engine_bench import machine_info, say
from bench.procs import cpu_seconds, free_ports, percentiles
from gateways.accounts import AccountStore, Permission
from gateways.json_tcp.client import JsonClient, JsonError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "protocol" / "default.toml"
MARKET = "BTC-USD"
TARGET_ORDERS_PER_S = 30_000  # per gateway process
TARGET_P99_US = 1_000.0  # order -> ack at the fixed offered rate
GATEWAY_LIMITS = {
    "orders_per_second": 1e9,
    "order_burst": 1_000_000_000,
    "requests_per_second": 1e9,
    "request_burst": 1_000_000_000,
    "max_in_flight": 1_000_000,
}


# ------------------------------------------------------------------------------ processes


def bench_config(path: Path, **json_gateway: Any) -> Path:
    """The shipped config with ``[json_gateway]`` keys replaced (each must exist there)."""
    return procs.shipped_config(path, {"json_gateway": json_gateway})


def spawn_engine(
    kids: procs.Children, tmp: Path, config: Path, cpu: int
) -> tuple[procs.Child, str, str]:
    """The engine on free loopback ports, pinned to ``cpu``, ready: (child, commands,
    market data)."""
    cmd_port, md_port = free_ports(2)
    commands, market_data = f"tcp://127.0.0.1:{cmd_port}", f"tcp://127.0.0.1:{md_port}"
    engine = kids.spawn(
        ["engine", "--config", str(config), "--data-dir", str(tmp / "data"),
         "--commands", commands, "--market-data", market_data, "--cpu", str(cpu)],
        tmp / "engine.log", cpus=[cpu],
    )  # fmt: skip
    engine.wait_log("engine ready")
    return engine, commands, market_data


def spawn_gateway(kids: procs.Children, tmp: Path, config: Path, commands: str, port: int,
                  cpu: int, identity: str = "bench-json-gw") -> procs.Child:  # fmt: skip
    """One JSON gateway (accounts in ``tmp``/accounts.db) pinned to ``cpu``."""
    return kids.spawn(
        ["gateways.json_tcp", "--config", str(config), "--port", str(port),
         "--commands", commands, "--accounts", str(tmp / "accounts.db"),
         "--identity", identity], tmp / "gateway.log", cpus=[cpu],
    )  # fmt: skip


async def wait_json_gateway(gateway: procs.Child, port: int, timeout: float = 60.0) -> None:
    """Until a JSON gateway answers a ping saying its engine is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.proc.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{gateway.tail()}")
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            c = await JsonClient.connect("127.0.0.1", port)
            try:
                if (await c.request("ping", timeout=2.0))["engine"]:
                    return
            finally:
                await c.close()
        await asyncio.sleep(0.05)
    raise RuntimeError(f"gateway not serving in {timeout}s:\n{gateway.tail()}")


class Exchange:
    """Engine + one gateway + an account store, all temporary."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-json-"))
        self.kids = procs.Children()
        (self.port,) = free_ports(1)
        self.config = bench_config(self.tmp / "exchange.toml", **GATEWAY_LIMITS)
        self.store = AccountStore(self.tmp / "accounts.db")
        self.engine, self.commands, _ = spawn_engine(
            self.kids, self.tmp, self.config, args.engine_cpu
        )
        self.gateway = spawn_gateway(
            self.kids, self.tmp, self.config, self.commands, self.port, args.gateway_cpu
        )
        admin_id = self.store.create_account("admin")
        self.admin = self.store.issue_key(admin_id, Permission.ADMIN)
        self._accounts = 0

    async def wait_gateway(self, timeout: float = 60.0) -> None:
        await wait_json_gateway(self.gateway, self.port, timeout)

    async def clients(self, n: int) -> list[JsonClient]:
        """``n`` logged-on clients, each of a fresh account funded through an admin session."""
        admin = await JsonClient.connect("127.0.0.1", self.port)
        await admin.logon(*self.admin)
        out = []
        for _ in range(n):
            self._accounts += 1
            account = self.store.create_account(f"bench-{self._accounts}")
            key, secret = self.store.issue_key(account, Permission.TRADE)
            await admin.request("deposit", account=account, asset="USD", amount="100000000")
            c = await JsonClient.connect("127.0.0.1", self.port)
            await c.logon(key, secret)
            out.append(c)
        await admin.close()
        return out

    def cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.gateway.pid), cpu_seconds(self.engine.pid)

    def close(self) -> None:
        self.kids.close()
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def price_of(lane: int) -> str:
    """Resting bids 1000.00 .. 1049.99: never crossing, spread over levels."""
    return f"{1000 + (lane % 50)}.{lane % 100:02d}"


# ----------------------------------------------------------------------- 1. throughput


class Counter:
    def __init__(self) -> None:
        self.acks = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.stop = False


async def lane(c: JsonClient, n: int, count: Counter) -> None:
    price = price_of(n)
    while not count.stop:
        try:
            (new,) = await c.send("place", market=MARKET, side="buy", price=price, qty="0.0100")
            count.acks += 1
            await c.send("cancel", order_id=new["order_id"])
            count.acks += 1
        except JsonError as e:
            count.errors[f"{e.code} {e.reason[:60]}"] += 1
            await asyncio.sleep(0.01)


async def throughput_run(ex: Exchange, clients: list[JsonClient], window: int,
                         warmup: float, seconds: float) -> dict[str, float]:  # fmt: skip
    count = Counter()
    lanes = [asyncio.ensure_future(lane(c, i * window + j, count))
             for i, c in enumerate(clients) for j in range(window)]  # fmt: skip
    await asyncio.sleep(warmup)
    a0, t0, (g0, e0) = count.acks, time.perf_counter(), ex.cpu()
    await asyncio.sleep(seconds)
    a1, t1, (g1, e1) = count.acks, time.perf_counter(), ex.cpu()
    count.stop = True
    await asyncio.wait_for(asyncio.gather(*lanes), 60)
    wall = t1 - t0
    return {
        "orders_per_s": (a1 - a0) / wall,
        "gateway_cpu": 100 * (g1 - g0) / wall,
        "engine_cpu": 100 * (e1 - e0) / wall,
        "errors": sum(count.errors.values()),
        "error_kinds": dict(count.errors.most_common(3)),
    }


async def throughput_phase(ex: Exchange, args: argparse.Namespace) -> list[dict[str, Any]]:
    say(f"\n## 1. Throughput: {args.window} requests in flight per client (place a resting "
        f"buy, then cancel it); {args.runs} runs x {args.seconds:g} s after "
        f"{args.warmup:g} s warm-up each")  # fmt: skip
    rows = []
    for n in args.clients:
        clients = await ex.clients(n)
        runs = [await throughput_run(ex, clients, args.window, args.warmup, args.seconds)
                for _ in range(args.runs)]  # fmt: skip
        for c in clients:
            await c.close()
        rates = [r["orders_per_s"] for r in runs]
        row = {
            "clients": n,
            "runs": rates,
            "median": statistics.median(rates),
            "gateway_cpu": statistics.median(r["gateway_cpu"] for r in runs),
            "engine_cpu": statistics.median(r["engine_cpu"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "error_kinds": [r["error_kinds"] for r in runs if r["errors"]],
        }
        rows.append(row)
        say(f"  {n:>3} clients: " + " / ".join(f"{r:,.0f}" for r in rates)
            + f"  -> median {row['median']:,.0f} orders/s")  # fmt: skip
    return rows


# -------------------------------------------------------------------------- 2. latency


async def latency_run(c: JsonClient, rate: int, seconds: float, spin: bool) -> dict[str, Any]:
    samples: list[int] = []
    acked: collections.deque[int] = collections.deque()
    errors: collections.Counter[str] = collections.Counter()
    pending = 0
    all_sent = False
    drained = asyncio.Event()
    clock = time.perf_counter_ns

    def done(t_send: int, place: bool, fut: asyncio.Future) -> None:
        nonlocal pending
        pending -= 1
        samples.append(clock() - t_send)
        if all_sent and not pending:
            drained.set()
        if fut.exception() is not None:
            e = fut.exception()
            errors[f"{getattr(e, 'code', '?')} {str(e)[:60]}"] += 1
        elif place:
            acked.append(fut.result()[0]["order_id"])

    total = int(rate * seconds)
    sent = 0
    t0 = clock()
    place_next = True
    while sent < total:
        due = min(total, (clock() - t0) * rate // 1_000_000_000 + 1)
        while sent < due:
            if acked and not place_next:
                fields = {"order_id": acked.popleft()}
                op, is_place = "cancel", False
            else:
                fields = {"market": MARKET, "side": "buy", "price": price_of(sent),
                          "qty": "0.0100"}  # fmt: skip
                op, is_place = "place", True
            place_next = not place_next
            pending += 1
            t = clock()
            c.send(op, **fields).add_done_callback(
                lambda f, t=t, p=is_place: done(t, p, f)  # type: ignore[misc]
            )
            sent += 1
        await asyncio.sleep(0 if spin else 0.0005)
    send_wall = (clock() - t0) / 1e9
    all_sent = True
    if pending:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), 30)
    await c.request("cancel_all")
    res = percentiles(samples)
    s = sorted(samples)
    res["p90_us"] = s[min(len(s) - 1, int(0.9 * len(s)))] / 1000 if s else 0.0
    res.update(sent=sent, sent_per_s=sent / send_wall, unanswered=pending,
               errors=sum(errors.values()), error_kinds=dict(errors.most_common(3)))  # fmt: skip
    return res


async def latency_phase(ex: Exchange, args: argparse.Namespace, spin: bool) -> dict[str, Any]:
    say(f"\n## 2. Order -> ack round trip at a fixed offered {args.rate:,} orders/s "
        f"(1 client, {'spin' if spin else 'tick'} pacing; resting places and cancels); "
        f"{args.latency_runs} runs x {args.seconds:g} s")  # fmt: skip
    (c,) = await ex.clients(1)
    await latency_run(c, args.rate, min(1.0, args.seconds), spin)  # warm-up, discarded
    runs = []
    for _ in range(args.latency_runs):
        g0, e0 = ex.cpu()
        t0 = time.perf_counter()
        r = await latency_run(c, args.rate, args.seconds, spin)
        wall = time.perf_counter() - t0
        g1, e1 = ex.cpu()
        r["gateway_cpu"], r["engine_cpu"] = 100 * (g1 - g0) / wall, 100 * (e1 - e0) / wall
        runs.append(r)
        say(f"  sent {r['sent_per_s']:,.0f}/s: p50 {r['p50_us']:.0f} us, p90 {r['p90_us']:.0f} "
            f"us, p99 {r['p99_us']:.0f} us, p99.9 {r['p999_us']:.0f} us, max "
            f"{r['max_us']:.0f} us (n={r['n']:,}, errors {r['errors']})")  # fmt: skip
    await c.close()
    return {
        "runs": runs,
        "median_p50_us": statistics.median(r["p50_us"] for r in runs),
        "median_p99_us": statistics.median(r["p99_us"] for r in runs),
        "median_p999_us": statistics.median(r["p999_us"] for r in runs),
    }


# ---------------------------------------------------------------------------- report


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    width = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, width, strict=True)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in width) + "|", *map(line, rows)]


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    mark = lambda ok: "yes" if ok else "NO"  # noqa: E731
    say("\n## Summary (medians of runs)")
    rows = [
        [
            f"orders/s, {r['clients']} client{'s' if r['clients'] > 1 else ''} x window "
            f"{args.window}",
            " / ".join(f"{x:,.0f}" for x in r["runs"]), f"{r['median']:,.0f}",
            f">= {TARGET_ORDERS_PER_S:,}: {mark(r['median'] >= TARGET_ORDERS_PER_S)}",
            f"gw {r['gateway_cpu']:.0f}%, eng {r['engine_cpu']:.0f}%",
        ]
        for r in results.get("throughput", [])
    ]  # fmt: skip
    lat = results.get("latency")
    if lat:
        p99s = [r["p99_us"] for r in lat["runs"]]
        rows.append([
            f"p99 order->ack at {args.rate:,}/s",
            " / ".join(f"{x:,.0f} us" for x in p99s), f"{lat['median_p99_us']:,.0f} us",
            f"< {TARGET_P99_US:,.0f} us: {mark(lat['median_p99_us'] < TARGET_P99_US)}",
            "gw {:.0f}%, eng {:.0f}%".format(
                statistics.median(r["gateway_cpu"] for r in lat["runs"]),
                statistics.median(r["engine_cpu"] for r in lat["runs"]),
            ),
        ])  # fmt: skip
        rows.append([
            f"p50 order->ack at {args.rate:,}/s",
            " / ".join(f"{r['p50_us']:,.0f} us" for r in lat["runs"]),
            f"{lat['median_p50_us']:,.0f} us", "", "",
        ])  # fmt: skip
    for line in table(["metric", "runs", "median", "target", "cpu (% of a core)"], rows):
        say(line)
    errors = sum(r["errors"] for r in results.get("throughput", []))
    errors += sum(r["errors"] for r in (lat or {}).get("runs", []))
    if errors:
        say(f"  errors during the runs: {errors} (see --json for kinds)")


# ------------------------------------------------------------------------------- main


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="short smoke run (about half a minute)")
    p.add_argument("--clients", help="comma list of client counts (default 1,4,16)")
    p.add_argument("--window", type=int, default=64, help="requests in flight per client")
    p.add_argument("--runs", type=int, help="timed throughput runs per client count (5; quick 2)")
    p.add_argument("--seconds", type=float, help="seconds per timed run (3; quick 1)")
    p.add_argument("--warmup", type=float, help="unmeasured lead-in per run (1; quick 0.3)")
    p.add_argument("--rate", type=int, default=5_000, help="latency: offered orders/s")
    p.add_argument("--latency-runs", type=int, help="latency runs (5; quick 1)")
    p.add_argument("--pacing", choices=("auto", "spin", "tick"), default="auto")
    p.add_argument("--engine-cpu", type=int, default=1)
    p.add_argument("--gateway-cpu", type=int, default=0)
    p.add_argument("--only", default="throughput,latency", help="phases: throughput,latency")
    p.add_argument("--json", help="also write the results as JSON to this file")


def _defaults(args: argparse.Namespace) -> None:
    q = args.quick
    for name, full, short in (("runs", 5, 2), ("seconds", 3.0, 1.0), ("warmup", 1.0, 0.3),
                              ("latency_runs", 5, 1)):  # fmt: skip
        if getattr(args, name) is None:
            setattr(args, name, short if q else full)
    args.clients = [int(x) for x in (args.clients or ("1,4" if q else "1,4,16")).split(",")]


async def _main(args: argparse.Namespace, client_cpus: list[int], spin: bool) -> dict:
    ex = Exchange(args)
    meter = procs.LoadMeter()
    try:
        meter.watch(ex.engine.pid)
        meter.watch(ex.gateway.pid)
        await ex.wait_gateway()
        results: dict[str, Any] = {"args": vars(args), "client_cpus": client_cpus}
        phases = {p.strip() for p in args.only.split(",")}
        if "throughput" in phases:
            results["throughput"] = await throughput_phase(ex, args)
        if "latency" in phases:
            results["latency"] = await latency_phase(ex, args, spin)
        results["foreign_cores"] = meter.foreign_cores()
        return results
    finally:
        ex.close()


def run(args: argparse.Namespace) -> int:
    _defaults(args)
    procs.interrupt_on_sigterm()
    client_cpus = procs.pin_self_off({args.engine_cpu, args.gateway_cpu})
    own_core = not ({args.engine_cpu, args.gateway_cpu} & set(client_cpus))
    spin = args.pacing == "spin" or (args.pacing == "auto" and own_core)
    say("# JSON gateway benchmark (python -m bench json)")
    args.cpu, args.client_cpu = args.engine_cpu, client_cpus  # for machine_info's wording
    for line in machine_info(args)[:2]:
        say("  " + line)
    say(f"  engine pinned to cpu {args.engine_cpu}, gateway to cpu {args.gateway_cpu}, "
        f"clients (this process, uvloop) on cpus {client_cpus}"
        + ("" if own_core else " - SHARED with the engine/gateway: figures are pessimistic")
        + f"; mode: {'quick' if args.quick else 'full'}")  # fmt: skip
    t0 = time.perf_counter()
    try:
        results = uvloop.run(_main(args, client_cpus, spin))
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    report(results, args)
    close_report(results, t0, args.json)
    return 0


def close_report(results: dict[str, Any], t0: float, json_path: str | None) -> None:
    """The run's last lines: the load other processes caused, a warning when it was high, and
    the figures as JSON when asked (``--json FILE``)."""
    say(f"  other processes' CPU over the whole run: {results['foreign_cores']:.2f} of "
        f"{os.cpu_count()} cores; total {time.perf_counter() - t0:.0f} s")  # fmt: skip
    if results["foreign_cores"] > 0.25:
        say("WARNING: other processes were busy during the runs: the figures above are lower "
            "and noisier than on an idle machine.")  # fmt: skip
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2, default=str))

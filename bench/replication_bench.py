"""``python -m bench engine --only replication``: what the replicated journal costs, and how long
a failover takes (engine/replication.py).

One run, one three-server NATS JetStream cluster on this machine (engine/natscluster.py), and
for each round, in alternating order, three engine setups:

- ``off``: ``[replication]`` empty, the local journal only (the cluster runs, idle);
- ``on``: a primary that appends every batch to a stream with three replicas before its replies
  leave (its own stream, lease bucket and data per engine, so each one starts fresh);
- ``standby``: the same with a standby engine following that stream (the realistic setup: the
  standby's consumer and its own journal load the servers and the machine as well).

Each setup is measured twice, on a fresh engine each (pinned to ``--cpu``, the client to
``--client-cpu``, as phase 2 of ``bench engine``): (a) the sustained rate of the pipelined raw
client (bench/zmq_pipeline.py: engine-bound) and (b) order -> ack latency at a paced
``--rate`` (10,000/s) with the EngineClient fixed-rate client (bench/zmq_client.py, sent at
every 1 ms loop tick). The NATS servers and the standby are not pinned: on a small machine they
share the cores with the engine and the client, which is part of what is measured.

Failover: a primary, a standby and the cluster; a raw DEALER sends one resting order every
``--failover-interval`` ms to the primary, the primary gets SIGKILL, and the same client then
sends one order per interval to the standby's endpoint (queued by ZeroMQ until the standby
binds it, reconnect interval 10 ms) until one is acknowledged (an Executions reply). Reported:
kill -> the first acknowledged order, and its parts (kill -> the standby's "took over" log
line; -> its first reply), per lease setting (the default 2.0 s / 0.4 s and 1.0 s / 0.2 s).

Targets (issue 15): replicated throughput >= 80% of unreplicated, replicated p99 within 2 ms of
the unreplicated p99, failover under 3 s; printed as met / MISSED, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import zmq

from bench.procs import Child, Children, LoadMeter, cpu_seconds, free_ports, shipped_config
from bench.workload import funding
from bench.zmq_pipeline import answered
from protocol import config
from protocol.enums import OrderType, Side, TimeInForce
from protocol.messages import NewOrder

TARGETS = {
    "throughput_ratio": 0.80,  # replicated / unreplicated sustained orders/s
    "p99_extra_us": 2_000.0,  # replicated p99 - unreplicated p99 at 10k/s
    "failover_s": 3.0,  # kill -9 of the primary -> first acknowledged order on the new one
}
MODES = ("off", "on", "standby")
EXECUTIONS = 101  # protocol.messages.Executions' tag
ENGINE_MODULE = ["engine"]
FAILOVER_LEASES = ((2.0, 0.4), (1.0, 0.2))  # (lease, heartbeat): the default, and a short one


def say(*parts: object) -> None:
    print(*parts, flush=True)


def children() -> Children:
    return Children(stop_signal=signal.SIGINT, stop_timeout=10.0, inherit_config=True)


class Setup:
    """The cluster and the configs of one phase; every engine gets a fresh stream (``tag``)."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        from engine.natscluster import NatsCluster

        self.args = args
        self.tmp = tmp
        self.cluster = NatsCluster(tmp / "nats").start()
        self.n = 0

    def server_pids(self) -> list[int]:
        return [p.pid for p in self.cluster.procs if p is not None]

    def config(self, tag: str, node: str, replicated: bool, lease: float = 2.0,
               heartbeat: float = 0.4) -> tuple[Path, int]:  # fmt: skip
        """A config for one engine (its own metrics port): (path, metrics port)."""
        (mport,) = free_ports(1)
        path = shipped_config(
            self.tmp / f"{tag}-{node}.toml", {"metrics": {"engine": f"127.0.0.1:{mport}"}}
        )
        if replicated:
            servers = ", ".join(f'"{u}"' for u in self.cluster.urls)
            with path.open("a") as f:
                f.write(
                    f'\n[replication]\nservers = [{servers}]\nnode = "{node}"\n'
                    f'stream = "BENCH_{tag}"\nsubject = "bench.{tag}"\n'
                    f'bucket = "BENCH_LEASE_{tag}"\nlease = {lease}\nheartbeat = {heartbeat}\n'
                )
        return path, mport

    def tag(self) -> str:
        self.n += 1
        return f"R{self.n}"

    def stream_messages(self, tag: str) -> int:
        """Messages in the stream ``BENCH_<tag>`` (the cluster's monitoring port, /jsz)."""
        for port in self.cluster.monitor_ports:
            url = f"http://127.0.0.1:{port}/jsz?streams=true"
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(url, timeout=2) as r:
                    data = json.loads(r.read())
                for acct in data.get("account_details") or []:
                    for st in acct.get("stream_detail") or []:
                        if st.get("name") == f"BENCH_{tag}":
                            return int(st["state"]["messages"])
        return 0

    def close(self) -> None:
        self.cluster.close()


class Engines:
    """One measured engine (and its standby, in ``standby`` mode) on a fresh stream."""

    def __init__(self, setup: Setup, kids: Children, mode: str, workdir: Path,
                 lease: float = 2.0, heartbeat: float = 0.4) -> None:  # fmt: skip
        self.setup = setup
        self.mode = mode
        self.tag = setup.tag()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        replicated = mode != "off"
        cfg, self.metrics_port = setup.config(self.tag, "a", replicated, lease, heartbeat)
        self.primary, self.endpoint = spawn(kids, cfg, workdir / "a", setup.args.cpu)
        self.primary.wait_log("engine ready", timeout=60.0)
        self.standby: Child | None = None
        self.standby_endpoint = ""
        if mode == "standby":
            cfg_b, _ = setup.config(self.tag, "b", True, lease, heartbeat)
            self.standby, self.standby_endpoint = spawn(kids, cfg_b, workdir / "b", -1)
            self.standby.wait_log("following", timeout=60.0)

    def pids(self) -> list[int]:
        pids = [self.primary.pid, *self.setup.server_pids()]
        return pids + ([self.standby.pid] if self.standby else [])

    def metrics(self) -> dict[str, float]:
        """The primary's counters that tell how it replicated (Prometheus text, by suffix)."""
        out: dict[str, float] = {}
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(url, timeout=2) as r:
                text = r.read().decode()
            for line in text.splitlines():
                if line.startswith("#") or " " not in line:
                    continue
                name, value = line.rsplit(" ", 1)
                key = name.split("_engine_", 1)[-1].removesuffix("_total")
                if key in ("replicated_batches", "replication_retries", "batches", "commands"):
                    out[key] = float(value)
        return out

    def took_over(self) -> bool:
        return "took over" in self.primary.text()

    def stop(self) -> None:
        for c in (self.standby, self.primary):
            if c is not None:
                c.stop()


def spawn(kids: Children, cfg: Path, workdir: Path, cpu: int) -> tuple[Child, str]:
    """An engine process (not waited for: a standby answers nothing); (child, endpoint)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd_port, md_port = free_ports(2)
    endpoint = f"tcp://127.0.0.1:{cmd_port}"
    argv = [ENGINE_MODULE[0], "--config", str(cfg), "--data-dir", str(workdir / "data"),
            "--commands", endpoint, "--market-data", f"tcp://127.0.0.1:{md_port}"]  # fmt: skip
    if cpu >= 0:
        argv += ["--cpu", str(cpu)]
    return kids.spawn(argv, workdir / "engine.log"), endpoint


def cpu_of(pids: list[int]) -> dict[int, float]:
    return {p: cpu_seconds(p) for p in pids}


def measured(setup: Setup, kids: Children, mode: str, workdir: Path, what: str) -> dict[str, Any]:
    """One measurement (``what``: "pipeline" or "paced") on a fresh engine (and standby)."""
    args = setup.args
    eng = Engines(setup, kids, mode, workdir)
    try:
        meter = LoadMeter()
        for pid in eng.pids():
            meter.watch(pid)
        servers = setup.server_pids()
        cpu0, t0 = cpu_of(servers + ([eng.standby.pid] if eng.standby else [])), time.monotonic()
        if what == "pipeline":
            argv = ["bench.zmq_pipeline", "--endpoint", eng.endpoint,
                    "--cpu", str(args.client_cpu), "--engine-pid", str(eng.primary.pid),
                    "--commands", str(args.repl_pipeline_commands),
                    "--warmup", str(max(5_000, args.repl_pipeline_commands // 3)),
                    "--window", str(args.window), "--chunk", str(args.chunk)]  # fmt: skip
        else:
            argv = ["bench.zmq_client", "--endpoint", eng.endpoint,
                    "--cpu", str(args.client_cpu), "--engine-pid", str(eng.primary.pid),
                    "--rate", str(args.rate), "--seconds", str(args.repl_seconds),
                    "--pacing", args.pacing, "--sat-seconds", "0"]  # fmt: skip
        client = kids.spawn(argv, workdir / f"{what}.log", stdout=subprocess.PIPE)
        out, _ = client.proc.communicate(timeout=300)
        if client.proc.returncode != 0 or not out.strip():
            raise RuntimeError(
                f"{what} client failed ({client.proc.returncode}):\n{client.tail()}\n"
                f"engine log:\n{eng.primary.tail()}"
            )
        res = json.loads(out.decode().strip().splitlines()[-1])
        wall = time.monotonic() - t0
        cpu1 = cpu_of(list(cpu0))
        res["nats_cores"] = sum(cpu1[p] - cpu0[p] for p in servers) / wall
        if eng.standby:
            res["standby_cores"] = (cpu1[eng.standby.pid] - cpu0[eng.standby.pid]) / wall
        res["foreign_cores"] = meter.foreign_cores()
        res["metrics"] = eng.metrics()
        if mode != "off":
            res["took_over"] = eng.took_over()
            res["stream_messages"] = setup.stream_messages(eng.tag)
        return res
    finally:
        eng.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# ----------------------------------------------------------------------------- failover
class OrderFlow:
    """A raw DEALER that sends one resting buy per call and tells which were acknowledged."""

    def __init__(self, ctx: zmq.Context, endpoint: str, ex: config.Exchange) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 10)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 10)
        self.sock.connect(endpoint)
        self.enc = msgspec.msgpack.Encoder()
        market = next(iter(ex.markets.values()))
        self.market = market.symbol
        self.price = max(1, market.max_price // 2000)  # half the workloads' mid: it rests
        self.req = 10_000_000

    def send_raw(self, cmds: list[Any]) -> None:
        self.sock.send(self.enc.encode(cmds))

    def send_order(self, account: int) -> None:
        self.req += 1
        self.send_raw(
            [
                NewOrder(
                    self.req,
                    account,
                    self.market,
                    Side.BUY,
                    OrderType.LIMIT,
                    TimeInForce.GTC,
                    self.price,
                    1,
                )
            ]  # fmt: skip
        )

    def acked(self, timeout_ms: int) -> int:
        """Acknowledged orders among the replies that arrive within ``timeout_ms``."""
        n = 0
        while self.sock.poll(timeout_ms):
            for m in msgspec.msgpack.decode(self.sock.recv()):
                if m[0] == EXECUTIONS and m[1] > 10_000_000:
                    n += 1
            timeout_ms = 0
        return n

    def close(self) -> None:
        self.sock.close(0)


def log_time(text: str, needle: str) -> float | None:
    """The wall-clock time (epoch seconds) of the first log line holding ``needle``."""
    for line in text.splitlines():
        if needle in line:
            with contextlib.suppress(ValueError):
                stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                return stamp.timestamp()
    return None


def failover_run(setup: Setup, kids: Children, workdir: Path, lease: float, heartbeat: float
                 ) -> dict[str, Any]:  # fmt: skip
    args = setup.args
    ex = config.load(args.config)
    eng = Engines(setup, kids, "standby", workdir, lease, heartbeat)
    assert eng.standby is not None
    ctx = zmq.Context()
    old = OrderFlow(ctx, eng.endpoint, ex)
    new = OrderFlow(ctx, eng.standby_endpoint, ex)
    interval = args.failover_interval / 1000
    try:
        deposits = funding(ex, 10)
        old.send_raw(deposits)
        got = 0
        while got < len(deposits):
            if not old.sock.poll(30_000):
                raise RuntimeError(f"deposits not answered:\n{eng.primary.tail()}")
            got += answered(old.sock.recv())
        acked_before = 0
        t_end = time.monotonic() + args.failover_lead
        i = 0
        while time.monotonic() < t_end:  # orders flow to the primary, one per interval
            old.send_order(1 + i % 10)
            i += 1
            acked_before += old.acked(int(interval * 1000))
        t_kill, wall_kill = time.perf_counter(), time.time()
        eng.primary.proc.send_signal(signal.SIGKILL)
        eng.primary.proc.wait()
        acked_late = old.acked(0)  # replies already on the way count as before the kill
        first = 0.0
        give_up = time.perf_counter() + 30
        nxt = time.perf_counter()
        while time.perf_counter() < give_up:
            now = time.perf_counter()
            if now >= nxt:
                new.send_order(1 + i % 10)
                i += 1
                nxt += interval
            if new.acked(max(0, int((nxt - time.perf_counter()) * 1000))):
                first = time.perf_counter() - t_kill
                break
        took = log_time(eng.standby.text(), "took over")
        ready = log_time(eng.standby.text(), "engine ready")
        return {
            "lease": lease,
            "heartbeat": heartbeat,
            "acked_before_kill": acked_before + acked_late,
            "failover_s": first if first else float("nan"),
            "took_over_s": (took - wall_kill) if took else float("nan"),
            "ready_s": (ready - wall_kill) if ready else float("nan"),
        }
    finally:
        old.close()
        new.close()
        ctx.term()
        eng.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# -------------------------------------------------------------------------------- phase
def pct(p: dict[str, float]) -> str:
    return f"p50 {p['p50_us']:,.0f} / p99 {p['p99_us']:,.0f} / p99.9 {p['p999_us']:,.0f} us"


def median_of(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> float:
    vals = [r[key][sub] if sub else r[key] for r in runs]
    return statistics.median(vals) if vals else float("nan")


def replication_phase(args: argparse.Namespace) -> dict[str, Any]:
    modes = [m for m in MODES if m in args.repl_modes.split(",")]
    say(
        f"\n## 4. Replicated journal (3-server NATS JetStream cluster on this machine): "
        f"engine on cpu {args.cpu}, client on cpu {args.client_cpu}, NATS servers and standby "
        f"unpinned; {args.repl_rounds} rounds of {', '.join(modes)} (alternating order)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-repl-"))
    kids = children()
    setup = Setup(args, tmp)
    res: dict[str, Any] = {"modes": modes, "runs": {m: {"pipeline": [], "paced": []}
                                                     for m in modes}}  # fmt: skip
    try:
        for rnd in range(args.repl_rounds):
            order = modes if rnd % 2 == 0 else list(reversed(modes))
            for mode in order:
                for what in ("pipeline", "paced"):
                    r = measured(setup, kids, mode, tmp / f"{mode}-{what}-{rnd}", what)
                    res["runs"][mode][what].append(r)
                    say(f"  round {rnd + 1} {mode:8} {describe(what, r)}")
        res["failover"] = {}
        for lease, heartbeat in args.failover_leases:
            runs = []
            for k in range(args.failover_runs):
                r = failover_run(setup, kids, tmp / f"fo-{lease}-{k}", lease, heartbeat)
                runs.append(r)
                say(
                    f"  failover lease {lease:g}s heartbeat {heartbeat:g}s run {k + 1}: "
                    f"kill -> first ack {r['failover_s']:.3f}s (took over at "
                    f"{r['took_over_s']:.3f}s, ready {r['ready_s']:.3f}s; "
                    f"{r['acked_before_kill']} acked before the kill)"
                )
            res["failover"][str(lease)] = runs
    finally:
        kids.close(5.0)
        setup.close()
        shutil.rmtree(tmp, ignore_errors=True)
    res["summary"] = summarize(res)
    for line in report(res):
        say(line)
    return res


def describe(what: str, r: dict[str, Any]) -> str:
    extra = f"nats {r['nats_cores']:.2f} cores"
    if "standby_cores" in r:
        extra += f", standby {r['standby_cores']:.2f}"
    m = r.get("metrics") or {}
    if m.get("batches"):
        extra += f", {m.get('commands', 0) / m['batches']:.1f} cmds/batch"
    if "stream_messages" in r:
        extra += f", stream {r['stream_messages']:,} msgs, took over {r['took_over']}"
    extra += f"; other load {r['foreign_cores']:.2f} cores"
    if what == "pipeline":
        eng = r["cpu"].get("engine_cpu_pct", 0)
        return f"pipelined: {r['orders_per_s']:,.0f} orders/s (engine {eng:.0f}%; {extra})"
    fr = r["fixed_rate"]
    return (
        f"paced {fr['offered_rate']:,}/s: {pct(fr['latency'])} "
        f"({fr['answered']:,}/{fr['orders']:,} answered; {extra})"
    )


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in res["modes"]:
        runs = res["runs"][mode]
        lats = [r["fixed_rate"]["latency"] for r in runs["paced"]]
        out[mode] = {
            "orders_per_s": median_of(runs["pipeline"], "orders_per_s"),
            "p50_us": statistics.median(p["p50_us"] for p in lats),
            "p99_us": statistics.median(p["p99_us"] for p in lats),
            "p999_us": statistics.median(p["p999_us"] for p in lats),
            "foreign_cores": max(r["foreign_cores"] for r in runs["pipeline"] + runs["paced"]),
            "nats_cores": statistics.median(r["nats_cores"] for r in runs["paced"]),
            "replicated": all(
                r.get("took_over") and r.get("stream_messages", 0) > 0
                and r["metrics"].get("replicated_batches", 0) > 0
                for r in runs["pipeline"] + runs["paced"]
            ) if mode != "off" else None,
        }  # fmt: skip
    fo: dict[str, Any] = {}
    for lease, runs in (res.get("failover") or {}).items():
        fo[lease] = {
            "runs": len(runs),
            "heartbeat": runs[0]["heartbeat"] if runs else 0,
            "median_s": median_of(runs, "failover_s"),
            "max_s": max((r["failover_s"] for r in runs), default=float("nan")),
            "took_over_median_s": median_of(runs, "took_over_s"),
        }
    out["failover"] = fo
    return out


def report(res: dict[str, Any]) -> list[str]:
    s = res["summary"]

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines = ["", "  medians over the rounds:"]
    off = s.get("off")
    for mode in res["modes"]:
        m = s[mode]
        line = (
            f"    {mode:8} {m['orders_per_s']:,.0f} orders/s; at {res_rate(res):,}/s p50 "
            f"{m['p50_us']:,.0f} / p99 {m['p99_us']:,.0f} / p99.9 {m['p999_us']:,.0f} us; "
            f"nats {m['nats_cores']:.2f} cores; other load up to {m['foreign_cores']:.2f}"
        )
        if m["replicated"] is not None:
            line += f"; replicated: {'yes' if m['replicated'] else 'NO'}"
        lines.append(line)
        if off and mode != "off":
            ratio = m["orders_per_s"] / off["orders_per_s"]
            extra = m["p99_us"] - off["p99_us"]
            lines.append(
                f"      {mode}/off: throughput {ratio:.2f}x "
                f"({mark(ratio >= TARGETS['throughput_ratio'])}: >= "
                f"{TARGETS['throughput_ratio']:.0%}); p99 +{extra:,.0f} us "
                f"({mark(extra <= TARGETS['p99_extra_us'])}: <= +{TARGETS['p99_extra_us']:,.0f}"
                f" us); p50 {m['p50_us'] / off['p50_us']:.1f}x"
            )
    for lease, f in s["failover"].items():
        lines.append(
            f"    failover, lease {lease}s heartbeat {f['heartbeat']:g}s: median "
            f"{f['median_s']:.2f}s, max {f['max_s']:.2f}s over {f['runs']} runs "
            f"({mark(f['median_s'] < TARGETS['failover_s'])}: < {TARGETS['failover_s']:g}s); "
            f"kill -> took over {f['took_over_median_s']:.2f}s"
        )
    return lines


def res_rate(res: dict[str, Any]) -> int:
    for mode in res["modes"]:
        for r in res["runs"][mode]["paced"]:
            return int(r["fixed_rate"]["offered_rate"])
    return 0


def rows(res: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """Summary table rows (bench engine's summary)."""
    if not res:
        return []
    s = res["summary"]
    off = s.get("off")
    out: list[tuple[str, str, str]] = []
    for mode in res["modes"]:
        m = s[mode]
        name = {"off": "replication off", "on": "replication on (primary only)",
                "standby": "replication on + standby following"}[mode]  # fmt: skip
        out.append((f"{name}: pipelined orders/s (median)", f"{m['orders_per_s']:,.0f}", "-"))
        out.append(
            (
                f"{name}: order->ack p50 / p99 / p99.9 at {res_rate(res):,}/s",
                f"{m['p50_us']:,.0f} / {m['p99_us']:,.0f} / {m['p999_us']:,.0f} us",
                "-",
            )
        )
        if off and mode != "off":
            ratio = m["orders_per_s"] / off["orders_per_s"]
            extra = m["p99_us"] - off["p99_us"]
            ok_r = "met" if ratio >= TARGETS["throughput_ratio"] else "MISSED"
            ok_p = "met" if extra <= TARGETS["p99_extra_us"] else "MISSED"
            out.append((f"  {mode} / off throughput", f"{ratio:.2f}x ({ok_r})", ">= 0.80x"))
            out.append((f"  {mode} - off p99", f"+{extra:,.0f} us ({ok_p})", "<= +2,000 us"))
    for lease, f in s["failover"].items():
        ok = "met" if f["median_s"] < TARGETS["failover_s"] else "MISSED"
        out.append(
            (
                f"failover kill -9 -> first ack, lease {lease}s / heartbeat {f['heartbeat']:g}s",
                f"median {f['median_s']:.2f}s, max {f['max_s']:.2f}s, {f['runs']} runs ({ok})",
                "< 3 s",
            )
        )
    return out


def foreign(res: dict[str, Any] | None) -> list[float]:
    if not res:
        return []
    return [m["foreign_cores"] for k, m in res["summary"].items() if k in MODES]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repl-rounds", type=int, help="rounds of off/on/standby (default 3, quick 1)")
    p.add_argument("--repl-modes", default="off,on,standby", help="comma list of: off, on, standby")
    p.add_argument("--repl-seconds", type=float, help="paced run duration (default 5, quick 1)")
    p.add_argument(
        "--repl-pipeline-commands", type=int, help="pipelined commands (default 300k, quick 30k)"
    )
    p.add_argument("--failover-runs", type=int, help="runs per lease setting (default 5, quick 1)")
    p.add_argument(
        "--failover-leases",
        type=lambda v: [tuple(float(x) for x in pair.split(":")) for pair in v.split(",") if pair],
        default=list(FAILOVER_LEASES),
        help="failover: lease:heartbeat settings in seconds (default 2.0:0.4,1.0:0.2)",
    )
    p.add_argument("--failover-interval", type=float, default=1.0, help="ms between orders")
    p.add_argument(
        "--failover-lead", type=float, default=1.0, help="seconds of orders before the kill"
    )


def defaults(args: argparse.Namespace) -> None:
    for name, full, short in (
        ("repl_rounds", 3, 1),
        ("repl_seconds", 5.0, 1.0),
        ("repl_pipeline_commands", 300_000, 30_000),
        ("failover_runs", 5, 1),
    ):
        if getattr(args, name) is None:
            setattr(args, name, short if args.quick else full)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.replication_bench``: the same as ``bench engine --only replication``."""
    from bench import engine_bench

    p = argparse.ArgumentParser(prog="python -m bench.replication_bench", description=__doc__)
    engine_bench.add_arguments(p)
    p.set_defaults(only="replication")
    return engine_bench.run(p.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())

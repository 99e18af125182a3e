"""``python -m bench fix``: order throughput and order->ExecutionReport latency through one FIX
4.4 gateway session, and where the gateway's time goes.

Setup: the real engine (``python -m engine``, pinned to ``--engine-cpu``, default 1) and the
real FIX gateway (``python -m gateways.fix``, pinned to ``--gateway-cpu``, default 0), each
pinned from before exec so all their threads stay on their core; a temporary data directory,
account store (one funded account, one registered SenderCompID) and quickfix store; the
shipped config with snapshots pushed out of the timed runs. The client is a plain socket in
this process speaking FIX 4.4 written out by hand (pre-formatted messages, checksums computed
here), so the client's cost per message stays a small fraction of the gateway's; quickfix's
Python initiator would measure itself. It runs on the cores left over, if any.

1. Throughput: one FIX session keeps ``--window`` orders in flight: a resting GTC limit buy
   (never crossing, so nothing trades), its cancel as soon as its New report arrives, a new
   order as soon as the Canceled report arrives. Order messages/s = ExecutionReports/s (each
   NewOrderSingle and each OrderCancelRequest gets exactly one) between the end of a warm-up
   and the end of the timed run; the median of the runs is compared with the target. CPU of
   the gateway is split by thread (/proc/PID/task): the asyncio loop (main thread), ZeroMQ's
   I/O threads and the rest (quickfix's socket and session threads).
2. Latency: resting NewOrderSingles offered at a fixed ``--rate`` (default 2,000/s); each round
   trip is timed from just before its bytes are written to the parse of its New
   ExecutionReport. After each run the orders are cancelled, 100 in flight at a time (one
   OrderMassCancelRequest for thousands of orders can wedge the gateway: see
   tests/test_fix_gateway.py, the slow-client test).
3. Bridge: is the quickfix-thread -> asyncio hand-off the bottleneck? The gateway is started
   again under a probe (this module's ``--probe`` entry point: the unchanged gateway, with
   timers wrapped around ``FixApp.fromApp`` on the quickfix thread, the queue wait until
   ``FixGateway.on_app`` runs on the loop, ``on_app`` itself, the engine round trip from
   ``EngineClient.send`` to ``on_reply``, and ``on_reply`` including quickfix's
   ``sendToTarget``; each section's wall time and the thread's own CPU time, so time spent
   blocked - on the GIL, a lock, a full socket - shows as the difference) and driven as in
   1; /proc schedstat separates the loop thread's waits for a CPU (preemption) from that.
   With ``--py-spy PATH`` (or py-spy on PATH) an unprobed throughput run is also sampled by
   py-spy and its hottest frames printed.

Nothing here is a test: it prints a table (``--json FILE`` also writes the numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import contextlib
import json
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import procs
from bench.engine_bench import machine_info, say
from bench.procs import cpu_seconds, free_ports, percentiles
from gateways.accounts import AccountStore, Permission

MARKET = "BTC-USD"
TARGET = "EXCHANGE"
COMP = "BENCH1"
TARGET_ORDERS_PER_S = 10_000  # per gateway process
TARGET_P99_US = 2_000.0  # NewOrderSingle -> ExecutionReport at the fixed offered rate
SOH = b"\x01"


# ------------------------------------------------------------------------------ processes


LIFTED = {  # the benchmark measures the gateway, not its per-account rate limits
    "orders_per_second": 1e9,
    "order_burst": 1_000_000_000,
    "requests_per_second": 1e9,
    "request_burst": 1_000_000_000,
}


def bench_config(path: Path) -> Path:
    """The shipped config with no snapshot inside a timed run and the FIX rate limits lifted."""
    return procs.shipped_config(path, {"fix_gateway": LIFTED})


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads grouped: loop (main), zmq, other (quickfix)."""
    out = {"loop": 0.0, "zmq": 0.0, "other": 0.0}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            except OSError:
                continue
            group = "loop" if int(tid) == pid else "zmq" if comm.startswith("ZMQ") else "other"
            out[group] += cpu_seconds(pid, int(tid))
    return out


def with_foreign(cpu: dict[str, float]) -> dict[str, float]:
    """Add ``foreign_cores``: what other processes took, from % figures of one interval."""
    own = cpu["gateway"] + cpu["engine"] + cpu["client"]
    cpu["foreign_cores"] = max(0.0, (cpu["machine"] - own) / 100)
    return cpu


def runqueue_wait(pid: int, tid: int) -> float:
    """Seconds a thread has spent runnable but waiting for a CPU (/proc schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class Exchange:
    """Engine + one FIX gateway + an account store, all temporary."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-fix-"))
        self.kids = procs.Children()
        cmd_port, md_port = free_ports(2)
        self.commands = f"tcp://127.0.0.1:{cmd_port}"
        self.market_data = f"tcp://127.0.0.1:{md_port}"
        self.config = bench_config(self.tmp / "exchange.toml")
        self.store = AccountStore(self.tmp / "accounts.db")
        self.account = self.store.create_account("bench")
        self.key, self.secret = self.store.issue_key(self.account, Permission.TRADE)
        self.store.add_fix_session(COMP, self.account)
        self.engine = self._spawn(
            ["engine", "--config", str(self.config), "--data-dir", str(self.tmp / "data"),
             "--commands", self.commands, "--market-data", self.market_data,
             "--cpu", str(args.engine_cpu)], "engine", args.engine_cpu,
        )  # fmt: skip
        self.engine.wait_log("engine ready")
        self._fund()
        self.gateway: procs.Child | None = None
        self.port = 0
        self.runs = 0

    def _spawn(self, argv: list[str], name: str, cpu: int) -> procs.Child:
        return self.kids.spawn(argv, self.tmp / f"{name}.log", cpus=[cpu])

    def _fund(self) -> None:
        from engine.client import EngineClient
        from protocol.messages import Deposit, LedgerReply

        async def go() -> None:
            c = EngineClient(self.commands, b"bench-fix-admin")
            await c.start(wait=30)
            try:
                reply = await c.request(Deposit(0, self.account, "USD", 10**15))
                assert isinstance(reply, LedgerReply), reply
            finally:
                await c.close()

        asyncio.run(go())

    def start_gateway(self, probe: Path | None = None) -> procs.Child:
        """(Re)start the gateway; with ``probe``, under this module's timing probe."""
        if self.gateway is not None:
            self.gateway.stop()
        self.runs += 1
        (self.port,) = free_ports(1)
        argv = ["--config", str(self.config), "--port", str(self.port),
                "--data-dir", str(self.tmp / f"fix{self.runs}"),
                "--accounts", str(self.tmp / "accounts.db"), "--commands", self.commands,
                "--market-data", self.market_data,
                "--identity", f"bench-fix-{self.runs}"]  # fmt: skip
        module = ["bench.fix_bench", "--probe", str(probe), "--"] if probe else ["gateways.fix"]
        self.gateway = self._spawn([*module, *argv], f"gateway{self.runs}", self.args.gateway_cpu)
        self.gateway.wait_log("FIX 4.4 gateway on", " available")
        return self.gateway

    def cpu(self) -> dict[str, float]:
        assert self.gateway is not None
        out = {f"gw_{k}": v for k, v in thread_cpu(self.gateway.pid).items()}
        out["gw_loop_runq"] = runqueue_wait(self.gateway.pid, self.gateway.pid)
        out["gateway"] = cpu_seconds(self.gateway.pid)
        out["engine"] = cpu_seconds(self.engine.pid)
        t = os.times()
        out["client"] = t.user + t.system
        out["machine"] = procs.machine_cpu()[0]
        return out

    def close(self) -> None:
        self.kids.close()
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ----------------------------------------------------------------------- a raw session


FIELD = {tag: re.compile(rb"\x01" + tag + rb"=([^\x01]*)") for tag in (b"35", b"150", b"11")}
END = re.compile(rb"\x0110=\d{3}\x01")


def stamp() -> bytes:
    t = time.time()
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(t)).encode() + b".%03d" % (
        int(t * 1000) % 1000
    )


class Session:
    """One FIX session over a socket: messages formatted here, replies parsed with regexes."""

    def __init__(self, port: int, key: str, secret: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.seq = 1
        self.buf = b""
        self.head = b"\x0149=" + COMP.encode() + b"\x0156=" + TARGET.encode() + b"\x0134="
        self._now = stamp()
        self._now_at = time.monotonic()
        self.send([self.frame(b"A", b"98=0\x01108=30\x01141=Y\x01553=" + key.encode()
                              + b"\x01554=" + secret.encode() + b"\x01")])  # fmt: skip
        deadline = time.monotonic() + 30
        while not any(m[0] == b"A" for m in self.read(0.5)):
            if time.monotonic() > deadline:
                raise RuntimeError("no Logon answer from the gateway")
        self.sock.setblocking(False)

    def now(self) -> bytes:
        """SendingTime/TransactTime, refreshed every 50 ms (quickfix checks it to 120 s)."""
        t = time.monotonic()
        if t - self._now_at > 0.05:
            self._now, self._now_at = stamp(), t
        return self._now

    def frame(self, msg_type: bytes, body: bytes) -> bytes:
        inner = (b"35=" + msg_type + self.head + str(self.seq).encode() + b"\x0152="
                 + self.now() + SOH + body)  # fmt: skip
        self.seq += 1
        msg = b"8=FIX.4.4\x019=" + str(len(inner)).encode() + SOH + inner
        return msg + b"10=%03d\x01" % (sum(msg) % 256)

    def new_order(self, cid: bytes, price: bytes) -> bytes:
        return self.frame(b"D", b"11=" + cid + b"\x0155=BTC-USD\x0154=1\x0160=" + self.now()
                          + b"\x0140=2\x0138=0.0100\x0144=" + price + b"\x0159=1\x01")  # fmt: skip

    def cancel(self, cid: bytes) -> bytes:
        return self.frame(b"F", b"11=x" + cid + b"\x0141=" + cid + b"\x0155=BTC-USD\x0154=1"
                          b"\x0160=" + self.now() + SOH)  # fmt: skip

    def send(self, msgs: list[bytes]) -> None:
        data = b"".join(msgs)
        while data:
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                select.select([], [self.sock], [], 1.0)
                continue
            data = data[n:]

    def read(self, timeout: float) -> list[tuple[bytes, bytes | None, bytes | None]]:
        """Messages that arrived within ``timeout``: (MsgType, ExecType, ClOrdID) each."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return []
        try:
            chunk = self.sock.recv(1 << 20)
        except BlockingIOError:
            return []
        if not chunk:
            raise ConnectionError("the gateway closed the session")
        self.buf += chunk
        out = []
        start = 0
        for end in END.finditer(self.buf):
            msg = self.buf[start : end.end()]
            start = end.end()
            mt = FIELD[b"35"].search(msg)
            et = FIELD[b"150"].search(msg)
            cid = FIELD[b"11"].search(msg)
            out.append((mt.group(1) if mt else b"?", et.group(1) if et else None,
                        cid.group(1) if cid else None))  # fmt: skip
        self.buf = self.buf[start:]
        if any(m[0] == b"1" for m in out):  # TestRequest: answer to stay logged on
            self.send([self.frame(b"0", b"")])
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send([self.frame(b"5", b"")])
        with contextlib.suppress(OSError):
            self.sock.close()


def price_of(n: int) -> bytes:
    """Resting bids 1000.00 .. 1049.99: never crossing, spread over levels."""
    return b"%d.%02d" % (1000 + n % 50, n % 100)


# ----------------------------------------------------------------------- 1. throughput


class Pipeline:
    """``window`` orders in flight: New -> cancel it; Canceled -> a new order."""

    def __init__(self, s: Session, window: int) -> None:
        self.s = s
        self.window = window
        self.ids = 0
        self.reports = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.in_flight = 0

    def new(self) -> bytes:
        self.ids += 1
        self.in_flight += 1
        return self.s.new_order(b"n%d" % self.ids, price_of(self.ids))

    def pump(self, timeout: float, refill: bool) -> None:
        out = []
        for mt, et, cid in self.s.read(timeout):
            if mt != b"8":
                if mt in (b"3", b"j", b"9", b"5"):
                    self.errors[f"MsgType {mt.decode()}"] += 1
                continue
            self.reports += 1
            if et == b"0" and cid:
                out.append(self.s.cancel(cid))
            else:
                self.in_flight -= 1
                if et != b"4":
                    self.errors[f"ExecType {et!r}"] += 1
                if refill:
                    out.append(self.new())
        if out:
            self.s.send(out)

    def run(self, ex: Exchange, warmup: float, seconds: float) -> dict[str, Any]:
        self.s.send([self.new() for _ in range(self.window)])
        t_end_warm = time.perf_counter() + warmup
        while time.perf_counter() < t_end_warm:
            self.pump(0.05, True)
        r0, t0, c0 = self.reports, time.perf_counter(), ex.cpu()
        t_end = t0 + seconds
        while time.perf_counter() < t_end:
            self.pump(0.05, True)
        r1, t1, c1 = self.reports, time.perf_counter(), ex.cpu()
        drain_until = time.monotonic() + 30
        while self.in_flight and time.monotonic() < drain_until:
            self.pump(0.1, False)
        wall = t1 - t0
        cpu = with_foreign({k: 100 * (c1[k] - c0[k]) / wall for k in c0})
        return {
            "orders_per_s": (r1 - r0) / wall,
            "cpu": cpu,
            "foreign_cores": cpu["foreign_cores"],
            "gw_cpu_us_per_msg": 1e6 * (c1["gateway"] - c0["gateway"]) / max(1, r1 - r0),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors.most_common(3)),
            "unanswered": self.in_flight,
        }


def throughput_phase(ex: Exchange, args: argparse.Namespace) -> list[dict[str, Any]]:
    say(f"\n## 1. Throughput: one FIX session, {args.window} orders in flight (resting buy, "
        f"cancel on its New report, a new order on the Canceled report); {args.runs} runs x "
        f"{args.seconds:g} s after {args.warmup:g} s warm-up")  # fmt: skip
    s = Session(ex.port, ex.key, ex.secret)
    runs = []
    try:
        for _ in range(args.runs):
            r = Pipeline(s, args.window).run(ex, args.warmup, args.seconds)
            runs.append(r)
            c = r["cpu"]
            say(f"  {r['orders_per_s']:>9,.0f} order msgs/s  gateway {c['gateway']:.0f}% "
                f"(loop {c['gw_loop']:.0f}%, quickfix+other {c['gw_other']:.0f}%, zmq "
                f"{c['gw_zmq']:.0f}%), engine {c['engine']:.0f}%; "
                f"{r['gw_cpu_us_per_msg']:.0f} us gateway CPU per message; client "
                f"{c['client']:.0f}%, other processes {c['foreign_cores']:.2f} cores; errors "
                f"{r['errors']}")  # fmt: skip
    finally:
        s.close()
    return runs


# -------------------------------------------------------------------------- 2. latency


def latency_run(ex: Exchange, s: Session, rate: int, seconds: float, tag: bytes) -> dict[str, Any]:
    """``rate`` resting NewOrderSingles per second for ``seconds``, each timed to its New
    report; then they are cancelled (not timed)."""
    clock = time.perf_counter_ns
    sent: dict[bytes, int] = {}
    rtt: list[int] = []
    acked: list[bytes] = []
    errors: collections.Counter[str] = collections.Counter()
    total = int(rate * seconds)
    n = 0
    c0 = ex.cpu()
    t0 = clock()
    deadline = t0 + int((seconds + 30) * 1e9)
    while (n < total or sent) and clock() < deadline:
        if n < total:
            due = min(total, (clock() - t0) * rate // 1_000_000_000 + 1)
            out = []
            while n < due:
                n += 1
                cid = tag + b"%d" % n
                out.append(s.new_order(cid, price_of(n)))
                sent[cid] = clock()
            if out:
                s.send(out)
        for mt, et, cid in s.read(0.0005 if n < total else 0.05):
            t = clock()
            if mt == b"8" and et == b"0" and cid in sent:
                rtt.append(t - sent.pop(cid))
                acked.append(cid)
            elif mt in (b"3", b"j", b"9") or (mt == b"8" and et == b"8"):
                errors[f"MsgType {mt.decode()} ExecType {et!r}"] += 1
                sent.pop(cid or b"", None)
    wall = (clock() - t0) / 1e9
    c1 = ex.cpu()
    cancel_all(s, acked)
    res = percentiles(rtt)
    res["p90_us"] = sorted(rtt)[int(0.9 * len(rtt))] / 1000 if rtt else 0.0
    res["cpu"] = with_foreign({k: 100 * (c1[k] - c0[k]) / wall for k in c0})
    res.update(sent=n, sent_per_s=n / max(seconds, 1e-9), wall_s=wall, unanswered=len(sent),
               errors=sum(errors.values()), error_kinds=dict(errors.most_common(3)))  # fmt: skip
    return res


def cancel_all(s: Session, cids: list[bytes], window: int = 100) -> None:
    """Cancel resting orders, ``window`` at a time. (Not one OrderMassCancelRequest: a mass
    cancel of a few thousand orders makes the gateway write that many reports in one go,
    which can wedge it; see the test suite.)"""
    todo = list(reversed(cids))
    in_flight = 0
    deadline = time.monotonic() + 120
    while (todo or in_flight) and time.monotonic() < deadline:
        out = []
        while todo and in_flight < window:
            out.append(s.cancel(todo.pop()))
            in_flight += 1
        if out:
            s.send(out)
        in_flight -= sum(1 for m in s.read(0.05) if m[0] in (b"8", b"9"))


def latency_phase(ex: Exchange, args: argparse.Namespace) -> dict[str, Any]:
    say(
        f"\n## 2. NewOrderSingle -> ExecutionReport (New) at a fixed {args.rate:,} orders/s "
        f"(resting buys, cancelled after each run); {args.latency_runs} runs "
        f"x {args.latency_seconds:g} s"
    )
    s = Session(ex.port, ex.key, ex.secret)
    runs = []
    try:
        latency_run(ex, s, args.rate, min(1.0, args.latency_seconds), b"W")  # warm-up
        for i in range(args.latency_runs):
            r = latency_run(ex, s, args.rate, args.latency_seconds, b"L%d-" % i)
            runs.append(r)
            say(f"  p50 {r['p50_us']:,.0f} us, p90 {r['p90_us']:,.0f} us, p99 "
                f"{r['p99_us']:,.0f} us, max {r['max_us']:,.0f} us (n={r['n']:,}); gateway "
                f"{r['cpu']['gateway']:.0f}%, engine {r['cpu']['engine']:.0f}%, other "
                f"processes {r['cpu']['foreign_cores']:.2f} cores; errors {r['errors']}, "
                f"unanswered {r['unanswered']}")  # fmt: skip
    finally:
        s.close()
    return {
        "runs": runs,
        "median_p50_us": statistics.median(r["p50_us"] for r in runs),
        "median_p99_us": statistics.median(r["p99_us"] for r in runs),
    }


# --------------------------------------------------------------------------- 3. bridge


WAIT = "hand-off wait: fromApp -> on_app starts on the loop"
RTT = "engine round trip: EngineClient.send -> on_reply starts"
FROM_APP = "quickfix thread: fromApp (toString, parse, call_soon_threadsafe)"
ON_APP = "loop: on_app (FIX fields -> engine command, EngineClient.send)"
ON_REPLY = "loop: on_reply (ExecutionReport built and sent)"
FIX_SEND = "loop:   of which FixGateway.send (quickfix Message, sendToTarget)"
TO_APP = "loop:     of which FixApp.toApp (quickfix calls back into Python)"


def probe_main(out: str, argv: list[str]) -> int:
    """Run the unchanged FIX gateway with timers around its thread hand-off (see docstring);
    the samples - (wall ns, thread CPU ns) per timed section, wall ns per wait - go to
    ``out`` (JSON) when it exits."""
    import gateways.fix.__main__ as gw_main
    from engine.client import EngineClient
    from gateways.fix.acceptor import FixApp
    from gateways.fix.gateway import FixGateway

    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    timed: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    waits: dict[str, list[int]] = collections.defaultdict(list)
    enqueued: collections.deque[int] = collections.deque()  # one session: FIFO pairs up
    sent: dict[int, int] = {}
    from_app, on_app, send, on_reply, fix_send = (
        FixApp.fromApp, FixGateway.on_app, EngineClient.send, FixGateway.on_reply,
        FixGateway.send,
    )  # fmt: skip

    def section(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        samples = timed[name]

        def timed_call(*a: Any, **kw: Any) -> Any:
            w0, c0 = wall(), cpu()
            try:
                return fn(*a, **kw)
            finally:
                samples.append((wall() - w0, cpu() - c0))

        return timed_call

    timed_from_app = section(FROM_APP, from_app)
    timed_on_app = section(ON_APP, on_app)
    timed_on_reply = section(ON_REPLY, on_reply)

    def probe_from_app(self: Any, message: Any, session_id: Any) -> None:
        enqueued.append(wall())
        timed_from_app(self, message, session_id)

    def probe_on_app(self: Any, sid: Any, fields: Any) -> None:
        if enqueued:
            waits[WAIT].append(wall() - enqueued.popleft())
        timed_on_app(self, sid, fields)

    def probe_send(self: Any, cmd: Any, timeout: float | None = None) -> Any:
        fut = send(self, cmd, timeout)
        sent[id(fut)] = wall()
        return fut

    def probe_on_reply(self: Any, *args: Any) -> None:  # (comp, f, kind, cmd, fut)
        start = sent.pop(id(args[-1]), None)
        if start is not None:
            waits[RTT].append(wall() - start)
        timed_on_reply(self, *args)

    FixApp.fromApp = probe_from_app  # type: ignore[method-assign]
    FixGateway.on_app = probe_on_app  # type: ignore[method-assign]
    EngineClient.send = probe_send  # type: ignore[method-assign]
    FixGateway.on_reply = probe_on_reply  # type: ignore[method-assign]
    FixGateway.send = section(FIX_SEND, fix_send)  # type: ignore[method-assign]
    main = threading.get_ident()
    to_app = section(TO_APP, FixApp.toApp)
    elsewhere = section("quickfix thread: FixApp.toApp", FixApp.toApp)

    def probe_to_app(self: Any, message: Any, session_id: Any) -> None:
        (to_app if threading.get_ident() == main else elsewhere)(self, message, session_id)

    FixApp.toApp = probe_to_app  # type: ignore[method-assign]

    def dump() -> None:
        Path(out).write_text(json.dumps({"timed": timed, "waits": waits}))

    atexit.register(dump)
    sys.argv = ["gateways.fix", *argv]
    return gw_main.main()


def summarize_probe(path: Path, seconds: float) -> list[dict[str, Any]]:
    """Per section: wall and CPU percentiles, and the share of the run's wall clock spent in
    it (busy) and blocked in it (wall minus the thread's own CPU: locks, GIL, preemption)."""
    raw = json.loads(path.read_text())
    rows = []
    for name, pairs in raw["timed"].items():
        if not pairs:
            continue
        walls, cpus = [w for w, _ in pairs], [c for _, c in pairs]
        p, c = percentiles(walls), percentiles(cpus)
        rows.append({"what": name, "n": p["n"], "p50_us": p["p50_us"], "p99_us": p["p99_us"],
                     "mean_us": p.get("mean_us", 0.0), "cpu_mean_us": c.get("mean_us", 0.0),
                     "busy_pct": 100 * sum(walls) / 1e9 / seconds,
                     "blocked_pct": 100 * (sum(walls) - sum(cpus)) / 1e9 / seconds})  # fmt: skip
    for name, values in raw["waits"].items():
        p = percentiles(values)
        rows.append({"what": name, "n": p["n"], "p50_us": p["p50_us"], "p99_us": p["p99_us"],
                     "mean_us": p.get("mean_us", 0.0)})  # fmt: skip
    return rows


def py_spy_top(path: Path, top: int = 12) -> tuple[list[tuple[str, float]], dict[str, float]]:
    """Hottest leaf frames (share of samples) and shares of a few gateway functions."""
    leaf: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    keys = ("fromApp", "on_app", "on_reply", "send", "_drain", "_flush", "parse",
            "exec_report", "new_order", "cancel", "submit", "call_soon_threadsafe")  # fmt: skip
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf[frames[-1]] += n
        names = {re.sub(r" \(.*", "", f) for f in frames}
        for k in keys:
            if k in names:
                incl[k] += n
    if not total:
        return [], {}
    return ([(f, 100 * n / total) for f, n in leaf.most_common(top)],
            {k: 100 * incl[k] / total for k in keys if incl[k]})  # fmt: skip


def bridge_phase(ex: Exchange, args: argparse.Namespace) -> dict[str, Any]:
    say(
        f"\n## 3. Where the gateway's time goes: the same pipelined load ({args.window} in "
        f"flight) for {args.seconds:g} s through a gateway started under the timing probe"
    )
    probe = ex.tmp / "probe.json"
    ex.start_gateway(probe=probe)
    s = Session(ex.port, ex.key, ex.secret)
    t0 = time.perf_counter()
    try:
        r = Pipeline(s, args.window).run(ex, args.warmup, args.seconds)
    finally:
        s.close()
    wall = time.perf_counter() - t0
    assert ex.gateway is not None
    ex.gateway.stop()
    ex.gateway = None
    rows = summarize_probe(probe, wall) if probe.exists() else []
    say(f"  probed gateway: {r['orders_per_s']:,.0f} order msgs/s; gateway CPU "
        f"{r['cpu']['gateway']:.0f}% (loop thread {r['cpu']['gw_loop']:.0f}%, quickfix+other "
        f"{r['cpu']['gw_other']:.0f}%, zmq {r['cpu']['gw_zmq']:.0f}%)")  # fmt: skip
    for row in rows:
        line = (f"  {row['what']:<68} p50 {row['p50_us']:>7.1f} us  p99 {row['p99_us']:>8.1f}"
                f" us")  # fmt: skip
        if "busy_pct" in row:
            line += (f"  CPU {row['cpu_mean_us']:>5.1f} us/call; in it {row['busy_pct']:>4.1f}%"
                     f" of wall, blocked {row['blocked_pct']:>4.1f}%")  # fmt: skip
        say(line + f"  (n={row['n']:,})")
    result: dict[str, Any] = {"probed_run": r, "probe": rows}
    spy = args.py_spy or shutil.which("py-spy")
    if spy:
        result["py_spy"] = py_spy_phase(ex, args, spy)
    ex.start_gateway()
    return result


def py_spy_phase(ex: Exchange, args: argparse.Namespace, spy: str) -> dict[str, Any]:
    gw = ex.start_gateway()
    out = ex.tmp / "py-spy.txt"
    seconds = max(2, int(args.seconds))
    proc = subprocess.Popen(
        [spy, "record", "--pid", str(gw.pid), "--duration", str(seconds), "--rate", "250",
         "--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    s = Session(ex.port, ex.key, ex.secret)
    try:
        r = Pipeline(s, args.window).run(ex, 0.2, seconds + 0.5)
    finally:
        s.close()
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0 or not out.exists():
        say(f"  py-spy failed ({proc.returncode}): {err.decode(errors='replace')[-300:]}")
        return {"error": err.decode(errors="replace")[-300:]}
    leaves, shares = py_spy_top(out)
    say(
        f"  py-spy ({r['orders_per_s']:,.0f} order msgs/s while sampled): share of samples "
        "in (inclusive) " + ", ".join(f"{k} {v:.0f}%" for k, v in shares.items())
    )
    for frame, pct in leaves:
        say(f"    {pct:5.1f}%  {frame[:110]}")
    return {"run": r, "inclusive_pct": shares, "hottest": leaves}


def bridge_verdict(res: dict[str, Any]) -> list[str]:
    rows = {r["what"]: r for r in res.get("probe", [])}
    if not all(k in rows for k in (WAIT, RTT, FROM_APP, ON_REPLY, FIX_SEND)):
        return ["  (no probe samples)"]
    hand, rtt, thread, reply, fsend = (rows[k] for k in (WAIT, RTT, FROM_APP, ON_REPLY,
                                                          FIX_SEND))  # fmt: skip
    loop_busy = rows[ON_REPLY]["busy_pct"] + rows.get(ON_APP, {"busy_pct": 0.0})["busy_pct"]
    cpu = res["probed_run"]["cpu"]
    lines = [
        f"  hand-off cost: {thread['cpu_mean_us']:.1f} us CPU per message on the quickfix thread "
        f"(toString, parse, call_soon_threadsafe); the loop picks it up after a median "
        f"{hand['p50_us']:,.0f} us (p99 {hand['p99_us']:,.0f} us); engine round trip median "
        f"{rtt['p50_us']:,.0f} us (p99 {rtt['p99_us']:,.0f} us)",
        f"  the loop thread is inside on_app/on_reply {loop_busy:.0f}% of the time; "
        f"FixGateway.send alone {fsend['busy_pct']:.0f}%, of which {fsend['blocked_pct']:.0f}% "
        f"blocked (the GIL, a quickfix lock, a socket; preemption is counted below) "
        f"and only {fsend['busy_pct'] - fsend['blocked_pct']:.0f}% on CPU; "
        f"{fsend['cpu_mean_us']:.0f} us CPU per sent message",
        f"  gateway core: {cpu['gateway']:.0f}% busy (loop thread {cpu['gw_loop']:.0f}%, "
        f"quickfix+other threads {cpu['gw_other']:.0f}%, zmq {cpu['gw_zmq']:.0f}%); the loop "
        f"thread waited {cpu['gw_loop_runq']:.0f}% of the time for a CPU (preempted: other "
        f"threads or processes on its core); other processes took "
        f"{res['probed_run']['foreign_cores']:.2f} cores meanwhile",
    ]
    blocked = fsend["blocked_pct"] - cpu["gw_loop_runq"]  # at most this much is not preemption
    if fsend["blocked_pct"] > 25 and blocked <= 10:
        lines.append(
            f"  verdict: the loop thread is held up inside sendToTarget ({fsend['blocked_pct']:.0f}"
            f"% of the time) but about as long waiting for a CPU: its core is shared, so these "
            "figures say more about the load on this machine than about the bridge; rerun on an "
            "idle machine with a core per process"
        )
    elif fsend["blocked_pct"] > 25:
        lines.append(
            "  verdict: the call_soon_threadsafe hand-off itself is cheap; the bridge's cost is "
            "in the other direction and in the GIL: every ExecutionReport leaves through "
            "quickfix's sendToTarget on the loop thread, which drops the GIL "
            "(PyEval_SaveThread), takes it again to call FixApp.toApp from inside quickfix, "
            "and takes it once more on return; each time it competes with quickfix's "
            "receiving thread, which takes the GIL for every fromApp. The loop sits blocked "
            "there instead of serving the engine's replies and the next requests"
        )
    elif cpu["gateway"] >= 85:
        lines.append(
            f"  verdict: the gateway's core is saturated ({cpu['gateway']:.0f}%), by its own "
            "per-message CPU (quickfix message build, FileStore persistence, FIX<->engine "
            "conversion), not by the hand-off"
        )
    else:
        lines.append(
            f"  verdict: neither the hand-off nor the gateway's CPU ({cpu['gateway']:.0f}%) "
            "limits this run: the engine, the client or other load on the cores does"
        )
    return lines


# ---------------------------------------------------------------------------- report


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    width = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, width, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in width) + "|", *map(line, rows)]


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    def mark(ok: bool) -> str:
        return "yes" if ok else "NO"

    say("\n## Summary (medians of runs)")
    rows = []
    tp = results.get("throughput")
    if tp:
        rates = [r["orders_per_s"] for r in tp]
        med = statistics.median(rates)
        rows.append([f"order msgs/s, 1 session x window {args.window}",
                     " / ".join(f"{x:,.0f}" for x in rates), f"{med:,.0f}",
                     f">= {TARGET_ORDERS_PER_S:,}: {mark(med >= TARGET_ORDERS_PER_S)}",
                     "gw {:.0f}%, eng {:.0f}%".format(
                         statistics.median(r["cpu"]["gateway"] for r in tp),
                         statistics.median(r["cpu"]["engine"] for r in tp))])  # fmt: skip
    lat = results.get("latency")
    if lat:
        runs = lat["runs"]
        rows.append([f"p99 NewOrderSingle->ER at {args.rate:,}/s",
                     " / ".join(f"{r['p99_us']:,.0f} us" for r in runs),
                     f"{lat['median_p99_us']:,.0f} us",
                     f"< {TARGET_P99_US:,.0f} us: {mark(lat['median_p99_us'] < TARGET_P99_US)}",
                     "gw {:.0f}%, eng {:.0f}%".format(
                         statistics.median(r["cpu"]["gateway"] for r in runs),
                         statistics.median(r["cpu"]["engine"] for r in runs))])  # fmt: skip
        rows.append([f"p50 NewOrderSingle->ER at {args.rate:,}/s",
                     " / ".join(f"{r['p50_us']:,.0f} us" for r in runs),
                     f"{lat['median_p50_us']:,.0f} us", "", ""])  # fmt: skip
    for line in table(["metric", "runs", "median", "target", "cpu (% of a core)"], rows):
        say(line)
    foreign = [r["cpu"]["foreign_cores"] for r in tp or []]
    foreign += [r["cpu"]["foreign_cores"] for r in (lat or {}).get("runs", [])]
    if foreign and max(foreign) > 0.25:
        say(f"WARNING: other processes took up to {max(foreign):.2f} cores during the runs: "
            "the figures above are lower and noisier than on an idle machine.")  # fmt: skip
    if "bridge" in results:
        say("\n## Is the quickfix-thread -> asyncio bridge the bottleneck?")
        for line in bridge_verdict(results["bridge"]):
            say(line)


# ------------------------------------------------------------------------------- main


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="short smoke run (about 30 seconds)")
    p.add_argument("--window", type=int, default=200, help="orders in flight (throughput)")
    p.add_argument("--runs", type=int, help="timed throughput runs (5; quick 2)")
    p.add_argument("--seconds", type=float, help="seconds per timed throughput run (3; quick 1)")
    p.add_argument("--warmup", type=float, help="unmeasured lead-in per run (1; quick 0.3)")
    p.add_argument("--rate", type=int, default=2_000, help="latency: offered orders/s")
    p.add_argument("--latency-runs", type=int, help="latency runs (3; quick 1)")
    p.add_argument("--latency-seconds", type=float, help="seconds per latency run (5; quick 2)")
    p.add_argument("--engine-cpu", type=int, default=1)
    p.add_argument("--gateway-cpu", type=int, default=0)
    p.add_argument("--only", default="throughput,latency,bridge",
                   help="phases: throughput,latency,bridge")  # fmt: skip
    p.add_argument("--py-spy", help="py-spy executable for a sampled run (default: on PATH)")
    p.add_argument("--json", help="also write the results as JSON to this file")


def _defaults(args: argparse.Namespace) -> None:
    q = args.quick
    for name, full, short in (("runs", 5, 2), ("seconds", 3.0, 1.0), ("warmup", 1.0, 0.3),
                              ("latency_runs", 3, 1), ("latency_seconds", 5.0, 2.0)):  # fmt: skip
        if getattr(args, name) is None:
            setattr(args, name, short if q else full)


def run(args: argparse.Namespace) -> int:
    _defaults(args)
    procs.interrupt_on_sigterm()
    client_cpus = procs.pin_self_off({args.engine_cpu, args.gateway_cpu})
    shared = bool({args.engine_cpu, args.gateway_cpu} & set(client_cpus))
    say("# FIX gateway benchmark (python -m bench fix)")
    args.cpu, args.client_cpu = args.engine_cpu, client_cpus  # machine_info's wording
    for line in machine_info(args)[:2]:
        say("  " + line)
    say(f"  engine pinned to cpu {args.engine_cpu}, gateway to cpu {args.gateway_cpu}, client "
        f"(this process, raw FIX over a socket) on cpus {client_cpus}"
        + (" - SHARED with the engine/gateway: figures are pessimistic" if shared else "")
        + f"; mode: {'quick' if args.quick else 'full'}")  # fmt: skip
    t0 = time.perf_counter()
    phases = {p.strip() for p in args.only.split(",")}
    results: dict[str, Any] = {"args": vars(args), "client_cpus": client_cpus}
    ex = None
    try:
        ex = Exchange(args)
        ex.start_gateway()
        if "throughput" in phases:
            results["throughput"] = throughput_phase(ex, args)
        if "latency" in phases:
            results["latency"] = latency_phase(ex, args)
        if "bridge" in phases:
            results["bridge"] = bridge_phase(ex, args)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        if ex is not None:
            ex.close()
    report(results, args)
    say(f"  total {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--probe" and sys.argv[3] == "--":
        sys.exit(probe_main(sys.argv[2], sys.argv[4:]))
    sys.exit("usage: python -m bench fix  (this module's own entry point is the gateway probe)")

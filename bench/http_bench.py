"""``python -m bench http``: orders/s through one HTTP gateway process and order -> response
latency, for ``/api/v1`` and signed Binance ``/api/v3``, with the JSON gateway measured the
same way in the same run as the baseline.

Setup: the real engine (``python -m engine``, pinned to ``--engine-cpu``, default 1), one HTTP
gateway (``python -m gateways.http``) and one JSON gateway (``python -m gateways.json_tcp``),
both pinned to ``--gateway-cpu`` (default 0; only one of them is driven at a time), each
pinned from before exec so all its threads stay on its core; a temporary data directory,
account store and vault key file; the shipped config with the gateways' per-account and
per-address rate limits lifted (the benchmark measures the gateway, not its limits) and no
engine snapshot inside a timed run. One account per client connection, each funded with
1,000,000 USD through the engine and holding an API key issued with the vault (its secret
sealed, so the HTTP gateway can check HMAC signatures; the JSON gateway logs on with it).

Clients are separate processes (``python -m bench.http_bench worker``: raw asyncio protocols on
uvloop, keep-alive HTTP/1.1 parsed with httptools' response parser, or JSON lines), pinned to
``--client-cpus`` (default: the cores the engine and gateway leave free, and on a 2-core
machine the engine's core, which is far from full here). Every request is built and signed
when it is sent: v1 X-API-SIGNATURE = HMAC-SHA256(secret, timestamp + METHOD + path + body),
v3 ``timestamp`` + ``signature`` in the form body (place) or the query string (cancel), with
the current millisecond, so the client's cost of signing is part of the figure.

The work is the JSON bench's (bench/json_bench.py): each lane places a resting GTC limit buy
(BTC-USD, never crossing: nothing trades), cancels it once placed, places again. Orders/s
counts answered order messages, places and cancels, as the JSON bench does.

1. Throughput, pipelined: ``--procs`` client processes x ``--conns`` connections each x
   ``--depth`` lanes per connection, so ``--depth`` requests in flight on each keep-alive
   connection (HTTP/1.1 pipelining: the gateway answers in order).
2. Throughput, no pipelining: ``--procs`` x ``--flat-conns`` connections, one request in
   flight on each.
   Each is run ``--runs`` times per API (v1; ``bearer``: the same v1 orders with a web
   session's access token, ``Authorization: Bearer``, instead of a signature; v3; json) after
   a warm-up; the median is
   reported; CPU of the gateway, the engine and the clients is measured over each timed
   window (/proc), and so is what other processes took meanwhile.
3. Latency: one client process offers ``--rate`` (default 2,000) order messages per second,
   alternating places and cancels, over ``--latency-conns`` keep-alive connections with one
   request in flight on each (a request goes out on an idle connection; "late" counts those
   that found none idle and waited). Each round trip is timed from just before its bytes are
   written to the parse of the whole response. Pacing is "tick": what is due is sent every
   event-loop tick (about 1 ms), the clients sharing cores with the engine.

``--profile`` runs the HTTP gateway under cProfile (slower: its figures are not the real ones)
and prints where its time went (``BENCH_PROFILE_KEEP=FILE`` keeps the profile for pstats).
Nothing here is a test: it prints a table (``--json FILE``
also writes the numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench import procs
from bench.engine_bench import machine_info, say
from bench.json_bench import (
    GATEWAY_LIMITS,
    close_report,
    spawn_engine,
    spawn_gateway,
    table,
    wait_json_gateway,
)
from bench.procs import cpu_seconds, free_ports, percentiles

MARKET, SYMBOL = "BTC-USD", "BTCUSD"
TARGET_ORDERS_PER_S = 20_000  # per HTTP gateway process
TARGET_P99_US = 5_000.0  # order -> response at 2,000/s
APIS = ("v1", "bearer", "v3", "json")
HTTP_LIMITS = {  # [http_gateway]: lifted out of the way, as for the JSON and FIX benches
    "orders_per_second": 1e9,
    "order_burst": 1_000_000_000,
    "requests_per_second": 1e9,
    "request_burst": 1_000_000_000,
    "address_per_second": 1e9,
    "address_burst": 1_000_000_000,
    "max_connections": 100_000,
}
FUNDS = "1000000"  # USD per account: 100 lanes x a 0.01 BTC bid at <= 10,000 is 10,000


# ============================================================================ client worker


class _V1Order(msgspec.Struct):
    order_id: int


class _V1Placed(msgspec.Struct):
    order: _V1Order


class _V3Order(msgspec.Struct):
    orderId: int


class _JsonReply(msgspec.Struct):
    id: int | None = None
    ok: bool = False
    result: Any = None
    error: Any = None


V1_PLACED = msgspec.json.Decoder(_V1Placed)
V3_PLACED = msgspec.json.Decoder(_V3Order)
JSON_REPLY = msgspec.json.Decoder(_JsonReply)


def lane_price(lane: int, n: int) -> bytes:
    """A resting bid of lane ``lane`` (< 9,000), its ``n``th place: 1000.00 .. 9999.99, never
    crossing (nothing is offered), and distinct from the lane's last place and from the other
    lanes' on the connection, so no two signed places of one key are the same bytes within a
    millisecond (the gateway refuses a replay)."""
    return b"%d.%02d" % (1000 + lane, n % 100)


class Stats:
    """One worker's counts; ``samples``: round trips in ns (latency runs only)."""

    def __init__(self) -> None:
        self.acks = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.samples: list[int] = []
        self.sampling = False


class Conn(asyncio.Protocol):
    """One keep-alive connection with ``depth`` lanes, each alternating place and cancel.

    A lane's next request is written as soon as its previous one is answered (all writes of
    one read are joined into one); in a latency run the pacer sends instead (``send``)."""

    def __init__(self, w: Worker, key: str, secret: str, depth: int) -> None:
        self.w = w
        self.api = w.api
        self.key = key.encode()
        self.secret = secret.encode()
        self.depth = depth
        self.order: list[int] = [0] * depth  # lane -> its resting order (0: none)
        self.places = [0] * depth
        self.pending: collections.deque[tuple[int, int]] = collections.deque()  # (lane, t0)
        self.json_pending: dict[int, tuple[int, int]] = {}
        self.ids = 0
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.body: list[bytes] = []
        self.buf = b""
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = False
        self.running = False  # lanes keep going on their own
        self.stopping = False  # lanes finish their place/cancel cycle, then rest
        if self.api != "json":
            import httptools

            self.parser = httptools.HttpResponseParser(self)
        self.logon: asyncio.Future | None = None

    # ---------------------------------------------------------------- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.ready.done():
            self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pending or self.json_pending:
            self.w.stats.errors["connection lost"] += len(self.pending) + len(self.json_pending)

    def data_received(self, data: bytes) -> None:
        if self.api == "json":
            self.buf += data
            *lines, self.buf = self.buf.split(b"\n")
            for line in lines:
                self.on_line(line)
        else:
            self.parser.feed_data(data)
        if self.out:
            assert self.transport is not None
            self.transport.write(b"".join(self.out))
            self.out.clear()

    # ---------------------------------------------------------------- requests
    def request(self, lane: int) -> bytes:
        """The lane's next request, signed now: place if it has no order, else cancel."""
        order = self.order[lane]
        ts = b"%d" % (time.time_ns() // 1_000_000)
        api = self.api
        if api == "v1" or api == "bearer":
            if order:
                method, path, body = b"DELETE", b"/api/v1/order/%d" % order, b""
            else:
                self.places[lane] += 1
                method, path = b"POST", b"/api/v1/order"
                body = (b'{"market":"BTC-USD","kind":"buy","type":"limit","price":"%s",'
                        b'"quantity":"0.0100"}' % lane_price(lane, self.places[lane]))  # fmt: skip
            if api == "bearer":  # a signed-in browser's session token (docs/web.md)
                auth = b"Authorization: Bearer %s\r\n" % self.key
            else:
                sig = hmac.new(self.secret, ts + method + path + body, hashlib.sha256).hexdigest()
                auth = b"X-API-KEY: %s\r\nX-API-TIMESTAMP: %s\r\nX-API-SIGNATURE: %s\r\n" % (
                    self.key, ts, sig.encode())  # fmt: skip
            return (
                b"%s %s HTTP/1.1\r\nHost: bench\r\n%sContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (method, path, auth, len(body), body)
            )
        if api == "v3":
            if order:
                query = b"symbol=BTCUSD&orderId=%d&timestamp=%s" % (order, ts)
                sig = hmac.new(self.secret, query, hashlib.sha256).hexdigest()
                return (
                    b"DELETE /api/v3/order?%s&signature=%s HTTP/1.1\r\nHost: bench\r\n"
                    b"X-MBX-APIKEY: %s\r\n\r\n" % (query, sig.encode(), self.key)
                )
            self.places[lane] += 1
            price = lane_price(lane, self.places[lane])
            body = (b"symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.0100"
                    b"&price=%s&timestamp=%s" % (price, ts))  # fmt: skip
            body += (
                b"&signature=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest().encode()
            )
            return (
                b"POST /api/v3/order HTTP/1.1\r\nHost: bench\r\nX-MBX-APIKEY: %s\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                % (self.key, len(body), body)
            )
        self.ids += 1
        if order:
            return b'{"id":%d,"op":"cancel","order_id":%d}\n' % (self.ids, order)
        self.places[lane] += 1
        return (b'{"id":%d,"op":"place","market":"BTC-USD","side":"buy","price":"%s",'
                b'"qty":"0.0100"}\n' % (self.ids, lane_price(lane, self.places[lane])))  # fmt: skip

    def send(self, lane: int, now_write: bool = False) -> None:
        data = self.request(lane)
        t0 = time.perf_counter_ns()
        if self.api == "json":
            self.json_pending[self.ids] = (lane, t0)
        else:
            self.pending.append((lane, t0))
        if now_write:
            assert self.transport is not None
            self.transport.write(data)
        else:
            self.out.append(data)

    def busy(self) -> bool:
        return bool(self.pending or self.json_pending)

    # --------------------------------------------------------------- responses
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        body = b"".join(self.body)
        self.body.clear()
        lane, t0 = self.pending.popleft()
        ok = 200 <= status < 300
        result = None
        if ok and not self.order[lane]:
            result = (V1_PLACED.decode(body).order.order_id if self.api in ("v1", "bearer")
                      else V3_PLACED.decode(body).orderId)  # fmt: skip
        self.answered(lane, t0, ok, result, body if not ok else b"", status)

    def on_line(self, line: bytes) -> None:
        msg = JSON_REPLY.decode(line)
        if msg.id is None:  # an event: the gateway pushes each execution report too
            return
        if msg.id < 0:  # a logon step
            if self.logon is not None and not self.logon.done():
                self.logon.set_result(msg)
            return
        lane, t0 = self.json_pending.pop(msg.id)
        result = None
        if msg.ok and not self.order[lane]:
            result = msg.result[0]["order_id"]
        self.answered(lane, t0, msg.ok, result, b"" if msg.ok else line, 0)

    def answered(self, lane: int, t0: int, ok: bool, result: int | None, err: bytes,
                 status: int) -> None:  # fmt: skip
        st = self.w.stats
        if st.sampling:
            st.samples.append(time.perf_counter_ns() - t0)
        if ok:
            st.acks += 1
            self.order[lane] = result or 0
        else:
            st.errors[f"{status} {err[:80].decode(errors='replace')}"] += 1
            self.order[lane] = 0  # a refused place rests nothing; a refused cancel: forget it
        if self.running or (self.stopping and self.order[lane]):
            self.send(lane)

    async def json_logon(self, key: str, secret: str) -> None:
        """SCRAM logon on the JSON gateway (gateways/json_tcp/client.py does the same)."""
        import base64

        from gateways.accounts import make_proof

        assert self.transport is not None
        ch: dict[str, Any] = {}
        for op in ("challenge", "logon"):
            self.logon = asyncio.get_running_loop().create_future()
            line: dict[str, Any] = {"id": -1, "op": op, "api_key": key}
            if op == "logon":
                proof = make_proof(secret, base64.b64decode(ch["salt"]), ch["iterations"],
                                   base64.b64decode(ch["nonce"]))  # fmt: skip
                line["proof"] = base64.b64encode(proof).decode()
            self.transport.write(msgspec.json.encode(line) + b"\n")
            reply = await asyncio.wait_for(self.logon, 30)
            if not reply.ok:
                raise RuntimeError(f"JSON logon failed: {reply.error}")
            ch = reply.result or {}
        self.logon = None


class Worker:
    """One client process: its connections, driven by commands on stdin."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.api = args.api
        self.stats = Stats()
        self.conns: list[Conn] = []

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        keys = json.loads(Path(self.args.keys).read_text())  # noqa: ASYNC240 - once
        for key, secret in keys:
            _, conn = await loop.create_connection(
                lambda k=key, s=secret: Conn(self, k, s, self.args.depth),
                "127.0.0.1",
                self.args.port,
            )
            await conn.ready
            if self.api == "json":
                await conn.json_logon(key, secret)
            self.conns.append(conn)

    async def drain(self, timeout: float = 30.0) -> int:
        """Wait until every connection's lanes are answered and at rest; what is left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(c.busy() for c in self.conns if not c.closed):
                return 0
            await asyncio.sleep(0.01)
        return sum(len(c.pending) + len(c.json_pending) for c in self.conns)

    async def throughput(self, warmup: float, seconds: float) -> dict[str, Any]:
        st = self.stats = Stats()
        for c in self.conns:
            c.running, c.stopping = True, False
            for lane in range(c.depth):
                c.send(lane)
            assert c.transport is not None
            c.transport.write(b"".join(c.out))
            c.out.clear()
        await asyncio.sleep(warmup)
        a0, e0, t0 = st.acks, sum(st.errors.values()), time.perf_counter()
        await asyncio.sleep(seconds)
        a1, e1, t1 = st.acks, sum(st.errors.values()), time.perf_counter()
        for c in self.conns:
            c.running, c.stopping = False, True
        left = await self.drain()
        for c in self.conns:
            c.stopping = False
        return {"acks": a1 - a0, "wall": t1 - t0, "errors": e1 - e0, "unanswered": left,
                "error_kinds": dict(st.errors.most_common(3))}  # fmt: skip

    async def latency(self, rate: int, seconds: float) -> dict[str, Any]:
        st = self.stats = Stats()
        st.sampling = True
        # The connections in turn (lane 0 each), skipping busy ones.
        ring = collections.deque(self.conns)
        total, sent, late = int(rate * seconds), 0, 0
        clock = time.perf_counter_ns
        t0 = clock()
        while sent < total:
            due = min(total, (clock() - t0) * rate // 1_000_000_000 + 1)
            while sent < due:
                for _ in range(len(ring)):
                    c = ring[0]
                    ring.rotate(-1)
                    if not c.busy():
                        c.send(0, now_write=True)
                        sent += 1
                        break
                else:
                    late += 1
                    break  # all busy: try again next tick
            await asyncio.sleep(0.001)  # uvloop's timers are in ms: 0.0005 would spin
        send_wall = (clock() - t0) / 1e9
        left = await self.drain()
        st.sampling = False
        for c in self.conns:  # cancel what rests (not timed)
            if c.order[0] and not c.closed:
                c.send(0, now_write=True)
        await self.drain()
        res: dict[str, Any] = dict(percentiles(st.samples))
        s = sorted(st.samples)
        res["p90_us"] = s[min(len(s) - 1, int(0.9 * len(s)))] / 1000 if s else 0.0
        res.update(sent=sent, sent_per_s=sent / send_wall, late=late, unanswered=left,
                   errors=sum(st.errors.values()),
                   error_kinds=dict(st.errors.most_common(3)))  # fmt: skip
        return res


async def _worker(args: argparse.Namespace) -> None:
    w = Worker(args)
    await w.connect()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": len(w.conns)})
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "throughput":
            reply(await w.throughput(cmd["warmup"], cmd["seconds"]))
        elif cmd["cmd"] == "latency":
            reply(await w.latency(cmd["rate"], cmd["seconds"]))
        else:
            break
    for c in w.conns:
        if c.transport is not None:
            c.transport.close()


def worker_main(argv: list[str] | None = None) -> int:
    import uvloop

    p = argparse.ArgumentParser(prog="python -m bench.http_bench worker")
    p.add_argument("--api", choices=APIS, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--keys", required=True, help="JSON file: [[key, secret], ...], one a conn")
    p.add_argument("--depth", type=int, default=1, help="lanes (requests in flight) per conn")
    uvloop.run(_worker(p.parse_args(argv)))
    return 0


# ============================================================================== processes


class Stack:
    """Engine + HTTP gateway + JSON gateway + accounts and vault, all temporary; the client
    worker processes of the current phase."""

    def __init__(self, args: argparse.Namespace) -> None:
        from gateways.accounts import AccountStore
        from gateways.vault import Vault

        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
        self.kids = procs.Children()
        self.workers: list[asyncio.subprocess.Process] = []
        self.config = procs.shipped_config(
            self.tmp / "exchange.toml",
            {"json_gateway": GATEWAY_LIMITS, "http_gateway": HTTP_LIMITS},
        )
        self.store = AccountStore(self.tmp / "accounts.db")
        self.vault = Vault.create(self.tmp / "vault.key")
        self.keys: list[tuple[str, str]] = []
        self.engine, self.commands, self.market_data = spawn_engine(
            self.kids, self.tmp, self.config, args.engine_cpu
        )
        self.ports = dict(zip(("http", "ws", "json"), free_ports(3), strict=True))
        self.profile = self.tmp / "gateway.prof" if args.profile else None
        prefix = ["cProfile", "-o", str(self.profile), "-m"] if self.profile else []
        self.http = self.kids.spawn(
            [*prefix, "gateways.http", "--config", str(self.config),
             "--port", str(self.ports["http"]), "--ws-port", str(self.ports["ws"]),
             "--commands", self.commands, "--market-data", self.market_data,
             "--accounts", str(self.tmp / "accounts.db"), "--vault", str(self.tmp / "vault.key"),
             "--identity", "bench-http-gw", "--no-recorder"],
            self.tmp / "http.log", cpus=[args.gateway_cpu],
        )  # fmt: skip
        self.json = spawn_gateway(
            self.kids, self.tmp, self.config, self.commands, self.ports["json"], args.gateway_cpu
        )
        self.gateways = {"v1": self.http, "bearer": self.http, "v3": self.http, "json": self.json}
        self.tokens: list[tuple[str, str]] = []  # (access token, "") of web users, for bearer
        self.admin: Any = None  # the engine client that funds accounts

    async def wait_ready(self, timeout: float = 60.0) -> None:
        await wait_json_gateway(self.json, self.ports["json"], timeout)
        self.http.wait_log("HTTP gateway listening", timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # /health: engine there, books synced
            with contextlib.suppress(OSError):
                r, w = await asyncio.open_connection("127.0.0.1", self.ports["http"])
                w.write(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                status = (await r.read()).split(b" ", 2)[1:2]
                w.close()
                if status == [b"200"]:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"HTTP gateway not healthy in {timeout}s:\n{self.http.tail()}")

    async def accounts(self, n: int) -> None:
        """At least ``n`` funded accounts with vault-sealed trading keys."""
        from gateways.accounts import Permission

        while len(self.keys) < n:
            account = self.store.create_account(f"bench-{len(self.keys) + 1}")
            key, secret = self.store.issue_key(account, Permission.TRADE, vault=self.vault)
            await self.deposit(account)
            self.keys.append((key, secret))

    async def web_users(self, n: int) -> None:
        """At least ``n`` funded web users, each with a session and its access token, made in
        the store the gateway reads, as sign-in makes them (the gateway's own signing key, a
        live session): the benchmark measures orders, not 60 ms password hashes."""
        from gateways.http.jwt import Claims, Tokens
        from gateways.users import Users, hash_password

        users = Users(self.store, self.vault)
        tokens = Tokens(users.signing_secret())
        password = hash_password("bench password")
        while len(self.tokens) < n:
            user = users.create(f"bench{len(self.tokens)}@example.com", password)
            await self.deposit(user.account_id)
            session, _ = users.open_session(user.id, 3600)
            now = int(time.time())
            claims = Claims(user.id, user.account_id, session.id, now, now + 3600)
            self.tokens.append((tokens.issue(claims), ""))

    async def deposit(self, account: int) -> None:
        """FUNDS USD for ``account``, through the engine (one admin client for the run)."""
        from engine.client import EngineClient
        from protocol import config
        from protocol.messages import Deposit, LedgerReply

        if self.admin is None:
            self.admin = EngineClient(self.commands, b"bench-http-admin")
            await self.admin.start(wait=30)
        units = config.load(self.config).amount_to_units("USD", FUNDS)
        reply = await self.admin.request(Deposit(0, account, "USD", units))
        assert isinstance(reply, LedgerReply), reply

    async def start_workers(self, api: str, procs_n: int, conns: int, depth: int) -> None:
        """``procs_n`` client processes of ``conns`` connections each (one account each)."""
        await self.accounts(procs_n * conns)
        if api == "bearer":
            await self.web_users(procs_n * conns)
        if self.admin is not None:
            await self.admin.close()
            self.admin = None
        creds = self.tokens if api == "bearer" else self.keys
        port = self.ports["json" if api == "json" else "http"]
        for i in range(procs_n):
            keys = self.tmp / f"keys-{i}.json"
            keys.write_text(json.dumps(creds[i * conns : (i + 1) * conns]))
            argv = [sys.executable, "-m", "bench.http_bench", "worker", "--api", api,
                    "--port", str(port), "--keys", str(keys), "--depth", str(depth)]  # fmt: skip
            with open(self.tmp / f"worker-{i}.log", "wb") as log:  # noqa: ASYNC230
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                    **procs.popen_options(self.args.client_cpus, own_session=False),
                )  # fmt: skip
            self.workers.append(proc)
        for i in range(procs_n):
            got = await self.ask(i, None, 120)
            if got.get("ready") != conns:
                raise RuntimeError(f"client worker {i}: {got}")

    async def ask(self, i: int, cmd: dict | None, timeout: float) -> dict[str, Any]:
        proc = self.workers[i]
        assert proc.stdin is not None and proc.stdout is not None
        if cmd is not None:
            proc.stdin.write(json.dumps(cmd).encode() + b"\n")
            await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(
                f"client worker {i} died:\n{procs.tail(self.tmp / f'worker-{i}.log')}"
            )
        return json.loads(line)  # type: ignore[no-any-return]

    async def stop_workers(self) -> None:
        for proc in self.workers:
            assert proc.stdin is not None
            with contextlib.suppress(ConnectionError):
                proc.stdin.write(b'{"cmd": "stop"}\n')
                await proc.stdin.drain()
        for proc in self.workers:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.workers.clear()

    def cpu(self, api: str) -> dict[str, float]:
        """CPU seconds so far: the driven gateway, the engine, the clients, and the machine's
        busy time (all processes)."""
        t = os.times()
        return {
            "gateway": cpu_seconds(self.gateways[api].pid),
            "engine": cpu_seconds(self.engine.pid),
            "clients": sum(cpu_seconds(w.pid) for w in self.workers),
            "self": t.user + t.system,
            "others_gw": sum(
                cpu_seconds(g.pid) for g in {self.http, self.json} if g is not self.gateways[api]
            ),  # fmt: skip
            "machine": procs.machine_cpu()[0],
        }

    def close(self) -> None:
        for w in self.workers:
            if w.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.kill()
        self.kids.close()
        self.store.close()
        if self.profile is not None and self.profile.exists():
            print_profile(self.profile)
        shutil.rmtree(self.tmp, ignore_errors=True)


def print_profile(path: Path, top: int = 30) -> None:
    say(f"\n## The HTTP gateway under cProfile (whole run, top {top} by own time)")
    stats = pstats.Stats(str(path))
    if os.environ.get("BENCH_PROFILE_KEEP"):
        shutil.copy(path, os.environ["BENCH_PROFILE_KEEP"])
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumtime").print_stats(top)


def cpu_share(c0: dict[str, float], c1: dict[str, float], wall: float) -> dict[str, float]:
    """% of one core each used over ``wall`` seconds; ``foreign_cores``: what processes not
    ours took (the machine's busy time less ours)."""
    d = {k: c1[k] - c0[k] for k in c0}
    out = {k: 100 * d[k] / wall for k in ("gateway", "engine", "clients")}
    own = d["gateway"] + d["engine"] + d["clients"] + d["self"] + d["others_gw"]
    out["foreign_cores"] = max(0.0, (d["machine"] - own) / wall)
    return out


# ================================================================================ phases


async def throughput_run(st: Stack, api: str, warmup: float, seconds: float) -> dict[str, Any]:
    cmd = {"cmd": "throughput", "warmup": warmup, "seconds": seconds}
    for proc in st.workers:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(cmd).encode() + b"\n")
    await asyncio.gather(*(p.stdin.drain() for p in st.workers if p.stdin))
    await asyncio.sleep(warmup)
    c0, t0 = st.cpu(api), time.perf_counter()
    await asyncio.sleep(seconds)
    c1, t1 = st.cpu(api), time.perf_counter()
    outs = [await st.ask(i, None, seconds + 120) for i in range(len(st.workers))]
    return {
        "orders_per_s": sum(o["acks"] / o["wall"] for o in outs),
        "errors": sum(o["errors"] for o in outs),
        "unanswered": sum(o["unanswered"] for o in outs),
        "error_kinds": [o["error_kinds"] for o in outs if o["error_kinds"]],
        **cpu_share(c0, c1, t1 - t0),
    }


def mode_shape(args: argparse.Namespace, mode: str) -> tuple[int, int, int]:
    """(processes, connections each, requests in flight per connection)."""
    if mode == "pipelined":
        return args.procs, args.conns, args.depth
    return args.procs, args.flat_conns, 1


async def throughput_phase(st: Stack, args: argparse.Namespace, mode: str) -> list[dict]:
    n, conns, depth = mode_shape(args, mode)
    say(f"\n## Throughput, {'HTTP/1.1 pipelining' if depth > 1 else 'no pipelining'}: "
        f"{n} client processes x {conns} keep-alive connections x {depth} request"
        f"{'s' if depth > 1 else ''} in flight each; place a resting buy, cancel it; "
        f"{args.runs} runs x {args.seconds:g} s after {args.warmup:g} s warm-up")  # fmt: skip
    rows = []
    for api in args.apis:
        await st.start_workers(api, n, conns, depth)
        try:
            runs = [await throughput_run(st, api, args.warmup, args.seconds)
                    for _ in range(args.runs)]  # fmt: skip
        finally:
            await st.stop_workers()
        rates = [r["orders_per_s"] for r in runs]
        row = {
            "api": api, "mode": mode, "shape": [n, conns, depth], "runs": runs,
            "rates": rates, "median": statistics.median(rates),
            **{k: statistics.median(r[k] for r in runs)
               for k in ("gateway", "engine", "clients", "foreign_cores")},
            "errors": sum(r["errors"] for r in runs),
            "unanswered": sum(r["unanswered"] for r in runs),
        }  # fmt: skip
        rows.append(row)
        say(f"  {api:>4}: " + " / ".join(f"{r:,.0f}" for r in rates)
            + f" -> median {row['median']:,.0f} orders/s; cpu gateway {row['gateway']:.0f}%, "
            f"engine {row['engine']:.0f}%, clients {row['clients']:.0f}%; other processes "
            f"{row['foreign_cores']:.2f} cores; errors {row['errors']}")  # fmt: skip
        for r in runs:
            if r["error_kinds"]:
                say(f"        errors: {r['error_kinds']}")
    return rows


async def latency_phase(st: Stack, args: argparse.Namespace) -> list[dict]:
    say(f"\n## Order -> response at an offered {args.rate:,} orders/s: 1 client process, "
        f"{args.latency_conns} keep-alive connections, one request in flight each, tick "
        f"pacing; places and cancels; {args.latency_runs} runs x "
        f"{args.latency_seconds:g} s")  # fmt: skip
    rows = []
    for api in args.apis:
        await st.start_workers(api, 1, args.latency_conns, 1)
        try:
            await st.ask(0, {"cmd": "latency", "rate": args.rate, "seconds": 0.5}, 120)  # warm-up
            runs = []
            for _ in range(args.latency_runs):
                c0, t0 = st.cpu(api), time.perf_counter()
                cmd = {"cmd": "latency", "rate": args.rate, "seconds": args.latency_seconds}
                r = await st.ask(0, cmd, args.latency_seconds + 120)
                r.update(cpu_share(c0, st.cpu(api), time.perf_counter() - t0))
                runs.append(r)
        finally:
            await st.stop_workers()
        row = {
            "api": api, "runs": runs,
            **{f"median_{k}": statistics.median(r[k] for r in runs)
               for k in ("p50_us", "p90_us", "p99_us", "p999_us", "gateway", "engine",
                         "clients", "foreign_cores")},
            "errors": sum(r["errors"] for r in runs),
            "late": sum(r["late"] for r in runs),
        }  # fmt: skip
        rows.append(row)
        for r in runs:
            say(f"  {api:>4}: sent {r['sent_per_s']:,.0f}/s: p50 {r['p50_us']:,.0f} us, p90 "
                f"{r['p90_us']:,.0f} us, p99 {r['p99_us']:,.0f} us, p99.9 {r['p999_us']:,.0f} "
                f"us, max {r['max_us']:,.0f} us (n={r['n']:,}, late {r['late']}, errors "
                f"{r['errors']}); cpu gateway {r['gateway']:.0f}%, engine {r['engine']:.0f}%, "
                f"clients {r['clients']:.0f}%, other processes "
                f"{r['foreign_cores']:.2f} cores")  # fmt: skip
    return rows


# ================================================================================ report


def report(res: dict[str, Any], args: argparse.Namespace) -> None:
    def mark(ok: bool) -> str:
        return "yes" if ok else "NO"

    say("\n## Summary (medians of runs)")
    rows = []
    json_rate = {r["mode"]: r["median"] for r in res["throughput"] if r["api"] == "json"}
    for r in res["throughput"]:
        n, conns, depth = r["shape"]
        shape = f"{n}x{conns} conns, " + (f"pipelined x{depth}" if depth > 1 else "1 in flight")
        ratio = ""
        if r["api"] != "json" and json_rate.get(r["mode"]):
            ratio = f"; {r['median'] / json_rate[r['mode']]:.2f}x JSON"
        target = (f">= {TARGET_ORDERS_PER_S:,}: {mark(r['median'] >= TARGET_ORDERS_PER_S)}"
                  if r["api"] != "json" else "baseline")  # fmt: skip
        rows.append([
            f"{r['api']} orders/s, {shape}", " / ".join(f"{x:,.0f}" for x in r["rates"]),
            f"{r['median']:,.0f}{ratio}", target,
            f"gw {r['gateway']:.0f}%, eng {r['engine']:.0f}%, cli {r['clients']:.0f}%, "
            f"other {r['foreign_cores']:.2f}",
        ])  # fmt: skip
    for r in res["latency"]:
        p99 = r["median_p99_us"]
        rows.append([
            f"{r['api']} p50 / p99 order->response at {args.rate:,}/s",
            " / ".join(f"{x['p50_us']:,.0f}/{x['p99_us']:,.0f}" for x in r["runs"]) + " us",
            f"{r['median_p50_us']:,.0f} / {p99:,.0f} us",
            f"p99 < {TARGET_P99_US:,.0f} us: {mark(p99 < TARGET_P99_US)}",
            f"gw {r['median_gateway']:.0f}%, eng {r['median_engine']:.0f}%, "
            f"cli {r['median_clients']:.0f}%, other {r['median_foreign_cores']:.2f}",
        ])  # fmt: skip
    for line in table(["metric", "runs", "median", "target", "cpu (% of a core)"], rows):
        say(line)
    errors = sum(r["errors"] for r in res["throughput"]) + sum(r["errors"] for r in res["latency"])
    if errors:
        say(f"  errors during the runs: {errors} (kinds printed above)")


# ================================================================================== main


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="short smoke run (under a minute)")
    p.add_argument("--apis", default=",".join(APIS), help="comma list of v1,bearer,v3,json")
    p.add_argument("--modes", default="pipelined,flat", help="throughput modes: pipelined,flat")
    p.add_argument("--procs", type=int, help="client processes (2; quick 1)")
    p.add_argument("--conns", type=int, help="pipelined: connections per process (4; quick 2)")
    p.add_argument("--depth", type=int, help="pipelined: requests in flight per conn (32; quick 8)")
    p.add_argument("--flat-conns", type=int, help="no pipelining: conns per process (64; quick 8)")
    p.add_argument("--runs", type=int, help="timed throughput runs per API and mode (3; quick 1)")
    p.add_argument("--seconds", type=float, help="seconds per timed run (3; quick 1)")
    p.add_argument("--warmup", type=float, help="unmeasured lead-in per run (1; quick 0.3)")
    p.add_argument("--rate", type=int, default=2_000, help="latency: offered orders/s")
    p.add_argument("--latency-conns", type=int, default=16, help="latency: connections")
    p.add_argument("--latency-runs", type=int, help="latency runs per API (3; quick 1)")
    p.add_argument("--latency-seconds", type=float, help="seconds per latency run (5; quick 1)")
    p.add_argument("--engine-cpu", type=int, default=1)
    p.add_argument("--gateway-cpu", type=int, default=0)
    p.add_argument("--client-cpus", help="comma list (default: free cores, else the engine's)")
    p.add_argument("--only", default="throughput,latency", help="phases: throughput,latency")
    p.add_argument("--profile", action="store_true", help="run the HTTP gateway under cProfile")
    p.add_argument("--json", help="also write the results as JSON to this file")


def _defaults(args: argparse.Namespace) -> None:
    q = args.quick
    for name, full, short in (("procs", 2, 1), ("conns", 4, 2), ("depth", 32, 8),
                              ("flat_conns", 64, 8), ("runs", 3, 1), ("seconds", 3.0, 1.0),
                              ("warmup", 1.0, 0.3), ("latency_runs", 3, 1),
                              ("latency_seconds", 5.0, 1.0)):  # fmt: skip
        if getattr(args, name) is None:
            setattr(args, name, short if q else full)
    if args.depth > 100:
        raise SystemExit("--depth: at most 100 lanes per connection (distinct resting prices)")
    args.apis = [a.strip() for a in args.apis.split(",") if a.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    taken = {args.engine_cpu, args.gateway_cpu}
    if args.client_cpus:
        args.client_cpus = [int(c) for c in args.client_cpus.split(",")]
    else:
        free = sorted(os.sched_getaffinity(0) - taken)
        args.client_cpus = free or [args.engine_cpu]


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    st = Stack(args)
    try:
        await st.wait_ready()
        res: dict[str, Any] = {"args": vars(args), "throughput": [], "latency": []}
        phases = {p.strip() for p in args.only.split(",")}
        if "throughput" in phases:
            for mode in args.modes:
                res["throughput"] += await throughput_phase(st, args, mode)
        if "latency" in phases:
            res["latency"] = await latency_phase(st, args)
        return res
    finally:
        await st.stop_workers()
        st.close()


def run(args: argparse.Namespace) -> int:
    import uvloop

    _defaults(args)
    procs.interrupt_on_sigterm()
    own = procs.pin_self_off({args.engine_cpu, args.gateway_cpu})
    say("# HTTP gateway benchmark (python -m bench http)")
    args.cpu, args.client_cpu = args.engine_cpu, args.client_cpus  # for machine_info's wording
    for line in machine_info(args)[:2]:
        say("  " + line)
    say(f"  engine pinned to cpu {args.engine_cpu}, gateways (HTTP, JSON) to cpu "
        f"{args.gateway_cpu}, client processes to cpus {args.client_cpus}, this driver on "
        f"{own}; APIs {', '.join(args.apis)}; mode: {'quick' if args.quick else 'full'}"
        + ("; the HTTP gateway under cProfile: its figures are NOT the real ones"
           if args.profile else ""))  # fmt: skip
    t0 = time.perf_counter()
    meter = procs.LoadMeter()
    try:
        res = uvloop.run(_main(args))
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    res["foreign_cores"] = meter.foreign_cores()
    report(res, args)
    close_report(res, t0, args.json)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit("usage: python -m bench http ... (this module's own entry point: worker)")

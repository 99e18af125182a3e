"""Fixtures and helpers for the market-data tests: the websocket bridge process, configs with a
pool of markets, a websocket client that files what arrives by stream, and trading helpers.

- ``write_feed_config(path, bridge={"send_queue": 64})``: the shipped config with keys replaced
  per section (every key must exist there, so a renamed key fails loudly) plus a pool of
  BTC-USD clones (``F00-USD`` ...), so tests sharing one engine never share a market.
- ``BridgeProc``: ``python -m feed`` on a free port against a running ``EngineProc``, with the
  recorder at ``recorder`` (a URL) or none (``--no-recorder``, the default, so that no test
  talks to a recorder another process left on the shipped port); started once ``/health``
  answers 200 (engine reachable, every book synced, trade history seeded).
- ``FeedStack``: an engine and one bridge, with ``new_market()`` handing out pool markets.
- ``WsClient``: a real ``aiohttp`` websocket client. ``request()`` sends one op and returns its
  reply; stream data is filed under ``by_stream[stream]``; ``until(pred)`` reads until a
  condition holds (no sleeps, a generous deadline).
- ``Desk``: an ``EngineClient`` with funded accounts, resting orders and takes in integer ticks
  and lots, returning what the engine answered.
- ``async_test``: runs an ``async def`` test in a fresh event loop under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.client import EngineClient
from protocol.messages import (
    BookSnapshot,
    Cancel,
    Deposit,
    Executions,
    LedgerReply,
    NewOrder,
    SnapshotRequest,
)
from tests.procs import (
    BIND_RETRIES,
    START_TIMEOUT,
    EngineProc,
    Proc,
    ProcError,
    eventually_async,
    free_port,
    write_exchange_toml,
)

POOL = [f"F{i:02d}-USD" for i in range(12)]
REPLY_TIMEOUT = 20.0  # generous: a loaded 2-core box; a hang still fails, just later
TEST_TIMEOUT = 150.0
_desk_ids = itertools.count(1)
BUY, SELL = 1, 2
LIMIT, MARKET = 1, 2
GTC, IOC = 1, 2


def async_test(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Run an ``async def`` test in a fresh event loop, failing it after TEST_TIMEOUT."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), TEST_TIMEOUT))

    return wrapper


# ------------------------------------------------------------------------------- config


def write_feed_config(path: Path, pool: int = len(POOL), **sections: dict[str, Any]) -> Path:
    """The shipped config with keys replaced per section, plus ``pool`` clones of BTC-USD."""
    return write_exchange_toml(path, POOL[:pool], **sections)


# ------------------------------------------------------------------------------ process


class BridgeProc(Proc):
    """``python -m feed`` (the websocket bridge) on a free loopback port."""

    def __init__(
        self,
        workdir: Path,
        *,
        config: Path,
        engine: EngineProc,
        name: str = "bridge",
        recorder: str | None = None,
    ) -> None:
        super().__init__("feed", workdir, name)
        self.config = Path(config)
        self.engine = engine
        self.recorder = recorder
        self.port = 0

    def args(self) -> list[str]:
        return [
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            "--commands",
            self.engine.commands,
            "--market-data",
            self.engine.market_data,
            *(["--recorder", self.recorder] if self.recorder else ["--no-recorder"]),
        ]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def astart(self, timeout: float = START_TIMEOUT, healthy: bool = True) -> BridgeProc:
        """Start; wait until ``/health`` answers (200 if ``healthy``, any status otherwise)."""
        for attempt in range(BIND_RETRIES):
            self.port = free_port()
            self.spawn()
            if await self._await_ready(timeout, healthy):
                return self
            if "address already in use" in self.log().lower() and attempt + 1 < BIND_RETRIES:
                continue
            break
        raise ProcError(f"bridge exited with {self.returncode} before serving\n{self.log()}")

    async def _await_ready(self, timeout: float, healthy: bool) -> bool:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                if not self.running:
                    return True  # stop polling; the caller looks at the exit
                try:
                    async with http.get(self.url("/health")) as r:
                        return r.status == 200 or not healthy
                except aiohttp.ClientError:
                    return False

            try:
                await eventually_async(ready, timeout, 0.05, f"bridge {self.name} healthy")
            except AssertionError:
                self.kill()
                raise ProcError(f"bridge not healthy in {timeout}s\n{self.log()}") from None
        if not self.running:
            self.returncode = self.popen.returncode  # type: ignore[union-attr]
            return False
        return True


class GatewayProc(Proc):
    """``python -m gateways.json_tcp`` on a free port (the dashboard test's order entry)."""

    def __init__(self, workdir: Path, *, config: Path, engine: EngineProc, accounts: Path) -> None:
        super().__init__("gateways.json_tcp", workdir, "gateway")
        self.config, self.engine, self.accounts = config, engine, accounts
        self.port = 0

    def args(self) -> list[str]:
        return [
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            "--commands",
            self.engine.commands,
            "--accounts",
            str(self.accounts),
            "--identity",
            f"feed-test-gw-{os.getpid()}",
        ]

    async def astart(self, timeout: float = START_TIMEOUT) -> GatewayProc:
        from gateways.json_tcp.client import JsonClient

        self.port = free_port()
        self.spawn()

        async def ready() -> bool:
            if not self.running:
                raise ProcError(f"gateway exited with {self.popen.poll()}\n{self.log()}")  # type: ignore[union-attr]
            try:
                client = await JsonClient.connect("127.0.0.1", self.port)
            except OSError:
                return False
            try:
                return bool((await client.request("ping", timeout=2.0))["engine"])
            except (ConnectionError, TimeoutError):
                return False
            finally:
                await client.close()

        await eventually_async(ready, timeout, 0.05, "JSON gateway serving")
        return self


class ArgsProc(Proc):
    """Any ``python -m MODULE ARGS...`` child (the market maker)."""

    def __init__(self, module: str, workdir: Path, argv: list[str], name: str) -> None:
        super().__init__(module, workdir, name)
        self.argv = argv

    def args(self) -> list[str]:
        return self.argv


def stop_all(*procs: Proc | None) -> None:
    """Stop (SIGTERM, else kill) every process given, newest first; never raises."""
    for proc in procs:
        if proc is None:
            continue
        with contextlib.suppress(ProcError):
            if proc.running:
                proc.stop()
        proc.cleanup()


class FeedStack:
    """One engine and one bridge on it, sharing a config with a pool of markets."""

    def __init__(self, workdir: Path, pool: int = len(POOL), **sections: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config = write_feed_config(workdir / "exchange.toml", pool, **sections)
        self.engine = EngineProc(workdir / "engine", config=self.config)
        self.bridge = BridgeProc(workdir / "bridge", config=self.config, engine=self.engine)
        self._markets = iter(POOL)

    async def astart(self) -> FeedStack:
        try:
            await self.engine.astart()
            await self.bridge.astart()
        except BaseException:
            self.close()
            print(self.logs())
            raise
        return self

    def new_market(self) -> str:
        market = next(self._markets, None)
        if market is None:
            raise AssertionError(f"all {len(POOL)} pool markets are taken: raise POOL")
        return market

    def close(self) -> None:
        stop_all(self.bridge, self.engine)

    def logs(self) -> str:
        return "\n".join([self.engine.logs(), self.bridge.logs()])


@pytest.fixture(name="feed_stack", scope="module")
def feed_stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeedStack]:
    """An engine and a bridge with the shipped [bridge] limits, shared by one test module."""
    stack = asyncio.run(FeedStack(tmp_path_factory.mktemp("feed")).astart())
    yield stack
    stack.close()
    print(stack.logs())


@pytest.fixture(name="own_feed_stack")
def own_feed_stack_fixture(tmp_path: Path) -> Iterator[Callable[..., Awaitable[FeedStack]]]:
    """An async factory of private stacks: ``await own_feed_stack(bridge={"send_queue": 64})``.
    Every one is stopped at teardown and its logs printed (shown for failing tests)."""
    made: list[FeedStack] = []

    async def make(pool: int = len(POOL), **sections: dict[str, Any]) -> FeedStack:
        stack = FeedStack(tmp_path / f"stack{len(made)}", pool, **sections)
        made.append(stack)
        return await stack.astart()

    yield make
    for stack in made:
        stack.close()
        print(stack.logs())


@pytest.fixture(name="market")
def market_fixture(feed_stack: FeedStack) -> str:
    """A market of the shared stack that no other test trades in."""
    return feed_stack.new_market()


# ------------------------------------------------------------------------------ clients


class WsClient:
    """A websocket client of the bridge that files everything it reads.

    ``by_stream[name]`` holds the ``data`` of every stream message in arrival order,
    ``replies`` every reply (``{"id", "result"}`` or ``{"id", "error"}``), ``order`` the stream
    names in arrival order; ``close_code`` is set once the server closed the connection.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.by_stream: defaultdict[str, list[Any]] = defaultdict(list)
        self.replies: list[dict] = []
        self.order: list[str] = []
        self.closed = False
        self.close_code: int | None = None
        self.ids = itertools.count(1)

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, bridge: BridgeProc) -> WsClient:
        return cls(await http.ws_connect(bridge.url("/ws"), heartbeat=None))

    async def read_one(self, timeout: float) -> dict | None:
        """Read and file one message; None once the connection is closed."""
        if self.closed:
            return None
        msg = await self.ws.receive(timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            obj = json.loads(msg.data)
            if "stream" in obj:
                self.by_stream[obj["stream"]].append(obj["data"])
                self.order.append(obj["stream"])
            else:
                self.replies.append(obj)
            return obj
        self.closed = True
        self.close_code = self.ws.close_code
        return None

    async def until(
        self, pred: Callable[[], Any], timeout: float = REPLY_TIMEOUT, what: str = ""
    ) -> Any:
        """Read until ``pred()`` is truthy (returned); fail after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            got = pred()
            if got:
                return got
            left = deadline - loop.time()
            if left <= 0 or self.closed:
                break
            try:
                await self.read_one(left)
            except TimeoutError:
                break
        counts = {k: len(v) for k, v in self.by_stream.items()}
        raise AssertionError(
            f"not true after {timeout}s: {what or pred} (closed={self.closed}, "
            f"replies={self.replies[-3:]}, messages per stream={counts})"
        )

    async def send_raw(self, text: str) -> dict:
        """Send one text frame; return the next reply."""
        before = len(self.replies)
        await self.ws.send_str(text)
        await self.until(lambda: len(self.replies) > before, what=f"a reply to {text[:80]!r}")
        return self.replies[before]

    async def request(self, op: str, streams: list[str] | None = None) -> dict:
        """Send ``{"op", "streams", "id"}``; return its reply (matched by id)."""
        rid = next(self.ids)
        body: dict[str, Any] = {"op": op, "id": rid}
        if streams is not None:
            body["streams"] = streams
        await self.ws.send_str(json.dumps(body))
        return await self.until(
            lambda: next((r for r in self.replies if r.get("id") == rid), None),
            what=f"the reply to {op} {streams}",
        )

    async def subscribe(self, *streams: str) -> list[str]:
        reply = await self.request("subscribe", list(streams))
        assert "result" in reply, reply
        return reply["result"]

    def trades(self, market: str) -> list[dict]:
        return [t for batch in self.by_stream[f"trades@{market}"] for t in batch]

    async def close(self) -> None:
        await self.ws.close()


async def http_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, await r.json(content_type=None)


async def metrics(http: aiohttp.ClientSession, bridge: BridgeProc) -> dict:
    status, body = await http_json(http, bridge.url("/stats"))
    assert status == 200, body
    return body


# ------------------------------------------------------------------------------ trading


class Desk:
    """Trading straight through the engine's command socket, in ticks and lots.

    Accounts ``maker`` and ``taker`` are funded on ``start``; the taker never meets its own
    orders, so self-trade prevention stays out of the way.
    """

    def __init__(self, engine: EngineProc, maker: int = 1, taker: int = 2) -> None:
        self.client = EngineClient(
            engine.commands, f"feed-test-desk-{os.getpid()}-{next(_desk_ids)}".encode()
        )
        self.maker, self.taker = maker, taker

    async def start(self) -> Desk:
        await self.client.start(wait=REPLY_TIMEOUT)
        for account in (self.maker, self.taker):
            for asset, units in (("USD", 10**15), ("BTC", 10**13), ("ETH", 10**13)):
                reply = await self.client.request(Deposit(0, account, asset, units))
                assert isinstance(reply, LedgerReply), reply
        return self

    async def order(self, cmd: NewOrder) -> Executions:
        reply = await self.client.request(cmd, timeout=REPLY_TIMEOUT)
        assert isinstance(reply, Executions), reply
        return reply

    async def rest(self, market: str, side: int, price: int, qty: int) -> int:
        """A resting GTC limit order of the maker; returns its order id."""
        reply = await self.order(NewOrder(0, self.maker, market, side, LIMIT, GTC, price, qty))
        return reply.reports[0].order_id

    async def rest_many(self, market: str, side: int, orders: list[tuple[int, int]]) -> None:
        """Resting orders ``[(price, qty), ...]`` of the maker, all in one engine batch."""
        cmds = [NewOrder(0, self.maker, market, side, LIMIT, GTC, p, q) for p, q in orders]
        for reply in await self.client.request_many(cmds, timeout=REPLY_TIMEOUT):
            assert isinstance(reply, Executions), reply

    async def take(self, market: str, side: int, price: int, qty: int) -> list:
        """An IOC limit order of the taker; returns its fill reports (trade ids, prices...)."""
        reply = await self.order(NewOrder(0, self.taker, market, side, LIMIT, IOC, price, qty))
        return [r for r in reply.reports if r.trade_id]

    async def cancel(self, market: str, order_id: int) -> None:
        reply = await self.client.request(Cancel(0, self.maker, market, order_id))
        assert isinstance(reply, Executions), reply

    async def book(self, market: str) -> BookSnapshot:
        snap = await self.client.request(SnapshotRequest(0, market), timeout=REPLY_TIMEOUT)
        assert isinstance(snap, BookSnapshot), snap
        return snap

    async def close(self) -> None:
        await self.client.close()


@contextlib.asynccontextmanager
async def desk_on(engine: EngineProc) -> Any:
    desk = await Desk(engine).start()
    try:
        yield desk
    finally:
        await desk.close()

"""Run the real engine and the real JSON gateway on loopback for integration tests.

``GatewayProc`` is ``python -m gateways.json_tcp`` on a free port, started against a running
``EngineProc`` (tests/procs.py) and a temporary account store; it counts as started once a
``ping`` over its own TCP port says the engine is reachable. ``Stack`` bundles an engine, its
gateways, the account store, an admin API key, and helpers to make funded traders and
logged-on sessions. ``LineSession`` is a bare line-oriented client for hostile input, where
``JsonClient`` (the shipped client) would hide what came back.

Isolation: module-scoped stacks are shared by many tests, so every test that trades takes a
market of its own from a pool of clones of BTC-USD (``P00-USD`` ...) that the test config adds
to the shipped markets; no test sees another's resting orders. Accounts are fresh per test.

A test module imports the fixtures it wants:

    from tests.fixtures_gateway import market_fixture, stack_fixture  # noqa: F401
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateways.accounts import AccountStore, Permission, make_proof
from gateways.json_tcp.client import JsonClient
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

POOL_SIZE = 64
POOL = [f"P{i:02d}-USD" for i in range(POOL_SIZE)]
REPLY_TIMEOUT = 20.0  # generous: a loaded 2-core box; a hang still fails, just later
TEST_TIMEOUT = 120.0  # a whole async test; beyond it the test fails instead of hanging

_open_clients: list[JsonClient | LineSession] = []


def async_test(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Run an ``async def`` test in a fresh event loop under TEST_TIMEOUT; every client that
    ``Stack.session`` or ``LineSession.open`` made is closed afterwards, pass or fail."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        async def body() -> Any:
            try:
                return await asyncio.wait_for(fn(*args, **kwargs), TEST_TIMEOUT)
            finally:
                while _open_clients:
                    await _open_clients.pop().close()

        return asyncio.run(body())

    return wrapper


# ------------------------------------------------------------------------------- config


def write_exchange_config(path: Path, pool: int = POOL_SIZE, **sections: dict[str, Any]) -> Path:
    """The shipped config with keys replaced per section, plus ``pool`` clones of BTC-USD.

    ``write_exchange_config(p, json_gateway={"max_in_flight": 8}, engine={"fsync": "none"})``.
    """
    return write_exchange_toml(path, POOL[:pool], **sections)


# ------------------------------------------------------------------------------ process


class GatewayProc(Proc):
    """``python -m gateways.json_tcp`` on a free loopback port, against a running engine."""

    def __init__(
        self,
        workdir: Path,
        *,
        config: Path,
        commands: str,
        accounts: Path,
        identity: str,
        name: str = "gateway",
    ) -> None:
        super().__init__("gateways.json_tcp", workdir, name)
        self.config = Path(config)
        self.commands = commands
        self.accounts = Path(accounts)
        self.identity = identity
        self.port = 0
        self.tls: ssl.SSLContext | None = None  # client context, for a gateway serving TLS

    def args(self) -> list[str]:
        return [
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            "--commands",
            self.commands,
            "--accounts",
            str(self.accounts),
            "--identity",
            self.identity,
        ]

    def start(self, timeout: float = START_TIMEOUT) -> GatewayProc:
        return asyncio.run(self.astart(timeout))

    async def astart(self, timeout: float = START_TIMEOUT) -> GatewayProc:
        """Start and wait until a ``ping`` through the gateway says the engine is reachable."""
        for attempt in range(BIND_RETRIES):
            self.port = free_port()
            self.spawn()
            if await self._await_ready(timeout):
                return self
            if "address already in use" in self.log().lower() and attempt + 1 < BIND_RETRIES:
                continue
            break
        raise ProcError(f"gateway exited with {self.returncode} before serving\n{self.log()}")

    async def _await_ready(self, timeout: float) -> bool:
        async def ready() -> bool:
            if not self.running:
                return True  # stop polling; the caller looks at the exit
            try:
                client = await JsonClient.connect("127.0.0.1", self.port, tls=self.tls)
            except OSError:
                return False
            try:
                pong = await client.request("ping", timeout=2.0)
            except (ConnectionError, TimeoutError):
                return False
            finally:
                await client.close()
            return bool(pong["engine"])

        try:
            await eventually_async(ready, timeout, 0.05, f"gateway {self.name} ready")
        except AssertionError:
            self.kill()
            raise ProcError(f"gateway not ready in {timeout}s\n{self.log()}") from None
        if not self.running:
            self.returncode = self.popen.returncode  # type: ignore[union-attr]
            return False
        return True


# -------------------------------------------------------------------------------- people


@dataclass
class Trader:
    account: int
    name: str
    key: str
    secret: str
    permission: str


class Stack:
    """One engine, its gateways and the account store they share."""

    def __init__(self, workdir: Path, config: Path) -> None:
        self.workdir = workdir
        self.config = config
        self.accounts_db = workdir / "accounts.db"
        self.store = AccountStore(self.accounts_db)
        self.engine = EngineProc(workdir / "engine", config=config)
        self.gateways: dict[str, GatewayProc] = {}
        self._names = itertools.count(1)
        self._markets = iter(POOL)
        self.cli_config: Path | None = None
        admin_id = self.store.create_account("admin")
        self.admin = Trader(admin_id, "admin", *self.store.issue_key(admin_id, Permission.ADMIN),
                            "admin")  # fmt: skip

    def start_engine(self) -> None:
        asyncio.run(self.astart_engine())

    async def astart_engine(self) -> None:
        await self.engine.astart()
        # The admin CLI reads the engine endpoint from the config: give it one of its own.
        self.cli_config = write_exchange_config(
            self.workdir / "cli.toml", engine={"commands": self.engine.commands}
        )

    def gateway_proc(self, name: str, **json_gateway: Any) -> GatewayProc:
        """Another (not yet started) gateway on this engine, ``[json_gateway]`` keys replaced."""
        config = self.config
        if json_gateway:
            config = write_exchange_config(self.workdir / f"{name}.toml", json_gateway=json_gateway)
        gw = GatewayProc(
            self.workdir / name,
            config=config,
            commands=self.engine.commands,
            accounts=self.accounts_db,
            identity=f"json-test-{name}-{os.getpid()}",
            name=name,
        )
        self.gateways[name] = gw
        return gw

    def add_gateway(self, name: str, **json_gateway: Any) -> GatewayProc:
        """Start another gateway on this engine (from sync code)."""
        return self.gateway_proc(name, **json_gateway).start()

    async def aadd_gateway(self, name: str, **json_gateway: Any) -> GatewayProc:
        """Start another gateway on this engine (from async code)."""
        return await self.gateway_proc(name, **json_gateway).astart()

    def new_market(self) -> str:
        """A BTC-USD clone no other test on this stack trades in."""
        market = next(self._markets, None)
        if market is None:
            raise AssertionError(f"all {POOL_SIZE} pool markets are taken: raise POOL_SIZE")
        return market

    @property
    def gateway(self) -> GatewayProc:
        return self.gateways["gateway"]

    def trader(self, permission: str = "trade", name: str = "") -> Trader:
        name = f"{name or 'trader'}-{next(self._names)}"
        account = self.store.create_account(name)
        key, secret = self.store.issue_key(account, Permission(permission))
        return Trader(account, name, key, secret, permission)

    async def session(self, who: Trader, gateway: GatewayProc | None = None) -> JsonClient:
        """A JsonClient logged on as ``who`` (closed by ``async_test`` at the end)."""
        gateway = gateway or self.gateway
        client = await JsonClient.connect("127.0.0.1", gateway.port, tls=gateway.tls)
        _open_clients.append(client)
        reply = await asyncio.wait_for(client.logon(who.key, who.secret), REPLY_TIMEOUT)
        assert reply == {"account": who.account, "name": who.name, "permission": who.permission}
        return client

    async def fund(self, who: Trader, **amounts: str) -> None:
        """Deposit decimal-string amounts through an admin session of the main gateway."""
        admin = await self.session(self.admin)
        for asset, amount in amounts.items():
            await admin.request(
                "deposit", account=who.account, asset=asset, amount=amount, timeout=REPLY_TIMEOUT
            )

    async def funded(self, permission: str = "trade", **amounts: str) -> Trader:
        who = self.trader(permission)
        await self.fund(who, **amounts)
        return who

    def close(self) -> None:
        for gw in self.gateways.values():
            with contextlib.suppress(ProcError):
                if gw.running:
                    gw.stop()
            gw.cleanup()
        with contextlib.suppress(ProcError):
            if self.engine.running:
                self.engine.stop()
        self.engine.cleanup()
        self.store.close()

    def logs(self) -> str:
        return "\n".join([self.engine.logs(), *(gw.logs() for gw in self.gateways.values())])


def make_stack(workdir: Path, **json_gateway: Any) -> Stack:
    """A started engine and one gateway named ``gateway`` (``[json_gateway]`` keys replaced)."""
    return asyncio.run(amake_stack(workdir, **json_gateway))


async def amake_stack(workdir: Path, **json_gateway: Any) -> Stack:
    """``make_stack`` from async code."""
    config = write_exchange_config(workdir / "exchange.toml", json_gateway=json_gateway)
    stack = Stack(workdir, config)
    try:
        await stack.astart_engine()
        await stack.aadd_gateway("gateway")
    except BaseException:
        stack.close()
        print(stack.logs())
        raise
    return stack


# ------------------------------------------------------------------------------ a bare line


class LineSession:
    """A raw TCP session to the gateway: send any bytes, read one JSON line at a time.

    Unsolicited ``event`` lines are set aside in ``events``; ``recv`` returns the next reply.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.events: list[dict] = []
        self.ids = itertools.count(1)

    @classmethod
    async def open(cls, port: int, rcvbuf: int = 0) -> LineSession:
        sock = None
        if rcvbuf:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 24)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        session = cls(reader, writer)
        _open_clients.append(session)
        return session

    def send(self, line: bytes | dict) -> None:
        if isinstance(line, dict):
            line = msgspec.json.encode(line)
        self.writer.write(line if line.endswith(b"\n") else line + b"\n")

    async def line(self, timeout: float = REPLY_TIMEOUT) -> dict | None:
        """The next line of any kind, decoded; None at end of stream."""
        try:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
        except ConnectionError:
            return None
        if not raw:
            return None
        assert raw.endswith(b"\n"), f"a partial line before the end of the stream: {raw!r}"
        return msgspec.json.decode(raw)

    async def recv(self, timeout: float = REPLY_TIMEOUT) -> dict:
        """The next reply (events set aside); fails if none comes within ``timeout``."""
        while True:
            try:
                msg = await self.line(timeout)
            except TimeoutError:
                raise AssertionError(f"no reply in {timeout}s: the request was lost") from None
            assert msg is not None, "the gateway closed the connection"
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    async def call(self, line: bytes | dict, timeout: float = REPLY_TIMEOUT) -> dict:
        self.send(line)
        return await self.recv(timeout)

    async def request(self, op: str, **fields: Any) -> dict:
        rid = next(self.ids)
        reply = await self.call({"id": rid, "op": op, **fields})
        assert reply.get("id") == rid, (rid, reply)
        return reply

    async def logon(self, who: Trader) -> dict:
        ch = await self.request("challenge", api_key=who.key)
        assert ch["ok"], ch
        r = ch["result"]
        proof = make_proof(who.secret, base64.b64decode(r["salt"]), r["iterations"],
                           base64.b64decode(r["nonce"]))  # fmt: skip
        reply = await self.request("logon", api_key=who.key, proof=base64.b64encode(proof).decode())
        assert reply["ok"], reply
        return reply

    async def rest(self, timeout: float = REPLY_TIMEOUT) -> list[dict]:
        """Every line until the gateway closes the connection."""
        out = []
        while (msg := await self.line(timeout)) is not None:
            out.append(msg)
        return out

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(name="stack", scope="module")
def stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A started engine and a gateway with the shipped limits, shared by one test module."""
    stack = make_stack(tmp_path_factory.mktemp("stack"))
    yield stack
    stack.close()
    print(stack.logs())


@pytest.fixture(name="own_stack")
def own_stack_fixture(tmp_path: Path) -> Iterator[Callable[..., Awaitable[Stack]]]:
    """An async factory of private stacks (engine + gateway) for tests that stop processes:
    ``stack = await own_stack(max_in_flight=8)``. All are stopped at teardown."""
    made: list[Stack] = []

    async def make(**json_gateway: Any) -> Stack:
        workdir = tmp_path / f"stack{len(made)}"
        stack = await amake_stack(workdir, **json_gateway)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.close()
        print(stack.logs())


@pytest.fixture(name="market")
def market_fixture(stack: Stack) -> str:
    """A market of the shared stack that no other test trades in."""
    return stack.new_market()

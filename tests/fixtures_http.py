"""Run the real engine and the real REST gateway (``python -m gateways.http``) for tests.

``HttpStack`` is an engine, a gateway on free loopback ports (REST and websocket streams), an
account store with a vault, and helpers: ``trader()`` makes an account with a sealed API key,
``fund()`` deposits through the engine, ``engine_request()`` asks it directly,
``v1()`` / ``v3()`` send signed requests exactly as
docs/rest.md describes them (written here from the document, not with the gateway's code), and
``ccxt()`` gives a ``ccxt.binance`` pointed at the gateway.

Each test that trades takes a market of its own (``new_market()``: ``Q00-USD`` ... with a base
asset of its own, so Binance symbols ``Q00USD`` stay distinct for ccxt).

    from tests.fixtures_http import http_stack_fixture  # noqa: F401
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from engine.client import EngineClient
from gateways.accounts import AccountStore, Permission
from gateways.vault import Vault
from protocol import config
from protocol.messages import Deposit, LedgerReply
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

POOL = [f"Q{i:02d}" for i in range(48)]
REPLY_TIMEOUT = 20.0


def write_http_config(path: Path, **sections: dict[str, Any]) -> Path:
    """The shipped config (keys replaced per section) plus markets ``Qnn-USD`` with their own
    base assets ``Qnn``, ticks and lots as BTC-USD."""
    write_exchange_toml(path, [], **sections)
    extra = []
    for asset in POOL:
        extra += [
            f"\n[assets.{asset}]\ndecimals = 8\n",
            f'[markets.{asset}-USD]\nbase = "{asset}"\nquote = "USD"\ntick = "0.01"\n'
            'lot = "0.0001"\nmin_qty = "0.0001"\nmax_qty = "1000"\nmax_price = "10000000"\n'
            'maker_fee = "0.001"\ntaker_fee = "0.002"\n',
        ]
    with path.open("a") as f:
        f.write("".join(extra))
    return path


class HttpGatewayProc(Proc):
    def __init__(self, workdir: Path, *, config: Path, engine: EngineProc, accounts: Path,
                 vault: Path, identity: str, name: str = "http") -> None:  # fmt: skip
        super().__init__("gateways.http", workdir, name)
        self.config = config
        self.engine = engine
        self.accounts = accounts
        self.vault = vault
        self.identity = identity
        self.port = 0
        self.ws_port = 0
        self.extra: list[str] = ["--no-recorder"]  # no recorder runs in these tests
        self.tls: ssl.SSLContext | None = None  # client context, for a gateway serving HTTPS

    def args(self) -> list[str]:
        return [
            "--config", str(self.config), "--port", str(self.port),
            "--ws-port", str(self.ws_port), "--commands", self.engine.commands,
            "--market-data", self.engine.market_data, "--accounts", str(self.accounts),
            "--vault", str(self.vault), "--identity", self.identity, *self.extra,
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def astart(self, timeout: float = START_TIMEOUT) -> HttpGatewayProc:
        for attempt in range(BIND_RETRIES):
            self.port, self.ws_port = free_port(), free_port()
            self.spawn()

            async def ready() -> bool:
                if not self.running:
                    return True
                try:
                    async with (
                        aiohttp.ClientSession() as s,
                        s.get(f"{self.url}/health", ssl=self.tls or True) as r,
                    ):
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            try:
                await eventually_async(ready, timeout, 0.05, "http gateway healthy")
            except AssertionError:
                self.kill()
                raise ProcError(f"http gateway not ready in {timeout}s\n{self.log()}") from None
            if self.running:
                return self
            if "address already in use" in self.log().lower() and attempt + 1 < BIND_RETRIES:
                continue
            break
        raise ProcError(f"http gateway exited before serving\n{self.log()}")


@dataclass
class Trader:
    account: int
    name: str
    key: str
    secret: str
    permission: str


class HttpStack:
    def __init__(self, workdir: Path, **sections: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config = write_http_config(workdir / "exchange.toml", **sections)
        self.ex = config.load(self.config)
        self.store = AccountStore(workdir / "accounts.db")
        self.vault_path = workdir / "vault.key"
        self.vault = Vault.create(self.vault_path)
        self.engine = EngineProc(workdir / "engine", config=self.config)
        self.gateway: HttpGatewayProc | None = None
        self._names = itertools.count(1)
        self._clients = itertools.count(1)
        self._markets = iter(POOL)

    async def astart(self, tls: ssl.SSLContext | None = None) -> None:
        """Start the engine and the gateway (``tls``: the client context for a gateway whose
        config serves HTTPS)."""
        await self.engine.astart()
        config.use_engine(self.ex, self.engine.commands, self.engine.market_data)
        self.gateway = HttpGatewayProc(
            self.workdir / "http", config=self.config, engine=self.engine,
            accounts=self.workdir / "accounts.db", vault=self.vault_path,
            identity=f"http-test-{os.getpid()}",
        )  # fmt: skip
        self.gateway.tls = tls
        await self.gateway.astart()

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url

    def new_market(self) -> str:
        asset = next(self._markets, None)
        if asset is None:
            raise AssertionError("the Q-market pool is used up: raise its size")
        return f"{asset}-USD"

    def trader(self, permission: str = "trade") -> Trader:
        name = f"http-{next(self._names)}"
        account = self.store.create_account(name)
        key, secret = self.store.issue_key(account, Permission(permission), vault=self.vault)
        return Trader(account, name, key, secret, permission)

    async def engine_requests(self, *cmds: Any) -> list[Any]:
        """The engine's own answers (a client of the test's own, opened and closed here)."""
        # A routing id of its own each time: the engine may still hold the last one's pipe.
        ident = f"http-test-admin-{os.getpid()}-{next(self._clients)}"
        client = EngineClient.for_exchange(self.ex, ident)
        await client.start(wait=REPLY_TIMEOUT)
        try:
            return [await client.request(c, timeout=REPLY_TIMEOUT) for c in cmds]
        finally:
            await client.close()

    async def engine_request(self, cmd: Any) -> Any:
        return (await self.engine_requests(cmd))[0]

    async def fund(self, who: Trader, **amounts: str) -> None:
        cmds = [
            Deposit(0, who.account, a, self.ex.amount_to_units(a, v)) for a, v in amounts.items()
        ]
        for reply in await self.engine_requests(*cmds):
            assert isinstance(reply, LedgerReply), reply

    async def funded(self, permission: str = "trade", **amounts: str) -> Trader:
        who = self.trader(permission)
        await self.fund(who, **amounts)
        return who

    def close(self) -> None:
        for p in (self.gateway, self.engine):
            if p is None:
                continue
            with contextlib.suppress(ProcError):
                if p.running:
                    p.stop()
            p.cleanup()
        self.store.close()

    def logs(self) -> str:
        return "\n".join(p.logs() for p in (self.engine, self.gateway) if p is not None)


# ------------------------------------------------------------------ signed requests


_last_ms = 0


def fresh_ms() -> int:
    """A request timestamp in ms, later than the one before it: two identical requests in one
    millisecond would carry one signature, which the server rightly refuses as a replay."""
    global _last_ms
    now = time.time_ns() // 1_000_000
    while now <= _last_ms:  # never ahead of the clock: wait for the next millisecond
        time.sleep(0.0002)
        now = time.time_ns() // 1_000_000
    _last_ms = now
    return now


def v1_headers(who: Trader, method: str, path: str, body: bytes, ts: int | None = None,
               ) -> dict[str, str]:  # fmt: skip
    """docs/rest.md: X-API-SIGNATURE = hex HMAC-SHA256(secret, timestamp+METHOD+path+body)."""
    ts = ts if ts is not None else fresh_ms()
    msg = f"{ts}{method}{path}".encode() + body
    sig = hmac.new(who.secret.encode(), msg, hashlib.sha256).hexdigest()
    return {"X-API-KEY": who.key, "X-API-TIMESTAMP": str(ts), "X-API-SIGNATURE": sig}


async def v1(session: aiohttp.ClientSession, base: str, who: Trader | None, method: str,
             path: str, body: Any = None, query: dict | None = None,
             ) -> tuple[int, Any]:  # fmt: skip
    """A /api/v1 request (signed when ``who`` is given): (status, decoded JSON)."""
    if query:
        path = f"{path}?{urlencode(query)}"
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if data else {}
    if who is not None:
        headers |= v1_headers(who, method, path, data)
    async with session.request(method, base + path, data=data or None, headers=headers) as r:
        text = await r.read()
        return r.status, json.loads(text) if text else None


async def v3(session: aiohttp.ClientSession, base: str, who: Trader | None, method: str,
             path: str, **params: Any) -> tuple[int, Any]:  # fmt: skip
    """A Binance-style request: signed (timestamp, signature last) when ``who`` is given;
    POST parameters in a form body, others in the query string."""
    headers = {}
    query = urlencode(params)
    if who is not None:
        query = urlencode({**params, "timestamp": fresh_ms()})
        sig = hmac.new(who.secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        query += f"&signature={sig}"
        headers["X-MBX-APIKEY"] = who.key
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        kw: dict[str, Any] = {"data": query.encode()}
        url = base + path
    else:
        kw = {}
        url = base + path + (f"?{query}" if query else "")
    async with session.request(method, url, headers=headers, **kw) as r:
        text = await r.read()
        return r.status, json.loads(text) if text else None


def ccxt_binance(stack: HttpStack, who: Trader | None = None, pro: bool = False) -> Any:
    """``ccxt.binance`` (or ``ccxt.pro.binance``) with every URL pointed at the gateway, as
    docs/rest.md tells a user to configure it."""
    import ccxt.async_support as ccxt_async
    import ccxt.pro as ccxt_pro

    assert stack.gateway is not None
    base = stack.url
    api = {k: f"{base}/api/v3" for k in ("public", "private", "v1", "v3")}
    for k in ("sapi", "sapiV2", "sapiV3", "sapiV4", "fapiPublic", "fapiPrivate", "dapiPublic",
              "dapiPrivate", "eapiPublic", "eapiPrivate", "papi"):  # fmt: skip
        api[k] = f"{base}/sapi/v1"
    ws_url = f"ws://127.0.0.1:{stack.gateway.ws_port}/ws"
    api["ws"] = {"spot": ws_url}  # type: ignore[assignment]
    cls = ccxt_pro.binance if pro else ccxt_async.binance
    opts: dict[str, Any] = {
        "urls": {"api": api},
        "options": {
            "fetchMarkets": {"types": ["spot"]},
            "fetchCurrencies": False,
            "fetchMargins": False,
            "fetchOpenOrders": {"warnWithoutSymbol": False},
        },
        "timeout": int(REPLY_TIMEOUT * 1000),
    }
    if who is not None:
        opts |= {"apiKey": who.key, "secret": who.secret}
    return cls(opts)


def running_stack(workdir: Path, **sections: dict[str, Any]) -> Iterator[HttpStack]:
    """A started HttpStack for a fixture to yield (its logs printed if it fails to start),
    closed afterwards: ``yield from running_stack(path, http_gateway={...})``."""
    stack = HttpStack(workdir, **sections)
    try:
        asyncio.run(stack.astart())
    except BaseException:
        print(stack.logs())
        stack.close()
        raise
    yield stack
    stack.close()


@pytest.fixture(name="http_stack", scope="module")
def http_stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpStack]:
    yield from running_stack(tmp_path_factory.mktemp("http"))

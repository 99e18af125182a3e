"""Run the real engine and the real FIX 4.4 gateway on loopback for integration tests.

``FixGatewayProc`` is ``python -m gateways.fix`` on a free public port with its own quickfix
data directory, started against a running ``EngineProc`` (tests/procs.py) and a temporary
account store; it counts as started once its log says it serves and the engine is reachable
and its public port accepts a connection. ``FixStack`` bundles the engine, the gateway, the
account store and helpers that make funded traders and logged-on ``FixClient`` sessions (the
shipped quickfix initiator, gateways/fix/client.py). ``RawFix`` is a bare TCP FIX session
written out by hand, for hostile bytes that a quickfix initiator would never send.

Sessions: quickfix acceptors know their sessions when they start (a new one in the store is
picked up by the gateway's poll and served by a new acceptor generation), so the stack
registers a pool of traders before the gateway starts. Each pooled trader is an account with a
trading API key and two SenderCompIDs: ``<name>A`` and ``<name>B``, the second with
cancel-on-disconnect. Tests that must see a session appear while the gateway runs make their
own with ``FixStack.new_trader``.

Isolation: the module-scoped stack is shared by many tests, so every test that trades takes a
market of its own (``new_market``: the BTC-USD clones ``P00-USD`` ... that
tests/fixtures_gateway.py's config adds) and traders of its own; nobody sees another test's
orders.

Clean-up: a logged-on ``FixClient.stop()`` takes about two seconds (quickfix sends Logout on
its next one-second timer tick, then polls for the answer once a second), so clients that are
still logged on at the end of a test are stopped together, in threads, when the module's stack
closes; clients that did not log on are stopped at the end of their test.

    from tests.fixtures_fix import fix_stack_fixture, market_fixture  # noqa: F401
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.client import EngineClient
from gateways.accounts import AccountStore, Permission
from gateways.fix.acceptor import parse
from gateways.fix.client import FixClient, FixMsg
from gateways.fix.gateway import utc
from protocol.config import load
from protocol.messages import Balances, BalancesRequest, Deposit, LedgerReply
from tests.fixtures_gateway import POOL, write_exchange_config
from tests.procs import BIND_RETRIES, START_TIMEOUT, EngineProc, Proc, ProcError, free_port

REPLY_TIMEOUT = 20.0  # generous: a loaded 2-core box; a hang still fails, just later
POOL_TRADERS = 100
POLL_SECONDS = 0.5  # [fix_gateway] poll_seconds of the test config: new sessions appear fast
TARGET = "EXCHANGE"  # the gateway's SenderCompID (shipped config)
SOH = "\x01"


# ------------------------------------------------------------------------------ process


class FixGatewayProc(Proc):
    """``python -m gateways.fix`` on a free loopback port, against a running engine."""

    def __init__(
        self,
        workdir: Path,
        *,
        config: Path,
        engine: EngineProc,
        accounts: Path,
        identity: str,
        name: str = "fixgw",
    ) -> None:
        super().__init__("gateways.fix", workdir, name)
        self.config = Path(config)
        self.engine = engine
        self.accounts = Path(accounts)
        self.identity = identity
        self.data_dir = self.workdir / "data"
        self.port = 0

    def args(self) -> list[str]:
        return [
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--accounts",
            str(self.accounts),
            "--commands",
            self.engine.commands,
            "--market-data",
            self.engine.market_data,
            "--identity",
            self.identity,
        ]

    def start(self, timeout: float = START_TIMEOUT) -> FixGatewayProc:
        for attempt in range(BIND_RETRIES):
            self.port = free_port()
            self.spawn()
            if self._await_ready(timeout):
                return self
            if "address already in use" in self.log().lower() and attempt + 1 < BIND_RETRIES:
                continue
            break
        raise ProcError(f"FIX gateway exited with {self.returncode} before serving\n{self.log()}")

    def _await_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                self.returncode = self.popen.returncode  # type: ignore[union-attr]
                return False
            text = self.log()
            if "FIX 4.4 gateway on" in text and " available" in text:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), timeout=2),
                ):
                    return True
            time.sleep(0.05)
        self.kill()
        raise ProcError(f"FIX gateway not ready in {timeout}s\n{self.log()}")


# -------------------------------------------------------------------------------- people


@dataclass
class FixTrader:
    account: int
    name: str
    key: str
    secret: str
    comps: list[str]  # comps[0]: plain session; comps[1]: cancel-on-disconnect (pool traders)


class FixStack:
    """One engine, one FIX gateway on it, the account store they share, and FIX clients."""

    def __init__(self, workdir: Path, prefix: str = "T", **fix_gateway: object) -> None:
        """``fix_gateway``: [fix_gateway] keys of the config to replace (e.g. rate limits).
        ``prefix`` starts every trader name and CompID: quickfix knows sessions by SessionID
        process-wide, so two stacks in one test process must not share a CompID."""
        self.workdir = workdir
        self.prefix = prefix
        self.config = write_exchange_config(
            workdir / "exchange.toml", fix_gateway={"poll_seconds": POLL_SECONDS, **fix_gateway}
        )
        self.exchange = load(self.config)
        self.accounts_db = workdir / "accounts.db"
        self.store = AccountStore(self.accounts_db)
        self.engine = EngineProc(workdir / "engine", config=self.config)
        self.gateway = FixGatewayProc(
            workdir / "fixgw",
            config=self.config,
            engine=self.engine,
            accounts=self.accounts_db,
            identity=f"fix-test-{os.getpid()}-{id(self):x}",
        )
        self.pool: list[FixTrader] = []
        self.clients: list[FixClient] = []
        self._markets = iter(POOL)
        self._names = itertools.count(1)
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------- lifecycle
    def start(self, traders: int = POOL_TRADERS) -> FixStack:
        """Register the trader pool, then start the engine and the gateway."""
        for _ in range(traders):
            self.pool.append(self._register(cancel_on_disconnect_b=True))
        self.engine.start()
        self.gateway.start()
        return self

    def close(self) -> None:
        stop_clients(self.clients)
        self.clients.clear()
        for proc in (self.gateway, self.engine):
            with contextlib.suppress(ProcError):
                if proc.running:
                    proc.stop()
            proc.cleanup()
        self.store.close()

    def logs(self) -> str:
        return "\n".join([self.engine.logs(), self.gateway.logs()])

    # ---------------------------------------------------------------------- people
    def _register(self, cancel_on_disconnect_b: bool) -> FixTrader:
        name = f"{self.prefix}{next(self._names):03d}"
        account = self.store.create_account(name)
        key, secret = self.store.issue_key(account, Permission.TRADE)
        comps = [f"{name}A", f"{name}B"]
        self.store.add_fix_session(comps[0], account, False)
        self.store.add_fix_session(comps[1], account, cancel_on_disconnect_b)
        return FixTrader(account, name, key, secret, comps)

    def trader(self) -> FixTrader:
        """A pooled trader (its sessions known to the gateway) that no other test uses."""
        if not self.pool:
            raise AssertionError(f"all {POOL_TRADERS} pooled traders are taken: raise it")
        return self.pool.pop(0)

    def new_trader(self, cancel_on_disconnect_b: bool = False) -> FixTrader:
        """A trader registered now, with the gateway running (its poll picks the sessions up)."""
        return self._register(cancel_on_disconnect_b)

    def new_market(self) -> str:
        market = next(self._markets, None)
        if market is None:
            raise AssertionError("all pool markets are taken: raise the pool size")
        return market

    # --------------------------------------------------------------------- engine
    def _engine_call(self, cmds: list[Any]) -> list[Any]:
        async def go() -> list[Any]:
            ident = f"fix-test-admin-{os.getpid()}-{next(self._ids)}".encode()
            client = EngineClient(self.engine.commands, ident)
            try:
                await client.start(wait=REPLY_TIMEOUT)
                return [await client.request(c, timeout=REPLY_TIMEOUT) for c in cmds]
            finally:
                await client.close()

        return asyncio.run(go())

    def fund(self, who: FixTrader, **amounts: str) -> None:
        """Deposit decimal amounts (``USD="1000.50"``) through the engine."""
        cmds = [
            Deposit(0, who.account, asset, self.units(asset, amount))
            for asset, amount in amounts.items()
        ]
        for reply in self._engine_call(cmds):
            assert isinstance(reply, LedgerReply), reply

    def units(self, asset: str, amount: str) -> int:
        """A decimal amount in minor units, converted here with Decimal."""
        value = Decimal(amount).scaleb(self.exchange.assets[asset])
        assert value == value.to_integral_value(), f"{amount} {asset} is finer than its unit"
        return int(value)

    def balances(self, who: FixTrader) -> dict[str, tuple[Decimal, Decimal]]:
        """Asset -> (available, locked) as Decimals, straight from the engine (assets with
        nothing in them left out)."""
        (reply,) = self._engine_call([BalancesRequest(0, who.account)])
        assert isinstance(reply, Balances), reply
        out = {}
        for b in reply.balances:
            if b.available or b.locked:
                scale = Decimal(1).scaleb(-self.exchange.assets[b.asset])
                out[b.asset] = (b.available * scale, b.locked * scale)
        return out

    # -------------------------------------------------------------------- clients
    def client(
        self,
        comp: str,
        key: str | None,
        secret: str | None,
        *,
        reset: bool = True,
        data_dir: Path | None = None,
    ) -> FixClient:
        """A started (not necessarily logged-on) FixClient, stopped when the stack closes."""
        c = FixClient(
            comp,
            key,
            secret,
            self.gateway.port,
            data_dir or self.workdir / "clients" / f"{comp}-{next(self._ids)}",
            target=TARGET,
            reset=reset,
        )
        self.clients.append(c)
        c.start()
        return c

    def session(self, who: FixTrader, which: int = 0, **kw: Any) -> FixClient:
        """A logged-on FixClient for ``who``'s ``which``-th SenderCompID."""
        c = self.client(who.comps[which], who.key, who.secret, **kw)
        c.wait_logon(REPLY_TIMEOUT)
        return c


def stop_clients(clients: list[FixClient]) -> None:
    """``FixClient.stop()`` for each, all at once (each logged-on stop waits ~2 s)."""
    threads = [threading.Thread(target=c.stop, daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


# ------------------------------------------------------------------------ a bare session


def checksum(data: bytes) -> bytes:
    return b"%03d" % (sum(data) % 256)


def frame(
    msg_type: str, sender: str, target: str, seq: int, fields: list[tuple[int, str]]
) -> bytes:
    """One FIX 4.4 message written out by hand: BodyLength and CheckSum computed here."""
    body = f"35={msg_type}{SOH}49={sender}{SOH}56={target}{SOH}34={seq}{SOH}"
    body += f"52={utc(time.time_ns())}{SOH}"
    body += "".join(f"{t}={v}{SOH}" for t, v in fields)
    head = f"8=FIX.4.4{SOH}9={len(body.encode())}{SOH}".encode()
    msg = head + body.encode()
    return msg + b"10=" + checksum(msg) + b"\x01"


MESSAGE = re.compile(rb"8=FIX\.4\.4\x019=(\d+)\x01")


class RawFix:
    """A FIX session over a plain socket: any bytes out, whole messages in."""

    def __init__(
        self,
        port: int,
        comp: str = "",
        target: str = TARGET,
        rcvbuf: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect
        sock.settimeout(REPLY_TIMEOUT)
        sock.connect(("127.0.0.1", port))
        self.sock = tls.wrap_socket(sock, server_hostname="127.0.0.1") if tls else sock
        self.comp = comp
        self.target = target
        self.seq = 1
        self.buf = b""
        self.eof = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, msg_type: str, fields: list[tuple[int, str]]) -> int:
        """Send a well-formed message with the next MsgSeqNum; returns that number."""
        seq = self.seq
        self.send_bytes(frame(msg_type, self.comp, self.target, seq, fields))
        self.seq += 1
        return seq

    def logon(self, key: str, secret: str, heartbeat: int = 30) -> FixMsg:
        self.send("A", [(98, "0"), (108, str(heartbeat)), (141, "Y"), (553, key), (554, secret)])
        return self.expect(lambda m: m.get(35) == "A")

    def _next(self, deadline: float) -> FixMsg | None:
        """The next whole message, or None at the end of the stream."""
        while True:
            m = MESSAGE.search(self.buf)
            if m:
                end = m.end() + int(m.group(1)) + 7  # body + "10=nnn\x01"
                if len(self.buf) >= end:
                    raw, self.buf = self.buf[m.start() : end], self.buf[end:]
                    return FixMsg(parse(raw.decode(errors="replace")))
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionError:
                chunk = b""
            except TimeoutError:
                raise TimeoutError from None
            if not chunk:
                self.eof = True
            self.buf += chunk

    def expect(self, match: Callable[[FixMsg], bool], timeout: float = REPLY_TIMEOUT) -> FixMsg:
        """The next message that matches (others are dropped); fails at EOF or timeout."""
        deadline = time.monotonic() + timeout
        seen = []
        try:
            while (msg := self._next(deadline)) is not None:
                if match(msg):
                    return msg
                seen.append(msg)
        except TimeoutError:
            raise AssertionError(f"no matching message in {timeout}s; got {seen[-5:]}") from None
        raise AssertionError(f"connection closed before a matching message; got {seen[-5:]}")

    def closed_by_peer(self, timeout: float = REPLY_TIMEOUT) -> list[FixMsg]:
        """Read until the peer closes; returns what came before. Fails if it stays open."""
        deadline = time.monotonic() + timeout
        got = []
        try:
            while (msg := self._next(deadline)) is not None:
                got.append(msg)
        except TimeoutError:
            raise AssertionError(f"connection still open after {timeout}s; got {got}") from None
        return got


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(name="fix_stack", scope="module")
def fix_stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FixStack]:
    """A started engine and FIX gateway with a pool of registered traders, for one module."""
    stack = FixStack(tmp_path_factory.mktemp("fixstack"))
    try:
        stack.start()
    except BaseException:
        stack.close()
        print(stack.logs())
        raise
    yield stack
    stack.close()
    print(stack.logs())


_own_stacks = itertools.count(1)


@pytest.fixture(name="own_fix_stack")
def own_fix_stack_fixture(tmp_path: Path) -> Iterator[Callable[..., FixStack]]:
    """A factory of private stacks, for tests that may leave their gateway unusable: its
    gateway is killed at teardown (a wedged one would not answer SIGTERM)."""
    made: list[FixStack] = []

    def make(traders: int = 4, **fix_gateway: object) -> FixStack:
        prefix = f"OWN{next(_own_stacks)}T"  # CompIDs apart from the module stack's
        stack = FixStack(tmp_path / f"own{len(made)}", prefix, **fix_gateway)
        made.append(stack)
        stack.start(traders)
        return stack

    yield make
    for stack in made:
        stack.gateway.cleanup()
        stack.close()
        print(stack.logs())


@pytest.fixture(name="fix")
def fix_fixture(fix_stack: FixStack) -> Iterator[FixStack]:
    """The module's stack; clients a test started that never logged on are stopped after it
    (they would otherwise retry every second), the others when the module ends."""
    before = len(fix_stack.clients)
    yield fix_stack
    mine = fix_stack.clients[before:]
    idle = [c for c in mine if not c.logged_on.is_set()]
    stop_clients(idle)
    for c in idle:
        fix_stack.clients.remove(c)


@pytest.fixture(name="market")
def market_fixture(fix_stack: FixStack) -> str:
    """A market of the shared stack that no other test trades in."""
    return fix_stack.new_market()

"""ZeroMQ CURVE on the engine's two ports (docs/design.md rule 5), with the real engine process.

With ``[engine] curve_keys`` set, only clients whose public key is in ``DIR/clients`` get in,
on the command port and on the market-data port; everyone else (no keys, a key that was never
admitted, the wrong engine key) gets nothing in and nothing out, and the engine's state does
not move. Only with CURVE on may the engine bind a non-loopback address.
"""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import zmq

from engine import curve
from engine.client import EngineClient, EngineUnavailable
from feed.subscriber import Feed
from protocol import config
from protocol.messages import (
    Balances,
    BalancesRequest,
    Deposit,
    LedgerReply,
    NewOrder,
)
from tests.fixtures_engine import engine_procs_fixture  # noqa: F401
from tests.procs import REPO, EngineProc, endpoint, eventually_async, free_port, write_config

EX = config.load()
SPEC = EX.markets["BTC-USD"]
PRICE = 3_000_000


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A key directory: the engine, two admitted clients and an outsider never admitted."""
    d = tmp_path / "keys"
    curve.generate(d, ["json-gw-1", "tests", "outsider"])
    (d / "clients" / "outsider.key").unlink()
    return d


def curve_engine(engine_procs, tmp_path: Path, keys: Path, **kw) -> EngineProc:
    cfg = write_config(tmp_path / "curve.toml", curve_keys=str(keys))
    return engine_procs(config=cfg, ready_keys=curve.client_keys(keys, "tests"), **kw)


async def _refused(proc: EngineProc, keys: curve.ClientKeys | None, name: bytes) -> None:
    client = EngineClient(proc.commands, name, curve=keys)
    try:
        with pytest.raises(EngineUnavailable):
            await client.start(wait=2)
    finally:
        await client.close()


def test_only_admitted_client_keys_reach_the_engine(engine_procs, tmp_path, keys) -> None:
    proc = curve_engine(engine_procs, tmp_path, keys).start()
    assert "CURVE on" in proc.log() and "admitted clients: json-gw-1, tests" in proc.log()
    other = tmp_path / "other-keys"
    curve.generate(other, ["json-gw-1"])

    async def go() -> None:
        # no keys, a key pair the engine never admitted, the right pair with a forged engine key
        await _refused(proc, None, b"plain")
        await _refused(proc, curve.client_keys(keys, "outsider"), b"outsider")
        good = curve.client_keys(keys, "json-gw-1")
        forged = curve.ClientKeys(curve.client_keys(other, "json-gw-1").server, *good[1:])
        await _refused(proc, forged, b"forged")
        await eventually_async(lambda: "CURVE: " in proc.log() and "refused so far" in proc.log())

        # a raw, unencrypted DEALER tries to deposit: nothing reaches the engine
        ctx = zmq.Context.instance()
        raw = ctx.socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(proc.commands)
        raw.send(msgspec.msgpack.encode([Deposit(1, 7, "USD", 10**9)]))

        client = EngineClient(proc.commands, b"json-gw-1", curve=good)
        await client.start(wait=10)
        try:
            reply = await client.request(Deposit(0, 8, "USD", 5 * 10**6))
            assert isinstance(reply, LedgerReply) and reply.available == 5 * 10**6
            bal = await client.request(BalancesRequest(0, 7))
            assert isinstance(bal, Balances)
            assert all(b.available == 0 for b in bal.balances), bal
            assert raw.poll(0) == 0  # and no reply came back to it either
        finally:
            await client.close()
            raw.close(0)

    asyncio.run(go())


def test_market_data_is_readable_only_with_an_admitted_key(engine_procs, tmp_path, keys) -> None:
    proc = curve_engine(engine_procs, tmp_path, keys).start()
    tests_keys = curve.client_keys(keys, "tests")

    async def go() -> None:
        trades: list = []
        feed = Feed(
            proc.market_data,
            proc.commands,
            ["BTC-USD"],
            on_trades=lambda m, ts: trades.extend(ts),
            curve=tests_keys,
        )
        ctx = zmq.Context.instance()
        plain = ctx.socket(zmq.SUB)
        plain.setsockopt(zmq.LINGER, 0)
        plain.setsockopt(zmq.SUBSCRIBE, b"")
        plain.connect(proc.market_data)
        await feed.start()
        client = EngineClient(
            proc.commands, b"json-gw-1", curve=curve.client_keys(keys, "json-gw-1")
        )
        await client.start(wait=10)
        try:
            for acct in (1, 2):
                for asset in ("USD", "BTC"):
                    await client.request(Deposit(0, acct, asset, 10**15))
            await client.request(NewOrder(0, 1, "BTC-USD", 2, 1, 1, PRICE, 3 * SPEC.min_qty))

            # the feed may connect after the first trade: keep trading until it has seen one
            async def traded() -> bool:
                await client.request(NewOrder(0, 2, "BTC-USD", 1, 1, 2, PRICE, SPEC.min_qty))
                return bool(trades)

            await eventually_async(traded, timeout=20)
            assert trades[0].price == PRICE
            assert plain.poll(0) == 0  # the unencrypted subscriber got nothing of it
        finally:
            await client.close()
            await feed.close()
            plain.close(0)

    asyncio.run(go())


def test_with_curve_the_engine_may_listen_beyond_loopback(engine_procs, tmp_path, keys) -> None:
    proc = curve_engine(engine_procs, tmp_path, keys)
    port = free_port()
    proc.commands = f"tcp://0.0.0.0:{port}"
    proc.market_data = endpoint(free_port())
    proc.start()  # it answers the readiness Ping, keyed, through 0.0.0.0

    async def go() -> None:
        await _refused(proc, None, b"plain")  # still no way in without a key
        client = EngineClient(
            f"tcp://127.0.0.1:{port}", b"json-gw-1", curve=curve.client_keys(keys, "json-gw-1")
        )
        await client.start(wait=10)
        try:
            reply = await client.request(Deposit(0, 3, "BTC", 42))
            assert isinstance(reply, LedgerReply) and reply.available == 42
        finally:
            await client.close()

    asyncio.run(go())


def test_a_missing_engine_key_refuses_to_start(engine_procs, tmp_path, keys) -> None:
    (keys / "engine.key_secret").unlink()
    proc = curve_engine(engine_procs, tmp_path, keys)
    assert proc.start_expecting_exit() == 2
    assert "refusing to start: cannot read CURVE key" in proc.log(), proc.log()


def test_keys_command_writes_private_secrets_and_never_replaces_a_key(tmp_path) -> None:
    d = tmp_path / "k"

    def keys_cli(*names: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "engine", "keys", str(d), *names],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    out = keys_cli("json-gw-1", "recorder")
    for rel in ("engine.key", "engine.key_secret", "json-gw-1.key_secret", "clients/recorder.key"):
        assert f"wrote {d / rel}" in out, out
    for secret in d.glob("*.key_secret"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    before = (d / "engine.key_secret").read_bytes(), (d / "json-gw-1.key_secret").read_bytes()
    assert "nothing new" in keys_cli("json-gw-1")
    assert (
        (d / "engine.key_secret").read_bytes(),
        (d / "json-gw-1.key_secret").read_bytes(),
    ) == before
    assert "clients/bridge.key" in keys_cli("bridge")
    assert curve.client_keys(d, "bridge").server == curve.server_keys(d)[0]
    with pytest.raises(subprocess.CalledProcessError):
        keys_cli("../escape")


def test_components_pick_their_keys_from_the_config(tmp_path, keys) -> None:
    ex = config.loads(write_config(tmp_path / "c.toml", curve_keys=str(keys)).read_text())
    client = EngineClient.for_exchange(ex, "json-gw-1")
    assert client.curve == curve.client_keys(keys, "json-gw-1")
    assert client.identity == b"json-gw-1"
    assert Feed.for_exchange(ex, name="tests").curve == curve.client_keys(keys, "tests")
    assert EngineClient.for_exchange(EX, "json-gw-1").curve is None  # CURVE off by default
    with pytest.raises(curve.CurveKeyError):
        EngineClient.for_exchange(ex, "nobody")  # no key pair for that name: a clear error

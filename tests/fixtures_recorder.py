"""Fixtures and helpers for the recorder tests: the recorder process, hand-written fakes around
the real Recorder and Store, a seeded workload through the real engine, and the engine's truth.

- ``RecorderProc``: ``python -m recorder --config F --accounts DB --clickhouse URL`` against a
  running ``EngineProc`` (the config carries the engine's endpoints and a free query port);
  started once ``/health`` answers 200. ``get``/``sql``/``metrics`` use its HTTP API (chDB lives
  inside the recorder, one process per data directory), ``cli`` runs ``python -m recorder ...``
  against it.
- ``FlakyStore``: a real ``Store`` whose ``insert_trades`` fail (the first N, or while ``down``),
  before or after the rows are committed (ClickHouse away, or the acknowledgement lost).
- ``LossyRecorder``: a real ``Recorder`` that throws away most trade notifications from the
  feed, as a lossy PUB socket would.
- ``run_workload``: seeded funding + mixed order flow (bench/workload.py) through
  ``EngineClient``; ``engine_trades``: every trade of every market with its accounts, from the
  engine's own memory (``TradesRequest``).
- ``expected_rows``/``stored_rows``: the rows the ``trades`` table must hold, computed
  independently of the recorder (notional from the Decimal tick and lot), and the rows it holds.
- ``python_candles``: candles of any interval, the straightforward way.
- ``opened``: a Store closed afterwards (chDB opens one data directory per process at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.workload import funding, mixed
from engine.client import EngineClient
from protocol.config import Exchange
from protocol.messages import Trade, TradesReply, TradesRequest
from recorder.service import Recorder
from recorder.store import Candle, Store
from tests.fixtures_feed import write_feed_config
from tests.procs import (
    BIND_RETRIES,
    REPO,
    START_TIMEOUT,
    EngineProc,
    Proc,
    ProcError,
    eventually,
    free_port,
)

_ids = itertools.count(1)
TRADE_QUERY = (
    "SELECT market, trade_id, toUnixTimestamp64Nano(ts), price_ticks, qty_lots, quote_units, "
    "CAST(taker_side, 'Int8'), maker_account, taker_account, seq FROM trades "
    "ORDER BY market, trade_id"
)


# ------------------------------------------------------------------------------ config


def write_recorder_config(path: Path, engine: EngineProc, port: int, **recorder: Any) -> Path:
    """The shipped config pointing at ``engine``, the query API on ``port``, with other
    ``[recorder]`` keys replaced (each must exist in the shipped config)."""
    return write_feed_config(
        path,
        pool=0,
        engine={"commands": engine.commands, "market_data": engine.market_data},
        recorder={"port": port, **recorder},
    )


# ------------------------------------------------------------------------------ HTTP


def http(url: str, data: bytes | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    """(status, decoded JSON body) of a GET (or a POST with ``data``); errors are answers."""
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, body.decode(errors="replace")


# ------------------------------------------------------------------------------ process


class RecorderProc(Proc):
    """``python -m recorder`` with embedded chDB in ``clickhouse`` (default: workdir/ch)."""

    def __init__(
        self,
        workdir: Path,
        *,
        engine: EngineProc,
        clickhouse: str | None = None,
        name: str = "recorder",
        **recorder: Any,
    ) -> None:
        super().__init__("recorder", workdir, name)
        self.engine = engine
        self.data_dir = self.workdir / "ch"
        self.clickhouse = clickhouse or f"chdb://{self.data_dir}"
        self.recorder_keys = recorder
        self.accounts = self.workdir / "no-accounts.db"  # absent: an empty accounts table
        self.config = self.workdir / "recorder.toml"
        self.port = 0

    def args(self) -> list[str]:
        return [
            "--config",
            str(self.config),
            "--accounts",
            str(self.accounts),
            "--clickhouse",
            self.clickhouse,
        ]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def spawn_on_free_port(self) -> None:
        self.port = free_port()
        write_recorder_config(self.config, self.engine, self.port, **self.recorder_keys)
        self.spawn()

    def start(self, timeout: float = START_TIMEOUT) -> RecorderProc:
        """Start; return once ``/health`` answers 200 (ClickHouse migrated and ready)."""
        for attempt in range(BIND_RETRIES):
            self.spawn_on_free_port()

            def ready() -> bool:
                if not self.running:
                    return True
                try:
                    return http(self.url("/health"), timeout=2)[0] == 200
                except OSError:
                    return False

            try:
                eventually(ready, timeout, 0.05, f"{self.name} healthy")
            except AssertionError:
                self.kill()
                raise ProcError(f"{self.name} not healthy in {timeout}s\n{self.log()}") from None
            if self.running:
                return self
            self.returncode = self.popen.returncode  # type: ignore[union-attr]
            if "address already in use" in self.log().lower() and attempt + 1 < BIND_RETRIES:
                continue
            break
        raise ProcError(f"{self.name} exited with {self.returncode} before serving\n{self.log()}")

    def get(self, path: str) -> tuple[int, Any]:
        return http(self.url(path))

    def sql(self, query: str) -> list[list]:
        status, body = http(self.url("/sql"), query.encode())
        assert status == 200, f"/sql {query!r}: {status} {body}"
        return body["rows"]

    def metrics(self) -> dict[str, Any]:
        status, body = self.get("/stats")
        assert status == 200, body
        return body

    def count(self) -> int:
        return int(self.sql("SELECT count() FROM trades")[0][0])

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """``python -m recorder --config F ARGS`` (the CLI asks this recorder over HTTP)."""
        return subprocess.run(
            [sys.executable, "-m", "recorder", "--config", str(self.config), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(name="recorder_procs")
def recorder_procs_fixture(tmp_path: Path) -> Iterator[Callable[..., RecorderProc]]:
    """A factory of (not yet started) RecorderProcs; every one is killed at teardown and its
    logs printed (pytest shows them for failing tests)."""
    made: list[RecorderProc] = []

    def make(engine: EngineProc, name: str = "recorder", **kwargs: Any) -> RecorderProc:
        proc = RecorderProc(tmp_path / name, engine=engine, name=name, **kwargs)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.cleanup()
        print(proc.logs())


@contextlib.contextmanager
def opened(url: str) -> Iterator[Store]:
    """A Store that is closed afterwards: chDB allows one data directory per process."""
    store = Store(url)
    try:
        yield store
    finally:
        store.close()


# ------------------------------------------------------------------------------ fakes


class FlakyStore(Store):
    """A real Store whose trade inserts fail: the first ``failures`` of them, and every one
    while ``down`` is set (the test lifts it when it has seen what it wanted).

    ``commit_first=False``: the insert never reaches ClickHouse (server away, refused).
    ``commit_first=True``: the rows are committed, then the call fails anyway, as when the
    acknowledgement is lost on the way back; a retry that re-inserted them would double them.
    """

    def __init__(
        self, url: str, failures: int = 0, commit_first: bool = False, down: bool = False
    ) -> None:
        super().__init__(url)
        self.failures = failures
        self.commit_first = commit_first
        self.down = down
        self.failed = 0
        self.calls = 0

    def insert_trades(self, columns: list[list]) -> None:
        self.calls += 1
        if not self.down and self.failed >= self.failures:
            super().insert_trades(columns)
            return
        self.failed += 1
        if self.commit_first:
            super().insert_trades(columns)
            raise ConnectionResetError("acknowledgement lost after commit (simulated)")
        raise ConnectionRefusedError("ClickHouse is away (simulated)")


class LossyRecorder(Recorder):
    """A real Recorder that hears only every ``keep``-th trade notification of the feed."""

    def __init__(self, *args: Any, keep: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep = keep
        self.heard = 0
        self.dropped = 0

    def on_trades(self, market: str, trades: list[Trade]) -> None:
        self.heard += 1
        if self.heard % self.keep:
            self.dropped += 1
            return
        super().on_trades(market, trades)


# ------------------------------------------------------------------------------ engine


def _identity(role: str) -> bytes:
    """A routing id never used before: the engine's ROUTER ignores a peer whose id is still
    held by a connection it has not yet seen close."""
    return f"recorder-test-{role}-{os.getpid()}-{next(_ids)}".encode()


async def run_workload(
    commands: str,
    ex: Exchange,
    n: int,
    seed: int,
    accounts: int = 20,
    fund: bool = True,
    chunk: int = 200,
    identity: bytes | None = None,
) -> int:
    """Send ``funding`` (if ``fund``) then ``mixed(n, seed)`` to the engine in chunks, every
    reply awaited; returns how many commands were sent. ``mixed`` numbers orders from 1, so
    give a fresh engine the first workload (later ones only cancel less precisely)."""
    client = EngineClient(commands, identity or _identity("workload"), timeout=30)
    await client.start(wait=30)
    try:
        cmds = [*(funding(ex, accounts) if fund else []), *mixed(ex, n, seed, accounts)]
        for i in range(0, len(cmds), chunk):
            await client.request_many(cmds[i : i + chunk], timeout=60)
        return len(cmds)
    finally:
        await client.close()


async def engine_trades(commands: str, ex: Exchange) -> dict[str, list[tuple[Trade, int, int]]]:
    """Every trade the engine remembers, per market, oldest first, with (maker, taker)."""
    client = EngineClient(commands, _identity("truth"), timeout=30)
    await client.start(wait=30)
    out: dict[str, list[tuple[Trade, int, int]]] = {}
    try:
        for market in ex.markets:
            rows: list[tuple[Trade, int, int]] = []
            while True:
                after = rows[-1][0].trade_id if rows else 0
                reply = await client.request(TradesRequest(0, market, after + 1, 100_000))
                assert isinstance(reply, TradesReply), reply
                if not reply.trades:
                    break
                assert reply.trades[0].trade_id == after + 1, "the engine forgot trades"
                rows += [
                    (t, mk, tk) for t, (mk, tk) in zip(reply.trades, reply.accounts, strict=True)
                ]
            out[market] = rows
    finally:
        await client.close()
    return out


def trade_count(trades: dict[str, list]) -> int:
    return sum(len(v) for v in trades.values())


def notional(ex: Exchange, market: str, price: int, qty: int) -> int:
    """Quote minor units of ``qty`` lots at ``price`` ticks, from the Decimal tick and lot."""
    m = ex.markets[market]
    value = Decimal(m.tick.text) * price * Decimal(m.lot.text) * qty * 10**m.quote_decimals
    assert value == value.to_integral_value()
    return int(value)


def expected_rows(ex: Exchange, trades: dict[str, list[tuple[Trade, int, int]]]) -> list[tuple]:
    """The ``trades`` table the engine's trades must give, in TRADE_QUERY's shape and order."""
    rows = [
        (
            market,
            t.trade_id,
            t.ts,
            t.price,
            t.qty,
            notional(ex, market, t.price, t.qty),
            t.taker_side,
            maker,
            taker,
            t.seq,
        )
        for market, ts in trades.items()
        for t, maker, taker in ts
    ]
    return sorted(rows, key=lambda r: (r[0], r[1]))


def stored_rows(rows: list[list] | list[tuple]) -> list[tuple]:
    """TRADE_QUERY's result as tuples of plain ints (JSON and Native agree on these)."""
    return [(r[0], *(int(v) for v in r[1:])) for r in rows]


def table_rows(store: Store) -> list[tuple]:
    return stored_rows(store.client.query(TRADE_QUERY).result_rows)


# ------------------------------------------------------------------------------ candles


def python_candles(trades: list[tuple[int, int, int, int, int]], secs: int) -> list[Candle]:
    """Candles from (trade_id, ts ns, price, qty, quote units), bucketed by UTC multiples of
    ``secs``: open/close by trade id, oldest bucket first."""
    buckets: dict[int, list[tuple[int, int, int, int, int]]] = {}
    for t in trades:
        start = t[1] // 1_000_000_000 // secs * secs
        buckets.setdefault(start, []).append(t)
    out = []
    for start in sorted(buckets):
        rows = sorted(buckets[start])
        prices = [r[2] for r in rows]
        out.append(
            Candle(
                start,
                rows[0][2],
                max(prices),
                min(prices),
                rows[-1][2],
                sum(r[3] for r in rows),
                sum(r[4] for r in rows),
                len(rows),
            )
        )
    return out


def run_async(coro: Any, timeout: float = 150.0) -> Any:
    """Run a coroutine in a fresh event loop under a deadline (a hang fails, later)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))

"""Seeded command streams that reach every branch of the engine, bad input included.

Used by the differential test (the compiled and the interpreted build must give the same
replies and the same ``state_hash()`` for the same stream) and by the fixture generator that
wrote ``tests/data/engine_v1`` with the pre-Cython engine. Unlike ``bench.workload.mixed`` it
sends every command kind: limits of every time in force, post-only, the three self-trade modes,
market orders by size and by amount, cancels and replaces by id and by client id (also of other
accounts' and of closed orders), mass cancels, deposits, withdrawals, every read, and malformed
or out-of-range fields, deadlines passed, duplicate client ids.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator

import msgspec

from engine.core import Engine
from protocol.config import Exchange
from protocol.messages import (
    WRITE_COMMANDS,
    BalancesRequest,
    Cancel,
    Deposit,
    FillsRequest,
    MassCancel,
    NewOrder,
    NewOrderList,
    OpenOrdersRequest,
    OrderHistoryRequest,
    OrderStatusRequest,
    Ping,
    QuoteRequest,
    Replace,
    SnapshotRequest,
    Tick,
    TradesRequest,
    Watch,
    Withdraw,
)

MAX_INT = 2**63 - 1


def origin_of(account: int) -> bytes:
    """Each account trades through one of three gateways, so reports go to several origins."""
    return b"gw-%d" % (account % 3)


def stream(
    ex: Exchange, n: int, seed: int, accounts: int = 6, advanced: bool = False
) -> Iterator[tuple[object, bytes]]:
    """``n`` (command, origin) pairs after a funding prelude; deterministic for a seed. With
    ``advanced``, a quarter of them are the advanced orders (stops, trailing stops, icebergs,
    GTD, one-cancels-the-other lists, Ticks; valid and not); without, the stream is the one the
    ``tests/data/engine_v1`` fixture was recorded from."""
    rng = random.Random(seed)
    markets = list(ex.markets.values())
    assets = list(ex.assets)
    req = 0
    for acct in range(1, accounts + 1):
        for asset, decimals in ex.assets.items():
            req += 1
            yield Deposit(req, acct, asset, rng.randint(1, 10**4) * 10**decimals), origin_of(acct)
    next_id = 1
    cids = [f"c{i}" for i in range(12)]
    recent: list[tuple[int, str]] = []  # (account, client id) of the newest orders sent
    for _ in range(n):
        req += 1
        m = markets[rng.randrange(len(markets))]
        acct = rng.randint(0 if rng.random() < 0.01 else 1, accounts)
        mid = max(2, m.max_price // 2)
        r = rng.random()
        cid = rng.choice(cids) if rng.random() < 0.2 else (f"o{req}" if rng.random() < 0.6 else "")
        oid = rng.randint(max(1, next_id // 2 - 40), next_id // 2 + 2)
        if r >= 0.47 and r < 0.75 and recent and rng.random() < 0.7:
            acct, cid = recent[-rng.randint(1, min(len(recent), 25))]
        deadline = rng.choice((0, 0, 0, 0, 1, 2**62)) if rng.random() < 0.1 else 0
        if advanced and rng.random() < 0.25:
            cmd = _advanced(rng, req, acct, m, mid, cid, deadline)
            next_id += 2
        elif r < 0.40:
            side = rng.choice((1, 1, 2, 2, 1, 2, 3)) if rng.random() < 0.05 else rng.choice((1, 2))
            away = rng.randint(0, 8) if rng.random() < 0.8 else rng.randint(-8, 0)
            price = mid - away if side == 1 else mid + away
            if rng.random() < 0.03:
                price = rng.choice((0, -1, m.max_price, m.max_price + 1))
            qty = rng.randint(m.min_qty, min(m.max_qty, m.min_qty * 20))
            if rng.random() < 0.03:
                qty = rng.choice((0, m.min_qty - 1, m.max_qty, m.max_qty + 1))
            tif = rng.choice((0, 1, 1, 1, 2, 3)) if rng.random() < 0.97 else rng.choice((4, -1))
            cmd: object = NewOrder(
                req, acct, m.symbol, side, 1, tif, price, qty,
                5 if rng.random() < 0.02 else 0, cid, rng.random() < 0.1,
                rng.choice((0, 0, 1, 2, 3, 4 if rng.random() < 0.1 else 0)), deadline,
            )  # fmt: skip
            next_id += 1
            if cid:
                recent.append((acct, cid))
        elif r < 0.47:
            side = rng.choice((1, 2))
            by_amount = side == 1 and rng.random() < 0.4
            qty = 0 if by_amount else rng.randint(m.min_qty, min(m.max_qty, m.min_qty * 30))
            quote = rng.randint(1, m.max_price * m.min_qty * m.tick_lot_quote * 20)
            cmd = NewOrder(
                req, acct, m.symbol, side, rng.choice((2, 2, 2, 2, 3)),
                rng.choice((0, 2, 3, 1)), rng.choice((0, 0, 0, 0, 1)), qty,
                quote if by_amount or rng.random() < 0.02 else 0, cid, False,
                rng.choice((0, 1, 2, 3)), deadline,
            )  # fmt: skip
            next_id += 1
        elif r < 0.65:
            if not cid:
                where = m.symbol if rng.random() < 0.9 else ""
                cmd = Cancel(req, acct, where, oid, "", 1, deadline)
            else:
                cmd = Cancel(req, acct, "", 0, cid or "c1", rng.choice((1, 6)), deadline)
        elif r < 0.75:
            cmd = Replace(
                req, acct, "", 0 if cid else oid, cid,
                rng.choice(cids) if rng.random() < 0.2 else "",
                rng.choice((0, mid + rng.randint(-8, 8), 0)),
                rng.choice((0, rng.randint(1, min(m.max_qty, m.min_qty * 25)))), deadline,
            )  # fmt: skip
        elif r < 0.77:
            cmd = MassCancel(req, acct, rng.choice(("", m.symbol, "NOPE-X")), rng.choice((1, 6)))
        elif r < 0.81:
            asset = rng.choice(assets + ["ZZZ"])
            amount = rng.choice((rng.randint(1, 10**6), 0, -5, MAX_INT))
            if rng.random() < 0.5:
                cmd = Deposit(req, acct, asset, amount, "", deadline)
            else:
                cmd = Withdraw(req, acct, asset, amount, "", deadline)
        elif r < 0.83:
            cmd = NewOrder(req, acct, "NOPE-X", 1, 1, 1, 5, 1)
        else:
            cmd = _read(rng, req, acct, m, oid, cid)
        yield cmd, origin_of(acct)


def _advanced(rng: random.Random, req: int, acct: int, m, mid: int, cid: str,
              deadline: int) -> object:  # fmt: skip
    """A stop (limit or market, maybe trailing, maybe GTD), an iceberg, a list or a Tick."""
    side = rng.choice((1, 2))
    away = rng.randint(-6, 6)
    qty = rng.randint(m.min_qty, min(m.max_qty, m.min_qty * 20))
    k = rng.randrange(10)
    if k < 4:
        trail = rng.choice((0, 0, 10, 500, 2_000, 5)) if k < 2 else 0
        stop = mid + away if not trail or rng.random() < 0.5 else 0
        limit = rng.random() < 0.6
        expire = _soon(rng, req) if limit and rng.random() < 0.2 else 0
        return NewOrder(
            req, acct, m.symbol, side, 1 if limit else 2, 4 if expire else 0,
            mid + rng.randint(-8, 8) if limit else 0, qty, 0, cid, False, 0, deadline,
            rng.choice((1, 2, 1, 2, 3)), stop, expire, 0, trail,
        )  # fmt: skip
    if k < 7:
        tif = rng.choice((1, 1, 4, 2))
        return NewOrder(
            req, acct, m.symbol, side, 1, tif, mid + away, qty, 0, cid, rng.random() < 0.2,
            rng.choice((0, 1, 2, 3)), deadline, 0, 0,
            _soon(rng, req) if tif == 4 else 0, rng.randint(0, qty + 1),
        )  # fmt: skip
    if k < 9:
        lo, hi = mid - rng.randint(1, 8), mid + rng.randint(1, 8)
        price, stop = (hi, lo) if side == 2 else (lo, hi)
        if rng.random() < 0.1:
            price, stop = stop, price
        return NewOrderList(
            req, acct, m.symbol, side, qty, price, stop, rng.choice((0, stop, stop + 1)), "",
            cid, rng.choice(("", "s1", cid)), rng.choice((0, 1, 2, 3)), deadline,
        )  # fmt: skip
    return Tick(req)


def _soon(rng: random.Random, req: int) -> int:
    """An expiry time a few batches of 64 after this command's (now and then before it)."""
    return TS0 + (req // 64 + rng.randint(-1, 6)) * 1_000_003


def _read(rng: random.Random, req: int, acct: int, m, oid: int, cid: str) -> object:
    k = rng.randrange(10)
    if k == 0:
        return OrderStatusRequest(req, acct, m.symbol, oid if not cid else 0, cid)
    if k == 1:
        return OpenOrdersRequest(req, acct, rng.choice(("", m.symbol)))
    if k == 2:
        return BalancesRequest(req, acct)
    if k == 3:
        side = rng.choice((1, 2))
        return QuoteRequest(req, m.symbol, side, rng.randint(1, m.max_qty), 0, acct)
    if k == 4:
        return SnapshotRequest(req, m.symbol, rng.choice((0, 3)))
    if k == 5:
        return FillsRequest(req, acct, rng.choice(("", m.symbol)), rng.choice((5, 100)))
    if k == 6:
        return TradesRequest(req, m.symbol, rng.randint(0, 50), rng.choice((10, 1000)))
    if k == 7:
        return OrderHistoryRequest(req, acct, rng.choice(("", m.symbol)), 20)
    if k == 8:
        return Watch(req, rng.randint(1, 4), rng.random() < 0.7)
    return Ping(req, req - 1)


TS0 = 1_700_000_000_000_000_000  # the first batch's timestamp (ns); each batch adds ~1 ms


def run(
    engine: Engine,
    cmds: list[tuple[object, bytes]],
    batch: int,
    after_batch: Callable[[int, list[tuple[bytes, object]]], None] | None = None,
    project: Callable[[list[tuple[bytes, list]]], object] | None = None,
) -> str:
    """Apply ``cmds`` in batches as the engine process does (one timestamp a batch, outbox and
    market data drained after each); returns a digest of everything the engine sent.

    Outboxes are sorted by destination and market data by topic, stably: which destination or
    which market comes first within a batch is not part of the contract (the engine keeps the
    batch's changed books in a set). ``after_batch(ts, write_entries)`` runs after each
    batch's commands, before the drain: the fixture generator journals there. ``project``
    maps each batch's sorted replies before they are encoded (the compatibility test drops
    the fields appended since the fixture was recorded).
    """
    digest = hashlib.blake2b(digest_size=16)
    encode = msgspec.msgpack.encode
    ts = TS0
    for start in range(0, len(cmds), batch):
        ts += 1_000_003
        entries = []
        for cmd, origin in cmds[start : start + batch]:
            engine.apply(cmd, ts, origin)
            if isinstance(cmd, WRITE_COMMANDS):
                entries.append((origin, cmd))
        if after_batch is not None:
            after_batch(ts, entries)
        out = sorted(engine.drain())
        digest.update(encode(project(out) if project is not None else out))
        digest.update(encode(sorted(engine.market_data(ts), key=_topic)))
    return digest.hexdigest()


def _topic(msg: tuple[bytes, object]) -> bytes:
    return msg[0]

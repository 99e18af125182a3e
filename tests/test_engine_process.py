"""The engine process end to end: a real ``python -m engine``, the real EngineClient, raw ZeroMQ
sockets for hostile input and market data, SIGTERM/SIGINT/SIGKILL, and a damaged journal.

Every wait is ``eventually()`` polling a condition under a generous deadline; nothing asserts on
timing. Each test starts its own engine on free loopback ports with its own data directory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import signal
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from bench.workload import funding, mixed
from engine import journal
from engine.client import EngineClient
from engine.core import Engine
from protocol import config
from protocol.enums import ExecType, Liquidity, OrderStatus, OrderType, RejectCode, Side
from protocol.enums import TimeInForce as Tif
from protocol.messages import (
    Balances,
    BalancesRequest,
    Bbo,
    BookSnapshot,
    Cancel,
    Deposit,
    Depth,
    ExecReport,
    Executions,
    LedgerReply,
    MarketData,
    MassCancel,
    MassCancelReply,
    NewOrder,
    OpenOrders,
    OpenOrdersRequest,
    OrderInfo,
    OrderStatusRequest,
    Ping,
    Pong,
    QuoteReply,
    QuoteRequest,
    Rejected,
    Replace,
    Reply,
    SnapshotRequest,
    Trades,
    Withdraw,
)
from tests.fixtures_engine import engine_procs_fixture  # noqa: F401
from tests.procs import EngineProc, eventually, eventually_async, write_config

EX = config.load()  # the shipped config: what EngineProc runs by default
MARKETS = list(EX.markets)
BTC_USD = "BTC-USD"
SPEC = EX.markets[BTC_USD]
BUY, SELL = int(Side.BUY), int(Side.SELL)
LIMIT, MARKET = int(OrderType.LIMIT), int(OrderType.MARKET)
GTC, IOC = int(Tif.GTC), int(Tif.IOC)
TERMINAL = {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
FEE_ACCOUNT = EX.engine.fee_account
PRICE = 3_000_000  # 30000.00 USD in ticks of 0.01
encode = msgspec.msgpack.encode


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ----------------------------------------------------------------------------- clients


@contextlib.asynccontextmanager
async def connect(
    proc: EngineProc, identity: bytes, events: list | None = None
) -> AsyncIterator[EngineClient]:
    """A started EngineClient; unsolicited messages are appended to ``events``."""
    client = EngineClient(
        proc.commands,
        identity,
        timeout=20.0,
        on_event=events.append if events is not None else None,
    )
    await client.start(wait=20.0)
    try:
        yield client
    finally:
        await client.close()


async def send_all(client: EngineClient, cmds: Iterable[Any], chunk: int = 250) -> list:
    """Send commands in frames of ``chunk``, each frame's replies awaited before the next."""
    cmds = list(cmds)
    replies: list = []
    for i in range(0, len(cmds), chunk):
        replies += await client.request_many(cmds[i : i + chunk], timeout=30.0)
    return replies


class RawDealer:
    """A bare DEALER socket: sends any bytes, decodes replies with the protocol's Reply union."""

    def __init__(self, endpoint: str, identity: bytes, timeout: float = 20.0) -> None:
        self.timeout = timeout
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, identity)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.decoder = msgspec.msgpack.Decoder(list[Reply])
        self.markers = itertools.count(7_000_000_000)
        self.reqs = itertools.count(1)

    def exchange(self, *frames: bytes) -> list:
        """Send one (possibly multi-part) message, then a Ping; return every reply before its
        Pong. The engine handles one peer's frames in order, so these answer ``frames``."""
        self.sock.send_multipart(list(frames))
        marker = next(self.markers)
        self.sock.send(encode([Ping(marker)]))
        out: list = []
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                raise AssertionError(f"no Pong in {self.timeout}s: the engine stopped answering")
            for msg in self.decoder.decode(self.sock.recv()):
                if type(msg) is Pong and msg.req == marker:
                    return out
                out.append(msg)

    def request(self, *cmds: Any) -> list:
        """Send well-formed commands (fresh req ids); replies in command order."""
        for c in cmds:
            c.req = next(self.reqs)
        got = {m.req: m for m in self.exchange(encode(list(cmds)))}
        return [got[c.req] for c in cmds]

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


# ---------------------------------------------------------------------- state to compare


def state_queries(accounts: Iterable[int]) -> list:
    accounts = list(accounts)
    return (
        [BalancesRequest(0, a) for a in accounts]
        + [OpenOrdersRequest(0, a) for a in accounts]
        + [SnapshotRequest(0, m) for m in MARKETS]
    )


def state_of(accounts: Iterable[int], replies: list, with_ts: bool = True) -> dict:
    """Every balance and open order of ``accounts`` and every book (levels, last trade id)."""
    accounts = list(accounts)
    n = len(accounts)
    bals, opens, books = replies[:n], replies[n : 2 * n], replies[2 * n :]
    state: dict = {}
    for a, bal, oo in zip(accounts, bals, opens, strict=True):
        assert type(bal) is Balances and type(oo) is OpenOrders, (bal, oo)
        orders = []
        for o in oo.orders:
            if not with_ts:
                o = msgspec.structs.replace(o, created_ts=0, updated_ts=0)
            orders.append(msgspec.structs.astuple(o))
        state[a] = (
            tuple((b.asset, b.available, b.locked) for b in bal.balances),
            tuple(sorted(orders)),
        )
    for snap in books:
        assert type(snap) is BookSnapshot, snap
        state[snap.market] = (snap.bids, snap.asks, snap.last_trade_id)
    return state


async def exchange_state(client: EngineClient, accounts: Iterable[int], with_ts: bool = True):
    accounts = list(accounts)
    return state_of(accounts, await send_all(client, state_queries(accounts), 500), with_ts)


def reference_state(writes: list, accounts: Iterable[int]) -> tuple[Engine, dict]:
    """The in-process core after ``writes``: what a recovered engine must hold."""
    ref = Engine(EX)
    for c in writes:
        ref.apply(c, 0, b"ref")
    ref.discard_output()
    ref.validate()
    accounts = list(accounts)
    queries = state_queries(accounts)
    for i, q in enumerate(queries, 1):
        q.req = i
        ref.apply(q, 0, b"ref")
    replies = ref.outbox.pop(b"ref")
    return ref, state_of(accounts, replies, with_ts=False)


def assert_conserved(state: dict, deposits: dict[str, int], accounts: Iterable[int]) -> None:
    """Rule 3: per asset, available + locked over every account equals the deposits."""
    sums: dict[str, int] = dict.fromkeys(EX.assets, 0)
    for a in accounts:
        for asset, avail, locked in state[a][0]:
            assert avail >= 0 and locked >= 0, (a, asset, avail, locked)
            sums[asset] += avail + locked
    assert sums == deposits


def deposits_of(cmds: Iterable[Any]) -> dict[str, int]:
    out: dict[str, int] = dict.fromkeys(EX.assets, 0)
    for c in cmds:
        if type(c) is Deposit:
            out[c.asset] += c.amount
    return out


def reply_seq(reply: Any) -> int:
    if type(reply) is Executions:
        return reply.reports[0].seq
    return reply.seq  # Rejected, LedgerReply, MassCancelReply


def order(account: int, side: int, price: int, qty: int, tif: int = GTC, **kw: Any) -> NewOrder:
    return NewOrder(0, account, BTC_USD, side, LIMIT, tif, price, qty, **kw)


async def workload(client: EngineClient, accounts: int, n: int, seed: int, chunk: int = 250):
    """Fund ``accounts`` and run ``n`` mixed commands; returns (commands, replies)."""
    cmds = [*funding(EX, accounts), *mixed(EX, n, seed=seed, accounts=accounts)]
    replies = await send_all(client, cmds, chunk)
    assert all(type(r) is not Rejected or r.code != RejectCode.MALFORMED for r in replies)
    return cmds, replies


# ----------------------------------------------------------------------- orders round trip


def test_order_round_trip_and_fills_reach_only_the_owning_client(engine_procs):
    proc = engine_procs().start()
    run(_check_round_trip(proc))


async def _check_round_trip(proc: EngineProc) -> None:
    ev_a: list = []
    ev_b: list = []
    ev_c: list = []
    async with (
        connect(proc, b"gw-a", ev_a) as a,
        connect(proc, b"gw-b", ev_b) as b,
        connect(proc, b"gw-c", ev_c) as c,
    ):
        dep = await a.request(Deposit(0, 1, "USD", 10**9))
        assert type(dep) is LedgerReply and dep.available == 10**9 and dep.seq > 0
        assert type(await b.request(Deposit(0, 2, "BTC", 10**8))) is LedgerReply

        placed = await a.request(order(1, BUY, PRICE, 10, client_order_id="a-1"))
        assert type(placed) is Executions
        (new,) = placed.reports
        assert (new.exec_type, new.status, new.leaves_qty, new.cum_qty) == (
            ExecType.NEW,
            OrderStatus.NEW,
            10,
            0,
        )
        assert new.req == placed.req and new.client_order_id == "a-1" and new.seq > dep.seq
        oid = new.order_id
        bal = await a.request(BalancesRequest(0, 1))
        usd = [(b.available, b.locked) for b in bal.balances if b.asset == "USD"]
        assert usd == [(10**9 - PRICE * 10, PRICE * 10)]
        info = await a.request(OrderStatusRequest(0, 1, BTC_USD, oid))
        assert type(info) is OrderInfo and info.order.status == OrderStatus.NEW
        opens = await a.request(OpenOrdersRequest(0, 1))
        assert [o.order_id for o in opens.orders] == [oid]

        # B sells 4 lots into A's bid: B gets the taker reports as its reply ...
        taken = await b.request(order(2, SELL, PRICE, 4, IOC))
        assert type(taken) is Executions
        kinds = [(r.exec_type, r.liquidity, r.last_qty) for r in taken.reports]
        assert kinds == [(ExecType.NEW, 0, 0), (ExecType.FILL, Liquidity.TAKER, 4)]
        assert all(r.account == 2 and r.order_id != oid for r in taken.reports)
        fill = taken.reports[1]
        assert fill.fee == PRICE * 4 * 2_000 // 1_000_000  # taker fee, in quote (seller)

        # ... and A, which placed the resting order, gets the maker fill unsolicited.
        await eventually_async(lambda: ev_a, what="maker fill event on gw-a")
        (maker,) = ev_a
        assert type(maker) is ExecReport and maker.req == 0 and maker.order_id == oid
        assert (maker.exec_type, maker.status, maker.liquidity) == (
            ExecType.PARTIAL_FILL,
            OrderStatus.PARTIALLY_FILLED,
            Liquidity.MAKER,
        )
        assert (maker.last_px, maker.last_qty, maker.cum_qty, maker.leaves_qty) == (
            PRICE,
            4,
            4,
            6,
        )
        assert maker.trade_id == fill.trade_id and maker.seq == fill.seq
        assert maker.fee == 4 * SPEC.lot_units * 1_000 // 1_000_000  # maker fee, in base

        # B takes the rest of the bid; A's cancel then finds nothing; a second order is cancelled
        rest = await b.request(order(2, SELL, PRICE, 6, IOC))
        assert rest.reports[-1].status == OrderStatus.FILLED
        await eventually_async(lambda: len(ev_a) == 2, what="second maker fill on gw-a")
        assert (ev_a[1].exec_type, ev_a[1].status, ev_a[1].leaves_qty) == (
            ExecType.FILL,
            OrderStatus.FILLED,
            0,
        )
        gone = await a.request(Cancel(0, 1, BTC_USD, oid))
        assert type(gone) is Rejected and gone.code == RejectCode.UNKNOWN_ORDER

        second = await a.request(order(1, BUY, PRICE - 100, 3, client_order_id="a-2"))
        oid2 = second.reports[0].order_id
        assert oid2 == oid + 3  # B's two IOC orders took the ids in between
        cancelled = await a.request(Cancel(0, 1, BTC_USD, 0, "a-2"))
        assert type(cancelled) is Executions
        assert cancelled.reports[0].exec_type == ExecType.CANCELED
        info2 = await a.request(OrderStatusRequest(0, 1, BTC_USD, oid2))
        assert info2.order.status == OrderStatus.CANCELED
        assert (await a.request(OpenOrdersRequest(0, 1))).orders == []

        # a round trip on B and C after the fills: neither saw anything of A's order
        await b.request(Ping(0))
        await c.request(Ping(0))
        assert ev_b == [] and ev_c == []
        assert len(ev_a) == 2

        fees_base = 10 * SPEC.lot_units * 1_000 // 1_000_000
        fees_quote = PRICE * 4 * 2_000 // 1_000_000 + PRICE * 6 * 2_000 // 1_000_000
        state = await exchange_state(a, [FEE_ACCOUNT, 1, 2])
        assert state[1][0] == (
            ("BTC", 10 * SPEC.lot_units - fees_base, 0),
            ("ETH", 0, 0),
            ("USD", 10**9 - PRICE * 10, 0),
        )
        assert state[2][0] == (
            ("BTC", 10**8 - 10 * SPEC.lot_units, 0),
            ("ETH", 0, 0),
            ("USD", PRICE * 10 - fees_quote, 0),
        )
        assert state[FEE_ACCOUNT][0] == (
            ("BTC", fees_base, 0),
            ("ETH", 0, 0),
            ("USD", fees_quote, 0),
        )
        assert state[BTC_USD] == ([], [], 2)


def test_fill_for_a_gateway_that_left_is_dropped_and_the_engine_goes_on(engine_procs):
    """ROUTER_MANDATORY: once the engine knows a gateway is gone, sending it a fill fails
    (EHOSTUNREACH); the engine counts and logs the loss and carries on."""
    proc = engine_procs().start()
    makers = 300

    async def scenario() -> None:
        async with connect(proc, b"gw-stays") as stays:
            await stays.request(Deposit(0, 2, "BTC", 10**8))
            async with connect(proc, b"gw-leaves") as leaves:
                await leaves.request(Deposit(0, 1, "USD", 10**10))
                await leaves.request_many([order(1, BUY, PRICE, 1) for _ in range(makers)])
            sold = 0

            async def fill_one_more() -> bool:  # until the engine has noticed the departure
                nonlocal sold
                taken = await stays.request(order(2, SELL, PRICE, 1, IOC))
                assert taken.reports[-1].status == OrderStatus.FILLED
                sold += 1
                return "dropped 1 replies for b'gw-leaves'" in proc.log()

            await eventually_async(fill_one_more, timeout=20, interval=0.05, what="drop logged")
            assert type(await stays.request(Ping(0))) is Pong
            state = await exchange_state(stays, [1])
            assert len(state[1][1]) == makers - sold  # the fills happened though nobody heard

    run(scenario())
    assert proc.stop() == 0


# ------------------------------------------------------------------------------ market data


class Subscriber:
    """A SUB socket that keeps every [topic, message] it received, in order."""

    def __init__(self, ctx: zmq.Context, endpoint: str, prefix: bytes) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self.sock.connect(endpoint)
        self.decoder = msgspec.msgpack.Decoder(MarketData)
        self.got: list[tuple[bytes, Any]] = []

    def drain(self) -> list[tuple[bytes, Any]]:
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return self.got
            assert len(frames) == 2, frames
            self.got.append((frames[0], self.decoder.decode(frames[1])))

    def of(self, kind: type, market: str) -> list:
        return [m for _, m in self.drain() if type(m) is kind and m.market == market]


def assert_contiguous(msgs: list, epoch: int) -> None:
    assert msgs, "no messages"
    assert all(m.epoch == epoch for m in msgs)
    seqs = [m.seq for m in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


def test_market_data_is_sequenced_filtered_and_rebuilds_the_book(engine_procs):
    proc = engine_procs().start()
    ctx = zmq.Context()
    try:
        everything = Subscriber(ctx, proc.market_data, b"")
        btc_trades = Subscriber(ctx, proc.market_data, b"T." + BTC_USD.encode())
        run(_check_market_data(proc, everything, btc_trades))
    finally:
        ctx.destroy(linger=0)


async def _check_market_data(
    proc: EngineProc, everything: Subscriber, btc_trades: Subscriber
) -> None:
    async with connect(proc, b"md") as client:
        await send_all(client, funding(EX, 10))
        epoch = (await client.request(Ping(0))).epoch

        async def subscribed() -> bool:  # trade in BTC-USD until both subscribers hear it
            await client.request_many([order(1, SELL, PRICE, 1), order(2, BUY, PRICE, 1, IOC)])
            await asyncio.sleep(0.02)
            return bool(everything.drain()) and bool(btc_trades.drain())

        await eventually_async(subscribed, timeout=20, what="subscriptions took effect")

        cmds = list(mixed(EX, 4000, seed=7, accounts=10))
        mid: BookSnapshot | None = None
        for i in range(0, len(cmds), 200):
            frame: list[Any] = cmds[i : i + 200]
            if i == 2000:  # ask for a snapshot in the middle of a batch of orders
                frame = [*frame[:100], SnapshotRequest(0, BTC_USD), *frame[100:]]
            replies = await client.request_many(frame, timeout=30.0)
            if i == 2000:
                mid = replies[100]
        final = await client.request(SnapshotRequest(0, BTC_USD))
        assert type(mid) is BookSnapshot and type(final) is BookSnapshot
        assert mid.epoch == final.epoch == epoch and mid.seq < final.seq

        def caught_up() -> bool:
            depth = everything.of(Depth, BTC_USD)
            trades = btc_trades.of(Trades, BTC_USD)
            return bool(depth and depth[-1].seq == final.seq) and bool(
                trades and trades[-1].trades[-1].trade_id == final.last_trade_id
            )

        await eventually_async(caught_up, timeout=20, what="subscribers caught up")

    # contiguous per market and stream; every market traded, so filtering is put to the test
    for market in MARKETS:
        for kind in (Trades, Depth, Bbo):
            assert_contiguous(everything.of(kind, market), epoch)
    for topic, msg in everything.got:
        prefix = {Trades: b"T.", Depth: b"D.", Bbo: b"B."}[type(msg)]
        assert topic == prefix + msg.market.encode()

    # the prefix subscriber got BTC-USD trades and nothing else, the same ones, in order
    assert {t for t, _ in btc_trades.got} == {b"T.BTC-USD"}
    assert all(type(m) is Trades and m.market == BTC_USD for _, m in btc_trades.got)
    mine = [m for _, m in btc_trades.got]
    assert_contiguous(mine, epoch)
    by_seq = {m.seq: m for m in everything.of(Trades, BTC_USD)}
    assert all(by_seq[m.seq] == m for m in mine if m.seq in by_seq)
    trade_ids = [t.trade_id for m in everything.of(Trades, BTC_USD) for t in m.trades]
    assert trade_ids == list(range(trade_ids[0], final.last_trade_id + 1))

    # snapshot in the middle + the deltas after it = a fresh snapshot at the end
    bids = {p: q for p, q, _ in mid.bids}
    asks = {p: q for p, q, _ in mid.asks}
    deltas = [d for d in everything.of(Depth, BTC_USD) if d.seq > mid.seq]
    assert deltas and deltas[0].seq == mid.seq + 1 and deltas[-1].seq == final.seq
    for d in deltas:
        for side, changes in ((bids, d.bids), (asks, d.asks)):
            for price, qty in changes:
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
    assert sorted(bids.items(), reverse=True) == [(p, q) for p, q, _ in final.bids]
    assert sorted(asks.items()) == [(p, q) for p, q, _ in final.asks]
    assert final.bids and final.asks

    last = everything.of(Bbo, BTC_USD)[-1]
    best_bid = final.bids[0][:2] if final.bids else (0, 0)
    best_ask = final.asks[0][:2] if final.asks else (0, 0)
    assert (last.bid_price, last.bid_qty, last.ask_price, last.ask_qty) == (*best_bid, *best_ask)


# --------------------------------------------------------------------------- hostile input


@dataclasses.dataclass
class Hostile:
    proc: EngineProc
    dealer: RawDealer
    baseline: dict
    resting: list[int]  # account 1's open order ids


WATCHED = [FEE_ACCOUNT, 1, 2]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):
    """One engine for every bad-input case (the session must survive all of them, in turn),
    with account 1 holding two resting orders and funds; account 2 funded, nothing open."""
    proc = EngineProc(tmp_path_factory.mktemp("hostile"))
    h = None
    try:
        proc.start()
        h = Hostile(proc, RawDealer(proc.commands, b"hostile"), {}, [])
        replies = h.dealer.request(
            Deposit(0, 1, "USD", 10**12),
            Deposit(0, 1, "BTC", 10**9),
            Deposit(0, 2, "USD", 10**12),
            Deposit(0, 2, "BTC", 10**9),
            order(1, BUY, PRICE, 10, client_order_id="bid-1"),
            order(1, SELL, PRICE + 500, 7, client_order_id="ask-1"),
        )
        h.resting = [r.reports[0].order_id for r in replies[4:]]
        h.baseline = state_of(WATCHED, h.dealer.request(*state_queries(WATCHED)))
        assert len(h.baseline[1][1]) == 2
        yield h
    finally:
        if h is not None:
            h.dealer.close()
        proc.cleanup()
        print(proc.logs())


def _new(req: int, **kw: Any) -> list:
    """A NewOrder as a raw array, fields overridable by name."""
    f = dict(
        req=req,
        account=2,
        market=BTC_USD,
        side=BUY,
        type=LIMIT,
        tif=GTC,
        price=PRICE - 7,
        qty=1,
        quote_qty=0,
        client_order_id="",
        post_only=False,
        stp=0,
    )
    f.update(kw)
    return [1, *f.values()]


MIB = 1 << 20
REJECT = "reject"
MALFORMED_OR_UNKNOWN = (1001, 1002)  # an unknown tag may fairly be called either

# (id, frames, expected replies as (kind, req, code)); kind REJECT = Rejected with that code
HOSTILE_FRAMES: list[tuple[str, list[bytes], list[tuple[Any, int, Any]]]] = [
    ("garbage-bytes", [b"\xc1\xc1\xc1 this is not msgpack \xff"], [(REJECT, 0, 1001)]),
    ("empty-payload", [b""], [(REJECT, 0, 1001)]),
    ("truncated-msgpack", [encode([[7, 31, 1]])[:-1]], [(REJECT, 0, 1001)]),
    ("map-not-array", [encode({"kind": 7, "req": 32, "account": 1})], [(REJECT, 0, 1001)]),
    ("bare-integer", [encode(7)], [(REJECT, 0, 1001)]),
    ("array-of-scalars", [encode([7, 33, 1])], [(REJECT, 0, 1001)] * 3),
    ("empty-array", [encode([])], []),
    (
        "good-then-bad",
        [encode([[9, 41, 9, "BTC", 5, ""], [1, 42, 2, BTC_USD, "buy", 1]])],
        [(LedgerReply, 41, 0), (REJECT, 42, 1001)],
    ),
    (
        "bad-then-good",
        [encode([[7, "no", 1], [7, 43, 9]])],
        [(REJECT, 0, 1001), (Balances, 43, 0)],
    ),
    ("unknown-tag", [encode([[99, 44, 1]])], [(REJECT, 44, MALFORMED_OR_UNKNOWN)]),
    ("reply-tag-as-command", [encode([[110, 45, 0, 0]])], [(REJECT, 45, MALFORMED_OR_UNKNOWN)]),
    ("string-for-int", [encode([[7, 46, "one"]])], [(REJECT, 46, 1001)]),
    ("price-as-string", [encode([_new(47, price="30000.00")])], [(REJECT, 47, 1001)]),
    ("price-as-float", [encode([_new(48, price=30000.5)])], [(REJECT, 48, 1001)]),
    ("qty-as-bool", [encode([_new(49, qty=True)])], [(REJECT, 49, 1001)]),
    ("missing-fields", [encode([[1, 50, 2]])], [(REJECT, 50, 1001)]),
    (
        "nested-garbage",
        [encode([[7, 51, [1, 2]], {"x": 1}])],
        [(REJECT, 51, 1001), (REJECT, 0, 1001)],
    ),
    ("huge-frame", [encode([Ping(i) for i in range(1, 260_000)])], [(REJECT, 0, 1004)]),
    (
        "huge-client-order-id",
        [encode([_new(52, client_order_id="x" * (MIB + 10))])],
        [(REJECT, 0, 1004)],
    ),
    ("too-many-commands", [encode([Ping(i) for i in range(1, 10_002)])], [(REJECT, 0, 1004)]),
    ("two-part-message", [encode([Ping(53)]), encode([Ping(54)])], [(REJECT, 0, 1001)]),
    ("empty-delimiter-frame", [b"", encode([Ping(55)])], [(REJECT, 0, 1001)]),
]


@pytest.mark.parametrize(
    ("frames", "expected"),
    [pytest.param(f, e, id=i) for i, f, e in HOSTILE_FRAMES],
)
def test_malformed_frames_are_rejected_and_change_nothing(hostile, frames, expected):
    got = hostile.dealer.exchange(*frames)
    shape = [
        (REJECT if type(m) is Rejected else type(m), m.req, getattr(m, "code", 0)) for m in got
    ]
    assert len(shape) == len(expected), got
    # replies are matched by req, not by position: a salvaged frame's rejects come first
    shape.sort(key=lambda x: (x[1], str(x[0])))
    expected = sorted(expected, key=lambda x: (x[1], str(x[0])))
    for (kind, req, code), (want_kind, want_req, want_code) in zip(shape, expected, strict=True):
        assert (kind, req) == (want_kind, want_req), got
        assert code in want_code if isinstance(want_code, tuple) else code == want_code, got
    assert all(m.reason for m in got if type(m) is Rejected)
    _assert_unchanged(hostile)


def _assert_unchanged(h: Hostile) -> None:
    assert type(h.dealer.request(Ping(0))[0]) is Pong
    assert state_of(WATCHED, h.dealer.request(*state_queries(WATCHED))) == h.baseline


def test_good_command_beside_a_bad_one_is_applied(hostile):
    before = hostile.dealer.request(BalancesRequest(0, 8))[0].balances
    got = hostile.dealer.exchange(encode([[9, 61, 8, "ETH", 77, ""], [9, 62, 8, "ETH", "77"]]))
    got.sort(key=lambda m: m.req)
    assert [type(m) for m in got] == [LedgerReply, Rejected]
    assert (got[0].req, got[1].req, got[1].code) == (61, 62, RejectCode.MALFORMED)
    after = hostile.dealer.request(BalancesRequest(0, 8))[0].balances
    assert [b.available for b in after if b.asset == "ETH"] == [
        77 + sum(b.available for b in before if b.asset == "ETH")
    ]
    _assert_unchanged(hostile)


R = RejectCode
BIG = 2**64 - 1


def _bad_commands(resting: list[int]) -> list[tuple[str, Any, int]]:
    bid, ask = resting
    max_px, max_qty, min_qty = SPEC.max_price, SPEC.max_qty, SPEC.min_qty
    return [
        (
            "unknown-market-order",
            NewOrder(0, 2, "DOGE-USD", BUY, LIMIT, GTC, 1, 1),
            R.UNKNOWN_MARKET,
        ),
        ("unknown-market-open-orders", OpenOrdersRequest(0, 1, "DOGE-USD"), R.UNKNOWN_MARKET),
        ("unknown-market-snapshot", SnapshotRequest(0, "DOGE-USD"), R.UNKNOWN_MARKET),
        ("unknown-market-quote", QuoteRequest(0, "DOGE-USD", BUY, 1), R.UNKNOWN_MARKET),
        ("unknown-market-mass-cancel", MassCancel(0, 1, "DOGE-USD"), R.UNKNOWN_MARKET),
        ("unknown-asset-deposit", Deposit(0, 1, "DOGE", 5), R.UNKNOWN_ASSET),
        ("zero-qty", order(2, BUY, PRICE - 7, 0), R.QUANTITY_BELOW_MIN),
        ("negative-qty", order(2, BUY, PRICE - 7, -1), R.QUANTITY_BELOW_MIN),
        ("most-negative-qty", order(2, SELL, PRICE + 9, -(2**63)), R.QUANTITY_BELOW_MIN),
        ("qty-above-max", order(2, BUY, PRICE - 7, max_qty + 1), R.QUANTITY_ABOVE_MAX),
        ("qty-2**64-1", order(2, SELL, PRICE + 9, BIG), R.QUANTITY_ABOVE_MAX),
        ("zero-price", order(2, BUY, 0, min_qty), R.INVALID_PRICE),
        ("negative-price", order(2, SELL, -PRICE, min_qty), R.INVALID_PRICE),
        ("price-above-max", order(2, SELL, max_px + 1, min_qty), R.INVALID_PRICE),
        ("price-2**64-1", order(2, SELL, BIG, min_qty), R.INVALID_PRICE),
        (
            "market-sell-negative",
            NewOrder(0, 2, BTC_USD, SELL, MARKET, IOC, 0, -3),
            R.QUANTITY_BELOW_MIN,
        ),
        (
            "market-buy-negative-budget",
            NewOrder(0, 2, BTC_USD, BUY, MARKET, IOC, quote_qty=-5),
            R.INVALID_QUANTITY,
        ),
        ("quote-negative-qty", QuoteRequest(0, BTC_USD, SELL, -4), R.INVALID_QUANTITY),
        ("side-zero", order(2, 0, PRICE - 7, 1), R.INVALID_SIDE),
        ("side-three", order(2, 3, PRICE - 7, 1), R.INVALID_SIDE),
        ("type-nine", NewOrder(0, 2, BTC_USD, BUY, 9, GTC, PRICE - 7, 1), R.INVALID_ORDER_TYPE),
        ("tif-seven", order(2, BUY, PRICE - 7, 1, tif=7), R.INVALID_TIME_IN_FORCE),
        ("stp-nine", order(2, BUY, PRICE - 7, 1, stp=9), R.INVALID_FIELD),
        ("fee-account-trades", order(FEE_ACCOUNT, BUY, PRICE - 7, 1), R.INVALID_ACCOUNT),
        ("negative-account", order(-1, BUY, PRICE - 7, 1), R.INVALID_ACCOUNT),
        (
            "long-client-id",
            order(2, BUY, PRICE - 7, 1, client_order_id="c" * 65),
            R.INVALID_CLIENT_ORDER_ID,
        ),
        (
            "duplicate-client-id",
            order(1, BUY, PRICE - 7, 1, client_order_id="bid-1"),
            R.DUPLICATE_CLIENT_ORDER_ID,
        ),
        (
            "post-only-crossing",
            order(2, BUY, PRICE + 500, 1, post_only=True),
            R.POST_ONLY_WOULD_CROSS,
        ),
        ("too-poor", order(2, BUY, PRICE - 7, max_qty), R.INSUFFICIENT_FUNDS),
        ("zero-deposit", Deposit(0, 2, "USD", 0), R.INVALID_AMOUNT),
        ("negative-deposit", Deposit(0, 2, "USD", -5), R.INVALID_AMOUNT),
        ("deposit-2**64-1", Deposit(0, 2, "USD", BIG), R.INVALID_AMOUNT),
        ("negative-withdraw", Withdraw(0, 2, "USD", -(10**9)), R.INVALID_AMOUNT),
        ("zero-withdraw", Withdraw(0, 2, "USD", 0), R.INVALID_AMOUNT),
        ("overdraw", Withdraw(0, 2, "USD", 10**12 + 1), R.INSUFFICIENT_FUNDS),
        ("replace-negative-qty", Replace(0, 1, BTC_USD, bid, qty=-1), R.QUANTITY_BELOW_MIN),
        ("replace-negative-price", Replace(0, 1, BTC_USD, bid, price=-1), R.INVALID_PRICE),
        ("cancel-wrong-market", Cancel(0, 1, "ETH-USD", bid), R.UNKNOWN_ORDER),
        ("cancel-other-accounts-order", Cancel(0, 2, BTC_USD, bid), R.UNKNOWN_ORDER),
        ("cancel-other-accounts-order-no-market", Cancel(0, 2, "", ask), R.UNKNOWN_ORDER),
        ("cancel-other-accounts-client-id", Cancel(0, 2, BTC_USD, 0, "bid-1"), R.UNKNOWN_ORDER),
        (
            "replace-other-accounts-order",
            Replace(0, 2, BTC_USD, ask, price=PRICE + 1),
            R.UNKNOWN_ORDER,
        ),
        ("status-other-accounts-order", OrderStatusRequest(0, 2, BTC_USD, bid), R.UNKNOWN_ORDER),
        (
            "status-other-accounts-client-id",
            OrderStatusRequest(0, 2, BTC_USD, 0, "ask-1"),
            R.UNKNOWN_ORDER,
        ),
        ("cancel-unknown-id", Cancel(0, 1, BTC_USD, 10**12), R.UNKNOWN_ORDER),
    ]


BAD_COMMAND_IDS = [name for name, _, _ in _bad_commands([1, 2])]


@pytest.mark.parametrize("name", BAD_COMMAND_IDS)
def test_invalid_command_is_rejected_with_its_code_and_changes_nothing(hostile, name):
    (cmd, code) = next((c, k) for n, c, k in _bad_commands(hostile.resting) if n == name)
    (reply,) = hostile.dealer.request(cmd)
    assert type(reply) is Rejected, reply
    assert (reply.code, reply.req) == (code, cmd.req), reply.reason
    assert reply.reason
    _assert_unchanged(hostile)


def test_mass_cancel_by_another_account_leaves_the_orders(hostile):
    (reply,) = hostile.dealer.request(MassCancel(0, 2, BTC_USD))
    assert type(reply) is MassCancelReply and reply.count == 0
    _assert_unchanged(hostile)


def test_hostile_session_then_restart_recovers_the_same_state(hostile):
    """Rejected writes are journaled too; replaying them must reject them again."""
    quote = hostile.dealer.request(QuoteRequest(0, BTC_USD, SELL, 3))[0]
    assert type(quote) is QuoteReply and quote.qty == 3
    hostile.dealer.close()
    assert hostile.proc.stop() == 0
    hostile.proc.start()
    hostile.dealer = RawDealer(hostile.proc.commands, b"hostile-2")
    _assert_unchanged(hostile)


MAX_INT = 2**63 - 1


@pytest.mark.parametrize("accounts", [[5, 5, 5], [5, 6, 7]], ids=["one-account", "three-accounts"])
def test_deposits_beyond_64_bits_are_refused_and_the_engine_goes_on(engine_procs, accounts):
    """Amounts are 64-bit on the wire and in snapshots: a deposit that would push a balance or
    an asset's total past 2**63-1 must be rejected, not leave state that cannot be encoded."""
    proc = engine_procs().start()
    dealer = RawDealer(proc.commands, b"whale", timeout=5.0)
    try:
        for a in accounts:
            (reply,) = dealer.request(Deposit(0, a, "USD", MAX_INT))
            assert type(reply) is LedgerReply or (
                type(reply) is Rejected and 2000 <= reply.code < 3000
            ), reply
        state = state_of(accounts, dealer.request(*state_queries(accounts)))
        assert all(avail <= MAX_INT for a in accounts for _, avail, _ in state[a][0])
    finally:
        dealer.close()
    assert proc.stop() == 0
    assert proc.snapshots()
    proc.start()
    dealer = RawDealer(proc.commands, b"whale-2", timeout=5.0)
    try:
        assert state_of(accounts, dealer.request(*state_queries(accounts))) == state
    finally:
        dealer.close()


# --------------------------------------------------------------------------------- recovery


ACCTS = 30


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_recovers_every_balance_order_and_book(engine_procs, how):
    """SIGTERM recovers from the shutdown snapshot; SIGKILL from the journal alone."""
    proc = engine_procs().start()
    before, seq, max_id = run(_load_and_read(proc, 4000, seed=11))
    if how == "sigterm":
        assert proc.stop() == 0
    else:
        assert proc.kill() == -signal.SIGKILL
        assert proc.snapshots() == []
    run(_restart_and_compare(proc, before, seq, max_id))


async def _load_and_read(proc: EngineProc, n: int, seed: int) -> tuple[dict, int, int]:
    async with connect(proc, b"load") as client:
        cmds, replies = await workload(client, ACCTS, n, seed)
        orders = [(c, r) for c, r in zip(cmds, replies, strict=True) if type(c) is NewOrder]
        ids = [r.reports[0].order_id for _, r in orders if type(r) is Executions]
        assert len(ids) > 0.9 * len(orders)  # the workload is funded: mostly accepted
        state = await exchange_state(client, range(ACCTS + 1))
        assert_conserved(state, deposits_of(cmds), range(ACCTS + 1))
        pong = await client.request(Ping(0))
        return state, pong.seq, max(ids)


async def _restart_and_compare(proc: EngineProc, before: dict, seq: int, max_id: int) -> None:
    old_epoch = proc.epoch
    await proc.astart()
    assert proc.epoch != old_epoch
    async with connect(proc, b"after") as client:
        pong = await client.request(Ping(0))
        assert pong.seq == seq
        after = await exchange_state(client, range(ACCTS + 1))
        assert after == before
        placed = await client.request_many([order(1, BUY, 1, 1), order(2, BUY, 1, 1)])
        new_ids = [r.reports[0].order_id for r in placed]
        assert max_id < new_ids[0] < new_ids[1]  # fresh ids, none reused
        assert (await client.request(Ping(0))).seq == seq + 2


def test_kill_9_under_load_loses_no_acknowledged_command(engine_procs):
    proc = engine_procs().start()
    run(_check_kill_under_load(proc))


async def _check_kill_under_load(proc: EngineProc) -> None:
    n_accts, window = 20, 8
    sent: list = []  # every command handed to the client, in order
    acked: list[tuple[int, Any, Any]] = []  # (index in sent, command, reply)
    events: list = []
    async with connect(proc, b"loader", events) as client:
        fund = funding(EX, n_accts)
        sent += fund
        for i, r in enumerate(await send_all(client, fund)):
            acked.append((i, fund[i], r))
        deposits = deposits_of(fund)

        async def load() -> None:
            """Keep ``window`` frames in flight, so a kill finds some of them processed and
            journaled, some queued, some in the reply buffers: never all settled."""
            gen = mixed(EX, 10**7, seed=3, accounts=n_accts)
            inflight: collections.deque = collections.deque()
            failed = False
            while not failed or inflight:
                while not failed and len(inflight) < window:
                    chunk = list(itertools.islice(gen, 100))
                    inflight.append((len(sent), chunk, [client.send(c) for c in chunk]))
                    sent.extend(chunk)
                    await asyncio.sleep(0)  # one frame per chunk
                first, chunk, futs = inflight.popleft()
                await asyncio.wait(futs, timeout=30.0)
                for k, (c, f) in enumerate(zip(chunk, futs, strict=True)):
                    if f.done() and f.exception() is None:
                        acked.append((first + k, c, f.result()))
                    else:
                        failed = True

        task = asyncio.ensure_future(load())
        await eventually_async(lambda: len(acked) > 4000, timeout=60, what="load running")
        assert not task.done()
        assert proc.kill() == -signal.SIGKILL
        await asyncio.wait_for(task, 30)
    assert len(acked) < len(sent), "the kill landed between loads: no command was in flight"

    # every acked reply carries the sequence number of its place in the command stream
    for i, cmd, reply in acked:
        assert type(reply) is not Rejected or reply.code >= 2000, reply
        assert reply_seq(reply) == i + 1, (cmd, reply)
    max_acked = max(i + 1 for i, _, _ in acked)

    await proc.astart()
    accounts = range(n_accts + 1)
    async with connect(proc, b"checker") as client:
        recovered = (await client.request(Ping(0))).seq
        assert max_acked <= recovered <= len(sent)
        state = await exchange_state(client, accounts, with_ts=False)
        assert_conserved(state, deposits, accounts)

        # the journal holds exactly the first ``recovered`` commands sent
        ref, expected = reference_state(sent[:recovered], accounts)
        assert state == expected

        # every acknowledged order is known, in the state the acknowledgement implies
        last: dict[int, ExecReport] = {}
        for rep in [r for _, _, x in acked if type(x) is Executions for r in x.reports] + events:
            if rep.order_id not in last or rep.seq >= last[rep.order_id].seq:
                last[rep.order_id] = rep
        ids = sorted(last)
        infos = await send_all(client, [OrderStatusRequest(0, last[i].account, "", i) for i in ids])
        for oid, info in zip(ids, infos, strict=True):
            assert type(info) is OrderInfo, (oid, info)
            acked_rep, got = last[oid], info.order
            assert got.cum_qty >= acked_rep.cum_qty
            if acked_rep.status in TERMINAL:
                assert (got.status, got.cum_qty) == (acked_rep.status, acked_rep.cum_qty), oid
        # and the reference core agrees on each of them
        for i, (oid, info) in enumerate(zip(ids, infos, strict=True)):
            ref.apply(OrderStatusRequest(i, info.order.account, "", oid), 0, b"ref")
        for info, want in zip(infos, ref.outbox.pop(b"ref"), strict=True):
            assert type(want) is OrderInfo, want
            assert msgspec.structs.replace(info.order, created_ts=0, updated_ts=0) == want.order


# ---------------------------------------------------------------------------- journal damage


async def _batches(proc: EngineProc, n_batches: int, accounts: int = 5) -> dict:
    """Several separate batches (one journal record each); returns the state of everything."""
    async with connect(proc, b"batches") as client:
        await send_all(client, funding(EX, accounts))
        cmds = list(mixed(EX, 40 * n_batches, seed=5, accounts=accounts))
        for i in range(n_batches):
            await client.request_many(cmds[40 * i : 40 * (i + 1)])
        return await exchange_state(client, range(accounts + 1))


async def _state_now(proc: EngineProc, accounts: int = 5) -> dict:
    async with connect(proc, b"state") as client:
        return await exchange_state(client, range(accounts + 1))


def _records(path: Path) -> list[tuple[int, int]]:
    """(offset, total length) of every record in a journal segment."""
    data = path.read_bytes()
    out, off = [], 0
    while off < len(data):
        magic, length, _, _ = journal.HEADER.unpack_from(data, off)
        assert magic == journal.MAGIC
        out.append((off, journal.HEADER.size + length))
        off += journal.HEADER.size + length
    return out


def _torn_tails() -> dict[str, bytes]:
    rec = journal.encode_record(10**9, 1, [(b"gw", order(1, BUY, PRICE, 1))])
    flipped = bytearray(rec)
    flipped[-1] ^= 0xFF
    return {
        "record-cut-short": rec[:-5],
        "header-cut-short": rec[: journal.HEADER.size - 3],
        "zero-filled": b"\0" * 4096,
        "last-record-bad-checksum": bytes(flipped),
    }


@pytest.mark.parametrize("tail", list(_torn_tails()))
def test_torn_journal_tail_is_truncated_with_a_warning(engine_procs, tail):
    proc = engine_procs().start()
    before = run(_batches(proc, 5))
    assert proc.kill() == -signal.SIGKILL  # no shutdown snapshot: the journal is all there is
    (seg,) = proc.segments()
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(_torn_tails()[tail])
    proc.start()
    log = proc.log()
    assert "truncating torn tail" in log and str(seg) in log and f"offset {size}" in log
    assert seg.stat().st_size == size
    assert run(_state_now(proc)) == before
    assert proc.stop() == 0
    proc.start()
    assert "truncat" not in proc.log()
    assert run(_state_now(proc)) == before


def _flip_payload(data: bytearray, recs: list) -> int:
    off, _ = recs[1]
    data[off + journal.HEADER.size + 3] ^= 0x5A
    return off


def _flip_header(data: bytearray, recs: list) -> int:
    off, _ = recs[1]
    data[off] ^= 0x01
    return off


def _drop_record(data: bytearray, recs: list) -> int:
    off, length = recs[1]
    del data[off : off + length]
    return off


def _garbage_tail(data: bytearray, recs: list) -> int:
    off = len(data)
    data += b"\x13\x37 definitely not a journal record \x42" * 4
    return off


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_flip_payload, "payload checksum mismatch"),
        (_flip_header, "bad record header"),
        (_drop_record, "gap"),
        (_garbage_tail, "bad record header"),
    ],
    ids=["payload-byte-flipped", "header-byte-flipped", "record-missing", "garbage-tail"],
)
def test_damaged_journal_refuses_to_start(engine_procs, tmp_path, damage, why):
    """Damage that a crash mid-write cannot explain: exit 3, file and offset named, and the
    journal left exactly as found for an operator to inspect."""
    cfg = write_config(tmp_path / "no-snapshots.toml", snapshot_every=10**15)
    proc = engine_procs(config=cfg).start()
    run(_batches(proc, 6))
    assert proc.kill() == -signal.SIGKILL
    assert proc.snapshots() == []
    (seg,) = proc.segments()
    recs = _records(seg)
    assert len(recs) >= 6
    data = bytearray(seg.read_bytes())
    off = damage(data, recs)
    seg.write_bytes(bytes(data))

    assert proc.start_expecting_exit() == 3
    log = proc.log()
    assert "refusing to start" in log and str(seg) in log, log
    assert f"offset {off}" in log and why in log, log
    assert seg.read_bytes() == bytes(data)
    assert proc.snapshots() == []


# -------------------------------------------------------------------------------- snapshots


def _seq(path: Path) -> int:
    return int(path.stem.split("-")[1])


def test_periodic_snapshots_prune_old_segments_and_recover(engine_procs, tmp_path):
    cfg = write_config(tmp_path / "snap500.toml", snapshot_every=500)
    proc = engine_procs(config=cfg).start()
    before, seq, max_id = run(_load_and_read(proc, 3000, seed=21))
    assert seq > 3000

    def written_and_pruned() -> list[Path]:
        # A forked child writes each snapshot and prunes while the engine goes on: wait for
        # the one due by the end of the load (a roll due while a child writes comes after).
        snaps = proc.snapshots()
        assert 1 <= len(snaps) <= 2 and seq - _seq(snaps[-1]) < 500  # none due any more
        segs = proc.segments()
        assert journal.segment_name(1) not in {s.name for s in segs}
        oldest = _seq(snaps[0])
        for _, nxt in itertools.pairwise(segs):  # nothing left that prune() would delete
            assert _seq(nxt) > oldest + 1, [s.name for s in segs]
        assert len(segs) <= 3
        return snaps

    snaps = eventually(written_and_pruned, timeout=60, what="snapshots written and pruned")
    assert "engine paused" in proc.log()  # each one was written by a forked child

    assert proc.kill() == -signal.SIGKILL
    run(_restart_and_compare(proc, before, seq, max_id))
    assert f"snapshot at {_seq(snaps[-1])} " in proc.log()
    now = run(_state_now(proc, ACCTS))

    # the newest snapshot damaged: the older one plus the journal still rebuild everything
    assert proc.kill() == -signal.SIGKILL
    newest = proc.snapshots()[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    proc.start()
    assert "skipping damaged snapshot" in proc.log() and newest.name in proc.log()
    assert run(_state_now(proc, ACCTS)) == now


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_0_after_writing_a_snapshot(engine_procs, sig):
    proc = engine_procs().start()
    before, seq, _ = run(_load_and_read(proc, 500, seed=2))
    assert proc.signal(sig) == 0
    log = proc.log()
    assert f"engine stopped at seq {seq}" in log
    snap = proc.data_dir / journal.snapshot_name(seq)
    assert snap.exists()
    assert journal.read_snapshot(snap).seq == seq
    proc.start()
    assert f"recovered seq {seq}: snapshot at {seq} + 0 journaled commands" in proc.log()
    assert run(_state_now(proc, ACCTS)) == before


def test_engine_refuses_to_open_its_trusted_port_to_the_network(tmp_path) -> None:
    """Rule 5: without CURVE the engine port is loopback only, so 0.0.0.0 is refused."""
    import subprocess
    import sys

    from tests.procs import REPO

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "--data-dir",
            str(tmp_path / "engine"),
            "--commands",
            "tcp://0.0.0.0:17999",
            "--market-data",
            "tcp://127.0.0.1:17998",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "not a loopback address" in done.stderr


def test_loopback_endpoints_are_recognised() -> None:
    from engine.server import loopback

    for ok in ("tcp://127.0.0.1:7001", "tcp://localhost:1", "tcp://[::1]:5", "ipc:///tmp/x"):
        assert loopback(ok), ok
    for bad in ("tcp://0.0.0.0:7001", "tcp://10.0.0.5:7001", "tcp://*:7001", "tcp://[::]:1"):
        assert not loopback(bad), bad


def test_a_good_till_date_order_expires_by_itself_and_stays_expired_after_kill_9(engine_procs):
    """No command comes after the order: the engine's own journaled Tick expires it; the
    journal alone (kill -9, no snapshot) replays into the same expired order."""
    proc = engine_procs().start()
    run(_gtd_expires(proc))
    assert proc.kill() == -signal.SIGKILL
    run(_gtd_after_restart(proc))


async def _gtd_expires(proc: EngineProc) -> None:
    events: list = []
    async with connect(proc, b"gtd", events) as client:
        assert type(await client.request(Deposit(0, 1, "USD", 10**9))) is LedgerReply
        expire = time.time_ns() + 300_000_000  # 0.3 s from now
        placed = await client.request(order(1, BUY, PRICE, 10, int(Tif.GTD), expire_ts=expire))
        assert type(placed) is Executions, placed
        oid = placed.reports[0].order_id
        await eventually_async(lambda: events, what="the GTD order's expiry report")
        (r,) = events
        assert (r.order_id, r.exec_type, r.status, r.req) == (
            oid, ExecType.EXPIRED, OrderStatus.EXPIRED, 0
        )  # fmt: skip
        assert r.ts >= expire
        bal = await client.request(BalancesRequest(0, 1))
        assert [(b.available, b.locked) for b in bal.balances if b.asset == "USD"] == [(10**9, 0)]


async def _gtd_after_restart(proc: EngineProc) -> None:
    await proc.astart()
    async with connect(proc, b"after") as client:
        opens = await client.request(OpenOrdersRequest(0, 1))
        assert opens.orders == []
        bal = await client.request(BalancesRequest(0, 1))
        assert [(b.available, b.locked) for b in bal.balances if b.asset == "USD"] == [(10**9, 0)]

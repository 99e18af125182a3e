"""The core's side of "in doubt" and of cheap queries (issue 10, items 1 and 2).

- A write whose ``deadline`` its batch timestamp has passed is refused without effect, and the
  decision depends only on (command, timestamp), so a replay of the journal decides the same.
- A status query by client order id finds closed orders through an index, never by scanning
  the closed-order memory; the ladder walks of FOK, market buys by quantity and quotes iterate
  the book instead of copying it.
"""

from __future__ import annotations

import pytest

from engine import build as engine_build
from engine.book import Book
from engine.core import Engine
from protocol.config import Exchange
from protocol.enums import OrderStatus, OrderType, RejectCode, Side, TimeInForce
from protocol.messages import (
    Balances,
    BalancesRequest,
    Cancel,
    Deposit,
    Executions,
    MassCancel,
    MassCancelReply,
    NewOrder,
    OpenOrders,
    OpenOrdersRequest,
    OrderInfo,
    OrderStatusRequest,
    QuoteReply,
    QuoteRequest,
    Rejected,
    Replace,
    TradesReply,
    TradesRequest,
    Withdraw,
)

BUY, SELL = int(Side.BUY), int(Side.SELL)
LIMIT, MARKET = int(OrderType.LIMIT), int(OrderType.MARKET)
FOK = int(TimeInForce.FOK)
M = "BTC-USD"
T0 = 1_000_000_000


def order(acct: int, side: int, price: int, qty: int, cid: str = "", **kw: object) -> NewOrder:
    return NewOrder(0, acct, M, side, LIMIT, 0, price, qty, 0, cid, **kw)  # type: ignore[arg-type]


def apply(engine: Engine, cmd: object, ts: int, origin: bytes = b"gw") -> list:
    box = engine.outbox[origin]
    before = len(box)
    engine.apply(cmd, ts, origin)
    return box[before:]


def funded(exchange: Exchange) -> Engine:
    engine = Engine(exchange)
    for acct in (1, 2):
        for asset in ("USD", "BTC"):
            apply(engine, Deposit(0, acct, asset, 10**15), T0)
    return engine


@pytest.mark.parametrize(
    "cmd",
    [
        order(1, BUY, 4_000_000, 100, "late-1"),
        Cancel(0, 1, M, 1),
        Replace(0, 1, M, 1, "", "", 3_900_000, 50),
        MassCancel(0, 1, M),
        Deposit(0, 1, "USD", 5),
        Withdraw(0, 1, "USD", 5),
    ],
    ids=lambda c: type(c).__name__,
)
def test_a_write_past_its_deadline_changes_nothing(exchange: Exchange, cmd: object) -> None:
    engine = funded(exchange)
    (ack,) = apply(engine, order(1, BUY, 4_000_000, 100, "resting"), T0)
    assert isinstance(ack, Executions)
    hash_before, seq_before = engine.state_hash(), engine.seq
    cmd.deadline = T0 + 10  # type: ignore[attr-defined]
    (reply,) = apply(engine, cmd, T0 + 11)
    assert isinstance(reply, Rejected) and reply.code == RejectCode.DEADLINE_PASSED, reply
    assert "not executed" in reply.reason
    assert engine.seq == seq_before + 1  # journaled (the journal records inputs), like a reject
    engine.seq = seq_before
    assert engine.state_hash() == hash_before  # nothing else moved
    engine.validate()


def test_a_write_on_its_deadline_executes(exchange: Exchange) -> None:
    engine = funded(exchange)
    (reply,) = apply(engine, order(1, BUY, 4_000_000, 100, "on-time", deadline=T0 + 10), T0 + 10)
    assert isinstance(reply, Executions)
    (cxl,) = apply(engine, Cancel(0, 1, M, 0, "on-time", deadline=T0 + 20), T0 + 20)
    assert isinstance(cxl, Executions)
    assert cxl.reports[-1].status == OrderStatus.CANCELED


def test_deadline_decisions_replay_identically(exchange: Exchange) -> None:
    """Two engines fed the same (command, timestamp) stream end in the same state: the deadline
    is decided on the journaled batch timestamp, never on a clock read inside the core."""
    stream = []
    for i in range(40):
        ts = T0 + 100 * i
        deadline = ts + (50 if i % 3 else -1)  # every third is late
        stream.append((order(1 + i % 2, BUY if i % 2 else SELL, 4_000_000 + i, 10, f"c{i}",
                             deadline=deadline), ts))  # fmt: skip
    engines = [funded(exchange), funded(exchange)]
    outcomes = []
    for engine in engines:
        replies = [apply(engine, cmd, ts)[-1] for cmd, ts in stream]
        outcomes.append([type(r).__name__ for r in replies])
        engine.validate()
    assert outcomes[0] == outcomes[1]
    assert outcomes[0].count("Rejected") == 14  # i = 0, 3, ..., 39
    assert engines[0].state_hash() == engines[1].state_hash()


def test_reads_ignore_deadlines_and_have_none(exchange: Exchange) -> None:
    engine = funded(exchange)
    (reply,) = apply(engine, BalancesRequest(0, 1), T0 + 10**12)
    assert isinstance(reply, Balances)
    assert not hasattr(OpenOrdersRequest(0, 1), "deadline")


# ------------------------------------------------------------------ cheap status queries


class NoScan(dict):
    """The closed-order memory, refusing to be scanned (a status query must use the index)."""

    def values(self):  # type: ignore[override]
        raise AssertionError("the closed-order memory was scanned")

    def items(self):  # type: ignore[override]
        raise AssertionError("the closed-order memory was scanned")

    def __iter__(self):  # type: ignore[override]
        raise AssertionError("the closed-order memory was scanned")


def close_orders(engine: Engine, n: int, prefix: str = "x") -> None:
    for i in range(n):
        cid = f"{prefix}{i}"
        assert isinstance(apply(engine, order(1, BUY, 100_000 + i, 10, cid), T0)[-1], Executions)
        assert isinstance(apply(engine, Cancel(0, 1, M, 0, cid), T0)[-1], Executions)


def status(engine: Engine, acct: int, cid: str) -> object:
    (reply,) = apply(engine, OrderStatusRequest(0, acct, M, 0, cid), T0)
    return reply


def test_status_of_a_closed_order_by_client_id_uses_an_index(exchange: Exchange) -> None:
    engine = funded(exchange)
    close_orders(engine, 500)
    engine.closed = NoScan(engine.closed)
    reply = status(engine, 1, "x123")
    assert isinstance(reply, OrderInfo) and reply.order.status == OrderStatus.CANCELED
    assert reply.order.client_order_id == "x123"
    missing = status(engine, 1, "never-used")
    assert isinstance(missing, Rejected) and missing.code == RejectCode.UNKNOWN_ORDER
    other = status(engine, 2, "x123")  # another account's client id is not this account's
    assert isinstance(other, Rejected) and other.code == RejectCode.UNKNOWN_ORDER


def test_the_newest_closed_order_answers_for_a_reused_client_id(exchange: Exchange) -> None:
    engine = funded(exchange)
    for price in (100_000, 100_001, 100_002):
        apply(engine, order(1, BUY, price, 10, "again"), T0)
        apply(engine, Cancel(0, 1, M, 0, "again"), T0)
    reply = status(engine, 1, "again")
    assert isinstance(reply, OrderInfo) and reply.order.price == 100_002
    apply(engine, order(1, BUY, 100_003, 10, "again"), T0)  # open now: the open one answers
    reply = status(engine, 1, "again")
    assert isinstance(reply, OrderInfo) and reply.order.status == OrderStatus.NEW
    assert reply.order.price == 100_003
    engine.validate()


def test_forgotten_closed_orders_leave_the_index(exchange: Exchange) -> None:
    exchange.engine.closed_orders_kept = 50
    engine = funded(exchange)
    close_orders(engine, 120)
    assert len(engine.closed) == 50 and len(engine.closed_cids) == 50
    assert isinstance(status(engine, 1, "x119"), OrderInfo)
    assert isinstance(status(engine, 1, "x70"), OrderInfo)
    forgotten = status(engine, 1, "x69")
    assert isinstance(forgotten, Rejected) and forgotten.code == RejectCode.UNKNOWN_ORDER
    engine.validate()


# ------------------------------------------------------------- walks without copying


def deep_book(exchange: Exchange) -> Engine:
    engine = funded(exchange)
    for i in range(200):
        apply(engine, order(2, SELL, 5_000_000 + i, 10), T0)
    return engine


def no_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    if engine_build() == "compiled":
        # A compiled class cannot be patched; make test runs this file on the interpreted
        # build too, where the same source is checked.
        pytest.skip("checked on the interpreted build (a compiled Book cannot be patched)")

    def levels(self: Book, side: int, depth: int = 0) -> list:
        raise AssertionError("the ladder was copied")

    monkeypatch.setattr(Book, "levels", levels)


def test_fok_market_and_quote_walks_iterate_the_ladder(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = deep_book(exchange)
    no_copies(monkeypatch)
    (quote,) = apply(engine, QuoteRequest(0, M, BUY, 25), T0)
    assert isinstance(quote, QuoteReply) and quote.qty == 25 and quote.complete
    assert quote.worst_price == 5_000_002
    fok = NewOrder(0, 1, M, BUY, LIMIT, FOK, 5_000_001, 20)
    done = apply(engine, fok, T0)[-1]  # after the makers' own reports
    assert isinstance(done, Executions) and done.reports[-1].status == OrderStatus.FILLED
    market = NewOrder(0, 1, M, BUY, MARKET, 0, 0, 15)
    filled = apply(engine, market, T0)[-1]
    assert isinstance(filled, Executions) and filled.reports[-1].cum_qty == 15
    engine.validate()


def test_mass_cancel_past_deadline_keeps_orders(exchange: Exchange) -> None:
    engine = funded(exchange)
    apply(engine, order(1, BUY, 4_000_000, 100, "keep"), T0)
    (late,) = apply(engine, MassCancel(0, 1, "", deadline=T0), T0 + 1)
    assert isinstance(late, Rejected)
    (open_,) = apply(engine, OpenOrdersRequest(0, 1), T0 + 2)
    assert isinstance(open_, OpenOrders) and [o.client_order_id for o in open_.orders] == ["keep"]
    ok = apply(engine, MassCancel(0, 1, "", deadline=T0 + 5), T0 + 3)[-1]  # after the report
    assert isinstance(ok, MassCancelReply) and ok.count == 1


def test_recent_trades_from_any_id_are_the_same_window(exchange: Exchange) -> None:
    engine = funded(exchange)
    for _ in range(30):
        apply(engine, order(2, SELL, 5_000_000, 10), T0)
        apply(engine, NewOrder(0, 1, M, BUY, LIMIT, 0, 5_000_000, 10), T0)
    ids = [t[0].trade_id for t in engine.books[M].recent]
    assert len(ids) == 30
    for from_id in (ids[0], ids[3], ids[14], ids[15], ids[28], ids[-1], ids[-1] + 1):
        for limit in (1, 5, 100):
            (reply,) = apply(engine, TradesRequest(0, M, from_id, limit), T0)
            assert isinstance(reply, TradesReply)
            want = [i for i in ids if i >= from_id][:limit]
            assert [t.trade_id for t in reply.trades] == want, (from_id, limit)

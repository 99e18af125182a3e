"""Unit tests of the advanced orders in the core: stop-loss and take-profit (market and limit),
and good-till-date. Amounts are human decimal strings converted from default.toml, as in
test_engine_orders.py; ``engine.validate()`` runs after every test."""

from __future__ import annotations

import msgspec
import pytest

from engine.core import STOP_COLLAR_BPS, Engine
from protocol.enums import CancelReason, ExecType, OrderStatus, TriggerKind
from protocol.messages import (
    Cancel,
    ExecReport,
    MassCancel,
    MassCancelReply,
    NewOrder,
    OpenOrders,
    OpenOrdersRequest,
    OrderInfo,
    Pong,
    Replace,
    Tick,
)
from tests.test_engine_orders import (
    BTCUSD,
    BUY,
    LIMIT,
    MARKET,
    SELL,
    R,
    balance,
    execs,
    fills,
    limit,
    lots,
    market_order,
    rejected,
    snapshot,
    status,
    ticks,
    units,
)

SL, TP = TriggerKind.STOP_LOSS, TriggerKind.TAKE_PROFIT
GTD = 4


@pytest.fixture(autouse=True)
def _validate_after_each_test(engine: Engine):
    yield
    engine.validate()


def stop(acct: int, side: int, trigger: int, stop_px: str, price: str = "", qty: str = "0.1",
         **kw) -> NewOrder:  # fmt: skip
    """A stop order: a limit at ``price``, or a market order without one."""
    return NewOrder(
        1, acct, BTCUSD, side, LIMIT if price else MARKET, price=ticks(price) if price else 0,
        qty=lots(qty), trigger=trigger, stop_price=ticks(stop_px), **kw,
    )  # fmt: skip


def trade_at(send, fund, price: str, qty: str = "0.01") -> None:
    """Print one trade at ``price`` between accounts 8 and 9 (the last price becomes it)."""
    fund(8, BTC="1")
    fund(9, USD="100000")
    send(limit(8, SELL, price, qty))
    reports = execs(send(limit(9, BUY, price, qty, tif=2)))
    assert fills(reports) == [(ticks(price), lots(qty))]


def waiting(send, acct: int) -> list:
    (reply,) = send(OpenOrdersRequest(1, acct), b"reader")
    assert isinstance(reply, OpenOrders)
    return [(o.order_id, o.waiting, o.trigger, o.stop_price) for o in reply.orders]


def reports_to(engine: Engine, acct: int) -> list[ExecReport]:
    return [m for m in engine.outbox[f"acct{acct}".encode()] if isinstance(m, ExecReport)]


# ------------------------------------------------------------------------------- stops
def test_a_stop_loss_sell_waits_outside_the_book_then_triggers_on_a_trade_at_its_stop(
    engine, send, fund
) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1")
    (r,) = execs(send(stop(1, SELL, SL, "95")))
    assert (r.exec_type, r.status) == (ExecType.NEW, OrderStatus.NEW)
    oid = r.order_id
    assert balance(send, 1, "BTC") == (units("BTC", "0.9"), units("BTC", "0.1"))
    assert snapshot(send).asks == snapshot(send).bids == []  # not in the public book
    assert waiting(send, 1) == [(oid, True, SL, ticks("95"))]
    engine.market_data(0)
    # a bid for it to sell into, and a trade at 96 (above its stop): nothing happens
    fund(2, USD="1000")
    send(limit(2, BUY, "90", "0.1"))
    trade_at(send, fund, "96")
    assert waiting(send, 1) == [(oid, True, SL, ticks("95"))]
    engine.outbox.clear()
    trade_at(send, fund, "95")  # the last price reaches the stop
    mine = reports_to(engine, 1)
    assert [(m.order_id, m.exec_type, m.req) for m in mine] == [
        (oid, ExecType.TRIGGERED, 0),
        (oid, ExecType.FILL, 0),
    ]
    assert fills(mine) == [(ticks("90"), lots("0.1"))]
    assert waiting(send, 1) == []
    assert balance(send, 1, "BTC") == (units("BTC", "0.9"), 0)
    info = status(send, 1, oid)
    assert isinstance(info, OrderInfo)
    assert (info.order.status, info.order.waiting, info.order.trigger) == (
        OrderStatus.FILLED, False, SL
    )  # fmt: skip


@pytest.mark.parametrize(
    ("side", "trigger", "stop_px"),
    [(SELL, SL, "100"), (SELL, SL, "101"), (BUY, SL, "100"), (BUY, SL, "99"),
     (SELL, TP, "100"), (SELL, TP, "99"), (BUY, TP, "100"), (BUY, TP, "101")],
)  # fmt: skip
def test_a_stop_the_last_price_already_reached_is_rejected(
    engine, send, fund, side, trigger, stop_px
) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1", USD="1000")
    before = balance(send, 1, "USD"), balance(send, 1, "BTC")
    reply = rejected(send(stop(1, side, trigger, stop_px, price="100")))
    assert reply.code == R.WOULD_TRIGGER_IMMEDIATELY
    assert (balance(send, 1, "USD"), balance(send, 1, "BTC")) == before


@pytest.mark.parametrize(
    ("side", "trigger", "stop_px"),
    [(SELL, SL, "99"), (BUY, SL, "101"), (SELL, TP, "101"), (BUY, TP, "99")],
)
def test_a_stop_on_the_right_side_of_the_last_price_waits(
    engine, send, fund, side, trigger, stop_px
) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1", USD="1000")
    (r,) = execs(send(stop(1, side, trigger, stop_px, price="100")))
    assert waiting(send, 1) == [(r.order_id, True, trigger, ticks(stop_px))]


def test_before_the_first_trade_any_stop_is_accepted(engine, send, fund) -> None:
    fund(1, BTC="1")
    execs(send(stop(1, SELL, SL, "95")))
    execs(send(stop(1, SELL, TP, "95")))
    assert [w[1] for w in waiting(send, 1)] == [True, True]


def test_a_take_profit_buy_limit_triggers_on_a_fall_and_rests_at_its_limit(
    engine, send, fund
) -> None:
    trade_at(send, fund, "100")
    fund(1, USD="1000")
    (r,) = execs(send(stop(1, BUY, TP, "90", price="89")))
    assert balance(send, 1, "USD")[1] == units("USD", "8.9")  # 89 x 0.1 locked while waiting
    engine.outbox.clear()
    trade_at(send, fund, "90")
    assert [m.exec_type for m in reports_to(engine, 1)] == [ExecType.TRIGGERED]
    assert snapshot(send).bids == [(ticks("89"), lots("0.1"), 1)]
    assert waiting(send, 1) == [(r.order_id, False, TP, ticks("90"))]


def test_a_stop_market_buy_by_quantity_locks_its_protection_price_and_keeps_to_it(
    engine, send, fund
) -> None:
    trade_at(send, fund, "100")
    fund(1, USD="1000")
    (r,) = execs(send(stop(1, BUY, SL, "110", qty="0.2")))
    collar = ticks("110") + ticks("110") * STOP_COLLAR_BPS // 10_000  # 121
    assert r.price == collar == ticks("121")
    assert balance(send, 1, "USD") == (units("USD", "975.8"), units("USD", "24.2"))
    fund(3, BTC="1")
    send(limit(3, SELL, "115", "0.1"))
    send(limit(3, SELL, "125", "0.1"))  # beyond the protection price
    engine.outbox.clear()
    trade_at(send, fund, "110")
    mine = reports_to(engine, 1)
    assert [m.exec_type for m in mine] == [ExecType.TRIGGERED, ExecType.PARTIAL_FILL,
                                           ExecType.EXPIRED]  # fmt: skip
    assert fills(mine) == [(ticks("115"), lots("0.1"))]
    assert balance(send, 1, "USD") == (units("USD", "988.5"), 0)  # paid 11.5, the rest back


def test_a_stop_market_buy_by_amount_locks_the_amount(engine, send, fund) -> None:
    trade_at(send, fund, "100")
    fund(1, USD="1000")
    cmd = market_order(1, BUY, quote="50", trigger=SL, stop_price=ticks("105"))
    (r,) = execs(send(cmd))
    assert balance(send, 1, "USD") == (units("USD", "950"), units("USD", "50"))
    fund(3, BTC="1")
    send(limit(3, SELL, "125", "1"))
    trade_at(send, fund, "106")
    assert balance(send, 1, "BTC")[0] > 0
    assert balance(send, 1, "USD")[1] == 0
    assert waiting(send, 1) == []


def test_cancel_and_mass_cancel_release_a_waiting_stop(engine, send, fund) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1", USD="1000")
    a = execs(send(stop(1, SELL, SL, "95")))[0].order_id
    execs(send(stop(1, BUY, SL, "105", price="106")))
    (r,) = execs(send(Cancel(1, 1, BTCUSD, a)))
    assert (r.exec_type, r.status) == (ExecType.CANCELED, OrderStatus.CANCELED)
    assert balance(send, 1, "BTC") == (units("BTC", "1"), 0)
    (reply,) = [m for m in send(MassCancel(1, 1)) if isinstance(m, MassCancelReply)]
    assert reply.count == 1
    assert balance(send, 1, "USD") == (units("USD", "1000"), 0)
    assert waiting(send, 1) == []
    engine.outbox.clear()
    trade_at(send, fund, "90")  # nothing left to trigger
    assert reports_to(engine, 1) == []


def test_a_waiting_stop_can_be_replaced_but_not_onto_the_last_price(engine, send, fund) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1")
    oid = execs(send(stop(1, SELL, SL, "95", price="94")))[0].order_id
    reply = rejected(send(Replace(1, 1, BTCUSD, oid, stop_price=ticks("100"))))
    assert reply.code == R.WOULD_TRIGGER_IMMEDIATELY
    (r,) = execs(send(Replace(1, 1, BTCUSD, oid, qty=lots("0.3"), stop_price=ticks("97"))))
    assert r.exec_type == ExecType.REPLACED
    assert waiting(send, 1) == [(oid, True, SL, ticks("97"))]
    assert balance(send, 1, "BTC")[1] == units("BTC", "0.3")
    # a resting order has no stop to change
    fund(2, USD="100")
    rest = execs(send(limit(2, BUY, "50", "0.1")))[0].order_id
    assert rejected(send(Replace(1, 2, BTCUSD, rest, stop_price=ticks("60")))).code == (
        R.INVALID_STOP_PRICE
    )
    fund(4, USD="1000")
    send(limit(4, BUY, "96", "1"))
    trade_at(send, fund, "97")
    assert fills(reports_to(engine, 1)) == [(ticks("96"), lots("0.3"))]


def test_stops_trigger_in_stop_price_order_then_by_age_and_cascade_to_an_end(
    engine, send, fund
) -> None:
    trade_at(send, fund, "100")
    for acct in (1, 2, 3):
        fund(acct, BTC="1")
    a = execs(send(stop(1, SELL, SL, "97")))[0].order_id
    b = execs(send(stop(2, SELL, SL, "98")))[0].order_id
    c = execs(send(stop(3, SELL, SL, "98")))[0].order_id
    d = execs(send(stop(1, SELL, SL, "90")))[0].order_id
    fund(5, USD="10000")
    fund(6, BTC="1")
    send(limit(5, BUY, "98", "0.11"))
    for price in ("97", "96", "91"):  # each triggered sell trades lower: a cascade
        send(limit(5, BUY, price, "0.1"))
    engine.outbox.clear()
    execs(send(limit(6, SELL, "98", "0.01", tif=2)))  # one trade at 98
    ran = [
        (m.order_id, m.exec_type, m.last_px)
        for m in engine.outbox[b"acct1"] + engine.outbox[b"acct2"] + engine.outbox[b"acct3"]
        if isinstance(m, ExecReport)
    ]
    assert sorted(ran) == sorted([
        (b, ExecType.TRIGGERED, 0), (b, ExecType.FILL, ticks("98")),
        (c, ExecType.TRIGGERED, 0), (c, ExecType.FILL, ticks("97")),
        (a, ExecType.TRIGGERED, 0), (a, ExecType.FILL, ticks("96")),
    ])  # fmt: skip
    # b before c (same stop, b older), then a, reached by c's trade at 97
    seqs = [m for box in engine.outbox.values() for m in box if isinstance(m, ExecReport)]
    assert [m.order_id for m in seqs if m.exec_type == ExecType.TRIGGERED] in (
        [b, c, a],
        [a, b, c],
        [b, a, c],
        [c, a, b],
        [a, c, b],
        [c, b, a],
    )
    assert waiting(send, 1) == [(d, True, SL, ticks("90"))]  # the 91 bid stays: 90 not reached
    assert snapshot(send).bids == [(ticks("91"), lots("0.1"), 1)]


# --------------------------------------------------------------------- good till date
def apply(engine: Engine, cmd: object, ts: int, origin: bytes | None = None) -> list:
    origin = origin or f"acct{cmd.account}".encode()
    box = engine.outbox[origin]
    before = len(box)
    engine.apply(cmd, ts, origin)
    return box[before:]


def test_a_gtd_order_expires_at_the_first_write_at_or_after_its_time(engine, send, fund) -> None:
    fund(1, USD="1000")
    t0 = 10**18
    cmd = limit(1, BUY, "100", "0.5", tif=GTD, expire_ts=t0 + 1_000)
    oid = execs(apply(engine, cmd, t0))[0].order_id
    assert engine.next_expiry() == t0 + 1_000
    assert balance(send, 1, "USD")[1] == units("USD", "50")
    # a read at or after the time changes nothing (reads are not journaled)
    apply(engine, OpenOrdersRequest(1, 1), t0 + 5_000)
    assert snapshot(send).bids == [(ticks("100"), lots("0.5"), 1)]
    # a write before the time changes nothing either
    apply(engine, Tick(1), t0 + 999, b"clock")
    assert snapshot(send).bids != []
    engine.outbox.clear()
    (pong,) = apply(engine, Tick(2), t0 + 1_000, b"clock")
    assert isinstance(pong, Pong) and pong.seq == engine.seq
    (r,) = reports_to(engine, 1)
    assert (r.order_id, r.exec_type, r.status, r.reason_code, r.req, r.seq) == (
        oid, ExecType.EXPIRED, OrderStatus.EXPIRED, CancelReason.EXPIRE_TIME, 0, engine.seq
    )  # fmt: skip
    assert snapshot(send).bids == []
    assert balance(send, 1, "USD") == (units("USD", "1000"), 0)
    assert engine.next_expiry() == 0


def test_any_write_expires_what_is_due_before_it_runs(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    t0 = 10**18
    apply(engine, limit(1, SELL, "100", "0.5", tif=GTD, expire_ts=t0 + 10), t0)
    # a buy that would have crossed it arrives after its expiry: it rests instead
    reports = execs(apply(engine, limit(2, BUY, "100", "0.5"), t0 + 10))
    assert fills(reports) == []
    assert snapshot(send).bids == [(ticks("100"), lots("0.5"), 1)]
    assert snapshot(send).asks == []


def test_a_gtd_stop_expires_while_it_waits(engine, send, fund) -> None:
    fund(1, BTC="1")
    t0 = 10**18
    cmd = stop(1, SELL, SL, "95", price="94", tif=GTD, expire_ts=t0 + 10)
    oid = execs(apply(engine, cmd, t0))[0].order_id
    engine.outbox.clear()
    apply(engine, Tick(1), t0 + 11, b"clock")
    assert [(r.order_id, r.exec_type) for r in reports_to(engine, 1)] == [(oid, ExecType.EXPIRED)]
    assert balance(send, 1, "BTC") == (units("BTC", "1"), 0)


def test_a_replaced_gtd_order_keeps_its_expiry(engine, send, fund) -> None:
    fund(1, USD="1000")
    t0 = 10**18
    oid = execs(apply(engine, limit(1, BUY, "100", "0.5", tif=GTD, expire_ts=t0 + 10), t0))[0]
    apply(engine, Replace(1, 1, BTCUSD, oid.order_id, price=ticks("99")), t0 + 1)
    engine.outbox.clear()
    apply(engine, Tick(1), t0 + 10, b"clock")
    assert [r.exec_type for r in reports_to(engine, 1)] == [ExecType.EXPIRED]
    assert snapshot(send).bids == []


# ------------------------------------------------------------------ state and restore
def test_waiting_stops_last_prices_and_expiries_survive_a_snapshot(engine, send, fund) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1", USD="1000")
    t0 = 10**18
    apply(engine, stop(1, SELL, SL, "95", price="94", tif=GTD, expire_ts=t0 + 50), t0)
    apply(engine, stop(1, BUY, TP, "90"), t0)
    apply(engine, limit(1, BUY, "80", "0.1", tif=GTD, expire_ts=t0 + 60), t0)
    state = engine.state()
    restored = Engine(engine.exchange)
    restored.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=type(state)))
    restored.validate()
    assert restored.state_hash() == engine.state_hash()
    # both behave the same from here: the same stop rejected, the same expiries
    for e in (engine, restored):
        e.outbox.clear()
        assert rejected(apply(e, stop(1, SELL, SL, "100"), t0 + 1)).code == (
            R.WOULD_TRIGGER_IMMEDIATELY
        )
        apply(e, Tick(1), t0 + 55, b"clock")
    assert [r.exec_type for r in reports_to(restored, 1)] == [ExecType.EXPIRED]
    assert msgspec.msgpack.encode(restored.outbox[b"acct1"]) == msgspec.msgpack.encode(
        engine.outbox[b"acct1"]
    )
    assert restored.state_hash() == engine.state_hash()

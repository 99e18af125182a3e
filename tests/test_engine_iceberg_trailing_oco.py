"""Unit tests of the advanced orders added after stops and GTD: icebergs, trailing stops and
one-cancels-the-other lists, each with its rejects. Amounts are human decimal strings converted
from default.toml, as in test_engine_orders.py; ``engine.validate()`` runs after every test."""

from __future__ import annotations

import msgspec
import pytest

from engine.core import Engine
from protocol.enums import CancelReason, ExecType, OrderStatus, TriggerKind
from protocol.messages import (
    Cancel,
    Command,
    MassCancel,
    MassCancelReply,
    NewOrder,
    NewOrderList,
    OrderInfo,
    Replace,
)
from tests.test_engine_advanced import reports_to, stop, trade_at, waiting
from tests.test_engine_orders import (
    BTCUSD,
    BUY,
    FOK,
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


@pytest.fixture(autouse=True)
def _validate_after_each_test(engine: Engine):
    yield
    engine.validate()


def iceberg(acct: int, side: int, price: str, qty: str, show: str, **kw) -> NewOrder:
    return limit(acct, side, price, qty, display_qty=lots(show), **kw)


# --------------------------------------------------------------------------------- icebergs


def test_an_iceberg_shows_only_its_visible_part_and_locks_the_whole(engine, send, fund) -> None:
    fund(1, BTC="1")
    (r,) = execs(send(iceberg(1, SELL, "100", "0.5", "0.1")))
    assert (r.exec_type, r.leaves_qty) == (ExecType.NEW, lots("0.5"))
    assert snapshot(send).asks == [(ticks("100"), lots("0.1"), 1)]
    assert balance(send, 1, "BTC") == (units("BTC", "0.5"), units("BTC", "0.5"))
    info = status(send, 1, r.order_id)
    assert isinstance(info, OrderInfo) and info.order.display_qty == lots("0.1")


def test_each_refill_goes_to_the_back_of_its_level(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, BTC="1")
    fund(3, USD="10000")
    ice = execs(send(iceberg(1, SELL, "100", "0.3", "0.1")))[0].order_id
    plain = execs(send(limit(2, SELL, "100", "0.2")))[0].order_id
    assert snapshot(send).asks == [(ticks("100"), lots("0.3"), 2)]
    engine.outbox.clear()
    # 0.15 takes the iceberg's visible 0.1, then (it refilled behind) 0.05 of the plain order
    reports = execs(send(limit(3, BUY, "100", "0.15", tif=2)))
    assert fills(reports) == [(ticks("100"), lots("0.1")), (ticks("100"), lots("0.05"))]
    assert [r.order_id for r in reports_to(engine, 1)] == [ice]
    assert [r.order_id for r in reports_to(engine, 2)] == [plain]
    # visible: the plain order's 0.15 and the iceberg's next 0.1
    assert snapshot(send).asks == [(ticks("100"), lots("0.25"), 2)]
    # a big taker takes everything: plain first, then the iceberg part by part
    reports = execs(send(limit(3, BUY, "100", "0.5", tif=2)))
    assert fills(reports) == [(ticks("100"), lots(q)) for q in ("0.15", "0.1", "0.1")]
    assert snapshot(send).asks == []
    assert balance(send, 1, "BTC") == (units("BTC", "0.7"), 0)


def test_fok_counts_an_icebergs_hidden_part(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(3, USD="10000")
    send(iceberg(1, SELL, "100", "0.5", "0.1"))
    reports = execs(send(limit(3, BUY, "100", "0.4", tif=FOK)))
    assert sum(q for _, q in fills(reports)) == lots("0.4")


def test_an_own_order_behind_an_iceberg_stops_a_fok_at_what_is_reachable(
    engine, send, fund
) -> None:
    """The iceberg's refill queues behind the taker's own order, where self-trade
    prevention stops the taker: a FOK must see only the visible part."""
    fund(1, BTC="1")
    fund(3, BTC="1", USD="10000")
    send(iceberg(1, SELL, "100", "0.5", "0.1"))
    send(limit(3, SELL, "100", "0.1"))  # account 3's own ask, behind the iceberg
    reports = execs(send(limit(3, BUY, "100", "0.2", tif=FOK)))
    assert (reports[-1].exec_type, fills(reports)) == (ExecType.EXPIRED, [])
    reports = execs(send(limit(3, BUY, "100", "0.1", tif=FOK)))
    assert fills(reports) == [(ticks("100"), lots("0.1"))]


def test_reducing_an_iceberg_in_place_shows_at_most_what_is_left(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(3, USD="10000")
    oid = execs(send(iceberg(1, SELL, "100", "0.5", "0.2")))[0].order_id
    send(limit(3, BUY, "100", "0.15", tif=2))  # visible 0.05 left of 0.2
    execs(send(Replace(1, 1, BTCUSD, oid, qty=lots("0.4"))))  # leaves 0.25, keeps its place
    assert snapshot(send).asks == [(ticks("100"), lots("0.05"), 1)]
    execs(send(Replace(1, 1, BTCUSD, oid, qty=lots("0.17"))))  # leaves 0.02
    assert snapshot(send).asks == [(ticks("100"), lots("0.02"), 1)]


@pytest.mark.parametrize(
    ("order", "code"),
    [
        (iceberg(1, SELL, "100", "0.5", "0.6"), R.INVALID_DISPLAY_QTY),  # above the total
        (limit(1, SELL, "100", "0.5", display_qty=-1), R.INVALID_DISPLAY_QTY),
        (iceberg(1, SELL, "100", "0.5", "0.1", tif=2), R.INVALID_TIME_IN_FORCE),  # IOC
        (market_order(1, SELL, "0.5", display_qty=lots("0.1")), R.INVALID_DISPLAY_QTY),
    ],
)
def test_iceberg_rejects(engine, send, fund, order, code) -> None:
    fund(1, BTC="1")
    assert rejected(send(order)).code == code
    assert balance(send, 1, "BTC") == (units("BTC", "1"), 0)


def test_icebergs_survive_a_snapshot_showing_what_they_showed(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(3, USD="10000")
    send(iceberg(1, SELL, "100", "0.5", "0.2"))
    send(limit(3, BUY, "100", "0.05", tif=2))
    state = engine.state()
    restored = Engine(engine.exchange)
    restored.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=type(state)))
    restored.validate()
    assert restored.state_hash() == engine.state_hash()
    assert restored.book_snapshot(restored.books[BTCUSD]).asks == [(ticks("100"), lots("0.15"), 1)]


# --------------------------------------------------------------------------- trailing stops


def trailing(acct: int, side: int, bps: int, activation: str = "", **kw) -> NewOrder:
    o = stop(acct, side, SL, activation or "1", **kw)
    return msgspec.structs.replace(o, trailing_bps=bps, stop_price=o.stop_price if activation
                                   else 0)  # fmt: skip


def test_a_trailing_sell_follows_the_highest_price_and_triggers_on_the_retrace(
    engine, send, fund
) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1")
    fund(2, USD="10000")
    send(limit(2, BUY, "50", "0.1"))  # something for the stop to sell into
    oid = execs(send(trailing(1, SELL, 500)))[0].order_id  # 5%: triggers at 95 from 100
    assert engine.orders[oid].peak == ticks("100")
    trade_at(send, fund, "110")  # a new high: it now triggers at 110 - 5.5 = 104.5
    info = status(send, 1, oid)
    assert (info.order.trail_price, info.order.waiting) == (ticks("110"), True)
    trade_at(send, fund, "105")  # above 104.5: nothing
    assert waiting(send, 1) == [(oid, True, SL, 0)]
    engine.outbox.clear()
    trade_at(send, fund, "104.5")
    mine = reports_to(engine, 1)
    assert [m.exec_type for m in mine] == [ExecType.TRIGGERED, ExecType.FILL]
    assert fills(mine) == [(ticks("50"), lots("0.1"))]


def test_a_trailing_buy_with_an_activation_price_starts_following_there(engine, send, fund) -> None:
    trade_at(send, fund, "100")
    fund(1, USD="10000")
    # a take-profit buy: activates when the price falls to 90, then triggers 2% up from the low
    o = msgspec.structs.replace(stop(1, BUY, TP, "90", price="120"), trailing_bps=200)
    oid = execs(send(o))[0].order_id
    trade_at(send, fund, "91")
    assert engine.orders[oid].peak == 0  # not yet: 91 is above 90
    trade_at(send, fund, "89")  # activated: follows from 89
    assert (engine.orders[oid].peak, engine.orders[oid].waiting) == (ticks("89"), True)
    trade_at(send, fund, "85")  # a new low: it triggers at 85 + 1.7 = 86.7
    trade_at(send, fund, "86.5")
    assert engine.orders[oid].waiting
    trade_at(send, fund, "86.7")
    assert oid not in engine.orders or not engine.orders[oid].waiting
    info = status(send, 1, oid)
    assert info.order.waiting is False


@pytest.mark.parametrize("bps", [9, 2_001, -5])
def test_a_trailing_distance_out_of_range_is_rejected(engine, send, fund, bps) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1")
    assert rejected(send(trailing(1, SELL, bps))).code == R.INVALID_TRAILING


def test_a_trailing_distance_on_an_order_that_is_no_stop_is_rejected(engine, send, fund) -> None:
    fund(1, BTC="1")
    code = rejected(send(limit(1, SELL, "100", "0.1", trailing_bps=100))).code
    assert code == R.INVALID_TRAILING


def test_a_trailing_stop_without_activation_needs_a_last_price(engine, send, fund) -> None:
    fund(1, BTC="1")
    assert rejected(send(trailing(1, SELL, 100))).code == R.INVALID_TRAILING


def test_a_following_trailing_stops_price_cannot_be_replaced(engine, send, fund) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1")
    oid = execs(send(trailing(1, SELL, 100)))[0].order_id
    reply = rejected(send(Replace(1, 1, BTCUSD, oid, stop_price=ticks("90"))))
    assert reply.code == R.INVALID_STOP_PRICE
    execs(send(Replace(1, 1, BTCUSD, oid, qty=lots("0.05"))))  # its size can change
    assert balance(send, 1, "BTC") == (units("BTC", "0.95"), units("BTC", "0.05"))


# ------------------------------------------------------------------- one-cancels-the-other


def oco(acct: int, side: int, price: str, stop_px: str, stop_limit: str = "", qty: str = "0.1",
        **kw) -> NewOrderList:  # fmt: skip
    return NewOrderList(
        1, acct, BTCUSD, side, lots(qty), ticks(price), ticks(stop_px),
        ticks(stop_limit) if stop_limit else 0, **kw,
    )  # fmt: skip


def test_a_sell_list_rests_its_limit_waits_its_stop_and_locks_once(engine, send, fund) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1")
    a, b = execs(send(oco(1, SELL, "110", "90", "89")))
    assert (a.exec_type, b.exec_type) == (ExecType.NEW, ExecType.NEW)
    assert (a.price, b.price, b.stop_price, b.trigger) == (
        ticks("110"),
        ticks("89"),
        ticks("90"),
        SL,
    )
    assert balance(send, 1, "BTC") == (units("BTC", "0.9"), units("BTC", "0.1"))
    assert snapshot(send).asks == [(ticks("110"), lots("0.1"), 1)]
    assert sorted(waiting(send, 1)) == [
        (a.order_id, False, 0, 0),
        (b.order_id, True, SL, ticks("90")),
    ]
    list_ids = {status(send, 1, o).order.list_id for o in (a.order_id, b.order_id)}
    assert list_ids == {a.order_id}


def test_a_fill_of_the_limit_cancels_the_stop(engine, send, fund) -> None:
    trade_at(send, fund, "100")
    fund(1, USD="10000")
    fund(2, BTC="1")
    a, b = execs(send(oco(1, BUY, "95", "105", "106")))
    # the buy list holds the larger need: the stop's 106 x 0.1
    assert balance(send, 1, "USD")[1] == units("USD", "10.6")
    engine.outbox.clear()
    send(limit(2, SELL, "95", "0.04"))  # a partial fill of the limit
    mine = reports_to(engine, 1)
    assert [(m.order_id, m.exec_type, m.reason_code) for m in mine] == [
        (a.order_id, ExecType.PARTIAL_FILL, 0),
        (b.order_id, ExecType.CANCELED, CancelReason.LINKED),
    ]
    # the limit now holds only its own need: 95 x 0.06
    assert balance(send, 1, "USD")[1] == units("USD", "5.7")
    assert waiting(send, 1) == [(a.order_id, False, 0, 0)]


def test_the_stops_trigger_cancels_the_limit_and_takes_its_funds(engine, send, fund) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1")
    fund(2, USD="10000")
    a, b = execs(send(oco(1, SELL, "110", "90")))  # a stop market leg
    send(limit(2, BUY, "85", "0.1"))
    engine.outbox.clear()
    trade_at(send, fund, "90")
    mine = reports_to(engine, 1)
    assert [(m.order_id, m.exec_type) for m in mine] == [
        (a.order_id, ExecType.CANCELED),
        (b.order_id, ExecType.TRIGGERED),
        (b.order_id, ExecType.FILL),
    ]
    assert mine[0].reason_code == CancelReason.LINKED
    assert fills(mine) == [(ticks("85"), lots("0.1"))]
    assert balance(send, 1, "BTC") == (units("BTC", "0.9"), 0)
    assert snapshot(send).asks == []


@pytest.mark.parametrize("leg", [0, 1])
def test_cancelling_either_order_cancels_the_list(engine, send, fund, leg) -> None:
    trade_at(send, fund, "100")
    fund(1, USD="10000")
    ids = [r.order_id for r in execs(send(oco(1, BUY, "95", "105")))]
    reports = execs(send(Cancel(1, 1, BTCUSD, ids[leg])))
    assert [(r.order_id, r.exec_type) for r in reports] == [
        (ids[leg], ExecType.CANCELED), (ids[1 - leg], ExecType.CANCELED)
    ]  # fmt: skip
    assert balance(send, 1, "USD") == (units("USD", "10000"), 0)
    assert waiting(send, 1) == []


def test_mass_cancel_cancels_both_orders_of_a_list(engine, send, fund) -> None:
    trade_at(send, fund, "100")
    fund(1, USD="10000")
    execs(send(oco(1, BUY, "95", "105")))
    (reply,) = [m for m in send(MassCancel(1, 1, BTCUSD)) if isinstance(m, MassCancelReply)]
    assert reply.count == 2
    assert balance(send, 1, "USD") == (units("USD", "10000"), 0)


@pytest.mark.parametrize(
    ("side", "price", "stop_px", "last"),
    [(SELL, "90", "110", "100"), (SELL, "110", "101", "100"), (SELL, "99", "90", "100"),
     (BUY, "105", "95", "100"), (BUY, "95", "99", "100"), (BUY, "101", "105", "100"),
     (SELL, "90", "95", "")],
)  # fmt: skip
def test_a_list_with_its_prices_on_the_wrong_sides_is_rejected(
    engine, send, fund, side, price, stop_px, last
) -> None:
    if last:
        trade_at(send, fund, last)
    fund(1, BTC="1", USD="10000")
    assert rejected(send(oco(1, side, price, stop_px))).code == R.INVALID_ORDER_LIST
    assert balance(send, 1, "BTC") == (units("BTC", "1"), 0)


def test_a_list_needs_the_funds_of_each_order_and_locks_nothing_when_rejected(
    engine, send, fund
) -> None:
    trade_at(send, fund, "100")
    fund(1, USD="10")  # enough for the limit (95 x 0.1 = 9.5), not for the stop at 106
    next_id = engine.next_order_id
    assert rejected(send(oco(1, BUY, "95", "105", "106"))).code == R.INSUFFICIENT_FUNDS
    assert balance(send, 1, "USD") == (units("USD", "10"), 0)
    assert engine.next_order_id == next_id
    fund(2, BTC="1")
    assert rejected(send(oco(2, SELL, "99", "90"))).code == R.INVALID_ORDER_LIST
    code = rejected(send(oco(2, SELL, "100", "90", limit_client_order_id="x",
                             stop_client_order_id="x"))).code  # fmt: skip
    assert code == R.DUPLICATE_CLIENT_ORDER_ID


def test_a_list_whose_limit_would_take_is_rejected(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="10000")
    send(limit(2, BUY, "120", "0.1"))  # a bid above the list's limit: post-only would cross
    assert rejected(send(oco(1, SELL, "110", "90"))).code == R.POST_ONLY_WOULD_CROSS


def test_an_order_of_a_list_cannot_be_replaced(engine, send, fund) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1")
    a, b = execs(send(oco(1, SELL, "110", "90")))
    for oid in (a.order_id, b.order_id):
        reply = rejected(send(Replace(1, 1, BTCUSD, oid, price=ticks("111"))))
        assert reply.code == R.ORDER_LIST_LEG


def test_lists_and_trailing_stops_survive_a_snapshot(engine, send, fund) -> None:
    trade_at(send, fund, "100")
    fund(1, BTC="1")
    execs(send(oco(1, SELL, "110", "90")))
    execs(send(trailing(1, SELL, 300)))
    state = engine.state()
    restored = Engine(engine.exchange)
    restored.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=type(state)))
    restored.validate()
    assert restored.state_hash() == engine.state_hash()
    assert {o.id: (o.link, o.trail, o.peak) for o in restored.orders.values()} == {
        o.id: (o.link, o.trail, o.peak) for o in engine.orders.values()
    }
    assert all(o.status == OrderStatus.NEW for o in restored.orders.values())


# ------------------------------------------------------------------------ wire and journal


def test_a_new_order_frame_from_before_the_appended_fields_decodes_with_their_defaults() -> None:
    """Journals and gateways older than icebergs and trailing stops sent NewOrder without
    ``display_qty`` and ``trailing_bps`` (and before stops, without trigger, stop price and
    expiry): such a frame is still a NewOrder, the missing fields their defaults."""
    full = msgspec.msgpack.decode(msgspec.msgpack.encode(limit(1, BUY, "100", "0.1")))
    for dropped in (2, 5):  # before icebergs/trailing; before stops and GTD too
        old = msgspec.msgpack.encode(full[:-dropped])
        cmd = msgspec.msgpack.decode(old, type=Command)
        assert cmd == limit(1, BUY, "100", "0.1")
        assert (cmd.display_qty, cmd.trailing_bps, cmd.trigger) == (0, 0, 0)

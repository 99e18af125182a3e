"""Unit tests of the matching and ledger core, one behaviour each, on the default exchange.

Prices, quantities and expected balances are written as human decimal strings and converted
here with ``Decimal`` from the values in default.toml, so the expected numbers never come from
the engine's own scale arithmetic. An autouse fixture runs ``engine.validate()`` after every
test.
"""

from __future__ import annotations

import tomllib
from decimal import ROUND_FLOOR, Decimal

import msgspec
import pytest

from engine.core import Engine
from protocol.config import DEFAULT_CONFIG, MAX_INT, loads
from protocol.enums import (
    CancelReason,
    ExecType,
    Liquidity,
    OrderStatus,
    OrderType,
    RejectCode,
    Side,
    StpMode,
    TimeInForce,
)
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
    MassCancel,
    MassCancelReply,
    NewOrder,
    OpenOrders,
    OpenOrdersRequest,
    OrderHistory,
    OrderHistoryRequest,
    OrderInfo,
    OrderStatusRequest,
    Ping,
    Pong,
    QuoteReply,
    QuoteRequest,
    Rejected,
    Replace,
    SnapshotRequest,
    Trades,
    Watch,
    Watching,
    Withdraw,
)
from tests.conftest import minor_units

RAW = tomllib.loads(DEFAULT_CONFIG.read_text())
BTCUSD, ETHUSD = "BTC-USD", "ETH-USD"
BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET = OrderType.LIMIT, OrderType.MARKET
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
R = RejectCode


# ------------------------------------------------------------------ independent arithmetic


def _whole(value: Decimal) -> int:
    assert value == value.to_integral_value(), value
    return int(value)


def ticks(text: str, market: str = BTCUSD) -> int:
    return _whole(Decimal(text) / Decimal(RAW["markets"][market]["tick"]))


def lots(text: str, market: str = BTCUSD) -> int:
    return _whole(Decimal(text) / Decimal(RAW["markets"][market]["lot"]))


def units(asset: str, text: str) -> int:
    return minor_units(RAW["assets"][asset]["decimals"], text)


def fee(amount: int, kind: str, market: str = BTCUSD) -> int:
    """Fee in minor units on ``amount`` minor units received, rounded down."""
    rate = Decimal(RAW["markets"][market][f"{kind}_fee"])
    return int((amount * rate).to_integral_value(rounding=ROUND_FLOOR))


def max_ticks(market: str = BTCUSD) -> int:
    return ticks(RAW["markets"][market]["max_price"], market)


def max_lots(market: str = BTCUSD) -> int:
    return lots(RAW["markets"][market]["max_qty"], market)


# ---------------------------------------------------------------------------- commands


def limit(acct: int, side: int, price: str, qty: str, market: str = BTCUSD, **kw) -> NewOrder:
    return NewOrder(
        1, acct, market, side, LIMIT, price=ticks(price, market), qty=lots(qty, market), **kw
    )


def market_order(
    acct: int, side: int, qty: str = "", quote: str = "", market: str = BTCUSD, **kw
) -> NewOrder:
    q = lots(qty, market) if qty else 0
    budget = units(RAW["markets"][market]["quote"], quote) if quote else 0
    return NewOrder(1, acct, market, side, MARKET, qty=q, quote_qty=budget, **kw)


# ----------------------------------------------------------------------------- replies


def execs(msgs: list) -> list[ExecReport]:
    """The reports of the one Executions reply among ``msgs``."""
    (reply,) = [m for m in msgs if isinstance(m, Executions | Rejected)]
    assert isinstance(reply, Executions), reply
    return reply.reports


def rejected(msgs: list) -> Rejected:
    (reply,) = msgs
    assert isinstance(reply, Rejected), reply
    return reply


def fills(reports: list[ExecReport]) -> list[tuple[int, int]]:
    return [(r.last_px, r.last_qty) for r in reports if r.last_qty]


def order_id(msgs: list) -> int:
    return execs(msgs)[0].order_id


def balance(send, acct: int, asset: str) -> tuple[int, int]:
    (reply,) = send(BalancesRequest(1, acct), b"reader")
    assert isinstance(reply, Balances)
    (b,) = [b for b in reply.balances if b.asset == asset]
    return b.available, b.locked


def open_ids(send, acct: int, market: str = "") -> set[int]:
    (reply,) = send(OpenOrdersRequest(1, acct, market), b"reader")
    assert isinstance(reply, OpenOrders)
    return {o.order_id for o in reply.orders}


def snapshot(send, market: str = BTCUSD, depth: int = 0) -> BookSnapshot:
    (reply,) = send(SnapshotRequest(1, market, depth), b"reader")
    assert isinstance(reply, BookSnapshot)
    return reply


def status(send, acct: int, oid: int = 0, cid: str = "", market: str = BTCUSD):
    (reply,) = send(OrderStatusRequest(1, acct, market, oid, cid), b"reader")
    return reply


def unsolicited(engine: Engine, acct: int) -> list[ExecReport]:
    return [m for m in engine.outbox[f"acct{acct}".encode()] if isinstance(m, ExecReport)]


def observable(engine: Engine) -> bytes:
    """The whole engine state except the sequence number (which every write consumes)."""
    return msgspec.msgpack.encode(msgspec.structs.replace(engine.state(), seq=0))


@pytest.fixture(autouse=True)
def _validate_after_each_test(engine: Engine):
    yield
    engine.validate()


# ------------------------------------------------------------------------ limit orders


def test_limit_gtc_buy_rests_and_locks_price_times_qty_in_quote(engine, send, fund) -> None:
    fund(1, USD="1000")
    reports = execs(send(limit(1, BUY, "100", "0.5", client_order_id="a")))
    (r,) = reports
    assert (r.exec_type, r.status) == (ExecType.NEW, OrderStatus.NEW)
    assert (r.price, r.qty, r.leaves_qty, r.cum_qty) == (ticks("100"), lots("0.5"), lots("0.5"), 0)
    assert r.client_order_id == "a"
    assert balance(send, 1, "USD") == (units("USD", "950"), units("USD", "50"))
    book = snapshot(send)
    assert book.bids == [(ticks("100"), lots("0.5"), 1)]
    assert book.asks == []
    assert open_ids(send, 1) == {r.order_id}


def test_limit_gtc_sell_rests_and_locks_qty_in_base(engine, send, fund) -> None:
    fund(1, BTC="1")
    execs(send(limit(1, SELL, "200", "0.25")))
    assert balance(send, 1, "BTC") == (units("BTC", "0.75"), units("BTC", "0.25"))
    assert snapshot(send).asks == [(ticks("200"), lots("0.25"), 1)]


def test_ioc_fills_what_it_can_and_expires_the_remainder(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.2"))
    reports = execs(send(limit(2, BUY, "100", "0.5", tif=IOC)))
    assert fills(reports) == [(ticks("100"), lots("0.2"))]
    last = reports[-1]
    assert (last.exec_type, last.status) == (ExecType.EXPIRED, OrderStatus.EXPIRED)
    assert last.reason_code == CancelReason.IOC_REMAINDER
    assert last.cum_qty == lots("0.2")
    assert balance(send, 2, "USD") == (units("USD", "980"), 0)
    got_btc = units("BTC", "0.2")
    assert balance(send, 2, "BTC") == (got_btc - fee(got_btc, "taker"), 0)
    paid = units("USD", "20")
    assert balance(send, 1, "USD") == (paid - fee(paid, "maker"), 0)
    assert balance(send, 1, "BTC") == (units("BTC", "0.8"), 0)
    assert open_ids(send, 2) == set()
    assert snapshot(send).asks == []


def test_ioc_that_crosses_nothing_expires_untouched(engine, send, fund) -> None:
    fund(2, USD="1000")
    reports = execs(send(limit(2, BUY, "100", "0.5", tif=IOC)))
    assert [r.exec_type for r in reports] == [ExecType.NEW, ExecType.EXPIRED]
    assert balance(send, 2, "USD") == (units("USD", "1000"), 0)
    assert snapshot(send).bids == []


def test_fok_fills_completely_across_levels(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.3"))
    send(limit(1, SELL, "101", "0.3"))
    reports = execs(send(limit(2, BUY, "101", "0.5", tif=FOK)))
    assert fills(reports) == [(ticks("100"), lots("0.3")), (ticks("101"), lots("0.2"))]
    assert reports[-1].status == OrderStatus.FILLED
    spent = units("USD", "30") + units("USD", "20.2")
    assert balance(send, 2, "USD") == (units("USD", "1000") - spent, 0)
    assert snapshot(send).asks == [(ticks("101"), lots("0.1"), 1)]


def test_fok_that_cannot_fill_completely_expires_without_touching_the_book(
    engine, send, fund
) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.3"))
    before = snapshot(send)
    reports = execs(send(limit(2, BUY, "100", "0.5", tif=FOK)))
    assert fills(reports) == []
    assert reports[-1].exec_type == ExecType.EXPIRED
    assert reports[-1].reason_code == CancelReason.FOK_UNFILLABLE
    assert snapshot(send) == before
    assert balance(send, 2, "USD") == (units("USD", "1000"), 0)
    assert balance(send, 1, "BTC") == (units("BTC", "0.7"), units("BTC", "0.3"))


def test_fok_counts_only_liquidity_within_its_limit(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.3"))
    send(limit(1, SELL, "102", "0.3"))
    reports = execs(send(limit(2, BUY, "101", "0.5", tif=FOK)))
    assert fills(reports) == []
    assert reports[-1].reason_code == CancelReason.FOK_UNFILLABLE
    assert snapshot(send).asks == [(ticks("100"), lots("0.3"), 1), (ticks("102"), lots("0.3"), 1)]


def test_post_only_that_would_cross_is_rejected(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.1"))
    before = observable(engine)
    reply = rejected(send(limit(2, BUY, "100", "0.1", post_only=True)))
    assert reply.code == R.POST_ONLY_WOULD_CROSS
    assert observable(engine) == before


def test_post_only_that_does_not_cross_rests(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.1"))
    execs(send(limit(2, BUY, "99.99", "0.1", post_only=True)))
    assert snapshot(send).bids == [(ticks("99.99"), lots("0.1"), 1)]


# ----------------------------------------------------------------------- market orders


def test_market_sell_walks_the_bids_best_price_first(engine, send, fund) -> None:
    fund(1, USD="1000")
    fund(3, USD="1000")
    fund(2, BTC="1")
    send(limit(1, BUY, "101", "0.1"))
    send(limit(3, BUY, "100", "0.2"))
    reports = execs(send(market_order(2, SELL, qty="0.25")))
    assert fills(reports) == [(ticks("101"), lots("0.1")), (ticks("100"), lots("0.15"))]
    assert reports[-1].status == OrderStatus.FILLED
    notionals = [units("USD", "10.1"), units("USD", "15")]
    assert balance(send, 2, "USD") == (sum(n - fee(n, "taker") for n in notionals), 0)
    assert balance(send, 2, "BTC") == (units("BTC", "0.75"), 0)
    assert snapshot(send).bids == [(ticks("100"), lots("0.05"), 1)]


def test_market_sell_remainder_expires_when_bids_run_out(engine, send, fund) -> None:
    fund(1, USD="1000")
    fund(2, BTC="1")
    send(limit(1, BUY, "100", "0.1"))
    reports = execs(send(market_order(2, SELL, qty="0.3")))
    assert fills(reports) == [(ticks("100"), lots("0.1"))]
    assert reports[-1].exec_type == ExecType.EXPIRED
    assert reports[-1].reason_code == CancelReason.IOC_REMAINDER
    assert balance(send, 2, "BTC") == (units("BTC", "0.9"), 0)


def test_market_buy_by_qty_pays_exactly_what_the_book_costs(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(3, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.1"))
    send(limit(3, SELL, "105", "0.2"))
    reports = execs(send(market_order(2, BUY, qty="0.2")))
    assert fills(reports) == [(ticks("100"), lots("0.1")), (ticks("105"), lots("0.1"))]
    assert reports[-1].status == OrderStatus.FILLED
    assert balance(send, 2, "USD") == (units("USD", "1000") - units("USD", "20.5"), 0)
    got = units("BTC", "0.1")
    assert balance(send, 2, "BTC") == (2 * (got - fee(got, "taker")), 0)


def test_market_buy_by_qty_on_an_empty_book_rejects_no_liquidity(engine, send, fund) -> None:
    fund(2, USD="1000")
    assert rejected(send(market_order(2, BUY, qty="0.1"))).code == R.NO_LIQUIDITY
    assert balance(send, 2, "USD") == (units("USD", "1000"), 0)


def test_market_buy_by_qty_costing_more_than_available_rejects(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="20")
    send(limit(1, SELL, "100", "0.1"))
    send(limit(1, SELL, "105", "0.2"))
    before = observable(engine)
    assert rejected(send(market_order(2, BUY, qty="0.2"))).code == R.INSUFFICIENT_FUNDS
    assert observable(engine) == before


def test_market_buy_by_quote_amount_buys_whole_lots_and_releases_the_rest(
    engine, send, fund
) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "1"))
    budget = Decimal("25.005")
    lot_cost = Decimal("100") * Decimal(RAW["markets"][BTCUSD]["lot"])
    bought = int(budget // lot_cost)
    reports = execs(send(market_order(2, BUY, quote=str(budget))))
    assert fills(reports) == [(ticks("100"), bought)]
    spent = units("USD", str(bought * lot_cost))
    assert balance(send, 2, "USD") == (units("USD", "1000") - spent, 0)


def test_market_buy_by_quote_amount_spends_across_levels(engine, send, fund) -> None:
    fund(1, BTC="2")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.1"))
    send(limit(1, SELL, "200", "1"))
    reports = execs(send(market_order(2, BUY, quote="30")))
    # 0.1 BTC at 100 costs 10 USD; the other 20 USD buy 0.1 BTC at 200
    assert fills(reports) == [(ticks("100"), lots("0.1")), (ticks("200"), lots("0.1"))]
    assert balance(send, 2, "USD") == (units("USD", "970"), 0)


def test_market_buy_by_quote_amount_below_one_lot_buys_nothing(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "1"))
    reports = execs(send(market_order(2, BUY, quote="0.005")))
    assert fills(reports) == []
    assert reports[-1].status in (OrderStatus.CANCELED, OrderStatus.EXPIRED)
    assert balance(send, 2, "USD") == (units("USD", "1000"), 0)
    assert snapshot(send).asks == [(ticks("100"), lots("1"), 1)]


def test_market_buy_by_quote_amount_on_an_empty_book_releases_the_budget(
    engine, send, fund
) -> None:
    fund(2, USD="1000")
    reports = execs(send(market_order(2, BUY, quote="50")))
    assert fills(reports) == []
    assert balance(send, 2, "USD") == (units("USD", "1000"), 0)


# -------------------------------------------------------------- priority, prices, fees


def test_price_time_priority_better_price_first_then_oldest_first(engine, send, fund) -> None:
    for acct in (1, 3, 4):
        fund(acct, BTC="1")
    fund(2, USD="1000")
    o1 = order_id(send(limit(1, SELL, "101", "0.1")))
    o3 = order_id(send(limit(3, SELL, "100", "0.1")))
    o4 = order_id(send(limit(4, SELL, "100", "0.1")))
    reports = execs(send(limit(2, BUY, "101", "0.25")))
    assert fills(reports) == [
        (ticks("100"), lots("0.1")),
        (ticks("100"), lots("0.1")),
        (ticks("101"), lots("0.05")),
    ]
    makers = sorted(
        (r.trade_id, r.order_id, r.status)
        for acct in (1, 3, 4)
        for r in unsolicited(engine, acct)
        if r.last_qty
    )
    assert [(oid, st) for _, oid, st in makers] == [
        (o3, OrderStatus.FILLED),
        (o4, OrderStatus.FILLED),
        (o1, OrderStatus.PARTIALLY_FILLED),
    ]
    assert [r.trade_id for r in reports if r.last_qty] == [t for t, _, _ in makers]
    assert snapshot(send).asks == [(ticks("101"), lots("0.05"), 1)]


def test_fill_prints_at_the_resting_makers_price(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.5"))
    reports = execs(send(limit(2, BUY, "105", "0.5")))
    assert fills(reports) == [(ticks("100"), lots("0.5"))]
    (maker,) = [r for r in unsolicited(engine, 1) if r.last_qty]
    assert maker.last_px == ticks("100")
    assert (maker.liquidity, reports[-1].liquidity) == (Liquidity.MAKER, Liquidity.TAKER)
    assert reports[-1].cum_quote == maker.cum_quote == units("USD", "50")


def test_buy_filling_below_its_limit_releases_the_surplus(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.5"))
    send(limit(2, BUY, "105", "0.5"))
    assert balance(send, 2, "USD") == (units("USD", "950"), 0)


def test_partly_filled_buy_releases_its_surplus_when_it_completes(engine, send, fund) -> None:
    fund(1, BTC="2")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.5"))
    send(limit(2, BUY, "110", "1"))  # 0.5 at 100 now, 0.5 rests at 110
    assert balance(send, 2, "USD")[1] >= units("USD", "55")
    send(limit(1, SELL, "110", "0.5"))
    assert balance(send, 2, "USD") == (units("USD", "1000") - units("USD", "105"), 0)


def test_partly_filled_buy_releases_everything_left_on_cancel(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.5"))
    oid = order_id(send(limit(2, BUY, "110", "1")))
    execs(send(Cancel(1, 2, BTCUSD, oid)))
    assert balance(send, 2, "USD") == (units("USD", "950"), 0)


def test_taker_buy_pays_taker_fee_in_base_and_maker_seller_maker_fee_in_quote(
    engine, send, fund
) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "100", "0.5"))
    reports = execs(send(limit(2, BUY, "100", "0.5")))
    base, quote = units("BTC", "0.5"), units("USD", "50")
    assert reports[-1].fee == fee(base, "taker")
    (maker,) = [r for r in unsolicited(engine, 1) if r.last_qty]
    assert maker.fee == fee(quote, "maker")
    assert balance(send, 2, "BTC") == (base - fee(base, "taker"), 0)
    assert balance(send, 1, "USD") == (quote - fee(quote, "maker"), 0)
    assert balance(send, 0, "BTC") == (fee(base, "taker"), 0)
    assert balance(send, 0, "USD") == (fee(quote, "maker"), 0)


def test_taker_sell_pays_taker_fee_in_quote_and_maker_buyer_maker_fee_in_base(
    engine, send, fund
) -> None:
    fund(1, USD="1000")
    fund(2, BTC="1")
    send(limit(1, BUY, "100", "0.5"))
    execs(send(limit(2, SELL, "100", "0.5")))
    base, quote = units("BTC", "0.5"), units("USD", "50")
    assert balance(send, 1, "BTC") == (base - fee(base, "maker"), 0)
    assert balance(send, 2, "USD") == (quote - fee(quote, "taker"), 0)
    assert balance(send, 0, "BTC") == (fee(base, "maker"), 0)
    assert balance(send, 0, "USD") == (fee(quote, "taker"), 0)


def test_fees_round_down(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "1.23", "0.0003"))
    send(limit(2, BUY, "1.23", "0.0003"))
    quote = units("USD", str(Decimal("1.23") * Decimal("0.0003")))
    maker_rate = Decimal(RAW["markets"][BTCUSD]["maker_fee"])
    assert quote * maker_rate != int(quote * maker_rate)  # the exact fee is fractional
    assert balance(send, 1, "USD") == (quote - fee(quote, "maker"), 0)
    assert balance(send, 0, "USD") == (fee(quote, "maker"), 0)


# ---------------------------------------------------------------------- locks, cancels


def test_cancel_by_order_id_releases_the_locked_funds(engine, send, fund) -> None:
    fund(1, USD="1000")
    oid = order_id(send(limit(1, BUY, "100", "0.5")))
    (r,) = execs(send(Cancel(7, 1, BTCUSD, oid)))
    assert (r.exec_type, r.status, r.reason_code) == (
        ExecType.CANCELED,
        OrderStatus.CANCELED,
        CancelReason.USER,
    )
    assert (r.req, r.order_id, r.leaves_qty) == (7, oid, 0)
    assert balance(send, 1, "USD") == (units("USD", "1000"), 0)
    assert open_ids(send, 1) == set()
    assert snapshot(send).bids == []


def test_cancel_by_client_order_id(engine, send, fund) -> None:
    fund(1, BTC="1")
    oid = order_id(send(limit(1, SELL, "100", "0.5", client_order_id="mine")))
    (r,) = execs(send(Cancel(1, 1, "", client_order_id="mine")))
    assert r.order_id == oid
    assert balance(send, 1, "BTC") == (units("BTC", "1"), 0)


def test_cancel_with_unknown_order_id_rejects(engine, send, fund) -> None:
    fund(1, USD="1000")
    oid = order_id(send(limit(1, BUY, "100", "0.5")))
    before = observable(engine)
    seq_before = engine.seq
    reply = rejected(send(Cancel(1, 1, BTCUSD, oid + 1000)))
    assert reply.code == R.UNKNOWN_ORDER
    assert reply.seq == seq_before + 1 == engine.seq
    assert observable(engine) == before


def test_cancel_of_another_accounts_order_is_unknown_and_changes_nothing(
    engine, send, fund
) -> None:
    fund(1, USD="1000")
    oid = order_id(send(limit(1, BUY, "100", "0.5", client_order_id="x")))
    before = observable(engine)
    assert rejected(send(Cancel(1, 2, BTCUSD, oid))).code == R.UNKNOWN_ORDER
    assert rejected(send(Cancel(1, 2, BTCUSD, client_order_id="x"))).code == R.UNKNOWN_ORDER
    assert observable(engine) == before
    assert open_ids(send, 1) == {oid}


def test_cancel_naming_the_wrong_market_rejects(engine, send, fund) -> None:
    fund(1, USD="1000")
    oid = order_id(send(limit(1, BUY, "100", "0.5")))
    assert rejected(send(Cancel(1, 1, ETHUSD, oid))).code == R.UNKNOWN_ORDER
    assert open_ids(send, 1) == {oid}


def test_cancel_of_an_already_cancelled_order_rejects(engine, send, fund) -> None:
    fund(1, USD="1000")
    oid = order_id(send(limit(1, BUY, "100", "0.5")))
    execs(send(Cancel(1, 1, BTCUSD, oid)))
    assert rejected(send(Cancel(1, 1, BTCUSD, oid))).code == R.UNKNOWN_ORDER
    assert balance(send, 1, "USD") == (units("USD", "1000"), 0)


def test_cancel_naming_no_order_rejects(engine, send, fund) -> None:
    assert rejected(send(Cancel(1, 1, BTCUSD))).code == R.UNKNOWN_ORDER


# ------------------------------------------------------------------------ cancel-replace


def _two_sellers_at_100(send, fund) -> tuple[int, int]:
    fund(1, BTC="1")
    fund(3, BTC="1")
    fund(2, USD="1000")
    o1 = order_id(send(limit(1, SELL, "100", "0.3")))
    o3 = order_id(send(limit(3, SELL, "100", "0.3")))
    return o1, o3


def test_replace_to_a_smaller_size_keeps_queue_position(engine, send, fund) -> None:
    o1, o3 = _two_sellers_at_100(send, fund)
    (r,) = execs(send(Replace(1, 1, BTCUSD, o1, qty=lots("0.2"))))
    assert (r.exec_type, r.order_id, r.qty, r.leaves_qty) == (
        ExecType.REPLACED,
        o1,
        lots("0.2"),
        lots("0.2"),
    )
    assert balance(send, 1, "BTC") == (units("BTC", "0.8"), units("BTC", "0.2"))
    send(limit(2, BUY, "100", "0.2"))
    (maker,) = [r for r in unsolicited(engine, 1) if r.last_qty]
    assert (maker.order_id, maker.status) == (o1, OrderStatus.FILLED)
    assert open_ids(send, 3) == {o3}


def test_replace_to_a_larger_size_loses_queue_position(engine, send, fund) -> None:
    o1, o3 = _two_sellers_at_100(send, fund)
    execs(send(Replace(1, 1, BTCUSD, o1, qty=lots("0.4"))))
    assert balance(send, 1, "BTC") == (units("BTC", "0.6"), units("BTC", "0.4"))
    send(limit(2, BUY, "100", "0.3"))
    assert [r.order_id for r in unsolicited(engine, 3) if r.last_qty] == [o3]
    assert not [r for r in unsolicited(engine, 1) if r.last_qty]
    assert open_ids(send, 1) == {o1}


def test_replace_to_a_new_price_loses_queue_position_and_keeps_the_order_id(
    engine, send, fund
) -> None:
    o1, o3 = _two_sellers_at_100(send, fund)
    (r,) = execs(send(Replace(1, 1, BTCUSD, o1, price=ticks("101"))))
    assert (r.order_id, r.price) == (o1, ticks("101"))
    execs(send(Replace(1, 1, BTCUSD, o1, price=ticks("100"))))
    send(limit(2, BUY, "100", "0.3"))
    assert [r.order_id for r in unsolicited(engine, 3) if r.last_qty] == [o3]
    assert open_ids(send, 1) == {o1}


def test_replace_qty_is_the_new_total_including_the_filled_part(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    oid = order_id(send(limit(1, SELL, "100", "0.5")))
    send(limit(2, BUY, "100", "0.2"))
    (r,) = execs(send(Replace(1, 1, BTCUSD, oid, qty=lots("0.4"))))
    assert (r.qty, r.cum_qty, r.leaves_qty) == (lots("0.4"), lots("0.2"), lots("0.2"))
    assert balance(send, 1, "BTC") == (units("BTC", "0.6"), units("BTC", "0.2"))
    assert snapshot(send).asks == [(ticks("100"), lots("0.2"), 1)]


def test_replace_that_crosses_trades_at_once(engine, send, fund) -> None:
    fund(1, USD="1000")
    fund(2, BTC="1")
    oid = order_id(send(limit(1, BUY, "99", "0.1")))
    send(limit(2, SELL, "100", "0.1"))
    reports = execs(send(Replace(1, 1, BTCUSD, oid, price=ticks("105"))))
    assert reports[0].exec_type == ExecType.REPLACED
    assert fills(reports) == [(ticks("100"), lots("0.1"))]
    assert reports[-1].status == OrderStatus.FILLED
    assert open_ids(send, 1) == set()
    assert balance(send, 1, "USD") == (units("USD", "990"), 0)
    got = units("BTC", "0.1")
    assert balance(send, 1, "BTC") == (got - fee(got, "taker"), 0)


def test_replace_of_a_buy_to_a_new_price_relocks_price_times_leaves(engine, send, fund) -> None:
    fund(1, USD="1000")
    oid = order_id(send(limit(1, BUY, "100", "0.5")))
    execs(send(Replace(1, 1, BTCUSD, oid, price=ticks("90"))))
    assert balance(send, 1, "USD") == (units("USD", "955"), units("USD", "45"))
    execs(send(Replace(1, 1, BTCUSD, oid, price=ticks("110"))))
    assert balance(send, 1, "USD") == (units("USD", "945"), units("USD", "55"))


def test_replace_can_change_the_client_order_id(engine, send, fund) -> None:
    fund(1, USD="1000")
    oid = order_id(send(limit(1, BUY, "100", "0.5", client_order_id="a")))
    (r,) = execs(send(Replace(1, 1, BTCUSD, client_order_id="a", new_client_order_id="b")))
    assert (r.order_id, r.client_order_id) == (oid, "b")
    assert rejected(send(Cancel(1, 1, BTCUSD, client_order_id="a"))).code == R.UNKNOWN_ORDER
    assert execs(send(Cancel(1, 1, BTCUSD, client_order_id="b")))[0].order_id == oid


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"qty": 10_000}, R.INSUFFICIENT_FUNDS),  # 1 BTC at 100 needs 100 USD, 60 there
        ({"qty": 2000}, R.REPLACE_INVALID),  # 0.2 = what already filled
        ({"qty": 1000}, R.REPLACE_INVALID),
        ({"price": -1}, R.INVALID_PRICE),
        ({"qty": -1}, R.QUANTITY_BELOW_MIN),
        ({"new_client_order_id": "other"}, R.DUPLICATE_CLIENT_ORDER_ID),
        ({"new_client_order_id": "x" * 65}, R.INVALID_CLIENT_ORDER_ID),
        ({"market": ETHUSD}, R.UNKNOWN_ORDER),
        ({"account": 3}, R.UNKNOWN_ORDER),
    ],
)
def test_rejected_replace_leaves_the_order_as_it_was(engine, send, fund, change, code) -> None:
    fund(1, USD="60")
    fund(2, BTC="1")
    oid = order_id(send(limit(1, BUY, "100", "0.5", client_order_id="mine")))
    send(limit(1, BUY, "90", "0.1", client_order_id="other"))
    send(limit(2, SELL, "100", "0.2"))  # fills 0.2 of the buy
    fields = {"req": 1, "account": 1, "market": BTCUSD, "order_id": oid} | change
    before = observable(engine)
    assert rejected(send(Replace(**fields))).code == code
    assert observable(engine) == before


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"price": MAX_INT}, R.INVALID_PRICE),
        ({"qty": MAX_INT}, R.QUANTITY_ABOVE_MAX),
    ],
)
def test_replace_outside_the_market_limits_rejects(engine, send, fund, change, code) -> None:
    fund(1, USD="100")
    oid = order_id(send(limit(1, BUY, "100", "0.5")))
    before = observable(engine)
    assert rejected(send(Replace(1, 1, BTCUSD, oid, **change))).code == code
    assert observable(engine) == before


def test_replace_of_post_only_to_a_crossing_price_rejects(engine, send, fund) -> None:
    fund(1, USD="1000")
    fund(2, BTC="1")
    oid = order_id(send(limit(1, BUY, "99", "0.1", post_only=True)))
    send(limit(2, SELL, "100", "0.1"))
    before = observable(engine)
    reply = rejected(send(Replace(1, 1, BTCUSD, oid, price=ticks("100"))))
    assert reply.code == R.POST_ONLY_WOULD_CROSS
    assert observable(engine) == before


# -------------------------------------------------------------------------- mass cancel


def _orders_in_two_markets(send, fund) -> dict[str, set[int]]:
    fund(1, BTC="1", ETH="10", USD="1000")
    fund(3, BTC="1")
    ids = {
        BTCUSD: {
            order_id(send(limit(1, SELL, "100", "0.1"))),
            order_id(send(limit(1, BUY, "50", "0.1"))),
        },
        ETHUSD: {order_id(send(limit(1, SELL, "10", "1", market=ETHUSD)))},
    }
    ids["other"] = {order_id(send(limit(3, SELL, "101", "0.1")))}
    return ids


def test_mass_cancel_cancels_every_open_order_of_the_account(engine, send, fund) -> None:
    ids = _orders_in_two_markets(send, fund)
    (reply,) = send(MassCancel(5, 1), b"admin")
    assert isinstance(reply, MassCancelReply)
    assert (reply.req, reply.count) == (5, 3)
    assert open_ids(send, 1) == set()
    assert open_ids(send, 3) == ids["other"]
    cancelled = {r.order_id for r in unsolicited(engine, 1) if r.exec_type == ExecType.CANCELED}
    assert cancelled == ids[BTCUSD] | ids[ETHUSD]
    for asset, amount in (("BTC", "1"), ("ETH", "10"), ("USD", "1000")):
        assert balance(send, 1, asset) == (units(asset, amount), 0)


def test_mass_cancel_of_one_market_leaves_the_others(engine, send, fund) -> None:
    ids = _orders_in_two_markets(send, fund)
    (reply,) = send(MassCancel(1, 1, BTCUSD), b"admin")
    assert reply.count == 2
    assert open_ids(send, 1) == ids[ETHUSD]
    assert balance(send, 1, "ETH") == (units("ETH", "9"), units("ETH", "1"))
    assert balance(send, 1, "BTC") == (units("BTC", "1"), 0)


def test_mass_cancel_of_an_unknown_market_rejects(engine, send, fund) -> None:
    _orders_in_two_markets(send, fund)
    before = observable(engine)
    assert rejected(send(MassCancel(1, 1, "DOGE-USD"))).code == R.UNKNOWN_MARKET
    assert observable(engine) == before


def test_mass_cancel_with_nothing_open_cancels_nothing(engine, send) -> None:
    (reply,) = send(MassCancel(1, 9))
    assert reply.count == 0


# ---------------------------------------------------------------- self-trade prevention


def _own_and_other_ask(send, fund) -> tuple[int, int]:
    fund(1, BTC="1", USD="1000")
    fund(2, BTC="1")
    own = order_id(send(limit(1, SELL, "100", "0.1")))
    other = order_id(send(limit(2, SELL, "100", "0.1")))
    return own, other


def test_self_trade_default_cancels_the_newest_order(engine, send, fund) -> None:
    own, other = _own_and_other_ask(send, fund)
    reports = execs(send(limit(1, BUY, "100", "0.2")))
    assert fills(reports) == []
    assert reports[-1].status == OrderStatus.CANCELED
    assert reports[-1].reason_code == CancelReason.SELF_TRADE
    assert open_ids(send, 1) == {own}
    assert open_ids(send, 2) == {other}
    assert balance(send, 1, "USD") == (units("USD", "1000"), 0)


def test_self_trade_cancel_oldest_cancels_the_resting_order_and_goes_on(engine, send, fund) -> None:
    own, other = _own_and_other_ask(send, fund)
    msgs = send(limit(1, BUY, "100", "0.2", stp=StpMode.CANCEL_OLDEST))
    reports = execs(msgs)
    assert fills(reports) == [(ticks("100"), lots("0.1"))]
    (cxl,) = [m for m in msgs if isinstance(m, ExecReport)]
    assert (cxl.order_id, cxl.status, cxl.reason_code) == (
        own,
        OrderStatus.CANCELED,
        CancelReason.SELF_TRADE,
    )
    assert open_ids(send, 1) == {reports[0].order_id}  # the rest of the buy rests
    assert open_ids(send, 2) == set()
    assert snapshot(send).bids == [(ticks("100"), lots("0.1"), 1)]
    assert snapshot(send).asks == []
    assert balance(send, 1, "BTC")[1] == 0


def test_self_trade_cancel_both_cancels_both_orders(engine, send, fund) -> None:
    own, other = _own_and_other_ask(send, fund)
    reports = execs(send(limit(1, BUY, "100", "0.2", stp=StpMode.CANCEL_BOTH)))
    assert fills(reports) == []
    assert reports[-1].reason_code == CancelReason.SELF_TRADE
    assert open_ids(send, 1) == set()
    assert open_ids(send, 2) == {other}
    assert balance(send, 1, "BTC") == (units("BTC", "1"), 0)
    assert balance(send, 1, "USD") == (units("USD", "1000"), 0)


def test_self_trade_prevention_spares_an_own_order_the_budget_cannot_reach(
    engine, send, fund
) -> None:
    """StpMode applies when an order 'would match' one of its own account: a market buy whose
    remaining budget cannot pay for one lot at its own resting ask would not match it."""
    fund(1, BTC="1")
    fund(2, BTC="1", USD="1000")
    send(limit(1, SELL, "100", "0.0001"))  # one lot costs 0.01 USD
    own = order_id(send(limit(2, SELL, "300", "0.0001")))  # one lot costs 0.03 USD
    reports = execs(send(market_order(2, BUY, quote="0.035", stp=StpMode.CANCEL_OLDEST)))
    assert fills(reports) == [(ticks("100"), lots("0.0001"))]  # 0.025 USD left < 0.03 USD
    assert open_ids(send, 2) == {own}
    assert snapshot(send).asks == [(ticks("300"), lots("0.0001"), 1)]


# ----------------------------------------------------------------------- client order ids


def test_duplicate_client_order_id_among_open_orders_rejects(engine, send, fund) -> None:
    fund(1, USD="1000")
    fund(2, USD="1000")
    oid = order_id(send(limit(1, BUY, "100", "0.1", client_order_id="x")))
    before = observable(engine)
    reply = rejected(send(limit(1, BUY, "99", "0.1", client_order_id="x")))
    assert reply.code == R.DUPLICATE_CLIENT_ORDER_ID
    assert observable(engine) == before
    execs(send(limit(2, BUY, "99", "0.1", client_order_id="x")))  # other account: fine
    execs(send(Cancel(1, 1, BTCUSD, oid)))
    execs(send(limit(1, BUY, "99", "0.1", client_order_id="x")))  # free again


# ---------------------------------------------------------------------------- rejects


def _new(**fields) -> NewOrder:
    base = {
        "req": 1,
        "account": 1,
        "market": BTCUSD,
        "side": BUY,
        "type": LIMIT,
        "price": ticks("100"),
        "qty": lots("0.1"),
    }
    return NewOrder(**(base | fields))


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"market": "DOGE-USD"}, R.UNKNOWN_MARKET),
        ({"qty": 0}, R.QUANTITY_BELOW_MIN),
        ({"qty": -1}, R.QUANTITY_BELOW_MIN),
        ({"qty": max_lots() + 1}, R.QUANTITY_ABOVE_MAX),
        ({"price": 0}, R.INVALID_PRICE),
        ({"price": -5}, R.INVALID_PRICE),
        ({"price": max_ticks() + 1}, R.INVALID_PRICE),
        ({"side": 0}, R.INVALID_SIDE),
        ({"side": 3}, R.INVALID_SIDE),
        ({"type": 0}, R.INVALID_ORDER_TYPE),
        ({"type": 3}, R.INVALID_ORDER_TYPE),
        ({"tif": 5}, R.INVALID_TIME_IN_FORCE),
        ({"tif": -1}, R.INVALID_TIME_IN_FORCE),
        ({"tif": 4}, R.INVALID_EXPIRE_TIME),  # GTD without an expiry time
        ({"tif": 4, "expire_ts": 1}, R.INVALID_EXPIRE_TIME),  # in the past
        ({"expire_ts": 2**62}, R.INVALID_EXPIRE_TIME),  # an expiry time on a GTC order
        ({"type": MARKET, "price": 0, "expire_ts": 2**62}, R.INVALID_EXPIRE_TIME),
        ({"stop_price": ticks("90")}, R.INVALID_STOP_PRICE),  # not a stop order
        ({"trigger": 3, "stop_price": ticks("90")}, R.INVALID_ORDER_TYPE),
        ({"trigger": 1, "stop_price": 0}, R.INVALID_STOP_PRICE),
        ({"trigger": 1, "stop_price": max_ticks() + 1}, R.INVALID_STOP_PRICE),
        ({"trigger": 1, "stop_price": ticks("90"), "post_only": True}, R.INVALID_ORDER_TYPE),
        ({"type": MARKET, "price": 0, "trigger": 2, "stop_price": -1}, R.INVALID_STOP_PRICE),
        ({"stp": 4}, R.INVALID_FIELD),
        ({"account": 0}, R.INVALID_ACCOUNT),
        ({"account": -1}, R.INVALID_ACCOUNT),
        ({"client_order_id": "x" * 65}, R.INVALID_CLIENT_ORDER_ID),
        ({"quote_qty": 5}, R.INVALID_QUANTITY),
        ({"post_only": True, "tif": IOC}, R.INVALID_TIME_IN_FORCE),
        ({"qty": lots("100")}, R.INSUFFICIENT_FUNDS),
        ({"side": SELL, "qty": lots("2")}, R.INSUFFICIENT_FUNDS),
        ({"account": 42}, R.INSUFFICIENT_FUNDS),
        ({"type": MARKET, "price": 0, "tif": GTC}, R.INVALID_TIME_IN_FORCE),
        ({"type": MARKET}, R.INVALID_PRICE),
        ({"type": MARKET, "price": 0, "post_only": True}, R.INVALID_PRICE),
        ({"type": MARKET, "price": 0, "qty": 0}, R.QUANTITY_BELOW_MIN),
        ({"type": MARKET, "price": 0, "side": SELL, "quote_qty": 5}, R.INVALID_QUANTITY),
        ({"type": MARKET, "price": 0, "quote_qty": 5}, R.INVALID_QUANTITY),
        ({"type": MARKET, "price": 0, "qty": 0, "quote_qty": -5}, R.INVALID_QUANTITY),
        (
            {"type": MARKET, "price": 0, "qty": 0, "quote_qty": 5, "tif": FOK},
            R.INVALID_TIME_IN_FORCE,
        ),
        ({"type": MARKET, "price": 0, "qty": 0, "quote_qty": MAX_INT}, R.INVALID_QUANTITY),
    ],
)
def test_invalid_new_order_rejects_with_its_code_and_changes_nothing(
    engine, send, fund, fields, code
) -> None:
    fund(1, USD="1000", BTC="1")
    fund(2, BTC="1")
    send(limit(2, SELL, "100", "0.5"))
    before = observable(engine)
    seq_before = engine.seq
    cmd = _new(**fields)
    msgs = send(cmd)
    reply = rejected(msgs)
    assert reply.code == code, reply
    assert reply.reason
    assert reply.seq == seq_before + 1 == engine.seq
    assert observable(engine) == before


def test_order_at_the_maximum_price_and_exactly_funded_is_accepted(engine, send, fund) -> None:
    lot = Decimal(RAW["markets"][BTCUSD]["lot"])
    cost = Decimal(RAW["markets"][BTCUSD]["max_price"]) * lot
    fund(1, USD=str(cost))
    (r,) = execs(send(_new(price=max_ticks(), qty=1)))
    assert r.status == OrderStatus.NEW
    assert balance(send, 1, "USD") == (0, units("USD", str(cost)))


def test_order_of_the_maximum_size_is_accepted(engine, send, fund) -> None:
    fund(1, BTC=RAW["markets"][BTCUSD]["max_qty"])
    execs(send(_new(side=SELL, qty=max_lots())))
    assert balance(send, 1, "BTC")[0] == 0


def test_writes_take_consecutive_sequence_numbers_and_reads_take_none(engine, send, fund) -> None:
    seqs = [
        engine.apply(Deposit(1, 1, "USD", 100), 1, b"x"),
        engine.apply(Withdraw(1, 1, "USD", 10**9), 2, b"x"),  # rejected, still journaled
        engine.apply(_new(account=1), 3, b"x"),
        engine.apply(BalancesRequest(1, 1), 4, b"x"),
        engine.apply(Ping(9), 5, b"x"),
    ]
    assert seqs == [1, 2, 3, 0, 0]
    pong = engine.outbox[b"x"][-1]
    assert isinstance(pong, Pong)
    assert (pong.req, pong.seq) == (9, 3)


# ------------------------------------------------------------------- deposits, withdrawals


def test_deposit_and_withdraw_move_available_balance(engine, send) -> None:
    (r,) = send(Deposit(3, 1, "BTC", units("BTC", "1.5")))
    assert isinstance(r, LedgerReply)
    assert (r.req, r.account, r.asset, r.available, r.locked) == (3, 1, "BTC", 150_000_000, 0)
    (r,) = send(Withdraw(4, 1, "BTC", units("BTC", "0.5")))
    assert isinstance(r, LedgerReply)
    assert r.available == units("BTC", "1")
    assert balance(send, 1, "BTC") == (units("BTC", "1"), 0)


def test_withdraw_more_than_available_rejects(engine, send, fund) -> None:
    fund(1, USD="1000")
    send(limit(1, BUY, "100", "0.5"))  # locks 50
    before = observable(engine)
    assert rejected(send(Withdraw(1, 1, "USD", units("USD", "960")))).code == (R.INSUFFICIENT_FUNDS)
    assert rejected(send(Withdraw(1, 7, "USD", 1))).code == R.INSUFFICIENT_FUNDS
    assert observable(engine) == before
    (r,) = send(Withdraw(1, 1, "USD", units("USD", "950")))
    assert (r.available, r.locked) == (0, units("USD", "50"))


@pytest.mark.parametrize(
    ("cmd", "code"),
    [
        (Deposit(1, 1, "DOGE", 5), R.UNKNOWN_ASSET),
        (Deposit(1, 1, "USD", 0), R.INVALID_AMOUNT),
        (Deposit(1, 1, "USD", -5), R.INVALID_AMOUNT),
        (Deposit(1, 1, "USD", MAX_INT + 1), R.INVALID_AMOUNT),
        (Deposit(1, -1, "USD", 5), R.INVALID_ACCOUNT),
        (Withdraw(1, 1, "DOGE", 5), R.UNKNOWN_ASSET),
        (Withdraw(1, 1, "USD", 0), R.INVALID_AMOUNT),
        (Withdraw(1, 1, "USD", -5), R.INVALID_AMOUNT),
        (Withdraw(1, -1, "USD", 5), R.INVALID_ACCOUNT),
    ],
)
def test_invalid_deposit_or_withdrawal_rejects(engine, send, fund, cmd, code) -> None:
    fund(1, USD="10")
    before = observable(engine)
    assert rejected(send(cmd)).code == code
    assert observable(engine) == before


def test_deposits_never_push_a_balance_past_64_bits(engine, send) -> None:
    """Balances travel as 64-bit integers (msgpack, snapshots); a deposit beyond that must be
    refused rather than leave an engine that cannot encode its replies or hash its state."""
    for _ in range(3):
        send(Deposit(1, 1, "USD", MAX_INT))
    avail, locked = balance(send, 1, "USD")
    assert avail + locked <= MAX_INT
    engine.state_hash()


# ------------------------------------------------------------------------------ queries


def test_order_status_of_open_and_partly_filled_orders(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    oid = order_id(send(limit(1, SELL, "100", "0.5", client_order_id="s")))
    info = status(send, 1, oid)
    assert isinstance(info, OrderInfo)
    o = info.order
    assert (o.order_id, o.client_order_id, o.status, o.leaves_qty, o.cum_qty) == (
        oid,
        "s",
        OrderStatus.NEW,
        lots("0.5"),
        0,
    )
    send(limit(2, BUY, "100", "0.2"))
    o = status(send, 1, cid="s").order
    assert (o.status, o.cum_qty, o.leaves_qty, o.cum_quote) == (
        OrderStatus.PARTIALLY_FILLED,
        lots("0.2"),
        lots("0.3"),
        units("USD", "20"),
    )


def test_order_status_of_closed_orders(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    filled = order_id(send(limit(1, SELL, "100", "0.2")))
    cancelled = order_id(send(limit(1, SELL, "200", "0.2", client_order_id="c")))
    send(Cancel(1, 1, BTCUSD, cancelled))
    expired = order_id(send(limit(2, BUY, "100", "0.5", tif=IOC)))
    f = status(send, 1, filled).order
    assert (f.status, f.cum_qty, f.leaves_qty) == (OrderStatus.FILLED, lots("0.2"), 0)
    assert status(send, 1, cid="c").order.status == OrderStatus.CANCELED
    e = status(send, 2, expired).order
    assert (e.status, e.cum_qty, e.leaves_qty) == (OrderStatus.EXPIRED, lots("0.2"), 0)


def test_order_status_of_another_accounts_order_is_unknown(engine, send, fund) -> None:
    fund(1, BTC="1")
    open_id = order_id(send(limit(1, SELL, "100", "0.2", client_order_id="s")))
    closed_id = order_id(send(limit(1, SELL, "100", "0.2")))
    send(Cancel(1, 1, BTCUSD, closed_id))
    for reply in (
        status(send, 2, open_id),
        status(send, 2, closed_id),
        status(send, 2, cid="s"),
        status(send, 1, open_id, market=ETHUSD),
        status(send, 1, open_id + 100),
    ):
        assert isinstance(reply, Rejected)
        assert reply.code == R.UNKNOWN_ORDER


def test_open_orders_lists_only_the_accounts_open_orders(engine, send, fund) -> None:
    ids = _orders_in_two_markets(send, fund)
    assert open_ids(send, 1) == ids[BTCUSD] | ids[ETHUSD]
    assert open_ids(send, 1, ETHUSD) == ids[ETHUSD]
    assert open_ids(send, 3) == ids["other"]
    assert open_ids(send, 8) == set()
    (reply,) = send(OpenOrdersRequest(1, 1, "DOGE-USD"))
    assert reply.code == R.UNKNOWN_MARKET


def test_balances_list_every_asset_with_available_and_locked(engine, send, fund) -> None:
    fund(1, USD="1000", ETH="2")
    send(limit(1, BUY, "100", "0.5"))
    (reply,) = send(BalancesRequest(4, 1))
    assert reply.req == 4
    got = {b.asset: (b.available, b.locked) for b in reply.balances}
    assert got == {
        "BTC": (0, 0),
        "ETH": (units("ETH", "2"), 0),
        "USD": (units("USD", "950"), units("USD", "50")),
    }
    (nobody,) = send(BalancesRequest(1, 99))
    assert {(b.available, b.locked) for b in nobody.balances} == {(0, 0)}
    assert {b.asset for b in nobody.balances} == set(RAW["assets"])


def _asks_100_and_105(send, fund) -> None:
    fund(1, BTC="1")
    send(limit(1, SELL, "100", "0.1"))
    send(limit(1, SELL, "105", "0.2"))


def quote(send, market: str = BTCUSD, side: int = BUY, **kw) -> QuoteReply:
    (reply,) = send(QuoteRequest(1, market, side, **kw), b"reader")
    assert isinstance(reply, QuoteReply), reply
    return reply


def test_quote_by_qty_prices_the_book_walk(engine, send, fund) -> None:
    _asks_100_and_105(send, fund)
    q = quote(send, qty=lots("0.2"))
    assert (q.qty, q.quote_qty, q.worst_price, q.complete) == (
        lots("0.2"),
        units("USD", "20.5"),
        ticks("105"),
        True,
    )
    q = quote(send, qty=lots("0.5"))
    assert (q.qty, q.quote_qty, q.complete) == (lots("0.3"), units("USD", "31"), False)
    q = quote(send, side=SELL, qty=lots("0.1"))
    assert (q.qty, q.quote_qty, q.worst_price, q.complete) == (0, 0, 0, False)


def test_quote_by_amount_buys_whole_lots(engine, send, fund) -> None:
    _asks_100_and_105(send, fund)
    lot = Decimal(RAW["markets"][BTCUSD]["lot"])
    rest = Decimal("15") - Decimal("10")  # 0.1 BTC at 100 costs 10 USD
    more = int(rest // (Decimal("105") * lot))
    q = quote(send, quote_qty=units("USD", "15"))
    assert q.qty == lots("0.1") + more
    assert q.quote_qty == units("USD", "10") + units("USD", str(more * Decimal("105") * lot))
    assert (q.worst_price, q.complete) == (ticks("105"), True)


def test_quote_by_amount_is_complete_when_the_rest_cannot_buy_the_next_lot(
    engine, send, fund
) -> None:
    fund(1, BTC="1")
    send(limit(1, SELL, "100", "0.0001"))
    send(limit(1, SELL, "300", "0.0005"))
    # 0.035 USD buys one lot at 100 (0.01 USD); the 0.025 left cannot buy a lot at 300
    # (0.03 USD) although the book has plenty there: the order would finish, not run dry.
    q = quote(send, quote_qty=units("USD", "0.035"))
    assert (q.qty, q.quote_qty) == (1, units("USD", "0.01"))
    assert q.complete


def test_quote_by_amount_larger_than_the_book_is_incomplete(engine, send, fund) -> None:
    _asks_100_and_105(send, fund)
    q = quote(send, quote_qty=units("USD", "100"))
    assert (q.qty, q.quote_qty, q.complete) == (lots("0.3"), units("USD", "31"), False)


def test_quote_for_an_account_leaves_out_its_own_orders(engine, send, fund) -> None:
    _asks_100_and_105(send, fund)
    q = quote(send, qty=lots("0.1"), account=1)
    assert (q.qty, q.complete) == (0, False)
    assert quote(send, qty=lots("0.1"), account=2).qty == lots("0.1")


@pytest.mark.parametrize(
    "kw",
    [
        {"qty": 1, "quote_qty": 1},
        {},
        {"side": SELL, "quote_qty": 100},
        {"side": 0, "qty": 1},
        {"qty": -1},
        {"quote_qty": -1},
    ],
)
def test_quote_with_bad_parameters_rejects(engine, send, fund, kw) -> None:
    _asks_100_and_105(send, fund)
    fields = {"req": 1, "market": BTCUSD, "side": BUY} | kw
    (reply,) = send(QuoteRequest(**fields))
    assert isinstance(reply, Rejected)
    assert reply.code == R.INVALID_QUANTITY


def test_quote_of_an_unknown_market_rejects_and_quotes_change_nothing(engine, send, fund) -> None:
    _asks_100_and_105(send, fund)
    before = engine.state_hash()
    (reply,) = send(QuoteRequest(1, "DOGE-USD", BUY, qty=1))
    assert reply.code == R.UNKNOWN_MARKET
    quote(send, qty=lots("0.2"))
    assert engine.state_hash() == before


def test_book_snapshot_lists_levels_best_first_with_totals_and_counts(engine, send, fund) -> None:
    fund(1, BTC="1", USD="1000")
    fund(2, BTC="1", USD="1000")
    send(limit(1, SELL, "101", "0.1"))
    send(limit(2, SELL, "101", "0.2"))
    send(limit(1, SELL, "103", "0.1"))
    send(limit(1, BUY, "99", "0.1"))
    send(limit(2, BUY, "98", "0.3"))
    send(limit(2, BUY, "99.5", "0.1"))
    book = snapshot(send)
    assert book.asks == [(ticks("101"), lots("0.3"), 2), (ticks("103"), lots("0.1"), 1)]
    assert book.bids == [
        (ticks("99.5"), lots("0.1"), 1),
        (ticks("99"), lots("0.1"), 1),
        (ticks("98"), lots("0.3"), 1),
    ]
    assert book.last_trade_id == 0
    top = snapshot(send, depth=1)
    assert (top.bids, top.asks) == (book.bids[:1], book.asks[:1])
    (reply,) = send(SnapshotRequest(1, "DOGE-USD"))
    assert reply.code == R.UNKNOWN_MARKET


def test_book_snapshot_counts_trades(engine, send, fund) -> None:
    fund(1, BTC="1")
    fund(2, USD="1000")
    send(limit(1, SELL, "101", "0.1"))
    send(limit(1, SELL, "101", "0.2"))
    send(limit(2, BUY, "101", "0.15"))
    book = snapshot(send)
    assert book.last_trade_id == 2
    assert book.asks == [(ticks("101"), lots("0.15"), 1)]


# -------------------------------------------------------------------------- market data


def test_market_data_reports_depth_and_bbo_for_a_new_order(engine, send, fund) -> None:
    fund(1, USD="1000")
    send(limit(1, BUY, "100", "0.5"))
    msgs = engine.market_data(77)
    assert [topic for topic, _ in msgs] == [b"D.BTC-USD", b"B.BTC-USD"]
    depth, bbo = msgs[0][1], msgs[1][1]
    assert isinstance(depth, Depth)
    assert isinstance(bbo, Bbo)
    assert (depth.market, depth.seq, depth.bids, depth.asks, depth.ts) == (
        BTCUSD,
        1,
        [(ticks("100"), lots("0.5"))],
        [],
        77,
    )
    assert (bbo.seq, bbo.bid_price, bbo.bid_qty, bbo.ask_price, bbo.ask_qty) == (
        1,
        ticks("100"),
        lots("0.5"),
        0,
        0,
    )
    assert engine.market_data(78) == []


def test_market_data_reports_trades_and_levels_that_emptied(engine, send, fund) -> None:
    fund(1, USD="1000")
    fund(2, BTC="1")
    send(limit(1, BUY, "100", "0.5"))
    send(limit(1, BUY, "99", "0.5"))
    engine.market_data(1)
    send(limit(2, SELL, "99", "0.7"))
    seq = engine.seq
    msgs = dict(engine.market_data(2))
    trades = msgs[b"T.BTC-USD"]
    assert isinstance(trades, Trades)
    assert trades.seq == 1
    assert [(t.trade_id, t.price, t.qty, t.taker_side, t.seq) for t in trades.trades] == [
        (1, ticks("100"), lots("0.5"), SELL, seq),
        (2, ticks("99"), lots("0.2"), SELL, seq),
    ]
    depth = msgs[b"D.BTC-USD"]
    assert depth.seq == 2
    assert depth.bids == [(ticks("100"), 0), (ticks("99"), lots("0.3"))]
    bbo = msgs[b"B.BTC-USD"]
    assert (bbo.seq, bbo.bid_price, bbo.bid_qty) == (2, ticks("99"), lots("0.3"))


def test_market_data_sequences_are_contiguous_per_market_and_rebuild_the_book(
    engine, send, fund
) -> None:
    fund(1, BTC="5", ETH="50", USD="10000")
    fund(2, BTC="5", ETH="50", USD="10000")
    steps = [
        limit(1, BUY, "100", "0.5"),
        limit(2, SELL, "101", "0.5"),
        limit(1, BUY, "10", "2", market=ETHUSD),
        limit(2, SELL, "100", "0.2"),
        limit(2, SELL, "9", "1", market=ETHUSD),
        Cancel(1, 2, BTCUSD, 2),
        limit(1, SELL, "11", "3", market=ETHUSD),
        MassCancel(1, 1),
        limit(2, BUY, "101", "0.1"),
    ]
    seqs: dict[tuple[bytes, str], list[int]] = {}
    books: dict[str, dict[str, dict[int, int]]] = {}
    trade_ids: dict[str, list[int]] = {}
    bbos: dict[str, Bbo] = {}
    for ts, cmd in enumerate(steps):
        send(cmd)
        for topic, msg in engine.market_data(ts):
            seqs.setdefault((topic[:1], msg.market), []).append(msg.seq)
            book = books.setdefault(msg.market, {"bids": {}, "asks": {}})
            if isinstance(msg, Depth):
                for side, levels in (("bids", msg.bids), ("asks", msg.asks)):
                    for price, total in levels:
                        book[side][price] = total
            if isinstance(msg, Trades):
                trade_ids.setdefault(msg.market, []).extend(t.trade_id for t in msg.trades)
            if isinstance(msg, Bbo):
                bbos[msg.market] = msg
    for stream, got in seqs.items():
        assert got == list(range(1, len(got) + 1)), stream
    assert {m for _, m in seqs} == {BTCUSD, ETHUSD}
    for market, ids in trade_ids.items():
        assert ids == list(range(1, len(ids) + 1)), market
    for market, book in books.items():
        snap = snapshot(send, market)
        assert sorted((p, t) for p, t in book["bids"].items() if t) == sorted(
            (p, t) for p, t, _ in snap.bids
        )
        assert sorted((p, t) for p, t in book["asks"].items() if t) == sorted(
            (p, t) for p, t, _ in snap.asks
        )
        bbo = bbos[market]
        assert (bbo.bid_price, bbo.bid_qty) == (snap.bids[0][:2] if snap.bids else (0, 0))
        assert (bbo.ask_price, bbo.ask_qty) == (snap.asks[0][:2] if snap.asks else (0, 0))


# ------------------------------------------------------------------- snapshot / restore


def test_engine_restored_from_state_is_independent_of_the_original(exchange) -> None:
    original = Engine(exchange)
    setup = [
        Deposit(1, 1, "BTC", units("BTC", "1")),
        Deposit(1, 2, "USD", units("USD", "1000")),
        limit(1, SELL, "100", "0.5"),
    ]
    for ts, cmd in enumerate(setup):
        original.apply(cmd, ts, b"gw")
    twin = Engine(exchange)
    twin.restore(original.state())
    assert twin.state_hash() == original.state_hash()
    buy = limit(2, BUY, "100", "0.1")
    original.apply(buy, 5, b"gw")
    twin.apply(buy, 5, b"gw")
    original.validate()
    twin.validate()
    assert twin.state_hash() == original.state_hash()


def test_restore_refuses_a_state_from_another_asset_list(engine) -> None:
    other = loads(
        """
[assets.AAA]
decimals = 2
[assets.BBB]
decimals = 2
[markets.AAA-BBB]
base = "AAA"
quote = "BBB"
tick = "1"
lot = "1"
min_qty = "1"
max_qty = "10"
max_price = "10"
"""
    )
    with pytest.raises(ValueError, match="asset"):
        Engine(other).restore(engine.state())


def test_closed_orders_are_forgotten_oldest_first_one_at_a_time(engine: Engine, send, fund) -> None:
    """Status of a closed order is answered for the newest ``closed_orders_kept`` closed orders;
    older ones are forgotten one by one (no whole generation freed at once: that stalled the
    engine)."""
    engine.closed_kept = 5  # [engine] closed_orders_kept
    fund(1, USD="100000")
    ids = []
    for i in range(8):
        (placed,) = send(limit(1, BUY, "30000.00", "0.0100", client_order_id=f"c{i}"))
        oid = placed.reports[0].order_id
        ids.append(oid)
        send(Cancel(1, 1, BTCUSD, oid))
    assert list(engine.closed) == ids[3:] and len(engine.closed_ids) == 5
    for i, oid in enumerate(ids):
        (by_id,) = send(OrderStatusRequest(1, 1, BTCUSD, oid))
        (by_cid,) = send(OrderStatusRequest(1, 1, BTCUSD, 0, f"c{i}"))
        if i < 3:
            assert isinstance(by_id, Rejected) and isinstance(by_cid, Rejected)
        else:
            assert by_id.order.status == by_cid.order.status == OrderStatus.CANCELED
            assert by_cid.order.order_id == oid


def test_order_history_lists_the_accounts_closed_orders_newest_last(engine, send, fund) -> None:
    """OrderHistoryRequest: the account's closed orders (filled, canceled, expired), newest
    last, by market, up to ``limit``; never another account's; open orders are not history; the
    per-account bound (``history_kept``) and the global one (``closed_orders_kept``) both
    forget the oldest."""
    fund(1, USD="100000", BTC="10")
    fund(2, USD="100000", BTC="10")
    (rest,) = send(limit(1, SELL, "30000.00", "0.0100"))
    sold = rest.reports[0].order_id
    (took,) = send(limit(2, BUY, "30000.00", "0.0100"))  # fills account 1's sell, and itself
    (eth,) = send(limit(1, BUY, "1000.00", "0.0100", ETHUSD))
    send(Cancel(1, 1, ETHUSD, eth.reports[0].order_id))
    (ioc,) = send(limit(1, BUY, "1.00", "0.0100", tif=IOC))  # nothing to cross: expires
    (still,) = send(limit(1, BUY, "2.00", "0.0100"))  # rests: not history
    (h,) = send(OrderHistoryRequest(1, 1))
    assert isinstance(h, OrderHistory)
    assert [o.order_id for o in h.orders] == [sold, eth.reports[0].order_id,
                                              ioc.reports[0].order_id]  # fmt: skip
    assert [o.status for o in h.orders] == [OrderStatus.FILLED, OrderStatus.CANCELED,
                                            OrderStatus.EXPIRED]  # fmt: skip
    assert h.orders[0].cum_qty == lots("0.0100") and h.orders[0].leaves_qty == 0
    assert still.reports[0].order_id not in {o.order_id for o in h.orders}
    (h,) = send(OrderHistoryRequest(1, 1, ETHUSD))
    assert [o.market for o in h.orders] == [ETHUSD]
    (h,) = send(OrderHistoryRequest(1, 1, "", 2))
    assert [o.order_id for o in h.orders] == [eth.reports[0].order_id, ioc.reports[0].order_id]
    (h,) = send(OrderHistoryRequest(1, 2))
    assert [o.order_id for o in h.orders] == [took.reports[-1].order_id]
    (h,) = send(OrderHistoryRequest(1, 3))
    assert h.orders == []
    assert rejected(send(OrderHistoryRequest(1, 1, "NOPE-USD"))).code == R.UNKNOWN_MARKET
    engine.history_kept = 2  # a new account's list takes the bound it is made with
    fund(4, USD="100")
    for _ in range(3):
        (o,) = send(limit(4, BUY, "1.00", "0.0100", tif=IOC))
    (h,) = send(OrderHistoryRequest(1, 4))
    assert len(h.orders) == 2 and h.orders[-1].order_id == o.reports[0].order_id
    engine.closed_kept = 1  # the global bound wins: forgotten orders are not listed (it
    for _ in range(10):  # forgets one order per order it keeps)
        send(limit(4, BUY, "1.00", "0.0100", tif=IOC))
    (h,) = send(OrderHistoryRequest(1, 1))
    assert h.orders == []


def test_a_watcher_gets_copies_of_a_watched_accounts_reports_from_other_gateways(engine) -> None:
    """Watch: the drop copy the private streams use. A watcher origin gets, unsolicited
    (req 0), every report and ledger change of the watched account that went to another
    origin, in the same order; never its own again, never another account's; Watch off, or
    the origin found gone (``unwatch``), stops it."""
    sent: dict[bytes, list] = {}

    def batch(*cmds: tuple[object, bytes]) -> None:  # what the server does: apply, then drain
        for cmd, origin in cmds:
            engine.apply(cmd, 1_000, origin)
        for o, msgs in engine.drain():
            sent.setdefault(o, []).extend(msgs)
        assert not engine.outbox

    batch((Watch(7, 1), b"web"))
    assert sent.pop(b"web") == [Watching(7, 1, True, 1)]
    batch((Deposit(1, 1, "USD", units("USD", "1000")), b"admin"))
    batch((Deposit(2, 2, "BTC", units("BTC", "1")), b"admin"))
    batch(  # one batch: each command's copies follow it, none copied twice
        (limit(1, BUY, "30000.00", "0.0100", client_order_id="b"), b"json"),
        (limit(2, SELL, "30000.00", "0.0100"), b"fix"),  # fills account 1's resting buy
    )
    copies = sent.pop(b"web")
    assert [type(m).__name__ for m in copies] == ["LedgerReply", "ExecReport", "ExecReport"]
    assert all(m.req == 0 and m.account == 1 for m in copies)
    ledger, new, fill = copies
    assert ledger.asset == "USD" and ledger.available == units("USD", "1000")
    assert (new.exec_type, fill.exec_type) == (ExecType.NEW, ExecType.FILL)
    assert fill.client_order_id == "b" and fill.last_qty == lots("0.0100")
    assert fill.trade_id and fill.status == OrderStatus.FILLED
    (json_reply, json_fill) = sent.pop(b"json")  # the originals are untouched
    assert json_reply.reports[0].req == 1 and json_fill.req == 0
    sent.clear()
    batch((limit(1, SELL, "31000.00", "0.0001"), b"web"))  # the watcher's own: not copied again
    assert [type(m) for m in sent.pop(b"web")] == [Executions]
    batch((Watch(8, 1, on=True), b"other"))
    assert sent.pop(b"other")[0].watchers == 2
    engine.unwatch(b"other")
    batch((Watch(9, 1, on=False), b"web"))
    assert sent.pop(b"web") == [Watching(9, 1, False, 0)] and engine.watchers == {}
    batch((Cancel(3, 1, BTCUSD, 0, "nope"), b"json"))
    assert list(sent) == [b"json"]
    batch((Watch(1, 0), b"web"))
    assert sent[b"web"][0].code == R.INVALID_ACCOUNT


def test_bounded_memories_follow_the_config() -> None:
    """[engine] fills_kept and recent_trades_kept bound the fills a fills query returns and the
    trades a recorder can pull; the oldest go first."""
    text = DEFAULT_CONFIG.read_text().replace("fills_kept = 1000", "fills_kept = 3")
    text = text.replace("recent_trades_kept = 200000", "recent_trades_kept = 4")
    e = Engine(loads(text), epoch=1)
    for acct, asset, amount in ((1, "USD", "100000"), (2, "BTC", "10")):
        e.apply(Deposit(1, acct, asset, units(asset, amount)), 1, b"gw")
    for i in range(6):
        e.apply(limit(2, SELL, "30000.00", "0.0100"), 2 + i, b"gw")
        e.apply(limit(1, BUY, "30000.00", "0.0100"), 2 + i, b"gw")
    book = e.books[BTCUSD]
    assert book.next_trade_id == 7  # six trades printed
    assert [t.trade_id for t, _, _ in book.recent] == [3, 4, 5, 6]
    assert [r.trade_id for r in e.fills[1]] == [4, 5, 6]
    assert [r.trade_id for r in e.fills[2]] == [4, 5, 6]

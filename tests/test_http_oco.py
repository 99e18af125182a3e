"""Icebergs, trailing stops and OCO lists through the Binance routes, driven by ccxt's
``binance`` class (async, from PyPI, unpatched; its implicit API for the order-list routes,
which ccxt has no unified method for) and by hand, against a real engine and a real
``python -m gateways.http``.

What ccxt parses and what the gateway answers are checked against the engine's own view of
the orders (OrderStatus, OpenOrders, Fills, Balances over an ``EngineClient``) and against the
public book the gateway serves (``/api/v3/depth``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.async_support as ccxt

from protocol.enums import OrderStatus, TriggerKind
from tests.fixtures_http import HttpStack, http_stack_fixture, v3  # noqa: F401
from tests.test_http_ccxt import (
    Market,
    async_test,
    balances,
    d,
    fills,
    market,
    open_ids,
    poll,
    raises,
    signed_raw,
    state,
)
from tests.test_http_stops import last, trade_at, traders


async def depth_at(stack: HttpStack, mkt: Market, side: str) -> list[list[str]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{stack.url}/api/v3/depth?symbol={mkt.id}") as r,
    ):
        return (await r.json())[side]  # type: ignore[no-any-return]


async def shows(stack: HttpStack, mkt: Market, side: str, levels: list[list[str]]) -> None:
    async def check() -> None:
        assert await depth_at(stack, mkt, side) == levels

    await poll(check, f"{side} {levels}")


# ------------------------------------------------------------------------ exchangeInfo


@async_test
async def test_exchange_info_has_the_iceberg_and_trailing_filters(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    async with aiohttp.ClientSession() as session:
        status, body = await v3(session, http_stack.url, None, "GET", "/api/v3/exchangeInfo",
                                symbol=mkt.id)  # fmt: skip
    assert status == 200, body
    info = body["symbols"][0]
    assert (info["icebergAllowed"], info["ocoAllowed"], info["allowTrailingStop"]) == (True,) * 3
    filters = {f["filterType"]: f for f in info["filters"]}
    assert filters["TRAILING_DELTA"] == {
        "filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10,
        "maxTrailingAboveDelta": 2000, "minTrailingBelowDelta": 10,
        "maxTrailingBelowDelta": 2000,
    }  # fmt: skip
    # max_qty 1000 / min_qty 0.0001: the engine takes any icebergQty from the lot minimum up
    assert filters["ICEBERG_PARTS"] == {"filterType": "ICEBERG_PARTS", "limit": 10_000_000}


# ----------------------------------------------------------------------------- iceberg


@async_test
async def test_iceberg_shows_its_part_and_refills_at_the_back(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    a, ax, bx, cx = await traders(http_stack, mkt)
    s = mkt.symbol
    ice = await ax.create_order(s, "limit", "sell", 1, 101, {"icebergAmount": 0.2})
    assert (ice["status"], ice["info"]["icebergQty"], ice["info"]["origQty"]) == (
        "open", "0.2000", "1.0000")  # fmt: skip
    e = await state(http_stack, a, mkt, ice["id"])
    assert (e.display_qty, e.leaves_qty) == (2000, 10000)
    assert (await ax.fetch_order(ice["id"], s))["info"]["icebergQty"] == "0.2000"
    assert (await balances(http_stack, a))[mkt.base][1] == 100_000000  # it locks all of it
    await shows(http_stack, mkt, "asks", [["101.00", "0.2000"]])  # only the visible part
    other = await cx.create_order(s, "limit", "sell", 0.1, 101)  # behind the iceberg's part
    await shows(http_stack, mkt, "asks", [["101.00", "0.3000"]])

    took = await bx.create_order(s, "limit", "buy", 0.2, 101, {"timeInForce": "IOC"})
    assert d(took["filled"]) == Decimal("0.2")
    # the part is gone: the next 0.2 shows, and goes to the back of the level
    await shows(http_stack, mkt, "asks", [["101.00", "0.3000"]])
    e = await state(http_stack, a, mkt, ice["id"])
    assert (e.cum_qty, e.leaves_qty, e.status) == (2000, 8000, OrderStatus.PARTIALLY_FILLED)
    await bx.create_order(s, "limit", "buy", 0.1, 101, {"timeInForce": "IOC"})
    assert [f.order_id for f in await fills(http_stack, a, mkt)] == [int(ice["id"])]
    got = await cx.fetch_order(other["id"], s)
    assert (got["status"], d(got["filled"])) == ("closed", Decimal("0.1"))  # c's was first
    await shows(http_stack, mkt, "asks", [["101.00", "0.2000"]])
    # a taker larger than the part goes on to the refill: 0.5 = 0.2 + 0.2 + 0.1
    took = await bx.create_order(s, "limit", "buy", 0.5, 101, {"timeInForce": "IOC"})
    assert d(took["filled"]) == Decimal("0.5")
    got = await ax.fetch_order(ice["id"], s)
    assert (got["status"], d(got["filled"]), got["info"]["icebergQty"]) == (
        "open", Decimal("0.7"), "0.2000")  # fmt: skip
    await shows(http_stack, mkt, "asks", [["101.00", "0.1000"]])
    await ax.cancel_order(ice["id"], s)
    await shows(http_stack, mkt, "asks", [])


# ------------------------------------------------------------------------ trailing stop


@async_test
async def test_trailing_stop_follows_the_price_and_triggers_on_the_retrace(
    http_stack: HttpStack,
) -> None:
    mkt = market(http_stack)
    a, ax, bx, cx = await traders(http_stack, mkt)
    s = mkt.symbol
    await trade_at(http_stack, bx, cx, s, 100)

    # ccxt: trailingPercent 2 -> trailingDelta 200, a STOP_LOSS without a stopPrice: it
    # follows the last price from now and sells when the price falls 2% from its best
    trailing = {"trailingPercent": 2, "stopLossOrTakeProfit": "stopLoss"}
    ts = await ax.create_order(s, "market", "sell", 0.3, None, trailing)
    assert (ts["status"], ts["info"]["type"], ts["info"]["trailingDelta"]) == (
        "open", "STOP_LOSS", 200)  # fmt: skip
    assert ts["info"]["trailingTime"] == ts["info"]["transactTime"]  # following from now
    assert ts["info"]["stopPrice"] == "0.00" and ts["triggerPrice"] is None
    e = await state(http_stack, a, mkt, ts["id"])
    assert (e.trigger, e.trailing_bps, e.stop_price, e.trail_price, e.waiting) == (
        TriggerKind.STOP_LOSS, 200, 0, 10000, True)  # fmt: skip

    await trade_at(http_stack, bx, cx, s, 105)  # the best price: it now sells at 102.90
    assert (await state(http_stack, a, mkt, ts["id"])).trail_price == 10500
    await trade_at(http_stack, bx, cx, s, 103)  # above 102.90: still waits
    got = await ax.fetch_order(ts["id"], s)
    assert (got["status"], got["info"]["isWorking"], got["info"]["trailingDelta"]) == (
        "open", False, 200)  # fmt: skip
    assert got["info"]["trailingTime"] > 0
    assert (await state(http_stack, a, mkt, ts["id"])).waiting

    await cx.create_order(s, "limit", "buy", 0.3, 102)  # a bid for the stop to sell into
    await trade_at(http_stack, bx, cx, s, 102.9)  # the retrace to 102.90: it triggers
    got = await ax.fetch_order(ts["id"], s)
    assert (got["status"], d(got["filled"]), d(got["cost"]), got["info"]["isWorking"]) == (
        "closed", Decimal("0.3"), Decimal("30.6"), True)  # fmt: skip
    assert [(f.last_px, f.last_qty) for f in await fills(http_stack, a, mkt)] == [(10200, 3000)]

    # trailingDelta in BIPS with an activation price (ccxt's trailingTriggerPrice): a buy
    # that starts following when the price rises to 106; -1: not following yet
    buy = await ax.create_order(s, "limit", "buy", 0.1, 110,
                                {"trailingDelta": 150, "stopLossOrTakeProfit": "stopLoss",
                                 "trailingTriggerPrice": 106})  # fmt: skip
    assert (buy["info"]["type"], buy["info"]["trailingDelta"], buy["triggerPrice"]) == (
        "STOP_LOSS_LIMIT", 150, 106)  # fmt: skip
    assert buy["info"]["trailingTime"] == -1
    e = await state(http_stack, a, mkt, buy["id"])
    assert (e.trailing_bps, e.stop_price, e.trail_price, e.price) == (150, 10600, 0, 11000)
    got = await ax.fetch_order(buy["id"], s)
    assert (got["info"]["trailingTime"], got["info"]["stopPrice"]) == (-1, "106.00")
    await ax.cancel_order(buy["id"], s)
    assert await open_ids(http_stack, a) == set()


# ------------------------------------------------------------------------------- OCO


async def sell_list(stack: HttpStack, who: Any, mkt: Market, **extra: Any) -> tuple[int, Any]:
    """A SELL OCO of 0.5 by hand: LIMIT_MAKER at 105 above, STOP_LOSS_LIMIT 95 / 94.5 below."""
    params = {
        "symbol": mkt.id, "side": "SELL", "quantity": "0.5", "aboveType": "LIMIT_MAKER",
        "abovePrice": "105", "belowType": "STOP_LOSS_LIMIT", "belowStopPrice": "95",
        "belowPrice": "94.5", "belowTimeInForce": "GTC", **extra,
    }  # fmt: skip
    status, _, body = await signed_raw(stack, who, "POST", "/api/v3/orderList/oco", **params)
    return status, body


@async_test
async def test_oco_places_both_a_limit_fill_cancels_the_stop(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    a, ax, bx, cx = await traders(http_stack, mkt)
    s = mkt.symbol
    await trade_at(http_stack, bx, cx, s, 100)
    ids = {"aboveClientOrderId": "lim-1", "belowClientOrderId": "stop-1"}
    status, body = await sell_list(http_stack, a, mkt, listClientOrderId="my-list-1", **ids)
    assert status == 200, body
    lid = body["orderListId"]
    assert (body["contingencyType"], body["listStatusType"], body["listOrderStatus"],
            body["listClientOrderId"], body["symbol"]) == (
        "OCO", "EXEC_STARTED", "EXECUTING", "my-list-1", mkt.id)  # fmt: skip
    assert body["transactionTime"] > 0
    stop_id, limit_id = (o["orderId"] for o in body["orders"])  # below (the stop) first
    assert [o["clientOrderId"] for o in body["orders"]] == ["stop-1", "lim-1"]
    reports = body["orderReports"]
    assert [(r["orderId"], r["type"], r["status"], r["price"], r.get("stopPrice"),
             r["orderListId"]) for r in reports] == [
        (stop_id, "STOP_LOSS_LIMIT", "NEW", "94.50", "95.00", lid),
        (limit_id, "LIMIT_MAKER", "NEW", "105.00", None, lid),
    ]  # fmt: skip
    assert await open_ids(http_stack, a, mkt.name) == {str(stop_id), str(limit_id)}
    for oid in (stop_id, limit_id):
        e = await state(http_stack, a, mkt, str(oid))
        assert (e.list_id, e.status) == (lid, OrderStatus.NEW)
        got = await ax.fetch_order(str(oid), s)
        assert (got["info"]["orderListId"], got["status"]) == (lid, "open")
    assert (await state(http_stack, a, mkt, str(stop_id))).waiting
    assert (await balances(http_stack, a))[mkt.base][1] == 50_000000  # locked once

    # the list by its client id and among the open lists (ccxt's implicit API)
    got = await ax.private_get_orderlist({"origClientOrderId": "my-list-1"})
    assert (got["orderListId"], got["listStatusType"], got["listClientOrderId"]) == (
        lid, "EXEC_STARTED", "my-list-1")  # fmt: skip
    assert "orderReports" not in got
    assert [x["orderListId"] for x in await ax.private_get_openorderlist()] == [lid]

    # a trade through the limit (0.2 of 0.5) cancels the stop
    took = await cx.create_order(s, "limit", "buy", 0.2, 105, {"timeInForce": "IOC"})
    assert d(took["filled"]) == Decimal("0.2")
    e = await state(http_stack, a, mkt, str(stop_id))
    assert e.status == OrderStatus.CANCELED  # (never triggered)
    got = await ax.fetch_order(str(stop_id), s)
    assert (got["status"], got["info"]["orderListId"]) == ("canceled", lid)
    assert (await ax.fetch_order(str(limit_id), s))["status"] == "open"
    got = await ax.private_get_orderlist({"orderListId": lid})
    assert (got["listStatusType"], got["listOrderStatus"]) == ("ALL_DONE", "ALL_DONE")
    assert await ax.private_get_openorderlist() == []
    every = await ax.private_get_allorderlist()
    assert [(x["orderListId"], x["listStatusType"]) for x in every] == [(lid, "ALL_DONE")]
    # the rest of the limit order cancels as any order
    await ax.cancel_order(str(limit_id), s)
    assert await open_ids(http_stack, a) == set()
    assert (await balances(http_stack, a))[mkt.base] == (500_000000 - 20_000000, 0)


@async_test
async def test_legacy_oco_through_ccxt_a_rise_triggers_the_stop_and_cancels_the_limit(
    http_stack: HttpStack,
) -> None:
    mkt = market(http_stack)
    a, ax, bx, cx = await traders(http_stack, mkt)
    s = mkt.symbol
    await trade_at(http_stack, bx, cx, s, 100)
    # a BUY list on Binance's older route: limit below at 95, a stop market buy at 105
    body = await ax.private_post_order_oco({
        "symbol": mkt.id, "side": "BUY", "quantity": "0.5", "price": "95", "stopPrice": "105",
    })  # fmt: skip
    lid = body["orderListId"]
    limit_id, stop_id = (o["orderId"] for o in body["orders"])  # below (the limit) first
    assert body["listClientOrderId"]  # ccxt sent one (or the gateway made one)
    assert [(r["type"], r["orderListId"]) for r in body["orderReports"]] == [
        ("LIMIT_MAKER", lid), ("STOP_LOSS", lid)]  # fmt: skip
    assert lid == limit_id
    assert (await state(http_stack, a, mkt, str(stop_id))).trigger == TriggerKind.STOP_LOSS
    # USD locked once: the larger need (the stop market buy's collar, 0.5 x 105 x 1.1)
    assert (await balances(http_stack, a))["USD"][1] == 57_750000

    await bx.create_order(s, "limit", "sell", 0.5, 106)  # an ask for the stop to buy
    await trade_at(http_stack, bx, cx, s, 105)  # the rise to 105 triggers the stop
    lim = await state(http_stack, a, mkt, str(limit_id))
    assert lim.status == OrderStatus.CANCELED
    got = await ax.fetch_order(str(stop_id), s)
    assert (got["status"], d(got["filled"]), d(got["cost"]), got["info"]["orderListId"]) == (
        "closed", Decimal("0.5"), Decimal("53"), lid)  # fmt: skip
    assert (await ax.fetch_order(str(limit_id), s))["status"] == "canceled"
    assert await open_ids(http_stack, a) == set()
    assert (await balances(http_stack, a))["USD"][1] == 0
    got = await ax.private_get_orderlist({"orderListId": lid})
    assert got["listStatusType"] == "ALL_DONE"
    # nothing left to cancel in it
    await raises(ccxt.OrderNotFound, ax.private_delete_orderlist({"symbol": mkt.id,
                                                                  "orderListId": lid}))  # fmt: skip
    assert last(ax)["code"] == -2011


@async_test
async def test_delete_order_list_and_one_order_cancel_both(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    a, ax, bx, cx = await traders(http_stack, mkt)
    s = mkt.symbol
    await trade_at(http_stack, bx, cx, s, 100)
    status, one = await sell_list(http_stack, a, mkt, listClientOrderId="del-by-cid")
    assert status == 200, one
    gone = await ax.private_delete_orderlist({"symbol": mkt.id, "listClientOrderId": "del-by-cid"})
    assert (gone["orderListId"], gone["listStatusType"], gone["listOrderStatus"],
            gone["listClientOrderId"]) == (one["orderListId"], "ALL_DONE", "ALL_DONE",
                                           "del-by-cid")  # fmt: skip
    assert [(r["type"], r["status"]) for r in gone["orderReports"]] == [
        ("STOP_LOSS_LIMIT", "CANCELED"), ("LIMIT_MAKER", "CANCELED")]  # fmt: skip
    assert await open_ids(http_stack, a) == set()
    assert (await balances(http_stack, a))[mkt.base][1] == 0

    # cancelling one order of a list (DELETE /api/v3/order) cancels the list
    status, two = await sell_list(http_stack, a, mkt)
    assert status == 200, two
    stop_id, limit_id = (o["orderId"] for o in two["orders"])
    got = await ax.cancel_order(str(stop_id), s)
    assert (got["id"], got["status"], got["info"]["type"], got["info"]["orderListId"]) == (
        str(stop_id), "canceled", "STOP_LOSS_LIMIT", two["orderListId"])  # fmt: skip
    assert (await state(http_stack, a, mkt, str(limit_id))).status == OrderStatus.CANCELED
    assert await open_ids(http_stack, a) == set()

    # DELETE openOrders lists both orders of a list
    status, three = await sell_list(http_stack, a, mkt)
    assert status == 200, three
    plain = await ax.create_order(s, "limit", "sell", 0.1, 120)
    done = await ax.cancel_all_orders(s)
    ids = {str(o["orderId"]) for o in three["orders"]} | {plain["id"]}
    assert {o["id"] for o in done} == ids and {o["status"] for o in done} == {"canceled"}
    assert await open_ids(http_stack, a) == set()


# ---------------------------------------------------------------------------- rejects


@async_test
async def test_iceberg_trailing_and_oco_rejects(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    a, ax, bx, cx = await traders(http_stack, mkt)
    s = mkt.symbol
    await trade_at(http_stack, bx, cx, s, 100)
    before = await balances(http_stack, a)

    await raises(ccxt.InvalidOrder, ax.create_order(s, "limit", "sell", 0.1, 110,
                                                    {"icebergAmount": 0.2}))  # fmt: skip
    assert last(ax) == {"code": -2010, "msg": "icebergQty cannot be larger than quantity."}
    await raises(ccxt.BadRequest, ax.create_order(s, "market", "sell", 0.1, None, {
        "trailingPercent": 25, "stopLossOrTakeProfit": "stopLoss"}))  # 2500 BIPS  # fmt: skip
    assert last(ax) == {"code": -1013, "msg": "Filter failure: TRAILING_DELTA"}

    wrong = await sell_list(http_stack, a, mkt, abovePrice="99")  # limit below the last price
    text = "The relationship of the prices for the orders is not correct."
    assert wrong == (400, {"code": -2010, "msg": text})
    legacy = {"symbol": mkt.id, "side": "SELL", "quantity": "0.5", "price": "105"}
    status, _, body = await signed_raw(http_stack, a, "POST", "/api/v3/order/oco", **legacy,
                                       stopPrice="101")  # fmt: skip
    assert (status, body["code"]) == (400, -2010), body  # the stop above the last price
    for extra, code in (
        ({"aboveType": "STOP_LOSS_LIMIT"}, -1014),  # not this engine's list
        ({"belowType": "TAKE_PROFIT_LIMIT"}, -1014),
        ({"belowType": "STOP"}, -1116),
        ({"belowTimeInForce": "IOC"}, -1014),
        ({"belowTimeInForce": ""}, -1102),
        ({"aboveIcebergQty": "0.1"}, -1014),
        ({"aboveStopPrice": "104"}, -1106),
        ({"abovePrice": ""}, -1102),
        ({"belowStopPrice": "95.001"}, -1013),
        ({"quantity": "0.00001"}, -1013),
    ):
        status, body = await sell_list(http_stack, a, mkt, **extra)
        assert (status, body["code"]) == (400, code), (extra, body)
    status, _, body = await signed_raw(http_stack, a, "POST", "/api/v3/order/oco", **legacy,
                                       stopPrice="95", stopLimitPrice="94",
                                       stopLimitTimeInForce="FOK")  # fmt: skip
    assert (status, body["code"]) == (400, -1014), body

    plain = await ax.create_order(s, "limit", "sell", 0.1, 120)  # an order, not a list
    for ref in ({"orderListId": 999_999}, {"orderListId": int(plain["id"])},
                {"origClientOrderId": "nope"}):  # fmt: skip
        await raises(ccxt.OrderNotFound, ax.private_get_orderlist(ref))
        assert last(ax) == {"code": -2013, "msg": "Order list does not exist."}, ref
    for ref in ({"orderListId": 999_999}, {"listClientOrderId": "nope"}):
        await raises(ccxt.OrderNotFound, ax.private_delete_orderlist({"symbol": mkt.id, **ref}))
        assert last(ax) == {"code": -2011, "msg": "Order list does not exist."}, ref
    await raises(ccxt.BadRequest, ax.private_get_orderlist({}))
    assert last(ax)["code"] == -1102
    await ax.cancel_order(plain["id"], s)
    assert await open_ids(http_stack, a) == set() and await balances(http_stack, a) == before

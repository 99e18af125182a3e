"""Stop orders (STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT) and good-till-date
through the Binance routes, driven by ccxt's ``binance`` class (async, from PyPI, unpatched)
and by hand, against a real engine and a real ``python -m gateways.http``.

A stop waits outside the book until the market's last trade price reaches its stop price; the
tests set that price with trades between two other accounts, then check what ccxt parses
(type, triggerPrice, status, filled) against the engine's own view of the order (asked over an
``EngineClient``: OrderStatus, OpenOrders, Fills, Balances).
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.async_support as ccxt

from protocol.enums import OrderStatus, OrderType, TimeInForce, TriggerKind
from tests.fixtures_http import HttpStack, Trader, http_stack_fixture, v3  # noqa: F401
from tests.procs import eventually_async
from tests.test_http_ccxt import (
    Market,
    async_test,
    balances,
    client,
    d,
    fills,
    market,
    open_ids,
    raises,
    signed_raw,
    state,
)

STOP_TYPES = ["STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]


async def trade_at(stack: HttpStack, seller: Any, buyer: Any, s: str, px: float) -> None:
    """One trade of 0.1 at ``px`` between two other accounts: the market's last price."""
    await seller.create_order(s, "limit", "sell", 0.1, px)
    took = await buyer.create_order(s, "limit", "buy", 0.1, px, {"timeInForce": "IOC"})
    assert (took["status"], d(took["filled"])) == ("closed", Decimal("0.1")), took


async def traders(stack: HttpStack, mkt: Market) -> tuple[Trader, Any, Any, Any]:
    """The stop owner (its account and client) and two others that move the price."""
    a = await stack.funded(USD="1000", **{mkt.base: "5"})
    b = await stack.funded(USD="1000", **{mkt.base: "5"})
    c = await stack.funded(USD="1000", **{mkt.base: "5"})
    return a, client(stack, a), client(stack, b), client(stack, c)


def last(ex: Any) -> Any:
    """The JSON body of ``ex``'s last answer (ccxt keeps an error's as text only)."""
    return json.loads(ex.last_http_response)


async def waiting(stack: HttpStack, who: Trader, mkt: Market, order_id: str) -> bool:
    return (await state(stack, who, mkt, order_id)).waiting


# ------------------------------------------------------------------------ exchangeInfo


@async_test
async def test_exchange_info_lists_the_stop_types_and_what_else_it_has(
    http_stack: HttpStack,
) -> None:
    ex = client(http_stack)
    await ex.load_markets()
    mkt = market(http_stack)
    info = ex.market(mkt.symbol)["info"]
    assert info["orderTypes"] == ["LIMIT", "LIMIT_MAKER", "MARKET", *STOP_TYPES]
    # OCO, trailing stops and icebergs (tests/test_http_oco.py); still no OTO or cancel-replace
    assert (info["ocoAllowed"], info["allowTrailingStop"], info["icebergAllowed"]) == (True,) * 3
    assert (info["otoAllowed"], info["cancelReplaceAllowed"]) == (False, False)


# ----------------------------------------------------------------- falling: stop-loss sells


@async_test
async def test_stop_loss_limit_and_stop_market_wait_then_trigger_and_fill(
    http_stack: HttpStack,
) -> None:
    mkt = market(http_stack)
    a, ax, bx, cx = await traders(http_stack, mkt)
    s = mkt.symbol
    await trade_at(http_stack, bx, cx, s, 100)  # last price 100

    sl = await ax.create_order(s, "limit", "sell", 0.5, 94, {"stopPrice": 95})
    assert (sl["status"], sl["type"], sl["side"], sl["triggerPrice"], sl["price"]) == (
        "open", "limit", "sell", 95, 94)  # fmt: skip
    assert (sl["info"]["type"], sl["info"]["stopPrice"], sl["timeInForce"]) == (
        "STOP_LOSS_LIMIT", "95.00", "GTC")  # fmt: skip
    assert "workingTime" not in sl["info"] and sl["timestamp"] > 0  # -1 would be ccxt's time
    sm = await ax.create_order(s, "market", "sell", 0.3, None, {"stopLossPrice": 90})
    assert (sm["status"], sm["type"], sm["triggerPrice"], sm["info"]["type"]) == (
        "open", "market", 90, "STOP_LOSS")  # fmt: skip
    assert sm["info"]["price"] == "0.00" and sm["info"]["origQty"] == "0.3000"

    for o, kind, stop in ((sl, OrderType.LIMIT, 9500), (sm, OrderType.MARKET, 9000)):
        e = await state(http_stack, a, mkt, o["id"])
        assert (e.trigger, e.type, e.stop_price, e.waiting, e.status) == (
            TriggerKind.STOP_LOSS, kind, stop, True, OrderStatus.NEW)  # fmt: skip
    listed = {o["id"]: o for o in await ax.fetch_open_orders(s)}
    assert set(listed) == {sl["id"], sm["id"]} == await open_ids(http_stack, a, mkt.name)
    for o, stop, kind in ((sl, 95, "STOP_LOSS_LIMIT"), (sm, 90, "STOP_LOSS")):
        got = listed[o["id"]]
        assert (got["triggerPrice"], got["info"]["type"], got["status"]) == (stop, kind, "open")
        assert got["info"]["isWorking"] is False and got["info"]["workingTime"] == -1
    assert (await ax.fetch_order(sl["id"], s))["info"]["isWorking"] is False
    assert (await balances(http_stack, a))[mkt.base][1] == 80_000000  # 0.8 locked while waiting

    # bids for the stops to sell into, then a trade at 95: the stop-loss limit triggers
    await cx.create_order(s, "limit", "buy", 0.5, 94.5)
    await cx.create_order(s, "limit", "buy", 0.4, 89)
    await trade_at(http_stack, bx, cx, s, 95)
    done = await ax.fetch_order(sl["id"], s)
    assert (done["status"], d(done["filled"]), d(done["cost"])) == (
        "closed", Decimal("0.5"), Decimal("47.25"))  # fmt: skip
    assert (done["info"]["type"], done["triggerPrice"], done["info"]["isWorking"]) == (
        "STOP_LOSS_LIMIT", 95, True)  # fmt: skip
    assert done["info"]["workingTime"] > 0
    assert not await waiting(http_stack, a, mkt, sl["id"])
    assert await waiting(http_stack, a, mkt, sm["id"])  # 94.5 has not reached 90
    assert {o["id"] for o in await ax.fetch_open_orders(s)} == {sm["id"]}

    # a trade at 89 triggers the stop market: it sells 0.3 into the rest of the 89 bid
    await bx.create_order(s, "market", "sell", 0.1)
    done = await ax.fetch_order(sm["id"], s)
    assert (done["status"], d(done["filled"]), d(done["cost"]), done["type"]) == (
        "closed", Decimal("0.3"), Decimal("26.7"), "market")  # fmt: skip
    assert (done["info"]["type"], done["triggerPrice"], done["info"]["isWorking"]) == (
        "STOP_LOSS", 90, True)  # fmt: skip
    assert await open_ids(http_stack, a, mkt.name) == set() and await ax.fetch_open_orders(s) == []
    mine = await fills(http_stack, a, mkt)  # the engine's: each stop traded as a taker
    assert [(str(f.order_id), f.last_px, f.last_qty, f.liquidity) for f in mine] == [
        (sl["id"], 9450, 5000, 2), (sm["id"], 8900, 3000, 2)]  # fmt: skip
    every = {o["id"]: o for o in await ax.fetch_orders(s)}  # allOrders
    assert {k: (o["status"], o["info"]["type"], o["triggerPrice"]) for k, o in every.items()} == {
        sl["id"]: ("closed", "STOP_LOSS_LIMIT", 95),
        sm["id"]: ("closed", "STOP_LOSS", 90),
    }
    bal = await balances(http_stack, a)
    assert bal[mkt.base] == (500_000000 - 80_000000, 0)


# ------------------------------------------------------- rising: take-profit and stop buys


@async_test
async def test_take_profit_and_stop_buy_trigger_on_a_rise_and_rest_as_limits(
    http_stack: HttpStack,
) -> None:
    mkt = market(http_stack)
    a, ax, bx, cx = await traders(http_stack, mkt)
    s = mkt.symbol
    await trade_at(http_stack, bx, cx, s, 100)

    tp = await ax.create_order(s, "limit", "sell", 0.2, 110, {"takeProfitPrice": 110})
    assert (tp["info"]["type"], tp["type"], tp["triggerPrice"], tp["takeProfitPrice"]) == (
        "TAKE_PROFIT_LIMIT", "limit", 110, 110)  # fmt: skip
    buy = await ax.create_order(s, "limit", "buy", 0.1, 106, {"triggerPrice": 105})
    assert (buy["info"]["type"], buy["side"], buy["triggerPrice"]) == (
        "STOP_LOSS_LIMIT", "buy", 105)  # fmt: skip
    tpm = await ax.create_order(s, "market", "buy", 0.2, None, {"takeProfitPrice": 90})
    assert (tpm["info"]["type"], tpm["type"], tpm["takeProfitPrice"], tpm["status"]) == (
        "TAKE_PROFIT", "market", 90, "open")  # fmt: skip
    e = await state(http_stack, a, mkt, tpm["id"])
    assert (e.trigger, e.type, e.waiting) == (TriggerKind.TAKE_PROFIT, OrderType.MARKET, True)
    assert tpm["info"]["price"] == "0.00"  # not the engine's protection price (99.00)

    # the take-profit market buy waits for a fall: cancelling it releases its funds
    gone = await ax.cancel_order(tpm["id"], s)
    assert (gone["status"], gone["info"]["type"], gone["triggerPrice"]) == (
        "canceled", "TAKE_PROFIT", 90)  # fmt: skip
    bal = await balances(http_stack, a)
    assert bal["USD"][1] == 10_600000  # only the stop-limit buy's 0.1 x 106 stays locked

    await trade_at(http_stack, bx, cx, s, 105)  # the stop buy triggers; no ask <= 106: it rests
    got = await ax.fetch_order(buy["id"], s)
    assert (got["status"], got["filled"], got["info"]["isWorking"]) == ("open", 0, True)
    e = await state(http_stack, a, mkt, buy["id"])
    assert (e.waiting, e.status, e.leaves_qty) == (False, OrderStatus.NEW, 1000)
    assert await waiting(http_stack, a, mkt, tp["id"])
    await bx.create_order(s, "limit", "sell", 0.1, 106)  # takes a's triggered buy
    got = await ax.fetch_order(buy["id"], s)
    assert (got["status"], d(got["filled"]), got["info"]["type"]) == (
        "closed", Decimal("0.1"), "STOP_LOSS_LIMIT")  # fmt: skip

    await trade_at(http_stack, bx, cx, s, 110)  # the take-profit sell triggers and rests
    got = await ax.fetch_order(tp["id"], s)
    assert (got["status"], got["info"]["isWorking"], got["takeProfitPrice"]) == (
        "open", True, 110)  # fmt: skip
    await cx.create_order(s, "limit", "buy", 0.2, 110)
    got = await ax.fetch_order(tp["id"], s)
    assert (got["status"], d(got["filled"]), d(got["cost"])) == (
        "closed", Decimal("0.2"), Decimal("22"))  # fmt: skip
    assert await open_ids(http_stack, a) == set()


# ---------------------------------------------------------------------------- rejects


@async_test
async def test_stop_rejects_arrive_as_the_ccxt_classes_binance_users_expect(
    http_stack: HttpStack,
) -> None:
    mkt = market(http_stack)
    a, ax, bx, cx = await traders(http_stack, mkt)
    s = mkt.symbol
    await trade_at(http_stack, bx, cx, s, 100)
    before = await balances(http_stack, a)

    for args in (
        ("limit", "sell", 0.1, 99, {"stopPrice": 101}),  # a fall to 101: had
        ("market", "buy", 0.1, None, {"stopLossPrice": 100}),  # a rise to 100
        ("limit", "sell", 0.1, 99, {"takeProfitPrice": 99}),  # a rise to 99
    ):
        e = await raises(ccxt.OrderImmediatelyFillable, ax.create_order(s, *args))
        assert type(e) is ccxt.OrderImmediatelyFillable, e
        assert last(ax) == {"code": -2010, "msg": "Order would trigger immediately."}

    raw = {"symbol": mkt.id, "side": "SELL", "quantity": "0.1"}
    lim = {**raw, "type": "STOP_LOSS_LIMIT", "price": "90", "timeInForce": "GTC"}
    cases: list[tuple[type[Exception], int, dict[str, str]]] = [
        (ccxt.BadRequest, -1102, lim),  # no stopPrice
        (ccxt.BadRequest, -1102, {**raw, "type": "TAKE_PROFIT"}),
        (
            ccxt.BadRequest,
            -1106,
            {**raw, "type": "LIMIT", "price": "90", "timeInForce": "GTC", "stopPrice": "91"},
        ),  # stopPrice with a LIMIT
        (ccxt.BadRequest, -1106, {**raw, "type": "MARKET", "stopPrice": "91"}),
        (ccxt.BadRequest, -1100, {**lim, "stopPrice": "9x"}),
        (ccxt.BadRequest, -1100, {**lim, "stopPrice": "-91"}),
        (ccxt.InvalidOrder, -1013, {**lim, "stopPrice": "90.001"}),  # off the tick
        (ccxt.InvalidOrder, -1013, {**lim, "stopPrice": "0"}),
        (ccxt.InvalidOrder, -1013, {**lim, "stopPrice": "10000000.01"}),  # above maxPrice
        (ccxt.BadRequest, -1102, {**lim, "stopPrice": "91", "timeInForce": ""}),
        (
            ccxt.BadRequest,
            -1106,
            {**raw, "type": "STOP_LOSS", "stopPrice": "91", "timeInForce": "GTC"},
        ),  # a stop market takes no TIF
        (ccxt.BadRequest, -1106, {**raw, "type": "STOP_LOSS", "stopPrice": "91", "price": "9"}),
        (
            ccxt.BadRequest,
            -1106,
            {
                "symbol": mkt.id,
                "side": "BUY",
                "type": "STOP_LOSS",
                "stopPrice": "101",
                "quoteOrderQty": "10",
            },
        ),
        (ccxt.BadRequest, -1102, {**raw, "type": "STOP_LOSS", "stopPrice": "91", "quantity": ""}),
        (ccxt.BadRequest, -1013, {**lim, "stopPrice": "91", "trailingDelta": "9"}),  # 10..2000
        (ccxt.BadRequest, -1013, {**raw, "type": "STOP_LOSS", "trailingDelta": "2001"}),
        (ccxt.BadRequest, -1100, {**raw, "type": "STOP_LOSS", "trailingDelta": "1.5"}),
        (ccxt.BadRequest, -1106, {**raw, "type": "MARKET", "trailingDelta": "100"}),
        (
            ccxt.BadRequest,
            -1106,
            {**raw, "type": "STOP_LOSS", "stopPrice": "91", "icebergQty": "0.01"},
        ),
        (ccxt.InvalidOrder, -2010, {**lim, "stopPrice": "91", "icebergQty": "0.2"}),  # > qty
        (ccxt.InvalidOrder, -1013, {**lim, "stopPrice": "91", "icebergQty": "0.00001"}),
        (
            ccxt.InvalidOrder,
            -2010,
            {**lim, "stopPrice": "91", "icebergQty": "0.01", "timeInForce": "IOC"},
        ),
        (ccxt.BadRequest, -1116, {**lim, "type": "STOP"}),
    ]
    for cls, code, params in cases:
        for call in (ax.private_post_order, ax.private_post_order_test):
            e = await raises(cls, call(params))
            assert last(ax)["code"] == code, (params, e)
    # the same parameters, valid, pass order/test and place nothing
    assert await ax.private_post_order_test({**lim, "stopPrice": "91"}) == {}
    assert await open_ids(http_stack, a) == set() and await balances(http_stack, a) == before


# ---------------------------------------------------------------------- good till date


@async_test
async def test_good_till_date(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    a, ax, bx, cx = await traders(http_stack, mkt)
    s = mkt.symbol
    now = int(time.time() * 1000)

    past = {"timeInForce": "GTD", "goodTillDate": now - 1000}
    e = await raises(ccxt.InvalidOrder, ax.create_order(s, "limit", "buy", 0.1, 90, past))
    assert last(ax) == {"code": -2010, "msg": "goodTillDate must be in the future."}
    assert type(e) is ccxt.InvalidOrder  # exactly: -2010 with a message ccxt does not map
    raw = {"symbol": mkt.id, "side": "BUY", "type": "LIMIT", "quantity": "0.1", "price": "90"}
    await raises(ccxt.InvalidOrder, ax.private_post_order_test({**raw, **past}))
    assert last(ax)["code"] == -2010
    for params, code in (({"timeInForce": "GTD"}, -1102),
                         ({"timeInForce": "GTC", "goodTillDate": now + 60_000}, -1106),
                         ({"timeInForce": "GTD", "goodTillDate": "soon"}, -1100),
                         ({"timeInForce": "GTD", "goodTillDate": 10**16}, -1130)):  # fmt: skip
        await raises(ccxt.BadRequest, ax.private_post_order({**raw, **params}))
        assert last(ax)["code"] == code, params
    market_gtd = {"symbol": mkt.id, "side": "BUY", "type": "MARKET", "quantity": "0.1",
                  "goodTillDate": now + 60_000}  # fmt: skip
    await raises(ccxt.BadRequest, ax.private_post_order(market_gtd))
    assert await open_ids(http_stack, a) == set()

    later = now + 3_600_000
    o = await ax.create_order(s, "limit", "buy", 0.1, 90,
                              {"timeInForce": "GTD", "goodTillDate": later})  # fmt: skip
    assert (o["status"], o["timeInForce"]) == ("open", "GTD")
    e_state = await state(http_stack, a, mkt, o["id"])
    assert (e_state.tif, e_state.expire_ts) == (TimeInForce.GTD, later * 1_000_000)
    assert (await ax.fetch_order(o["id"], s))["timeInForce"] == "GTD"
    assert [x["timeInForce"] for x in await ax.fetch_open_orders(s)] == ["GTD"]
    await trade_at(http_stack, bx, cx, s, 100)
    stop = await ax.create_order(s, "limit", "sell", 0.1, 94,
                                 {"stopPrice": 95, "timeInForce": "GTD",
                                  "goodTillDate": later})  # fmt: skip
    assert (stop["info"]["type"], stop["timeInForce"]) == ("STOP_LOSS_LIMIT", "GTD")

    soon = int(time.time() * 1000) + 1500  # expires by itself (the engine ticks)
    short = await ax.create_order(s, "limit", "buy", 0.1, 91,
                                  {"timeInForce": "GTD", "goodTillDate": soon})  # fmt: skip
    assert short["status"] == "open"

    async def expired() -> bool:
        return (await ax.fetch_order(short["id"], s))["status"] == "expired"

    await eventually_async(expired, 15.0, 0.2, "the GTD order expired")
    got = await ax.fetch_order(short["id"], s)
    assert (got["info"]["status"], got["timeInForce"], got["filled"]) == ("EXPIRED", "GTD", 0)
    assert (await state(http_stack, a, mkt, short["id"])).status == OrderStatus.EXPIRED
    assert await open_ids(http_stack, a) == {o["id"], stop["id"]}
    await ax.cancel_all_orders(s)


# ---------------------------------------------------------------------- by hand (raw)


@async_test
async def test_raw_stop_limit_create_query_cancel(http_stack: HttpStack) -> None:
    mkt = market(http_stack)
    a, ax, bx, cx = await traders(http_stack, mkt)
    await trade_at(http_stack, bx, cx, mkt.symbol, 100)
    status, _, body = await signed_raw(
        http_stack, a, "POST", "/api/v3/order", symbol=mkt.id, side="BUY",
        type="TAKE_PROFIT_LIMIT", timeInForce="GTC", quantity="0.25", price="96.5",
        stopPrice="97", newClientOrderId="tp-raw-1", newOrderRespType="RESULT",
    )  # fmt: skip
    assert status == 200, body
    oid = body["orderId"]
    assert isinstance(oid, int)
    fixed = {k: body.pop(k) for k in ("orderId", "transactTime")}
    assert fixed["transactTime"] > 0
    assert body == {
        "symbol": mkt.id, "orderListId": -1, "clientOrderId": "tp-raw-1", "price": "96.50",
        "origQty": "0.2500", "executedQty": "0.0000", "cummulativeQuoteQty": "0.000000",
        "status": "NEW", "timeInForce": "GTC", "type": "TAKE_PROFIT_LIMIT", "side": "BUY",
        "stopPrice": "97.00", "origQuoteOrderQty": "0.000000",
        "selfTradePreventionMode": "EXPIRE_TAKER",
    }  # fmt: skip
    e = await state(http_stack, a, mkt, str(oid))
    assert (e.trigger, e.stop_price, e.price, e.waiting) == (TriggerKind.TAKE_PROFIT, 9700,
                                                             9650, True)  # fmt: skip

    async with aiohttp.ClientSession() as session:
        status, got = await v3(session, http_stack.url, a, "GET", "/api/v3/order",
                               symbol=mkt.id, orderId=oid)  # fmt: skip
    assert status == 200, got
    assert (got["type"], got["stopPrice"], got["isWorking"], got["workingTime"]) == (
        "TAKE_PROFIT_LIMIT", "97.00", False, -1)  # fmt: skip
    status, _, gone = await signed_raw(
        http_stack, a, "DELETE", "/api/v3/order", symbol=mkt.id, orderId=oid
    )
    assert status == 200, gone
    assert (gone["status"], gone["type"], gone["stopPrice"]) == (
        "CANCELED", "TAKE_PROFIT_LIMIT", "97.00")  # fmt: skip
    assert await open_ids(http_stack, a) == set()
    assert (await balances(http_stack, a))["USD"][1] == 0

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{http_stack.url}/api/v3/exchangeInfo?symbol={mkt.id}") as r:
            info = (await r.json())["symbols"][0]
    assert set(STOP_TYPES) <= set(info["orderTypes"])

"""``/api/v1`` against the real gateway and engine processes: every route (and its aliases)
through requests signed as docs/rest.md says, results checked against the engine's own view
(an EngineClient of the test) or against other routes; bad inputs per route; authentication
(read-only and revoked keys, bad signatures, missing headers, timestamps out of the window,
replays); rate limits; an order in doubt; the committed docs/openapi.json kept equal to the
generated document.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol import messages as M
from tests.fixtures_gateway import async_test
from tests.fixtures_http import (
    REPLY_TIMEOUT,
    HttpStack,
    Trader,
    http_stack_fixture,  # noqa: F401
    running_stack,
    v1,
    v1_headers,
)
from tests.procs import REPO, eventually_async
from tests.test_http_private_stream import Stream

V1 = "/api/v1"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def ticks(text: str) -> int:  # Q-markets: tick 0.01, lot 0.0001 (tests/fixtures_http.py)
    return int(Decimal(text) * 100)


def lots(text: str) -> int:
    return int(Decimal(text) * 10_000)


def usd(text: str) -> int:  # USD has 6 decimals
    return int(Decimal(text) * 10**6)


def http_test(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """An async test with a session for the gateway in ``s``."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        async with aiohttp.ClientSession() as s:
            return await fn(*args, s=s, **kwargs)

    wrapper.__signature__ = _without_s(fn)  # type: ignore[attr-defined]
    return async_test(wrapper)


def _without_s(fn: Callable[..., Any]) -> Any:
    import inspect

    sig = inspect.signature(fn)
    return sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "s"])


async def engine(stack: HttpStack, cmd: Any) -> Any:
    return await stack.engine_request(cmd)


async def open_in_engine(stack: HttpStack, who: Trader, market: str = "") -> list[M.OrderState]:
    reply = await engine(stack, M.OpenOrdersRequest(0, who.account, market))
    assert isinstance(reply, M.OpenOrders), reply
    return reply.orders


async def balances_in_engine(stack: HttpStack, who: Trader) -> dict[str, tuple[int, int]]:
    reply = await engine(stack, M.BalancesRequest(0, who.account))
    assert isinstance(reply, M.Balances), reply
    return {b.asset: (b.available, b.locked) for b in reply.balances}


def order(market: str, kind: str, price: str, qty: str, **extra: Any) -> dict[str, Any]:
    return {
        "market": market,
        "kind": kind,
        "type": "limit",
        "price": price,
        "quantity": qty,
        **extra,
    }


async def setup(stack: HttpStack, **amounts: str) -> tuple[str, Trader]:
    market = stack.new_market()
    base = market.split("-")[0]
    who = await stack.funded(USD=amounts.get("USD", "100000"), **{base: amounts.get("base", "10")})
    return market, who


# ----------------------------------------------------------------------------- orders


@http_test
async def test_cancel_replace_changes_price_and_quantity_as_the_engine_sees_it(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    market, who = await setup(http_stack)
    other = await http_stack.funded(USD="1000")
    body = {"market": market, "kind": "buy", "price": "100.00", "quantity": "2",
            "client_order_id": "r1"}  # fmt: skip
    st, placed = await v1(s, http_stack.url, who, "POST", f"{V1}/order", body)
    assert st == 200, placed
    oid = placed["order"]["order_id"]
    new = {"market": market, "price": "101.50", "quantity": "1.5", "new_client_order_id": "r2"}
    st, out = await v1(s, http_stack.url, who, "PUT", f"{V1}/order/{oid}", new)
    assert st == 200, out
    assert (out[-1]["status"], out[-1]["price"], out[-1]["qty"]) == ("new", "101.50", "1.5000")
    assert out[-1]["client_order_id"] == "r2" and out[-1]["order_id"] == oid
    (o,) = await open_in_engine(http_stack, who, market)
    assert (o.order_id, o.price, o.qty, o.client_order_id) == (oid, 10150, 15000, "r2")
    bal = await engine(http_stack, M.BalancesRequest(0, who.account))
    cash = {b.asset: b for b in bal.balances}["USD"]
    assert cash.locked == usd("152.25")  # 101.50 x 1.5: the lock follows the new order
    # by the new client order id, the alias spelling; the old id is gone
    by_cid = {"by": "client_order_id"}
    st, out = await v1(s, http_stack.url, who, "PUT", f"{V1}/orders/r2",
                       {"market": market, "quantity": "1"}, query=by_cid)  # fmt: skip
    assert st == 200 and out[-1]["qty"] == "1.0000", out
    st, gone = await v1(s, http_stack.url, who, "PUT", f"{V1}/order/r1",
                        {"market": market, "quantity": "1"}, query=by_cid)  # fmt: skip
    assert st == 404 and gone["error"]["code"] == 3006, gone
    # another account's order id looks exactly like an unknown one
    st, theirs = await v1(s, http_stack.url, other, "PUT", f"{V1}/order/{oid}",
                          {"market": market, "price": "99.00"})  # fmt: skip
    st2, unknown = await v1(s, http_stack.url, other, "PUT", f"{V1}/order/{oid + 10**9}",
                            {"market": market, "price": "99.00"})  # fmt: skip
    assert (st, theirs["error"]["code"]) == (st2, unknown["error"]["code"]) == (404, 3006)
    # bad replaces change nothing
    bads = ({"market": market}, {"market": market, "price": "100.001"},
            {"market": market, "quantity": 1}, {"market": "NOPE-USD", "price": "1.00"})  # fmt: skip
    for bad in bads:
        st, err = await v1(s, http_stack.url, who, "PUT", f"{V1}/order/{oid}", bad)
        assert 400 <= st < 500 and "error" in err, (bad, st, err)
    (o,) = await open_in_engine(http_stack, who, market)
    assert (o.price, o.qty) == (10150, 10000)


@pytest.mark.parametrize("spelling", ["order", "orders"])
@http_test
async def test_placed_limit_order_rests_in_the_engine_and_every_read_route_shows_it(
    http_stack: HttpStack, spelling: str, s: aiohttp.ClientSession
) -> None:
    market, who = await setup(http_stack)
    url = http_stack.url
    st, placed = await v1(
        s,
        url,
        who,
        "POST",
        f"{V1}/{spelling}",
        order(market, "buy", "100.00", "0.5", client_order_id=f"c-{spelling}"),
    )
    assert st == 200, placed
    o = placed["order"]
    assert (o["status"], o["price"], o["qty"], o["leaves_qty"], placed["fills"]) == (
        "new",
        "100.00",
        "0.5000",
        "0.5000",
        [],
    )
    [mine] = await open_in_engine(http_stack, who, market)
    assert (mine.order_id, mine.client_order_id, mine.price, mine.qty) == (
        o["order_id"],
        f"c-{spelling}",
        ticks("100.00"),
        lots("0.5"),
    )
    for path in ("order/open", "orders"):
        st, listed = await v1(s, url, who, "GET", f"{V1}/{path}", query={"market": market})
        assert st == 200 and [x["order_id"] for x in listed] == [mine.order_id], listed
    for path in (f"order/{mine.order_id}", f"orders/{mine.order_id}", f"order/c-{spelling}"):
        st, got = await v1(s, url, who, "GET", f"{V1}/{path}")
        assert st == 200 and got["order_id"] == mine.order_id and got["status"] == "new", got
    st, got = await v1(
        s, url, who, "GET", f"{V1}/order/{mine.order_id}", query={"by": "client_order_id"}
    )
    assert st == 404, got  # the digits read as a client order id: there is none
    st, bal = await v1(s, url, who, "GET", f"{V1}/balances")
    assert st == 200
    view = {b["asset"]: (usd(b["available"]), usd(b["locked"])) for b in bal if b["asset"] == "USD"}
    assert view["USD"] == (await balances_in_engine(http_stack, who))["USD"]
    assert view["USD"][1] == usd("50")  # 0.5 at 100.00 locked


@pytest.mark.parametrize("spelling", ["order", "orders"])
@http_test
async def test_cancel_by_order_id_and_by_client_order_id_unlocks_the_funds(
    http_stack: HttpStack, spelling: str, s: aiohttp.ClientSession
) -> None:
    market, who = await setup(http_stack)
    url = http_stack.url
    ids = []
    for i in range(2):
        st, p = await v1(
            s,
            url,
            who,
            "POST",
            f"{V1}/order",
            order(market, "buy", "10.00", "1", client_order_id=f"x{i}"),
        )
        assert st == 200, p
        ids.append(p["order"]["order_id"])
    st, c = await v1(s, url, who, "DELETE", f"{V1}/{spelling}/{ids[0]}")
    assert st == 200 and c[-1]["status"] == "canceled" and c[-1]["order_id"] == ids[0], c
    st, c = await v1(s, url, who, "DELETE", f"{V1}/{spelling}/x1", query={"market": market})
    assert st == 200 and c[-1]["order_id"] == ids[1], c
    assert await open_in_engine(http_stack, who) == []
    assert (await balances_in_engine(http_stack, who))["USD"] == (usd("100000"), 0)
    st, again = await v1(s, url, who, "DELETE", f"{V1}/{spelling}/{ids[0]}")
    assert st == 404 and again["error"]["code"] == 3006, again


@http_test
async def test_cancel_all_cancels_one_market_or_every_market(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    m1, who = await setup(http_stack)
    m2 = http_stack.new_market()
    url = http_stack.url
    for m in (m1, m1, m2):
        st, p = await v1(s, url, who, "POST", f"{V1}/order", order(m, "buy", "1.00", "1"))
        assert st == 200, p
    st, c = await v1(s, url, who, "DELETE", f"{V1}/orders", query={"market": m1})
    assert (st, c) == (200, {"cancelled": 2})
    assert [o.market for o in await open_in_engine(http_stack, who)] == [m2]
    st, c = await v1(s, url, who, "DELETE", f"{V1}/orders")
    assert (st, c) == (200, {"cancelled": 1})
    assert await open_in_engine(http_stack, who) == []


@http_test
async def test_a_fill_shows_in_fills_trades_depth_ticker_and_klines(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    market, maker = await setup(http_stack)
    taker = await http_stack.funded(USD="100000")
    url = http_stack.url
    st, p = await v1(s, url, maker, "POST", f"{V1}/order", order(market, "sell", "101.00", "0.3"))
    assert st == 200, p
    st, q = await v1(
        s,
        url,
        taker,
        "POST",
        f"{V1}/order/quote",
        {"market": market, "kind": "buy", "quantity": "0.1"},
    )
    reply = await engine(http_stack, M.QuoteRequest(0, market, 1, lots("0.1")))
    assert st == 200 and isinstance(reply, M.QuoteReply), q
    assert (usd(q["quote_qty"]), ticks(q["worst_price"]), q["complete"]) == (
        reply.quote_qty,
        reply.worst_price,
        True,
    )
    st, p = await v1(
        s,
        url,
        taker,
        "POST",
        f"{V1}/order",
        {
            "market": market,
            "side": "buy",
            "type": "limit",
            "price": "101.00",
            "quantity": "0.1",
            "time_in_force": "IOC",
        },
    )
    assert st == 200 and p["order"]["status"] == "filled", p
    [fill] = p["fills"]
    assert (fill["price"], fill["qty"], fill["liquidity"]) == ("101.00", "0.1000", "taker")
    st, fills = await v1(s, url, taker, "GET", f"{V1}/fills", query={"market": market})
    engine_fills = await engine(http_stack, M.FillsRequest(0, taker.account, market))
    assert st == 200 and [f["trade_id"] for f in fills] == [
        r.trade_id for r in engine_fills.fills
    ] == [fill["trade_id"]], fills
    st, mfills = await v1(s, url, maker, "GET", f"{V1}/fills", query={"limit": "1"})
    assert st == 200 and mfills[0]["liquidity"] == "maker", mfills

    async def market_data_caught_up() -> bool:
        _, book = await v1(s, url, None, "GET", f"{V1}/depth", query={"market": market})
        return bool(book["asks"] == [["101.00", "0.2000"]])

    await eventually_async(market_data_caught_up, REPLY_TIMEOUT, 0.05, "depth after the fill")
    st, book = await v1(s, url, None, "GET", f"{V1}/orderbook/{market}", query={"limit": "5"})
    assert st == 200 and book["asks"] == [["101.00", "0.2000"]] and book["bids"] == [], book
    st, trades = await v1(s, url, None, "GET", f"{V1}/trades", query={"market": market})
    assert st == 200 and [(t["id"], t["price"], t["side"]) for t in trades] == [
        (fill["trade_id"], "101.00", "buy")
    ], trades
    for path, query in ((f"{V1}/tickers", {"market": market}), (f"{V1}/ticker/{market}", None)):
        st, t = await v1(s, url, None, "GET", path, query=query)
        assert st == 200 and (t["last"], t["volume"], t["trades"]) == ("101.00", "0.1000", 1), t
    st, every = await v1(s, url, None, "GET", f"{V1}/tickers")
    assert st == 200 and {t["market"] for t in every} == set(http_stack.ex.markets)
    for path, query in ((f"{V1}/klines", {"market": market}), (f"{V1}/klines/{market}", None)):
        st, k = await v1(s, url, None, "GET", path, query=query)
        assert st == 200 and [(c["close"], c["volume"]) for c in k] == [("101.00", "0.1000")], k
    st, k = await v1(s, url, None, "GET", f"{V1}/klines/{market}", query={"interval": "1h"})
    assert st == 200 and k[0]["interval"] == "1h", k


@http_test
async def test_the_whole_order_surface_is_reachable(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    market, maker = await setup(http_stack)
    taker = await http_stack.funded(USD="1000")
    url = http_stack.url
    st, p = await v1(s, url, maker, "POST", f"{V1}/order", order(market, "sell", "50.00", "1"))
    assert st == 200, p
    st, p = await v1(
        s,
        url,
        taker,
        "POST",
        f"{V1}/order",
        {"market": market, "kind": "buy", "type": "market", "quote_quantity": "5.00"},
    )
    assert st == 200 and (p["order"]["status"], p["order"]["cum_qty"]) == ("filled", "0.1000"), p
    cases = [  # (body, status, order status or error code)
        (order(market, "buy", "50.00", "5", time_in_force="FOK"), 200, "expired"),
        (order(market, "buy", "40.00", "1", time_in_force="IOC"), 200, "expired"),
        (order(market, "buy", "50.00", "0.1", post_only=True), 400, 3008),
        (order(market, "buy", "49.00", "0.1", post_only=True), 200, "new"),
        (order(market, "buy", "49.00", "100"), 400, 2001),
    ]
    for body, want_status, want in cases:
        st, p = await v1(s, url, taker, "POST", f"{V1}/order", body)
        got = p["order"]["status"] if st == 200 else p["error"]["code"]
        assert (st, got) == (want_status, want), (body, p)
    st, p = await v1(
        s,
        url,
        taker,
        "POST",
        f"{V1}/order",
        order(market, "buy", "1.00", "0.1", client_order_id="same"),
    )
    st, dup = await v1(
        s,
        url,
        taker,
        "POST",
        f"{V1}/order",
        order(market, "buy", "1.00", "0.1", client_order_id="same"),
    )
    assert st == 409 and dup["error"]["code"] == 3007, dup
    st, p = await v1(
        s,
        url,
        maker,
        "POST",
        f"{V1}/order",
        order(market, "buy", "50.00", "0.1", stp="cancel_newest"),
    )
    assert st == 200 and p["order"]["status"] in ("canceled", "expired"), p
    assert [o.price for o in await open_in_engine(http_stack, taker, market)] == [4900, 100]


@http_test
async def test_markets_lists_the_configured_markets_and_their_rules(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    st, markets = await v1(s, http_stack.url, None, "GET", f"{V1}/markets")
    assert st == 200 and [m["symbol"] for m in markets] == list(http_stack.ex.markets)
    q = next(m for m in markets if m["symbol"] == "Q00-USD")
    assert (q["base"], q["quote"], q["tick"], q["lot"]) == ("Q00", "USD", "0.01", "0.0001")


# ------------------------------------------------------------- stop orders and GTD


async def trade_at(s: aiohttp.ClientSession, stack: HttpStack, market: str, price: str,
                   qty: str = "0.1") -> None:  # fmt: skip
    """A trade at ``price`` between two accounts of its own: the market's last price."""
    seller = await stack.funded(**{market.split("-")[0]: "10"})
    buyer = await stack.funded(USD="100000")
    st, p = await v1(s, stack.url, seller, "POST", f"{V1}/order", order(market, "sell", price, qty))
    assert st == 200, p
    body = order(market, "buy", price, qty, time_in_force="IOC")
    st, p = await v1(s, stack.url, buyer, "POST", f"{V1}/order", body)
    assert st == 200 and p["order"]["status"] == "filled" and p["fills"][0]["price"] == price, p


@http_test
async def test_a_stop_limit_waits_outside_the_book_then_triggers_on_a_trade_through_its_stop(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    market, who = await setup(http_stack)
    url = http_stack.url
    await trade_at(s, http_stack, market, "100.00")  # the last price: 100.00
    stop = order(market, "buy", "106.00", "0.5", trigger="stop_loss", stop_price="105.00",
                 client_order_id="stop-1")  # fmt: skip
    st, placed = await v1(s, url, who, "POST", f"{V1}/order", stop)
    assert st == 200, placed
    o = placed["order"]
    assert (o["status"], o["exec_type"], o["type"], o["trigger"], o["stop_price"], o["waiting"],
            o["price"], o["tif"], placed["fills"]) == (
        "new", "new", "limit", "stop_loss", "105.00", True, "106.00", "GTC", [])  # fmt: skip
    [mine] = await open_in_engine(http_stack, who, market)
    assert (mine.waiting, mine.trigger, mine.stop_price, mine.price) == (
        True, 1, ticks("105.00"), ticks("106.00"))  # fmt: skip
    assert (await balances_in_engine(http_stack, who))["USD"][1] == usd("53")  # 0.5 x 106.00
    for path in (f"order/{mine.order_id}", "order/stop-1"):
        st, got = await v1(s, url, who, "GET", f"{V1}/{path}")
        assert st == 200 and (got["waiting"], got["trigger"], got["stop_price"]) == (
            True, "stop_loss", "105.00"), got  # fmt: skip
    st, listed = await v1(s, url, who, "GET", f"{V1}/order/open", query={"market": market})
    assert st == 200 and [(x["order_id"], x.get("waiting")) for x in listed] == [
        (mine.order_id, True)], listed  # fmt: skip
    _, book = await v1(s, url, None, "GET", f"{V1}/depth", query={"market": market})
    assert book["bids"] == [], book  # a waiting stop is not in the public book

    # One whose stop the last price has reached already is refused, and so is a new stop
    # price for an order that is not a stop.
    at_once = {**stop, "stop_price": "100.00", "client_order_id": ""}
    st, err = await v1(s, url, who, "POST", f"{V1}/order", at_once)
    assert (st, err["error"]["code"]) == (400, 3016) and "immediately" in err["error"]["reason"]
    st, plain = await v1(s, url, who, "POST", f"{V1}/order", order(market, "buy", "1.00", "1"))
    assert st == 200, plain
    st, err = await v1(s, url, who, "PUT", f"{V1}/order/{plain['order']['order_id']}",
                       {"market": market, "stop_price": "2.00"})  # fmt: skip
    assert (st, err["error"]["code"]) == (400, 3017), err
    st, c = await v1(s, url, who, "DELETE", f"{V1}/order/{plain['order']['order_id']}")
    assert st == 200, c

    # Its stop moves with a replace; it stays waiting.
    st, rep = await v1(s, url, who, "PUT", f"{V1}/order/stop-1",
                       {"market": market, "stop_price": "104.00"})  # fmt: skip
    assert st == 200 and rep[-1]["exec_type"] == "replaced" and rep[-1]["stop_price"] == "104.00"
    [mine] = await open_in_engine(http_stack, who, market)
    assert (mine.waiting, mine.stop_price) == (True, ticks("104.00"))

    # A trade at 104.00 between two others triggers it: the private stream says so, then it
    # takes the rest of the seller's 104.00 offer.
    stream = await Stream.signed_in(s, http_stack, who)
    try:
        await trade_at(s, http_stack, market, "104.00", qty="0.1")
        st, p = await v1(s, url, await http_stack.funded(**{market.split("-")[0]: "1"}), "POST",
                         f"{V1}/order", order(market, "sell", "104.00", "0.5"))  # fmt: skip
        assert st == 200, p
        mid = mine.order_id
        events = await stream.until(
            lambda: [e for e in stream.of("order") if e["order_id"] == mid
                     and e["status"] == "filled"], "the stop filled")  # fmt: skip
        mine_events = [e for e in stream.of("order") if e["order_id"] == mid]
        kinds = [e["exec_type"] for e in mine_events]
        assert kinds[0] == "triggered" and kinds[-1] == "fill", kinds
        assert (mine_events[0]["waiting"], mine_events[0]["stop_price"]) == (False, "104.00")
        assert events[-1]["cum_qty"] == "0.5000"
    finally:
        await stream.close()
    st, got = await v1(s, url, who, "GET", f"{V1}/order/stop-1")
    assert st == 200 and (got["status"], got["cum_qty"], got.get("waiting")) == (
        "filled", "0.5000", None), got  # fmt: skip
    assert (await balances_in_engine(http_stack, who))["USD"][1] == 0


@http_test
async def test_stop_market_and_take_profit_orders_wait_and_cancel_and_gtd_expires(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    market, who = await setup(http_stack)
    url = http_stack.url
    await trade_at(s, http_stack, market, "100.00")
    cases = [  # body, the order's trigger and type as shown
        ({"market": market, "kind": "sell", "type": "market", "quantity": "0.2",
          "trigger": "stop_loss", "stop_price": "95.00"}, ("stop_loss", "market")),
        ({"market": market, "kind": "buy", "type": "market", "quote_quantity": "50.00",
          "trigger": "take_profit", "stop_price": "90.00"}, ("take_profit", "market")),
        (order(market, "sell", "119.00", "0.3", trigger="take_profit", stop_price="120.00"),
         ("take_profit", "limit")),
    ]  # fmt: skip
    ids = []
    for body, (trigger, kind) in cases:
        st, p = await v1(s, url, who, "POST", f"{V1}/order", body)
        assert st == 200, (body, p)
        o = p["order"]
        assert (o["trigger"], o["type"], o["stop_price"], o["waiting"]) == (
            trigger, kind, body["stop_price"], True), o  # fmt: skip
        ids.append(o["order_id"])
    st, listed = await v1(s, url, who, "GET", f"{V1}/orders", query={"market": market})
    assert st == 200 and sorted((x["order_id"], x["waiting"]) for x in listed) == [
        (i, True) for i in sorted(ids)], listed  # fmt: skip
    st, c = await v1(s, url, who, "DELETE", f"{V1}/order/{ids[0]}")
    assert st == 200 and c[-1]["status"] == "canceled" and c[-1]["trigger"] == "stop_loss", c
    st, c = await v1(s, url, who, "DELETE", f"{V1}/orders", query={"market": market})
    assert (st, c) == (200, {"cancelled": 2})
    funds = await balances_in_engine(http_stack, who)  # every lock released
    assert (funds["USD"], funds[market.split("-")[0]]) == ((usd("100000"), 0), (10 * 10**8, 0))

    # Good-till-date: shown with its expiry, then expired at it (the engine's own tick).
    expire = time.time_ns() + 1_500_000_000
    body = order(market, "buy", "90.00", "0.1", time_in_force="GTD", expire_ts=expire)
    st, p = await v1(s, url, who, "POST", f"{V1}/order", body)
    assert st == 200 and (p["order"]["tif"], p["order"]["expire_ts"]) == ("GTD", expire), p
    oid = p["order"]["order_id"]
    st, got = await v1(s, url, who, "GET", f"{V1}/order/{oid}")
    assert st == 200 and (got["status"], got["tif"], got["expire_ts"]) == ("new", "GTD", expire)

    async def expired() -> bool:
        _, got = await v1(s, url, who, "GET", f"{V1}/order/{oid}")
        return bool(got["status"] == "expired")

    await eventually_async(expired, REPLY_TIMEOUT, 0.1, "the GTD order expired")
    st, hist = await v1(s, url, who, "GET", f"{V1}/order-history", query={"market": market})
    assert st == 200 and hist[-1]["order_id"] == oid and hist[-1]["status"] == "expired", hist
    assert time.time_ns() >= expire


async def depth_is(s: aiohttp.ClientSession, stack: HttpStack, market: str, side: str,
                   levels: list[list[str]], what: str) -> None:  # fmt: skip
    async def shown() -> bool:
        _, book = await v1(s, stack.url, None, "GET", f"{V1}/depth", query={"market": market})
        return bool(book[side] == levels)

    await eventually_async(shown, REPLY_TIMEOUT, 0.05, what)


@http_test
async def test_an_iceberg_shows_only_its_visible_part_in_the_public_depth(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    market, who = await setup(http_stack)
    url = http_stack.url
    ice = order(market, "sell", "101.00", "1", display_qty="0.2", client_order_id="ice-1")
    st, placed = await v1(s, url, who, "POST", f"{V1}/order", ice)
    assert st == 200, placed
    o = placed["order"]
    assert (o["status"], o["qty"], o["leaves_qty"], o["display_qty"]) == (
        "new", "1.0000", "1.0000", "0.2000"), o  # fmt: skip
    [mine] = await open_in_engine(http_stack, who, market)
    assert (mine.display_qty, mine.leaves_qty) == (lots("0.2"), lots("1"))
    assert (await balances_in_engine(http_stack, who))[market.split("-")[0]][1] == 10**8  # all
    st, got = await v1(s, url, who, "GET", f"{V1}/order/ice-1")
    assert st == 200 and (got["display_qty"], got["leaves_qty"]) == ("0.2000", "1.0000"), got
    st, listed = await v1(s, url, who, "GET", f"{V1}/order/open", query={"market": market})
    assert st == 200 and [x.get("display_qty") for x in listed] == ["0.2000"], listed
    await depth_is(s, http_stack, market, "asks", [["101.00", "0.2000"]], "the visible part")

    # A taker of 0.3 takes the shown 0.2, then 0.1 of the next part; 0.1 shows now.
    taker = await http_stack.funded(USD="1000")
    body = order(market, "buy", "101.00", "0.3", time_in_force="IOC")
    st, p = await v1(s, url, taker, "POST", f"{V1}/order", body)
    assert st == 200 and p["order"]["status"] == "filled", p
    assert [f["qty"] for f in p["fills"]] == ["0.2000", "0.1000"], p["fills"]
    await depth_is(s, http_stack, market, "asks", [["101.00", "0.1000"]], "the refilled part")
    st, got = await v1(s, url, who, "GET", f"{V1}/order/ice-1")
    assert st == 200 and (got["status"], got["leaves_qty"], got["display_qty"]) == (
        "partially_filled", "0.7000", "0.2000"), got  # fmt: skip
    st, c = await v1(s, url, who, "DELETE", f"{V1}/order/ice-1")
    assert st == 200 and c[-1]["status"] == "canceled", c
    await depth_is(s, http_stack, market, "asks", [], "the iceberg gone")


@http_test
async def test_a_trailing_stop_waits_follows_the_price_and_triggers_on_its_distance(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    market, who = await setup(http_stack)
    url = http_stack.url
    trail = {"market": market, "kind": "sell", "type": "market", "quantity": "0.2",
             "trigger": "stop_loss", "trailing_bps": 500, "client_order_id": "trail-1"}  # fmt: skip
    st, err = await v1(s, url, who, "POST", f"{V1}/order", trail)  # no trade, no last price
    assert (st, err["error"]["code"]) == (400, 3020) and "last price" in err["error"]["reason"]
    await trade_at(s, http_stack, market, "100.00")
    st, placed = await v1(s, url, who, "POST", f"{V1}/order", trail)
    assert st == 200, placed
    o = placed["order"]
    assert (o["trigger"], o["trailing_bps"], o["waiting"], o.get("stop_price")) == (
        "stop_loss", 500, True, None), o  # fmt: skip
    # A take-profit sell that starts following at 109.00 (its activation price).
    tp = {**trail, "quantity": "0.1", "trigger": "take_profit", "stop_price": "109.00",
          "client_order_id": "trail-2"}  # fmt: skip
    st, placed = await v1(s, url, who, "POST", f"{V1}/order", tp)
    assert st == 200 and placed["order"]["stop_price"] == "109.00", placed

    async def trails() -> list[Any]:
        out = []
        for cid in ("trail-1", "trail-2"):
            st, got = await v1(s, url, who, "GET", f"{V1}/order/{cid}")
            assert st == 200, got
            out.append((got["status"], got.get("waiting"), got.get("trail_price")))
        return out

    assert await trails() == [("new", True, "100.00"), ("new", True, None)]
    await trade_at(s, http_stack, market, "98.00")  # above 95.00: nothing triggers
    assert await trails() == [("new", True, "100.00"), ("new", True, None)]
    await trade_at(s, http_stack, market, "110.00")  # both follow 110.00 now: 104.50
    assert await trails() == [("new", True, "110.00"), ("new", True, "110.00")]
    st, listed = await v1(s, url, who, "GET", f"{V1}/order/open", query={"market": market})
    assert st == 200 and sorted((x["trailing_bps"], x["trail_price"]) for x in listed) == [
        (500, "110.00"), (500, "110.00")], listed  # fmt: skip
    await trade_at(s, http_stack, market, "105.00")  # not yet
    assert await trails() == [("new", True, "110.00"), ("new", True, "110.00")]

    bidder = await http_stack.funded(USD="1000")
    st, p = await v1(s, url, bidder, "POST", f"{V1}/order", order(market, "buy", "104.00", "1"))
    assert st == 200, p
    stream = await Stream.signed_in(s, http_stack, who)
    try:
        await trade_at(s, http_stack, market, "104.50")  # 110.00 less 5%: both trigger

        def both_filled() -> list[Any] | None:
            filled = [e for e in stream.of("order") if e["status"] == "filled"]
            return filled if len(filled) == 2 else None

        events = await stream.until(both_filled, "both trailing stops filled")
        mine = stream.of("order")
        assert [(e["client_order_id"], e["exec_type"]) for e in mine] == [
            ("trail-1", "triggered"), ("trail-1", "fill"),
            ("trail-2", "triggered"), ("trail-2", "fill")], mine  # fmt: skip
        assert all(e["last_price"] == "104.00" for e in events), events
    finally:
        await stream.close()
    assert [x[:2] for x in await trails()] == [("filled", None), ("filled", None)]


async def place_oco(s: aiohttp.ClientSession, stack: HttpStack, who: Trader,
                    body: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    st, placed = await v1(s, stack.url, who, "POST", f"{V1}/order/oco", body)
    assert st == 200, placed
    return placed


@http_test
async def test_oco_a_fill_of_the_limit_cancels_the_stop_and_cancelling_one_cancels_both(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    market, who = await setup(http_stack)
    base = market.split("-")[0]
    url = http_stack.url
    await trade_at(s, http_stack, market, "100.00")
    body = {"market": market, "kind": "sell", "quantity": "0.5", "price": "110.00",
            "stop_price": "95.00", "stop_limit_price": "94.00", "list_client_id": "L1",
            "limit_client_order_id": "oco-tp", "stop_client_order_id": "oco-sl"}  # fmt: skip
    placed = await place_oco(s, http_stack, who, body)
    lim, stop = placed["orders"]
    assert placed["list_id"] == lim["order_id"] and placed["list_client_id"] == "L1", placed
    assert (lim["client_order_id"], lim["type"], lim["price"], lim["post_only"],
            lim["list_id"]) == ("oco-tp", "limit", "110.00", True, lim["order_id"])  # fmt: skip
    assert (stop["client_order_id"], stop["trigger"], stop["stop_price"], stop["price"],
            stop["waiting"], stop["list_id"]) == (
        "oco-sl", "stop_loss", "95.00", "94.00", True, lim["order_id"])  # fmt: skip
    st, listed = await v1(s, url, who, "GET", f"{V1}/order/open", query={"market": market})
    assert st == 200 and sorted((x["order_id"], x["list_id"]) for x in listed) == [
        (lim["order_id"], lim["order_id"]),
        (stop["order_id"], lim["order_id"]),
    ], listed
    assert (await balances_in_engine(http_stack, who))[base][1] == 5 * 10**7  # locked once
    await depth_is(s, http_stack, market, "asks", [["110.00", "0.5000"]], "the limit order")
    # An order of a list cannot be replaced.
    st, err = await v1(s, url, who, "PUT", f"{V1}/order/oco-tp",
                       {"market": market, "quantity": "0.4"})  # fmt: skip
    assert (st, err["error"]["code"]) == (400, 3022), err

    # A partial fill of the limit order cancels the stop (LINKED), told by the private stream.
    stream = await Stream.signed_in(s, http_stack, who)
    try:
        taker = await http_stack.funded(USD="1000")
        st, p = await v1(s, url, taker, "POST", f"{V1}/order",
                         order(market, "buy", "110.00", "0.2", time_in_force="IOC"))  # fmt: skip
        assert st == 200 and p["order"]["status"] == "filled", p
        [gone] = await stream.until(
            lambda: [e for e in stream.of("order") if e["order_id"] == stop["order_id"]],
            "the stop cancelled")  # fmt: skip
        assert (gone["status"], gone["reason"]) == ("canceled", "linked"), gone
    finally:
        await stream.close()
    [left] = await open_in_engine(http_stack, who, market)
    assert (left.order_id, left.leaves_qty, left.list_id) == (
        lim["order_id"], lots("0.3"), lim["order_id"])  # fmt: skip
    st, got = await v1(s, url, who, "GET", f"{V1}/order/oco-sl")
    assert st == 200 and (got["status"], got.get("waiting")) == ("canceled", None), got
    assert (await balances_in_engine(http_stack, who))[base][1] == 3 * 10**7
    st, c = await v1(s, url, who, "DELETE", f"{V1}/order/oco-tp")
    assert st == 200 and [x["status"] for x in c] == ["canceled"], c  # its stop went before

    # Cancelling the stop of a buy list (a stop-market) cancels its limit order too.
    body = {"market": market, "side": "buy", "quantity": "0.1", "price": "90.00",
            "stop_price": "115.00"}  # fmt: skip
    placed = await place_oco(s, http_stack, who, body)
    lim, stop = placed["orders"]
    # A stop-market buy carries its protection price: 10% through its stop.
    assert (stop["type"], stop["price"], stop["stop_price"]) == ("market", "126.50", "115.00")
    assert len(await open_in_engine(http_stack, who, market)) == 2
    st, c = await v1(s, url, who, "DELETE", f"{V1}/order/{stop['order_id']}")
    assert st == 200, c
    assert [(x["order_id"], x["status"], x["reason"], x["list_id"]) for x in c] == [
        (stop["order_id"], "canceled", "user", lim["order_id"]),
        (lim["order_id"], "canceled", "linked", lim["order_id"])], c  # fmt: skip
    assert await open_in_engine(http_stack, who, market) == []
    funds = await balances_in_engine(http_stack, who)
    assert (funds["USD"][1], funds[base][1]) == (0, 0)

    # Refused by the engine: a sell list whose limit is not above the last price (100.00).
    body = {"market": market, "kind": "sell", "quantity": "0.1", "price": "99.00",
            "stop_price": "95.00"}  # fmt: skip
    st, err = await v1(s, url, who, "POST", f"{V1}/order/oco", body)
    assert (st, err["error"]["code"]) == (400, 3021) and "last price" in err["error"]["reason"]
    assert await open_in_engine(http_stack, who, market) == []


# ---------------------------------------------------------------------- bad inputs

M0 = "Q00-USD"
GOOD = order(M0, "buy", "1.00", "0.1")
BAD_BODIES = [  # (name, body, status, code)
    ("price as a number", {**GOOD, "price": 1.0}, 400, 1007),
    ("quantity as a number", {**GOOD, "quantity": 1}, 400, 1007),
    ("off-tick price", {**GOOD, "price": "1.005"}, 400, 3002),
    ("off-lot quantity", {**GOOD, "quantity": "0.00001"}, 400, 3003),
    ("negative price", {**GOOD, "price": "-1.00"}, 400, 3002),
    ("quantity over the maximum", {**GOOD, "quantity": "100000"}, 400, 3005),
    ("unknown market", {**GOOD, "market": "NOPE-USD"}, 400, 3001),
    ("missing market", {k: v for k, v in GOOD.items() if k != "market"}, 400, 1007),
    ("missing kind", {k: v for k, v in GOOD.items() if k != "kind"}, 400, 3011),
    ("bad kind", {**GOOD, "kind": "long"}, 400, 1007),
    ("kind and side disagree", {**GOOD, "side": "sell"}, 400, 3011),
    ("bad type", {**GOOD, "type": "stop"}, 400, 1007),
    ("bad time in force", {**GOOD, "time_in_force": "GTX"}, 400, 1007),
    ("limit without price", {k: v for k, v in GOOD.items() if k != "price"}, 400, 1007),
    ("unknown field", {**GOOD, "leverage": "10"}, 400, 1007),
    ("post_only as a string", {**GOOD, "post_only": "yes"}, 400, 1007),
    ("a JSON array", [GOOD], 400, 1007),
    ("not JSON", b"{market: Q00-USD", 400, 1001),
    ("no body", None, 400, 1001),
    ("client order id too long", {**GOOD, "client_order_id": "x" * 65}, 400, 1007),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "code"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
@http_test
async def test_a_bad_order_is_refused_with_its_code_and_nothing_is_placed(
    http_stack: HttpStack, name: str, body: Any, status: int, code: int, s: aiohttp.ClientSession
) -> None:
    who = await http_stack.funded(USD="1000")
    st, err = await v1(s, http_stack.url, who, "POST", f"{V1}/order", body)
    assert (st, err["error"]["code"]) == (status, code), err
    assert err["error"]["reason"]
    if name.endswith("as a number"):
        assert "decimal strings" in err["error"]["reason"]
    assert await open_in_engine(http_stack, who) == []


FUTURE = 4_102_444_800 * 10**9  # 2100-01-01, ns
BAD_ADVANCED = [  # (name, extra fields of a good limit buy, code, words in the reason)
    ("stop with post_only", {"trigger": "stop_loss", "stop_price": "2.00", "post_only": True},
     3009, "post_only"),
    ("stop price malformed", {"trigger": "stop_loss", "stop_price": "2.0.0"}, 3017,
     "stop_price"),
    ("stop price off the tick", {"trigger": "stop_loss", "stop_price": "2.001"}, 3017, "0.01"),
    ("stop price zero", {"trigger": "stop_loss", "stop_price": "0"}, 3017, "stop_price"),
    ("stop price as a number", {"trigger": "stop_loss", "stop_price": 2.0}, 1007,
     "decimal strings"),
    ("stop price without trigger", {"stop_price": "2.00"}, 3017, "trigger"),
    ("trigger without stop price", {"trigger": "take_profit"}, 3017, "stop_price"),
    ("unknown trigger", {"trigger": "trailing", "stop_price": "2.00"}, 1007, "trigger"),
    ("GTD without expiry", {"time_in_force": "GTD"}, 3018, "expire_ts"),
    ("expiry in the past", {"time_in_force": "GTD", "expire_ts": time.time_ns() - 10**9}, 3018,
     "in the past"),
    ("expiry in milliseconds", {"time_in_force": "GTD", "expire_ts": FUTURE // 10**6}, 3018,
     "nanoseconds"),
    ("expiry without GTD", {"expire_ts": FUTURE}, 3018, "only for time_in_force GTD"),
    ("expiry as a string", {"time_in_force": "GTD", "expire_ts": str(FUTURE)}, 1007,
     "expire_ts"),
    ("negative expiry", {"time_in_force": "GTD", "expire_ts": -1}, 1007, "expire_ts"),
    ("display above the quantity", {"display_qty": "0.2"}, 3019, "at most the quantity"),
    ("display malformed", {"display_qty": "0.1.0"}, 3019, "display_qty"),
    ("display off the lot", {"display_qty": "0.00001"}, 3019, "display_qty"),
    ("display zero", {"display_qty": "0"}, 3019, "display_qty"),
    ("display as a number", {"display_qty": 0.05}, 1007, "decimal strings"),
    ("display on an IOC", {"display_qty": "0.05", "time_in_force": "IOC"}, 3010, "GTC or GTD"),
    ("trailing without trigger", {"trailing_bps": 100}, 3020, "trigger"),
    ("trailing too small", {"trigger": "stop_loss", "trailing_bps": 5}, 3020, "10..2000"),
    ("trailing too large", {"trigger": "stop_loss", "trailing_bps": 2001}, 3020, "10..2000"),
    ("trailing negative", {"trigger": "stop_loss", "trailing_bps": -100}, 3020, "10..2000"),
    ("trailing as a string", {"trigger": "stop_loss", "trailing_bps": "100"}, 1007,
     "trailing_bps"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "extra", "code", "words"), BAD_ADVANCED, ids=[b[0] for b in BAD_ADVANCED]
)
@http_test
async def test_a_bad_stop_or_gtd_order_is_refused_in_words_and_nothing_is_placed(
    http_stack: HttpStack, name: str, extra: dict, code: int, words: str,
    s: aiohttp.ClientSession,
) -> None:  # fmt: skip
    who = await http_stack.funded(USD="1000")
    st, err = await v1(s, http_stack.url, who, "POST", f"{V1}/order", {**GOOD, **extra})
    assert (st, err["error"]["code"]) == (400, code), err
    assert words in err["error"]["reason"], err
    assert await open_in_engine(http_stack, who) == []


OCO = {"market": M0, "kind": "sell", "quantity": "0.1", "price": "3.00", "stop_price": "2.00"}
BAD_OCO = [  # (name, body, status, code, words in the reason)
    ("price as a number", {**OCO, "price": 3.0}, 400, 1007, "decimal strings"),
    ("no stop price", {k: v for k, v in OCO.items() if k != "stop_price"}, 400, 1007,
     "stop_price"),
    ("no side", {k: v for k, v in OCO.items() if k != "kind"}, 400, 3011, "kind"),
    ("unknown field", {**OCO, "trailing_bps": 100}, 400, 1007, "trailing_bps"),
    ("unknown market", {**OCO, "market": "NOPE-USD"}, 400, 3001, "NOPE-USD"),
    ("off-lot quantity", {**OCO, "quantity": "0.00001"}, 400, 3003, "quantity"),
    ("stop price malformed", {**OCO, "stop_price": "two"}, 400, 3017, "stop_price"),
    ("stop limit off the tick", {**OCO, "stop_limit_price": "1.999"}, 400, 3002,
     "stop_limit_price"),
    ("sell limit below its stop", {**OCO, "price": "1.00"}, 400, 3021, "price > stop_price"),
    ("buy limit above its stop", {**OCO, "kind": "buy"}, 400, 3021, "price < stop_price"),
    ("one client id for both", {**OCO, "limit_client_order_id": "x",
                                "stop_client_order_id": "x"}, 409, 3007, "differ"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "body", "status", "code", "words"), BAD_OCO, ids=[b[0] for b in BAD_OCO]
)
@http_test
async def test_a_bad_oco_list_is_refused_in_words_and_nothing_is_placed(
    http_stack: HttpStack, name: str, body: Any, status: int, code: int, words: str,
    s: aiohttp.ClientSession,
) -> None:  # fmt: skip
    who = await http_stack.funded(USD="1000", Q00="10")
    st, err = await v1(s, http_stack.url, who, "POST", f"{V1}/order/oco", body)
    assert (st, err["error"]["code"]) == (status, code), err
    assert words in err["error"]["reason"], err
    assert await open_in_engine(http_stack, who) == []


BAD_REQUESTS = [  # (method, path, query, body, status, code)
    ("POST", "order/quote", None, {"market": M0, "kind": "buy"}, 400, 1007),
    (
        "POST",
        "order/quote",
        None,
        {"market": M0, "kind": "buy", "quantity": "1", "quote_quantity": "1"},
        400,
        1007,
    ),
    ("POST", "order/quote", None, {"market": M0, "kind": "buy", "quantity": 1}, 400, 1007),
    ("POST", "order/quote", None, {"market": "ZZ", "kind": "buy", "quantity": "1"}, 400, 3001),
    ("POST", "order/quote", None, {"market": M0, "quantity": "1", "x": 1}, 400, 1007),
    ("GET", "order/abc", {"by": "order_id"}, None, 400, 1007),
    ("GET", "order/99999999999999999999", None, None, 400, 1007),
    ("GET", "order/1", {"by": "name"}, None, 400, 1007),
    ("GET", "order/1", {"market": "ZZ"}, None, 404, 3001),
    ("GET", "order/1", {"colour": "red"}, None, 400, 1007),
    ("DELETE", "order/abc", {"by": "order_id"}, None, 400, 1007),
    ("DELETE", "orders/1", {"market": "ZZ"}, None, 404, 3001),
    ("GET", "order/open", {"market": "ZZ"}, None, 404, 3001),
    ("GET", "orders", {"limit": "5"}, None, 400, 1007),
    ("DELETE", "orders", {"market": "ZZ"}, None, 404, 3001),
    ("DELETE", "orders", {"symbol": M0}, None, 400, 1007),
    ("GET", "fills", {"limit": "abc"}, None, 400, 1007),
    ("GET", "fills", {"limit": "0"}, None, 400, 1007),
    ("GET", "fills", {"limit": "1001"}, None, 400, 1007),
    ("GET", "fills", {"market": "ZZ"}, None, 404, 3001),
    ("GET", "depth", None, None, 400, 1007),
    ("GET", "depth", {"market": "ZZ"}, None, 404, 3001),
    ("GET", "depth", {"market": M0, "limit": "x"}, None, 400, 1007),
    ("GET", "depth", {"market": M0, "limit": "-1"}, None, 400, 1007),
    ("GET", "depth", {"market": M0, "levels": "5"}, None, 400, 1007),
    ("GET", "orderbook/ZZ", None, None, 404, 3001),
    ("GET", f"orderbook/{M0}", {"limit": "1.5"}, None, 400, 1007),
    ("GET", "trades", {"market": "ZZ"}, None, 404, 3001),
    ("GET", "trades", {"market": M0, "limit": "100000"}, None, 400, 1007),
    ("GET", "tickers", {"market": "ZZ"}, None, 404, 3001),
    ("GET", "tickers", {"symbol": M0}, None, 400, 1007),
    ("GET", "ticker/ZZ", None, None, 404, 3001),
    ("GET", "klines", {"market": M0, "interval": "7m"}, None, 400, 1007),
    ("GET", "klines", {"market": M0, "start": "10", "end": "5"}, None, 400, 1007),
    ("GET", "klines", {"market": M0, "start": "yesterday"}, None, 400, 1007),
    ("GET", "klines", {"market": "ZZ"}, None, 404, 3001),
    ("GET", "klines/ZZ", None, None, 404, 3001),
    ("GET", f"klines/{M0}", {"interval": "2d"}, None, 400, 1007),
]


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "status", "code"),
    BAD_REQUESTS,
    ids=[f"{r[0]} {r[1]} {r[2] or r[3]}" for r in BAD_REQUESTS],
)
@http_test
async def test_bad_input_on_every_route_gets_a_json_error_with_a_code(
    http_stack: HttpStack,
    method: str,
    path: str,
    query: Any,
    body: Any,
    status: int,
    code: int,
    s: aiohttp.ClientSession,
) -> None:
    who = await http_stack.funded(USD="1000")
    st, err = await v1(s, http_stack.url, who, method, f"{V1}/{path}", body, query)
    assert (st, err["error"]["code"]) == (status, code), err
    assert isinstance(err["error"]["reason"], str) and err["error"]["reason"]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("spelling", ["order", "orders"])
@http_test
async def test_another_accounts_order_looks_exactly_like_an_unknown_one(
    http_stack: HttpStack, method: str, spelling: str, s: aiohttp.ClientSession
) -> None:
    market, owner = await setup(http_stack)
    other = await http_stack.funded(USD="1000")
    url = http_stack.url
    st, p = await v1(
        s,
        url,
        owner,
        "POST",
        f"{V1}/order",
        order(market, "buy", "1.00", "1", client_order_id="theirs"),
    )
    theirs = p["order"]["order_id"]
    unknown = theirs + 1_000_000
    st1, a = await v1(s, url, other, method, f"{V1}/{spelling}/{theirs}")
    st2, b = await v1(s, url, other, method, f"{V1}/{spelling}/{unknown}")
    assert st1 == st2 == 404
    assert json.dumps(a).replace(str(theirs), "ID") == json.dumps(b).replace(str(unknown), "ID")
    st1, a = await v1(s, url, other, method, f"{V1}/{spelling}/theirs")
    st2, b = await v1(s, url, other, method, f"{V1}/{spelling}/nobodys")
    assert (st1, a) == (st2, json.loads(json.dumps(b).replace("nobodys", "theirs")))
    assert len(await open_in_engine(http_stack, owner)) == 1  # untouched


# --------------------------------------------------------------------- authentication


@http_test
async def test_a_read_only_key_reads_but_cannot_trade(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    market = http_stack.new_market()
    reader = await http_stack.funded("read", USD="1000")
    url = http_stack.url
    for method, path, query, body in (
        ("GET", "balances", None, None),
        ("GET", "order/open", None, None),
        ("GET", "orders", {"market": market}, None),
        ("GET", "fills", None, None),
        ("POST", "order/quote", None, {"market": market, "kind": "buy", "quantity": "1"}),
    ):
        st, got = await v1(s, url, reader, method, f"{V1}/{path}", body, query)
        assert st == 200, (path, got)
    for method, path, body in (
        ("POST", "order", order(market, "buy", "1.00", "1")),
        ("POST", "orders", order(market, "buy", "1.00", "1")),
        ("DELETE", "order/1", None),
        ("DELETE", "orders/1", None),
        ("DELETE", "orders", None),
    ):
        st, err = await v1(s, url, reader, method, f"{V1}/{path}", body)
        assert (st, err["error"]["code"]) == (403, 1003), (path, err)
    assert await open_in_engine(http_stack, reader) == []


@http_test
async def test_a_revoked_key_is_refused_within_its_cache_time(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    who = http_stack.trader()
    url = http_stack.url
    st, _ = await v1(s, url, who, "GET", f"{V1}/balances")
    assert st == 200
    http_stack.store.revoke_key(who.key)
    revoked_at = time.monotonic()

    async def refused() -> Any:
        st, err = await v1(s, url, who, "GET", f"{V1}/balances")
        return err if st == 401 else None

    err = await eventually_async(refused, REPLY_TIMEOUT, 0.05, "revoked key refused")
    assert err["error"]["code"] == 1006
    assert time.monotonic() - revoked_at < REPLY_TIMEOUT


async def raw(
    s: aiohttp.ClientSession, url: str, method: str, path: str, headers: dict, body: bytes = b""
) -> tuple[int, Any]:
    async with s.request(method, url + path, data=body or None, headers=headers) as r:
        return r.status, json.loads(await r.read())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@http_test
async def test_bad_signatures_missing_headers_and_stale_timestamps_are_refused(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    who = http_stack.trader()
    url, path = http_stack.url, f"{V1}/balances"
    good = v1_headers(who, "GET", path, b"")
    assert (await raw(s, url, "GET", path, good))[0] == 200
    cases: list[tuple[str, dict[str, str]]] = [
        ("no headers", {}),
        ("no key", {k: v for k, v in good.items() if k != "X-API-KEY"}),
        ("no timestamp", {k: v for k, v in good.items() if k != "X-API-TIMESTAMP"}),
        ("no signature", {k: v for k, v in good.items() if k != "X-API-SIGNATURE"}),
        ("unknown key", {**good, "X-API-KEY": "k_0000000000000000"}),
        ("wrong signature", {**good, "X-API-SIGNATURE": "0" * 64}),
        ("signature of another path", v1_headers(who, "GET", f"{V1}/fills", b"")),
        ("signature of another method", v1_headers(who, "DELETE", path, b"")),
        (
            "another key's secret",
            {**v1_headers(http_stack.trader(), "GET", path, b""), "X-API-KEY": who.key},
        ),
        ("timestamp 6 s old", v1_headers(who, "GET", path, b"", now_ms() - 6000)),
        ("timestamp 2 s ahead", v1_headers(who, "GET", path, b"", now_ms() + 2000)),
        ("recv window too big", {**good, "X-API-RECV-WINDOW": "600000"}),
        ("recv window not a number", {**good, "X-API-RECV-WINDOW": "soon"}),
    ]
    for name, headers in cases:
        st, err = await raw(s, url, "GET", path, headers)
        assert (st, err["error"]["code"]) == (401, 1006), (name, err)
    old = v1_headers(who, "GET", path, b"", now_ms() - 6000)
    st, _ = await raw(s, url, "GET", path, {**old, "X-API-RECV-WINDOW": "20000"})
    assert st == 200  # a wider window of its own admits it
    st, _ = await raw(
        s, url, "GET", path, {**good, "X-API-SIGNATURE": good["X-API-SIGNATURE"].upper()}
    )
    assert st == 200  # hex in either case


@http_test
async def test_a_replayed_signed_order_is_refused_and_only_one_order_exists(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    market, who = await setup(http_stack)
    path = f"{V1}/order"
    body = json.dumps(order(market, "buy", "1.00", "1")).encode()
    headers = {**v1_headers(who, "POST", path, body), "Content-Type": "application/json"}
    st, first = await raw(s, http_stack.url, "POST", path, headers, body)
    assert st == 200, first
    st, again = await raw(s, http_stack.url, "POST", path, headers, body)
    assert (st, again["error"]["code"]) == (401, 1006) and "already" in again["error"]["reason"]
    # the receive window is a header outside the signature: a wider one buys a replay nothing
    wider = {**headers, "X-API-RECV-WINDOW": "60000"}
    st, again = await raw(s, http_stack.url, "POST", path, wider, body)
    assert (st, again["error"]["code"]) == (401, 1006) and "already" in again["error"]["reason"]
    assert len(await open_in_engine(http_stack, who)) == 1
    read = v1_headers(who, "GET", f"{V1}/order/open", b"")
    for _ in range(2):  # a read may be repeated
        assert (await raw(s, http_stack.url, "GET", f"{V1}/order/open", read))[0] == 200


# -------------------------------------------------------------------- limits, in doubt


@pytest.fixture(name="tight", scope="module")
def tight_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpStack]:
    yield from running_stack(
        tmp_path_factory.mktemp("tight"),
        http_gateway={"orders_per_second": 0.2, "order_burst": 3, "engine_timeout": 1.0},
    )


@http_test
async def test_orders_over_the_accounts_rate_get_429_with_retry_after(
    tight: HttpStack, s: aiohttp.ClientSession
) -> None:
    market, who = await setup(tight)
    url = f"{tight.url}"
    bodies = [order(market, "buy", "1.00", "0.1", client_order_id=f"r{i}") for i in range(5)]
    answers = [await v1(s, url, who, "POST", f"{V1}/order", b) for b in bodies]
    assert [st for st, _ in answers[:3]] == [200, 200, 200]
    st, err = answers[3]
    assert (st, err["error"]["code"]) == (429, 4002) and "retry after" in err["error"]["reason"]
    body = json.dumps(order(market, "buy", "1.00", "0.1")).encode()
    headers = {**v1_headers(who, "POST", f"{V1}/order", body), "Content-Type": "application/json"}
    async with s.post(tight.url + f"{V1}/order", data=body, headers=headers) as r:
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    assert len(await open_in_engine(tight, who)) == 3
    st, _ = await v1(s, tight.url, who, "GET", f"{V1}/balances")
    assert st == 200  # reads have their own, larger budget
    # A request refused with 429 was not done, so sent again unchanged (same signature) once
    # the rate allows it, it is placed: not refused as a replay. 0.2 orders/s: one token in 5 s.
    headers["X-API-RECV-WINDOW"] = "60000"  # the resend comes after the default 5 s window

    async def resent() -> bool:
        async with s.post(tight.url + f"{V1}/order", data=body, headers=headers) as r:
            reply = await r.json()
        assert r.status in (200, 429), reply
        return r.status == 200

    await eventually_async(resent, 40.0, 0.5, "the refused order, resent, placed")
    assert len(await open_in_engine(tight, who)) == 4


@http_test
async def test_an_order_the_engine_does_not_answer_in_time_is_in_doubt_not_refused(
    tight: HttpStack, s: aiohttp.ClientSession
) -> None:
    market, who = await setup(tight)
    os.kill(tight.engine.pid, signal.SIGSTOP)
    try:
        st, err = await v1(
            s,
            tight.url,
            who,
            "POST",
            f"{V1}/order",
            order(market, "buy", "1.00", "0.1", client_order_id="doubt-1"),
        )
    finally:
        os.kill(tight.engine.pid, signal.SIGCONT)
    assert st == 503, err
    assert (err["error"]["code"], err["error"]["client_order_id"]) == (4003, "doubt-1")
    assert "by=client_order_id" in err["error"]["reason"]

    async def outcome() -> Any:
        st, got = await v1(
            s, tight.url, who, "GET", f"{V1}/order/doubt-1", query={"by": "client_order_id"}
        )
        return (st, got) if st in (200, 404) else None

    st, got = await eventually_async(outcome, REPLY_TIMEOUT, 0.1, "the order's outcome")
    in_engine = await open_in_engine(tight, who)
    # the engine decides on its deadline: reached late, it was not executed; else it rests
    assert (st == 200) == bool(in_engine), (got, in_engine)


# --------------------------------------------------------------------------- OpenAPI


def test_committed_openapi_document_equals_the_generated_one() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateways.http", "openapi"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert DOCS.read_bytes() == out.stdout, (
        "docs/openapi.json is stale: python -m gateways.http openapi > docs/openapi.json"
    )


@http_test
async def test_served_openapi_document_is_the_committed_one_and_lists_every_v1_route(
    http_stack: HttpStack, s: aiohttp.ClientSession
) -> None:
    async with s.get(http_stack.url + "/openapi.json") as r:
        assert r.status == 200 and r.content_type == "application/json"
        served = await r.json()
    committed = json.loads(DOCS.read_text())
    served.pop("servers"), committed.pop("servers")
    # the markets a {symbol} may be are this gateway's configured ones (the test adds some)
    for doc in (served, committed):
        for ops in doc["paths"].values():
            for op in ops.values():
                for param in op.get("parameters", []):
                    if param["in"] == "path" and param["name"] == "symbol":
                        assert set(param["schema"].pop("enum")) >= {"BTC-USD", "ETH-USD"}
    assert served == committed
    v1_paths = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops if "v1" in p}
    assert v1_paths == {
        ("POST", f"{V1}/order"),
        ("POST", f"{V1}/orders"),
        ("GET", f"{V1}/order/{{id}}"),
        ("GET", f"{V1}/orders/{{id}}"),
        ("DELETE", f"{V1}/order/{{id}}"),
        ("DELETE", f"{V1}/orders/{{id}}"),
        ("PUT", f"{V1}/order/{{id}}"),
        ("PUT", f"{V1}/orders/{{id}}"),
        ("POST", f"{V1}/order/quote"),
        ("POST", f"{V1}/order/oco"),
        ("POST", f"{V1}/orders/oco"),
        ("GET", f"{V1}/order/open"),
        ("GET", f"{V1}/orders"),
        ("DELETE", f"{V1}/orders"),
        ("GET", f"{V1}/balances"),
        ("GET", f"{V1}/fills"),
        ("GET", f"{V1}/order-history"),
        ("GET", f"{V1}/markets"),
        ("GET", f"{V1}/depth"),
        ("GET", f"{V1}/orderbook/{{symbol}}"),
        ("GET", f"{V1}/trades"),
        ("GET", f"{V1}/tickers"),
        ("GET", f"{V1}/ticker/{{symbol}}"),
        ("GET", f"{V1}/klines"),
        ("GET", f"{V1}/klines/{{symbol}}"),
        # web accounts (docs/web.md)
        ("POST", f"{V1}/signup"),
        ("POST", f"{V1}/signin"),
        ("POST", f"{V1}/token/refresh"),
        ("POST", f"{V1}/signout"),
        ("GET", f"{V1}/me"),
        ("POST", f"{V1}/2fa/enroll"),
        ("POST", f"{V1}/2fa/confirm"),
        ("POST", f"{V1}/2fa/disable"),
        ("POST", f"{V1}/password"),
        ("GET", f"{V1}/api-keys"),
        ("POST", f"{V1}/api-keys"),
        ("DELETE", f"{V1}/api-keys/{{key}}"),
        ("GET", f"{V1}/site"),
    }

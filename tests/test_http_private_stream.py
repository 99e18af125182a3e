"""The private stream ``ws://HOST:ws_port/api/v1/stream`` (docs/web.md) against the real HTTP
gateway process and the real engine: each user gets its own orders, fills and balances, live,
and never another's; a revoked key ends the stream (4001); a bad first message closes it
(4000) and bad frames never take the server down. The client here is written from the
document: the auth message is signed over ``timestamp + "GET" + "/api/v1/stream"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol import messages as M
from protocol.enums import OrderType, Side
from tests.fixtures_feed import async_test
from tests.fixtures_http import REPLY_TIMEOUT, HttpStack, Trader, running_stack, v1
from tests.procs import eventually_async

PATH = "/api/v1/stream"


@pytest.fixture(name="stack", scope="module")
def stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpStack]:
    yield from running_stack(Path(tmp_path_factory.mktemp("private")))


def signed_auth(who: Trader, ts: int | None = None) -> dict[str, Any]:
    ts = time.time_ns() // 1_000_000 if ts is None else ts
    sig = hmac.new(who.secret.encode(), f"{ts}GET{PATH}".encode(), hashlib.sha256).hexdigest()
    return {"op": "auth", "api_key": who.key, "timestamp": ts, "signature": sig}


class Stream:
    """A private-stream client that keeps everything it receives (``got``: decoded text
    messages) and how the connection ended."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.got: list[dict] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.task = asyncio.create_task(self.read())

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, stack: HttpStack) -> Stream:
        assert stack.gateway is not None
        url = f"ws://127.0.0.1:{stack.gateway.ws_port}{PATH}"
        return cls(await http.ws_connect(url, heartbeat=None, max_msg_size=0))

    @classmethod
    async def signed_in(cls, http: aiohttp.ClientSession, stack: HttpStack, who: Trader) -> Stream:
        s = await cls.open(http, stack)
        await s.ws.send_json(signed_auth(who))
        await s.until(lambda: s.of("orders"), "the snapshot")
        return s

    async def read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.got.append(json.loads(msg.data))
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):  # fmt: skip
                self.close_code = self.ws.close_code
                self.close_reason = msg.extra if isinstance(msg.extra, str) else ""
                return

    def of(self, stream: str) -> list[Any]:
        return [m["data"] for m in self.got if m.get("stream") == stream]

    def events(self, name: str) -> list[dict]:
        return [m for m in self.got if m.get("event") == name]

    async def until(self, pred: Any, what: str) -> Any:
        def check() -> Any:
            got = pred()
            if not got and self.task.done():
                raise AssertionError(f"closed {self.close_code} {self.close_reason!r}: {what}")
            return got

        try:
            return await eventually_async(check, REPLY_TIMEOUT, 0.02, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\nreceived: {self.got[-8:]}") from None

    async def ended(self) -> int | None:
        await asyncio.wait_for(asyncio.shield(self.task), REPLY_TIMEOUT)
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def order_ids(obj: Any) -> set[int]:
    """Every ``order_id`` anywhere in a message."""
    out: set[int] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "order_id" and isinstance(v, int):
                out.add(v)
            else:
                out |= order_ids(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= order_ids(v)
    return out


def balance(s: Stream, asset: str, at: int = -1) -> tuple[Decimal, Decimal]:
    for b in s.of("balances")[at]:
        if b["asset"] == asset:
            return Decimal(b["available"]), Decimal(b["locked"])
    return Decimal(0), Decimal(0)


async def place(http: aiohttp.ClientSession, stack: HttpStack, who: Trader, **body: Any) -> dict:
    status, out = await v1(http, stack.url, who, "POST", "/api/v1/order", body)
    assert status == 200, out
    return out


@async_test
async def test_each_user_streams_its_own_orders_fills_and_balances_and_never_anothers(
    stack: HttpStack,
) -> None:
    market = stack.new_market()
    base = market.split("-")[0]
    a = await stack.funded(USD="1000")
    b = await stack.funded(**{base: "1"})
    c = await stack.funded(USD="5")  # trades nothing: its stream must stay quiet
    async with aiohttp.ClientSession() as http:
        sa, sb, sc = [await Stream.signed_in(http, stack, w) for w in (a, b, c)]
        assert sa.got[0] == {"event": "authenticated", "account_id": a.account, "expires": None}
        assert sa.of("orders") == [[]] and balance(sa, "USD") == (Decimal(1000), 0)
        assert balance(sb, base) == (Decimal(1), 0)

        placed = await place(http, stack, a, market=market, side="buy", price="100.00",
                             quantity="0.5000")  # fmt: skip
        a_id = placed["order"]["order_id"]
        await sa.until(lambda: [o for o in sa.of("order") if o["exec_type"] == "new"], "new")
        await sa.until(lambda: balance(sa, "USD") == (Decimal(950), Decimal(50)), "50 locked")

        took = await place(http, stack, b, market=market, side="sell", type="market",
                           quantity="0.2000")  # fmt: skip
        b_id = took["order"]["order_id"]
        assert took["fills"], took
        # A: the resting order's fill (an unsolicited report), its new state, its balances
        await sa.until(lambda: sa.of("fill"), "A's fill")
        assert sa.of("fill")[0]["order_id"] == a_id and sa.of("fill")[0]["qty"] == "0.2000"
        await sa.until(lambda: any(o["status"] == "partially_filled" for o in sa.of("order")),
                       "A's order partially filled")  # fmt: skip
        got_q = Decimal("0.2") * (1 - Decimal("0.001"))  # maker fee on the base received
        await sa.until(lambda: balance(sa, base) == (got_q, 0), "A's base")
        assert balance(sa, "USD") == (Decimal(950), Decimal(30))
        # B: its own order (the reply to its own command), fill and balances
        await sb.until(lambda: sb.of("fill"), "B's fill")
        assert sb.of("fill")[0]["order_id"] == b_id
        assert sb.of("order")[-1]["order_id"] == b_id
        got_usd = Decimal(20) * (1 - Decimal("0.002"))  # taker fee on the quote received
        await sb.until(lambda: balance(sb, "USD") == (got_usd, 0), "B's USD")
        assert balance(sb, base) == (Decimal("0.8"), 0)

        # cancel-all: the engine reports mass cancels unsolicited
        status, out = await v1(http, stack.url, a, "DELETE", "/api/v1/orders")
        assert status == 200 and out == {"cancelled": 1}, out
        await sa.until(lambda: sa.of("order")[-1]["status"] == "canceled", "A's cancel")
        await sa.until(lambda: balance(sa, "USD") == (Decimal(980), 0), "A's USD unlocked")

        await sc.ws.send_json(signed_auth(c))  # a re-auth answers, and changes nothing
        await sc.until(lambda: len(sc.events("authenticated")) == 2, "C re-authenticated")
        for s in (sa, sb, sc):
            await s.close()
    assert a_id in order_ids(sa.got) and b_id not in order_ids(sa.got)
    assert b_id in order_ids(sb.got) and a_id not in order_ids(sb.got)
    assert order_ids(sc.got) == set()
    assert [m.get("stream") for m in sc.got[1:3]] == ["balances", "orders"]
    assert len(sc.got) == 4, sc.got


@async_test
async def test_orders_and_deposits_made_through_other_gateways_reach_the_stream(
    stack: HttpStack,
) -> None:
    """The engine copies a streamed account's events that go to other gateways (Watch): an
    order placed and cancelled under another engine identity (as the JSON or FIX gateway has),
    a fill against it, a deposit: all reach the account's stream, in order, and nobody else's."""
    market = stack.new_market()
    spec = stack.ex.markets[market]
    a = await stack.funded(USD="1000")
    b = await stack.funded(**{spec.base: "5"})
    bystander = await stack.funded(USD="1")
    async with aiohttp.ClientSession() as http:
        sa = await Stream.signed_in(http, stack, a)
        sc = await Stream.signed_in(http, stack, bystander)
        px, qty = spec.price_to_ticks("10.00"), spec.qty_to_lots("2")
        buy = M.NewOrder(0, a.account, market, Side.BUY, OrderType.LIMIT, 0, px, qty, 0, "else-1")
        placed = await stack.engine_request(buy)  # another engine identity: not this gateway
        oid = placed.reports[0].order_id
        await sa.until(lambda: [o for o in sa.of("order") if o["order_id"] == oid], "the new order")
        sell = M.NewOrder(0, b.account, market, Side.SELL, OrderType.LIMIT, 0,
                          spec.price_to_ticks("10.00"), spec.qty_to_lots("0.5"))  # fmt: skip
        await stack.engine_request(sell)
        await sa.until(lambda: sa.of("fill"), "the fill of the order placed elsewhere")
        await stack.engine_request(M.Cancel(0, a.account, market, oid))
        await sa.until(lambda: [o for o in sa.of("order") if o["status"] == "canceled"], "cancel")
        await stack.fund(a, USD="5")
        # 1000 USD, 5 spent on the 0.5 bought, the rest unlocked by the cancel, 5 deposited
        await sa.until(lambda: balance(sa, "USD") == (Decimal(1000), 0), "the deposit")
        mine = [o for o in sa.of("order") if o["order_id"] == oid]
        assert [o["status"] for o in mine] == ["new", "partially_filled", "canceled"]
        (fill,) = sa.of("fill")
        assert (fill["order_id"], fill["qty"], fill["price"]) == (oid, "0.5000", "10.00")
        assert balance(sa, spec.base)[0] == Decimal("0.5") - Decimal("0.0005")  # maker fee
        assert oid not in order_ids(sc.got) and not sc.of("order")
        await sa.close()
        await sc.close()


@async_test
async def test_a_revoked_api_key_ends_the_stream_with_4001(stack: HttpStack) -> None:
    who = await stack.funded(USD="10")
    other = await stack.funded(USD="10")
    async with aiohttp.ClientSession() as http:
        s = await Stream.signed_in(http, stack, who)
        keep = await Stream.signed_in(http, stack, other)
        stack.store.revoke_key(who.key)
        assert await s.ended() == 4001
        assert "revoked" in s.close_reason
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(keep.task), 1.5)
        assert not keep.task.done()  # another key's stream goes on
        again = await Stream.open(http, stack)
        await again.ws.send_json(signed_auth(who))
        assert await again.ended() == 4001  # and the revoked key cannot open a new one
        await keep.close()


@async_test
async def test_a_bad_first_message_closes_4000_and_bad_frames_leave_the_server_up(
    stack: HttpStack,
) -> None:
    who = await stack.funded(USD="10")
    stale = signed_auth(who, ts=time.time_ns() // 1_000_000 - 60_000)
    forged = signed_auth(who) | {"signature": "00" * 32}
    bad: list[tuple[Any, int]] = [
        ("not json", 4000),
        (b"\x00\x01binary", 4000),
        ({"op": "subscribe"}, 4000),
        ({"op": "auth"}, 4000),
        ({"op": "auth", "api_key": who.key}, 4000),
        (signed_auth(who) | {"extra": 1}, 4000),
        ("[" * 30_000 + "]" * 30_000, 4000),
        (stale, 4001),
        (forged, 4001),
        ({"op": "auth", "token": "eyJ.not.a.token"}, 4001),
        ("x" * (70 * 1024), 1009),  # over 64 KiB: aiohttp's own close
    ]
    async with aiohttp.ClientSession() as http:
        silent = await Stream.open(http, stack)  # sends nothing: closed after 10 s
        for first, code in bad:
            s = await Stream.open(http, stack)
            if isinstance(first, bytes):
                await s.ws.send_bytes(first)
            elif isinstance(first, str):
                await s.ws.send_str(first)
            else:
                await s.ws.send_json(first)
            assert await s.ended() == code, (first if len(str(first)) < 200 else "long", s.got)
            assert not s.of("orders"), s.got
        good = await Stream.signed_in(http, stack, who)
        await good.ws.send_str("after auth, not json")  # an error event; the stream goes on
        await good.until(lambda: good.events("error"), "an error event")
        await good.ws.send_json(signed_auth(who))
        await good.until(lambda: len(good.events("authenticated")) == 2, "still served")
        assert await silent.ended() == 4000
        assert "auth" in silent.close_reason
        await good.close()


@async_test
async def test_one_address_cannot_hold_every_stream_slot(stack: HttpStack) -> None:
    """At most PER_ADDRESS (64) open private streams from one address, authenticated or not:
    the next is refused (429) before any websocket; one closing frees its slot."""
    from gateways.http.private import PER_ADDRESS

    assert stack.gateway is not None
    url = f"ws://127.0.0.1:{stack.gateway.ws_port}{PATH}"
    async with aiohttp.ClientSession() as http:
        held = [await http.ws_connect(url, heartbeat=None) for _ in range(PER_ADDRESS)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, heartbeat=None)
        assert refused.value.status == 429
        await held.pop().close()

        async def slot_free() -> bool:
            try:
                held.append(await http.ws_connect(url, heartbeat=None))
                return True
            except aiohttp.WSServerHandshakeError:
                return False

        await eventually_async(slot_free, REPLY_TIMEOUT, 0.05, "a freed slot")
        for ws in held:
            await ws.close()


# ------------------------------------------------------------------ session tokens

TTL = 6  # seconds an access token lives on the web stack
PASSWORD = "correct horse battery"


@pytest.fixture(name="web", scope="module")
def web_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpStack]:
    yield from running_stack(
        Path(tmp_path_factory.mktemp("private-web")),
        web={"access_ttl": TTL, "signup_funds": {"USD": "100"}, "signin_burst_address": 10_000},
    )


async def web_call(http: aiohttp.ClientSession, stack: HttpStack, method: str, path: str,
                   body: Any = None, token: str | None = None) -> tuple[int, Any]:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, stack.url + path, json=body, headers=headers) as r:
        raw = await r.read()
        return r.status, json.loads(raw) if raw else None


async def signup(http: aiohttp.ClientSession, stack: HttpStack) -> dict:
    who = f"s{time.time_ns()}@example.com"
    status, session = await web_call(http, stack, "POST", "/api/v1/signup",
                                     {"email": who, "password": PASSWORD})  # fmt: skip
    assert status == 201, session
    return session  # type: ignore[no-any-return]


async def token_stream(http: aiohttp.ClientSession, stack: HttpStack, token: str) -> Stream:
    s = await Stream.open(http, stack)
    await s.ws.send_json({"op": "auth", "token": token})
    await s.until(lambda: s.of("orders"), "the snapshot")
    return s


@async_test
async def test_a_token_stream_carries_the_sessions_orders_and_ends_when_it_signs_out(
    web: HttpStack,
) -> None:
    async with aiohttp.ClientSession() as http:
        ann, bob = await signup(http, web), await signup(http, web)
        sa = await token_stream(http, web, ann["access_token"])
        sb = await token_stream(http, web, bob["access_token"])
        first = sa.events("authenticated")[0]
        assert first["account_id"] == ann["user"]["account_id"]
        assert abs(first["expires"] / 1000 - (time.time() + TTL)) < 60
        assert balance(sa, "USD") == (Decimal(100), 0)
        market = web.new_market()
        status, placed = await web_call(http, web, "POST", "/api/v1/order", {
            "market": market, "side": "buy", "price": "10.00", "quantity": "1.0000",
        }, token=ann["access_token"])  # fmt: skip
        assert status == 200, placed
        oid = placed["order"]["order_id"]
        await sa.until(lambda: [o for o in sa.of("order") if o["order_id"] == oid], "the order")
        await sa.until(lambda: balance(sa, "USD") == (Decimal(90), Decimal(10)), "10 locked")

        await sb.ws.send_json({"op": "auth", "token": ann["access_token"]})  # not bob's
        await sb.until(lambda: sb.events("error"), "refused re-auth")
        assert "account" in sb.events("error")[0]["reason"]
        status, _ = await web_call(http, web, "POST", "/api/v1/signout", {},
                                   token=ann["access_token"])  # fmt: skip
        assert status == 200
        assert await sa.ended() == 4001
        assert "signed out" in sa.close_reason
        again = await Stream.open(http, web)  # the signed-out token opens nothing
        await again.ws.send_json({"op": "auth", "token": ann["access_token"]})
        assert await again.ended() == 4001
        assert not sb.task.done()  # bob's session goes on
        await sb.ws.send_json({"op": "auth", "token": bob["access_token"]})
        await sb.until(lambda: len(sb.events("authenticated")) == 2, "bob still served")
        await sb.close()
    assert oid not in order_ids(sb.got)


@async_test
async def test_a_token_stream_ends_at_expiry_unless_a_refreshed_token_extends_it(
    web: HttpStack,
) -> None:
    async with aiohttp.ClientSession() as http:
        ann, bob = await signup(http, web), await signup(http, web)
        plain = await token_stream(http, web, ann["access_token"])
        kept = await token_stream(http, web, bob["access_token"])
        exp1 = kept.events("authenticated")[0]["expires"]
        refresh, exp2 = bob["refresh_token"], exp1
        while exp2 < exp1 + 2000:  # a token that outlives the first by 2 s or more
            await asyncio.sleep(0.2)
            status, fresh = await web_call(http, web, "POST", "/api/v1/token/refresh",
                                           {"refresh_token": refresh})  # fmt: skip
            assert status == 200, fresh
            refresh = fresh["refresh_token"]
            n = len(kept.events("authenticated")) + 1
            await kept.ws.send_json({"op": "auth", "token": fresh["access_token"]})
            await kept.until(lambda: len(kept.events("authenticated")) == n, "re-auth")  # noqa: B023
            exp2 = kept.events("authenticated")[-1]["expires"]
        assert await plain.ended() == 4001
        assert "expired" in plain.close_reason
        assert time.time() * 1000 >= plain.events("authenticated")[0]["expires"]
        assert not kept.task.done()  # past the first token's expiry, on the refreshed one
        assert await kept.ended() == 4001
        assert "expired" in kept.close_reason
        assert time.time() * 1000 >= exp2

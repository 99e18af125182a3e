"""What an HTTP client is told when the engine stalls or goes away, against what the engine
holds afterwards (docs/design.md rule 4): "nothing was done" (v1 4001 / v3 -1001) only when
provably true; a write that may have executed is in doubt (v1 503 code 4003 / v3 -1007) and
names the client order id that finds its outcome later.

The real engine is stopped with SIGSTOP under orders from both APIs, then resumed; every
answer is checked against the engine's own orders.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from protocol.messages import OpenOrdersRequest
from tests.fixtures_http import HttpStack, running_stack, v1, v3
from tests.procs import eventually_async

TIMEOUT = 120.0


@pytest.fixture(name="stalling")
def stalling_fixture(tmp_path: Path):
    yield from running_stack(tmp_path, http_gateway={"engine_timeout": 1.0})


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def classify(api: str, status: int, body: dict) -> str:
    if status == 200:
        return "done"
    if api == "v1":
        code = body["error"]["code"]
        return {4003: "doubt", 4001: "not done"}.get(code, f"other {status} {body}")
    return {-1007: "doubt", -1001: "not done"}.get(body["code"], f"other {status} {body}")


def test_a_stalled_engine_gives_in_doubt_never_a_false_not_done(stalling: HttpStack) -> None:
    async def main() -> None:
        st = stalling
        market = st.new_market()
        sym = market.replace("-", "")
        who = await st.funded(USD="1000000")
        async with aiohttp.ClientSession() as s:
            status, _ = await v1(s, st.url, who, "GET", "/api/v1/balances")
            assert status == 200
            os.kill(st.engine.pid, signal.SIGSTOP)
            try:
                calls = []
                for i in range(40):
                    if i % 2:
                        body = {"market": market, "kind": "buy", "price": "10.00",
                                "quantity": "0.01", "client_order_id": f"d{i}"}  # fmt: skip
                        calls.append(("v1", v1(s, st.url, who, "POST", "/api/v1/order", body)))
                    else:
                        calls.append(("v3", v3(s, st.url, who, "POST", "/api/v3/order",
                                               symbol=sym, side="BUY", type="LIMIT",
                                               timeInForce="GTC", price="10.00",
                                               quantity="0.01",
                                               newClientOrderId=f"d{i}")))  # fmt: skip
                answers = await asyncio.gather(*(c for _, c in calls))
            finally:
                os.kill(st.engine.pid, signal.SIGCONT)
            told = {
                f"d{i}": classify(api, status, body)
                for i, ((api, _), (status, body)) in enumerate(zip(calls, answers, strict=True))
            }
            assert not [v for v in told.values() if v.startswith("other")], told
            assert "doubt" in told.values(), told
            for i, ((api, _), (_, body)) in enumerate(zip(calls, answers, strict=True)):
                if told[f"d{i}"] == "doubt":  # the answer names the order to look up
                    text = body["error"]["reason"] if api == "v1" else body["msg"]
                    assert f"d{i}" in text, body
                    if api == "v1":
                        assert body["error"]["client_order_id"] == f"d{i}"

            async def engine_back() -> bool:
                status, _ = await v1(s, st.url, who, "GET", "/api/v1/balances")
                return status == 200

            await eventually_async(engine_back, 60.0, 0.2, "engine answering again")
            truth = await st.engine_request(OpenOrdersRequest(0, who.account))
            live = {o.client_order_id for o in truth.orders}
            for cid, what in told.items():
                if what == "done":
                    assert cid in live, (cid, told)
                if what == "not done":
                    assert cid not in live, (cid, told)
                # in doubt: the lookup it names tells the truth, whatever it is
                status, body = await v1(
                    s, st.url, who, "GET", f"/api/v1/order/{cid}", query={"by": "client_order_id"}
                )
                assert (status == 200) == (cid in live), (cid, what, status, body)

    run(main())


def test_an_engine_that_is_gone_gives_not_done_and_the_gateway_recovers(
    stalling: HttpStack,
) -> None:
    async def main() -> None:
        st = stalling
        market = st.new_market()
        who = await st.funded(USD="1000")
        body = {"market": market, "kind": "buy", "price": "10.00", "quantity": "0.01"}
        async with aiohttp.ClientSession() as s:
            st.engine.stop()

            async def refused() -> bool:
                status, reply = await v1(s, st.url, who, "POST", "/api/v1/order", body)
                return status == 503 and reply["error"]["code"] == 4001

            await eventually_async(refused, 30.0, 0.1, "orders refused while the engine is down")

            async def unhealthy() -> bool:  # after the heartbeats are missed
                status, reply = await v1(s, st.url, None, "GET", "/health")
                return status == 503 and reply["engine"] is False

            await eventually_async(unhealthy, 30.0, 0.1, "/health says the engine is away")
            await st.engine.astart()
            await eventually_async(
                lambda: _ok(s, st, who, body), 60.0, 0.2, "orders accepted again"
            )
            assert st.gateway is not None and st.gateway.running

    run(main())


async def _ok(s: aiohttp.ClientSession, st: HttpStack, who, body: dict) -> bool:
    status, _ = await v1(s, st.url, who, "POST", "/api/v1/order", body)
    return status == 200

"""Property-based fuzz of the REST gateway against its own OpenAPI document (schemathesis).

Every operation of docs/openapi.json (kept equal to the served ``/openapi.json`` by
tests/test_http_v1.py) gets requests generated from its parameter and body schemas, valid
(positive) and invalid (negative), sent to the real gateway process, signed as docs/rest.md
says (v1 headers, v3 ``timestamp`` + ``signature``) with a funded key so that they reach the
handlers, not only the authentication. Checks on every answer: no 5xx, the answer conforms to
the document (status and schema), and its content type is JSON. Markets and amounts are swapped
for real ones some of the time, so orders reach the engine too. Deterministic (derandomize)
and bounded (a few dozen examples an operation).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import checks as C
from schemathesis.generation import GenerationMode

from tests.fixtures_http import HttpStack, Trader, http_stack_fixture  # noqa: F401

DOC = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def homogeneous_tuples(node: Any) -> Any:
    """The document with each tuple of one item schema (the book's ``[price, qty]``) spelled
    ``items`` + min/maxItems: schemathesis 4.32.5 turns ``prefixItems`` into a draft-4 ``items``
    list and then validates the response with a 2020-12 validator, which refuses that list.
    Both spellings mean the same; any other tuple would fail here, not pass unchecked."""
    if isinstance(node, list):
        return [homogeneous_tuples(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: homogeneous_tuples(v) for k, v in node.items()}
    prefix = out.pop("prefixItems", None)
    if prefix is not None:
        assert all(p == prefix[0] for p in prefix) and out.get("items") is False, prefix
        out["items"] = prefix[0]
    return out


SCHEMA = schemathesis.openapi.from_dict(homogeneous_tuples(json.loads(DOC.read_text())))
OPERATIONS = [r.ok() for r in SCHEMA.get_all_operations()]
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}
CHECKS = [C.not_a_server_error, C.response_schema_conformance, C.content_type_conformance]
ONE = ("1.00", "0.10", "2")  # on every market's tick and lot
AMOUNT = st.one_of(
    st.from_regex(r"-?[0-9]{1,7}(\.[0-9]{1,9})?", fullmatch=True), st.sampled_from(ONE)
)
# an operation without parameters or body has no invalid request to make
CASES = [
    (op, mode)
    for op in OPERATIONS
    for mode in EXAMPLES
    if mode is GenerationMode.POSITIVE
    or op.definition.raw.get("parameters")
    or op.definition.raw.get("requestBody")
]
V3_SIGNING = {"timestamp", "signature", "recvWindow"}
V1 = "/api/v1"
# Routes that take only a session token (docs/web.md). Sign-out is left out: its Bearer would
# end the one session the fuzz run has.
SESSION_ONLY = {
    f"{V1}/{p}" for p in ("me", "2fa/enroll", "2fa/confirm", "2fa/disable", "api-keys", "password")
}


class Sign(requests.auth.AuthBase):
    """Signs the request exactly as it leaves (the final query string and body)."""

    def __init__(self, who: Trader, token: str) -> None:
        self.who = who
        self.token = token  # a web session's access token, for the session-only routes

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        assert r.url is not None and r.method is not None
        u = urlsplit(r.url)
        body = r.body or b""
        body = body.encode() if isinstance(body, str) else body
        secret = self.who.secret.encode()
        if u.path in SESSION_ONLY or u.path.startswith(f"{V1}/api-keys/"):
            r.headers["Authorization"] = f"Bearer {self.token}"
        elif u.path.startswith("/api/v1"):
            ts = str(time.time_ns() // 1_000_000)
            path = u.path + (f"?{u.query}" if u.query else "")
            sig = hmac.new(
                secret, ts.encode() + r.method.encode() + path.encode() + body, hashlib.sha256
            ).hexdigest()
            r.headers.update(
                {"X-API-KEY": self.who.key, "X-API-TIMESTAMP": ts, "X-API-SIGNATURE": sig}
            )
        elif u.path.startswith("/api/v3"):
            sig = hmac.new(secret, u.query.encode() + body, hashlib.sha256).hexdigest()
            if r.method == "POST":
                r.body = body + (b"&" if body else b"") + f"signature={sig}".encode()
                r.headers["Content-Length"] = str(len(r.body))
            else:
                r.url = r.url + ("&" if u.query else "?") + f"signature={sig}"
            r.headers["X-MBX-APIKEY"] = self.who.key
        return r


@pytest.fixture(name="fuzzer", scope="module")
def fuzzer_fixture(http_stack: HttpStack) -> tuple[HttpStack, Sign, str]:
    market = http_stack.new_market()
    base = market.split("-")[0]
    who = asyncio.run(http_stack.funded(USD="1000000", **{base: "1000"}))
    body = {"email": f"fuzz{time.time_ns()}@example.com", "password": "fuzz the gateway"}
    r = requests.post(f"{http_stack.url}{V1}/signup", json=body, timeout=20)
    assert r.status_code == 201, r.text
    return http_stack, Sign(who, r.json()["access_token"]), market


def steer(case: Any, market: str | None, amount: str | None, valid: bool) -> None:
    """Point some cases at a real market and amount; re-time v3's signed parameters."""
    binance = "/api/v3" in case.operation.path
    for part in (case.query, case.body, case.path_parameters):
        if not isinstance(part, dict):
            continue
        for name in list(part):
            if market and name in ("market", "symbol"):
                part[name] = market.replace("-", "") if binance else market
            elif amount and name in ("price", "quantity", "quote_quantity", "quoteOrderQty"):
                part[name] = amount
            elif binance and name in V3_SIGNING and case.operation.security:
                del part[name]
    body = case.body
    if valid and market and not binance and isinstance(body, dict) and "market" in body:
        # an order or quote that can be accepted: one side, amounts on the tick and lot
        one = amount if amount in ONE else ONE[0]
        body.pop("side", None)
        body.pop("quote_quantity", None)
        body |= {"kind": "buy", "quantity": one}
        if body.get("type") == "market":
            body.pop("price", None)
        elif not case.operation.path.endswith("/quote"):
            body["price"] = one
    if binance and case.operation.security:
        where = case.body if isinstance(case.body, dict) else case.query
        if where is None:
            where = case.query = {}
        if isinstance(where, dict):
            where["timestamp"] = time.time_ns() // 1_000_000


@pytest.mark.parametrize(
    ("op", "mode"), CASES, ids=[f"{o.method.upper()} {o.path} {m}" for o, m in CASES]
)
def test_every_operation_answers_within_the_document(
    fuzzer: tuple[HttpStack, Sign, str], op: Any, mode: GenerationMode
) -> None:
    stack, sign, market = fuzzer
    session = requests.Session()
    seen: list[int] = []

    @settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(
        case=op.as_strategy(generation_mode=mode),
        market=st.sampled_from([None, market, "BTC-USD"]),
        amount=st.one_of(st.none(), AMOUNT),
        valid=st.booleans(),
    )
    def run(case: Any, market: str | None, amount: str | None, valid: bool) -> None:
        steer(case, market, amount, valid)
        r = case.call_and_validate(
            base_url=stack.url, session=session, auth=sign, checks=CHECKS, timeout=20
        )
        seen.append(r.status_code)

    try:
        run()
    finally:
        session.close()
    assert seen, "no request was sent"
    if (op.method, op.path, mode) == ("post", "/api/v1/order", GenerationMode.POSITIVE):
        assert 200 in seen, f"no generated order was placed: {seen}"  # the steering works
    if op.method == "get" and op.path in SESSION_ONLY and mode is GenerationMode.POSITIVE:
        assert 200 in seen, f"the session token did not get through: {seen}"
    assert stack.gateway is not None and stack.gateway.running, stack.logs()

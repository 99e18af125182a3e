"""Web accounts against the real gateway process (docs/web.md): sign-up, sign-in, sessions,
2FA, API keys from a session, Bearer tokens on the trading routes, and what an attacker tries:
tampered, expired and ``alg=none`` tokens, a refresh token after sign-out or used twice, another
user's order id, a brute-force sign-in, an API key minting keys."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateways.http.jwt import Claims, Tokens
from gateways.users import totp
from tests.fixtures_feed import async_test
from tests.fixtures_http import HttpStack, Trader, running_stack, v1

FUNDS = {"USD": "1000", "Q47": "5"}
MARKET = "Q47-USD"  # the pool's last market: its base is funded on sign-up
PASSWORD = "correct horse battery"
BURST = 16  # sign-in, 2FA and password tries per email at once (the 2FA test makes about 12)
_emails = itertools.count(1)


@pytest.fixture(name="web", scope="module")
def web_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpStack]:
    yield from running_stack(
        tmp_path_factory.mktemp("web"),
        web={"signup_funds": FUNDS, "signin_burst_address": 10_000, "signin_burst": BURST},
    )


def email() -> str:
    return f"user{next(_emails)}.{time.time_ns()}@example.com"


async def call(
    s: aiohttp.ClientSession, stack: HttpStack, method: str, path: str, body: Any = None,
    token: str | None = None, headers: dict[str, str] | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:  # fmt: skip
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    if data:
        h["Content-Type"] = "application/json"
    async with s.request(method, stack.url + path, data=data, headers=h) as r:
        raw = await r.read()
        return r.status, json.loads(raw) if raw else None, r


async def signup(s: aiohttp.ClientSession, stack: HttpStack, who: str | None = None) -> dict:
    status, body, _ = await call(
        s, stack, "POST", "/api/v1/signup", {"email": who or email(), "password": PASSWORD}
    )
    assert status == 201, body
    return body  # type: ignore[no-any-return]


def unb64(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def signing_key(stack: HttpStack) -> bytes:
    from gateways.users import Users

    return Users(stack.store, stack.vault).signing_secret()


@async_test
async def test_signup_trades_with_its_token(web: HttpStack) -> None:
    async with aiohttp.ClientSession() as s:
        sess = await signup(s, web)
        assert sess["token_type"] == "Bearer" and sess["expires_in"] == 900
        assert sess["refresh_token"].startswith("r_")
        user, token = sess["user"], sess["access_token"]
        assert user["totp_enabled"] is False and "@example.com" in user["email"]
        status, bal, _ = await call(s, web, "GET", "/api/v1/balances", token=token)
        assert status == 200
        assert {b["asset"]: b["available"] for b in bal if b["asset"] in FUNDS} == {
            "USD": "1000.000000", "Q47": "5.00000000"}  # fmt: skip
        order = {"market": MARKET, "side": "sell", "price": "900.00", "quantity": "0.5"}
        status, placed, _ = await call(s, web, "POST", "/api/v1/order", order, token=token)
        assert status == 200, placed
        oid = placed["order"]["order_id"]
        status, seen, _ = await call(s, web, "GET", f"/api/v1/order/{oid}", token=token)
        assert status == 200 and seen["status"] == "new"
        status, me, _ = await call(s, web, "GET", "/api/v1/me", token=token)
        assert status == 200 and me == user
        # The account is its own: another user's token sees the order id as unknown.
        other = await signup(s, web)
        status, err, _ = await call(
            s, web, "GET", f"/api/v1/order/{oid}", token=other["access_token"]
        )
        assert status == 404 and err["error"]["code"] == 3006
        status, err, _ = await call(
            s, web, "DELETE", f"/api/v1/order/{oid}", token=other["access_token"]
        )
        assert status == 404 and err["error"]["code"] == 3006
        status, still, _ = await call(s, web, "GET", f"/api/v1/order/{oid}", token=token)
        assert still["status"] == "new"
        status, hist, _ = await call(s, web, "GET", "/api/v1/order-history", token=token)
        assert status == 200 and hist == []  # open orders are not history
        status, _, _ = await call(s, web, "DELETE", f"/api/v1/order/{oid}", token=token)
        assert status == 200
        status, hist, _ = await call(
            s, web, "GET", "/api/v1/order-history?market=" + MARKET, token=token
        )
        assert [(h["order_id"], h["status"]) for h in hist] == [(oid, "canceled")]
        status, hist, _ = await call(
            s, web, "GET", "/api/v1/order-history", token=other["access_token"]
        )
        assert hist == []


@async_test
async def test_signin_says_nothing_about_whether_the_email_exists(web: HttpStack) -> None:
    async with aiohttp.ClientSession() as s:
        who = email()
        await signup(s, web, who)
        wrong = await call(s, web, "POST", "/api/v1/signin", {"email": who, "password": "x" * 12})
        unknown = await call(
            s, web, "POST", "/api/v1/signin", {"email": email(), "password": PASSWORD}
        )
        assert wrong[0] == unknown[0] == 401
        assert (
            wrong[1]
            == unknown[1]
            == {
                "error": {
                    "code": 1006,
                    "reason": "wrong email or password",
                    "client_order_id": None,
                }
            }
        )
        status, ok, _ = await call(
            s, web, "POST", "/api/v1/signin", {"email": who.upper(), "password": PASSWORD}
        )
        assert status == 200 and ok["user"]["email"] == who


@async_test
async def test_signup_refuses_bad_input(web: HttpStack) -> None:
    async with aiohttp.ClientSession() as s:
        who = email()
        await signup(s, web, who)
        long = "a" * 64 + "@" + "b" * 60 + ".example.com"  # too long for an account name as is
        status, made, _ = await call(s, web, "POST", "/api/v1/signup",
                                     {"email": long, "password": PASSWORD})  # fmt: skip
        assert status == 201 and made["user"]["email"] == long
        cases = [
            ({"email": long.upper(), "password": PASSWORD}, 409, 1009),
            ({"email": who, "password": PASSWORD}, 409, 1009),
            ({"email": "not-an-email", "password": PASSWORD}, 400, 1007),
            ({"email": email(), "password": "short"}, 400, 1007),
            ({"email": email(), "password": "aaaaaaaaaaaa"}, 400, 1007),
            ({"email": email()}, 400, 1007),
            ({"email": email(), "password": PASSWORD, "admin": True}, 400, 1007),
            ({"email": 5, "password": PASSWORD}, 400, 1007),
        ]
        for body, want, code in cases:
            status, err, _ = await call(s, web, "POST", "/api/v1/signup", body)
            assert (status, err["error"]["code"]) == (want, code), (body, err)
        async with s.post(web.url + "/api/v1/signup", data=b"{nope") as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == 1001


@async_test
async def test_forged_tokens_are_refused(web: HttpStack) -> None:
    async with aiohttp.ClientSession() as s:
        sess = await signup(s, web)
        token = sess["access_token"]
        header, claims, sig = token.split(".")
        body = unb64(claims)
        other = await signup(s, web)
        stolen = {**body, "acc": other["user"]["account_id"]}  # someone else's account
        now = int(time.time())
        expired = Tokens(signing_key(web)).issue(
            Claims(body["sub"], body["acc"], body["sid"], now - 100, now - 1)
        )
        forged = {
            "tampered claims": f"{header}.{b64(stolen)}.{sig}",
            "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{claims}.",
            "alg none, same claims, old sig": f"{b64({'alg': 'none'})}.{claims}.{sig}",
            "HS512 header": f"{b64({'alg': 'HS512', 'typ': 'JWT', 'kid': '1'})}.{claims}.{sig}",
            "bad signature": f"{header}.{claims}.{sig[:-2]}AA",
            "other key": Tokens(b"k" * 32).issue(Claims(**body)),
            "expired": expired,
            "garbage": "eyJ.not.a-token",
            "huge": "a." * 3000,
        }
        for what, bad in forged.items():
            status, err, _ = await call(s, web, "GET", "/api/v1/balances", token=bad)
            assert status == 401 and err["error"]["code"] == 1006, (what, err)
        assert (
            "expired"
            in (await call(s, web, "GET", "/api/v1/me", token=expired))[1]["error"]["reason"]
        )
        status, _, _ = await call(s, web, "GET", "/api/v1/balances", token=token)
        assert status == 200  # the genuine one still works


@async_test
async def test_refresh_rotates_and_a_reused_refresh_token_ends_the_session(
    web: HttpStack,
) -> None:
    async with aiohttp.ClientSession() as s:
        sess = await signup(s, web)
        old = sess["refresh_token"]
        status, new, _ = await call(s, web, "POST", "/api/v1/token/refresh", {"refresh_token": old})
        assert status == 200 and new["refresh_token"] != old
        assert new["user"] == sess["user"]
        status, _, _ = await call(s, web, "GET", "/api/v1/me", token=new["access_token"])
        assert status == 200
        # The spent token again at once (another tab of the same browser): "retry", nothing ends.
        status, err, _ = await call(s, web, "POST", "/api/v1/token/refresh", {"refresh_token": old})
        assert status == 409 and err["error"]["code"] == 1009 and "retry" in err["error"]["reason"]
        status, _, _ = await call(s, web, "GET", "/api/v1/me", token=new["access_token"])
        assert status == 200
        # Later (a thief's copy): refused, and the session is over.
        web.store.db.execute("UPDATE spent_refresh SET spent = spent - 60")  # a minute ago
        status, err, _ = await call(s, web, "POST", "/api/v1/token/refresh", {"refresh_token": old})
        assert status == 401
        status, err, _ = await call(
            s, web, "POST", "/api/v1/token/refresh", {"refresh_token": new["refresh_token"]}
        )
        assert status == 401, err
        await eventually_refused(s, web, new["access_token"])


async def eventually_refused(s: aiohttp.ClientSession, web: HttpStack, token: str) -> None:
    from tests.procs import eventually_async

    async def refused() -> bool:
        return (await call(s, web, "GET", "/api/v1/me", token=token))[0] == 401

    await eventually_async(refused, 10.0, 0.2, "token of an ended session refused")


@async_test
async def test_signout_ends_tokens_and_refresh(web: HttpStack) -> None:
    async with aiohttp.ClientSession() as s:
        sess = await signup(s, web)
        token, refresh = sess["access_token"], sess["refresh_token"]
        status, out, r = await call(s, web, "POST", "/api/v1/signout", {}, token=token)
        assert status == 200 and out == {"signed_out": True}
        assert "Max-Age=0" in r.headers["Set-Cookie"]
        status, err, _ = await call(s, web, "GET", "/api/v1/balances", token=token)
        assert status == 401 and "ended" in err["error"]["reason"]
        status, _, _ = await call(
            s, web, "POST", "/api/v1/token/refresh", {"refresh_token": refresh}
        )
        assert status == 401
        status, _, _ = await call(s, web, "POST", "/api/v1/signout", {})
        assert status == 401  # nothing to sign out


@async_test
async def test_refresh_by_cookie(web: HttpStack) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        sess = await signup(s, web)
        creds = {"email": sess["user"]["email"], "password": PASSWORD}
        async with s.post(web.url + "/api/v1/signin", json=creds) as r:
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/api/v1" in cookie
        status, new, _ = await call(s, web, "POST", "/api/v1/token/refresh", {})
        assert status == 200, new
        assert new["user"]["user_id"] == sess["user"]["user_id"]


@async_test
async def test_brute_force_signin_hits_the_limit(web: HttpStack) -> None:
    async with aiohttp.ClientSession() as s:
        who = email()
        await signup(s, web, who)
        statuses = []
        for i in range(BURST + 4):
            st, err, r = await call(
                s, web, "POST", "/api/v1/signin", {"email": who, "password": f"guess-{i:08d}"}
            )
            statuses.append(st)
        assert statuses[0] == 401 and statuses[-1] == 429, statuses
        assert set(statuses) == {401, 429}
        assert r.headers.get("Retry-After") or err["error"]["code"] == 4002
        # The right password is refused too while the limit lasts: guessing gains nothing.
        st, err, _ = await call(
            s, web, "POST", "/api/v1/signin", {"email": who, "password": PASSWORD}
        )
        assert st == 429 and err["error"]["code"] == 4002
        # Another account is not locked out by it.
        other = email()
        await signup(s, web, other)
        st, _, _ = await call(
            s, web, "POST", "/api/v1/signin", {"email": other, "password": PASSWORD}
        )
        assert st == 200


@async_test
async def test_two_factor_sign_in(web: HttpStack) -> None:
    async with aiohttp.ClientSession() as s:
        sess = await signup(s, web)
        token, who = sess["access_token"], sess["user"]["email"]
        st, enr, _ = await call(
            s, web, "POST", "/api/v1/2fa/enroll", {"password": PASSWORD}, token=token
        )
        assert st == 200
        assert enr["otpauth_uri"].startswith("otpauth://totp/Exchange%3A")
        assert f"secret={enr['secret']}" in enr["otpauth_uri"] and enr["qr_svg"].startswith(
            '<svg xmlns="http://www.w3.org/2000/svg"'
        )
        secret = enr["secret"]
        st, err, _ = await call(s, web, "POST", "/api/v1/2fa/confirm", {"code": "000000"},
                                token=token)  # fmt: skip
        assert st == 400 or totp(secret, int(time.time()) // 30) == "000000"
        step = int(time.time()) // 30
        st, on, _ = await call(s, web, "POST", "/api/v1/2fa/confirm",
                               {"code": totp(secret, step)}, token=token)  # fmt: skip
        assert st == 200 and on == {"totp_enabled": True}
        creds = {"email": who, "password": PASSWORD}
        st, err, _ = await call(s, web, "POST", "/api/v1/signin", creds)
        assert st == 401 and err["error"]["code"] == 1008
        # The code that confirmed is spent; the next step's code signs in, once.
        st, err, _ = await call(s, web, "POST", "/api/v1/signin",
                                {**creds, "totp": totp(secret, step)})  # fmt: skip
        assert st == 401 and err["error"]["code"] == 1008
        nxt = totp(secret, step + 1)
        st, ok, _ = await call(s, web, "POST", "/api/v1/signin", {**creds, "totp": nxt})
        assert st == 200 and ok["user"]["totp_enabled"] is True
        st, err, _ = await call(s, web, "POST", "/api/v1/signin", {**creds, "totp": nxt})
        assert st == 401 and err["error"]["code"] == 1008  # replayed
        wrong = {**creds, "password": "not the password", "totp": totp(secret, step + 1)}
        st, err, _ = await call(s, web, "POST", "/api/v1/signin", wrong)
        assert st == 401 and err["error"]["code"] == 1006  # the password is checked first
        st, err, _ = await call(
            s, web, "POST", "/api/v1/2fa/enroll", {"password": PASSWORD}, token=token
        )
        assert st == 409
        st, err, _ = await call(s, web, "POST", "/api/v1/2fa/disable", {"code": "12"}, token=token)
        assert st == 400


@async_test
async def test_api_keys_from_a_session(web: HttpStack) -> None:
    async with aiohttp.ClientSession() as s:
        sess = await signup(s, web)
        token = sess["access_token"]
        st, new, _ = await call(s, web, "POST", "/api/v1/api-keys",
                                {"permission": "read", "password": PASSWORD},
                                token=token)  # fmt: skip
        assert st == 201 and new["permission"] == "read" and new["secret"]
        key = Trader(sess["user"]["account_id"], "", new["api_key"], new["secret"], "read")
        st, bal = await v1(s, web.url, key, "GET", "/api/v1/balances")
        assert st == 200 and any(b["asset"] == "USD" for b in bal)
        order = {"market": MARKET, "side": "buy", "price": "1.00", "quantity": "1"}
        st, err = await v1(s, web.url, key, "POST", "/api/v1/order", order)
        assert st == 403  # a read key
        st, rows, _ = await call(s, web, "GET", "/api/v1/api-keys", token=token)
        assert [r["api_key"] for r in rows] == [new["api_key"]] and "secret" not in rows[0]
        # An API key cannot manage keys: only a session can.
        st, _ = await v1(s, web.url, key, "GET", "/api/v1/api-keys")
        assert st == 401
        # Another user cannot revoke it, and learns nothing about it.
        other = await signup(s, web)
        st, err, _ = await call(s, web, "DELETE", f"/api/v1/api-keys/{new['api_key']}",
                                token=other["access_token"])  # fmt: skip
        assert st == 404
        st, bal = await v1(s, web.url, key, "GET", "/api/v1/balances")
        assert st == 200
        st, gone, _ = await call(s, web, "DELETE", f"/api/v1/api-keys/{new['api_key']}",
                                 token=token)  # fmt: skip
        assert st == 200 and gone == {"api_key": new["api_key"], "revoked": True}
        st, _ = await v1(s, web.url, key, "GET", "/api/v1/balances")
        assert st == 401
        st, rows, _ = await call(s, web, "GET", "/api/v1/api-keys", token=token)
        assert rows[0]["revoked"] is True


@async_test
async def test_the_page_and_site(web: HttpStack) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(web.url + "/") as r:
            page = await r.text()
            assert r.status == 200 and r.content_type == "text/html"
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Frame-Options"] == "DENY"
        assert "<html" in page
        async with s.get(web.url + "/static/style.css") as r:
            assert r.status == 200 and r.content_type == "text/css"
        for bad in ("/static/..%2Fapp.py", "/static/.hidden", "/static/nope.js"):
            async with s.get(web.url + bad) as r:
                assert r.status == 404, bad
        st, site, _ = await call(s, web, "GET", "/api/v1/site")
        assert st == 200 and site["signup"] is True
        assert site["private_ws"] == f"ws://127.0.0.1:{web.gateway.ws_port}/api/v1/stream"
        assert site["market_ws"].endswith(f":{web.ex.bridge.port}/ws")


def test_address_limit_on_signin(tmp_path: Path) -> None:
    async def attempts(stack: HttpStack) -> list[int]:
        async with aiohttp.ClientSession() as s:
            body = {"email": email(), "password": PASSWORD}
            return [(await call(s, stack, "POST", "/api/v1/signin", body))[0] for _ in range(5)]

    for stack in running_stack(tmp_path, web={"signin_burst_address": 3}):
        got = asyncio.run(attempts(stack))
        assert got == [401, 401, 401, 429, 429], got


def admin_cli(web: HttpStack, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m gateways.admin`` on the stack's config and account store, as an operator."""
    return subprocess.run(
        [sys.executable, "-m", "gateways.admin", "--config", str(web.config),
         "--accounts", str(web.workdir / "accounts.db"), *argv],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@async_test
async def test_operator_lists_users_and_turns_2fa_off_for_a_lost_phone(web: HttpStack) -> None:
    """``python -m gateways.admin users | user-2fa-off EMAIL | user-signout EMAIL``: what support
    does for a user who lost their phone; their sessions end with it."""
    async with aiohttp.ClientSession() as s:
        sess = await signup(s, web)
        who, token = sess["user"]["email"], sess["access_token"]
        st, enr, _ = await call(
            s, web, "POST", "/api/v1/2fa/enroll", {"password": PASSWORD}, token=token
        )
        code = totp(enr["secret"], int(time.time()) // 30)
        st, _, _ = await call(s, web, "POST", "/api/v1/2fa/confirm", {"code": code}, token=token)
        assert st == 200

        def admin(*argv: str) -> str:
            out = admin_cli(web, *argv)
            assert out.returncode == 0, out.stderr
            return out.stdout

        (line,) = [ln for ln in admin("users").splitlines() if who in ln]
        assert "2FA on" in line and "1 live session" in line, line
        assert f"account {sess['user']['account_id']}" in line
        assert (
            admin("user-2fa-off", who.upper()).strip() == f"{who}: two-factor sign-in off, "
            "1 sessions ended"
        )
        await eventually_refused(s, web, token)
        st, ok, _ = await call(s, web, "POST", "/api/v1/signin",
                               {"email": who, "password": PASSWORD})  # fmt: skip
        assert st == 200 and ok["user"]["totp_enabled"] is False
        assert "0 sessions" not in admin("user-signout", who)
        await eventually_refused(s, web, ok["access_token"])
        out = admin("user-password", who)  # forgotten: a new one, printed once
        new = out.split("new password ", 1)[1].split(" ", 1)[0]
        st, _, _ = await call(
            s, web, "POST", "/api/v1/signin", {"email": who, "password": PASSWORD}
        )
        assert st == 401
        st, _, _ = await call(s, web, "POST", "/api/v1/signin", {"email": who, "password": new})
        assert st == 200
        bad = admin_cli(web, "user-signout", "nobody@example.com")
        assert bad.returncode == 1 and "no web user" in bad.stderr


@async_test
async def test_password_change_ends_the_other_sessions(web: HttpStack) -> None:
    async with aiohttp.ClientSession() as s:
        sess = await signup(s, web)
        who, token = sess["user"]["email"], sess["access_token"]
        st, other, _ = await call(s, web, "POST", "/api/v1/signin",
                                  {"email": who, "password": PASSWORD})  # fmt: skip
        assert st == 200
        new = "a much better passphrase"
        wrong = {"current_password": "not it at all", "new_password": new}
        st, err, _ = await call(s, web, "POST", "/api/v1/password", wrong, token=token)
        assert st == 403 and err["error"]["code"] == 1006
        weak = {"current_password": PASSWORD, "new_password": "short"}
        st, err, _ = await call(s, web, "POST", "/api/v1/password", weak, token=token)
        assert st == 400
        body = {"current_password": PASSWORD, "new_password": new}
        st, out, _ = await call(s, web, "POST", "/api/v1/password", body, token=token)
        assert st == 200 and out == {"changed": True, "sessions_ended": 1}
        st, _, _ = await call(s, web, "GET", "/api/v1/me", token=other["access_token"])
        assert st == 401  # the other session is over at once
        st, _, _ = await call(s, web, "POST", "/api/v1/token/refresh",
                              {"refresh_token": other["refresh_token"]})  # fmt: skip
        assert st == 401
        st, _, _ = await call(s, web, "GET", "/api/v1/me", token=token)
        assert st == 200  # this one goes on
        old = await call(s, web, "POST", "/api/v1/signin", {"email": who, "password": PASSWORD})
        assert old[0] == 401
        st, _, _ = await call(s, web, "POST", "/api/v1/signin", {"email": who, "password": new})
        assert st == 200


@async_test
async def test_a_stolen_access_token_alone_cannot_mint_keys_or_take_2fa_over(
    web: HttpStack,
) -> None:
    """What would outlast the 15-minute token (an API key; 2FA with the thief's secret, which
    locks the owner out) asks for the password again; the token alone gets 403, in words."""
    async with aiohttp.ClientSession() as s:
        token = (await signup(s, web))["access_token"]
        for path, body in (("/api/v1/api-keys", {"permission": "trade"}),
                           ("/api/v1/2fa/enroll", {})):  # fmt: skip
            st, err, _ = await call(s, web, "POST", path, body, token=token)
            assert st == 400 and "password" in err["error"]["reason"], (path, err)
            st, err, _ = await call(s, web, "POST", path, {**body, "password": "a guess, wrong"},
                                    token=token)  # fmt: skip
            assert st == 403 and err["error"]["reason"] == "the password is not right", err
        st, rows, _ = await call(s, web, "GET", "/api/v1/api-keys", token=token)
        assert rows == []
        st, me, _ = await call(s, web, "GET", "/api/v1/me", token=token)
        assert me["totp_enabled"] is False

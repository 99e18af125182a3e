"""Web accounts as an attacker (and a demanding user) tries them, against the real gateway
process (docs/web.md): signing out with a stale access token, account confusion in browser
API keys, cross-site forms posted at the credential routes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import aiohttp
import pytest

from gateways.http.jwt import Claims, Tokens
from tests.fixtures_feed import async_test
from tests.fixtures_http import HttpStack, running_stack
from tests.test_web_accounts import PASSWORD, call, email, signing_key, signup, unb64


@pytest.fixture(name="web", scope="module")
def web_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpStack]:
    yield from running_stack(
        tmp_path_factory.mktemp("websec"), web={"signin_burst_address": 10_000}
    )


@async_test
async def test_signout_with_an_expired_access_token_still_ends_the_session(
    web: HttpStack,
) -> None:
    """A laptop wakes up after the access token expired and its user clicks "Sign out": the
    page sends the stale token and the refresh cookie; the session must end (else a reload
    signs the user back in from the cookie)."""
    async with aiohttp.ClientSession() as s:
        sess = await signup(s, web)
        claims = unb64(sess["access_token"].split(".")[1])
        now = int(time.time())
        stale = Tokens(signing_key(web)).issue(
            Claims(claims["sub"], claims["acc"], claims["sid"], now - 1000, now - 100)
        )
        refresh = sess["refresh_token"]
        status, out, _ = await call(
            s, web, "POST", "/api/v1/signout", {"refresh_token": refresh}, token=stale
        )
        assert status == 200 and out == {"signed_out": True}, out
        status, _, _ = await call(
            s, web, "POST", "/api/v1/token/refresh", {"refresh_token": refresh}
        )
        assert status == 401
        status, _, _ = await call(s, web, "GET", "/api/v1/me", token=sess["access_token"])
        assert status == 401


@async_test
async def test_a_browser_api_key_is_for_the_own_account_whatever_other_accounts_are_named(
    web: HttpStack,
) -> None:
    """An operator's account named like a number (``accounts create 7``) must not receive the
    keys that web user 7's account asks for."""
    store = web.store
    nxt = max(a for a, _ in store.accounts()) + 1
    decoy = store.create_account(str(nxt + 1))  # id nxt, named as the next id
    async with aiohttp.ClientSession() as s:
        sess = await signup(s, web)
        mine = sess["user"]["account_id"]
        assert mine == nxt + 1 and decoy == nxt
        token = sess["access_token"]
        status, made, _ = await call(
            s,
            web,
            "POST",
            "/api/v1/api-keys",
            {"permission": "trade", "password": PASSWORD},
            token=token,
        )
        assert status == 201, made
        assert [k for k, *_ in store.key_rows(decoy)] == []
        assert [k for k, *_ in store.key_rows(mine)] == [made["api_key"]]


@async_test
async def test_a_cross_site_form_cannot_sign_a_browser_in(web: HttpStack) -> None:
    """Login CSRF: a form on another site posts text/plain that reads as JSON; the browser
    would keep the attacker's refresh cookie and trade in the attacker's account."""
    async with aiohttp.ClientSession() as s:
        who = email()
        await signup(s, web, who)
        form = f'{{"email": "{who}", "password": "{PASSWORD}", "totp": "="}}'.encode()
        for origin in ("http://evil.example", "null"):
            h = {"Origin": origin, "Content-Type": "text/plain"}
            for path in ("signin", "signup", "token/refresh", "signout"):
                async with s.post(f"{web.url}/api/v1/{path}", data=form, headers=h) as r:
                    body = await r.json()
                    assert r.status == 403, (path, origin, body)
                    assert "Set-Cookie" not in r.headers
        # The page itself (same origin) and clients without an Origin (curl, bots) sign in.
        host = web.url.split("://", 1)[1]
        for h in ({"Origin": f"http://{host}"}, {}):
            status, sess, _ = await call(
                s, web, "POST", "/api/v1/signin", {"email": who, "password": PASSWORD}, headers=h
            )
            assert status == 200, sess

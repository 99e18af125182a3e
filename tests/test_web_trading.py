"""Trading from the dashboard in a real browser (Debian's Chromium driven by Playwright).

Everything runs for real: the engine, the JSON gateway with the market maker quoting BTC-USD
through it, the websocket bridge (the page's market data), and the HTTP gateway that serves the
page at ``/`` with the web accounts, ``/api/v1`` and the private stream (docs/web.md). A person
signs up (the config gives new accounts demo funds), turns on two-factor sign-in (the test
reads the secret off the page and computes the RFC 6238 code itself), signs out, signs in with
the password and then the code, rests a limit order from the ticket, sees it in Open orders,
cancels it and sees it in the history, has a second one cancelled from outside (only the private
stream can tell the page), buys at market with an amount to spend and sees the fill and the new
balances, meets the ticket's own validation and a reject of the exchange in words, reloads
(the refresh cookie restores the session) and signs out.

Screenshots at a laptop's and a phone's size go to /tmp/web-trading-*.png.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import struct
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from protocol import config
from stack.demo import ensure_demo
from tests.fixtures_feed import (
    ArgsProc,
    BridgeProc,
    GatewayProc,
    http_json,
    stop_all,
    write_feed_config,
)
from tests.fixtures_http import HttpGatewayProc
from tests.procs import EngineProc, eventually_async
from tests.test_dashboard import browser_page, chromium

MARKET = "BTC-USD"
WAIT_MS = 30_000
TEST_TIMEOUT = 400.0
SIGNUP_FUNDS = {"USD": "10000", "BTC": "0.5"}
EMAIL = "ann@example.com"
PASSWORD = "correct horse battery"
LAPTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
SHOTS = Path("/tmp")
# Short-lived access tokens: the page refreshes each one a minute before it expires (here at
# once, every 5 s), so the whole flow also runs across refreshes and private-stream re-auths.
ACCESS_TTL = 65


def totp(secret: str, step: int) -> str:
    """RFC 6238 (SHA-1, 6 digits, 30 s steps) for time step ``step``, from the RFC itself."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{code:06d}"


def step() -> int:
    return int(time.time()) // 30


def test_totp_matches_rfc_6238_test_vectors() -> None:
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert [totp(secret, t // 30) for t in (59, 1111111109, 2000000000)] == [
        "287082",
        "081804",
        "279037",
    ]


def async_test(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), TEST_TIMEOUT))

    return wrapper


class Exchange:
    """Engine, JSON gateway, market maker, bridge and HTTP gateway, all on loopback."""

    def __init__(self, workdir: Path, market_maker: bool = True) -> None:
        self.workdir = workdir
        self.market_maker = market_maker
        self.accounts = workdir / "accounts.db"
        self.vault = workdir / "vault.key"
        self.sections: dict[str, dict] = {
            "accounts": {"path": str(self.accounts), "vault_key": str(self.vault)}
        }
        self.config = write_feed_config(workdir / "exchange.toml", pool=0, **self.sections)
        self.engine = EngineProc(workdir / "engine", config=self.config)
        self.gateway = GatewayProc(
            workdir / "gateway", config=self.config, engine=self.engine, accounts=self.accounts
        )
        self.bridge = BridgeProc(workdir / "bridge", config=self.config, engine=self.engine)
        self.http: HttpGatewayProc | None = None
        self.mm: ArgsProc | None = None

    async def start(self) -> None:
        await self.engine.astart()
        ex = config.load(self.config)
        ex.engine.commands = self.engine.commands
        creds, _ = await ensure_demo(ex, self.workdir)  # the market maker's account and funds
        mm_creds = self.workdir / "mm-credentials.json"
        mm_creds.write_text(json.dumps({"mm": creds["mm"]}))
        await self.gateway.astart()
        await self.bridge.astart()
        # The page finds the bridge through GET /api/v1/site, from the gateway's [bridge] port.
        http_config = write_feed_config(
            self.workdir / "http.toml",
            pool=0,
            bridge={"port": self.bridge.port},
            web={"access_ttl": ACCESS_TTL, "signin_burst": 30},  # this flow makes ~15 tries
            **self.sections,
        )
        self.http = HttpGatewayProc(
            self.workdir / "http", config=http_config, engine=self.engine,
            accounts=self.accounts, vault=self.vault, identity="web-trading-test",
        )  # fmt: skip
        funds = ",".join(f"{asset}={amount}" for asset, amount in SIGNUP_FUNDS.items())
        self.http.extra.append(f"--signup-funds={funds}")
        await self.http.astart()
        if not self.market_maker:
            return
        argv = [
            "--config", str(self.config), "--credentials", str(mm_creds),
            "--port", str(self.gateway.port), "--commands", self.engine.commands,
            "--market-data", self.engine.market_data, "--recorder", "", "--interval", "0.25",
        ]  # fmt: skip
        self.mm = ArgsProc("marketmaker", self.workdir / "mm", argv, "marketmaker")
        self.mm.spawn()

    def close(self) -> None:
        stop_all(self.mm, self.http, self.bridge, self.gateway, self.engine)

    def logs(self) -> str:
        procs = [self.engine, self.gateway, self.bridge, self.http, self.mm]
        return "\n".join(p.logs() for p in procs if p is not None)


async def quoted(http: aiohttp.ClientSession, ex: Exchange) -> bool:
    status, depth = await http_json(http, ex.bridge.url(f"/api/depth?market={MARKET}"))
    return status == 200 and len(depth["bids"]) >= 3 and len(depth["asks"]) >= 3


class Page:
    """The page and what the test asks of it."""

    def __init__(self, page: Any, http: aiohttp.ClientSession, base: str) -> None:
        self.p = page
        self.http = http
        self.base = base

    async def until(self, js: str, arg: Any = None) -> Any:
        return await self.p.wait_for_function(js, arg=arg, timeout=WAIT_MS)

    async def text(self, selector: str) -> str:
        return (await self.p.locator(selector).inner_text()).strip()

    async def rows(self, tbody: str) -> list[list[str]]:
        return await self.p.evaluate(
            """(sel) => [...document.querySelectorAll(sel + ' tr[data-order], ' + sel
                 + ' tr[data-trade], ' + sel + ' tr[data-asset]')].map(
                 (tr) => [...tr.children].map((td) => td.textContent.trim()))""",
            tbody,
        )

    async def account(self) -> dict:
        return await self.p.evaluate(
            """() => { const a = window.dashboard.account;
                 return { user: a.user, stream: a.stream, token: a.token,
                          open: [...a.open.keys()], history: [...a.history.values()],
                          fills: [...a.fills.values()], refreshes: a.refreshes,
                          refreshError: a.refreshError }; }"""
        )

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``/api/v1`` with the page's own access token (as another tab of the user would)."""
        token = (await self.account())["token"]
        async with self.http.request(
            method, f"{self.base}/api/v1{path}", json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as r:  # fmt: skip
            return r.status, await r.json(content_type=None)

    async def screenshot_to(self, name: str, full_page: bool = False) -> None:
        path = SHOTS / f"web-trading-{name}.png"
        await self.p.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 10_000

    async def ticket(self, **fields: str) -> None:
        for name, value in fields.items():
            await self.p.fill(f"#t-{name}", value)

    async def signed_out(self) -> None:
        await self.until(
            "() => window.dashboard.ready && !window.dashboard.account.user"
            " && getComputedStyle(document.getElementById('signin-btn')).display !== 'none'"
        )


@async_test
async def test_a_person_signs_up_turns_on_2fa_signs_in_and_trades_from_the_dashboard(
    tmp_path: Path,
) -> None:
    chromium()  # skip or fail before starting anything
    ex = Exchange(tmp_path)
    try:
        await ex.start()
        assert ex.http is not None
        async with aiohttp.ClientSession() as http:
            await eventually_async(lambda: quoted(http, ex), 30, 0.1, "market maker quoting")
            async with browser_page(LAPTOP, console_problem) as (page, problems):
                await page.goto(f"{ex.http.url}/?market={MARKET}")
                await trade(Page(page, http, ex.http.url))
                assert problems == [], "\n".join(problems)
    except BaseException:
        print(ex.logs())
        raise
    finally:
        ex.close()


def console_problem(m: Any, problems: list[str]) -> None:
    # An HTTP error status the page handles is logged by Chromium as "Failed to load resource";
    # the test checks what the page shows for it instead.
    if m.type == "error" and not m.text.startswith("Failed to load resource"):
        problems.append(f"console: {m.text} ({m.location})")


async def trade(page: Page) -> None:
    p = page.p
    # The gateway serves the trading page: markets, the book, signed out.
    await page.until(
        """() => { const d = window.dashboard;
             return d && d.ready && d.site && d.book && d.book.bids.size > 0
               && d.book.asks.size > 0 && document.querySelectorAll('#bids tr.level').length
               && document.getElementById('status').textContent === 'live'; }"""
    )
    # An anonymous visit tries no refresh that could only fail (401 in the console).
    assert await p.evaluate("() => window.dashboard.account.refreshError === undefined")
    assert await p.evaluate("() => window.dashboard.account.refreshes") == 0
    await page.signed_out()
    assert await p.locator("#ticket").is_visible()
    assert await page.text("#t-submit") == "Sign in to trade"

    await sign_up(page)
    secret, confirmed_step = await enable_2fa(page)
    await p.click("#signout-btn")
    await page.signed_out()
    await sign_in_with_2fa(page, secret, confirmed_step)
    await rest_and_cancel(page)
    await cancelled_elsewhere(page)
    await buy_at_market(page)
    await validation_and_rejects(page)
    await screenshots(page)

    # The tokens are refreshed (every 5 s here) and the stream goes on with each new one.
    await page.until("() => window.dashboard.account.refreshes >= 2")
    a = await page.account()
    assert a["refreshes"] >= 2 and a["stream"] == "live", (a["refreshes"], a["refreshError"])
    assert await p.evaluate("() => window.dashboard.account.streamAuths") >= 2

    # A reload keeps the session (the refresh cookie), with the token in memory only.
    await p.reload()
    await page.until("() => window.dashboard.ready && window.dashboard.account.user")
    assert await page.text("#user-email") == EMAIL
    assert await p.evaluate("() => localStorage.length + sessionStorage.length") == 0
    assert await p.evaluate("() => document.cookie") == "signed_in=1"  # a hint, no token
    await page.until("() => window.dashboard.account.stream === 'live'")

    await p.click("#signout-btn")
    await page.signed_out()
    await p.reload()
    await page.signed_out()  # the refresh token was revoked with the session


async def sign_up(page: Page) -> None:
    p = page.p
    await p.click("#signup-btn")
    await p.fill("#auth-email", EMAIL)
    await p.fill("#auth-password", "short")
    await p.click("#auth-submit")
    assert "at least 10 characters" in await page.text("#auth-msg")
    await p.fill("#auth-password", PASSWORD)
    await p.click("#auth-submit")
    await page.until(
        "() => window.dashboard.account.user && window.dashboard.account.stream === 'live'"
    )
    await page.until("() => !document.getElementById('auth-dialog').open")
    assert await page.text("#user-email") == EMAIL
    assert await page.text("#t-submit") == "Buy BTC"
    # The signup funds, on the page from the balances of the account.
    await page.until(
        """(funds) => { const rows = [...document.querySelectorAll('#balances tr[data-asset]')];
             return Object.entries(funds).every(([a, v]) => rows.some((tr) =>
               tr.dataset.asset === a && +tr.children[1].textContent === +v)); }""",
        SIGNUP_FUNDS,
    )


async def enable_2fa(page: Page) -> tuple[str, int]:
    """Turns it on; the secret and the time step of the code that confirmed it."""
    p = page.p
    await p.click("#security-btn")
    await p.fill("#totp-password", f"{PASSWORD}?")  # asked again: a wrong one is refused
    await p.click("#totp-enable-btn")
    await page.until("() => document.getElementById('totp-msg').textContent.includes('not right')")
    assert await p.is_hidden("#totp-enroll")
    await p.fill("#totp-password", PASSWORD)
    await p.click("#totp-enable-btn")
    await page.until("() => document.getElementById('totp-secret').textContent.length >= 16")
    secret = await page.text("#totp-secret")
    await page.until(  # the QR code, drawn from the gateway's SVG
        "() => document.getElementById('totp-qr').src.startsWith('data:image/svg+xml')"
        " && document.getElementById('totp-qr').naturalWidth > 0"
    )
    assert (await p.get_attribute("#totp-uri", "href")).startswith("otpauth://totp/")
    await p.fill("#totp-code", "000000" if totp(secret, step()) != "000000" else "111111")
    await p.click("#totp-confirm")
    await page.until("() => document.getElementById('totp-msg').textContent.length > 0")
    assert "error" in (await p.get_attribute("#totp-msg", "class"))
    used = step()
    await p.fill("#totp-code", totp(secret, used))
    await p.click("#totp-confirm")
    await page.until("() => window.dashboard.account.user.totp_enabled")
    assert await page.text("#totp-state") == "On"
    # Turning it off takes a right code: a wrong one is refused, in words.
    await p.fill("#totp-off-code", "000000" if totp(secret, step()) != "000000" else "111111")
    await p.click("#totp-disable")
    await page.until("() => document.getElementById('totp-msg').className.includes('error')")
    assert len(await page.text("#totp-msg")) > 10
    assert (await page.account())["user"]["totp_enabled"] is True
    # API keys: create one (its secret shown once), see it listed, revoke it.
    await p.select_option("#key-permission", "read")
    await p.fill("#key-password", PASSWORD)
    await p.click("#key-create")
    await page.until("() => !document.getElementById('new-key').hidden")
    key = await page.text("#new-key-id")
    assert key.startswith("k_") and len(await page.text("#new-key-secret")) >= 16
    await page.until(f"() => document.querySelector('#keys tr[data-key=\"{key}\"] button')")
    await page.screenshot_to("security")
    await p.click(f'#keys tr[data-key="{key}"] button')
    await page.until(f"() => !document.querySelector('#keys tr[data-key=\"{key}\"] button')")
    await change_password(page)
    await p.click("#security-dialog .close")
    return secret, used


async def change_password(page: Page) -> None:
    """A wrong current password is refused in words (and keeps the session); a change works
    (the gateway then takes only the new one); then back, for the rest of the flow."""
    p, new = page.p, "another fine passphrase"
    for current, want, then in ((f"{PASSWORD}!", "error", PASSWORD), (PASSWORD, "ok", new),
                                (new, "ok", PASSWORD)):  # fmt: skip
        await p.fill("#pw-current", current)
        await p.fill("#pw-new", then if want == "ok" else new)
        await p.click("#pw-change")
        await page.until(f"() => document.getElementById('pw-msg').className.includes('{want}')")
        text = await page.text("#pw-msg")
        assert ("not right" in text) if want == "error" else ("Password changed" in text), text
        assert (await page.account())["user"] is not None  # still signed in
        if current == PASSWORD and want == "ok":
            for password, code in ((PASSWORD, 1006), (new, 1008)):  # 1008: right, 2FA next
                creds = {"email": EMAIL, "password": password}
                async with page.http.post(page.base + "/api/v1/signin", json=creds) as r:
                    assert r.status == 401 and (await r.json())["error"]["code"] == code


async def sign_in_with_2fa(page: Page, secret: str, confirmed_step: int) -> None:
    p = page.p
    await p.click("#signin-btn")
    await p.fill("#auth-email", EMAIL)
    await p.fill("#auth-password", "wrong password!")
    await p.click("#auth-submit")
    await page.until("() => document.getElementById('auth-msg').textContent.length > 0")
    assert "wrong email or password" in await page.text("#auth-msg")
    await p.fill("#auth-password", PASSWORD)
    await p.click("#auth-submit")
    await page.until("() => !document.getElementById('f-auth-totp').hidden")
    assert "code" in await page.text("#auth-msg")
    # Each code is accepted once: the one after the confirming code's step is still in time.
    await p.fill("#auth-totp", totp(secret, max(step(), confirmed_step + 1)))
    await p.click("#auth-submit")
    await page.until(
        "() => window.dashboard.account.user && window.dashboard.account.stream === 'live'"
    )
    assert (await page.account())["user"]["totp_enabled"] is True


def best(page_book: dict, side: str) -> Decimal:
    levels = [Decimal(p) for p, _ in page_book[side]]
    return max(levels) if side == "bids" else min(levels)


async def book(page: Page) -> dict:
    return await page.p.evaluate(
        "() => ({ bids: [...window.dashboard.book.bids], asks: [...window.dashboard.book.asks] })"
    )


async def rest_and_cancel(page: Page) -> None:
    p = page.p
    price = (best(await book(page), "bids") * Decimal("0.8")).quantize(Decimal("0.01"))
    await p.select_option("#t-type", "limit")
    await p.click("#t-buy")
    await page.ticket(price=str(price), qty="0.0100")
    await page.until("() => document.getElementById('t-total').textContent !== '-'")
    total, unit = (await page.text("#t-total")).split()
    assert (Decimal(total), unit) == (price * Decimal("0.01"), "USD")  # exact, as locked
    await p.click("#t-submit")
    await page.until("() => document.querySelectorAll('#open-orders tr[data-order]').length === 1")
    [row] = await page.rows("#open-orders")
    assert row[1:7] == [MARKET, "Buy", "limit", str(price), "-", "0.0100"]
    assert row[8] == "Open"
    assert "placed" in await page.text("#t-result")
    await page.screenshot_to("orders")
    order_id = int(await p.get_attribute("#open-orders tr[data-order]", "data-order"))
    # The gateway agrees, and the USD it locks shows as "in orders".
    status, open_orders = await page.api("GET", "/order/open")
    assert status == 200 and [o["order_id"] for o in open_orders] == [order_id]
    await page.until(
        """(locked) => { const tr = document.querySelector('#balances tr[data-asset=USD]');
             return tr && +tr.children[2].textContent === +locked; }""",
        str(price * Decimal("0.01")),
    )

    await p.click(f'#open-orders tr[data-order="{order_id}"] button.cancel')
    await page.until("() => document.querySelectorAll('#open-orders tr[data-order]').length === 0")
    await p.click("#order-tabs button[data-tab=history]")
    await page.until(
        f"() => document.querySelector('#order-history tr[data-order=\"{order_id}\"]')"
    )
    [row] = await page.rows("#order-history")
    assert row[1:4] == [MARKET, "Buy", "limit"] and row[7].startswith("Canceled")
    await p.click("#order-tabs button[data-tab=open]")


async def cancelled_elsewhere(page: Page) -> None:
    """An order cancelled by another client of the user: only the private stream tells."""
    p = page.p
    price = (best(await book(page), "asks") * Decimal("1.25")).quantize(Decimal("0.01"))
    await p.click("#t-sell")
    await page.ticket(price=str(price), qty="0.0200")
    await p.click("#t-submit")
    await page.until("() => document.querySelectorAll('#open-orders tr[data-order]').length === 1")
    status, answer = await page.api("DELETE", "/orders")
    assert status == 200 and answer == {"cancelled": 1}, answer
    await page.until("() => document.querySelectorAll('#open-orders tr[data-order]').length === 0")
    history = (await page.account())["history"]
    assert [o["status"] for o in history] == ["canceled", "canceled"]


async def buy_at_market(page: Page) -> None:
    p = page.p
    await p.click("#t-buy")
    await p.select_option("#t-type", "market")
    await p.click("#t-by button[data-by=amount]")
    await page.ticket(amount="250.00")
    assert (await page.text("#t-total")).startswith("≈ 250")
    await p.click("#t-submit")
    await page.until("() => document.querySelectorAll('#fills tr[data-trade]').length >= 1")
    assert (await page.text("#t-result")).startswith("Bought")
    status, fills = await page.api("GET", "/fills")
    assert status == 200 and fills and all(f["side"] == "buy" for f in fills)
    await p.click("#order-tabs button[data-tab=fills]")
    rows = await page.rows("#fills")
    assert sorted((r[3], r[4]) for r in rows) == sorted((f["price"], f["qty"]) for f in fills)
    assert all(r[1:3] == [MARKET, "Buy"] and r[6] == "taker" for r in rows)

    # The new balances on the page are the exchange's.
    async def balances_agree() -> bool:
        status, balances = await page.api("GET", "/balances")
        shown = {r[0]: (r[1], r[2]) for r in await page.rows("#balances")}
        for b in balances:
            if b["asset"] in ("USD", "BTC"):
                assert shown[b["asset"]] == (b["available"], b["locked"]), (shown, balances)
        return True

    await eventually_async(balances_agree, 30, 0.1, "page balances == gateway balances")
    # What the fills say: USD spent (at most the amount: whole lots only), BTC bought less fees.
    _, balances = await page.api("GET", "/balances")
    have = {b["asset"]: Decimal(b["available"]) for b in balances}
    spent = sum(Decimal(f["price"]) * Decimal(f["qty"]) for f in fills)
    got = sum(Decimal(f["qty"]) - Decimal(f["fee"]) for f in fills)
    assert 0 < spent <= Decimal("250.00")
    assert have["USD"] == Decimal(SIGNUP_FUNDS["USD"]) - spent
    assert have["BTC"] == Decimal(SIGNUP_FUNDS["BTC"]) + got


async def validation_and_rejects(page: Page) -> None:
    p = page.p
    await p.select_option("#t-type", "limit")
    await p.click("#t-buy")
    await page.ticket(price="100.005", qty="0.0100")
    assert await page.text("#t-problem") == "price must be a multiple of 0.01"
    await page.ticket(price="100.00", qty="0.00005")
    assert await page.text("#t-problem") == "quantity must be a multiple of 0.0001"
    await page.ticket(price="100000.00", qty="1.0000")
    assert (await page.text("#t-problem")).startswith("not enough USD: ")
    sent = await p.evaluate("() => window.dashboard.ticket.sent")
    await p.click("#t-submit")
    assert await p.evaluate("() => window.dashboard.ticket.sent") == sent  # nothing sent

    # The exchange's own reject, in words: a post-only buy at the best ask would take.
    ask = best(await book(page), "asks")
    await page.ticket(price=str(ask + Decimal("50")), qty="0.0010")
    await p.check("#t-post")
    assert await page.text("#t-problem") == ""
    await p.click("#t-submit")
    await page.until("() => window.dashboard.ticket.error")
    error = await p.evaluate("() => window.dashboard.ticket.error")
    assert error["code"] == 3008, error
    assert await page.text("#t-result") == f"Order refused: {error['reason']}"
    assert "post" in error["reason"].lower()
    await p.uncheck("#t-post")


async def screenshots(page: Page) -> None:
    p = page.p
    await page.ticket(price="", qty="")
    await page.screenshot_to("laptop")
    await p.set_viewport_size(PHONE)
    await page.until("() => document.getElementById('ticket').getBoundingClientRect().width < 400")
    await page.screenshot_to("phone", full_page=True)
    # On a phone the ticket comes right after the chart, without scrolling sideways.
    box = await p.locator("#ticket").bounding_box()
    chart = await p.locator("section.chart").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert box["y"] > chart["y"]
    assert await p.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    await p.set_viewport_size(LAPTOP)


# ------------------------------------------------------------------ stop orders, GTD


class ApiUser:
    """Another person, trading through /api/v1 with a session of its own (signed up there)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base, self.token = http, base, token

    @classmethod
    async def sign_up(cls, http: aiohttp.ClientSession, base: str, email: str) -> ApiUser:
        body = {"email": email, "password": PASSWORD}
        async with http.post(f"{base}/api/v1/signup", json=body) as r:
            answer = await r.json()
            assert r.status == 201, answer
        return cls(http, base, answer["access_token"])

    async def order(self, **body: Any) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.post(f"{self.base}/api/v1/order", json={"market": MARKET, **body},
                                  headers=headers) as r:  # fmt: skip
            answer = await r.json()
            assert r.status == 200, answer
            return answer


async def trade_at(seller: ApiUser, buyer: ApiUser, price: str, qty: str, rest: str = "0") -> None:
    """A trade of ``qty`` at ``price`` between two others (the market's last price), leaving
    ``rest`` more offered at that price."""
    total = Decimal(qty) + Decimal(rest)
    await seller.order(side="sell", price=price, quantity=str(total))
    placed = await buyer.order(side="buy", price=price, quantity=qty, time_in_force="IOC")
    assert placed["order"]["status"] == "filled" and placed["fills"][0]["price"] == price, placed


@async_test
async def test_a_stop_limit_from_the_ticket_waits_then_triggers_and_fills(tmp_path: Path) -> None:
    """On a book of our own (no market maker): a stop-limit buy placed from the ticket waits
    in Open orders ("Waiting", its stop shown) and out of the book; a take-profit market order
    waits too and is cancelled from the table; two other people trade through the stop over
    the API, and the page, told only by the private stream, shows the order triggered and
    filled. Then a GTD order from the ticket, with its expiry; and the ticket's own checks of
    the new fields. Then an iceberg (only its visible part in the book), an OCO list (its two
    orders grouped in Open orders; cancelling one from the table takes both) and a trailing
    stop, each from the ticket."""
    chromium()
    ex = Exchange(tmp_path, market_maker=False)
    try:
        await ex.start()
        assert ex.http is not None
        base = ex.http.url
        async with aiohttp.ClientSession() as http, browser_page(LAPTOP, console_problem) as (
            page, problems,
        ):  # fmt: skip
            await page.goto(f"{base}/?market={MARKET}")
            pg = Page(page, http, base)
            await page.wait_for_function("() => window.dashboard && window.dashboard.ready"
                                         " && window.dashboard.site", timeout=WAIT_MS)  # fmt: skip
            await sign_up(pg)
            seller = await ApiUser.sign_up(http, base, "sam@example.com")
            buyer = await ApiUser.sign_up(http, base, "bea@example.com")
            await trade_at(seller, buyer, "30000.00", "0.0010")
            await pg.until("() => document.getElementById('last').textContent === '30000.00'")
            await stop_flow(pg, seller, buyer)
            await gtd_flow(pg)
            await iceberg_oco_trailing_flow(pg)
            await pg.screenshot_to("stop-final")
            assert problems == [], "\n".join(problems)
    except BaseException:
        print(ex.logs())
        raise
    finally:
        ex.close()


async def open_rows(page: Page, n: int) -> list[list[str]]:
    rows = "document.querySelectorAll('#open-orders tr[data-order]').length"
    await page.until(f"() => {rows} === {n}")
    return await page.rows("#open-orders")


async def stop_flow(page: Page, seller: ApiUser, buyer: ApiUser) -> None:
    p = page.p
    await p.click("#t-buy")
    await p.select_option("#t-type", "stop_limit")
    assert await p.is_visible("#f-stop") and await p.is_visible("#f-price")
    assert await p.is_hidden("#f-post")  # a stop cannot be post-only
    # The ticket's own checks of the stop price.
    await page.ticket(stop="31000.005", price="31100.00", qty="0.0100")
    assert await page.text("#t-problem") == "stop price must be a multiple of 0.01"
    await page.ticket(stop="29000.00")
    assert "already reached this stop" in await page.text("#t-stop-note")
    await page.ticket(stop="31000.00")
    assert await page.text("#t-problem") == ""
    assert await page.text("#t-stop-note") == (
        "waits until the last price (now 30000.00) rises to 31000.00"
    )
    await page.screenshot_to("stop-ticket")
    await p.click("#t-submit")
    [row] = await open_rows(page, 1)
    assert row[1:9] == [MARKET, "Buy", "stop-limit", "31100.00", "31000.00", "0.0100", "0.0000",
                        "Waiting"], row  # fmt: skip
    assert "waiting" in await page.text("#t-result")
    stop_id = int(await p.get_attribute("#open-orders tr[data-order]", "data-order"))
    status, got = await page.api("GET", f"/order/{stop_id}")
    assert status == 200 and (got["waiting"], got["trigger"], got["stop_price"]) == (
        True, "stop_loss", "31000.00"), got  # fmt: skip
    status, depth = await page.api("GET", f"/depth?market={MARKET}")
    assert status == 200 and depth["bids"] == [], depth  # not in the book while it waits

    # A take-profit market sell waits too, and is cancelled from the table.
    await p.click("#t-sell")
    await p.select_option("#t-type", "take_profit_market")
    assert await p.is_hidden("#f-price") and await p.is_visible("#f-stop")
    await page.ticket(stop="35000.00", qty="0.0200")
    assert "rises to 35000.00" in await page.text("#t-stop-note")
    await p.click("#t-submit")
    rows = await open_rows(page, 2)
    tp = next(r for r in rows if r[3] == "take-profit market")
    assert tp[4:6] == ["market", "35000.00"] and tp[8] == "Waiting", tp
    await page.screenshot_to("stop-waiting")
    ids = await p.evaluate(
        "() => [...document.querySelectorAll('#open-orders tr[data-order]')].map((tr) =>"
        " +tr.dataset.order)"
    )
    [tp_id] = [i for i in ids if i != stop_id]
    await p.click(f'#open-orders tr[data-order="{tp_id}"] button.cancel')
    [row] = await open_rows(page, 1)
    assert row[3] == "stop-limit"
    await page.until(f"() => document.querySelector('#order-history tr[data-order=\"{tp_id}\"]')")

    # Two others trade at 31000.00: the stop triggers, and buys the 0.01 they left offered.
    await trade_at(seller, buyer, "31000.00", "0.0010", rest="0.0100")
    await open_rows(page, 0)
    await p.click("#order-tabs button[data-tab=history]")
    await page.until(f"() => document.querySelector('#order-history tr[data-order=\"{stop_id}\"]')")
    row = next(r for r in await page.rows("#order-history") if r[3] == "stop-limit")
    assert row[1:8] == [MARKET, "Buy", "stop-limit", "31100.00", "0.0100", "0.0100", "Filled"], row
    closed = {o["order_id"]: o for o in (await page.account())["history"]}
    assert closed[stop_id]["waiting"] is False and closed[stop_id]["status"] == "filled"
    await p.click("#order-tabs button[data-tab=fills]")
    fills = await page.rows("#fills")
    assert [(r[2], r[3], r[4]) for r in fills] == [("Buy", "31000.00", "0.0100")], fills
    await p.click("#order-tabs button[data-tab=open]")


async def gtd_flow(page: Page) -> None:
    p = page.p
    await p.click("#t-buy")
    await p.select_option("#t-type", "limit")
    assert await p.is_hidden("#f-stop") and await p.is_hidden("#f-expire")
    await p.select_option("#t-tif", "GTD")
    assert await p.is_visible("#f-expire")
    await page.ticket(price="20000.00", qty="0.0100", expire="")
    assert await page.text("#t-problem") == "enter the expiry date and time (GTD)"
    local = "(m) => { const d = new Date(Date.now() + m * 60000); d.setSeconds(0, 0);"
    local += " return new Date(d - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16); }"
    await page.ticket(expire=await p.evaluate(local, -5))
    assert await page.text("#t-problem") == "the expiry time is in the past"
    later = await p.evaluate(local, 30)
    await page.ticket(expire=later)
    assert await page.text("#t-problem") == ""
    await page.screenshot_to("gtd-ticket")
    await p.click("#t-submit")
    [row] = await open_rows(page, 1)
    assert row[3:9] == ["limit", "20000.00", "-", "0.0100", "0.0000", "Open"], row
    order_id = int(await p.get_attribute("#open-orders tr[data-order]", "data-order"))
    status, got = await page.api("GET", f"/order/{order_id}")
    want = int(await p.evaluate("(t) => new Date(t).getTime()", later)) * 1_000_000
    assert status == 200 and (got["tif"], got["expire_ts"]) == ("GTD", want), got
    await p.select_option("#t-tif", "GTC")
    await p.select_option("#t-type", "stop_limit")
    await page.ticket(stop="", price="", qty="")


async def depth_asks(page: Page, want: list[list[str]]) -> None:
    async def shown() -> bool:
        status, depth = await page.api("GET", f"/depth?market={MARKET}")
        return status == 200 and depth["asks"] == want

    await eventually_async(shown, WAIT_MS / 1000, 0.1, f"asks {want}")


async def iceberg_oco_trailing_flow(page: Page) -> None:
    p = page.p
    [gtd] = await open_rows(page, 1)  # the GTD buy of gtd_flow rests on
    # An iceberg sell: the ticket checks its visible part; the book shows only that.
    await p.click("#t-sell")
    await p.select_option("#t-type", "limit")
    assert await p.is_visible("#f-display")
    await page.ticket(price="34000.00", qty="0.0500", display="0.0600")
    assert await page.text("#t-problem") == "the visible quantity must be at most the quantity"
    await page.ticket(display="0.0100")
    assert await page.text("#t-problem") == ""
    await p.click("#t-submit")
    rows = await open_rows(page, 2)
    ice = next(r for r in rows if r[4] == "34000.00")
    assert ice[2:9] == ["Sell", "limit", "34000.00", "-", "0.0500 · 0.0100 shown", "0.0000",
                        "Open"], ice  # fmt: skip
    assert "iceberg, 0.0100 visible" in await page.text("#t-result")
    await depth_asks(page, [["34000.00", "0.0100"]])

    # An OCO sell: a limit at 33000.00 and a stop-limit at 29000.00 / 28900.00.
    await page.ticket(display="")
    await p.select_option("#t-type", "oco")
    assert await p.is_visible("#f-stop") and await p.is_visible("#f-stop-limit")
    for hidden in ("#f-display", "#f-limit-opts", "#f-trailing", "#f-post"):
        assert await p.is_hidden(hidden), hidden
    await page.ticket(price="33000.00", stop="31500.00", qty="0.0200")
    assert await page.text("#t-problem") == "the stop price must be below the last price 31000.00"
    await page.ticket(stop="29000.00", **{"stop-limit": "28900.00"})
    assert await page.text("#t-problem") == ""
    assert "a fill of one cancels the other" in await page.text("#t-stop-note")
    await page.screenshot_to("oco-ticket")
    await p.click("#t-submit")
    rows = await open_rows(page, 4)
    assert (await page.text("#t-result")).startswith("OCO #")
    legs = [r for r in rows if r[3].startswith("OCO #")]
    list_id = int(legs[0][3].split("#")[1].split()[0])
    assert [r[3:10] for r in legs] == [
        [f"OCO #{list_id} limit", "33000.00", "-", "0.0200", "0.0000", "Open", "Cancel"],
        [f"OCO #{list_id} stop-limit", "28900.00", "29000.00", "0.0200", "0.0000", "Waiting",
         "Cancel"],
    ], legs  # fmt: skip
    status, listed = await page.api("GET", "/order/open")
    assert status == 200 and sorted(o["order_id"] for o in listed if o.get("list_id")) == [
        list_id, list_id + 1], listed  # fmt: skip
    await page.screenshot_to("oco-open")
    await p.set_viewport_size(PHONE)
    await p.locator("section.orders").scroll_into_view_if_needed()
    assert await p.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    await page.screenshot_to("oco-phone", full_page=True)
    await p.set_viewport_size(LAPTOP)

    # Cancelling the stop from the table cancels the list's limit order too.
    await p.click(f'#open-orders tr[data-order="{list_id + 1}"] button.cancel')
    rows = await open_rows(page, 2)
    assert sorted(r[4] for r in rows) == sorted([gtd[4], "34000.00"]), rows
    await p.click("#order-tabs button[data-tab=history]")
    await page.until(f"() => document.querySelector('#order-history tr[data-order=\"{list_id}\"]')")
    hist = {r[3]: r for r in await page.rows("#order-history") if r[3].startswith("OCO #")}
    assert (hist[f"OCO #{list_id} limit"][7], hist[f"OCO #{list_id} stop-limit"][7]) == (
        "Canceled (linked)", "Canceled (user)"), hist  # fmt: skip
    await p.click("#order-tabs button[data-tab=open]")
    await depth_asks(page, [["34000.00", "0.0100"]])

    # A trailing stop-market sell, 1.5% behind the best last price from now on.
    await p.select_option("#t-type", "stop_market")
    await p.check("#t-trailing")
    assert await p.is_visible("#f-trail") and await page.text("#t-stop-label") == "Activation"
    await page.ticket(trail="25", stop="", qty="0.0100")
    assert await page.text("#t-problem") == ("trailing distance must be 0.1%..20% (10..2000 bps)")
    await page.ticket(trail="1.5")
    assert await page.text("#t-problem") == ""
    assert await page.text("#t-stop-note") == (
        "follows the last price (now 31000.00), then triggers when it falls 1.5% from its highest"
    )
    await p.click("#t-submit")
    await open_rows(page, 3)
    await page.until(  # the price it follows comes with its view, just after the answer
        "() => [...document.querySelectorAll('#open-orders td')].some((td) =>"
        " td.textContent === 'trail 1.5% from 31000.00')"
    )
    rows = await page.rows("#open-orders")
    trail = next(r for r in rows if r[3] == "trailing stop-market")
    assert trail[4:9] == ["market", "trail 1.5% from 31000.00", "0.0100", "0.0000", "Waiting"]
    trail_id = int(await p.get_attribute("#open-orders tr:has(td:text-is('trailing stop-market'))",
                                         "data-order"))  # fmt: skip
    status, got = await page.api("GET", f"/order/{trail_id}")
    assert status == 200 and (got["trailing_bps"], got["trail_price"]) == (150, "31000.00"), got
    await page.screenshot_to("trailing-open")
    await p.click(f'#open-orders tr[data-order="{trail_id}"] button.cancel')
    await open_rows(page, 2)
    await p.uncheck("#t-trailing")

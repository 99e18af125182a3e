"""The dashboard page in a real browser (Debian's Chromium driven by Playwright).

The whole market-data path runs for real: the engine, the JSON gateway, the market maker
quoting BTC-USD through it (``python -m marketmaker``, with only its maker account so that every
trade on the page is one of ours), the websocket bridge serving the page, and a trader of our
own (the demo account "alice") sending market orders through the gateway. The page must show
the candles, the order book and the trades, and keep them updating as orders trade.

The app exposes its state as ``window.dashboard``; the test reads it and the DOM rows. A
screenshot is saved next to the test's files and copied to /tmp/dashboard-test.png.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateways.json_tcp.client import JsonClient
from protocol import config
from stack.demo import ensure_demo
from tests.fixtures_feed import (
    ArgsProc,
    BridgeProc,
    GatewayProc,
    async_test,
    http_json,
    stop_all,
    write_feed_config,
)
from tests.procs import EngineProc, eventually_async

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOT_COPY = Path("/tmp/dashboard-test.png")
MARKET = "BTC-USD"
WAIT_MS = 30_000

STATE_JS = """() => {
  const d = window.dashboard, b = d.book;
  const rows = (sel) => [...document.querySelectorAll(sel)].map(
      (tr) => [...tr.children].map((td) => td.textContent));
  const sorted = (m, dir) => b ? [...m].sort((x, y) => dir * (+x[0] - +y[0])) : [];
  const bars = d.series ? d.series.data() : [];
  return {
    market: d.market, candles: d.candles, trades: d.trades, lastTradeId: d.lastTradeId,
    depthUpdates: d.depthUpdates,
    seq: b ? b.seq : null, epoch: b ? b.epoch : null,
    bids: sorted(b ? b.bids : [], -1), asks: sorted(b ? b.asks : [], 1),
    bidRows: rows("#bids tr.level"), askRows: rows("#asks tr.level"), tradeRows: rows("#trades tr"),
    lastBar: bars.length ? bars[bars.length - 1] : null,
    canvases: document.querySelectorAll("#chart canvas").length,
    status: document.getElementById("status").textContent,
    last: document.getElementById("last").textContent,
    spread: document.getElementById("spread").textContent,
  };
}"""


def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the dashboard test needs a real browser. "
            "Run `make test` (it installs Debian's chromium with apt), or "
            "`apt-get install -y chromium`."
        )
    return CHROMIUM


class Exchange:
    """Engine, JSON gateway, websocket bridge and market maker, all on loopback."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.accounts = workdir / "accounts.db"
        self.config = write_feed_config(
            workdir / "exchange.toml", pool=0, accounts={"path": str(self.accounts)}
        )
        self.engine = EngineProc(workdir / "engine", config=self.config)
        self.gateway = GatewayProc(
            workdir / "gateway", config=self.config, engine=self.engine, accounts=self.accounts
        )
        self.bridge = BridgeProc(workdir / "bridge", config=self.config, engine=self.engine)
        self.mm: ArgsProc | None = None
        self.creds: dict[str, dict] = {}

    async def start(self) -> None:
        await self.engine.astart()
        ex = config.load(self.config)
        ex.engine.commands = self.engine.commands
        self.creds, _ = await ensure_demo(ex, self.workdir)  # accounts, keys, funds
        mm_creds = self.workdir / "mm-credentials.json"
        mm_creds.write_text(json.dumps({"mm": self.creds["mm"]}))  # no noise taker
        await self.gateway.astart()
        await self.bridge.astart()
        argv = [
            "--config",
            str(self.config),
            "--credentials",
            str(mm_creds),
            "--port",
            str(self.gateway.port),
            "--commands",
            self.engine.commands,
            "--market-data",
            self.engine.market_data,
            "--recorder",
            "",
            "--interval",
            "0.25",
        ]
        self.mm = ArgsProc("marketmaker", self.workdir / "mm", argv, "marketmaker")
        self.mm.spawn()

    def close(self) -> None:
        stop_all(self.mm, self.bridge, self.gateway, self.engine)

    def logs(self) -> str:
        procs = [self.engine, self.gateway, self.bridge, self.mm]
        return "\n".join(p.logs() for p in procs if p is not None)


async def quoted(http: aiohttp.ClientSession, ex: Exchange) -> bool:
    status, depth = await http_json(http, ex.bridge.url(f"/api/depth?market={MARKET}"))
    return status == 200 and len(depth["bids"]) >= 3 and len(depth["asks"]) >= 3


@contextlib.asynccontextmanager
async def browser_page(
    viewport: dict[str, int], console: Callable[[Any, list[str]], None]
) -> AsyncIterator[tuple[Any, list[str]]]:
    """Headless Chromium with one page of ``viewport``; its page errors, and the console
    messages ``console`` keeps, are collected in the list yielded with it."""
    browser_path = chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(browser_path), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport=viewport)
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: console(m, problems))
            yield page, problems
        finally:
            await browser.close()


def console_problem(m: Any, problems: list[str]) -> None:
    """Any console error: the page served by the bridge logs none (its /api/v1/site says
    watch-only, docs/web.md)."""
    if m.type != "error":
        return
    problems.append(f"console: {m.text} ({m.location.get('url')})")


def fills_of(reports: list[dict]) -> list[dict]:
    return [r for r in reports if r.get("trade_id")]


@async_test
async def test_dashboard_renders_candles_book_and_trades_and_updates_as_orders_trade(
    tmp_path: Path,
) -> None:
    chromium()  # skip or fail before starting anything
    ex = Exchange(tmp_path)
    alice: JsonClient | None = None
    try:
        await ex.start()
        async with aiohttp.ClientSession() as http:
            await eventually_async(lambda: quoted(http, ex), 30, 0.1, "market maker quoting")
            alice = await JsonClient.connect("127.0.0.1", ex.gateway.port)
            await alice.logon(ex.creds["alice"]["api_key"], ex.creds["alice"]["secret"])
            first = fills_of(
                await alice.request("place", market=MARKET, side="buy", type="market", qty="0.0100")
            )
            assert first, "alice's market buy did not trade against the market maker"

            viewport = {"width": 1400, "height": 860}
            async with browser_page(viewport, console_problem) as (page, problems):
                await page.goto(ex.bridge.url(f"/?market={MARKET}"))
                await check_page(page, http, ex, alice, first, problems, tmp_path)
    except BaseException:
        print(ex.logs())
        raise
    finally:
        if alice is not None:
            await alice.close()
        ex.close()


async def check_page(
    page: Any,
    http: aiohttp.ClientSession,
    ex: Exchange,
    alice: JsonClient,
    first: list[dict],
    problems: list[str],
    tmp_path: Path,
) -> None:
    # 0. Served by the bridge it is watch-only: no ticket, a link to the trading dashboard.
    await page.wait_for_function("() => !document.getElementById('trade-at').hidden",
                                 timeout=WAIT_MS)  # fmt: skip
    trade_at = await page.get_attribute("#trade-at", "href")
    assert trade_at == f"http://127.0.0.1:{config.load(ex.config).http_gateway.port}/", trade_at
    assert await page.evaluate("document.body.classList.contains('watch-only')")
    assert not await page.is_visible(".trading")
    # 1. It renders: candles from history, the book from the depth stream, the trades.
    await page.wait_for_function(
        """() => { const d = window.dashboard;
             return d && d.book && d.book.bids.size > 0 && d.book.asks.size > 0
               && d.candles >= 1 && d.trades >= 1
               && document.querySelectorAll('#bids tr.level').length > 0
               && document.querySelectorAll('#asks tr.level').length > 0
               && document.querySelectorAll('#trades tr').length > 0
               && document.getElementById('status').textContent === 'live'
               && document.getElementById('last').textContent !== '-'; }""",
        timeout=WAIT_MS,
    )
    s = await page.evaluate(STATE_JS)
    assert s["market"] == MARKET
    assert s["lastTradeId"] == first[-1]["trade_id"]
    assert s["trades"] == len(s["tradeRows"]) == len(first)
    assert s["tradeRows"][0][:2] == [first[-1]["last_price"], first[-1]["last_qty"]]
    assert s["last"] == first[-1]["last_price"]  # the ticker on subscribe
    assert s["canvases"] > 0 and s["lastBar"] is not None
    assert Decimal(str(s["lastBar"]["close"])) == Decimal(first[-1]["last_price"])
    # The rows show the app's book, best first, 15 levels at most; asks are listed top-down.
    assert [r[:2] for r in s["bidRows"]] == [list(x) for x in s["bids"][:15]]
    assert [r[:2] for r in reversed(s["askRows"])] == [list(x) for x in s["asks"][:15]]
    assert Decimal(s["bids"][0][0]) < Decimal(s["asks"][0][0])
    assert s["spread"].startswith("spread ")

    # 2. The page's book is the bridge's book whenever both are at the same sequence number.
    async def same_book_as_bridge() -> bool:
        _, depth = await http_json(http, ex.bridge.url(f"/api/depth?market={MARKET}&limit=5000"))
        mine = await page.evaluate(STATE_JS)
        # The epoch (engine start, ns) is beyond 2**53: JavaScript holds the nearest double.
        assert (float(mine["epoch"]), mine["seq"]) == (float(depth["epoch"]), depth["last_seq"])
        assert (mine["bids"], mine["asks"]) == (depth["bids"], depth["asks"])
        return True

    await eventually_async(same_book_as_bridge, 30, 0.05, "page book == bridge book")

    # 3. It updates as orders trade.
    before = await page.evaluate(STATE_JS)
    fills = fills_of(
        await alice.request("place", market=MARKET, side="buy", type="market", qty="0.0200")
    )
    fills += fills_of(
        await alice.request("place", market=MARKET, side="sell", type="market", qty="0.0150")
    )
    assert len(fills) >= 2
    last_id = fills[-1]["trade_id"]
    await page.wait_for_function(
        f"() => window.dashboard.lastTradeId >= {last_id}"
        f" && window.dashboard.depthUpdates > {before['depthUpdates']}",
        timeout=WAIT_MS,
    )
    after = await page.evaluate(STATE_JS)
    assert after["trades"] == before["trades"] + len(fills)
    assert len(after["tradeRows"]) == len(before["tradeRows"]) + len(fills)
    newest_first = [[f["last_price"], f["last_qty"]] for f in reversed(fills)]
    assert [r[:2] for r in after["tradeRows"][: len(fills)]] == newest_first
    assert Decimal(str(after["lastBar"]["close"])) == Decimal(fills[-1]["last_price"])
    assert after["candles"] >= before["candles"]
    await eventually_async(same_book_as_bridge, 30, 0.05, "page book == bridge book again")

    shot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    assert shot.stat().st_size > 10_000
    assert problems == [], problems

"""``python -m marketmaker --credentials FILE``: run the market maker against the JSON gateway.

It also reads the engine's market data (a ``feed`` subscriber, trades only) and asks the
engine for book snapshots and recent trades, and the recorder for older ones, so that it
resumes from the market's price.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path

import uvloop

from feed.subscriber import Feed
from gateways.json_tcp.client import JsonClient, JsonError
from marketmaker.bot import MarketMaker, Params
from protocol import config
from protocol.messages import Trade
from protocol.metrics import Exporter

log = logging.getLogger("marketmaker")
CURVE_NAME = "marketmaker"  # the key pair it connects to the engine with, when CURVE is on


async def session(host: str, port: int, creds: dict) -> JsonClient:
    client = await JsonClient.connect(host, port)
    await client.logon(creds["api_key"], creds["secret"])
    return client


async def run(args: argparse.Namespace) -> int:
    ex = config.load(args.config)
    config.use_engine(ex, args.commands, args.market_data)
    creds = json.loads(Path(args.credentials).read_text())  # noqa: ASYNC240 - once, at start
    host, port = ex.json_gateway.host, args.port or ex.json_gateway.port
    rec = ex.recorder
    recorder = f"http://{rec.host}:{rec.port}" if args.recorder is None else args.recorder
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    current: list[MarketMaker] = []

    def on_trades(market: str, trades: list[Trade]) -> None:
        for mm in current:
            mm.observe(market, trades)

    feed = Feed.for_exchange(
        ex, name=CURVE_NAME, kinds=("trades",), tickers=False, on_trades=on_trades
    )
    await feed.start(wait=None)  # the engine may still be starting: the maker waits for it
    metrics = Exporter("marketmaker").add(lambda: _counters(current), what="MarketMaker")
    metrics.add(feed.stats, prefix="feed_")
    metrics.serve(ex.metrics.marketmaker)
    pause = 0.5
    while not stop.is_set():
        try:
            maker = await session(host, port, creds["mm"])
            taker = await session(host, port, creds["noise"]) if "noise" in creds else None
        except (OSError, JsonError) as e:
            log.warning(
                "cannot reach the gateway at %s:%d (%s); retrying in %.1fs", host, port, e, pause
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            pause = min(10.0, pause * 2)
            continue
        pause = 0.5
        mm = MarketMaker(
            ex, maker, taker, Params(interval=args.interval), engine=feed.engine, recorder=recorder
        )
        current[:] = [mm]
        log.info("quoting %s via %s:%d", ", ".join(ex.markets), host, port)
        bot = asyncio.ensure_future(mm.run())
        closed = asyncio.ensure_future(maker.closed.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([bot, closed, stopping], return_when=asyncio.FIRST_COMPLETED)
        bot.cancel()
        closed.cancel()
        stopping.cancel()
        if bot.done() and not bot.cancelled() and bot.exception():
            log.error("market maker stopped: %r; restarting", bot.exception())
        if stop.is_set():
            with contextlib.suppress(Exception):
                await maker.request("cancel_all", timeout=3)
            log.info(
                "cancelled quotes; %d ticks, %d orders sent, %d trades printed",
                mm.ticks,
                mm.orders_sent,
                mm.trades_printed,
            )
        for c in (maker, taker):
            if c is not None:
                await c.close()
    await feed.close()
    metrics.close()
    return 0


def _counters(current: list[MarketMaker]) -> dict[str, int]:
    """The current session's counters (a new session starts them again: a counter reset)."""
    mm = current[0] if current else None
    names = ("ticks", "errors", "orders_sent", "trades_printed")
    return {name: getattr(mm, name, 0) for name in names}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m marketmaker")
    p.add_argument("--config")
    p.add_argument(
        "--credentials",
        required=True,
        help='JSON file: {"mm": {"api_key", "secret"}, "noise": {...}}',
    )
    p.add_argument("--port", type=int, help="the JSON gateway's port (default: the config's)")
    p.add_argument("--commands", help="the engine's command endpoint (default: the config's)")
    p.add_argument("--market-data", help="the engine's market-data endpoint")
    p.add_argument(
        "--recorder",
        help="the recorder's query API, for the last price of a market the engine has forgotten"
        ' after a restart (default: the config\'s [recorder]; "" = none)',
    )
    p.add_argument("--interval", type=float, default=0.5)
    args = p.parse_args()
    config.log_to_stderr()
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

"""``python -m feed``: run the websocket bridge (streams, HTTP market data, dashboard)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import uvloop
from aiohttp import web

from feed.bridge import Bridge
from protocol import config

log = logging.getLogger("feed.bridge")


async def run(args: argparse.Namespace) -> int:
    ex = config.load(args.config)
    if args.port is not None:
        ex.bridge.port = args.port
    config.use_engine(ex, args.commands, args.market_data)
    recorder = args.recorder or f"http://{ex.recorder.host}:{ex.recorder.port}"
    if args.no_recorder:
        recorder = None
    bridge = Bridge(ex, recorder)
    runner = web.AppRunner(bridge.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, ex.bridge.host, ex.bridge.port, backlog=1024)
    await site.start()
    log.info(
        "dashboard http://%s:%d/  websocket ws://%s:%d/ws  metrics http://%s:%d/metrics  "
        "(engine %s, market data %s)",
        ex.bridge.host,
        ex.bridge.port,
        ex.bridge.host,
        ex.bridge.port,
        ex.bridge.host,
        ex.bridge.port,
        ex.engine.commands,
        ex.engine.market_data,
    )
    await bridge.market.start(wait=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: %d websocket clients", len(bridge.clients))
    await bridge.market.close()
    await runner.cleanup()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m feed")
    p.add_argument("--config")
    p.add_argument("--port", type=int)
    p.add_argument("--commands", help="engine ROUTER endpoint (for book snapshots)")
    p.add_argument("--market-data", help="engine PUB endpoint")
    p.add_argument(
        "--recorder",
        help="the recorder's query API, http://HOST:PORT (default: from [recorder] in the config)",
    )
    p.add_argument(
        "--no-recorder",
        action="store_true",
        help="seed the 24h ticker and candles from the engine only, and serve kline history "
        "from the bridge's own candles",
    )
    args = p.parse_args()
    config.log_to_stderr()
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

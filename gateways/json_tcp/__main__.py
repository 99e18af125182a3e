"""``python -m gateways.json_tcp``: run the JSON-over-TCP gateway."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import uvloop

from gateways.accounts import AccountStore
from gateways.json_tcp.server import Gateway
from gateways.tls import TlsError, server_context
from protocol import config
from protocol.metrics import Exporter

log = logging.getLogger("gateways.json")


async def run(args: argparse.Namespace) -> int:
    ex = config.load(args.config)
    if args.port is not None:
        ex.json_gateway.port = args.port
    config.use_engine(ex, args.commands)
    if args.accounts:
        ex.accounts.path = args.accounts
    if args.identity:
        ex.json_gateway.identity = args.identity
    try:
        tls = server_context(ex.json_gateway.tls_cert, ex.json_gateway.tls_key)
    except TlsError as e:
        log.error("refusing to start: %s", e)
        return 2
    store = AccountStore(ex.accounts.path)
    gw = Gateway(ex, store, tls)
    await gw.start()
    metrics = Exporter("json_gateway").add(gw.metrics, gauges=("connections",))
    metrics.add(lambda: {"engine_available": gw.engine.available}, what="EngineClient")
    metrics.serve(ex.metrics.json_gateway)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ticker = asyncio.ensure_future(_report(gw))
    await stop.wait()
    ticker.cancel()
    log.info("stopping: closing %d sessions", len(gw.sessions))
    await gw.stop()
    metrics.close()
    store.close()
    log.info("JSON gateway stopped")
    return 0


async def _report(gw: Gateway) -> None:
    last = 0
    while True:
        await asyncio.sleep(30)
        m = gw.metrics
        if m.requests != last:
            log.info(
                "connections %d, requests %d, errors %d, rate limited %d, events %d",
                m.connections,
                m.requests,
                m.errors,
                m.rate_limited,
                m.events_out,
            )
            last = m.requests


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m gateways.json_tcp")
    parser.add_argument("--config")
    parser.add_argument("--port", type=int)
    parser.add_argument("--commands", help="engine ROUTER endpoint")
    parser.add_argument("--accounts", help="account store path")
    parser.add_argument("--identity", help="routing id towards the engine")
    args = parser.parse_args()
    config.log_to_stderr()
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

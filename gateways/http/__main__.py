"""``python -m gateways.http``: run the REST gateway (``/api/v1``, Binance ``/api/v3``), its
Binance-style websocket streams and the private stream (``/api/v1/stream``) on their port;
``python -m gateways.http openapi`` prints the OpenAPI document.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

import msgspec
import uvloop

from gateways.accounts import AccountStore
from gateways.http.app import Gateway
from gateways.http.private import PrivateStream
from gateways.tls import TlsError, server_context
from gateways.vault import Vault, VaultError
from protocol import config
from protocol.metrics import Exporter

log = logging.getLogger("gateways.http")


def configure(args: argparse.Namespace) -> config.Exchange:
    ex = config.load(args.config)
    cfg = ex.http_gateway
    if args.port is not None:
        cfg.port = args.port
    if args.ws_port is not None:
        cfg.ws_port = args.ws_port
    config.use_engine(ex, args.commands, args.market_data)
    if args.accounts:
        ex.accounts.path = args.accounts
    if args.vault:
        ex.accounts.vault_key = args.vault
    if args.identity:
        cfg.identity = args.identity
    if args.signup_funds is not None:
        ex.web.signup_funds = parse_funds(ex, args.signup_funds)
    return ex


def parse_funds(ex: config.Exchange, text: str) -> dict[str, str]:
    """``USD=10000,BTC=1`` -> {"USD": "10000", "BTC": "1"} (each amount checked now)."""
    funds = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        asset, _, amount = part.partition("=")
        if asset not in ex.assets:
            raise SystemExit(f"--signup-funds: unknown asset {asset!r}")
        ex.amount_to_units(asset, amount)  # refuses a bad amount at start, not at sign-up
        funds[asset] = amount
    return funds


def market_data(ex: config.Exchange, recorder: str | None) -> tuple[Any, Any]:
    """The in-process market data (books, trades, tickers, klines) and the Binance streams
    server over it (feed/market.py, gateways/http/streams.py)."""
    from feed.market import MarketData
    from gateways.http.streams import BinanceStreams

    market = MarketData(ex, recorder_url=recorder, name=ex.http_gateway.identity)
    return market, BinanceStreams(ex, market)


async def run(args: argparse.Namespace) -> int:
    ex = configure(args)
    cfg = ex.http_gateway
    try:
        tls = server_context(cfg.tls_cert, cfg.tls_key)
        vault = Vault.load(ex.accounts.vault_key)
    except (TlsError, VaultError) as e:
        log.error("refusing to start: %s", e)
        return 2
    store = AccountStore(ex.accounts.path)
    recorder = args.recorder or f"http://{ex.recorder.host}:{ex.recorder.port}"
    market, streams = market_data(ex, None if args.no_recorder else recorder)
    gw = Gateway(ex, store, vault, market)
    gw.streams = streams
    private = PrivateStream(gw, streams.limits.max_connections, streams.limits.send_queue)
    streams.routes.append(private.route())
    await market.start(wait=None)
    await gw.start(tls)
    await streams.start()
    log.info("private stream on ws://%s:%d/api/v1/stream", cfg.host, streams.port)
    metrics = Exporter("http_gateway").add(gw.http.metrics, gauges=("connections",))
    metrics.add(gw.metrics, prefix="api_")
    metrics.add(streams.metrics, prefix="ws_", gauges=("connections", "subscriptions"))
    metrics.add(private.metrics, prefix="private_ws_", gauges=("connections",))
    metrics.add(lambda: {"engine_available": gw.engine.available}, what="EngineClient")
    metrics.serve(ex.metrics.http_gateway)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: %d connections", len(gw.http.conns))
    await private.stop()
    await streams.stop()
    await gw.stop()
    await market.close()
    metrics.close()
    store.close()
    log.info("HTTP gateway stopped")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gateways.http")
    p.add_argument("command", nargs="?", choices=["serve", "openapi"], default="serve")
    p.add_argument("--config")
    p.add_argument("--port", type=int)
    p.add_argument("--ws-port", type=int)
    p.add_argument("--commands", help="engine ROUTER endpoint")
    p.add_argument("--market-data", help="engine PUB endpoint")
    p.add_argument("--accounts", help="account store path")
    p.add_argument("--vault", help="vault key file (gateways/vault.py)")
    p.add_argument("--identity", help="routing id towards the engine")
    p.add_argument(
        "--signup-funds", metavar="ASSET=AMOUNT,..", help="credit each new web account with "
        "these (demo stacks; overrides [web] signup_funds)",
    )  # fmt: skip
    p.add_argument(
        "--recorder",
        help="the recorder's query API, http://HOST:PORT (default: [recorder] in the config)",
    )
    p.add_argument(
        "--no-recorder", action="store_true", help="no recorder: history and klines come only "
        "from the engine's recent trades",
    )  # fmt: skip
    return p


def main() -> int:
    args = parser().parse_args()
    if args.command == "openapi":
        from gateways.http.openapi import document

        ex = configure(args)
        gw = Gateway(ex, AccountStore(":memory:"), None)
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(document(gw))).decode() + "\n")
        return 0
    config.log_to_stderr()
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

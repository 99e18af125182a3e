"""The recorder and its CLI.

    python -m recorder                                   # run it (embedded chDB by default)
    python -m recorder klines BTC-USD 1m --since 2026-11-22T10:00 [--until ...] [--limit 100]
    python -m recorder sql "SELECT market, count() FROM trades GROUP BY market"

With embedded chDB the database lives inside the running recorder, so the CLI asks it over
HTTP; with a ClickHouse server (``[recorder] clickhouse`` or CLICKHOUSE_URL) it may also query
the server directly (``--direct``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from functools import partial
from typing import Any

import uvloop
from aiohttp import web

from gateways.accounts import AccountStore
from protocol import config
from recorder.service import Recorder
from recorder.store import Store

log = logging.getLogger("recorder")


def clickhouse_url(ex: config.Exchange) -> str:
    return os.environ.get("CLICKHOUSE_URL") or ex.recorder.clickhouse


def account_rows(path: str) -> list[tuple[int, str, str]]:
    if not os.path.exists(path):
        return []
    store = AccountStore(path)
    try:
        return [(a, name, _class_of(name)) for a, name in store.accounts()]
    finally:
        store.close()


def _class_of(name: str) -> str:
    return {"mm": "market_maker", "noise": "liquidity_taker"}.get(name, "client")


async def serve(args: argparse.Namespace, ex: config.Exchange) -> int:
    url = clickhouse_url(ex)
    if url.startswith("chdb://") and not url.startswith("chdb:///"):
        os.makedirs(url[len("chdb://") :], exist_ok=True)
    pause = 0.5
    while True:
        try:
            path = args.accounts or ex.accounts.path
            rec = Recorder(ex, Store(url), account_rows(path), partial(account_rows, path))
            rec.prepare()
            break
        except Exception as e:
            log.warning("ClickHouse %s not ready (%s); retrying in %.1fs", url, e, pause)
            await asyncio.sleep(pause)
            pause = min(10.0, pause * 2)
    runner = web.AppRunner(rec.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, ex.recorder.host, ex.recorder.port).start()
    log.info(
        "recorder: ClickHouse %s; query API http://%s:%d/ (klines, sql; /metrics, /stats)",
        url,
        ex.recorder.host,
        ex.recorder.port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(rec.run())
    await stop.wait()
    log.info("stopping: writing what is buffered")
    task.cancel()
    await rec.stop()
    await runner.cleanup()
    rec.store.close()
    log.info("recorder stopped (%d trades written)", rec.metrics.trades_written)
    return 0


def _when(text: str | None, default: int) -> int:
    if text is None:
        return default
    if text.isdigit():
        return int(text)
    try:
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())
    except ValueError:
        raise SystemExit(
            f"error: {text!r} is not a time: give seconds since the epoch or "
            "an ISO date-time such as 2026-11-22T10:00 (UTC)"
        ) from None


def _get(ex: config.Exchange, path: str, data: bytes | None = None) -> Any:
    url = f"http://{ex.recorder.host}:{ex.recorder.port}{path}"
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - our own loopback API
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"error: {json.loads(e.read()).get('error')}") from None
    except urllib.error.URLError as e:
        raise SystemExit(f"error: the recorder is not running at {url} ({e.reason})") from None


def cli(args: argparse.Namespace, ex: config.Exchange) -> int:
    direct = args.direct and not clickhouse_url(ex).startswith("chdb://")
    if args.cmd == "klines":
        start, end = _when(args.since, 0), _when(args.until, 2**40)
        if direct:
            rows = [
                vars(c)
                for c in Store(clickhouse_url(ex)).klines(
                    args.market, args.interval, start, end, args.limit
                )
            ]
        else:
            q = urllib.parse.urlencode(
                {
                    "market": args.market,
                    "interval": args.interval,
                    "start": start,
                    "end": end,
                    "limit": args.limit,
                }
            )
            rows = _get(ex, f"/klines?{q}")
        spec = ex.markets[args.market]
        print(
            f"{'open time (UTC)':20} {'open':>14} {'high':>14} {'low':>14} {'close':>14} "
            f"{'volume':>14} {'trades':>7}"
        )
        for c in rows:
            t = datetime.fromtimestamp(c["open_time"], UTC).strftime("%Y-%m-%d %H:%M")
            print(
                f"{t:20} {spec.price_text(c['open']):>14} {spec.price_text(c['high']):>14} "
                f"{spec.price_text(c['low']):>14} {spec.price_text(c['close']):>14} "
                f"{spec.qty_text(c['volume']):>14} {c['trades']:>7}"
            )
        return 0
    if direct:
        cols, data = Store(clickhouse_url(ex)).sql(args.query)
        result: dict[str, Any] = {"columns": cols, "rows": data}
    else:
        result = _get(ex, "/sql", args.query.encode())
    print("\t".join(result["columns"]))
    for row in result["rows"]:
        print("\t".join(str(v) for v in row))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m recorder", description=__doc__.split("\n")[0])
    p.add_argument("--config")
    p.add_argument("--accounts", help="account store (for the accounts table)")
    p.add_argument("--clickhouse", help="chdb://DIR or a server URL (overrides the config)")
    p.add_argument("--direct", action="store_true", help="query a ClickHouse server directly")
    sub = p.add_subparsers(dest="cmd")
    k = sub.add_parser("klines")
    k.add_argument("market")
    k.add_argument("interval")
    k.add_argument("--since")
    k.add_argument("--until")
    k.add_argument("--limit", type=int, default=100)
    sub.add_parser("sql").add_argument("query")
    args = p.parse_args()
    config.log_to_stderr()
    ex = config.load(args.config)
    if args.clickhouse:
        ex.recorder.clickhouse = args.clickhouse
    if args.cmd == "klines" and args.market not in ex.markets:
        print(
            f"error: unknown market {args.market!r}; markets: {', '.join(ex.markets)}",
            file=sys.stderr,
        )
        return 2
    if args.cmd:
        return cli(args, ex)
    return uvloop.run(serve(args, ex))


if __name__ == "__main__":
    sys.exit(main())

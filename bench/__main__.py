"""Benchmarks: ``python -m bench engine [--quick]`` (bench/engine_bench.py),
``python -m bench json [--quick]`` (bench/json_bench.py),
``python -m bench http [--quick]`` (bench/http_bench.py),
``python -m bench ws [--quick]`` (bench/ws_bench.py),
``python -m bench fix [--quick]`` (bench/fix_bench.py) and
``python -m bench recorder [--quick]`` (bench/recorder_bench.py)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    from bench import engine_bench, fix_bench, http_bench, json_bench, recorder_bench, ws_bench

    engine = sub.add_parser(
        "engine",
        help="engine core, ZeroMQ round trip and throughput, journal recovery",
        description=(engine_bench.__doc__ or "").split("\n")[0],
    )
    engine_bench.add_arguments(engine)
    gateway = sub.add_parser(
        "json",
        help="orders/s and order->ack latency through one JSON gateway process",
        description=(json_bench.__doc__ or "").split("\n")[0],
    )
    json_bench.add_arguments(gateway)
    http = sub.add_parser(
        "http",
        help="orders/s and order->response latency through one HTTP gateway (/api/v1, /api/v3)",
        description=(http_bench.__doc__ or "").split("\n")[0],
    )
    http_bench.add_arguments(http)
    recorder = sub.add_parser(
        "recorder",
        help="trades/s into embedded ClickHouse, trade->row lag, kline query time",
        description=(recorder_bench.__doc__ or "").split("\n")[0],
    )
    recorder_bench.add_arguments(recorder)
    websocket = sub.add_parser(
        "ws",
        help="trade -> websocket client latency at 1,000 clients; messages/s out of one bridge",
        description=(ws_bench.__doc__ or "").split("\n")[0],
    )
    ws_bench.add_arguments(websocket)
    fix = sub.add_parser(
        "fix",
        help="orders/s and order->ExecutionReport latency through one FIX gateway session",
        description=(fix_bench.__doc__ or "").split("\n")[0],
    )
    fix_bench.add_arguments(fix)
    args = parser.parse_args(argv)
    if args.bench == "engine":
        return engine_bench.run(args)
    if args.bench == "json":
        return json_bench.run(args)
    if args.bench == "http":
        return http_bench.run(args)
    if args.bench == "recorder":
        return recorder_bench.run(args)
    if args.bench == "fix":
        return fix_bench.run(args)
    if args.bench == "ws":
        return ws_bench.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

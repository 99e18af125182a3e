"""Benchmarks: ``python -m bench engine [--quick]`` (bench/engine_bench.py) and
``python -m bench json [--quick]`` (bench/json_bench.py)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    from bench import engine_bench, json_bench

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
    args = parser.parse_args(argv)
    if args.bench == "engine":
        return engine_bench.run(args)
    if args.bench == "json":
        return json_bench.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks: ``python -m bench engine [--quick]`` (see bench/engine_bench.py)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    from bench import engine_bench

    engine = sub.add_parser(
        "engine",
        help="engine core, ZeroMQ round trip and throughput, journal recovery",
        description=(engine_bench.__doc__ or "").split("\n")[0],
    )
    engine_bench.add_arguments(engine)
    args = parser.parse_args(argv)
    if args.bench == "engine":
        return engine_bench.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""One engine-core run for ``python -m bench engine``, in whichever engine build this process
runs (``EXCHANGE_ENGINE_BUILD``): the parent runs the other build and alternates with this one.

``python -m bench.core_child WARMUP COMMANDS SEED ACCOUNTS MAX_OPEN CPU`` prints
``{"build": ..., "rate": commands/s}``.
"""

from __future__ import annotations

import json
import sys

from bench.engine_bench import CoreStream, core_run, pinned
from engine import build
from protocol import config


def main(argv: list[str]) -> None:
    warmup, commands, seed, accounts, max_open, cpu = map(int, argv)
    ex = config.load()
    stream = CoreStream(ex, warmup, commands, seed, accounts, max_open)
    with pinned(cpu):
        rate, _ = core_run(ex, stream)
    print(json.dumps({"build": build(), "rate": rate}))


if __name__ == "__main__":
    main(sys.argv[1:])

"""``python -m bench.tree_compare OTHER_TREE``: the core benchmark's streams on this tree's engine
and on another checkout's (a worktree of an older commit, say), to tell whether a change slowed
the engine down.

Each run is one child, ``python -m bench.core_child`` of the tree it measures (cwd and
``PYTHONPATH`` at that tree, so it imports that tree's engine, protocol and workload), pinned to
the same core; the two trees alternate inside every round, the one that goes first alternating
too (ABBA), for the growing stream and the capped one. Before any run a probe in exactly the
child's environment says which files ``engine.core`` and ``bench.core_child`` come from and
which build runs: the comparison refuses to start if a tree would import another tree's code,
or the two would run different builds. Prints every run with the load other processes put on
the machine meanwhile, the medians and this/other per stream. With ``--instructions``, instead
of timing, instructions per command under callgrind (a pass that applies the measured commands
minus one that does not), which other processes' load does not move.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.procs import REPO, LoadMeter

PROBE = (
    "import json, engine, engine.core as core, bench.core_child as child, protocol.messages as m; "
    "print(json.dumps({'engine': core.__file__, 'child': child.__file__, "
    "'protocol': m.__file__, 'build': engine.build()}))"
)


# One core pass without a timer, for callgrind: the stream generated and warmed up, then the
# measured part applied only if asked; the difference of the two runs' instruction totals is
# the engine's own cost of those commands (the same generator runs in both). Uses only what
# bench.engine_bench has had since before stop orders, so it runs in an older tree too.
PASS = """
import sys
from bench.engine_bench import CoreStream, _drive, _engine_drain, fresh_engine
from protocol import config
warmup, n, seed, accounts, max_open, apply = map(int, sys.argv[1:])
ex = config.load()
stream = CoreStream(ex, warmup, n, seed, accounts, max_open)
engine, ts = fresh_engine(ex, stream)
if apply:
    _drive(engine.apply, _engine_drain(engine), stream.measured, ts, engine.handlers)
"""


def child_env(tree: Path, build: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EXCHANGE_CONFIG")}
    env["PYTHONPATH"] = str(tree)
    if build:
        env["EXCHANGE_ENGINE_BUILD"] = build
    return env


def probe(python: str, tree: Path, build: str) -> dict[str, str]:
    """Where a child in ``tree`` imports the engine from, and which build it runs."""
    out = subprocess.run(
        [python, "-c", PROBE], cwd=tree, env=child_env(tree, build),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    got: dict[str, str] = json.loads(out)
    for key in ("engine", "child", "protocol"):
        if not Path(got[key]).resolve().is_relative_to(tree):
            raise RuntimeError(f"a child in {tree} imports {key} from {got[key]}, not from it")
    return got


def one_run(python: str, tree: Path, build: str, args: argparse.Namespace, max_open: int) -> float:
    argv = [
        python, "-m", "bench.core_child", str(args.warmup), str(args.commands), str(args.seed),
        str(args.accounts), str(max_open), str(args.cpu),
    ]  # fmt: skip
    out = subprocess.run(
        argv, cwd=tree, env=child_env(tree, build), capture_output=True, text=True, check=True
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["rate"])


def instructions(
    python: str, tree: Path, build: str, args: argparse.Namespace, max_open: int, out: Path
) -> float:
    """Instructions per measured command (callgrind: a pass that applies them minus one that
    only generates and warms up)."""
    totals = []
    for apply in (0, 1):
        dump = out / f"{tree.name}-{max_open}-{apply}.callgrind"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", python, "-c", PASS,
             str(args.warmup), str(args.commands), str(args.seed), str(args.accounts),
             str(max_open), str(apply)],
            cwd=tree, env=child_env(tree, build), capture_output=True, text=True, check=True,
        )  # fmt: skip
        summary = [ln for ln in dump.read_text().splitlines() if ln.startswith("summary:")]
        totals.append(int(summary[0].split()[1]))
    return (totals[1] - totals[0]) / args.commands


def count_instructions(args: argparse.Namespace, trees: dict[str, Path]) -> dict[str, Any]:
    out = Path(args.callgrind_dir)
    out.mkdir(parents=True, exist_ok=True)
    streams = {"growing": 0, "capped": args.max_open}
    res: dict[str, Any] = {}
    for stream in args.streams:
        got = {
            name: instructions(args.python, tree, args.build, args, streams[stream], out)
            for name, tree in trees.items()
        }
        got["ratio"] = got["this"] / got["other"]
        res[stream] = got
        print(
            f"{stream:<7} this {got['this']:,.0f}  other {got['other']:,.0f} instructions per "
            f"command (callgrind, {args.commands:,} after {args.warmup:,}): this/other "
            f"{got['ratio']:.3f}; the dumps are in {out}",
            flush=True,
        )
    return res


def compare(args: argparse.Namespace) -> dict[str, Any]:
    trees = {"this": REPO.resolve(), "other": Path(args.other).resolve()}
    found = {name: probe(args.python, tree, args.build) for name, tree in trees.items()}
    for name, got in found.items():
        print(f"{name:<5} {trees[name]}: engine.core from {got['engine']} ({got['build']})")
    if found["this"]["build"] != found["other"]["build"]:
        raise RuntimeError("the two trees would run different engine builds")
    streams = {"growing": 0, "capped": args.max_open}
    res: dict[str, Any] = {
        "trees": {k: str(v) for k, v in trees.items()},
        "probe": found,
        "args": vars(args),
    }
    if args.instructions:
        res["instructions"] = count_instructions(args, trees)
        return res
    for stream in args.streams:
        res[stream] = {"this": [], "other": [], "foreign_cores": []}
    for i in range(args.rounds):
        order = ("this", "other") if i % 2 == 0 else ("other", "this")
        for stream in args.streams:
            for name in order:
                meter = LoadMeter()
                rate = one_run(args.python, trees[name], args.build, args, streams[stream])
                noise = meter.foreign_cores()
                res[stream][name].append(rate)
                res[stream]["foreign_cores"].append(noise)
                print(
                    f"round {i + 1}/{args.rounds}  {stream:<7} {name:<5} {rate:>9,.0f} cmds/s"
                    f"   other load {noise:.2f} cores",
                    flush=True,
                )
    for stream in args.streams:
        r = res[stream]
        r["this_median"] = statistics.median(r["this"])
        r["other_median"] = statistics.median(r["other"])
        r["ratio"] = r["this_median"] / r["other_median"]
        r["run_ratios"] = [a / b for a, b in zip(r["this"], r["other"], strict=True)]
        print(
            f"{stream:<7} this {r['this_median']:>9,.0f}  other {r['other_median']:>9,.0f} "
            f"cmds/s (medians of {args.rounds}): this/other {r['ratio']:.3f} "
            f"(per round {', '.join(f'{x:.2f}' for x in r['run_ratios'])}); other load "
            f"{min(r['foreign_cores']):.2f}-{max(r['foreign_cores']):.2f} cores"
        )
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tree_compare", description=__doc__)
    p.add_argument("other", help="the other checkout (its engine kernel built in place)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=50_000)
    p.add_argument("--commands", type=int, default=500_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--accounts", type=int, default=50)
    p.add_argument("--max-open", type=int, default=2_000, help="open-order cap of 'capped'")
    p.add_argument("--cpu", type=int, default=1, help="the core every child is pinned to")
    p.add_argument(
        "--build",
        default="compiled",
        choices=("compiled", "interpreted", ""),
        help="EXCHANGE_ENGINE_BUILD for both trees ('' lets each choose)",
    )
    p.add_argument("--python", default=sys.executable, help="the interpreter of both trees")
    p.add_argument(
        "--streams",
        type=lambda v: [s for s in v.split(",") if s],
        default=["growing", "capped"],
        help="comma list: growing, capped",
    )
    p.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per command with callgrind instead of timing (immune to the "
        "load of other processes; try --warmup 20000 --commands 100000)",
    )
    p.add_argument("--callgrind-dir", default="/tmp/tree_compare", help="where the dumps go")
    p.add_argument("--json", help="also write the results as JSON to this file")
    args = p.parse_args(argv)
    args.python = os.path.abspath(args.python)  # the children run elsewhere; a venv's symlink
    res = compare(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

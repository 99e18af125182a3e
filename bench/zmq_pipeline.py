"""A pipelined raw client for the engine's sustained rate through ZeroMQ (``bench engine``).

The EngineClient saturation run (bench/zmq_client.py) is bound by the client: a future, a
callback and the order-flow model per order keep one core at 100% while the engine idles at
about 60%. This client takes the client out of the way so the figure is the engine's. It runs
against a fresh engine and does nothing per order beyond what the wire needs:

- the commands are the seeded mixed workload (bench/workload.mixed: 60% resting limits, 25%
  cancels, 15% marketable IOCs) with at most ``max_open`` orders open, as the EngineClient run
  keeps them (bench/workload.ZmqMix), generated and encoded into frames of ``chunk`` commands
  before the clock starts; the workload predicts order ids, which a fresh engine numbers from
  1 in acceptance order (funding deposits first, which take no ids);
- a blocking DEALER keeps at most ``window`` commands in flight and counts replies: every
  command gets exactly one (``req`` != 0), fills of resting orders come as extra unsolicited
  reports (``req`` 0) and are not counted.

It prints one JSON object: replies per second over the run after ``warmup`` commands, the
per-second counts, and the CPU use of both processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import msgspec
import zmq

from bench.workload import funding, mixed
from bench.zmq_client import Usage
from protocol import config
from protocol.messages import Cancel, NewOrder


def answered(payload: bytes) -> int:
    """How many commands a reply frame answers (tagged arrays: index 1 is ``req``)."""
    return sum(1 for m in msgspec.msgpack.decode(payload) if m[1])


def run(args: argparse.Namespace) -> dict:
    ex = config.load(args.config)
    enc = msgspec.msgpack.Encoder()
    deposits = funding(ex, args.accounts)
    n = args.warmup + args.commands
    cmds = list(mixed(ex, n, seed=args.seed, accounts=args.accounts, max_open=args.max_open))
    frames = [
        (enc.encode(cmds[i : i + args.chunk]), len(cmds[i : i + args.chunk]))
        for i in range(0, len(cmds), args.chunk)
    ]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 30_000)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(args.endpoint)
    try:
        sock.send(enc.encode(deposits))
        got = 0
        while got < len(deposits):
            got += answered(sock.recv())
        pc = time.perf_counter
        inflight = done = sent = 0
        i = 0
        measured_from = args.warmup
        t0 = usage = None
        per_second: list[int] = []
        last_done = 0
        next_tick = 0.0
        while done < len(cmds):
            while i < len(frames) and inflight + frames[i][1] <= args.window:
                sock.send(frames[i][0], copy=False)
                inflight += frames[i][1]
                sent += frames[i][1]
                i += 1
            k = answered(sock.recv())
            done += k
            inflight -= k
            if t0 is None and done >= measured_from:
                t0, usage = pc(), Usage(args.engine_pid)
                measured_from, last_done, next_tick = done, done, t0 + 1.0
            elif t0 is not None and pc() >= next_tick:
                per_second.append(done - last_done)
                last_done = done
                next_tick += 1.0
        assert t0 is not None and usage is not None
        seconds = pc() - t0
        measured = cmds[args.warmup :]
        return {
            "commands": args.commands,
            "mix": {
                "cancel": sum(1 for c in measured if type(c) is Cancel),
                "new_gtc": sum(1 for c in measured if type(c) is NewOrder and c.tif == 1),
                "new_ioc": sum(1 for c in measured if type(c) is NewOrder and c.tif != 1),
            },
            "window": args.window,
            "chunk": args.chunk,
            "seconds": seconds,
            "orders_per_s": (done - measured_from) / seconds,
            "per_second": per_second,
            "cpu": usage.result(),
        }
    finally:
        sock.close(0)
        ctx.term()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.zmq_pipeline", description=__doc__)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--config")
    p.add_argument("--cpu", type=int, default=0)
    p.add_argument("--engine-pid", type=int, default=0)
    p.add_argument("--commands", type=int, default=600_000, help="measured commands")
    p.add_argument("--warmup", type=int, default=100_000, help="commands before the clock")
    p.add_argument("--window", type=int, default=5_000)
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--accounts", type=int, default=100)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--max-open", type=int, default=2_000, help="0: the book grows unbounded")
    args = p.parse_args(argv)
    if args.cpu >= 0 and args.cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {args.cpu})
    sys.stdout.write(json.dumps(run(args)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The transport floor under ``python -m bench engine``'s ZeroMQ figures.

A bare pyzmq ROUTER that sends every frame straight back (``serve``, run as its own process:
``python -m bench.zmq_echo --endpoint tcp://... --cpu N``), and a blocking DEALER that sends
one small frame every ``1/rate`` seconds and times each echo (``measure``). Nothing else runs
on either side: no event loop, no decoding, no engine. What it measures is what this machine's
loopback, libzmq and its I/O threads cost per round trip, so the engine's own round trip can be
read against it (measured in the same run, on the same cores).
"""

from __future__ import annotations

import argparse
import os
import time

import zmq

STOP = b"stop"


def serve(endpoint: str, cpu: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})  # the main thread only, as the engine pins itself
    print("echo ready", flush=True)
    while True:
        frame = sock.recv_multipart()
        if frame[-1] == STOP:
            break
        sock.send_multipart(frame)
    sock.close(0)
    ctx.term()


def measure(endpoint: str, payload: bytes, rate: int, count: int, warmup: int = 1_000) -> list[int]:
    """Round trips in ns of ``count`` echoes sent at ``rate`` per second (busy-wait pacing)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5_000)
    sock.connect(endpoint)
    pc = time.perf_counter_ns
    gap = 1_000_000_000 // rate
    samples: list[int] = []
    try:
        due = pc()
        for i in range(warmup + count):
            while pc() < due:
                pass
            t0 = pc()
            sock.send(payload)
            sock.recv()
            if i >= warmup:
                samples.append(pc() - t0)
            due += gap
        sock.send(STOP)
    finally:
        sock.close(0)
        ctx.term()
    return samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.zmq_echo", description=__doc__)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--cpu", type=int, default=-1)
    args = p.parse_args(argv)
    serve(args.endpoint, args.cpu)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The load-generating client process of ``python -m bench engine`` (phase 2, through ZeroMQ).

Run by the benchmark as ``python -m bench.zmq_client --endpoint tcp://... --cpu 0 ...``; it
pins itself, connects one ``EngineClient`` (uvloop), funds its accounts with deposits, then:

(a) fixed rate: sends orders at ``--rate`` per second for ``--seconds``, paced by the loop clock
    (a busy loop that yields to the event loop every turn, so replies are read as they come);
    each order's send time is taken just before ``send()`` and its reply time in the future's
    done-callback. Latency is also reported from each order's *scheduled* time, which includes
    any time the client fell behind (no coordinated omission).
(b) saturation: keeps ``--window`` orders in flight for ``--sat-seconds`` and counts replies.

The order mix (``bench.workload.ZmqMix``) is resting limit orders behind the touch, cancels of
this client's own resting orders (known from the replies) and a few marketable IOC orders, so
the books stay bounded. It prints one JSON object (the results) as the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import time
from functools import partial
from typing import Any

import uvloop

from bench.procs import cpu_seconds, percentiles
from bench.workload import ZmqMix, funding
from engine.client import EngineClient
from protocol import config
from protocol.messages import Executions, Rejected


class Usage:
    """CPU use of this client and of the engine process over a phase, as % of one core."""

    def __init__(self, engine_pid: int) -> None:
        self.engine_pid = engine_pid
        self.t0 = time.perf_counter()
        self.me0 = cpu_seconds(os.getpid())
        self.eng0 = cpu_seconds(engine_pid) if engine_pid else 0.0

    def result(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        out = {"client_cpu_pct": 100 * (cpu_seconds(os.getpid()) - self.me0) / wall}
        if self.engine_pid:
            out["engine_cpu_pct"] = 100 * (cpu_seconds(self.engine_pid) - self.eng0) / wall
        return out


class Runner:
    def __init__(self, client: EngineClient, mix: ZmqMix, engine_pid: int = 0) -> None:
        self.engine_pid = engine_pid
        self.client = client
        self.mix = mix
        self.rejected = 0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}

    def _on_reply(self, cmd: Any, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.errors += 1
            what = "cancelled" if fut.cancelled() else repr(fut.exception())
            self.error_kinds[what] = self.error_kinds.get(what, 0) + 1
            return
        msg = fut.result()
        if type(msg) is Executions:
            self.mix.on_reply(cmd, msg)
        elif type(msg) is Rejected:
            self.rejected += 1

    async def fixed_rate(self, rate: int, seconds: float, pacing: str) -> dict[str, Any]:
        """Offer ``rate`` orders/s for ``seconds``; latency from send() to the reply.

        Every loop turn sends the orders that are due by the clock. ``pacing="tick"`` then
        sleeps one timer tick (uvloop timers have 1 ms resolution, so ~10 orders leave per
        frame at 10k/s); ``"busy"`` yields with ``sleep(0)``, one order per frame, at the cost
        of a spinning core that the client's ZeroMQ I/O thread has to share.
        """
        total = max(1, int(rate * seconds))
        interval = 1e9 / rate
        sent_at = [0] * total
        done_at = [0] * total
        pc = time.perf_counter_ns
        send = self.client.send
        nxt = self.mix.next
        on_reply = self._on_reply
        futs = []
        pause = 0.001 if pacing == "tick" else 0.0
        frames = 0

        def done(i: int, cmd: Any, f: asyncio.Future) -> None:
            done_at[i] = pc()
            on_reply(cmd, f)

        usage = Usage(self.engine_pid)
        start = pc()
        i = 0
        while i < total:
            due = min(total, int((pc() - start) / interval) + 1)
            if i < due:
                frames += 1
            while i < due:
                cmd = nxt()
                sent_at[i] = pc()
                fut = send(cmd)
                fut.add_done_callback(partial(done, i, cmd))
                futs.append(fut)
                i += 1
            await asyncio.sleep(pause)
        send_end = pc()
        cpu = usage.result()
        await asyncio.wait(futs, timeout=30)
        lat = [d - s for s, d in zip(sent_at, done_at, strict=True) if d]
        sched = [d - (start + int(k * interval)) for k, d in enumerate(done_at) if d]
        return {
            "offered_rate": rate,
            "pacing": pacing,
            "orders": total,
            "frames": frames,
            "answered": len(lat),
            "achieved_send_rate": total / ((send_end - start) / 1e9),
            "latency": percentiles(lat),
            "latency_from_schedule": percentiles(sched),
            "cpu": cpu,
        }

    async def saturate(
        self, window: int, chunk: int, seconds: float, warmup: float
    ) -> dict[str, Any]:
        """Keep up to ``window`` orders in flight; sustained replies/s over ``seconds``.

        Orders leave in frames of ``chunk`` commands (one per loop turn), so the engine works on
        one part of the window while the client encodes the next and decodes replies; the loop
        sleeps until a chunk's worth of room is free instead of spinning.
        """
        pc = time.perf_counter_ns
        send = self.client.send
        nxt = self.mix.next
        on_reply = self._on_reply
        chunk = max(1, min(chunk, window))
        room = asyncio.Event()
        state = {"inflight": 0, "done": 0, "measuring": False}
        lat: list[int] = []
        per_second: list[int] = []

        def done(t0: int, cmd: Any, f: asyncio.Future) -> None:
            state["inflight"] -= 1
            state["done"] += 1
            if state["measuring"]:
                lat.append(pc() - t0)
            if window - state["inflight"] >= chunk:
                room.set()
            on_reply(cmd, f)

        futs: list[asyncio.Future] = []
        begin = pc()
        t_measure = begin + int(warmup * 1e9)
        t_end = t_measure + int(seconds * 1e9)
        done_at_start = last_done = 0
        usage = Usage(self.engine_pid)
        next_tick = t_measure + 1_000_000_000
        sent = 0
        while True:
            now = pc()
            if not state["measuring"] and now >= t_measure:
                usage = Usage(self.engine_pid)
                state["measuring"] = True
                done_at_start = last_done = state["done"]
            elif state["measuring"] and now >= next_tick:
                per_second.append(state["done"] - last_done)
                last_done = state["done"]
                next_tick += 1_000_000_000
            if now >= t_end:
                break
            if window - state["inflight"] >= chunk:
                for _ in range(chunk):
                    cmd = nxt()
                    fut = send(cmd)
                    fut.add_done_callback(partial(done, pc(), cmd))
                    futs.append(fut)
                state["inflight"] += chunk
                sent += chunk
                if len(futs) > 4 * window:
                    futs = [f for f in futs if not f.done()]
                await asyncio.sleep(0)  # let this chunk leave as its own frame
                continue
            room.clear()
            timeout = max(0.001, (min(t_end, next_tick) - now) / 1e9)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(room.wait(), timeout)
        end = pc()
        cpu = usage.result()
        completed = state["done"] - done_at_start
        pending = [f for f in futs if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=30)
        return {
            "window": window,
            "chunk": chunk,
            "seconds": (end - t_measure) / 1e9,
            "completed": completed,
            "orders_per_s": completed / ((end - t_measure) / 1e9),
            "per_second": per_second,
            "sent": sent,
            "latency_under_load": percentiles(lat),
            "cpu": cpu,
        }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ex = config.load(args.config)
    mix = ZmqMix(ex, seed=args.seed, accounts=args.accounts, max_open=args.max_open)
    client = EngineClient(
        args.endpoint, b"bench-client", timeout=30.0, heartbeat=1.0, on_event=mix.on_event
    )
    await client.start(wait=20.0)
    try:
        deposits = funding(ex, args.accounts)
        replies = await client.request_many(deposits, timeout=30.0)
        bad = [r for r in replies if type(r) is Rejected]
        if bad:
            raise RuntimeError(f"deposits rejected: {bad[:3]}")
        runner = Runner(client, mix, args.engine_pid)
        gc.collect()
        result: dict[str, Any] = {"deposits": len(deposits)}
        if args.seconds > 0:
            # a short unmeasured warm-up at the same rate: connections, caches, first levels
            await runner.fixed_rate(args.rate, min(1.0, args.seconds / 5), args.pacing)
            result["fixed_rate"] = await runner.fixed_rate(args.rate, args.seconds, args.pacing)
        if args.sat_seconds > 0:
            result["saturation"] = await runner.saturate(
                args.window, args.chunk, args.sat_seconds, args.sat_warmup
            )
        result["rejected"] = runner.rejected
        result["errors"] = runner.errors
        result["error_kinds"] = runner.error_kinds
        result["mix"] = mix.counts()
        result["open_orders_at_end"] = len(mix.open)
        return result
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.zmq_client")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--config")
    p.add_argument("--cpu", type=int, default=0)
    p.add_argument("--engine-pid", type=int, default=0, help="report its CPU use per phase")
    p.add_argument("--rate", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--pacing", choices=("tick", "busy"), default="tick")
    p.add_argument("--window", type=int, default=5_000)
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--sat-seconds", type=float, default=5.0)
    p.add_argument("--sat-warmup", type=float, default=1.0)
    p.add_argument("--accounts", type=int, default=50)
    p.add_argument("--max-open", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    if args.cpu >= 0 and args.cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {args.cpu})
    try:
        result = uvloop.run(run(args))
    except KeyboardInterrupt:
        return 130
    result["cpu"] = sorted(os.sched_getaffinity(0))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

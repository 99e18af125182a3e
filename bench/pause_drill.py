"""The pause drill: does anyone hear "not done" for a command that was done?

Against a running exchange (``make run``): a steady flow of resting orders and cancels over the
JSON gateway as the demo trader alice, while the engine process is stopped (SIGSTOP) for
``--pause`` seconds and then resumed (SIGCONT). Afterwards every reply and ``resolved`` event is
checked against what the engine holds (each order's status, by client order id):

    python -m bench.pause_drill --engine-pid "$(pgrep -f 'python -m engine')" --pause 7

A pause longer than the gateway's ``engine_timeout`` (5 s shipped) makes in-doubt answers
(4003); a shorter one shows requests held and then executed. The last lines must say 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

from gateways.json_tcp.client import JsonClient, JsonError

BEFORE = 2.0  # seconds of flow before the pause, and after it


async def drill(args: argparse.Namespace, creds: dict) -> int:
    c = await JsonClient.connect(args.host, args.port)
    await c.logon(creds["api_key"], creds["secret"])
    tag = f"drill-{os.getpid()}-"
    sent: list[tuple[str, str, asyncio.Future]] = []  # (client order id, op, reply)
    by_id: dict[int, tuple[str, str]] = {}  # JsonClient request id -> (client order id, op)
    rid = 2  # challenge and logon took ids 1 and 2
    t0, stopped, resumed, i = time.monotonic(), False, False, 0
    while (now := time.monotonic() - t0) < args.pause + 2 * BEFORE:
        if now > BEFORE and not stopped:
            os.kill(args.engine_pid, signal.SIGSTOP)
            stopped = True
        if now > BEFORE + args.pause and not resumed:
            os.kill(args.engine_pid, signal.SIGCONT)
            resumed = True
        i += 1
        cid = f"{tag}{i}"
        ops = [("place", cid)] + ([("cancel", f"{tag}{i - 2}")] if i % 4 == 0 else [])
        for op, name in ops:
            fields = (
                {"market": args.market, "side": "buy", "price": args.price, "qty": args.qty}
                if op == "place"
                else {}
            )
            rid += 1
            by_id[rid] = (name, op)
            sent.append((name, op, c.send(op, client_order_id=name, **fields)))
        await asyncio.sleep(1 / args.rate)
    if not resumed:
        os.kill(args.engine_pid, signal.SIGCONT)
    told: dict[tuple[str, str], object] = {}
    for name, op, fut in sent:
        try:
            await asyncio.wait_for(fut, 60)
            told[(name, op)] = "ok"
        except JsonError as e:
            told[(name, op)] = e.code
    await asyncio.sleep(3)  # the resolved events of the last doubts
    resolved = []
    while not c.events.empty():
        event = c.events.get_nowait()
        if event["event"] == "resolved":
            resolved.append(event["data"])
    exists = set()
    for name, op in told:
        if op == "place":
            try:
                await c.request("order", client_order_id=name)
                exists.add(name)
            except JsonError:
                pass
    wrong = sum(
        1
        for r in resolved
        if by_id[r["id"]][1] == "place" and bool(r["ok"]) != (by_id[r["id"]][0] in exists)
    )
    not_done_but_done = sum(
        1 for (name, op), r in told.items() if op == "place" and r == 4001 and name in exists
    )
    await c.request("cancel_all", market=args.market)
    await c.close()
    print(f"engine stopped for {args.pause}s under {args.rate}/s orders (+ a cancel every 4th)")
    print("place replies: ", dict(Counter(r for (_, op), r in told.items() if op == "place")))
    print("cancel replies:", dict(Counter(r for (_, op), r in told.items() if op == "cancel")))
    print(
        "resolved events:",
        dict(Counter(f"{r['ok']}/{(r.get('error') or {}).get('code', '')}" for r in resolved)),
    )
    print("orders answered 4001 (not done) that exist afterwards:", not_done_but_done)
    print("resolved events that disagree with the engine:", wrong)
    return 1 if not_done_but_done or wrong else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pause_drill", description=__doc__)
    parser.add_argument("--engine-pid", type=int, required=True)
    parser.add_argument("--pause", type=float, default=7.0, help="seconds the engine is stopped")
    parser.add_argument("--rate", type=float, default=250.0, help="orders per second")
    parser.add_argument("--credentials", default="var/demo-credentials.json")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7010)
    parser.add_argument("--market", default="BTC-USD")
    parser.add_argument("--price", default="1000.00", help="far below the market: orders rest")
    parser.add_argument("--qty", default="0.0010")
    args = parser.parse_args(argv)
    creds = json.loads(Path(args.credentials).read_text())["alice"]
    return asyncio.run(drill(args, creds))


if __name__ == "__main__":
    raise SystemExit(main())

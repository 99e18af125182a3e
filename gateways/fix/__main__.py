"""``python -m gateways.fix``: run the FIX 4.4 order-entry gateway (quickfix acceptor)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import uvloop

from gateways.accounts import AccountStore
from gateways.fix.acceptor import FixApp, Generation
from gateways.fix.front import FrontDoor
from gateways.fix.gateway import FixGateway
from gateways.tls import TlsError, server_context
from protocol import config
from protocol.metrics import Exporter

log = logging.getLogger("gateways.fix")


class Generations:
    """Acceptor generations, one more each time new FIX sessions appear in the store."""

    def __init__(self, app: FixApp, ex: config.Exchange, accounts: str) -> None:
        self.app = app
        self.cfg = ex.fix_gateway
        self.accounts = accounts
        self.gens: list[Generation] = []
        self.routes: dict[str, int] = {}

    def refresh(self) -> None:
        store = AccountStore(self.accounts)
        try:
            comps = [c for c, _, _ in store.fix_sessions()]
        finally:
            store.close()
        new = [c for c in comps if c not in self.routes]
        if not new:
            return
        gen = Generation(
            self.app, new, self.cfg.sender_comp_id, Path(self.cfg.data_dir), self.cfg.heartbeat
        )
        gen.start()
        self.gens.append(gen)
        self.routes.update(dict.fromkeys(new, gen.port))

    def route(self, comp: str) -> int | None:
        return self.routes.get(comp)

    async def poll(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.poll_seconds)
            try:
                self.refresh()
            except Exception:
                log.exception("could not start new FIX sessions")

    def stop(self) -> None:
        for gen in self.gens:
            gen.stop()


async def report(gw: FixGateway, every: float = 30.0) -> None:
    """The gateway's counters in the log every ``every`` seconds, when they moved."""
    last: dict[str, int] = {}
    while True:
        await asyncio.sleep(every)
        if gw.counts != last:
            last = dict(gw.counts)
            log.info(
                "sessions %d, %s",
                len(gw.sessions),
                ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in last.items()),
            )


async def run(args: argparse.Namespace) -> int:
    ex = config.load(args.config)
    fx = ex.fix_gateway
    for name in ("port", "data_dir", "identity"):
        if getattr(args, name) is not None:
            setattr(fx, name, getattr(args, name))
    config.use_engine(ex, args.commands, args.market_data)
    accounts = args.accounts or ex.accounts.path
    try:
        tls = server_context(fx.tls_cert, fx.tls_key)
    except TlsError as e:
        log.error("refusing to start: %s", e)
        return 2
    gw = FixGateway(ex)
    app = FixApp(asyncio.get_running_loop(), accounts, gw.on_app, gw.on_logon, gw.on_logout)
    await gw.engine.start(wait=None)
    await gw.feed.start(wait=None)
    gens = Generations(app, ex, accounts)
    gens.refresh()
    front = FrontDoor(gens.route)
    gw.front = front
    await front.start(fx.host, fx.port, tls)
    log.info(
        "FIX 4.4 gateway on %s:%d%s (SenderCompID %s, sessions %s, engine %s)",
        fx.host,
        front.port,
        " over TLS" if tls else "",
        fx.sender_comp_id,
        ", ".join(gens.routes) or "none yet",
        ex.engine.commands,
    )
    metrics = Exporter("fix_gateway").add(gw.counts, what="FixGateway.counts")
    metrics.add(
        lambda: {"sessions": len(gw.sessions), "engine_available": gw.engine.available},
        gauges=("sessions",),
        what="FixGateway",
    )
    metrics.add(gw.feed.stats, prefix="feed_")
    metrics.serve(ex.metrics.fix_gateway)
    poller = asyncio.ensure_future(gens.poll())
    reporter = asyncio.ensure_future(report(gw))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: logging out %d sessions", len(gw.sessions))
    poller.cancel()
    reporter.cancel()
    assert front.server is not None
    front.server.close()
    await loop.run_in_executor(None, gens.stop)
    await gw.feed.close()
    await gw.engine.close()
    metrics.close()
    log.info("FIX gateway stopped")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m gateways.fix")
    p.add_argument("--config")
    p.add_argument("--port", type=int)
    p.add_argument("--data-dir")
    p.add_argument("--identity")
    p.add_argument("--accounts")
    p.add_argument("--commands")
    p.add_argument("--market-data")
    args = p.parse_args()
    config.log_to_stderr()
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

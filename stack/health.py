"""How the launcher tells that a part of the stack is up: each part's own health check.

- the engine: a Ping answered through the engine client;
- the JSON gateway: a ``ping`` over its TCP port that says the engine is reachable;
- the recorder and the websocket bridge: ``GET /health`` answers 200 (ClickHouse writable;
  engine reachable and every book synced);
- the FIX gateway: its public port accepts a connection (the front door listens only once
  the quickfix acceptors run);
- the market maker: every market's book has both sides in the engine.

A probe returns ``None`` when the part is healthy, else a short reason; it never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable

import aiohttp

from engine.client import EngineClient, EngineError
from gateways.json_tcp.client import JsonClient
from protocol.config import Exchange
from protocol.messages import BookSnapshot, Ping, SnapshotRequest

PROBE_TIMEOUT = 2.0  # seconds one check may take
Probe = Callable[[], Awaitable[str | None]]


async def tcp(host: str, port: int) -> str | None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError) as e:
        return f"{host}:{port} not listening ({e.__class__.__name__})"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def http_health(host: str, port: int) -> str | None:
    url = f"http://{host}:{port}/health"
    try:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url) as r:
            if r.status == 200:
                return None
            return f"{url} answered {r.status}: {(await r.text())[:200]}"
    except (aiohttp.ClientError, TimeoutError) as e:
        return f"{url} not answering ({e.__class__.__name__})"


async def json_ping(host: str, port: int) -> str | None:
    try:
        client = await asyncio.wait_for(JsonClient.connect(host, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError) as e:
        return f"{host}:{port} not listening ({e.__class__.__name__})"
    try:
        pong = await client.request("ping", timeout=PROBE_TIMEOUT)
    except (OSError, TimeoutError, ConnectionError) as e:
        return f"no answer to ping ({e.__class__.__name__})"
    finally:
        await client.close()
    return None if pong.get("engine") else "up, but the engine is not reachable from it"


class EngineProbes:
    """The probes that talk to the engine, over one client (started on first use)."""

    def __init__(self, ex: Exchange, name: str) -> None:
        identity = f"stack-health-{os.getpid()}".encode()
        self.ex = ex
        self.client = EngineClient.for_exchange(ex, name, identity=identity)
        self.started = False

    async def _client(self) -> EngineClient:
        if not self.started:
            await self.client.start(wait=None)
            self.started = True
        return self.client

    async def ping(self) -> str | None:
        client = await self._client()
        try:
            await client.wait_available(PROBE_TIMEOUT)
            await client.request(Ping(0), timeout=PROBE_TIMEOUT)
        except EngineError as e:
            return f"no Pong ({e})"
        return None

    async def two_sided(self) -> str | None:
        """None once every market has a bid and an ask (the market maker is quoting)."""
        client = await self._client()
        one_sided = []
        try:
            for market in self.ex.markets:
                snap = await client.request(SnapshotRequest(0, market, 1), timeout=PROBE_TIMEOUT)
                if not (isinstance(snap, BookSnapshot) and snap.bids and snap.asks):
                    one_sided.append(market)
        except EngineError as e:
            return f"engine not answering ({e})"
        return f"not quoting yet: {', '.join(one_sided)}" if one_sided else None

    async def close(self) -> None:
        if self.started:
            await self.client.close()
            self.started = False


async def wait_healthy(
    probes: dict[str, Probe],
    stopping: asyncio.Event,
    report: Callable[[dict[str, str]], None],
    interval: float = 0.2,
    report_every: float = 5.0,
) -> bool:
    """Poll the probes until every part is healthy (True) or ``stopping`` is set (False).

    A part that answered is left alone while the others come up; then one last round asks
    every part again, so the answer holds for all of them at once. ``report`` gets the parts
    not healthy yet, with their reasons, every ``report_every`` seconds.
    """
    loop = asyncio.get_running_loop()
    next_report = loop.time() + report_every
    pending = dict(probes)
    while not stopping.is_set():
        reasons = {}
        for name, probe in pending.items():
            reason = await probe()
            if reason is not None:
                reasons[name] = reason
        if not reasons:
            if len(pending) == len(probes):
                return True  # every part answered in this one round
            pending = dict(probes)  # the confirming round
            continue
        pending = {name: probes[name] for name in reasons}
        if loop.time() >= next_report:
            report(reasons)
            next_report = loop.time() + report_every
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
    return False

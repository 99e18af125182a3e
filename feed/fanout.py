"""Bounded websocket fan-out, shared by the bridge's streams and the Binance-style streams.

Each message is framed once (``feed.frames.ws_frame``) and the same bytes are written to every
subscriber's transport. Every connection has a limit on unsent bytes: a client whose transport
buffer passes it is dropped (Close 1008 after what is already queued) and counted, never waited
for, so a slow reader cannot delay the others or grow memory (rule 7).

The counters live in the owner's metrics struct, a ``FanoutMetrics`` with the owner's own
counters added, so each server keeps its own Prometheus export.
"""

from __future__ import annotations

import asyncio
import logging
import struct

import msgspec
from aiohttp import web

from feed.frames import ws_frame

log = logging.getLogger("feed.fanout")

TOO_SLOW = ws_frame(struct.pack("!H", 1008) + b"too slow: send queue full", 0x8)


class FanoutMetrics(msgspec.Struct):
    """What every websocket server built on the fan-out counts."""

    connections: int = 0
    connections_total: int = 0
    refused: int = 0  # over the connection cap
    subscriptions: int = 0
    messages_out: int = 0
    dropped_slow: int = 0
    bad_requests: int = 0


class Client:
    __slots__ = ("ws", "transport", "streams", "limit", "combined")

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, limit: int
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.streams: set[str] = set()
        self.limit = limit  # bytes of unsent data before the client counts as too slow
        self.combined = False  # Binance streams: data wrapped as {"stream":..,"data":..}


class Fanout:
    """Connections, who subscribes to what, and the bounded write."""

    def __init__(self, counters: FanoutMetrics) -> None:
        self.counters = counters
        self.linger = 10.0  # seconds a dropped client has to read what was queued, then abort
        self.clients: set[Client] = set()
        self.subs: dict[str, set[Client]] = {}

    def add(self, c: Client) -> None:
        self.clients.add(c)
        self.counters.connections = len(self.clients)

    def subscribe(self, c: Client, stream: str) -> None:
        if stream not in c.streams:
            c.streams.add(stream)
            self.subs.setdefault(stream, set()).add(c)
            self.counters.subscriptions += 1

    def unsubscribe(self, c: Client, stream: str) -> None:
        if stream in c.streams:
            c.streams.discard(stream)
            self.subs[stream].discard(c)
            self.counters.subscriptions -= 1

    def publish(self, stream: str, frame: bytes) -> None:
        for c in list(self.subs.get(stream, ())):
            self.write(c, frame)

    def push(self, c: Client, payload: bytes) -> None:
        self.write(c, ws_frame(payload))

    def write(self, c: Client, frame: bytes) -> None:
        """Hand the frame to the client's transport; a client whose unsent data passes its
        limit is dropped (close 1008 after what is already queued), never waited for."""
        t = c.transport
        if t is None or t.is_closing():
            self.drop(c)
            return
        t.write(frame)
        self.counters.messages_out += 1
        if t.get_write_buffer_size() > c.limit:
            self.counters.dropped_slow += 1
            log.info(
                "dropping a slow websocket client (%d bytes unsent)", t.get_write_buffer_size()
            )
            self.drop(c)
            t.write(TOO_SLOW)
            t.close()  # flushes what is queued, then closes; bounded: nothing more is added
            asyncio.get_running_loop().call_later(self.linger, t.abort)

    def drop(self, c: Client) -> None:
        if c in self.clients:
            self.clients.discard(c)
            for s in c.streams:
                self.subs.get(s, set()).discard(c)
            self.counters.subscriptions -= len(c.streams)
            c.streams.clear()
            self.counters.connections = len(self.clients)

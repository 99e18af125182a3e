"""The FIX front door: one public port, each connection handed to the acceptor generation
that has its SenderCompID (see gateways/fix/acceptor.py for why there are generations).

It reads the first message (the Logon), takes SenderCompID (49), opens a loopback connection
to that generation's acceptor, replays the bytes read so far and then copies both ways. An
unknown CompID goes to the newest generation, whose quickfix rejects it as it would any
unknown session. Nothing is parsed after the Logon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable

log = logging.getLogger("gateways.fix.front")

LOGON_LIMIT = 8192  # bytes; a first message longer than this is not a Logon
SENDER = re.compile(rb"\x0149=([^\x01]*)\x01")
END = re.compile(rb"\x0110=\d{3}\x01")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


class FrontDoor:
    def __init__(self, route: Callable[[str], int | None]) -> None:
        self.route = route  # SenderCompID -> loopback port of its acceptor generation
        self.server: asyncio.base_events.Server | None = None
        self.connections = 0

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self.handle, host, port)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        buf = b""
        try:
            while not END.search(buf):
                chunk = await asyncio.wait_for(reader.read(4096), 10)
                if not chunk or len(buf) > LOGON_LIMIT:
                    raise ConnectionError("no Logon")
                buf += chunk
        except (TimeoutError, ConnectionError) as e:
            log.info("closing %s before logon: %s", peer, e)
            writer.close()
            return
        m = SENDER.search(buf)
        comp = m.group(1).decode(errors="replace") if m else ""
        port = self.route(comp)
        if port is None:
            log.info("closing %s: no acceptor for SenderCompID %r", peer, comp)
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            log.error("acceptor for %s on port %d unreachable: %s", comp, port, e)
            writer.close()
            return
        self.connections += 1
        up_writer.write(buf)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self.connections -= 1

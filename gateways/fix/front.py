"""The FIX front door: one public port, each connection handed to the acceptor generation
that has its SenderCompID (see gateways/fix/acceptor.py for why there are generations).

It reads the first message (the Logon), takes SenderCompID (49), opens a loopback connection
to that generation's acceptor, replays the bytes read so far and then copies both ways. An
connection whose first message is not a Logon of a known CompID is closed. Nothing is parsed
after the Logon.

One thing of the Logon is rewritten: an empty Username(553) or Password(554) (``554=``) is
left out. quickfix's validation refuses a tag without a value before the gateway sees the
Logon, and refuses it silently (no Logout, no reason, the connection left open); without the
tag, the gateway's logon check answers with a Logout that says what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Callable

log = logging.getLogger("gateways.fix.front")

LOGON_LIMIT = 8192  # bytes; a first message longer than this is not a Logon
SENDER = re.compile(rb"\x0149=([^\x01]*)\x01")
END = re.compile(rb"\x0110=\d{3}\x01")
LOGON = re.compile(rb"\x0135=A\x01")
HEAD = re.compile(rb"(8=[^\x01]*)\x019=\d+\x01")
EMPTY_CREDENTIAL = re.compile(rb"(?<=\x01)(?:553|554)=\x01")


def drop_empty_credentials(buf: bytes) -> bytes:
    """``buf`` with its first message's empty 553/554 fields left out (BodyLength and CheckSum
    recomputed); anything after the first message is kept as it is."""
    head, end = HEAD.match(buf), END.search(buf)
    if head is None or end is None:
        return buf
    body = buf[head.end() : end.start() + 1]  # up to the SOH before 10=
    fixed = EMPTY_CREDENTIAL.sub(b"", body)
    if fixed == body:
        return buf
    msg = head.group(1) + b"\x019=%d\x01" % len(fixed) + fixed
    return msg + b"10=%03d\x01" % (sum(msg) % 256) + buf[end.end() :]


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
        self.by_comp: dict[str, set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]]] = {}

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        """Listen; with ``tls`` the public port speaks only TLS (gateways/tls.py), while the
        hand-over to the acceptors stays plain on loopback."""
        self.server = await asyncio.start_server(
            self.handle, host, port, ssl=tls, ssl_handshake_timeout=10 if tls else None
        )

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        buf = b""
        try:
            while not END.search(buf):
                if len(buf) > LOGON_LIMIT:
                    raise ConnectionError("no Logon in the first 8 KiB")
                chunk = await asyncio.wait_for(reader.read(4096), 10)
                if not chunk:
                    raise ConnectionError("closed before a Logon")
                buf += chunk
        except (TimeoutError, ConnectionError) as e:
            log.info("closing %s before logon: %s", peer, e)
            writer.close()
            return
        m = SENDER.search(buf)
        comp = m.group(1).decode(errors="replace") if m else ""
        port = self.route(comp) if LOGON.search(buf) else None
        if port is None:
            log.info(
                "closing %s: first message is not a Logon of a known SenderCompID (%r)", peer, comp
            )
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            log.error("acceptor for %s on port %d unreachable: %s", comp, port, e)
            writer.close()
            return
        self.connections += 1
        self.by_comp.setdefault(comp, set()).add((writer, up_writer))
        up_writer.write(drop_empty_credentials(buf))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self.connections -= 1
            self.by_comp.get(comp, set()).discard((writer, up_writer))

    def cut(self, comp: str) -> None:
        """Close a session's connections at once (it stopped reading): quickfix's blocked send
        fails, the session logs out, and what is queued for it is stored for the resend."""
        for client, upstream in list(self.by_comp.get(comp, ())):
            for w in (client, upstream):
                w.transport.abort()

"""The primary's append path to the replicated log: one NATS connection that writes each
append to the socket the moment the engine submits it and hands each acknowledgement to a
callback as its bytes are read, with no task, future or JSON object per message.

Why not nats-py for this (it stays for everything else: the lease, the standby's consumer,
stream management): its ``publish`` only queues the bytes for a flusher task, and an
acknowledgement passes through a subscription task and a future before the caller sees it.
Each of those waits for the event loop, and the engine's loop is busy applying the next batch,
so every append waited for a batch or two of the engine's own work on each side. This link
speaks the few operations of the NATS client protocol it needs (docs.nats.io, "Client
Protocol": INFO, CONNECT, HPUB, SUB, MSG/HMSG, PING/PONG, -ERR), on plain TCP or TLS (the
server's INFO asks for it, the link upgrades), with a user and password from the URL.

It never retries by itself: a lost connection fails every append in flight (the caller resends
them under their message ids, see ``Replicator``) and the link reconnects to the next server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

import msgspec

log = logging.getLogger("engine.appendlink")

CRLF = b"\r\n"
MAX_CONTROL_LINE = 4096  # a longer line without CRLF is a protocol error


class PubAck(msgspec.Struct):
    """JetStream's answer to a publish (``seq`` 0 with ``error`` set when refused)."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict | None = None


ACK = msgspec.json.Decoder(PubAck)


class AppendError(RuntimeError):
    """An append the stream refused (``err_code``: JetStream's code) or could not take."""

    def __init__(self, what: str, err_code: int = 0) -> None:
        super().__init__(what)
        self.err_code = err_code


# An acknowledgement: (token, stream sequence or 0, error or None)
OnAck = Callable[[int, int, AppendError | None], None]


def headers_block(headers: dict[str, str]) -> bytes:
    """A NATS header block (``NATS/1.0`` and ``Key: value`` lines)."""
    lines = ["NATS/1.0", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


class AppendLink(asyncio.Protocol):
    """Publishes to JetStream with replies on one wildcard inbox; see the module docstring.

    ``publish`` returns at once (False while disconnected: the caller counts it as failed);
    ``on_ack`` is called for every answer, and with an ``AppendError`` for every token in
    flight when the connection drops (the link then reconnects by itself)."""

    def __init__(self, servers: list[str], on_ack: OnAck, *, name: str = "engine",
                 tls_ca: str = "", connect_timeout: float = 2.0) -> None:  # fmt: skip
        if not servers:
            raise ValueError("no servers")
        self.servers = servers
        self.on_ack = on_ack
        self.name = name
        self.tls_ca = tls_ca
        self.connect_timeout = connect_timeout
        self.inbox = f"_INBOX.{os.urandom(8).hex()}."
        self.transport: asyncio.Transport | None = None
        self.ready = False  # connected, authenticated, subscribed
        self.inflight: set[int] = set()  # tokens published on this connection, not answered
        self.closed = False
        self._buf = bytearray()
        self._handshake: asyncio.Future | None = None
        self._info: dict = {}
        self._next = 0  # the server tried next
        self._pings = 0  # PINGs sent and not answered
        self._reconnect: asyncio.Task | None = None
        self.connects = 0

    @property
    def max_payload(self) -> int:
        """The largest message the server takes (its INFO; NATS's default 1 MiB)."""
        return int(self._info.get("max_payload", 1 << 20))

    # ------------------------------------------------------------------ connection
    async def connect(self, attempts: int = 0) -> None:
        """Until connected to one of the servers (``attempts`` 0: forever)."""
        tried = 0
        while not self.closed:
            url = self.servers[self._next % len(self.servers)]
            self._next += 1
            try:
                await asyncio.wait_for(self._open(url), self.connect_timeout)
                self.connects += 1
                log.info("append link connected to %s", urlsplit(url).netloc.rpartition("@")[2])
                return
            except (TimeoutError, OSError, AppendError, ssl.SSLError) as e:
                self._drop()
                tried += 1
                if attempts and tried >= attempts:
                    raise ConnectionError(f"no NATS server answered: {e}") from e
                log.warning("append link: %s: %s", urlsplit(url).netloc.rpartition("@")[2], e)
                await asyncio.sleep(0.1 if tried % len(self.servers) else 0.5)

    async def _open(self, url: str) -> None:
        u = urlsplit(url if "://" in url else f"nats://{url}")
        loop = asyncio.get_running_loop()
        self._buf.clear()
        self._info = {}
        self._handshake = loop.create_future()
        host = u.hostname or "127.0.0.1"
        raw, _ = await loop.create_connection(lambda: self, host, u.port or 4222)
        transport: asyncio.BaseTransport = raw
        await self._handshake  # the server's INFO
        tls = u.scheme == "tls" or self._info.get("tls_required") or bool(self.tls_ca)
        if tls:
            ctx = ssl.create_default_context(cafile=self.tls_ca or None)
            tls_transport = await loop.start_tls(raw, self, ctx, server_hostname=host)
            if tls_transport is None:
                raise AppendError("TLS handshake failed")
            self.transport = transport = tls_transport
        opts = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                "protocol": 1, "lang": "python-exchange", "version": "1", "name": self.name,
                "tls_required": bool(tls)}  # fmt: skip
        if u.username:
            opts["user"] = u.username  # as nats-py reads them: not percent-decoded
            opts["pass"] = u.password or ""
        self._handshake = loop.create_future()
        cast("asyncio.WriteTransport", transport).write(
            b"CONNECT " + json.dumps(opts).encode() + CRLF
            + b"SUB " + self.inbox.encode() + b"* 1" + CRLF + b"PING" + CRLF
        )  # fmt: skip
        await self._handshake  # the PONG: CONNECT and SUB were accepted (else -ERR)
        self.ready = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        was_ready = self.ready
        self._drop()
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(ConnectionError("connection closed"))
        if was_ready and not self.closed:
            log.warning("append link lost its server (%s); reconnecting", exc or "closed")
            self._reconnect = asyncio.ensure_future(self.connect())

    def _drop(self) -> None:
        """Forget the connection; every append in flight on it has failed."""
        self.ready = False
        self._pings = 0
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        lost, self.inflight = self.inflight, set()
        for token in sorted(lost):
            self.on_ack(token, 0, AppendError("connection to the log lost"))

    def probe(self) -> None:
        """An append timed out: ping the server; a second timeout with the ping unanswered
        means the connection is dead (a partition keeps TCP open): drop it and reconnect."""
        if not self.ready or self.transport is None:
            return
        if self._pings:
            log.warning("append link: the server stopped answering; reconnecting")
            self.transport.abort()  # connection_lost follows
            return
        self._pings += 1
        self.transport.write(b"PING" + CRLF)

    async def close(self) -> None:
        self.closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        self.inflight.clear()
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self.ready = False

    # ------------------------------------------------------------------ publishing
    def publish(self, subject: str, payload: bytes, headers: bytes, token: int) -> bool:
        """Write one HPUB now; its answer comes to ``on_ack`` with ``token``."""
        if not self.ready or self.transport is None:
            return False
        reply = f"{self.inbox}{token}"
        self.inflight.add(token)
        self.transport.write(
            f"HPUB {subject} {reply} {len(headers)} {len(headers) + len(payload)}\r\n".encode()
            + headers + payload + CRLF
        )  # fmt: skip
        return True

    # ------------------------------------------------------------------ reading
    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        try:
            while True:
                end = buf.find(CRLF, pos)
                if end < 0:
                    if len(buf) - pos > MAX_CONTROL_LINE and not buf.startswith(b"MSG", pos):
                        raise AppendError("protocol line too long")
                    break
                line = bytes(buf[pos:end])
                op = line[:4].upper()
                if op in (b"MSG ", b"HMSG"):
                    parts = line.split()
                    size = int(parts[-1])
                    hsize = int(parts[-2]) if op == b"HMSG" else 0
                    if len(buf) < end + 2 + size + 2:
                        break  # the payload is not all here yet
                    body = bytes(buf[end + 2 : end + 2 + size])
                    pos = end + 2 + size + 2
                    self._answer(parts[1].decode(), body[:hsize], body[hsize:])
                    continue
                pos = end + 2
                self._control(op, line)
        except (AppendError, ValueError, IndexError) as e:
            log.error("append link: %s", e)
            if self._handshake is not None and not self._handshake.done():
                self._handshake.set_exception(
                    e if isinstance(e, AppendError) else AppendError(str(e))
                )
            if self.transport is not None:
                self.transport.abort()
            return
        del buf[:pos]

    def _control(self, op: bytes, line: bytes) -> None:
        if op == b"PING":
            if self.transport is not None:
                self.transport.write(b"PONG" + CRLF)
        elif op == b"PONG":
            self._pings = 0
            self._finish_handshake()
        elif op == b"INFO":
            self._info = json.loads(line[5:] or b"{}")
            self._finish_handshake()
        elif op.startswith(b"-ERR"):
            raise AppendError(f"server: {line[5:].decode(errors='replace')}")
        # +OK (verbose off: none come) and anything else: ignored

    def _finish_handshake(self) -> None:
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_result(None)

    def _answer(self, subject: str, headers: bytes, body: bytes) -> None:
        if not subject.startswith(self.inbox):
            return
        try:
            token = int(subject[len(self.inbox) :])
        except ValueError:
            return
        if token not in self.inflight:
            return  # answered already (or before a reconnect): a late duplicate
        self.inflight.discard(token)
        if headers and not body:  # a status message, e.g. 503: no stream took it
            status = headers.split(CRLF, 1)[0].decode(errors="replace")
            self.on_ack(token, 0, AppendError(f"no stream answered ({status})"))
            return
        try:
            ack = ACK.decode(body)
        except msgspec.DecodeError as e:
            self.on_ack(token, 0, AppendError(f"unreadable acknowledgement: {e}"))
            return
        if ack.error:
            code = int(ack.error.get("err_code", 0) or 0)
            self.on_ack(token, 0, AppendError(str(ack.error.get("description", "")), code))
        else:
            self.on_ack(token, ack.seq, None)

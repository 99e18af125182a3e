"""A small asyncio client for the JSON gateway (used by the market maker, tests and benchmarks).

client = await JsonClient.connect("127.0.0.1", 7010)
await client.logon(api_key, secret)
reports = await client.request("place", market="BTC-USD", side="buy", price="50000.00",
                               qty="0.0100")
event = await client.events.get()     # {"event": "execution", "data": {...}}
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import ssl
from typing import Any

import msgspec

from gateways.accounts import make_proof


class JsonError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class JsonClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_events: int = 100_000
    ) -> None:
        self.reader = reader
        self.writer = writer
        # Events nobody reads must not grow without bound: past max_events the oldest go.
        self.events: asyncio.Queue[dict] = asyncio.Queue(max_events)
        self.events_dropped = 0
        self.unmatched: list[dict] = []  # error lines without an id (e.g. line too long)
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future] = {}
        self._encoder = msgspec.json.Encoder()
        self._task = asyncio.ensure_future(self._read())
        self.closed = asyncio.Event()

    @classmethod
    async def connect(
        cls, host: str, port: int, limit: int = 1 << 24, tls: ssl.SSLContext | None = None
    ) -> JsonClient:
        """Connect; with ``tls`` (e.g. ``ssl.create_default_context(cafile=...)``) over TLS."""
        reader, writer = await asyncio.open_connection(host, port, limit=limit, ssl=tls)
        return cls(reader, writer)

    async def logon(self, api_key: str, secret: str) -> dict:
        ch = await self.request("challenge", api_key=api_key)
        proof = make_proof(
            secret, base64.b64decode(ch["salt"]), ch["iterations"], base64.b64decode(ch["nonce"])
        )
        return await self.request("logon", api_key=api_key, proof=base64.b64encode(proof).decode())

    def send(self, op: str, **fields: Any) -> asyncio.Future:
        """Send a request without waiting; the future gets the result or a JsonError."""
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self.writer.write(self._encoder.encode({"id": rid, "op": op, **fields}) + b"\n")
        return fut

    async def request(self, op: str, timeout: float = 10.0, **fields: Any) -> Any:
        return await asyncio.wait_for(self.send(op, **fields), timeout)

    def send_raw(self, line: bytes) -> None:
        self.writer.write(line)

    async def _read(self) -> None:
        try:
            while line := await self.reader.readline():
                msg = msgspec.json.decode(line)
                if "event" in msg:
                    if self.events.full():
                        self.events.get_nowait()
                        self.events_dropped += 1
                    self.events.put_nowait(msg)
                    continue
                fut = self._pending.pop(msg.get("id"), None)
                if fut is None:
                    self.unmatched.append(msg)
                elif not fut.done():
                    if msg.get("ok"):
                        fut.set_result(msg.get("result"))
                    else:
                        err = msg.get("error") or {}
                        fut.set_exception(JsonError(err.get("code", 0), err.get("reason", "")))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))
            self._pending.clear()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

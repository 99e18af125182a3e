"""The one engine client every gateway, tool, test and benchmark uses.

An asyncio DEALER with:
- request ids: ``await client.request(cmd)`` stamps ``cmd.req`` and resolves with the single
  reply carrying that id; unsolicited messages (execution reports of resting orders, with
  ``req = 0``) go to ``on_event``;
- automatic batching: every command issued in one event-loop turn leaves in one frame;
- timeouts: a request unanswered after ``timeout`` seconds raises ``EngineTimeout``;
- availability: a heartbeat Ping every ``heartbeat`` seconds; without a Pong for 2.5
  heartbeats the engine is "unavailable", pending requests fail with ``EngineUnavailable`` and
  new ones fail at once instead of hanging; ZeroMQ reconnects by itself and the next Pong makes
  the engine available again (``on_restart`` is called if its epoch changed);
- no stale orders: the socket queues nothing while disconnected (``IMMEDIATE``), so a command
  that was refused is never delivered later;
- CURVE: with ``curve`` keys (engine/curve.py) the connection is encrypted and authenticated;
  ``EngineClient.for_exchange(ex, name)`` takes the endpoint and, when the config turns CURVE
  on, the keys of component ``name`` from the configured key directory.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import msgspec
import zmq

from engine.curve import ClientKeys, for_client, secure_client
from protocol.messages import Ping, Pong, Reply

if TYPE_CHECKING:
    from protocol.config import Exchange

log = logging.getLogger("engine.client")

MAX_BATCH = 5_000


class EngineError(Exception):
    pass


class EngineUnavailable(EngineError):
    pass


class EngineTimeout(EngineError):
    pass


class EngineClient:
    def __init__(
        self,
        endpoint: str,
        identity: bytes,
        *,
        timeout: float = 5.0,
        heartbeat: float = 0.5,
        on_event: Callable[[Any], None] | None = None,
        on_restart: Callable[[int], None] | None = None,
        ctx: zmq.Context | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self.identity = identity
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.on_event = on_event or (lambda msg: None)
        self.on_restart = on_restart or (lambda epoch: None)
        self.ctx = ctx or zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self.available = False
        self.epoch = 0
        self.last_seq = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._buf: list[Any] = []
        self._flush_scheduled = False
        self._last_pong = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(list[Reply])
        self._became_available: asyncio.Event | None = None
        self._deadlines: deque[tuple[float, int]] = deque()  # (give-up time, req), in send order

    @classmethod
    def for_exchange(
        cls, ex: Exchange, name: str, identity: bytes | None = None, **kw: Any
    ) -> EngineClient:
        """A client of the configured engine; ``name`` picks its CURVE keys when CURVE is on."""
        return cls(ex.engine.commands, identity or name.encode(), curve=for_client(ex, name), **kw)

    # ------------------------------------------------------------------- lifecycle
    async def start(self, wait: float | None = 5.0) -> None:
        """Connect; with ``wait``, return once the engine answered (else EngineUnavailable)."""
        self._loop = asyncio.get_running_loop()
        self._became_available = asyncio.Event()
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        secure_client(sock, self.curve)
        sock.connect(self.endpoint)
        self.sock = sock
        self._loop.add_reader(sock.FD, self._drain)
        self._tasks.append(asyncio.ensure_future(self._heartbeat()))
        if wait:
            await self.wait_available(wait)

    async def wait_available(self, timeout: float) -> None:
        assert self._became_available is not None
        try:
            await asyncio.wait_for(self._became_available.wait(), timeout)
        except TimeoutError:
            raise EngineUnavailable(f"engine at {self.endpoint} did not answer") from None

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
        if self.sock is not None:
            assert self._loop is not None
            self._loop.remove_reader(self.sock.FD)
            self.sock.close(0)
            self.sock = None
        self._fail_pending(EngineUnavailable("client closed"))

    # -------------------------------------------------------------------- requests
    def send(self, cmd: Any) -> asyncio.Future:
        """Queue ``cmd`` (its ``req`` is overwritten) and return a future for its reply."""
        assert self._loop is not None, "start() first"
        fut = self._loop.create_future()
        if not self.available:
            fut.set_exception(EngineUnavailable(f"engine at {self.endpoint} is unavailable"))
            return fut
        req = next(self._ids)
        cmd.req = req
        self._pending[req] = fut
        self._deadlines.append((time.monotonic() + self.timeout, req))
        self._buf.append(cmd)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return fut

    async def request(self, cmd: Any, timeout: float | None = None) -> Any:
        fut = self.send(cmd)
        try:
            return await asyncio.wait_for(fut, timeout or self.timeout)
        except TimeoutError:
            self._pending.pop(cmd.req, None)
            raise EngineTimeout(
                f"no reply to request {cmd.req} in {timeout or self.timeout}s"
            ) from None

    async def request_many(self, cmds: Iterable[Any], timeout: float | None = None) -> list:
        futs = [self.send(c) for c in cmds]
        try:
            return list(await asyncio.wait_for(asyncio.gather(*futs), timeout or self.timeout))
        except TimeoutError:
            raise EngineTimeout("no reply within the timeout") from None

    def _flush(self) -> None:
        self._flush_scheduled = False
        buf, self._buf = self._buf, []
        assert self.sock is not None
        for i in range(0, len(buf), MAX_BATCH):
            chunk = buf[i : i + MAX_BATCH]
            try:
                payload = self._encoder.encode(chunk)
            except (OverflowError, TypeError, ValueError):
                chunk = self._encodable(chunk)  # one bad command must not sink the others
                if not chunk:
                    continue
                payload = self._encoder.encode(chunk)
            try:
                self.sock.send(payload, zmq.NOBLOCK)
            except zmq.ZMQError as e:
                self._fail(chunk, EngineUnavailable(f"cannot send to the engine: {e}"))
        self._drain()  # a send can swallow the socket's read edge: look again

    def _encodable(self, chunk: list[Any]) -> list[Any]:
        good = []
        for cmd in chunk:
            try:
                self._encoder.encode(cmd)
            except (OverflowError, TypeError, ValueError) as e:
                self._fail([cmd], EngineError(f"cannot encode {type(cmd).__name__}: {e}"))
            else:
                good.append(cmd)
        return good

    def _fail(self, cmds: list[Any], err: Exception) -> None:
        for cmd in cmds:
            fut = self._pending.pop(cmd.req, None)
            if fut is not None and not fut.done():
                fut.set_exception(err)

    def _expire(self) -> None:
        """Fail requests that waited longer than ``timeout`` (send() has no timeout of its own)."""
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, req = deadlines.popleft()
            fut = self._pending.pop(req, None)
            if fut is not None and not fut.done():
                fut.set_exception(EngineTimeout(f"no reply to request {req} in {self.timeout}s"))
        if not self._pending:
            deadlines.clear()

    # ------------------------------------------------------------------- receiving
    def _drain(self) -> None:
        sock = self.sock
        if sock is None:
            return
        events = cast("Callable[[int], int]", sock.getsockopt)  # EVENTS is an int option
        while events(zmq.EVENTS) & zmq.POLLIN:
            try:
                payload = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                msgs = self._decoder.decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                log.error("undecodable frame from the engine: %s", e)
                continue
            for msg in msgs:
                self._dispatch(msg)

    def _dispatch(self, msg: Any) -> None:
        if type(msg) is Pong:
            self._on_pong(msg)
            if not msg.req:
                return  # our own heartbeat
        fut = self._pending.pop(msg.req, None) if msg.req else None
        if fut is None:
            self.on_event(msg)  # unsolicited: fills of resting orders, system cancels
        elif not fut.done():
            fut.set_result(msg)

    def _on_pong(self, msg: Pong) -> None:
        self._last_pong = time.monotonic()
        self.last_seq = msg.seq
        if msg.epoch != self.epoch:
            restarted = self.epoch != 0
            self.epoch = msg.epoch
            if restarted:
                log.warning("engine restarted (epoch %d)", msg.epoch)
                self.on_restart(msg.epoch)
        if not self.available:
            self.available = True
            assert self._became_available is not None
            self._became_available.set()
            log.info("engine at %s available (seq %d)", self.endpoint, msg.seq)

    async def _heartbeat(self) -> None:
        assert self.sock is not None
        encode = self._encoder.encode
        while True:
            try:
                self.sock.send(encode([Ping(0)]), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # not connected: IMMEDIATE refuses, the staleness check below reports it
            self._drain()  # a send can swallow the socket's read edge: look again
            await asyncio.sleep(self.heartbeat)
            self._expire()
            if self.available and time.monotonic() - self._last_pong > 2.5 * self.heartbeat:
                self.available = False
                assert self._became_available is not None
                self._became_available.clear()
                log.warning("engine at %s unavailable: no heartbeat", self.endpoint)
                self._fail_pending(EngineUnavailable("engine stopped answering"))

    def _fail_pending(self, err: Exception) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(err)

"""The one engine client every gateway, tool, test and benchmark uses.

An asyncio DEALER with:
- request ids: ``await client.request(cmd)`` stamps ``cmd.req`` and resolves with the single
  reply carrying that id; unsolicited messages (execution reports of resting orders, with
  ``req = 0``) go to ``on_event``;
- automatic batching: every command issued in one event-loop turn leaves in one frame;
- one timeout mechanism, carried per request (``send(cmd, timeout)``; default ``timeout``);
- availability: a heartbeat Ping every ``heartbeat`` seconds; without a Pong for 2.5
  heartbeats the engine is "unavailable" and new requests fail at once instead of hanging;
  ZeroMQ reconnects by itself and the next Pong makes the engine available again
  (``on_restart`` is called if its epoch changed);
- no stale orders: the socket queues nothing while disconnected (``IMMEDIATE``), so a command
  that was refused is never delivered later;
- CURVE: with ``curve`` keys (engine/curve.py) the connection is encrypted and authenticated;
  ``EngineClient.for_exchange(ex, name)`` takes the endpoint and, when the config turns CURVE
  on, the keys of component ``name`` from the configured key directory.

What a caller is told (docs/design.md rule 4: "not done" only when provably true):
- ``EngineUnavailable``: the command never left this process (the engine was known to be away,
  or ZeroMQ refused the send). Nothing was done; retrying is safe.
- ``EngineTimeout`` for a write command (``WRITES``): it is *in doubt*; it may have executed.
  The client keeps tracking it and calls ``on_resolved(cmd, outcome)`` once with the truth:
  the engine's late reply; or, for a reply the engine dropped (full ROUTER queue, a rejected
  frame, a crash after the journal write), the answer of a status query the client sends itself
  (``OrderInfo`` of the order, or ``Rejected`` NOT_EXECUTED when the engine has no record of
  it); or ``None`` when the truth cannot be learned (a lost MassCancel/Deposit/Withdraw reply,
  or no engine for ``doubt_ttl`` seconds). A status-query answer may also arrive as the
  future's result, when it came before the timeout.
- ``EngineTimeout`` for a read: nothing changed; retrying is safe.

How replies are known to be lost: every heartbeat Ping carries ``mark``, the last request id
flushed before it, and the engine echoes it in the Pong. Frames on one connection arrive and
are processed in order, so once that Pong is here every request up to ``mark`` has been
answered or its answer will never come.

Every write carries a ``deadline`` (engine wall-clock ns: send time + timeout). The engine
refuses a write that reaches it later (DEADLINE_PASSED), deciding on the journaled batch
timestamp, so after a pause the late truth is "not executed", never a surprise order. The
caller hears ``EngineTimeout`` a little after the deadline (``GRACE``), so a live engine's answer
to a command it took just before the deadline still arrives in time. The deadline assumes the
engine's clock agrees with this host's (the same host, or NTP).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import msgspec
import zmq

from engine.curve import ClientKeys, for_client, secure_client
from protocol import config
from protocol.enums import RejectCode
from protocol.messages import (
    WRITE_COMMANDS,
    Cancel,
    NewOrder,
    NewOrderList,
    OrderInfo,
    OrderStatusRequest,
    Ping,
    Pong,
    Rejected,
    Replace,
    Reply,
)

if TYPE_CHECKING:
    from protocol.config import Exchange

log = logging.getLogger("engine.client")

MAX_BATCH = 5_000
GRACE = 0.05  # seconds past a write's deadline before the caller hears EngineTimeout
CLOCK_SLACK_NS = 1_000_000_000  # how far the engine's clock may trail ours (status matching)
WRITES = frozenset(WRITE_COMMANDS)


class EngineError(Exception):
    pass


class EngineUnavailable(EngineError):
    """The command provably never reached the engine: nothing was done."""


class EngineTimeout(EngineError):
    """No reply in time. For a write: in doubt (on_resolved will tell); for a read: nothing done."""


class _Pending:
    """A request without its final answer that needs more than its future: one in doubt, or
    one whose lost reply is being looked up. (The common case, a request simply waiting, is a
    plain ``(cmd, future, timeout)`` tuple: measured, a slotted object costs ~280 ns a send.)"""

    __slots__ = ("cmd", "fut", "timeout", "doubt", "probing")

    def __init__(self, cmd: Any, fut: asyncio.Future, timeout: float) -> None:
        self.cmd = cmd
        self.fut = fut
        self.timeout = timeout
        self.doubt = False  # the caller was told EngineTimeout; the truth goes to on_resolved
        self.probing = False  # a status query for its lost reply is out


class EngineClient:
    def __init__(
        self,
        endpoint: str | list[str],
        identity: bytes,
        *,
        timeout: float = 5.0,
        heartbeat: float = 0.5,
        on_event: Callable[[Any], None] | None = None,
        on_restart: Callable[[int], None] | None = None,
        on_resolved: Callable[[Any, Any], None] | None = None,
        doubt_ttl: float = 300.0,
        ctx: zmq.Context | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        # One endpoint, or every engine of a replicated setup: the DEALER connects to all, and
        # (IMMEDIATE) sends only over a finished connection; a standby binds its ROUTER only
        # once it is the primary, so commands go to the engine that serves. After a failover
        # the new primary's first Pong (a new epoch) makes it available; writes that were out
        # are resolved by the usual status queries, now answered by it.
        self.endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        self.endpoint = ",".join(self.endpoints)
        self.curve = curve
        self.identity = identity
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.doubt_ttl = doubt_ttl
        self.on_event = on_event or (lambda msg: None)
        self.on_restart = on_restart or (lambda epoch: None)
        self.on_resolved = on_resolved or (lambda cmd, outcome: None)
        self.ctx = ctx or zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self.available = False
        self.epoch = 0
        self.last_seq = 0
        self.stats = {"in_doubt": 0, "resolved": 0, "lost_replies": 0, "unresolved": 0}
        self._ids = itertools.count(1)
        self._cid_prefix = f"~{time.time_ns() // 1_000_000:x}-"
        self._pending: dict[int, Any] = {}  # by req, in send order: a tuple or a _Pending
        self._flushed = 0  # the last request id handed to ZeroMQ
        self._buf: list[Any] = []
        self._flush_scheduled = False
        self._last_pong = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(list[Reply])
        self._became_available: asyncio.Event | None = None
        # When requests time out, as (loop time, req): in send order for the default timeout
        # (a deque, O(1) at both ends), a heap for other timeouts, and when doubts end.
        self._due: deque[tuple[float, int]] = deque()
        self._due_custom: list[tuple[float, int]] = []
        self._due_doubt: deque[tuple[float, int]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    @classmethod
    def for_exchange(
        cls, ex: Exchange, name: str, identity: bytes | None = None, **kw: Any
    ) -> EngineClient:
        """A client of the configured engine; ``name`` picks its CURVE keys when CURVE is on."""
        return cls(
            config.engine_endpoints(ex), identity or name.encode(), curve=for_client(ex, name),
            **kw,
        )  # fmt: skip

    @property
    def in_doubt(self) -> int:
        """Write commands told EngineTimeout whose truth is not known yet."""
        return sum(1 for p in self._pending.values() if type(p) is _Pending and p.doubt)

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
        for endpoint in self.endpoints:
            sock.connect(endpoint)
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.sock is not None:
            assert self._loop is not None
            self._loop.remove_reader(self.sock.FD)
            self.sock.close(0)
            self.sock = None
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            p = entry if type(entry) is _Pending else _Pending(*entry)
            if p.fut.done():
                continue
            if type(p.cmd) in WRITES and p.cmd.req <= self._flushed:
                p.fut.set_exception(EngineTimeout("client closed while the command was out"))
            else:
                p.fut.set_exception(EngineUnavailable("client closed"))

    # -------------------------------------------------------------------- requests
    def send(self, cmd: Any, timeout: float | None = None) -> asyncio.Future:
        """Queue ``cmd`` (its ``req`` is overwritten) and return a future for its reply,
        which fails with EngineTimeout after ``timeout`` seconds (default: the client's)."""
        loop = self._loop
        assert loop is not None, "start() first"
        fut = loop.create_future()
        if not self.available:
            fut.set_exception(EngineUnavailable(f"engine at {self.endpoint} is unavailable"))
            return fut
        t = self.timeout if timeout is None else timeout
        req = next(self._ids)
        cmd.req = req
        at = loop.time() + t + GRACE
        kind = type(cmd)
        if kind in WRITES:
            cmd.deadline = time.time_ns() + int(t * 1e9)
            if kind is NewOrder and not cmd.client_order_id:
                cmd.client_order_id = self._cid_prefix + hex(req)  # findable if lost
            elif kind is NewOrderList and not cmd.limit_client_order_id:
                cmd.limit_client_order_id = self._cid_prefix + hex(req)  # its limit order
        self._pending[req] = (cmd, fut, t)
        if timeout is None or timeout == self.timeout:
            self._due.append((at, req))
        else:
            heapq.heappush(self._due_custom, (at, req))
        if self._timer is None or at < self._timer_at:
            self._arm(at)
        self._buf.append(cmd)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    async def request(self, cmd: Any, timeout: float | None = None) -> Any:
        return await self.send(cmd, timeout)

    async def request_many(self, cmds: Iterable[Any], timeout: float | None = None) -> list:
        return list(await asyncio.gather(*[self.send(c, timeout) for c in cmds]))

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
            except zmq.ZMQError as e:  # not queued: provably not sent
                self._fail(chunk, EngineUnavailable(f"cannot send to the engine: {e}"))
            else:
                self._flushed = chunk[-1].req
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
            p = self._pending.pop(cmd.req, None)
            fut = None if p is None else p.fut if type(p) is _Pending else p[1]
            if fut is not None and not fut.done():
                fut.set_exception(err)

    # ---------------------------------------------------------------------- timeouts
    def _arm(self, at: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._expire)

    def _expire(self) -> None:
        """Timeouts: a read fails, a write goes in doubt; a doubt past ``doubt_ttl`` ends."""
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        due, custom, doubt = self._due, self._due_custom, self._due_doubt
        while due and due[0][0] <= now:
            self._timed_out(due.popleft()[1], now)
        while custom and custom[0][0] <= now:
            self._timed_out(heapq.heappop(custom)[1], now)
        while doubt and doubt[0][0] <= now:
            self._timed_out(doubt.popleft()[1], now)
        if not self._pending:  # every entry left belongs to an answered request
            due.clear()
            custom.clear()
            doubt.clear()
            return
        heads = [q[0][0] for q in (due, custom, doubt) if q]
        if heads:
            self._arm(max(min(heads), now + 0.01))  # coalesce wake-ups under load

    def _timed_out(self, req: int, now: float) -> None:
        p = self._entry(req)
        if p is None:
            return  # answered meanwhile
        if p.doubt:  # nobody answered for doubt_ttl: give up, say so
            del self._pending[req]
            self.stats["unresolved"] += 1
            log.warning("request %d: outcome unknown after %ss", req, self.doubt_ttl)
            self.on_resolved(p.cmd, None)
        elif type(p.cmd) in WRITES and not p.fut.cancelled():
            p.doubt = True
            self.stats["in_doubt"] += 1
            p.fut.set_exception(
                EngineTimeout(f"no reply to request {req} in {p.timeout}s: in doubt")
            )
            self._due_doubt.append((now + self.doubt_ttl, req))
        else:
            del self._pending[req]
            if not p.fut.done():
                p.fut.set_exception(EngineTimeout(f"no reply to request {req} in {p.timeout}s"))

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
        req = msg.req
        if not req:
            self.on_event(msg)  # unsolicited: fills of resting orders, system cancels
            return
        p = self._pending.pop(req, None)
        if type(p) is tuple:  # the common case, kept cheap
            fut = p[1]
            if not fut.done():
                fut.set_result(msg)
        elif p is not None:
            self._settle(p, msg)
        # else: the late reply of a read that timed out: nothing to tell anyone

    def _entry(self, req: int) -> _Pending | None:
        """The request's entry as a _Pending (made from its tuple on first need)."""
        p = self._pending.get(req)
        if type(p) is tuple:
            p = self._pending[req] = _Pending(*p)
        return p

    def _settle(self, p: _Pending, outcome: Any) -> None:
        if p.doubt:
            self.stats["resolved"] += 1
            self.on_resolved(p.cmd, outcome)
        elif not p.fut.done():
            p.fut.set_result(outcome)

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
        if msg.mark:
            self._lost_up_to(msg.mark)

    async def _heartbeat(self) -> None:
        assert self.sock is not None
        encode = self._encoder.encode
        while True:
            try:
                self.sock.send(encode([Ping(0, self._flushed)]), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # not connected: IMMEDIATE refuses, the staleness check below reports it
            self._drain()  # a send can swallow the socket's read edge: look again
            await asyncio.sleep(self.heartbeat)
            if self.available and time.monotonic() - self._last_pong > 2.5 * self.heartbeat:
                # Requests already out stay tracked: they may still be executed (in doubt).
                self.available = False
                assert self._became_available is not None
                self._became_available.clear()
                log.warning("engine at %s unavailable: no heartbeat", self.endpoint)

    # ----------------------------------------------------------------- lost replies
    def _lost_up_to(self, mark: int) -> None:
        """Every request up to ``mark`` was processed or dropped: those still waiting lost
        their reply. A read fails (nothing changed); a write is looked up."""
        reqs = []
        for req, entry in self._pending.items():
            if req > mark:
                break  # insertion order is request order
            if type(entry) is tuple or not entry.probing:
                reqs.append(req)
        for req in reqs:
            p = self._entry(req)
            assert p is not None
            self.stats["lost_replies"] += 1
            cmd = p.cmd
            if type(cmd) not in WRITES:
                del self._pending[cmd.req]
                if not p.fut.done():
                    p.fut.set_exception(EngineUnavailable("the engine's reply was lost"))
                continue
            query = _status_query(cmd)
            if query is None:  # nothing to look it up by
                del self._pending[cmd.req]
                if not p.fut.done():
                    p.fut.set_exception(EngineTimeout("the engine's reply was lost: in doubt"))
                    p.doubt = True
                    self.stats["in_doubt"] += 1
                self.stats["unresolved"] += 1
                self.on_resolved(cmd, None)
                continue
            p.probing = True
            log.warning("reply to request %d lost: asking the engine", cmd.req)
            self.send(query).add_done_callback(functools.partial(self._probed, p))

    def _probed(self, p: _Pending, f: asyncio.Future) -> None:
        p.probing = False  # on failure the next Pong asks again
        if f.cancelled() or f.exception() is not None:
            return
        if self._pending.get(p.cmd.req) is not p:
            return
        del self._pending[p.cmd.req]
        self._settle(p, _interpret(p, f.result()))


def _status_query(cmd: Any) -> OrderStatusRequest | None:
    """How to learn what became of a write whose reply was lost, if it can be learned."""
    kind = type(cmd)
    if kind is NewOrder:
        return OrderStatusRequest(0, cmd.account, cmd.market, 0, cmd.client_order_id)
    if kind is NewOrderList:  # a list is there if its limit order is
        return OrderStatusRequest(0, cmd.account, cmd.market, 0, cmd.limit_client_order_id)
    if kind is Cancel:
        return OrderStatusRequest(0, cmd.account, cmd.market, cmd.order_id, cmd.client_order_id)
    if kind is Replace:
        cid = "" if cmd.order_id else cmd.new_client_order_id or cmd.client_order_id
        return OrderStatusRequest(0, cmd.account, cmd.market, cmd.order_id, cid)
    return None


def _interpret(p: _Pending, answer: Any) -> Any:
    """The status query's answer, as the outcome of the lost command."""
    cmd = p.cmd
    if type(cmd) is NewOrder or type(cmd) is NewOrderList:
        # The client order id may be an older order's (ids are unique among open orders only):
        # ours, if it exists, was created at or before its deadline and after it was sent.
        sent = cmd.deadline - int(p.timeout * 1e9) - CLOCK_SLACK_NS
        if type(answer) is OrderInfo and answer.order.created_ts >= sent:
            return OrderInfo(cmd.req, answer.order)
        return Rejected(
            cmd.req,
            RejectCode.NOT_EXECUTED,
            "the engine's reply was lost and it has no such order: not executed",
            0,
            cmd.limit_client_order_id if isinstance(cmd, NewOrderList) else cmd.client_order_id,
        )
    if type(answer) is OrderInfo:
        return OrderInfo(cmd.req, answer.order)
    if type(answer) is Rejected:
        return Rejected(cmd.req, answer.code, answer.reason, cmd.order_id, cmd.client_order_id)
    return answer

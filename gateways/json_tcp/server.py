"""The JSON-over-TCP gateway: newline-delimited JSON for programs and trading bots.

One asyncio protocol object per connection (uvloop), one EngineClient for the whole process.
A session logs on with a challenge (see gateways.accounts), then sends requests; each gets
exactly one reply with its ``id``. Fills of resting orders and system cancels reach every
session of the owning account as ``{"event": "execution", ...}``. A write the engine did not
answer in time is in doubt (4003), never "not done"; the engine client learns its outcome and
the session gets it as ``{"event": "resolved", "data": <the reply it would have had>}``.

Bounds (config ``[json_gateway]``): a request line longer than ``max_line`` is rejected and
skipped; per-account token buckets answer "rate limited" with a retry-after; a connection is
cut with a final error line when it has more than ``max_in_flight`` unanswered requests, when
its rate-limited requests outrun a tenth of its request rate (a bucket of ``request_burst``
strikes), or when its unread replies exceed ``max_write_buffer``. None of this touches other
sessions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import ssl
import time
from functools import partial
from typing import Any

import msgspec

from engine.client import WRITES, EngineClient, EngineTimeout, EngineUnavailable
from gateways.accounts import AccountStore, ApiKey, Permission, b64, check_proof
from gateways.json_tcp import api as A
from gateways.json_tcp import convert
from gateways.ratelimit import AccountLimits, TokenBucket
from protocol import json_api as J
from protocol import messages as M
from protocol import salvage
from protocol.config import Exchange
from protocol.enums import RejectCode

log = logging.getLogger("gateways.json")

MAX_LOGON_FAILURES = 5
CLOSE_LINGER = 2.0  # seconds a closed session's input is still read and dropped
LOCAL_OPS = (J.ChallengeReq, J.Logon, J.PingReq, J.GetMarkets, J.GetStats)
READ_ONLY_OK = (J.GetOrder, J.GetOpenOrders, J.GetBalances, J.GetFills, J.GetHistory, J.GetQuote)


class Metrics(msgspec.Struct):
    connections: int = 0
    connections_total: int = 0
    logons: int = 0
    logon_failures: int = 0
    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    events_out: int = 0
    cut_flood: int = 0
    cut_slow: int = 0
    cut_oversize: int = 0
    in_doubt: int = 0
    resolved: int = 0


class Gateway:
    def __init__(
        self, ex: Exchange, store: AccountStore, tls: ssl.SSLContext | None = None
    ) -> None:
        self.ex = ex
        self.cfg = ex.json_gateway
        self.store = store
        self.tls = tls  # gateways/tls.py: None = plain TCP
        self.metrics = Metrics()
        self.sessions: set[Session] = set()
        self.by_account: dict[int, set[Session]] = {}
        self.limits = AccountLimits(self.cfg)
        self.doubts: dict[int, tuple[Session, J.Id]] = {}  # engine req -> who was told 4003
        self.pepper = secrets.token_bytes(32)  # fake salts for unknown keys
        self.engine = EngineClient.for_exchange(
            ex,
            self.cfg.identity,
            timeout=self.cfg.engine_timeout,
            on_event=self.on_event,
            on_resolved=self.on_resolved,
        )
        self.encoder = msgspec.json.Encoder()
        self.decoder = msgspec.json.Decoder(A.Request)
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        await self.engine.start(wait=None)  # serve at once; requests say if the engine is away
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: Session(self),
            self.cfg.host,
            self.cfg.port,
            backlog=1024,
            ssl=self.tls,
            ssl_handshake_timeout=10 if self.tls else None,
        )
        log.info(
            "JSON gateway listening on %s:%d%s (engine %s as %r)",
            self.cfg.host,
            self.port,
            " over TLS" if self.tls else "",
            self.ex.engine.commands,
            self.cfg.identity,
        )

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for s in list(self.sessions):
            s.close_with(RejectCode.SHUTTING_DOWN, "gateway shutting down")
        await self.engine.close()

    def on_event(self, msg: Any) -> None:
        """Unsolicited engine messages: execution reports go to every session of the account."""
        if type(msg) is M.ExecReport:
            sessions = self.by_account.get(msg.account)
            if sessions:
                event = J.Event("execution", convert.report_view(self.ex, msg))
                for s in list(sessions):
                    s.send(event)
                    self.metrics.events_out += 1
        elif type(msg) is M.Rejected:
            log.warning("engine rejected a frame of ours: %s", msg.reason)

    def on_resolved(self, cmd: Any, outcome: Any) -> None:
        """The truth about a command its session was told is in doubt (4003), as an event."""
        who = self.doubts.pop(cmd.req, None)
        if who is None:
            return
        session, req_id = who
        self.metrics.resolved += 1
        if outcome is None:
            body: Any = J.Err(
                req_id,
                J.Error(
                    RejectCode.TIMEOUT,
                    "outcome unknown: check the order's status (op order / open_orders)",
                ),
            )
        elif type(outcome) is M.Rejected:
            body = J.Err(req_id, J.Error(outcome.code, outcome.reason))
        else:
            body = J.Ok(req_id, convert.result(self.ex, outcome, cmd))
        session.send(J.Event("resolved", body))

    def fake_salt(self, api_key: str) -> bytes:
        return hmac.new(self.pepper, api_key.encode(), hashlib.sha256).digest()[:16]


class Session(asyncio.Protocol):
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.discarding = False
        self.key: ApiKey | None = None
        self.nonce: bytes | None = None
        self.nonce_key = ""
        self.in_flight = 0
        self.failures = 0
        self.closed = False
        self.peer = "?"
        c = gw.cfg  # ops answered by the gateway itself count against the connection's bucket
        now = time.monotonic()
        self.conn_bucket = TokenBucket(c.requests_per_second, c.request_burst, now)
        # Rate-limited requests draw on this; a connection that empties it is flooding.
        self.strikes = TokenBucket(c.requests_per_second / 10, c.request_burst, now)

    # ----------------------------------------------------------------- connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.peer = str(transport.get_extra_info("peername"))
        gw = self.gw
        gw.metrics.connections_total += 1
        if len(gw.sessions) >= gw.cfg.max_connections:
            self.close_with(RejectCode.TOO_LARGE, "too many connections")
            return
        gw.sessions.add(self)
        gw.metrics.connections = len(gw.sessions)
        self.transport.set_write_buffer_limits(high=256 * 1024)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        gw = self.gw
        gw.sessions.discard(self)
        gw.metrics.connections = len(gw.sessions)
        if self.key is not None:
            mine = gw.by_account.get(self.key.account_id)
            if mine is not None:
                mine.discard(self)
                if not mine:
                    del gw.by_account[self.key.account_id]

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests until it does.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buf = self.buf
        buf += data
        max_line = self.gw.cfg.max_line
        start = 0
        while not self.closed:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            if self.discarding:  # the tail of an over-long line
                self.discarding = False
                continue
            if len(line) > max_line:
                self.error(None, RejectCode.TOO_LARGE, f"line longer than {max_line} bytes")
                continue
            self.handle(line)
        del buf[:start]
        if len(buf) > max_line:
            if not self.discarding:
                self.gw.metrics.cut_oversize += 1
                self.error(None, RejectCode.TOO_LARGE, f"line longer than {max_line} bytes")
            self.discarding = True
            buf.clear()

    # ------------------------------------------------------------------- replies
    def send(self, obj: object) -> None:
        t = self.transport
        if self.closed or t is None:
            return
        out = bytearray()
        self.gw.encoder.encode_into(obj, out)
        out += b"\n"
        t.write(out)
        if t.get_write_buffer_size() > self.gw.cfg.max_write_buffer:
            self.gw.metrics.cut_slow += 1
            log.warning(
                "cutting %s: slow consumer (%d bytes unread)", self.peer, t.get_write_buffer_size()
            )
            self.closed = True
            t.abort()

    def ok(self, req_id: J.Id | None, result: object) -> None:
        self.send(J.Ok(req_id, result))

    def error(self, req_id: J.Id | None, code: int, reason: str) -> None:
        self.gw.metrics.errors += 1
        self.send(J.Err(req_id, J.Error(int(code), reason)))

    def close_with(self, code: int, reason: str, req_id: J.Id | None = None) -> None:
        self.error(req_id, code, reason)
        self.closed = True
        t = self.transport
        if t is None:
            return
        if t.can_write_eof():
            # Half-close first: closing a socket with unread input sends a reset, which would
            # destroy the final line in flight. What the client still sends is discarded.
            t.write_eof()
            asyncio.get_running_loop().call_later(CLOSE_LINGER, t.close)
        else:
            t.close()

    # ------------------------------------------------------------------- requests
    def handle(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not line.strip():
            return
        gw = self.gw
        gw.metrics.requests += 1
        try:
            req = gw.decoder.decode(line)
        except msgspec.ValidationError as e:
            obj = salvage.json_object(line)
            code, reason = _explain(obj, e)
            self.error(salvage.json_id(obj), code, reason)
            return
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError) as e:
            reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            rid = salvage.json_id(salvage.json_object(line))  # e.g. bad UTF-8 in another field
            self.error(rid, RejectCode.MALFORMED, f"not valid JSON: {reason}")
            return
        if isinstance(req, LOCAL_OPS):  # the rest count against the account
            self.local_request(req)
        else:
            self.engine_request(req)

    def local_request(self, req: Any) -> None:
        """The ops the gateway answers itself, limited per connection."""
        gw = self.gw
        wait = self.conn_bucket.take(time.monotonic())
        if wait:
            return self.over_limit(req.id, wait)
        match req:
            case J.ChallengeReq():
                self.challenge(req)
            case J.Logon():
                self.logon(req)
            case J.PingReq():
                self.ok(req.id, {"pong": time.time_ns(), "engine": gw.engine.available})
            case J.GetMarkets():
                self.ok(req.id, [convert.market_view(m) for m in gw.ex.markets.values()])
            case J.GetStats():
                self.ok(
                    req.id,
                    {
                        "gateway": gw.metrics,
                        "engine_available": gw.engine.available,
                        "engine_seq": gw.engine.last_seq,
                    },
                )

    def engine_request(self, req: Any) -> None:
        key = self.key
        if key is None:  # answered here, so limited like the gateway's own ops
            wait = self.conn_bucket.take(time.monotonic())
            if wait:
                return self.over_limit(req.id, wait)
            return self.error(req.id, RejectCode.NOT_LOGGED_ON, "log on first (challenge, logon)")
        needed = _permission(req)
        if not key.permission.allows(needed):
            return self.error(
                req.id,
                RejectCode.NOT_AUTHORIZED,
                f"this API key is {key.permission.value}; {needed.value} needed",
            )
        if not self.within_limits(req):
            return
        try:
            cmd = convert.command(self.gw.ex, key.account_id, req)
        except convert.EdgeReject as e:
            return self.error(req.id, e.code, e.reason)
        self.in_flight += 1
        if self.in_flight > self.gw.cfg.max_in_flight:
            self.gw.metrics.cut_flood += 1
            return self.close_with(
                RejectCode.RATE_LIMITED, f"more than {self.gw.cfg.max_in_flight} requests in flight"
            )
        self.gw.engine.send(cmd).add_done_callback(partial(self.on_reply, req.id, cmd))

    def within_limits(self, req: Any) -> bool:
        assert self.key is not None
        wait = self.gw.limits.take(
            self.key.account_id, isinstance(req, A.ORDER_OPS), time.monotonic()
        )
        if not wait:
            return True
        self.over_limit(req.id, wait)
        return False

    def over_limit(self, req_id: J.Id | None, wait: float = 0.0) -> None:
        self.gw.metrics.rate_limited += 1
        if self.strikes.take(time.monotonic()):
            self.gw.metrics.cut_flood += 1
            self.close_with(RejectCode.RATE_LIMITED, "flooding past the rate limit: disconnected")
            return
        wait = wait or 1.0 / max(self.gw.cfg.requests_per_second, 1e-9)
        self.error(req_id, RejectCode.RATE_LIMITED, f"rate limited; retry after {wait:.3f}s")

    def on_reply(self, req_id: J.Id, cmd: Any, fut: asyncio.Future) -> None:
        self.in_flight -= 1
        if fut.cancelled():  # only when the gateway itself shuts down
            return self.error(req_id, RejectCode.SHUTTING_DOWN, "gateway shutting down")
        exc = fut.exception()
        if isinstance(exc, EngineTimeout):
            if type(cmd) not in WRITES:
                return self.error(
                    req_id, RejectCode.TIMEOUT, "engine did not answer in time; nothing changed"
                )
            gw = self.gw
            gw.metrics.in_doubt += 1
            gw.doubts[cmd.req] = (self, req_id)
            return self.error(
                req_id,
                RejectCode.TIMEOUT,
                "in doubt: the engine did not answer in time and may have executed this; "
                'its outcome follows as a "resolved" event with this id',
            )
        if exc is not None and not isinstance(exc, EngineUnavailable):  # could not encode it
            return self.error(req_id, RejectCode.INTERNAL, f"not sent to the engine: {exc}")
        if exc is not None:  # it never left the gateway
            return self.error(
                req_id,
                RejectCode.ENGINE_UNAVAILABLE,
                f"engine unavailable ({exc}); nothing was done, try again shortly",
            )
        msg = fut.result()
        if type(msg) is M.Rejected:
            return self.error(req_id, msg.code, msg.reason)
        self.ok(req_id, convert.result(self.gw.ex, msg, cmd))

    # ---------------------------------------------------------------------- logon
    def challenge(self, req: J.ChallengeReq) -> None:
        key = self.gw.store.lookup(req.api_key)
        salt = key.salt if key else self.gw.fake_salt(req.api_key)
        self.nonce = secrets.token_bytes(32)
        self.nonce_key = req.api_key
        self.ok(req.id, J.Challenge(b64(self.nonce), b64(salt), key.iterations if key else 4096))

    def logon(self, req: J.Logon) -> None:
        gw = self.gw
        if self.key is not None:
            return self.error(req.id, RejectCode.INVALID_FIELD, "already logged on")
        if self.nonce is None or self.nonce_key != req.api_key:
            return self.error(
                req.id, RejectCode.BAD_CREDENTIALS, "ask for a challenge for this api_key first"
            )
        nonce, self.nonce = self.nonce, None  # one try per challenge
        key = gw.store.lookup(req.api_key)
        try:
            proof = _unb64(req.proof)
        except ValueError:
            proof = b""
        if key is None or not check_proof(key, nonce, proof):
            gw.metrics.logon_failures += 1
            self.failures += 1
            if self.failures >= MAX_LOGON_FAILURES:
                return self.close_with(RejectCode.BAD_CREDENTIALS, "too many failed logons", req.id)
            return self.error(req.id, RejectCode.BAD_CREDENTIALS, "unknown api_key or bad proof")
        self.key = key
        gw.metrics.logons += 1
        gw.by_account.setdefault(key.account_id, set()).add(self)
        log.info(
            "logon %s account %d (%s, %s)",
            self.peer,
            key.account_id,
            key.account_name,
            key.permission.value,
        )
        self.ok(
            req.id,
            {
                "account": key.account_id,
                "name": key.account_name,
                "permission": key.permission.value,
            },
        )


def _permission(req: Any) -> Permission:
    if isinstance(req, J.ADMIN_OPS):
        return Permission.ADMIN
    if isinstance(req, READ_ONLY_OK):
        return Permission.READ
    return Permission.TRADE


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(str(e)) from None


AMOUNT_FIELDS = (
    "price", "qty", "quote_qty", "amount", "stop_price", "stop_limit_price", "display_qty",
)  # fmt: skip
OPS = salvage.tags_of(A.Request)


def _explain(obj: Any, e: msgspec.ValidationError) -> tuple[int, str]:
    """The reject for a line that is JSON but not a valid request (``obj``: the line decoded
    by salvage.json_object), named by looking at the line itself; msgspec's message is passed
    on, never parsed."""
    text = str(e)
    if not isinstance(obj, dict):
        return RejectCode.MALFORMED, f"each line must be a JSON object: {text}"
    if salvage.json_op(obj) not in OPS:
        return RejectCode.UNKNOWN_MESSAGE, f"unknown or missing op: {text}"
    if salvage.numbers_in(obj, AMOUNT_FIELDS):
        return RejectCode.INVALID_FIELD, (
            f'{text}: send prices and quantities as decimal strings, e.g. "50000.00"'
        )
    return RejectCode.INVALID_FIELD, text

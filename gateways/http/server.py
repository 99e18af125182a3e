"""A small, fast HTTP/1.1 server for the REST gateway: asyncio protocol on uvloop, llhttp parser.

Why not aiohttp (already a dependency, and the bridge's server): on this machine a trivial
aiohttp handler answers about 7,000 requests/s on one core, the same handler on this protocol
about 60,000 (wrk, 16 keep-alive connections, README). The order path needs the difference.
``httptools`` (llhttp, the parser of Node.js, maintained by the uvloop authors) does the
parsing; this module does only what a JSON API needs:

- keep-alive and pipelining: responses leave in request order (a slot per request), however
  the engine's replies interleave;
- a handler returns a :class:`Response`, or a :class:`Deferred` (an engine future plus the
  function that turns its result into the response), or a coroutine; no task per request on
  the fast path;
- bounds: request line + headers (``max_header``, 431), body (``max_body``, 413, checked on
  Content-Length before the body is read, and 100-continue only when it fits), a request
  must arrive whole within ``header_timeout`` (a slow client gets 408 and is closed), idle
  keep-alive connections close after ``idle_timeout``, at most ``max_pipeline`` unanswered
  requests per connection (then reading pauses), at most ``max_connections``;
- every error is a JSON body in the shape of the API the path belongs to (``errors``), never
  an HTML page, and a malformed request closes the connection after its 400.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

import httptools
import msgspec

log = logging.getLogger("gateways.http")

REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Response:
    __slots__ = ("status", "body", "headers", "close")

    def __init__(
        self,
        status: int,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.close = close


class Deferred:
    """A response that waits for a future (an engine reply): ``then(future)`` makes it."""

    __slots__ = ("future", "then")

    def __init__(self, future: asyncio.Future, then: Callable[[asyncio.Future], Response]) -> None:
        self.future = future
        self.then = then


class Request:
    __slots__ = ("method", "path", "query_string", "headers", "body", "peer", "params", "_query")

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: dict[str, str],
        body: bytes,
        peer: str,
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers  # lower-case names; a repeated header keeps its last value
        self.body = body
        self.peer = peer  # the client's address (no port)
        self.params: dict[str, str] = {}  # path parameters: /api/v1/order/{id}
        self._query: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, percent-decoded; a repeated name keeps its last value."""
        q = self._query
        if q is None:
            q = self._query = dict(parse_qsl(self.query_string, keep_blank_values=True))
        return q


Result = Response | Deferred | Coroutine[Any, Any, Response]
Handler = Callable[[Request], Result]
# (status, code, message, path) -> JSON body, in the shape of the API the path belongs to
ErrorBody = Callable[[int, int, str, str], bytes]


def default_error(status: int, code: int, message: str, path: str) -> bytes:
    return msgspec.json.encode({"error": {"code": code, "reason": message}})


class Router:
    """Exact paths in a dict; paths with ``{name}`` segments matched segment by segment."""

    def __init__(self) -> None:
        self.exact: dict[str, dict[str, Handler]] = {}
        self.patterns: list[tuple[list[str], dict[str, Handler]]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        if "{" not in path:
            self.exact.setdefault(path, {})[method] = handler
            return
        parts = path.strip("/").split("/")
        for pat, methods in self.patterns:
            if pat == parts:
                methods[method] = handler
                return
        self.patterns.append((parts, {method: handler}))

    def match(self, path: str) -> tuple[dict[str, Handler] | None, dict[str, str]]:
        methods = self.exact.get(path)
        if methods is not None:
            return methods, {}
        parts = path.strip("/").split("/")
        for pat, methods in self.patterns:
            if len(pat) != len(parts):
                continue
            params: dict[str, str] = {}
            for p, v in zip(pat, parts, strict=True):
                if p[:1] == "{":
                    if not v:
                        break
                    params[p[1:-1]] = v
                elif p != v:
                    break
            else:
                return methods, params
        return None, {}


class Metrics(msgspec.Struct):
    connections: int = 0
    connections_total: int = 0
    requests: int = 0
    responses_2xx: int = 0
    responses_4xx: int = 0
    responses_5xx: int = 0
    bad_requests: int = 0  # malformed HTTP
    too_large: int = 0
    slow_clients: int = 0  # requests not finished within header_timeout
    refused: int = 0  # over max_connections
    handler_errors: int = 0


class HttpServer:
    def __init__(self, cfg: Any, router: Router, errors: ErrorBody = default_error) -> None:
        self.cfg = cfg
        self.router = router
        self.errors = errors
        self.metrics = Metrics()
        self.conns: set[Connection] = set()
        self.server: asyncio.base_events.Server | None = None
        self._date = b""
        self._date_at = 0.0
        self.to_flush: list[Connection] = []
        self.flush_scheduled = False

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: Connection(self),
            self.cfg.host,
            self.cfg.port,
            backlog=2048,
            ssl=tls,
            ssl_handshake_timeout=10 if tls else None,
        )

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.conns):
            c.shutdown()

    def later(self, conn: Connection) -> None:
        """Flush ``conn`` at the end of this loop turn (one call_soon for all connections)."""
        self.to_flush.append(conn)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_all)

    def flush_all(self) -> None:
        self.flush_scheduled = False
        conns, self.to_flush = self.to_flush, []
        for c in conns:
            c.flush()

    def date(self) -> bytes:
        now = time.time()
        if now - self._date_at >= 1.0:
            self._date_at = now
            self._date = formatdate(now, usegmt=True).encode()
        return self._date

    def error(self, status: int, code: int, message: str, path: str) -> Response:
        return Response(status, self.errors(status, code, message, path))


class _Slot:
    __slots__ = ("data", "close")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.close = False


class Connection(asyncio.Protocol):
    """One client connection: parse, dispatch, answer in order."""

    def __init__(self, srv: HttpServer) -> None:
        self.srv = srv
        self.cfg = srv.cfg
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.slots: deque[_Slot] = deque()
        self.closing = False
        self.paused = False  # reading paused: max_pipeline answers outstanding
        self.write_blocked = False  # reading paused: the client does not read its answers
        self.out: list[bytes] = []  # answers ready to write, in order (flushed once a turn)
        self.dirty = False  # in the server's flush list
        # the request being parsed
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_len = 0
        # Timers are armed lazily (a call_later and its cancel cost ~4 us, a tenth of a
        # request): the header timer only for a request still incomplete when a read has been
        # parsed, the idle timer once, moved on by ``idle_at`` and re-armed when it fires early.
        self.parsing = False  # a request begun and not complete
        self.timer: asyncio.TimerHandle | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.idle_at = 0.0

    # ------------------------------------------------------------------ transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = transport  # type: ignore[assignment]
        srv = self.srv
        srv.metrics.connections_total += 1
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if len(srv.conns) >= self.cfg.max_connections:
            srv.metrics.refused += 1
            self.closing = True
            resp = srv.error(503, 4002, "too many connections; try again later", "/")
            t.write(self.encode(resp, close=True))  # type: ignore[attr-defined]
            t.close()
            return
        srv.conns.add(self)
        srv.metrics.connections = len(srv.conns)
        t.set_write_buffer_limits(high=256 * 1024)  # type: ignore[attr-defined]
        self.arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.srv.conns.discard(self)
        self.srv.metrics.connections = len(self.srv.conns)
        for timer in (self.timer, self.idle_timer):
            if timer is not None:
                timer.cancel()

    def pause_writing(self) -> None:
        """The client is not reading its answers: read no more of its requests until it does
        (what is already queued is bounded by max_pipeline answers)."""
        self.write_blocked = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_blocked = False
        if self.transport is not None and not self.closing and not self.paused:
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """Gateway stopping: answer nothing more, close once what is queued is written."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(400, 1001, "protocol upgrades are not served here (websockets: ws_port)")
        except httptools.HttpParserError as e:
            if not self.closing:  # else: our own refusal (too large) stopped the parser
                self.fail(400, 1001, f"malformed HTTP request: {e}")
        if self.parsing and self.timer is None and not self.closing:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.cfg.header_timeout, self.too_slow)

    def fail(self, status: int, code: int, message: str) -> None:
        """Answer a request that cannot be parsed or read, after those before it; then close."""
        self.srv.metrics.bad_requests += status == 400
        slot = _Slot()
        self.slots.append(slot)
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        self.finish(slot, self.srv.error(status, code, message, path), keep=False)
        self.closing = True

    # -------------------------------------------------------------- parser events
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.header_bytes = 0
        self.body = []
        self.body_len = 0
        self.parsing = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.header_bytes += len(url)
        if self.header_bytes > self.cfg.max_header:
            self.too_large(431, f"request line and headers longer than {self.cfg.max_header}")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.cfg.max_header:
            self.too_large(431, f"request line and headers longer than {self.cfg.max_header}")
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def too_large(self, status: int, message: str) -> None:
        """Refuse the request being parsed (431/413, then close) and stop the parser."""
        self.srv.metrics.too_large += 1
        self.fail(status, 1004, message)
        raise httptools.HttpParserError(message)

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.cfg.max_body:
            self.too_large(413, f"request body longer than {self.cfg.max_body} bytes")
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport:
            # An interim answer must not overtake the answers before it: with some still
            # pending, the client sends its body after its own short wait instead.
            if not self.slots:
                self.flush()
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_len += len(body)
        if self.body_len > self.cfg.max_body:  # chunked bodies have no Content-Length
            self.too_large(413, f"request body longer than {self.cfg.max_body} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.parsing = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.closing:
            return
        srv = self.srv
        srv.metrics.requests += 1
        parser = self.parser
        method = parser.get_method().decode("latin-1")
        keep = parser.should_keep_alive()
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            return self.fail(400, 1001, "malformed request target")
        path = (url.path or b"/").decode("latin-1")
        query = (url.query or b"").decode("latin-1")
        slot = _Slot()
        self.slots.append(slot)
        body = b"".join(self.body) if self.body else b""
        req = Request(method, path, query, self.headers, body, self.peer)
        self.dispatch(req, slot, keep)
        if len(self.slots) >= self.cfg.max_pipeline and not self.paused and self.transport:
            self.paused = True
            self.transport.pause_reading()

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, req: Request, slot: _Slot, keep: bool) -> None:
        srv = self.srv
        methods = srv.router.exact.get(req.path)
        if methods is None:
            methods, req.params = srv.router.match(req.path)
        if methods is None:
            return self.finish(slot, srv.error(404, 1002, f"no route {req.path}", req.path), keep)
        method = "GET" if req.method == "HEAD" else req.method
        handler = methods.get(method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            resp = srv.error(405, 1002, f"{req.method} not allowed here; use {allowed}", req.path)
            resp.headers = [("Allow", allowed)]
            return self.finish(slot, resp, keep)
        try:
            out = handler(req)
        except Exception:
            log.exception("handler for %s %s failed", req.method, req.path)
            srv.metrics.handler_errors += 1
            return self.finish(slot, srv.error(500, 4005, "internal error", req.path), keep)
        if type(out) is Response:
            return self.finish(slot, out, keep, req.method == "HEAD")
        if type(out) is Deferred:
            then = out.then
            out.future.add_done_callback(lambda f: self.deferred(then, f, slot, keep, req))
            return
        task = asyncio.ensure_future(out)  # type: ignore[arg-type]
        task.add_done_callback(lambda t: self.deferred(_result, t, slot, keep, req))

    def deferred(
        self,
        then: Callable[[asyncio.Future], Response],
        fut: asyncio.Future,
        slot: _Slot,
        keep: bool,
        req: Request,
    ) -> None:
        try:
            resp = then(fut)
        except Exception:
            log.exception("handler for %s %s failed", req.method, req.path)
            self.srv.metrics.handler_errors += 1
            resp = self.srv.error(500, 4005, "internal error", req.path)
        self.finish(slot, resp, keep, req.method == "HEAD")

    # ------------------------------------------------------------------- writing
    def encode(self, resp: Response, close: bool, head: bool = False) -> bytes:
        status = resp.status
        body = resp.body
        out = [
            b"HTTP/1.1 %d %s\r\nDate: %s\r\nServer: exchange\r\nContent-Length: %d\r\n"
            % (status, REASONS.get(status, "Status").encode(), self.srv.date(), len(body))
        ]
        if body and not (resp.headers and resp.headers[0][0] == "Content-Type"):
            out.append(b"Content-Type: application/json\r\n")  # unless it names its own
        if resp.headers:
            out.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in resp.headers)
        out.append(b"Connection: close\r\n\r\n" if close else b"\r\n")
        if not head:
            out.append(body)
        return b"".join(out)

    def finish(self, slot: _Slot, resp: Response, keep: bool = True, head: bool = False) -> None:
        m = self.srv.metrics
        s = resp.status
        if s < 400:
            m.responses_2xx += 1
        elif s < 500:
            m.responses_4xx += 1
        else:
            m.responses_5xx += 1
        slot.close = close = resp.close or not keep
        slot.data = self.encode(resp, close, head)
        t = self.transport
        if t is None or t.is_closing():
            return
        slots = self.slots
        out = self.out
        while slots and slots[0].data is not None:
            done = slots.popleft()
            out.append(done.data)  # type: ignore[arg-type]
            if done.close:
                self.closing = True
                slots.clear()
                self.flush()
                t.close()
                return
        if out and not self.dirty:
            self.dirty = True
            self.srv.later(self)
        if self.paused and len(slots) < self.cfg.max_pipeline // 2:
            self.paused = False
            if not self.write_blocked:
                t.resume_reading()
        if not slots:
            self.arm_idle()

    def flush(self) -> None:
        """Write what is ready in one call: answers finished in one loop turn (a pipelined
        batch, or the engine replies of one frame) leave in one send."""
        self.dirty = False
        out = self.out
        t = self.transport
        if out and t is not None and not t.is_closing():
            t.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    # ------------------------------------------------------------------- timers
    def arm_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self.idle_at = loop.time() + self.cfg.idle_timeout
        if self.idle_timer is None:
            self.idle_timer = loop.call_at(self.idle_at, self.idle)

    def idle(self) -> None:
        self.idle_timer = None
        loop = asyncio.get_running_loop()
        if loop.time() < self.idle_at:  # answered since it was armed: idle from then on
            self.idle_timer = loop.call_at(self.idle_at, self.idle)
            return
        if not self.slots and self.transport is not None and not self.parsing:
            self.closing = True
            self.transport.close()

    def too_slow(self) -> None:
        """A request begun and not finished within header_timeout: 408, then close."""
        self.timer = None
        if self.closing:
            return
        self.srv.metrics.slow_clients += 1
        self.fail(408, 1001, f"request not complete within {self.cfg.header_timeout:g}s")


def _result(task: asyncio.Future) -> Response:
    return task.result()  # type: ignore[no-any-return]

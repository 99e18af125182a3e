"""The HTTP server's two timers over real loopback sockets (gateways/http/server.py): a request
begun and not finished within ``header_timeout`` gets 408 and the connection closes; an idle
keep-alive connection closes after ``idle_timeout``, one that keeps asking stays open. The
server arms both lazily (no timer per request), so these pin what the laziness must keep."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import uvloop

from gateways.http.server import HttpServer, Response, Router

GET = b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n"


def config(**kw: float) -> SimpleNamespace:
    base = dict(host="127.0.0.1", port=0, max_body=1024, max_header=4096, idle_timeout=60.0,
                header_timeout=60.0, max_pipeline=16, max_connections=100)  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


async def serve(cfg: SimpleNamespace) -> HttpServer:
    router = Router()
    router.add("GET", "/ping", lambda req: Response(200, b'{"pong":true}'))
    srv = HttpServer(cfg, router)
    await srv.start()
    return srv


async def read_response(r: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 20)
    length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
    return head + await asyncio.wait_for(r.readexactly(length), 20)


def test_a_request_left_unfinished_gets_408_then_close() -> None:
    async def go() -> None:
        srv = await serve(config(header_timeout=0.3))
        try:
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            w.write(GET)  # one whole request first: the next one's timer must still be armed
            assert b" 200 " in await read_response(r)
            w.write(b"GET /ping HTTP/1.1\r\nHost: t\r\n")  # no blank line: never finished
            rest = await asyncio.wait_for(r.read(), 20)  # until the server closes
            assert b" 408 " in rest and b"Connection: close" in rest
            assert srv.metrics.slow_clients == 1
            w.close()
        finally:
            await srv.stop()

    uvloop.run(go())


def test_an_idle_keepalive_connection_is_closed() -> None:
    async def go() -> None:
        srv = await serve(config(idle_timeout=0.3))
        try:
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            w.write(GET)
            assert b" 200 " in await read_response(r)
            assert await asyncio.wait_for(r.read(), 20) == b""  # closed, nothing more sent
            w.close()
        finally:
            await srv.stop()

    uvloop.run(go())


def test_a_connection_that_keeps_asking_outlives_the_idle_timeout() -> None:
    """A request every 50 ms keeps one connection open well past the idle timeout. A gap
    longer than the timeout (a stalled machine) may legitimately close it: then the run
    starts again on a new connection, until one run spans three timeouts (or 60 s pass)."""
    idle = 1.0

    async def go() -> None:
        srv = await serve(config(idle_timeout=idle))
        try:
            deadline = time.monotonic() + 60.0
            while True:
                assert time.monotonic() < deadline, "no run of short gaps in 60 s"
                r, w = await asyncio.open_connection("127.0.0.1", srv.port)
                start = last = time.monotonic()
                n = 0
                while last - start < 3 * idle:
                    w.write(GET)
                    assert b" 200 " in await read_response(r)
                    n += 1
                    await asyncio.sleep(0.05)
                    now = time.monotonic()
                    if now - last >= idle / 2:  # too long a gap to prove anything: again
                        break
                    last = now
                else:
                    assert n > 10 and len(srv.conns) == 1
                    w.close()
                    return
                w.close()
        finally:
            await srv.stop()

    uvloop.run(go())

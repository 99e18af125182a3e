"""Websocket framing the bridge does itself: frames built once for every subscriber
(``ws_frame``), and a server websocket that refuses unmasked client frames (RFC 6455 5.1).

"A server MUST close the connection upon receiving a frame that is not masked ... it MAY send
a Close frame with a status code of 1002 (protocol error)". aiohttp's frame reader (the Cython
``aiohttp/_websocket/reader_c`` and its pure-Python twin ``reader_py``) serves clients and
servers alike: it reads the mask bit only to unmask, accepts unmasked frames and offers no
option or hook to refuse them. So the check sits in front of it: ``StrictWebSocket`` wraps the
frame parser that aiohttp hands to the connection (``RequestHandler.set_parser`` in
``WebSocketResponse._post_start``) in ``MaskedFramesOnly``, which follows the frame headers in
the byte stream (payloads are skipped by length, not copied) and, at the first frame without
the mask bit, sends Close 1002 and closes the connection without passing the bytes on.

aiohttp private names used, checked at import so an upgrade that renames them fails loudly
(and ``tests/test_bridge.py`` sends unmasked frames): ``WebSocketResponse._post_start`` and
the connection's ``_payload_parser`` (the parser it feeds) and ``_message_tail`` (bytes that
arrived before the parser existed).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

UNMASKED = struct.pack("!H", 1002) + b"client frames must be masked (RFC 6455 5.1)"

_missing = {"_payload_parser", "_message_tail"} - set(getattr(RequestHandler, "__slots__", ()))
if _missing or not hasattr(web.WebSocketResponse, "_post_start"):
    raise ImportError(f"aiohttp changed: feed/frames.py needs {sorted(_missing)}, _post_start")


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked, final websocket frame (RFC 6455 5.2), built once per message."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


class MaskedFramesOnly:
    """A frame parser in front of aiohttp's: passes the bytes on while every frame header has
    the mask bit; else Close 1002."""

    __slots__ = ("parser", "transport", "head", "skip", "failed")

    def __init__(self, parser: Any, transport: asyncio.Transport | None) -> None:
        self.parser = parser
        self.transport = transport
        self.head = b""  # a frame header cut by the end of the last chunk
        self.skip = 0  # bytes of the current frame's payload still to come
        self.failed = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.failed:
            return True, b""
        if not self.all_masked(data):
            self.failed = True
            t = self.transport
            if t is not None and not t.is_closing():
                t.write(ws_frame(UNMASKED, 0x8))
                t.close()  # after the close frame is flushed
            return True, b""
        return self.parser.feed_data(data)

    def feed_eof(self) -> None:
        self.parser.feed_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)

    def all_masked(self, data: bytes) -> bool:
        """Walk the frame headers in ``data`` (RFC 6455 5.2): 2 bytes, then a 2 or 8 byte
        length for sizes 126/127, then the 4 byte mask key, then the payload."""
        buf = self.head + data if self.head else data
        self.head = b""
        i, n = self.skip, len(buf)
        while i < n:
            if n - i < 2:
                break
            second = buf[i + 1]
            if not second & 0x80:
                return False
            size = second & 0x7F
            ext = 2 if size == 126 else 8 if size == 127 else 0
            if n - i < 2 + ext:
                break
            if ext:
                size = int.from_bytes(buf[i + 2 : i + 2 + ext], "big")
            i += 2 + ext + 4 + size
        else:
            self.skip = i - n
            return True
        self.head = bytes(buf[i:])
        self.skip = 0
        return True


class StrictWebSocket(web.WebSocketResponse):
    """``web.WebSocketResponse`` that closes the connection (1002) on an unmasked frame."""

    def _post_start(self, request: web.BaseRequest, *args: Any, **kwargs: Any) -> None:
        proto = request.protocol
        tail, proto._message_tail = proto._message_tail, b""  # check these bytes too
        super()._post_start(request, *args, **kwargs)
        guard = MaskedFramesOnly(proto._payload_parser, request.transport)  # type: ignore[arg-type]
        proto._payload_parser = guard
        if tail:
            eof, _ = guard.feed_data(tail)
            if eof:
                proto.close()

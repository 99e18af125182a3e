"""Confine a quickfix acceptor's listening socket to loopback.

The quickfix C++ engine (1.16, the PyPI package) binds every acceptor port to INADDR_ANY and
has no setting for the address (``SocketAcceptHost`` exists in QuickFIX/J and QuickFIX/n, not
here). Its acceptors take plain FIX, Password(554) included, and only the front door
(gateways/fix/front.py, on loopback, TLS in front when configured) may reach them. So once an
acceptor has started, its listening socket is replaced, under the same descriptor number,
by one bound to 127.0.0.1:

1. find quickfix's listener (our own process's socket listening on the acceptor's port) and
   attach a socket filter that drops every packet whose source is not 127.0.0.0/8: from here
   on nothing but loopback can even start a handshake with it;
2. ``dup2`` a new socket listening on 127.0.0.1 (a port of its own) onto that descriptor;
   quickfix's accept thread takes its connections from the new socket at its next
   ``accept``;
3. a thread already blocked in ``accept`` on the old socket keeps it alive until it returns:
   one loopback connection to the old port wakes it (quickfix takes it and sees it close at
   once), then the old socket is released; we wait until no listener remains on the port;
4. any connection from off loopback that got in during the moment between quickfix's
   ``listen`` and step 1 is shut down.

Afterwards nothing of the acceptor listens off loopback, and nothing off loopback is
connected to it. ``ss -ltn`` shows 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import socket
import struct
import time
from pathlib import Path

SO_ATTACH_FILTER = 26
SKF_NET_OFF = -0x100000  # classic BPF: loads relative to the network (IP) header
LISTEN, ESTABLISHED = "0A", "01"
SETTLE_TIMEOUT = 10.0


class LoopbackError(RuntimeError):
    pass


def _bpf(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


# src = IP source address; accept the packet when (src & 255.0.0.0) == 127.0.0.0, else drop
_ONLY_LOOPBACK = b"".join(
    [
        _bpf(0x20, 0, 0, SKF_NET_OFF + 12),  # ld [net + 12]
        _bpf(0x54, 0, 0, 0xFF000000),  # and #0xff000000
        _bpf(0x15, 0, 1, 0x7F000000),  # jeq #0x7f000000, keep, drop
        _bpf(0x06, 0, 0, 0xFFFFFFFF),  # keep: ret #-1
        _bpf(0x06, 0, 0, 0),  # drop: ret #0
    ]
)


def _attach_loopback_filter(sock: socket.socket) -> None:
    program = ctypes.create_string_buffer(_ONLY_LOOPBACK, len(_ONLY_LOOPBACK))
    fprog = struct.pack("@HP", len(_ONLY_LOOPBACK) // 8, ctypes.addressof(program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _listener_fd(port: int) -> int:
    """The descriptor of this process's IPv4 TCP socket listening on ``port``."""
    for entry in Path("/proc/self/fd").iterdir():
        fd = int(entry.name)
        with contextlib.suppress(OSError):
            if not os.readlink(entry).startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(fd)) as s:  # family and type as they are
                if (
                    s.family == socket.AF_INET
                    and s.type == socket.SOCK_STREAM
                    and s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    and s.getsockname()[1] == port
                ):
                    return fd
    raise LoopbackError(f"no socket of this process listens on port {port}")


def _tcp_table() -> list[tuple[ipaddress.IPv4Address, int, ipaddress.IPv4Address, str, str]]:
    """(local address, local port, remote address, state, inode) of /proc/self/net/tcp."""
    rows = []
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        (la, lp), (ra, _rp) = (c.split(":") for c in cols[1:3])
        rows.append(
            (
                ipaddress.IPv4Address(struct.pack("=I", int(la, 16))),
                int(lp, 16),
                ipaddress.IPv4Address(struct.pack("=I", int(ra, 16))),
                cols[3],
                cols[9],
            )
        )
    return rows


def _still_listening_off_loopback(port: int) -> bool:
    return any(
        lp == port and st == LISTEN and not la.is_loopback for la, lp, _r, st, _i in _tcp_table()
    )


def _cut_remote_connections(port: int) -> int:
    """Shut down every connection to local ``port`` from off loopback; returns how many."""
    inodes = {
        ino
        for _la, lp, ra, st, ino in _tcp_table()
        if lp == port and st == ESTABLISHED and not ra.is_loopback
    }
    cut = 0
    for entry in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(entry)[8:-1] in inodes:
                with socket.socket(fileno=os.dup(int(entry.name))) as s:
                    s.shutdown(socket.SHUT_RDWR)
                    cut += 1
    return cut


def confine(port: int) -> int:
    """Move quickfix's listener on ``port`` (any address) to 127.0.0.1; returns the port the
    acceptor now listens on (a new one: the old port is held until the swap completes)."""
    fd = _listener_fd(port)
    with socket.socket(fileno=os.dup(fd)) as old:
        _attach_loopback_filter(old)
    new = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        new.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        new.bind(("127.0.0.1", 0))
        new.listen(4096)
        new_port = int(new.getsockname()[1])
        os.dup2(new.fileno(), fd)  # quickfix's descriptor is now the loopback listener
    finally:
        new.close()  # the descriptor quickfix holds keeps it open
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while _still_listening_off_loopback(port):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            pass  # wakes an accept blocked on the old socket, which then goes away
        if time.monotonic() > deadline:
            raise LoopbackError(f"the acceptor's old listener on port {port} did not close")
        time.sleep(0.01)
    _cut_remote_connections(port)
    return new_port

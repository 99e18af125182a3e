"""TLS for the gateways' public ports (FIX and JSON), terminated by asyncio in the gateway.

Off when ``tls_cert`` is empty (the shipped default: the ports listen on loopback). With a
certificate chain and its key (PEM files), the port speaks only TLS 1.2 or newer; a client
that does not complete the handshake never reaches the session layer. For the FIX gateway the
front door terminates TLS and hands the plain stream to its quickfix acceptors on loopback, so
quickfix itself needs no SSL settings.
"""

from __future__ import annotations

import ssl


class TlsError(Exception):
    """The configured certificate or key cannot be used; the message names the file."""


def server_context(cert: str, key: str) -> ssl.SSLContext | None:
    """A server context for ``cert``/``key`` (PEM), or None when ``cert`` is empty."""
    if not cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"cannot load TLS certificate {cert!r} / key {key!r}: {e}") from None
    return ctx

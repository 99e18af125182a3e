"""Request signing for the REST gateway: HMAC-SHA256 with the API key's secret.

Two schemes, one key store (gateways/accounts.py, secrets sealed by gateways/vault.py):

- ``/api/v3`` (Binance): header ``X-MBX-APIKEY``; the parameters ``timestamp`` (ms),
  optional ``recvWindow`` (ms, default 5000, at most ``recv_window_max``) and ``signature``
  (hex HMAC-SHA256 over the query string concatenated with the body, as sent, without the
  ``signature`` parameter) in the query string or the form body.
- ``/api/v1`` (docs/rest.md): headers ``X-API-KEY``, ``X-API-TIMESTAMP`` (ms) and
  ``X-API-SIGNATURE`` = hex HMAC-SHA256(secret, timestamp + METHOD + path[?query] + body),
  optional ``X-API-RECV-WINDOW``.

Both refuse a timestamp more than 1 s ahead of the server or older than the receive window,
and a signed order request seen before (the same signature within ``recv_window_max``, the
longest window a request may claim): a replayed or retried request never places a second
order. A request refused by a rate limit is not "seen" and may be sent again as it was.
Memory: 64 bits of each accepted write's signature for 60 s (about 150 bytes an entry).
"""

from __future__ import annotations

import hmac
import time
from collections import deque
from typing import Any

from gateways.accounts import AccountStore, ApiKey

KEY_TTL = 1.0  # seconds a looked-up key is reused: a revocation applies within this time
AHEAD_MS = 1000  # Binance: a timestamp this far ahead of the server is refused


class AuthError(Exception):
    """``kind``: missing | bad_key | bad_signature | timestamp | window | replay | permission"""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Signer:
    def __init__(self, store: AccountStore, vault: Any, recv_window_max: int) -> None:
        self.store = store
        self.vault = vault
        self.recv_window_max = recv_window_max
        self.cache: dict[str, tuple[float, ApiKey | None, bytes]] = {}
        self.seen: dict[int, int] = {}  # 64 bits of a signature -> ms it may be forgotten after
        self.seen_order: deque[tuple[int, int]] = deque()
        self.pending: tuple[int, int] | None = None  # a write verified, not yet accepted

    def key(self, api_key: str) -> tuple[ApiKey, bytes] | None:
        now = time.monotonic()
        hit = self.cache.get(api_key)
        if hit is None or hit[0] < now:
            found = self.store.signing_key(api_key, self.vault) if self.vault else None
            if len(self.cache) > 100_000:
                self.cache.clear()
            if found is None:
                hit = (now + KEY_TTL, None, b"")
            else:
                hit = (now + KEY_TTL, found[0], found[1])
            self.cache[api_key] = hit
        return None if hit[1] is None else (hit[1], hit[2])

    def verify(
        self,
        api_key: str,
        payload: bytes,
        signature: str,
        timestamp: str,
        window: str | None,
        once: bool,
    ) -> ApiKey:
        """The key, if ``signature`` is its HMAC of ``payload`` and the time is right;
        ``once``: a write, whose signature must not have been seen inside its window. Such a
        signature counts as seen once the caller ``accept()``s the request (after its rate
        limits), so a request refused with 429 may be sent again as it was."""
        self.pending = None
        if not api_key:
            raise AuthError("missing", "API key missing")
        found = self.key(api_key)
        if found is None:
            raise AuthError("bad_key", "unknown or revoked API key")
        key, secret = found
        want = hmac.digest(secret, payload, "sha256")  # one call into OpenSSL
        try:
            got = bytes.fromhex(signature)
        except ValueError:
            got = b""
        if not hmac.compare_digest(want, got):
            raise AuthError("bad_signature", "signature for this request is not valid")
        now = time.time_ns() // 1_000_000
        ts = _int(timestamp, "timestamp")
        recv = 5000 if window is None or window == "" else _int(window, "recvWindow")
        if not 0 < recv <= self.recv_window_max:
            raise AuthError("window", f"recvWindow must be 1..{self.recv_window_max}")
        if ts >= now + AHEAD_MS:
            raise AuthError(
                "timestamp", "timestamp for this request was 1000ms ahead of the server's time"
            )
        if now - ts > recv:
            raise AuthError("timestamp", "timestamp for this request is outside of the recvWindow")
        if once:  # remembered for the longest window any request may claim: the window a
            # request names is not always under its signature (v1 sends it as a header)
            self.check_new(int.from_bytes(want[:8], "little"), ts + self.recv_window_max, now)
        return key

    def check_new(self, sig: int, until: int, now: int) -> None:
        seen, order = self.seen, self.seen_order
        while order and order[0][0] < now:
            _, old = order.popleft()
            if seen.get(old, 0) < now:
                seen.pop(old, None)
        if sig in seen:
            raise AuthError("replay", "this signed request was already received")
        self.pending = (sig, until)

    def accept(self) -> None:
        """The request ``verify`` just passed goes ahead: its signature is now seen (the
        handler runs with no await in between, so ``pending`` is that request's)."""
        if self.pending is not None:
            sig, until = self.pending
            self.pending = None
            self.seen[sig] = until
            self.seen_order.append((until, sig))


def _int(text: str | None, name: str) -> int:
    if not text or not text.isdigit() or len(text) > 15:
        raise AuthError("timestamp", f"{name} must be a positive integer of milliseconds")
    return int(text)


def binance_payload(query: str, body: bytes) -> tuple[str, bytes]:
    """(signature, what it signs): the query string followed by the body, as sent, with the
    ``signature`` parameter taken out (Binance requires it last, in either part)."""
    for part in ("q", "b"):
        text = query if part == "q" else body.decode("latin-1")
        cut = text.rfind("signature=")
        if cut < 0 or (cut and text[cut - 1] != "&"):
            continue
        sig = text[cut + len("signature=") :]
        if "&" in sig:
            raise AuthError("bad_signature", "signature must be the last parameter")
        rest = text[: max(cut - 1, 0)]
        payload = rest + body.decode("latin-1") if part == "q" else query + rest
        return sig, payload.encode("latin-1")
    raise AuthError("missing", "signature missing")

"""Token buckets for per-account rate limits (shared by the gateways)."""

from __future__ import annotations

from typing import Any


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``. Time is passed in, not read."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, n: float = 1.0) -> float:
        """Take ``n`` tokens: 0.0 if allowed, else the seconds to wait before retrying."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= n:
            self.tokens = tokens - n
            return 0.0
        self.tokens = tokens
        return (n - tokens) / self.rate if self.rate > 0 else float("inf")


class KeyedBuckets:
    """One bucket per key (a client address, an email), at most ``kept`` of them: past that, the
    idle ones (refilled to full, so forgetting them changes nothing) are forgotten, or if none
    is idle the oldest half."""

    def __init__(self, rate: float, burst: int, kept: int = 100_000) -> None:
        self.rate, self.burst, self.kept = rate, burst, kept
        self.buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float) -> float:
        """0.0 if allowed, else the seconds to wait before retrying."""
        b = self.buckets.get(key)
        if b is None:
            if len(self.buckets) >= self.kept:
                self.forget_idle(now)
            b = self.buckets[key] = TokenBucket(self.rate, self.burst, now)
        return b.take(now)

    def forget_idle(self, now: float) -> None:
        full = [k for k, b in self.buckets.items() if now - b.stamp > b.burst / b.rate]
        for k in full or list(self.buckets)[: self.kept // 2]:
            del self.buckets[k]


class AccountLimits:
    """Per-account limits shared by all of an account's sessions on one gateway: every request
    takes a request token, and an order-entry request an order token too.

    ``cfg`` is a gateway's config section (``orders_per_second``, ``order_burst``,
    ``requests_per_second``, ``request_burst``)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.buckets: dict[int, tuple[TokenBucket, TokenBucket]] = {}  # account -> (orders, all)

    def take(self, account: int, trading: bool, now: float) -> float:
        """0.0 if allowed, else the seconds to wait before retrying."""
        b = self.buckets.get(account)
        if b is None:
            c = self.cfg
            b = self.buckets[account] = (
                TokenBucket(c.orders_per_second, c.order_burst, now),
                TokenBucket(c.requests_per_second, c.request_burst, now),
            )
        return b[1].take(now) or (b[0].take(now) if trading else 0.0)

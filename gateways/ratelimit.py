"""Token buckets for per-account rate limits (shared by the gateways)."""

from __future__ import annotations


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

"""The shared token buckets (gateways/ratelimit.py); time is passed in, so no test waits."""

from __future__ import annotations

from gateways.ratelimit import KeyedBuckets


def test_keyed_buckets_forget_idle_keys_first_and_stay_bounded() -> None:
    """The per-address (and per-email) limit table is bounded: past ``kept`` keys the idle
    ones (refilled, so nothing is lost) go first; a key still limited is kept if any is idle."""
    b = KeyedBuckets(rate=1.0, burst=2, kept=4)
    assert b.take("busy", 0.0) == 0.0 and b.take("busy", 0.0) == 0.0
    assert b.take("busy", 0.0) > 0  # limited
    for k in ("a", "b", "c"):
        b.take(k, 0.0)
    b.take("late", 10.0)  # full: a, b, c and busy are idle by now (refilled in 2 s)
    assert set(b.buckets) == {"late"}
    for k in ("w", "x", "y"):
        b.take(k, 10.0)
        b.take(k, 10.0)  # all four limited, none idle
    b.take("z", 10.0)
    assert len(b.buckets) <= 4 and "z" in b.buckets

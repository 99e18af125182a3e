"""Every movement of funds the engine makes, in one place: lock, release, settle, fee.

A ledger row is ``[avail_0, locked_0, avail_1, locked_1, ...]`` (engine.ledger) and ``col`` is
the offset of an asset's "available" column, so ``col + 1`` is its "locked" one. Amounts are
non-negative integers in minor units. The callers check that funds are there (admission) and
these functions only move them, so conservation holds by construction: each one moves an
amount from one column to another, or, in ``settle``, the buyer's quote and the seller's base
to the other side and the fees to the fee account, summing to zero per asset.

Range (the compiled kernel must never wrap where Python would not): every balance and every
notional is at most 2**63-1 - deposits cannot take an asset's total past it, and the config
refuses a market whose max price x max qty x tick-lot value passes it - so sums and
differences of them stay in range; ``fee`` is the one product that could not (a notional near
2**63 times a rate in ppm), so it is computed without forming that product.
"""

from __future__ import annotations

PPM = 1_000_000


def fee(amount: int, ppm: int) -> int:
    """``amount * ppm // PPM`` (rounded down), exactly, without the wide product: with
    ``amount = a * PPM + b`` it is ``a * ppm + b * ppm // PPM``, and both terms stay below
    ``amount`` and ``PPM**2``."""
    return amount // PPM * ppm + amount % PPM * ppm // PPM


def lock(row: list[int], col: int, amount: int) -> None:
    """Available to locked (an order accepted, or grown by a replace)."""
    row[col] -= amount
    row[col + 1] += amount


def release(row: list[int], col: int, amount: int) -> None:
    """Locked back to available (an order cancelled, expired, done, or shrunk)."""
    row[col + 1] -= amount
    row[col] += amount


def settle(
    buyer: list[int],
    seller: list[int],
    fees: list[int],
    base_col: int,
    quote_col: int,
    base: int,
    notional: int,
    fee_base: int,
    fee_quote: int,
) -> None:
    """One fill: the buyer's locked quote pays ``notional`` and receives ``base`` less its fee;
    the seller's locked base pays ``base`` and receives ``notional`` less its fee; the fee
    account receives both fees."""
    buyer[quote_col + 1] -= notional
    buyer[base_col] += base - fee_base
    seller[base_col + 1] -= base
    seller[quote_col] += notional - fee_quote
    fees[base_col] += fee_base
    fees[quote_col] += fee_quote

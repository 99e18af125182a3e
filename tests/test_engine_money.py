"""Funds at the extremes: the fee without the wide product, conservation of a fill, and a whole
trade at the largest price x size the config allows with balances near 2**63-1 (where a C
integer would wrap; Python's, and so the compiled kernel's, must not)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine import money
from engine.core import Engine
from protocol.config import loads
from protocol.messages import BalancesRequest, Deposit, Executions, NewOrder, Watch

MAX_INT = 2**63 - 1


@given(st.integers(0, MAX_INT), st.integers(-money.PPM, money.PPM))
def test_fee_is_the_exact_floor_of_amount_times_rate(amount: int, ppm: int) -> None:
    assert money.fee(amount, ppm) == amount * ppm // money.PPM


@given(
    st.integers(0, MAX_INT // 4),
    st.integers(0, MAX_INT // 4),
    st.integers(0, money.PPM),
    st.integers(0, money.PPM),
)
def test_settle_moves_funds_and_creates_none(base: int, notional: int, bp: int, sp: int) -> None:
    buyer, seller, fees = [0, 0, 0, notional], [0, base, 0, 0], [0, 0, 0, 0]
    fb, fq = money.fee(base, bp), money.fee(notional, sp)
    money.settle(buyer, seller, fees, 0, 2, base, notional, fb, fq)
    assert [b + s + f for b, s, f in zip(buyer, seller, fees, strict=True)] == [
        base,
        0,
        notional,
        0,
    ]
    assert buyer == [base - fb, 0, 0, 0] and seller == [0, 0, notional - fq, 0]
    assert min(buyer + seller + fees) >= 0


SIDE = 3_037_000_499  # SIDE * SIDE < 2**63 - 1 < (SIDE + 1) ** 2
EXTREME = f"""
[assets.B]
decimals = 0
[assets.Q]
decimals = 0
[markets.B-Q]
base = "B"
quote = "Q"
tick = "1"
lot = "1"
min_qty = "1"
max_qty = "{SIDE}"
max_price = "{SIDE}"
maker_fee = "0.000999"
taker_fee = "0.0025"
"""


def balances(e: Engine, account: int) -> dict[str, tuple[int, int]]:
    e.apply(BalancesRequest(9, account), 1, b"t")
    (reply,) = e.outbox.pop(b"t")
    return {b.asset: (b.available, b.locked) for b in reply.balances}


def test_a_trade_at_the_largest_price_and_size_settles_exactly() -> None:
    ex = loads(EXTREME)
    e = Engine(ex)
    notional = SIDE * SIDE
    assert notional <= MAX_INT
    e.apply(Deposit(1, 1, "Q", MAX_INT), 1, b"t")  # the buyer: every unit of Q there can be
    e.apply(Deposit(2, 2, "B", SIDE), 1, b"t")
    e.apply(NewOrder(3, 2, "B-Q", 2, 1, 1, SIDE, SIDE), 1, b"t")  # sell it all at the top
    e.apply(NewOrder(4, 1, "B-Q", 1, 1, 2, SIDE, SIDE), 1, b"t")  # buy it all, IOC
    fills = [r for m in e.outbox[b"t"] if type(m) is Executions for r in m.reports if r.last_qty]
    assert [(r.last_px, r.last_qty) for r in fills] == [(SIDE, SIDE)]
    e.outbox.clear()
    fee_b, fee_q = SIDE * 2_500 // 1_000_000, notional * 999 // 1_000_000
    assert balances(e, 1) == {"B": (SIDE - fee_b, 0), "Q": (MAX_INT - notional, 0)}
    assert balances(e, 2) == {"B": (0, 0), "Q": (notional - fee_q, 0)}
    fees = balances(e, ex.engine.fee_account)
    assert fees == {"B": (fee_b, 0), "Q": (fee_q, 0)}
    e.validate()
    e.apply(Deposit(5, 3, "Q", 1), 1, b"t")  # Q's total is 2**63-1 already: refused
    (reply,) = e.outbox.pop(b"t")
    assert reply.code == 2003


def test_an_account_number_past_64_bits_signed_is_refused_not_an_internal_error() -> None:
    """The wire carries unsigned 64-bit integers; an account must fit a signed one in both
    builds (the compiled one keeps accounts as C integers)."""
    e = Engine(loads(EXTREME))
    for cmd in (
        Deposit(1, 2**63, "Q", 5),
        Deposit(2, 2**64 - 1, "Q", 5),
        NewOrder(3, 2**63, "B-Q", 1, 1, 1, 5, 1),
        Watch(4, 2**64 - 1),
    ):
        e.apply(cmd, 1, b"t")
        (reply,) = e.outbox.pop(b"t")
        assert reply.code == 2004, cmd  # INVALID_ACCOUNT
    e.validate()

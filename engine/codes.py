"""The integer codes the engine's hot path uses, defined once.

The core compares and stores plain ints (an IntEnum member costs an attribute lookup and a
Python-level ``__eq__`` per use, and a compiled core wants C integers). Each name below is the
value of a protocol enum member (protocol/enums.py); ``tests/test_engine_codes.py`` holds every
one of them to it, so a renumbered enum fails a test instead of silently changing the engine
(and ``python -O``, which strips asserts, cannot skip that check).
"""

from __future__ import annotations

BUY, SELL = 1, 2  # Side
LIMIT, MARKET = 1, 2  # OrderType
GTC, IOC, FOK, GTD = 1, 2, 3, 4  # TimeInForce
STOP_LOSS, TAKE_PROFIT = 1, 2  # TriggerKind
NEWEST, OLDEST, BOTH = 1, 2, 3  # StpMode: CANCEL_NEWEST, CANCEL_OLDEST, CANCEL_BOTH
E_NEW, E_PART, E_FILL, E_CXL, E_EXP, E_REPL, E_TRIG = 1, 2, 3, 4, 5, 6, 8  # ExecType
S_NEW, S_PART, S_FILLED, S_CXL, S_EXP = 1, 2, 3, 4, 5  # OrderStatus
MAKER, TAKER = 1, 2  # Liquidity
C_USER, C_IOC, C_FOK, C_STP, C_FUNDS, C_DISCONNECT, C_TIME = 1, 2, 3, 4, 5, 6, 7  # CancelReason
C_LINKED = 8  # CancelReason.LINKED

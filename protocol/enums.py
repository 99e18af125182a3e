"""Enumerations shared by every process. Explicit integer values; 0 always means none/unknown."""

from __future__ import annotations

from enum import IntEnum


class Side(IntEnum):
    NONE = 0
    BUY = 1
    SELL = 2


class OrderType(IntEnum):
    NONE = 0
    LIMIT = 1
    MARKET = 2


class TimeInForce(IntEnum):
    NONE = 0  # defaults to GTC for limit orders, IOC for market orders
    GTC = 1
    IOC = 2
    FOK = 3
    GTD = 4  # good till date: GTC until NewOrder.expire_ts (engine time), then EXPIRED


class TriggerKind(IntEnum):
    """A stop order waits, outside the book, until the market's last trade price reaches its
    stop price; then it enters as the limit or market order it carries (``OrderType``)."""

    NONE = 0
    STOP_LOSS = 1  # buy: triggers when the last price rises to the stop; sell: when it falls
    TAKE_PROFIT = 2  # buy: triggers when the last price falls to the stop; sell: when it rises


class StpMode(IntEnum):
    """Self-trade prevention: what happens when an order would match one of the same account."""

    NONE = 0  # market default: CANCEL_NEWEST
    CANCEL_NEWEST = 1  # the incoming (taker) order's remainder is cancelled
    CANCEL_OLDEST = 2  # the resting (maker) order is cancelled, matching goes on
    CANCEL_BOTH = 3


class ExecType(IntEnum):
    NONE = 0
    NEW = 1
    PARTIAL_FILL = 2
    FILL = 3
    CANCELED = 4
    EXPIRED = 5
    REPLACED = 6
    REJECTED = 7
    TRIGGERED = 8  # a stop order's stop was reached: it now works as its limit/market order


class OrderStatus(IntEnum):
    NONE = 0
    NEW = 1
    PARTIALLY_FILLED = 2
    FILLED = 3
    CANCELED = 4
    EXPIRED = 5
    REJECTED = 6


class Liquidity(IntEnum):
    NONE = 0
    MAKER = 1
    TAKER = 2


class CancelReason(IntEnum):
    """Why the engine cancelled or expired an order (carried in ExecReport.reason_code)."""

    NONE = 0
    USER = 1  # the owner asked (cancel or mass cancel)
    IOC_REMAINDER = 2  # immediate-or-cancel / market remainder that found no liquidity
    FOK_UNFILLABLE = 3  # fill-or-kill that could not fill completely
    SELF_TRADE = 4  # self-trade prevention
    NO_FUNDS = 5  # a market order ran out of locked funds
    DISCONNECT = 6  # cancel-on-disconnect
    EXPIRE_TIME = 7  # a good-till-date order reached its expiry time
    LINKED = 8  # the other order of its one-cancels-the-other list filled, triggered or went


class RejectCode(IntEnum):
    """Stable numeric reject codes, grouped by subsystem (exchange-core CommandResultCode style).

    1xxx: protocol and authorisation; 2xxx: ledger and risk; 3xxx: orders and matching;
    4xxx: service availability.
    """

    NONE = 0
    MALFORMED = 1001
    UNKNOWN_MESSAGE = 1002
    NOT_AUTHORIZED = 1003
    TOO_LARGE = 1004
    NOT_LOGGED_ON = 1005
    BAD_CREDENTIALS = 1006
    INVALID_FIELD = 1007
    TOTP_REQUIRED = 1008  # sign-in: the password was right; a two-factor code is needed
    ALREADY_EXISTS = 1009  # sign-up: the email is registered

    INSUFFICIENT_FUNDS = 2001
    UNKNOWN_ASSET = 2002
    INVALID_AMOUNT = 2003
    INVALID_ACCOUNT = 2004

    UNKNOWN_MARKET = 3001
    INVALID_PRICE = 3002
    INVALID_QUANTITY = 3003
    QUANTITY_BELOW_MIN = 3004
    QUANTITY_ABOVE_MAX = 3005
    UNKNOWN_ORDER = 3006
    DUPLICATE_CLIENT_ORDER_ID = 3007
    POST_ONLY_WOULD_CROSS = 3008
    INVALID_ORDER_TYPE = 3009
    INVALID_TIME_IN_FORCE = 3010
    INVALID_SIDE = 3011
    REPLACE_INVALID = 3012
    NO_LIQUIDITY = 3013
    INVALID_CLIENT_ORDER_ID = 3014
    MARKET_HALTED = 3015
    WOULD_TRIGGER_IMMEDIATELY = 3016  # a stop whose stop price the last price already reached
    INVALID_STOP_PRICE = 3017
    INVALID_EXPIRE_TIME = 3018
    INVALID_DISPLAY_QTY = 3019  # an iceberg's visible part: 1 lot .. the order's quantity
    INVALID_TRAILING = 3020  # a trailing distance out of range, or on a non-stop order
    INVALID_ORDER_LIST = 3021  # a one-cancels-the-other list whose prices are on wrong sides
    ORDER_LIST_LEG = 3022  # an order of a list cannot be replaced (cancel the list instead)

    ENGINE_UNAVAILABLE = 4001
    RATE_LIMITED = 4002
    TIMEOUT = 4003
    SHUTTING_DOWN = 4004
    INTERNAL = 4005
    DEADLINE_PASSED = 4006  # the command reached the engine after its deadline: not executed
    NOT_EXECUTED = 4007  # a lost reply, resolved: the engine has no record of the command

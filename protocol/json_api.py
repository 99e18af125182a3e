"""The JSON line protocol of gateways/json_tcp: one JSON object per line, both ways.

Requests carry a client-chosen ``id`` (number or string), echoed in the reply, and an ``op``.
Prices and quantities are decimal strings ("50000.00"), never JSON numbers. Replies are
``{"id": .., "ok": true, "result": ..}`` or ``{"id": .., "ok": false, "error": {"code": ..,
"reason": ..}}``; unsolicited events are ``{"event": "execution", "data": {...}}``. The full
reference, with a session typed by hand, is docs/json-protocol.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from protocol.amounts import format_decimal
from protocol.config import MarketSpec

Side = Literal["buy", "sell"]
Id = (
    Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
    | Annotated[str, msgspec.Meta(max_length=128)]
)
OrderId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Account = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class _Req(msgspec.Struct, tag_field="op", forbid_unknown_fields=True):
    id: Id


class ChallengeReq(_Req, tag="challenge"):
    """Step 1 of logon: the server answers with a fresh nonce and the key's salt/iterations."""

    api_key: str


class Logon(_Req, tag="logon"):
    """Step 2: ``proof`` = base64(client_key XOR HMAC-SHA256(stored_key, nonce)), see
    gateways.accounts; the secret itself never crosses the wire."""

    api_key: str
    proof: str


class Place(_Req, tag="place"):
    market: str
    side: Side
    type: Literal["limit", "market"] = "limit"
    price: str | None = None
    qty: str | None = None
    quote_qty: str | None = None  # market buys: amount of quote to spend
    tif: Literal["GTC", "IOC", "FOK", "GTD"] | None = None
    client_order_id: str = ""
    post_only: bool = False
    stp: Literal["cancel_newest", "cancel_oldest", "cancel_both"] | None = None
    # a stop order: waits until the last trade price reaches stop_price, then is this order
    trigger: Literal["stop_loss", "take_profit"] | None = None
    stop_price: str | None = None
    expire_ts: int = 0  # GTD: expiry time, ns since the epoch (engine clock)


class CancelOrder(_Req, tag="cancel"):
    market: str = ""
    order_id: OrderId = 0
    client_order_id: str = ""


class ReplaceOrder(_Req, tag="replace"):
    market: str = ""
    order_id: OrderId = 0
    client_order_id: str = ""
    new_client_order_id: str = ""
    price: str | None = None
    qty: str | None = None  # the new total quantity
    stop_price: str | None = None  # a waiting stop order's new stop price


class CancelAll(_Req, tag="cancel_all"):
    market: str = ""


class GetOrder(_Req, tag="order"):
    market: str = ""
    order_id: OrderId = 0
    client_order_id: str = ""


class GetOpenOrders(_Req, tag="open_orders"):
    market: str = ""


class GetBalances(_Req, tag="balances"):
    pass


class GetFills(_Req, tag="fills"):
    market: str = ""
    limit: int = 100


class GetHistory(_Req, tag="history"):
    """The account's most recently closed orders (filled, canceled, expired), newest last."""

    market: str = ""
    limit: int = 100


class GetQuote(_Req, tag="quote"):
    market: str
    side: Side
    qty: str | None = None
    quote_qty: str | None = None


class GetMarkets(_Req, tag="markets"):
    pass


class PingReq(_Req, tag="ping"):
    pass


class GetStats(_Req, tag="stats"):
    """Health and counters of the gateway (no logon needed)."""


class DepositReq(_Req, tag="deposit"):
    account: Account
    asset: str
    amount: str


class WithdrawReq(_Req, tag="withdraw"):
    account: Account
    asset: str
    amount: str


Request = (
    ChallengeReq
    | Logon
    | Place
    | CancelOrder
    | ReplaceOrder
    | CancelAll
    | GetOrder
    | GetOpenOrders
    | GetBalances
    | GetFills
    | GetHistory
    | GetQuote
    | GetMarkets
    | PingReq
    | GetStats
    | DepositReq
    | WithdrawReq
)

ORDER_OPS = (Place, CancelOrder, ReplaceOrder, CancelAll)
ADMIN_OPS = (DepositReq, WithdrawReq)


# ------------------------------------------------------------------------------- replies


class Error(msgspec.Struct):
    code: int
    reason: str


class Ok(msgspec.Struct):
    id: Id | None
    result: Any
    ok: bool = True


class Err(msgspec.Struct):
    id: Id | None
    error: Error
    ok: bool = False


class Event(msgspec.Struct):
    event: str
    data: Any


class Challenge(msgspec.Struct):
    nonce: str  # base64, valid for this connection until the next challenge
    salt: str  # base64
    iterations: int


class Order(msgspec.Struct, omit_defaults=True):
    """An order as the JSON API shows it: an execution report or an order status."""

    order_id: int
    client_order_id: str
    market: str
    side: str
    status: str
    price: str | None
    qty: str | None
    cum_qty: str
    leaves_qty: str
    cum_quote: str
    exec_type: str | None = None
    type: str | None = None
    tif: str | None = None
    quote_qty: str | None = None
    last_price: str | None = None
    last_qty: str | None = None
    fee: str | None = None
    fee_asset: str | None = None
    liquidity: str | None = None
    trade_id: int | None = None
    reason: str | None = None
    seq: int | None = None
    ts: int | None = None
    post_only: bool | None = None
    trigger: str | None = None  # stop_loss / take_profit
    stop_price: str | None = None
    waiting: bool | None = None  # a stop order whose stop has not been reached
    expire_ts: int | None = None


class BalanceView(msgspec.Struct):
    asset: str
    available: str
    locked: str


class Fill(msgspec.Struct):
    trade_id: int
    order_id: int
    client_order_id: str
    market: str
    side: str
    price: str
    qty: str
    fee: str
    fee_asset: str
    liquidity: str
    ts: int


class MarketView(msgspec.Struct):
    symbol: str
    base: str
    quote: str
    tick: str
    lot: str
    min_qty: str
    max_qty: str
    max_price: str
    maker_fee: str
    taker_fee: str


class QuoteView(msgspec.Struct):
    market: str
    side: str
    qty: str
    quote_qty: str
    worst_price: str | None
    complete: bool


def market_view(spec: MarketSpec) -> MarketView:
    return MarketView(
        spec.symbol,
        spec.base,
        spec.quote,
        spec.tick.text,
        spec.lot.text,
        spec.qty_text(spec.min_qty),
        spec.qty_text(spec.max_qty),
        spec.price_text(spec.max_price),
        _ppm_text(spec.maker_ppm),
        _ppm_text(spec.taker_ppm),
    )


def _ppm_text(ppm: int) -> str:
    return format_decimal(ppm, 6)

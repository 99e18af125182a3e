"""JSON requests -> engine commands, and engine replies -> JSON views, exactly.

Every decimal string is converted with the market's tick/lot or the asset's decimals
(protocol.amounts); a value off the tick or lot is an error with a message that says so.
"""

from __future__ import annotations

from typing import NamedTuple

from gateways.json_tcp import api as A
from protocol import json_api as J
from protocol import messages as M
from protocol.amounts import AmountError, positive_field
from protocol.config import Exchange, MarketSpec
from protocol.enums import (
    CancelReason,
    ExecType,
    Liquidity,
    OrderStatus,
    OrderType,
    RejectCode,
    TriggerKind,
)
from protocol.enums import TimeInForce as Tif
from protocol.json_api import market_view  # noqa: F401 - part of this module's API

SIDES = {"buy": 1, "sell": 2}
SIDE_NAMES = {1: "buy", 2: "sell"}
TIFS = {"GTC": Tif.GTC, "IOC": Tif.IOC, "FOK": Tif.FOK, "GTD": Tif.GTD}
TRIGGERS = {"stop_loss": TriggerKind.STOP_LOSS, "take_profit": TriggerKind.TAKE_PROFIT}
TRIGGER_NAMES = {int(v): k for k, v in TRIGGERS.items()}
TIF_NAMES = {int(v): k for k, v in TIFS.items()}
STPS = {"cancel_newest": 1, "cancel_oldest": 2, "cancel_both": 3}
EXEC_NAMES = {int(e): e.name.lower() for e in ExecType}
STATUS_NAMES = {int(s): s.name.lower() for s in OrderStatus}
REASON_NAMES = {int(r): r.name.lower() for r in CancelReason}
LIQ_NAMES = {int(x): x.name.lower() for x in Liquidity}
TYPE_NAMES = {int(t): t.name.lower() for t in OrderType}


class EdgeReject(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Fields(NamedTuple):
    """How an edge names what a reject talks about (every edge converts with this module)."""

    qty: str = "qty"
    quote_qty: str = "quote_qty"
    markets: str = "op markets"  # where the list of markets is


JSON_FIELDS = Fields()


def market(ex: Exchange, symbol: str, names: Fields = JSON_FIELDS) -> MarketSpec:
    spec = ex.markets.get(symbol)
    if spec is None:
        raise EdgeReject(
            RejectCode.UNKNOWN_MARKET, f"unknown market {symbol!r}; see {names.markets}"
        )
    return spec


def _amount(convert, text: str | None, code: int, what: str, name_it: bool = False) -> int:
    """``name_it``: a reason that does not name the field (a stop_price off the tick reads
    "price must be a multiple of ...") is prefixed with it."""
    try:
        return positive_field(convert, text, what)
    except AmountError as e:
        reason = str(e)
        if name_it and what not in reason:
            reason = f"{what}: {reason}"
        raise EdgeReject(code, reason) from None


def _price(spec: MarketSpec, text: str | None, code: int, what: str) -> int:
    """A price field in ticks (0 when absent), at most the market's maximum."""
    ticks = _amount(spec.price_to_ticks, text, code, what, name_it=True)
    if ticks > spec.max_price:
        raise EdgeReject(
            code, f"{what} must be at most {spec.price_text(spec.max_price)}, was {text}"
        )
    return ticks


def _qty(spec: MarketSpec, text: str | None, what: str) -> int:
    """An order quantity in lots (0 when absent), within the market's minimum and maximum."""
    qty = _amount(spec.qty_to_lots, text, RejectCode.INVALID_QUANTITY, what)
    if qty > spec.max_qty:
        raise EdgeReject(
            RejectCode.QUANTITY_ABOVE_MAX,
            f"{what} must be at most {spec.qty_text(spec.max_qty)}, was {text}",
        )
    if qty and qty < spec.min_qty:
        raise EdgeReject(
            RejectCode.QUANTITY_BELOW_MIN,
            f"{what} must be at least {spec.qty_text(spec.min_qty)}, was {text}",
        )
    return qty


def place(ex: Exchange, account: int, r: J.Place, names: Fields = JSON_FIELDS) -> M.NewOrder:
    """``r`` is this gateway's place (api.Place: icebergs and trailing stops too) or the shared
    one (the REST gateway's, without them)."""
    spec = market(ex, r.market, names)
    q, qq = names.qty, names.quote_qty
    price = _price(spec, r.price, RejectCode.INVALID_PRICE, "price")
    qty = _qty(spec, r.qty, q)
    quote_qty = _amount(spec.quote_to_units, r.quote_qty, RejectCode.INVALID_QUANTITY, qq)
    if r.type == "limit" and not (price and qty):
        raise EdgeReject(RejectCode.INVALID_FIELD, f"a limit order needs price and {q}")
    if r.type == "market" and price:
        raise EdgeReject(RejectCode.INVALID_PRICE, "a market order takes no price")
    if r.type == "market" and bool(qty) == bool(quote_qty):
        raise EdgeReject(RejectCode.INVALID_FIELD, f"a market order needs {q}, or {qq} (buys)")
    stop = _amount(
        spec.price_to_ticks, r.stop_price, RejectCode.INVALID_STOP_PRICE, "stop_price", True
    )
    display = trail = 0
    if isinstance(r, A.Place):
        display = _amount(
            spec.qty_to_lots, r.display_qty, RejectCode.INVALID_DISPLAY_QTY, "display_qty", True
        )
        trail = r.trailing_bps  # its range is the engine's to check (INVALID_TRAILING)
    if stop and not r.trigger:
        raise EdgeReject(RejectCode.INVALID_STOP_PRICE, "give trigger and stop_price together")
    if r.trigger and not stop and not trail:
        raise EdgeReject(
            RejectCode.INVALID_STOP_PRICE,
            "a stop order needs stop_price (or trailing_bps, for a trailing stop)",
        )
    return M.NewOrder(
        0,
        account,
        r.market,
        SIDES[r.side],
        1 if r.type == "limit" else 2,
        int(TIFS[r.tif]) if r.tif else 0,
        price,
        qty,
        quote_qty,
        r.client_order_id,
        r.post_only,
        STPS[r.stp] if r.stp else 0,
        0,
        int(TRIGGERS[r.trigger]) if r.trigger else 0,
        stop,
        r.expire_ts,
        display,
        trail,
    )


def place_oco(ex: Exchange, account: int, r: A.PlaceOco) -> M.NewOrderList:
    """A one-cancels-the-other list: amounts converted here; which side of the last price each
    price is on, funds and client ids are the engine's to check."""
    spec = market(ex, r.market)
    return M.NewOrderList(
        0,
        account,
        r.market,
        SIDES[r.side],
        _qty(spec, r.qty, "qty"),
        _price(spec, r.price, RejectCode.INVALID_PRICE, "price"),
        _price(spec, r.stop_price, RejectCode.INVALID_STOP_PRICE, "stop_price"),
        _price(spec, r.stop_limit_price, RejectCode.INVALID_PRICE, "stop_limit_price"),
        "",
        r.limit_client_order_id,
        r.stop_client_order_id,
        STPS[r.stp] if r.stp else 0,
    )


def replace(
    ex: Exchange, account: int, r: J.ReplaceOrder, names: Fields = JSON_FIELDS
) -> M.Replace:
    spec = market(ex, r.market, names) if r.market else None
    if (r.price or r.qty or r.stop_price) and spec is None:
        raise EdgeReject(RejectCode.INVALID_FIELD, f"give market with a new price or {names.qty}")
    price = qty = stop = 0
    if spec is not None:
        price = _amount(spec.price_to_ticks, r.price, RejectCode.INVALID_PRICE, "price")
        qty = _amount(spec.qty_to_lots, r.qty, RejectCode.INVALID_QUANTITY, names.qty)
        stop = _amount(
            spec.price_to_ticks, r.stop_price, RejectCode.INVALID_STOP_PRICE, "stop_price"
        )
    _need_ref(r.order_id, r.client_order_id)
    return M.Replace(
        0, account, r.market, r.order_id, r.client_order_id, r.new_client_order_id, price, qty,
        0, stop,
    )  # fmt: skip


def quote(ex: Exchange, account: int, r: J.GetQuote, names: Fields = JSON_FIELDS) -> M.QuoteRequest:
    spec = market(ex, r.market, names)
    qty = _amount(spec.qty_to_lots, r.qty, RejectCode.INVALID_QUANTITY, names.qty)
    quote_qty = _amount(
        spec.quote_to_units, r.quote_qty, RejectCode.INVALID_QUANTITY, names.quote_qty
    )
    return M.QuoteRequest(0, r.market, SIDES[r.side], qty, quote_qty, account)


def ledger(ex: Exchange, r: J.DepositReq | J.WithdrawReq) -> M.Deposit | M.Withdraw:
    if r.asset not in ex.assets:
        raise EdgeReject(RejectCode.UNKNOWN_ASSET, f"unknown asset {r.asset!r}")
    amount = _amount(
        lambda t: ex.amount_to_units(r.asset, t), r.amount, RejectCode.INVALID_AMOUNT, "amount"
    )
    cls = M.Deposit if isinstance(r, J.DepositReq) else M.Withdraw
    return cls(0, r.account, r.asset, amount)


def _need_ref(order_id: int, client_order_id: str) -> None:
    if not order_id and not client_order_id:
        raise EdgeReject(RejectCode.INVALID_FIELD, "give order_id or client_order_id")


def check_market(ex: Exchange, symbol: str) -> None:
    if symbol:
        market(ex, symbol)


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= 1000:
        raise EdgeReject(RejectCode.INVALID_FIELD, f"limit must be 1..1000, was {limit}")


def command(ex: Exchange, account: int, r: J.Request) -> M.Command:  # noqa: C901 - a dispatch table
    """The engine command for a logged-on session's request (EdgeReject if it is invalid)."""
    match r:
        case J.Place():
            return place(ex, account, r)
        case A.PlaceOco():
            return place_oco(ex, account, r)
        case J.CancelOrder():
            check_market(ex, r.market)
            _need_ref(r.order_id, r.client_order_id)
            return M.Cancel(0, account, r.market, r.order_id, r.client_order_id)
        case J.ReplaceOrder():
            return replace(ex, account, r)
        case J.CancelAll():
            check_market(ex, r.market)
            return M.MassCancel(0, account, r.market)
        case J.GetOrder():
            check_market(ex, r.market)
            _need_ref(r.order_id, r.client_order_id)
            return M.OrderStatusRequest(0, account, r.market, r.order_id, r.client_order_id)
        case J.GetOpenOrders():
            check_market(ex, r.market)
            return M.OpenOrdersRequest(0, account, r.market)
        case J.GetBalances():
            return M.BalancesRequest(0, account)
        case J.GetFills():
            check_market(ex, r.market)
            _check_limit(r.limit)
            return M.FillsRequest(0, account, r.market, r.limit)
        case J.GetHistory():
            check_market(ex, r.market)
            _check_limit(r.limit)
            return M.OrderHistoryRequest(0, account, r.market, r.limit)
        case J.GetQuote():
            return quote(ex, account, r)
        case J.DepositReq() | J.WithdrawReq():
            return ledger(ex, r)
    raise EdgeReject(RejectCode.UNKNOWN_MESSAGE, f"op {type(r).__name__} is not an engine command")


# ------------------------------------------------------------------------------- replies


def report_view(ex: Exchange, r: M.ExecReport) -> J.Order:
    spec = ex.markets[r.market]
    view = J.Order(
        r.order_id,
        r.client_order_id,
        r.market,
        SIDE_NAMES.get(r.side, "?"),
        STATUS_NAMES.get(r.status, "?"),
        spec.price_text(r.price) if r.price else None,
        spec.qty_text(r.qty) if r.qty else None,
        spec.qty_text(r.cum_qty),
        spec.qty_text(r.leaves_qty),
        spec.quote_text(r.cum_quote),
        exec_type=EXEC_NAMES.get(r.exec_type),
        seq=r.seq,
        ts=r.ts,
    )
    if r.quote_qty:
        view.quote_qty = spec.quote_text(r.quote_qty)
    if r.last_qty:
        view.last_price = spec.price_text(r.last_px)
        view.last_qty = spec.qty_text(r.last_qty)
        buyer = r.side == 1
        view.fee = spec.base_text(r.fee) if buyer else spec.quote_text(r.fee)
        view.fee_asset = spec.base if buyer else spec.quote
        view.liquidity = LIQ_NAMES.get(r.liquidity)
        view.trade_id = r.trade_id
    if r.reason_code:
        view.reason = REASON_NAMES.get(r.reason_code)
    return view


def order_view(ex: Exchange, o: M.OrderState) -> J.Order:
    spec = ex.markets[o.market]
    return A.Order(
        o.order_id,
        o.client_order_id,
        o.market,
        SIDE_NAMES.get(o.side, "?"),
        STATUS_NAMES.get(o.status, "?"),
        spec.price_text(o.price) if o.price else None,
        spec.qty_text(o.qty) if o.qty else None,
        spec.qty_text(o.cum_qty),
        spec.qty_text(o.leaves_qty),
        spec.quote_text(o.cum_quote),
        type=TYPE_NAMES.get(o.type),
        tif=TIF_NAMES.get(o.tif),
        quote_qty=spec.quote_text(o.quote_qty) if o.quote_qty else None,
        post_only=o.post_only,
        ts=o.updated_ts,
        trigger=TRIGGER_NAMES.get(o.trigger),
        stop_price=spec.price_text(o.stop_price) if o.stop_price else None,
        waiting=True if o.waiting else None,
        expire_ts=o.expire_ts or None,
        display_qty=spec.qty_text(o.display_qty) if o.display_qty else None,
        trailing_bps=o.trailing_bps or None,
        trail_price=spec.price_text(o.trail_price) if o.trail_price else None,
        list_id=o.list_id or None,
    )


def fill_view(ex: Exchange, r: M.ExecReport) -> J.Fill:
    spec = ex.markets[r.market]
    buyer = r.side == 1
    return J.Fill(
        r.trade_id,
        r.order_id,
        r.client_order_id,
        r.market,
        SIDE_NAMES[r.side],
        spec.price_text(r.last_px),
        spec.qty_text(r.last_qty),
        spec.base_text(r.fee) if buyer else spec.quote_text(r.fee),
        spec.base if buyer else spec.quote,
        LIQ_NAMES.get(r.liquidity, "?"),
        r.ts,
    )


def result(ex: Exchange, msg: object, cmd: object = None) -> object:
    """The JSON ``result`` for an engine reply (Rejected is handled by the caller); ``cmd``,
    the command it answers, where its shape depends on it (a list's reports)."""
    match msg:
        case M.Executions() if type(cmd) is M.NewOrderList and msg.reports:
            return A.OcoResult(msg.reports[0].order_id, [report_view(ex, r) for r in msg.reports])
        case M.Executions():
            return [report_view(ex, r) for r in msg.reports]
        case M.OrderInfo():
            return order_view(ex, msg.order)
        case M.OpenOrders() | M.OrderHistory():
            return [order_view(ex, o) for o in msg.orders]
        case M.Balances():
            return [
                J.BalanceView(
                    b.asset, ex.units_text(b.asset, b.available), ex.units_text(b.asset, b.locked)
                )
                for b in msg.balances
            ]
        case M.FillsReply():
            return [fill_view(ex, r) for r in msg.fills]
        case M.QuoteReply():
            spec = ex.markets[msg.market]
            return J.QuoteView(
                msg.market,
                SIDE_NAMES[msg.side],
                spec.qty_text(msg.qty),
                spec.quote_text(msg.quote_qty),
                spec.price_text(msg.worst_price) if msg.worst_price else None,
                msg.complete,
            )
        case M.MassCancelReply():
            return {"cancelled": msg.count}
        case M.LedgerReply():
            return {
                "account": msg.account,
                "asset": msg.asset,
                "available": ex.units_text(msg.asset, msg.available),
                "locked": ex.units_text(msg.asset, msg.locked),
            }
    return {"reply": type(msg).__name__}

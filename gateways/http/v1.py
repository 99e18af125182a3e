"""``/api/v1``: the seeds' REST routes, with the whole order surface of the engine.

Bodies and answers are JSON with decimal strings for money (docs/rest.md). The order views,
validation and conversions are the JSON gateway's (gateways/json_tcp/convert.py): one
implementation of "what an order request means" for every edge. Errors are
``{"error": {"code": <RejectCode>, "reason": ...}}`` with an HTTP status that fits (404 for an
unknown order, whichever account it belongs to; 409 for a duplicate client order id; 429 with
Retry-After; 503 for an engine away or a write in doubt, code 4003, which names the
client order id to look the order up with).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec

from gateways.accounts import ApiKey, Permission
from gateways.http.app import JSON, Api, Gateway, Route, retry_after
from gateways.http.auth import AuthError
from gateways.http.server import Request, Response
from gateways.json_tcp import convert
from protocol import json_api as J
from protocol import market_api as A
from protocol import messages as M
from protocol.amounts import AmountError, positive_field
from protocol.config import Exchange, MarketSpec
from protocol.enums import CancelReason, ExecType, OrderStatus
from protocol.enums import RejectCode as R

PREFIX = "/api/v1"
Side = Literal["buy", "sell"]
Amount = Annotated[str, msgspec.Meta(max_length=64, examples=["50000.00"])]
ExpireTs = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1, examples=[1798761600000000000])]
STATUS: dict[int, int] = {
    R.UNKNOWN_ORDER: 404,
    R.DUPLICATE_CLIENT_ORDER_ID: 409,
    R.NOT_AUTHORIZED: 403,
    R.NOT_LOGGED_ON: 401,
    R.BAD_CREDENTIALS: 401,
    R.TOO_LARGE: 413,
    R.RATE_LIMITED: 429,
    R.ENGINE_UNAVAILABLE: 503,
    R.TIMEOUT: 503,
    R.SHUTTING_DOWN: 503,
    R.DEADLINE_PASSED: 503,
    R.NOT_EXECUTED: 503,
    R.INTERNAL: 500,
}


class V1Error(Exception):
    def __init__(self, status: int, code: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


# --------------------------------------------------------------------- request types


class OrderBody(msgspec.Struct, forbid_unknown_fields=True):
    """A new order. ``kind`` is the seeds' name for the side; ``side`` is accepted too."""

    market: str
    kind: Side | None = None
    side: Side | None = None
    type: Literal["limit", "market"] = "limit"
    price: Amount | None = None
    quantity: Amount | None = None
    quote_quantity: Amount | None = None  # market buys: the quote amount to spend
    time_in_force: Literal["GTC", "IOC", "FOK", "GTD"] | None = None
    post_only: bool = False
    client_order_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    stp: Literal["cancel_newest", "cancel_oldest", "cancel_both"] | None = None
    # A stop order (limit or market): waits outside the book until the market's last trade
    # price reaches stop_price (stop_loss buys / take_profit sells on a rise to it, stop_loss
    # sells / take_profit buys on a fall to it), then is this order.
    trigger: Literal["stop_loss", "take_profit"] | None = None
    stop_price: Amount | None = None
    expire_ts: ExpireTs = 0  # GTD: expiry time, nanoseconds since the epoch
    # An iceberg (a limit GTC/GTD order): the book shows at most this much of it at a time.
    display_qty: Amount | None = None
    # A trailing stop (with trigger): it triggers this many bps (10..2000) from the best last
    # price since it started following; stop_price is then optional, its activation price.
    trailing_bps: Annotated[int, msgspec.Meta(examples=[100])] = 0


class OcoBody(msgspec.Struct, forbid_unknown_fields=True):
    """One-cancels-the-other: a post-only limit order at ``price`` and a stop-loss at
    ``stop_price`` (a stop-limit at ``stop_limit_price``, else a stop-market), one side and
    quantity. A sell has price > last price > stop_price, a buy the reverse. A trade of the
    limit order or the stop's trigger cancels the other; cancelling either cancels both."""

    market: str
    quantity: Amount
    price: Amount
    stop_price: Amount
    kind: Side | None = None
    side: Side | None = None
    stop_limit_price: Amount | None = None
    list_client_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    limit_client_order_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    stop_client_order_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    stp: Literal["cancel_newest", "cancel_oldest", "cancel_both"] | None = None


class ReplaceBody(msgspec.Struct, forbid_unknown_fields=True):
    """Cancel-replace: a new price and/or total quantity (the filled part included, as FIX)
    and/or, for a waiting stop order, a new stop price. The same price with a smaller quantity
    keeps the order's place in the queue; anything else queues it again. ``market`` is the
    order's market."""

    market: str
    price: Amount | None = None
    quantity: Amount | None = None
    new_client_order_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    stop_price: Amount | None = None  # a waiting stop order's new stop price


class QuoteBody(msgspec.Struct, forbid_unknown_fields=True):
    """What a market order would fill now: ``quantity`` of base, or (buys) ``quote_quantity``."""

    market: str
    kind: Side | None = None
    side: Side | None = None
    quantity: Amount | None = None
    quote_quantity: Amount | None = None


class MarketQuery(msgspec.Struct, forbid_unknown_fields=True):
    market: str = ""


class NeedMarket(msgspec.Struct, forbid_unknown_fields=True):
    market: str


class DepthQuery(msgspec.Struct, forbid_unknown_fields=True):
    market: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 100


class TradesQuery(msgspec.Struct, forbid_unknown_fields=True):
    market: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class KlinesQuery(msgspec.Struct, forbid_unknown_fields=True):
    market: str
    interval: Literal["1m", "5m", "15m", "1h", "4h", "1d"] = "1m"
    start: Annotated[int, msgspec.Meta(ge=0, le=2**40)] = 0  # seconds since the epoch
    end: Annotated[int, msgspec.Meta(ge=0, le=2**40)] = 2**40
    limit: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 500


class FillsQuery(msgspec.Struct, forbid_unknown_fields=True):
    market: str = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class OrderQuery(msgspec.Struct, forbid_unknown_fields=True):
    market: str = ""
    by: Literal["order_id", "client_order_id", ""] = ""  # how to read the path's {id}


class Cancelled(msgspec.Struct):
    cancelled: int


class ErrorDetail(msgspec.Struct):
    code: int
    reason: str
    client_order_id: str | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


# --------------------------------------------------------------------------- the API


class V1(Api):
    name = "v1"
    error_type = ErrorBody
    refusals = (V1Error, convert.EdgeReject)

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.ex = gw.ex

    def body(self, status: int, code: int, message: str) -> bytes:
        return JSON.encode(ErrorBody(ErrorDetail(code, message)))

    def reject(self, msg: M.Rejected, cmd: Any) -> Response:
        return self.error(STATUS.get(msg.code, 400), msg.code, msg.reason)

    def in_doubt(self, cmd: Any) -> Response:
        cid = getattr(cmd, "client_order_id", "") or None
        where = f" GET {PREFIX}/order/{cid}?by=client_order_id tells its outcome." if cid else ""
        text = "in doubt: the engine did not answer in time and may have executed this." + where
        return Response(503, JSON.encode(ErrorBody(ErrorDetail(R.TIMEOUT, text, cid))))

    def auth_error(self, e: AuthError) -> Response:
        self.gw.metrics.auth_failures += 1
        if e.kind == "permission":
            return self.error(403, R.NOT_AUTHORIZED, e.message)
        return self.error(401, R.BAD_CREDENTIALS, e.message)

    def limited(self, wait: float, orders: bool) -> Response:
        what = "orders" if orders else "requests"
        return self.error(
            429,
            R.RATE_LIMITED,
            f"rate limited ({what}); retry after {wait:.3f}s",
            [("Retry-After", retry_after(wait))],
        )

    # ------------------------------------------------------------------- parsing
    @staticmethod
    def decode(data: bytes, kind: Any) -> Any:
        if not data:
            raise V1Error(400, R.MALFORMED, "a JSON body is required")
        try:
            return _decoder(kind).decode(data)
        except msgspec.ValidationError as e:
            hint = ""
            if "Expected `str | null`, got `int`" in str(e) or "got `float`" in str(e):
                hint = ': send prices and quantities as decimal strings, e.g. "50000.00"'
            raise V1Error(400, R.INVALID_FIELD, f"{e}{hint}") from None
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as e:
            raise V1Error(400, R.MALFORMED, f"not valid JSON: {e}") from None

    @staticmethod
    def query(req: Request, kind: Any, **path: str) -> Any:
        try:
            return msgspec.convert({**req.query, **path}, kind, strict=False)
        except msgspec.ValidationError as e:
            raise V1Error(400, R.INVALID_FIELD, f"query: {e}") from None

    def spec(self, market: str) -> MarketSpec:
        spec = self.ex.markets.get(market)
        if spec is None:
            raise V1Error(
                404 if market else 400,
                R.UNKNOWN_MARKET,
                f"unknown market {market!r}; markets: {', '.join(self.ex.markets)}",
            )
        return spec

    def authenticate(
        self, req: Request, permission: Permission, orders: bool
    ) -> tuple[ApiKey, Request]:
        h = req.headers
        if "authorization" in h and "x-api-key" not in h:  # a browser session (docs/web.md)
            return self.gw.web.bearer(h["authorization"], permission), req
        path = req.path + ("?" + req.query_string if req.query_string else "")
        ts = h.get("x-api-timestamp", "")
        payload = ts.encode() + req.method.encode() + path.encode("latin-1") + req.body
        key = self.gw.signer.verify(
            h.get("x-api-key", ""),
            payload,
            h.get("x-api-signature", ""),
            ts,
            h.get("x-api-recv-window"),
            once=orders,
        )
        if not key.permission.allows(permission):
            raise AuthError(
                "permission", f"this API key is {key.permission.value}; {permission.value} needed"
            )
        return key, req

    def refused(self, e: Exception) -> Response:
        if isinstance(e, V1Error):
            return self.error(e.status, e.code, e.reason)
        assert isinstance(e, convert.EdgeReject)  # worded with this API's FIELDS
        return self.error(STATUS.get(e.code, 400), e.code, e.reason)

    def result(self, msg: Any) -> Response:
        t = type(msg)
        if t is M.Executions:  # cancel, replace: with the order's type and stop
            views = [report_view(self.ex, r) for r in msg.reports]
            if any(r.reason_code == CancelReason.LINKED for r in msg.reports):
                list_id = min(v.order_id for v in views)  # a list's two orders cancelled
                for v in views:
                    v.list_id = list_id
            return Gateway.json(views)
        if t is M.OrderInfo:
            return Gateway.json(order_view(self.ex, msg.order))
        if t is M.OpenOrders or t is M.OrderHistory:
            return Gateway.json([order_view(self.ex, o) for o in msg.orders])
        return Gateway.json(convert.result(self.ex, msg))

    # -------------------------------------------------------------------- orders
    def place(self, key: ApiKey, req: Request) -> Any:
        b = self.decode(req.body, OrderBody)
        side = _side(b.kind, b.side)
        _check_advanced(b)
        # A trailing stop may come without a stop price (it follows the last price from its
        # acceptance): convert.place wants trigger and stop_price together, so the trigger
        # goes in afterwards.
        bare_trail = bool(b.trailing_bps and b.trigger and not b.stop_price)
        place = J.Place(
            0, b.market, side, b.type, b.price, b.quantity, b.quote_quantity,
            b.time_in_force, b.client_order_id, b.post_only, b.stp,
            None if bare_trail else b.trigger, b.stop_price, b.expire_ts,
        )  # fmt: skip
        try:
            cmd = convert.place(self.ex, key.account_id, place, FIELDS)
        except convert.EdgeReject as e:
            if e.code == R.INVALID_STOP_PRICE and "stop_price" not in e.reason:
                raise V1Error(400, e.code, f"stop_price: {e.reason}") from None  # which field
            raise
        display = _display_qty(self.ex.markets[b.market], b, cmd.qty)
        if display or b.trailing_bps:
            trigger = int(convert.TRIGGERS[b.trigger]) if b.trigger else 0
            cmd = msgspec.structs.replace(
                cmd, trigger=trigger, display_qty=display, trailing_bps=b.trailing_bps
            )
        self.gw.metrics.orders += 1
        return self.gw.call(self, cmd, lambda msg: self.placed(cmd, msg))

    def placed(self, cmd: M.NewOrder, msg: M.Executions) -> Response:
        reports = msg.reports
        view = report_view(self.ex, reports[-1])
        # What the reports do not carry, from the order as sent (the engine took it as is).
        view.tif = convert.TIF_NAMES.get(cmd.tif) or ("GTC" if cmd.type == 1 else "IOC")
        view.expire_ts = cmd.expire_ts or None
        if cmd.post_only:
            view.post_only = True
        spec = self.ex.markets[cmd.market]
        if cmd.display_qty:
            view.display_qty = spec.qty_text(cmd.display_qty)
        if cmd.trailing_bps:
            view.trailing_bps = cmd.trailing_bps
        fills = [convert.fill_view(self.ex, r) for r in reports if r.last_qty]
        return Gateway.json(Placed(view, fills))

    def place_oco(self, key: ApiKey, req: Request) -> Any:
        b = self.decode(req.body, OcoBody)
        side = _side(b.kind, b.side)
        # The limit order checked as a new order is (market, tick, lot, limits), in this API's
        # words; then the stop's prices and the list's shape.
        limit = J.Place(0, b.market, side, "limit", b.price, b.quantity, post_only=True, stp=b.stp)
        lcmd = convert.place(self.ex, key.account_id, limit, FIELDS)
        spec = self.ex.markets[b.market]
        ids = [c for c in (b.limit_client_order_id, b.stop_client_order_id) if c]
        if len(ids) == 2 and ids[0] == ids[1]:
            raise V1Error(
                409, R.DUPLICATE_CLIENT_ORDER_ID,
                "limit_client_order_id and stop_client_order_id must differ",
            )  # fmt: skip
        stop = _price_field(spec, b.stop_price, R.INVALID_STOP_PRICE, "stop_price")
        stop_limit = _price_field(spec, b.stop_limit_price, R.INVALID_PRICE, "stop_limit_price")
        price = lcmd.price
        if side == "sell" and not price > stop:
            raise V1Error(400, R.INVALID_ORDER_LIST, "a sell OCO needs price > stop_price "
                          "(a take-profit above the market, a stop-loss below)")  # fmt: skip
        if side == "buy" and not price < stop:
            raise V1Error(400, R.INVALID_ORDER_LIST, "a buy OCO needs price < stop_price "
                          "(a limit below the market, a stop-loss above)")  # fmt: skip
        cmd = M.NewOrderList(
            0, key.account_id, b.market, lcmd.side, lcmd.qty, price, stop, stop_limit,
            b.list_client_id, b.limit_client_order_id, b.stop_client_order_id, lcmd.stp,
        )  # fmt: skip
        self.gw.metrics.orders += 1
        return self.gw.call(self, cmd, lambda msg: self.placed_list(cmd, msg))

    def placed_list(self, cmd: M.NewOrderList, msg: M.Executions) -> Response:
        views = [report_view(self.ex, r) for r in msg.reports]
        list_id = min(v.order_id for v in views)  # the limit order's id, as the engine says
        for v in views:
            v.list_id = list_id
            v.tif = "GTC"
        views[0].post_only = True
        return Gateway.json(PlacedList(list_id, cmd.client_list_id, views))

    def order_ref(self, key: ApiKey, req: Request) -> tuple[str, int, str]:
        q = self.query(req, OrderQuery)
        if q.market:
            self.spec(q.market)
        ref = req.params["id"]
        by = q.by or ("order_id" if ref.isdigit() else "client_order_id")
        if by == "order_id":
            if not ref.isdigit() or len(ref) > 19 or int(ref) >= 2**63:
                raise V1Error(400, R.INVALID_FIELD, f"order id must be a number, was {ref!r}")
            return q.market, int(ref), ""
        return q.market, 0, ref

    def get_order(self, key: ApiKey, req: Request) -> Any:
        market, order_id, cid = self.order_ref(key, req)
        cmd = M.OrderStatusRequest(0, key.account_id, market, order_id, cid)
        return self.gw.call(self, cmd, self.result)

    def cancel(self, key: ApiKey, req: Request) -> Any:
        market, order_id, cid = self.order_ref(key, req)
        cmd = M.Cancel(0, key.account_id, market, order_id, cid)
        return self.gw.call(self, cmd, self.result)

    def replace(self, key: ApiKey, req: Request) -> Any:
        b = self.decode(req.body, ReplaceBody)
        self.spec(b.market)
        _, order_id, cid = self.order_ref(key, req)
        if not (b.price or b.quantity or b.stop_price):
            raise V1Error(400, R.INVALID_FIELD, "give price, quantity and/or stop_price")
        r = J.ReplaceOrder(
            0, b.market, order_id, cid, b.new_client_order_id, b.price, b.quantity, b.stop_price
        )
        return self.gw.call(self, convert.replace(self.ex, key.account_id, r, FIELDS), self.result)

    def quote(self, key: ApiKey, req: Request) -> Any:
        b = self.decode(req.body, QuoteBody)
        q = J.GetQuote(0, b.market, _side(b.kind, b.side), b.quantity, b.quote_quantity)
        if bool(b.quantity) == bool(b.quote_quantity):
            raise V1Error(400, R.INVALID_FIELD, "give quantity, or quote_quantity (buys)")
        return self.gw.call(self, convert.quote(self.ex, key.account_id, q, FIELDS), self.result)

    def open_orders(self, key: ApiKey, req: Request) -> Any:
        q = self.query(req, MarketQuery)
        if q.market:
            self.spec(q.market)
        return self.gw.call(self, M.OpenOrdersRequest(0, key.account_id, q.market), self.result)

    def cancel_all(self, key: ApiKey, req: Request) -> Any:
        q = self.query(req, MarketQuery)
        if q.market:
            self.spec(q.market)
        cmd = M.MassCancel(0, key.account_id, q.market)
        return self.gw.call(self, cmd, lambda m: Gateway.json(Cancelled(m.count)))

    def history(self, key: ApiKey, req: Request) -> Any:
        q = self.query(req, FillsQuery)
        if q.market:
            self.spec(q.market)
        cmd = M.OrderHistoryRequest(0, key.account_id, q.market, q.limit)
        return self.gw.call(self, cmd, self.result)

    def balances(self, key: ApiKey, req: Request) -> Any:
        return self.gw.call(self, M.BalancesRequest(0, key.account_id), self.result)

    def fills(self, key: ApiKey, req: Request) -> Any:
        q = self.query(req, FillsQuery)
        if q.market:
            self.spec(q.market)
        cmd = M.FillsRequest(0, key.account_id, q.market, q.limit)
        return self.gw.call(self, cmd, self.result)

    # --------------------------------------------------------------- market data
    def markets(self, req: Request) -> Response:
        return Gateway.json([convert.market_view(m) for m in self.ex.markets.values()])

    def _market(self, req: Request, kind: Any) -> tuple[Any, MarketSpec]:
        if "symbol" in req.params:  # the seeds' /orderbook/{symbol} spellings
            q = self.query(req, kind, market=req.params["symbol"])
            return q, self.spec(q.market)
        q = self.query(req, kind)
        return q, self.spec(q.market)

    def depth(self, req: Request) -> Response:
        q, spec = self._market(req, DepthQuery)
        return Gateway.json(self.gw.market.depth_view(spec.symbol, q.limit))

    def trades(self, req: Request) -> Response:
        q, spec = self._market(req, TradesQuery)
        return Gateway.json(self.gw.market.trade_views(spec.symbol, q.limit))

    def tickers(self, req: Request) -> Response:
        if "symbol" in req.params:
            return Gateway.json(self.gw.market.ticker(self.spec(req.params["symbol"]).symbol))
        q = self.query(req, MarketQuery)
        if q.market:
            return Gateway.json(self.gw.market.ticker(self.spec(q.market).symbol))
        return Gateway.json([self.gw.market.ticker(m) for m in self.ex.markets])

    async def _klines(self, q: KlinesQuery, spec: MarketSpec) -> Response:
        if q.end <= q.start:
            return self.error(400, R.INVALID_FIELD, f"end ({q.end}) must be after start")
        rows = await self.gw.market.klines(spec.symbol, q.interval, q.start, q.end, q.limit)
        return Gateway.json(rows)

    def klines(self, req: Request) -> Any:
        q, spec = self._market(req, KlinesQuery)
        return self._klines(q, spec)


class OrderView(J.Order, omit_defaults=True):
    """The JSON API's order view and, where set, an iceberg's visible size, a trailing stop's
    distance and the best last price it follows, and the one-cancels-the-other list it is in
    (the list's id is its limit order's id)."""

    display_qty: str | None = None
    trailing_bps: int | None = None
    trail_price: str | None = None  # 0 / left out: not following yet (activation not reached)
    list_id: int | None = None


class Placed(msgspec.Struct):
    """The order as it stands after the engine took it, and the fills it made at once."""

    order: OrderView
    fills: list[J.Fill]


class PlacedList(msgspec.Struct):
    """A one-cancels-the-other list as placed: its id (the limit order's id) and both orders,
    the limit order first."""

    list_id: int
    list_client_id: str
    orders: list[OrderView]


_DECODERS: dict[Any, msgspec.json.Decoder] = {}


def _decoder(kind: Any) -> msgspec.json.Decoder:
    d = _DECODERS.get(kind)
    if d is None:
        d = _DECODERS[kind] = msgspec.json.Decoder(kind)
    return d


TRAILING_BPS = (10, 2_000)  # the engine's range (engine/core.py)
FIELDS = convert.Fields("quantity", "quote_quantity", "GET /api/v1/markets")


def _check_advanced(b: OrderBody) -> None:
    """The stop and good-till-date fields of a new order, as a whole, with words that say what
    to send (the engine checks them again; convert.place checks stop_price and trigger)."""
    if b.trigger and b.post_only:
        raise V1Error(
            400, R.INVALID_ORDER_TYPE, "a stop order (trigger) cannot be post_only: drop one"
        )
    if b.trailing_bps:
        lo, hi = TRAILING_BPS
        if not b.trigger:
            raise V1Error(
                400, R.INVALID_TRAILING,
                "trailing_bps is for stop orders: give trigger (stop_loss or take_profit) too",
            )  # fmt: skip
        if not lo <= b.trailing_bps <= hi:
            raise V1Error(
                400, R.INVALID_TRAILING,
                f"trailing_bps must be {lo}..{hi} (0.1%..20%), was {b.trailing_bps}",
            )  # fmt: skip
    if b.time_in_force == "GTD":
        if not b.expire_ts:
            raise V1Error(
                400, R.INVALID_EXPIRE_TIME,
                "time_in_force GTD needs expire_ts: the expiry, in nanoseconds since the epoch",
            )  # fmt: skip
        now = time.time_ns()
        if b.expire_ts <= now:
            ms = b.expire_ts < 10**15  # seconds or milliseconds, by the look of it
            hint = " (it counts nanoseconds, not seconds or milliseconds)" if ms else ""
            raise V1Error(
                400, R.INVALID_EXPIRE_TIME,
                f"expire_ts {b.expire_ts} is in the past{hint}: now is {now} ns since the epoch",
            )  # fmt: skip
    elif b.expire_ts:
        raise V1Error(
            400, R.INVALID_EXPIRE_TIME,
            f"expire_ts is only for time_in_force GTD, not {b.time_in_force or 'the default'}",
        )  # fmt: skip


def _price_field(spec: MarketSpec, text: str | None, code: int, what: str) -> int:
    try:
        value = positive_field(spec.price_to_ticks, text, what)
    except AmountError as e:
        reason = str(e) if what in str(e) else f"{what}: {e}"
        raise V1Error(400, code, reason) from None
    if value > spec.max_price:
        raise V1Error(
            400, code, f"{what} must be at most {spec.price_text(spec.max_price)}, was {text}"
        )
    return value


def _display_qty(spec: MarketSpec, b: OrderBody, qty: int) -> int:
    """An iceberg's visible part in lots (0: not an iceberg), checked against its order."""
    if b.display_qty is None:
        return 0
    code = R.INVALID_DISPLAY_QTY
    try:
        display = positive_field(spec.qty_to_lots, b.display_qty, "display_qty")
    except AmountError as e:
        reason = str(e) if "display_qty" in str(e) else f"display_qty: {e}"
        raise V1Error(400, code, reason) from None
    if b.type != "limit":
        raise V1Error(400, code, "display_qty (an iceberg) is only for limit orders")
    if b.time_in_force in ("IOC", "FOK"):
        raise V1Error(400, R.INVALID_TIME_IN_FORCE, "an iceberg (display_qty) is GTC or GTD")
    if display > qty:
        raise V1Error(
            400, code,
            f"display_qty ({b.display_qty}) must be at most the quantity ({b.quantity})",
        )  # fmt: skip
    if display < spec.min_qty:
        raise V1Error(
            400, code, f"display_qty must be at least {spec.qty_text(spec.min_qty)}, was "
            f"{b.display_qty}",
        )  # fmt: skip
    return display


def _more(view: J.Order) -> OrderView:
    return OrderView(**msgspec.structs.asdict(view))


def order_view(ex: Exchange, o: M.OrderState) -> OrderView:
    """An open or closed order as the engine holds it, with its iceberg, trailing and list
    fields where set."""
    view = _more(convert.order_view(ex, o))
    if o.status >= OrderStatus.FILLED:
        view.waiting = None  # a closed order waits for nothing (a cancelled stop keeps it set)
    spec = ex.markets[o.market]
    if o.display_qty:
        view.display_qty = spec.qty_text(o.display_qty)
    if o.trailing_bps:
        view.trailing_bps = o.trailing_bps
        if o.trail_price:
            view.trail_price = spec.price_text(o.trail_price)
    if o.list_id:
        view.list_id = o.list_id
    return view


def report_view(ex: Exchange, r: M.ExecReport) -> OrderView:
    """An execution report as the order view, with its type and, for a stop order, its trigger,
    stop price and whether it waits: a stop is placed waiting (NEW) and waits no longer once it
    is TRIGGERED or fills; other reports (replaced, canceled, expired) leave ``waiting`` out,
    since a replace never changes it and a closed order waits for nothing."""
    view = _more(convert.report_view(ex, r))
    view.type = convert.TYPE_NAMES.get(r.order_type)
    if r.trigger:
        view.trigger = convert.TRIGGER_NAMES.get(r.trigger)
        view.stop_price = ex.markets[r.market].price_text(r.stop_price) if r.stop_price else None
        if r.exec_type == ExecType.NEW:
            view.waiting = True
        elif r.exec_type == ExecType.TRIGGERED or r.last_qty:
            view.waiting = False
    return view


def _side(kind: Side | None, side: Side | None) -> Side:
    if kind and side and kind != side:
        raise V1Error(400, R.INVALID_SIDE, f"kind {kind!r} and side {side!r} disagree")
    value = kind or side
    if not value:
        raise V1Error(400, R.INVALID_SIDE, 'give kind (or side): "buy" or "sell"')
    return value


# ----------------------------------------------------------------------------- routes


def register(gw: Gateway) -> V1:
    v = V1(gw)
    read, trade = Permission.READ, Permission.TRADE
    order_views = list[OrderView]
    signed = [  # method, paths, summary, permission, order write, query, body, response, fn
        ("POST", ["order", "orders"], "Place an order", trade, True, None, OrderBody, Placed,
         v.place),
        ("GET", ["order/{id}", "orders/{id}"], "An order and its fill status (by order id, or "
         "client order id)", read, False, OrderQuery, None, OrderView, v.get_order),
        ("DELETE", ["order/{id}", "orders/{id}"], "Cancel an order", trade, True, OrderQuery,
         None, order_views, v.cancel),
        ("PUT", ["order/{id}", "orders/{id}"], "Cancel-replace: new price and/or quantity",
         trade, True, OrderQuery, ReplaceBody, order_views, v.replace),
        ("POST", ["order/oco", "orders/oco"], "Place a one-cancels-the-other list: a limit "
         "order and a stop-loss", trade, True, None, OcoBody, PlacedList, v.place_oco),
        ("POST", ["order/quote"], "What a market order would fill now", read, False, None,
         QuoteBody, J.QuoteView, v.quote),
        ("GET", ["order/open", "orders"], "Open orders", read, False, MarketQuery, None,
         order_views, v.open_orders),
        ("DELETE", ["orders"], "Cancel all open orders (of one market, or all)", trade, True,
         MarketQuery, None, Cancelled, v.cancel_all),
        ("GET", ["balances"], "Balances", read, False, None, None, list[J.BalanceView],
         v.balances),
        ("GET", ["fills"], "The account's fills, newest last", read, False, FillsQuery, None,
         list[J.Fill], v.fills),
        ("GET", ["order-history"], "The account's closed orders (filled, canceled, expired), "
         "newest last", read, False, FillsQuery, None, order_views, v.history),
    ]  # fmt: skip
    for method, paths, summary, perm, orders, query, body, response, fn in signed:
        handler = v.guarded(perm, orders, fn)
        for path in paths:
            route = Route(
                method, f"{PREFIX}/{path}", summary, "v1", auth=perm.value, query=query,
                body=body, response=response,
            )  # fmt: skip
            gw.add(route, handler)
    public: list[Any] = [  # paths, summary, query, response, fn
        (["markets"], "Markets and their rules", None, list[J.MarketView], v.markets),
        (["depth", "orderbook/{symbol}"], "Order book levels", DepthQuery, A.DepthView,
         v.depth),
        (["trades"], "Recent trades", TradesQuery, list[A.TradeView], v.trades),
        (["tickers", "ticker/{symbol}"], "24h tickers (all, or ?market=)", MarketQuery,
         A.TickerData | list[A.TickerData], v.tickers),
        (["klines", "klines/{symbol}"], "Candles (ClickHouse, through the recorder)",
         KlinesQuery, list[A.Kline], v.klines),
    ]  # fmt: skip
    for paths, summary, q, out, read_fn in public:
        handler = v.public(read_fn)
        for path in paths:
            gw.add(Route("GET", f"{PREFIX}/{path}", summary, "v1", query=q, response=out), handler)
    return v

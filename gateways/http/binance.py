"""``/api/v3``: the Binance spot REST API, the subset ccxt's ``binance`` class drives.

Facts followed (docs/rest.md, "Binance compatibility"): symbols ``BTCUSD`` for ``BTC-USD``;
parameters in the query string or a form body; decimal strings; times in ms; errors
``{"code": -NNNN, "msg": ...}`` with the codes and messages ccxt maps to its exception classes
(insufficient funds, unknown order, bad symbol, filter failures, post-only would take,
authentication, timestamp outside the window). A write the engine did not answer in time is
-1007 "execution status unknown" (ccxt: RequestTimeout), never a plain failure.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from gateways.accounts import ApiKey, Permission
from gateways.http.app import JSON, Api, Gateway, Route, retry_after
from gateways.http.auth import AuthError, binance_payload
from gateways.http.server import Deferred, Request, Response
from protocol import market_api as A
from protocol import messages as M
from protocol.amounts import AmountError, format_decimal
from protocol.config import MAX_INT, MarketSpec
from protocol.enums import (
    CancelReason,
    ExecType,
    OrderStatus,
    OrderType,
    TimeInForce,
    TriggerKind,
)
from protocol.enums import RejectCode as R

V3 = "/api/v3"
NUMBER = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
STATUS = {
    OrderStatus.NEW: "NEW",
    OrderStatus.PARTIALLY_FILLED: "PARTIALLY_FILLED",
    OrderStatus.FILLED: "FILLED",
    OrderStatus.CANCELED: "CANCELED",
    OrderStatus.EXPIRED: "EXPIRED",
    OrderStatus.REJECTED: "REJECTED",
}
EXPIRING = {
    CancelReason.IOC_REMAINDER,
    CancelReason.FOK_UNFILLABLE,
    CancelReason.NO_FUNDS,
    CancelReason.EXPIRE_TIME,
}
SIDES = {"BUY": 1, "SELL": 2}
SIDE_NAMES = {1: "BUY", 2: "SELL"}
TIFS = {
    "GTC": TimeInForce.GTC,
    "IOC": TimeInForce.IOC,
    "FOK": TimeInForce.FOK,
    "GTD": TimeInForce.GTD,  # with goodTillDate (ms), Binance's parameter name
}
TIF_NAMES = {int(v): k for k, v in TIFS.items()}
STPS = {"NONE": 0, "EXPIRE_TAKER": 1, "EXPIRE_MAKER": 2, "EXPIRE_BOTH": 3}
STP_NAMES = {0: "EXPIRE_TAKER", 1: "EXPIRE_TAKER", 2: "EXPIRE_MAKER", 3: "EXPIRE_BOTH"}
# Binance's stop types: the engine's trigger and the order it carries once triggered.
STOP_TYPES = {
    "STOP_LOSS": (TriggerKind.STOP_LOSS, OrderType.MARKET),
    "STOP_LOSS_LIMIT": (TriggerKind.STOP_LOSS, OrderType.LIMIT),
    "TAKE_PROFIT": (TriggerKind.TAKE_PROFIT, OrderType.MARKET),
    "TAKE_PROFIT_LIMIT": (TriggerKind.TAKE_PROFIT, OrderType.LIMIT),
}
STOP_NAMES = {(int(t), int(k)): name for name, (t, k) in STOP_TYPES.items()}
ORDER_TYPES = ["LIMIT", "LIMIT_MAKER", "MARKET", *STOP_TYPES]
LIMIT_TYPES = {"LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"}  # price + timeInForce
PRICED_TYPES = LIMIT_TYPES | {"LIMIT_MAKER"}
MARKET_TYPES = {"MARKET", "STOP_LOSS", "TAKE_PROFIT"}  # no price shown
ICEBERG_TYPES = PRICED_TYPES  # icebergQty: the limit types (timeInForce GTC) and LIMIT_MAKER
LEG_EXTRAS = ("IcebergQty", "TrailingDelta", "StrategyId", "StrategyType", "PegPriceType",
              "PegOffsetType", "PegOffsetValue")  # fmt: skip
LIST_MEMORY = 100_000  # listClientOrderIds the gateway remembers
TRAILING_DELTA = (10, 2_000)  # BIPS: the engine's trailing_bps range (engine/core.py)
MAX_GTD_MS = MAX_INT // 1_000_000  # the latest goodTillDate whose ns fit the engine's int64
INTERVAL_MS = {k: v * 1000 for k, v in A.INTERVALS.items()}

# What an engine reject is on Binance: (HTTP status, code, message). ccxt matches some
# messages exactly (InsufficientFunds, OrderImmediatelyFillable, MarketClosed).
REJECTS: dict[int, tuple[int, int, str | None]] = {
    R.INSUFFICIENT_FUNDS: (400, -2010, "Account has insufficient balance for requested action."),
    R.POST_ONLY_WOULD_CROSS: (400, -2010, "Order would immediately match and take."),
    R.DUPLICATE_CLIENT_ORDER_ID: (400, -2010, "Duplicate order sent."),
    R.MARKET_HALTED: (400, -2010, "Market is closed."),
    R.NO_LIQUIDITY: (400, -2010, None),
    R.UNKNOWN_MARKET: (400, -1121, "Invalid symbol."),
    R.INVALID_PRICE: (400, -1013, "Filter failure: PRICE_FILTER"),
    R.INVALID_STOP_PRICE: (400, -1013, "Filter failure: PRICE_FILTER"),
    R.WOULD_TRIGGER_IMMEDIATELY: (400, -2010, "Order would trigger immediately."),
    R.INVALID_EXPIRE_TIME: (400, -2010, "goodTillDate must be in the future."),
    # the gateway checks icebergQty and trailingDelta first, in Binance's words; what only
    # the engine can judge (a trailing stop without stopPrice before the first trade) keeps
    # its reason
    R.INVALID_DISPLAY_QTY: (400, -2010, None),
    R.INVALID_TRAILING: (400, -2010, None),
    R.INVALID_ORDER_LIST: (
        400,
        -2010,
        "The relationship of the prices for the orders is not correct.",
    ),
    R.ORDER_LIST_LEG: (400, -2010, None),
    R.INVALID_QUANTITY: (400, -1013, "Filter failure: LOT_SIZE"),
    R.QUANTITY_BELOW_MIN: (400, -1013, "Filter failure: LOT_SIZE"),
    R.QUANTITY_ABOVE_MAX: (400, -1013, "Filter failure: LOT_SIZE"),
    R.INVALID_ORDER_TYPE: (400, -1116, "Invalid orderType."),
    R.INVALID_TIME_IN_FORCE: (400, -1115, "Invalid timeInForce."),
    R.INVALID_SIDE: (400, -1117, "Invalid side."),
    R.INVALID_CLIENT_ORDER_ID: (400, -1100, None),
    R.INVALID_FIELD: (400, -1102, None),
    R.MALFORMED: (400, -1100, None),
    R.RATE_LIMITED: (429, -1015, None),
    R.ENGINE_UNAVAILABLE: (503, -1001, None),
    R.DEADLINE_PASSED: (503, -1001, None),
    R.NOT_EXECUTED: (503, -1001, None),
    R.SHUTTING_DOWN: (503, -1001, None),
}
# Errors the HTTP layer itself raises, by status
STATUS_CODES = {400: -1100, 404: -1016, 405: -1016, 408: -1000, 413: -1100, 431: -1100}


class BinanceReject(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


# ------------------------------------------------------------------ response types


class BinanceError(msgspec.Struct):
    code: int
    msg: str


class BinanceServerTime(msgspec.Struct):
    serverTime: int


class BinanceFilter(msgspec.Struct, omit_defaults=True):
    filterType: str
    minPrice: str | None = None
    maxPrice: str | None = None
    tickSize: str | None = None
    minQty: str | None = None
    maxQty: str | None = None
    stepSize: str | None = None
    limit: int | None = None  # ICEBERG_PARTS
    minTrailingAboveDelta: int | None = None  # TRAILING_DELTA (BIPS)
    maxTrailingAboveDelta: int | None = None
    minTrailingBelowDelta: int | None = None
    maxTrailingBelowDelta: int | None = None


class BinanceSymbolInfo(msgspec.Struct):
    symbol: str
    status: str
    baseAsset: str
    baseAssetPrecision: int
    quoteAsset: str
    quotePrecision: int
    quoteAssetPrecision: int
    baseCommissionPrecision: int
    quoteCommissionPrecision: int
    orderTypes: list[str]
    icebergAllowed: bool
    ocoAllowed: bool
    otoAllowed: bool
    quoteOrderQtyMarketAllowed: bool
    allowTrailingStop: bool
    cancelReplaceAllowed: bool
    isSpotTradingAllowed: bool
    isMarginTradingAllowed: bool
    filters: list[BinanceFilter]
    permissions: list[str]
    permissionSets: list[list[str]]
    defaultSelfTradePreventionMode: str
    allowedSelfTradePreventionModes: list[str]


class BinanceRateLimit(msgspec.Struct):
    rateLimitType: str
    interval: str
    intervalNum: int
    limit: int


class BinanceExchangeInfo(msgspec.Struct):
    timezone: str
    serverTime: int
    rateLimits: list[BinanceRateLimit]
    exchangeFilters: list[Any]
    symbols: list[BinanceSymbolInfo]


class BinanceDepth(msgspec.Struct):
    lastUpdateId: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


class BinanceAggTrade(msgspec.Struct):
    a: int
    p: str
    q: str
    f: int
    l: int  # noqa: E741 - Binance's field name
    T: int
    m: bool
    M: bool


class BinancePublicTrade(msgspec.Struct):
    id: int
    price: str
    qty: str
    quoteQty: str
    time: int
    isBuyerMaker: bool
    isBestMatch: bool


class BinanceTicker24(msgspec.Struct):
    symbol: str
    priceChange: str
    priceChangePercent: str
    weightedAvgPrice: str
    prevClosePrice: str
    lastPrice: str
    lastQty: str
    bidPrice: str
    bidQty: str
    askPrice: str
    askQty: str
    openPrice: str
    highPrice: str
    lowPrice: str
    volume: str
    quoteVolume: str
    openTime: int
    closeTime: int
    firstId: int
    lastId: int
    count: int


class BinancePriceTicker(msgspec.Struct):
    symbol: str
    price: str


class BinanceBookTicker(msgspec.Struct):
    symbol: str
    bidPrice: str
    bidQty: str
    askPrice: str
    askQty: str


class BinanceOrderFill(msgspec.Struct):
    price: str
    qty: str
    commission: str
    commissionAsset: str
    tradeId: int


class BinanceOrder(msgspec.Struct, omit_defaults=True):
    """An order as Binance shows it (the create response with FULL, query, cancel)."""

    symbol: str
    orderId: int
    orderListId: int
    clientOrderId: str
    price: str
    origQty: str
    executedQty: str
    cummulativeQuoteQty: str
    status: str
    timeInForce: str
    type: str
    side: str
    transactTime: int | None = None
    time: int | None = None
    updateTime: int | None = None
    workingTime: int | None = None
    isWorking: bool | None = None
    stopPrice: str | None = None
    icebergQty: str | None = None
    trailingDelta: int | None = None  # a trailing stop's distance (BIPS)
    trailingTime: int | None = None  # when it started following (ms); -1 not yet
    origQuoteOrderQty: str | None = None
    origClientOrderId: str | None = None
    selfTradePreventionMode: str | None = None
    fills: list[BinanceOrderFill] | None = None


class BinanceListOrder(msgspec.Struct):
    symbol: str
    orderId: int
    clientOrderId: str


class BinanceOrderList(msgspec.Struct, omit_defaults=True):
    """An OCO list as Binance shows it: placement and cancel answers carry orderReports."""

    orderListId: int
    contingencyType: str
    listStatusType: str  # EXEC_STARTED (both orders working) | ALL_DONE
    listOrderStatus: str  # EXECUTING | ALL_DONE
    listClientOrderId: str
    transactionTime: int
    symbol: str
    orders: list[BinanceListOrder]
    orderReports: list[BinanceOrder] | None = None


class BinanceAssetBalance(msgspec.Struct):
    asset: str
    free: str
    locked: str


class BinanceCommissionRates(msgspec.Struct):
    maker: str
    taker: str
    buyer: str
    seller: str


class BinanceAccount(msgspec.Struct):
    uid: int
    makerCommission: int
    takerCommission: int
    buyerCommission: int
    sellerCommission: int
    commissionRates: BinanceCommissionRates
    canTrade: bool
    canWithdraw: bool
    canDeposit: bool
    brokered: bool
    requireSelfTradePrevention: bool
    preventSor: bool
    updateTime: int
    accountType: str
    balances: list[BinanceAssetBalance]
    permissions: list[str]


class BinanceMyTrade(msgspec.Struct):
    symbol: str
    id: int
    orderId: int
    orderListId: int
    price: str
    qty: str
    quoteQty: str
    commission: str
    commissionAsset: str
    time: int
    isBuyer: bool
    isMaker: bool
    isBestMatch: bool


# ------------------------------------------------------------------ request types
# Parameters as sent (strings); the types document them in the OpenAPI file.


class BinanceDepthQuery(msgspec.Struct):
    symbol: str
    limit: int = 100


class BinanceTradesQuery(msgspec.Struct):
    symbol: str
    limit: int = 500
    fromId: int | None = None
    startTime: int | None = None
    endTime: int | None = None


class BinanceKlinesQuery(msgspec.Struct):
    symbol: str
    interval: str
    limit: int = 500
    startTime: int | None = None
    endTime: int | None = None


class BinanceTickerQuery(msgspec.Struct):
    symbol: str | None = None
    symbols: str | None = None  # a JSON array, URL-encoded: ["BTCUSD","ETHUSD"]


class BinanceSigned(msgspec.Struct):
    timestamp: int
    signature: str
    recvWindow: int | None = None


class BinanceNewOrderParams(BinanceSigned):
    symbol: str = ""
    side: str = ""
    type: str = ""
    timeInForce: str | None = None
    quantity: str | None = None
    quoteOrderQty: str | None = None
    price: str | None = None
    stopPrice: str | None = None  # STOP_LOSS(_LIMIT), TAKE_PROFIT(_LIMIT) only, and required
    goodTillDate: int | None = None  # ms; with timeInForce GTD only, and required
    newClientOrderId: str | None = None
    newOrderRespType: str | None = None  # ACK | RESULT | FULL (default FULL for every type)
    selfTradePreventionMode: str | None = None
    trailingDelta: int | None = None  # BIPS (10..2000), stop types only; stopPrice optional
    icebergQty: str | None = None  # limit types with timeInForce GTC, and LIMIT_MAKER


class BinanceOrderRef(BinanceSigned):
    symbol: str = ""
    orderId: int | None = None
    origClientOrderId: str | None = None


class BinanceOpenOrdersParams(BinanceSigned):
    symbol: str | None = None


class BinanceAllOrdersParams(BinanceSigned):
    symbol: str = ""
    orderId: int | None = None
    startTime: int | None = None
    endTime: int | None = None
    limit: int = 500


class BinanceOcoParams(BinanceSigned):
    """POST /api/v3/order/oco (Binance's older OCO route): a LIMIT_MAKER at ``price`` and a
    STOP_LOSS at ``stopPrice`` (STOP_LOSS_LIMIT at ``stopLimitPrice``, GTC)."""

    symbol: str = ""
    side: str = ""
    quantity: str = ""
    price: str = ""
    stopPrice: str = ""
    stopLimitPrice: str | None = None
    stopLimitTimeInForce: str | None = None  # GTC; required with stopLimitPrice
    listClientOrderId: str | None = None
    limitClientOrderId: str | None = None
    stopClientOrderId: str | None = None
    newOrderRespType: str | None = None
    selfTradePreventionMode: str | None = None


class BinanceOrderListOcoParams(BinanceSigned):
    """POST /api/v3/orderList/oco: a SELL list is aboveType LIMIT_MAKER (abovePrice) with
    belowType STOP_LOSS or STOP_LOSS_LIMIT (belowStopPrice; belowPrice and belowTimeInForce
    GTC for the limit); a BUY list the mirror (belowType LIMIT_MAKER, aboveType the stop)."""

    symbol: str = ""
    side: str = ""
    quantity: str = ""
    aboveType: str = ""
    belowType: str = ""
    abovePrice: str | None = None
    aboveStopPrice: str | None = None
    aboveTimeInForce: str | None = None
    aboveClientOrderId: str | None = None
    belowPrice: str | None = None
    belowStopPrice: str | None = None
    belowTimeInForce: str | None = None
    belowClientOrderId: str | None = None
    listClientOrderId: str | None = None
    newOrderRespType: str | None = None
    selfTradePreventionMode: str | None = None


class BinanceOrderListRef(BinanceSigned):
    symbol: str = ""
    orderListId: int | None = None
    listClientOrderId: str | None = None  # those this gateway placed since it started


class BinanceOrderListQuery(BinanceSigned):
    orderListId: int | None = None
    origClientOrderId: str | None = None  # a listClientOrderId this gateway placed


class BinanceAllOrderListParams(BinanceSigned):
    fromId: int | None = None
    startTime: int | None = None
    endTime: int | None = None
    limit: int = 500


class BinanceMyTradesParams(BinanceSigned):
    symbol: str = ""
    orderId: int | None = None
    fromId: int | None = None
    startTime: int | None = None
    endTime: int | None = None
    limit: int = 500


# ----------------------------------------------------------------------- the API


class Binance(Api):
    name = "v3"
    error_type = BinanceError
    refusals = (BinanceReject,)

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.ex = gw.ex
        self.symbols = gw.symbols
        # listClientOrderId <-> orderListId of the lists placed here (the engine keeps no
        # list client id): in memory, the newest LIST_MEMORY
        self.list_cids: dict[tuple[int, int], str] = {}
        self.list_ids: dict[tuple[int, str], int] = {}

    # --------------------------------------------------------------- error shapes
    def body(self, status: int, code: int, message: str) -> bytes:
        if code >= 0:
            code = STATUS_CODES.get(status, -1001 if status >= 500 else -1000)
        return JSON.encode(BinanceError(code, message))

    def fail(self, e: BinanceReject) -> Response:
        return Response(e.status, JSON.encode(BinanceError(e.code, e.msg)))

    def reject(self, msg: M.Rejected, cmd: Any) -> Response:
        status, code, text = REJECTS.get(msg.code, (400, -2010, None))
        if msg.code == R.UNKNOWN_ORDER:
            code, text = (
                (-2011, "Unknown order sent.")
                if type(cmd) is M.Cancel
                else (-2013, "Order does not exist.")
            )
        if code == -2010 and text is None:
            text = msg.reason
        return Response(status, JSON.encode(BinanceError(code, text or msg.reason)))

    def in_doubt(self, cmd: Any) -> Response:
        cid = getattr(cmd, "client_order_id", "") or getattr(cmd, "limit_client_order_id", "")
        ref = f" Look it up with GET /api/v3/order?origClientOrderId={cid}." if cid else ""
        return Response(
            503,
            JSON.encode(
                BinanceError(
                    -1007,
                    "Timeout waiting for response from backend server. Send status unknown;"
                    " execution status unknown." + ref,
                )
            ),
        )

    def auth_error(self, e: AuthError) -> Response:
        self.gw.metrics.auth_failures += 1
        code, status = {
            "missing": (-2014, 401),
            "bad_key": (-2015, 401),
            "permission": (-2015, 401),
            "bad_signature": (-1022, 400),
            "timestamp": (-1021, 400),
            "window": (-1131, 400),
            "replay": (-1022, 400),
        }[e.kind]
        msg = {
            "missing": "API-key format invalid.",
            "bad_key": "Invalid API-key, IP, or permissions for action.",
            "permission": "Invalid API-key, IP, or permissions for action.",
            "bad_signature": "Signature for this request is not valid.",
        }.get(e.kind, e.message[:1].upper() + e.message[1:] + ".")
        return Response(status, JSON.encode(BinanceError(code, msg)))

    def limited(self, wait: float, orders: bool) -> Response:
        cfg = self.gw.cfg
        if orders:
            code = -1015
            msg = f"Too many new orders; current limit is {cfg.orders_per_second:g} per SECOND."
        else:
            code = -1003
            msg = f"Too many requests; current limit is {cfg.requests_per_second:g} per SECOND."
        return Response(
            429, JSON.encode(BinanceError(code, msg)), [("Retry-After", retry_after(wait))]
        )

    # ------------------------------------------------------------------- parsing
    def params(self, req: Request) -> dict[str, str]:
        p = dict(parse_qsl(req.query_string, keep_blank_values=True))
        if req.body:
            ctype = req.headers.get("content-type", "")
            if "json" in ctype:
                raise BinanceReject(-1100, "Send parameters as a form body or query string.")
            p.update(parse_qsl(req.body.decode("latin-1"), keep_blank_values=True))
        return p

    def spec(self, symbol: str | None) -> MarketSpec:
        if not symbol:
            raise BinanceReject(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        spec = self.symbols.spec(symbol) if symbol == symbol.upper() else None
        if spec is None:
            raise BinanceReject(-1121, "Invalid symbol.")
        return spec

    def authenticate(
        self, req: Request, permission: Permission, orders: bool
    ) -> tuple[ApiKey, dict]:
        """Authenticate a signed request: (key, parameters); AuthError / BinanceReject."""
        params = self.params(req)
        signature, payload = binance_payload(req.query_string, req.body)
        key = self.gw.signer.verify(
            req.headers.get("x-mbx-apikey", ""),
            payload,
            signature,
            params.get("timestamp", ""),
            params.get("recvWindow"),
            once=orders,
        )
        if not key.permission.allows(permission):
            raise AuthError("permission", "this API key may not do this")
        return key, params

    def refused(self, e: Exception) -> Response:
        assert isinstance(e, BinanceReject)
        return self.fail(e)

    def public_args(self, req: Request) -> dict[str, str]:
        return self.params(req)

    # -------------------------------------------------------------- public routes
    def time(self, p: dict) -> Response:
        return Gateway.json(BinanceServerTime(_ms()))

    def ping(self, p: dict) -> Response:
        return Response(200, b"{}")

    def exchange_info(self, p: dict) -> Response:
        wanted = _symbols_param(p)
        specs = [self.spec(s) for s in wanted] if wanted else list(self.ex.markets.values())
        cfg = self.gw.cfg
        return Gateway.json(
            BinanceExchangeInfo(
                "UTC",
                _ms(),
                [
                    BinanceRateLimit("REQUEST_WEIGHT", "SECOND", 1, int(cfg.requests_per_second)),
                    BinanceRateLimit("ORDERS", "SECOND", 1, int(cfg.orders_per_second)),
                ],
                [],
                [self.symbol_info(s) for s in specs],
            )
        )

    def symbol_info(self, spec: MarketSpec) -> BinanceSymbolInfo:
        return BinanceSymbolInfo(
            self.symbols.binance[spec.symbol],
            "TRADING",
            spec.base,
            spec.base_decimals,
            spec.quote,
            spec.quote_decimals,
            spec.quote_decimals,
            spec.base_decimals,
            spec.quote_decimals,
            ORDER_TYPES,
            True,  # icebergAllowed
            True,  # ocoAllowed (order/oco, orderList/oco: LIMIT_MAKER + STOP_LOSS(_LIMIT))
            False,  # otoAllowed
            True,  # quoteOrderQtyMarketAllowed
            True,  # allowTrailingStop
            False,  # cancelReplaceAllowed
            True,
            False,
            [
                BinanceFilter(
                    "PRICE_FILTER",
                    minPrice=spec.tick.text,
                    maxPrice=spec.price_text(spec.max_price),
                    tickSize=spec.tick.text,
                ),
                BinanceFilter(
                    "LOT_SIZE",
                    minQty=spec.qty_text(spec.min_qty),
                    maxQty=spec.qty_text(spec.max_qty),
                    stepSize=spec.lot.text,
                ),
                BinanceFilter(
                    "MARKET_LOT_SIZE",
                    minQty=spec.qty_text(spec.min_qty),
                    maxQty=spec.qty_text(spec.max_qty),
                    stepSize=spec.lot.text,
                ),
                # the engine bounds an iceberg's parts only by LOT_SIZE: any icebergQty from
                # minQty up (CEIL(quantity / icebergQty) parts) is taken
                BinanceFilter("ICEBERG_PARTS", limit=-(-spec.max_qty // spec.min_qty)),
                BinanceFilter(
                    "TRAILING_DELTA",
                    minTrailingAboveDelta=TRAILING_DELTA[0],
                    maxTrailingAboveDelta=TRAILING_DELTA[1],
                    minTrailingBelowDelta=TRAILING_DELTA[0],
                    maxTrailingBelowDelta=TRAILING_DELTA[1],
                ),
            ],
            [],
            [["SPOT"]],
            "EXPIRE_TAKER",
            ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        )

    def depth(self, p: dict) -> Response:
        spec = self.spec(p.get("symbol"))
        limit = _int_param(p, "limit", 100, 1, 5000)
        return Gateway.json(self.gw.streams.depth_snapshot(spec, limit))

    def trades(self, p: dict, agg: bool) -> Response:
        spec = self.spec(p.get("symbol"))
        limit = _int_param(p, "limit", 500, 1, 1000)
        rows = self.gw.market.trades[spec.symbol]
        from_id = _opt_int(p, "fromId")
        start, end = _opt_int(p, "startTime"), _opt_int(p, "endTime")
        out = []
        for t in rows:
            ms = t.ts // 1_000_000
            if from_id is not None and t.trade_id < from_id:
                continue
            if (start is not None and ms < start) or (end is not None and ms > end):
                continue
            out.append(t)
        out = out[:limit] if from_id is not None or start is not None else out[-limit:]
        if agg:
            return Gateway.json([_agg(spec, t) for t in out])
        return Gateway.json([_public_trade(spec, t) for t in out])

    async def klines(self, p: dict) -> Response:
        try:
            spec = self.spec(p.get("symbol"))
            interval = p.get("interval", "")
            if interval not in A.INTERVALS:
                raise BinanceReject(-1120, "Invalid interval.")
            limit = _int_param(p, "limit", 500, 1, 1000)
            start, end = _opt_int(p, "startTime"), _opt_int(p, "endTime")
        except BinanceReject as e:
            return self.fail(e)
        rows = await self.gw.market.klines(
            spec.symbol,
            interval,
            0 if start is None else start // 1000,
            2**40 if end is None else end // 1000 + 1,
            limit,
        )
        step = INTERVAL_MS[interval]
        return Gateway.json(
            [
                [
                    k.open_time * 1000,
                    k.open,
                    k.high,
                    k.low,
                    k.close,
                    k.volume,
                    k.open_time * 1000 + step - 1,
                    k.quote_volume,
                    k.trades,
                    "0",
                    "0",
                    "0",
                ]
                for k in rows
            ]
        )

    def ticker(self, p: dict, kind: str) -> Response:
        wanted = _symbols_param(p)
        if p.get("symbol"):
            return Gateway.json(self.one_ticker(self.spec(p["symbol"]), kind))
        specs = [self.spec(s) for s in wanted] if wanted else list(self.ex.markets.values())
        return Gateway.json([self.one_ticker(s, kind) for s in specs])

    def one_ticker(self, spec: MarketSpec, kind: str) -> Any:
        md = self.gw.market
        sym = self.symbols.binance[spec.symbol]
        book = md.books[spec.symbol]
        (bp, bq), (ap, aq) = book.best_bid(), book.best_ask()
        px, qty = spec.price_text, spec.qty_text
        if kind == "book":
            return BinanceBookTicker(sym, px(bp), qty(bq), px(ap), qty(aq))
        t = md.ticker_raw(spec.symbol)
        if kind == "price":
            return BinancePriceTicker(sym, px(t.last))
        now = _ms()
        pct = "0.000" if not t.open else f"{t.change * 100 / t.open:.3f}"
        avg = "0"
        if t.volume:
            avg = spec.price_text(t.quote_volume // (t.volume * spec.tick_lot_quote))
        recent = md.trades[spec.symbol]
        last_qty = qty(recent[-1].qty) if recent else "0"
        return BinanceTicker24(
            sym,
            px(t.change) if t.open else "0",
            pct,
            avg,
            px(t.open) if t.open else "0",
            px(t.last) if t.last else "0",
            last_qty,
            px(bp),
            qty(bq),
            px(ap),
            qty(aq),
            px(t.open) if t.open else "0",
            px(t.high) if t.high else "0",
            px(t.low) if t.low else "0",
            qty(t.volume),
            spec.quote_text(t.quote_volume),
            now - 86_400_000,
            now,
            t.first_trade_id if t.trades else -1,
            t.last_trade_id if t.trades else -1,
            t.trades,
        )

    # -------------------------------------------------------------- signed routes
    def account(self, key: ApiKey, p: dict) -> Deferred:
        def ok(msg: M.Balances) -> Response:
            spec = next(iter(self.ex.markets.values()), None)
            maker = spec.maker_ppm if spec else 0
            taker = spec.taker_ppm if spec else 0
            return Gateway.json(
                BinanceAccount(
                    key.account_id,
                    maker // 100,
                    taker // 100,
                    0,
                    0,
                    BinanceCommissionRates(
                        format_decimal(maker, 6), format_decimal(taker, 6), "0", "0"
                    ),
                    key.permission.allows(Permission.TRADE),
                    False,
                    False,
                    False,
                    False,
                    False,
                    _ms(),
                    "SPOT",
                    [
                        BinanceAssetBalance(
                            b.asset,
                            self.ex.units_text(b.asset, b.available),
                            self.ex.units_text(b.asset, b.locked),
                        )
                        for b in msg.balances
                    ],
                    ["SPOT"],
                )
            )

        return self.gw.call(self, M.BalancesRequest(0, key.account_id), ok)

    def new_order(self, key: ApiKey, p: dict) -> Deferred:
        spec = self.spec(p.get("symbol"))
        cmd, resp_type = self.order_command(key, spec, p)
        self.gw.metrics.orders += 1

        def ok(msg: M.Executions) -> Response:
            return Gateway.json(self.created(spec, cmd, msg, resp_type))

        return self.gw.call(self, cmd, ok)

    def test_order(self, key: ApiKey, p: dict) -> Response:
        """Validates what the gateway can without the engine: parameters, filters, and a
        goodTillDate in the past (balances, and a stop the last price already reached, are
        the engine's to judge, when the order is placed)."""
        cmd, _ = self.order_command(key, self.spec(p.get("symbol")), p)
        if cmd.tif == TimeInForce.GTD and cmd.expire_ts <= time.time_ns():
            status, code, text = REJECTS[R.INVALID_EXPIRE_TIME]
            raise BinanceReject(code, text or "", status)
        return Response(200, b"{}")

    def order_command(self, key: ApiKey, spec: MarketSpec, p: dict) -> tuple[M.NewOrder, str]:
        side = SIDES.get(p.get("side", ""))
        if side is None:
            raise BinanceReject(-1117, "Invalid side.")
        kind, tif, trigger, stop, expire, trail = _order_kind(spec, p)
        price, qty, quote_qty = _order_amounts(spec, kind, side, p)
        display = _iceberg_qty(spec, kind, tif, qty, p)
        stp_text = p.get("selfTradePreventionMode") or "NONE"
        if stp_text not in STPS:
            raise BinanceReject(
                -1130, "Invalid data sent for a parameter: selfTradePreventionMode."
            )
        resp_type = p.get("newOrderRespType") or "FULL"
        if resp_type not in ("ACK", "RESULT", "FULL"):
            raise BinanceReject(-1130, "Invalid data sent for a parameter: newOrderRespType.")
        cid = p.get("newClientOrderId") or ""
        if len(cid) > 36 or not _CID.match(cid):
            raise BinanceReject(
                -1100,
                "Illegal characters found in parameter 'newClientOrderId'; "
                "legal range is '^[a-zA-Z0-9-_]{1,36}$'.",
            )
        market = OrderType.MARKET if kind in MARKET_TYPES else OrderType.LIMIT
        cmd = M.NewOrder(
            0, key.account_id, spec.symbol, side, market, tif, price, qty, quote_qty, cid,
            kind == "LIMIT_MAKER", STPS[stp_text], trigger=trigger, stop_price=stop,
            expire_ts=expire, display_qty=display, trailing_bps=trail,
        )  # fmt: skip
        return cmd, resp_type

    def created(
        self, spec: MarketSpec, cmd: M.NewOrder, msg: M.Executions, kind: str
    ) -> BinanceOrder:
        last = msg.reports[-1]
        ms = last.ts // 1_000_000
        # A stop is not working until it triggers: Binance's workingTime is -1 then, which
        # ccxt would take for the order's timestamp (it prefers workingTime to
        # transactTime), so a waiting stop's answer leaves workingTime out.
        waiting = cmd.trigger != 0 and last.exec_type == ExecType.NEW
        order = self.order_view(
            spec,
            last,
            _status(last.status, last.reason_code),
            _tif_name(cmd.tif, cmd.type),
            _type_name(cmd.type, cmd.post_only, cmd.trigger),
            transactTime=ms,
            workingTime=None if waiting else ms,
            stopPrice=_stop_text(spec, cmd.stop_price) if cmd.trigger else None,
            icebergQty=spec.qty_text(cmd.display_qty) if cmd.display_qty else None,
            trailingDelta=cmd.trailing_bps or None,
            # without a stopPrice a trailing stop follows the price from its acceptance;
            # with one it follows once the last price reaches it (-1 until then)
            trailingTime=(-1 if cmd.stop_price else ms) if cmd.trailing_bps else None,
            origQuoteOrderQty=spec.quote_text(cmd.quote_qty),
            selfTradePreventionMode=STP_NAMES[cmd.stp],
        )
        if kind == "ACK":
            return BinanceOrder(
                order.symbol, order.orderId, -1, order.clientOrderId, "", "", "", "", "", "", "",
                "", transactTime=ms,
            )  # fmt: skip
        if kind == "FULL":
            order.fills = [_fill(spec, r) for r in msg.reports if r.last_qty]
        return order

    def ref(self, key: ApiKey, p: dict) -> tuple[MarketSpec, int, str]:
        spec = self.spec(p.get("symbol"))
        order_id = _opt_int(p, "orderId") or 0
        cid = p.get("origClientOrderId") or ""
        if not order_id and not cid:
            raise BinanceReject(
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        return spec, order_id, cid

    def get_order(self, key: ApiKey, p: dict) -> Deferred:
        spec, order_id, cid = self.ref(key, p)
        cmd = M.OrderStatusRequest(0, key.account_id, spec.symbol, order_id, cid)
        return self.gw.call(self, cmd, lambda m: Gateway.json(self.state(spec, m.order)))

    def cancel_order(self, key: ApiKey, p: dict) -> Any:
        """The cancel goes out in one frame after a status query of the same order: the
        engine answers both in order, and the query gives what a cancel report does not
        carry (order type, time in force, post-only)."""
        spec, order_id, cid = self.ref(key, p)
        acct = key.account_id
        before = self.gw.engine.send(M.OrderStatusRequest(0, acct, spec.symbol, order_id, cid))
        call = self.gw.call(self, M.Cancel(0, acct, spec.symbol, order_id, cid), _raw)
        return self._cancel_one(spec, before, call, order_id, cid)

    async def _cancel_one(self, spec: MarketSpec, before: Any, call: Deferred, order_id: int,
                          cid: str) -> Response:  # fmt: skip
        """The cancelled order's answer. The order of a list cancels its list: the engine's
        reply then holds both orders' reports, and the answer is the one asked for."""
        out = await _settle(call)
        try:
            info = await before
        except Exception:
            info = None
        if isinstance(out, Response):
            return out
        state = info.order if type(info) is M.OrderInfo else None
        if state is not None:
            order_id = state.order_id
        mine = [
            r for r in out.reports if r.order_id == order_id or (cid and r.client_order_id == cid)
        ]
        return Gateway.json(self.cancelled(spec, (mine or out.reports)[-1], state))

    def cancelled(
        self, spec: MarketSpec, r: M.ExecReport, state: M.OrderState | None = None
    ) -> BinanceOrder:
        if state is not None:
            tif = _tif_name(state.tif, state.type)
            kind = _type_name(state.type, state.post_only, state.trigger)
        else:  # limit orders rest and stops wait, so only they are cancelled
            kind = _type_name(r.order_type, False, r.trigger)
            tif = _tif_name(0, r.order_type)
        status = _status(r.status, r.reason_code)
        return self.order_view(
            spec, r, status, tif, kind, state.list_id if state is not None else 0,
            transactTime=r.ts // 1_000_000,
            stopPrice=_stop_text(spec, r.stop_price) if r.trigger else None,
            icebergQty=spec.qty_text(state.display_qty) if state and state.display_qty else None,
            trailingDelta=state.trailing_bps or None if state is not None else None,
            origClientOrderId=r.client_order_id,
        )  # fmt: skip

    def state(self, spec: MarketSpec, o: M.OrderState) -> BinanceOrder:
        return self.order_view(
            spec,
            o,
            _status(o.status, 0),
            _tif_name(o.tif, o.type),
            _type_name(o.type, o.post_only, o.trigger),
            time=o.created_ts // 1_000_000,
            updateTime=o.updated_ts // 1_000_000,
            workingTime=-1 if o.waiting else o.created_ts // 1_000_000,
            isWorking=not o.waiting,  # a stop works (is in the book or traded) once triggered
            stopPrice=_stop_text(spec, o.stop_price),
            icebergQty=spec.qty_text(o.display_qty) if o.display_qty else _zero(spec.lot.text),
            trailingDelta=o.trailing_bps or None,
            trailingTime=_trailing_time(o),
            origQuoteOrderQty=spec.quote_text(o.quote_qty),
            selfTradePreventionMode="EXPIRE_TAKER",
        )

    def order_view(
        self, spec: MarketSpec, o: M.ExecReport | M.OrderState, status: str, tif: str,
        kind: str, list_id: int = 0, **extra: Any,
    ) -> BinanceOrder:  # fmt: skip
        """What every Binance order answer shows, from an execution report or an order's
        state (both carry these fields); ``list_id``: its order list's (an order's state
        has it, a report does not); ``extra``: the fields of that kind of answer."""
        if isinstance(o, M.OrderState):
            list_id = o.list_id
        # a stop-market buy carries the engine's protection price: Binance shows none
        shown = o.price if kind not in MARKET_TYPES else 0
        return BinanceOrder(
            self.symbols.binance[spec.symbol],
            o.order_id,
            list_id or -1,
            o.client_order_id,
            spec.price_text(shown) if shown else _zero(spec.tick.text),
            spec.qty_text(o.qty) if o.qty else _zero(spec.lot.text),
            spec.qty_text(o.cum_qty),
            spec.quote_text(o.cum_quote),
            status,
            tif,
            kind,
            SIDE_NAMES[o.side],
            **extra,
        )

    def open_orders(self, key: ApiKey, p: dict) -> Deferred:
        symbol = p.get("symbol")
        spec = self.spec(symbol) if symbol else None
        cmd = M.OpenOrdersRequest(0, key.account_id, spec.symbol if spec else "")

        def ok(msg: M.OpenOrders) -> Response:
            ex = self.ex
            return Gateway.json([self.state(ex.markets[o.market], o) for o in msg.orders])

        return self.gw.call(self, cmd, ok)

    def cancel_open(self, key: ApiKey, p: dict) -> Any:
        """DELETE /api/v3/openOrders: every open order of the symbol, cancelled one by one so
        the answer lists exactly what was cancelled (an order that filled meanwhile is not)."""
        return self._cancel_open(key, self.spec(p.get("symbol")))

    async def _cancel_open(self, key: ApiKey, spec: MarketSpec) -> Response:
        gw, acct = self.gw, key.account_id
        listing = await _settle(gw.call(self, M.OpenOrdersRequest(0, acct, spec.symbol), _raw))
        if isinstance(listing, Response):
            return listing
        calls = [gw.call(self, M.Cancel(0, acct, spec.symbol, o.order_id), _raw)
                 for o in listing.orders]  # fmt: skip
        states = {o.order_id: o for o in listing.orders}
        done: dict[int, BinanceOrder] = {}
        for call in calls:  # one frame, in order
            out = await _settle(call)
            if isinstance(out, Response):
                if out.status >= 500:  # in doubt or unavailable: say so, not a short list
                    return out
                continue  # already gone (filled or cancelled meanwhile, or with its list)
            for r in out.reports:  # an order of a list: both of the list's orders
                if r.exec_type == ExecType.CANCELED and r.order_id not in done:
                    done[r.order_id] = self.cancelled(spec, r, states.get(r.order_id))
        return Gateway.json(list(done.values()))

    def all_orders(self, key: ApiKey, p: dict) -> Any:
        """GET /api/v3/allOrders: open and closed orders of a symbol, oldest first (closed
        ones: the newest 1000 the engine keeps for the account)."""
        spec = self.spec(p.get("symbol"))
        limit = _int_param(p, "limit", 500, 1, 1000)
        order_id, start, end = (
            _opt_int(p, "orderId"),
            _opt_int(p, "startTime"),
            _opt_int(p, "endTime"),
        )
        acct = key.account_id
        calls = (  # one frame: the two lists describe the same moment
            self.gw.call(self, M.OrderHistoryRequest(0, acct, spec.symbol, 1000), _raw),
            self.gw.call(self, M.OpenOrdersRequest(0, acct, spec.symbol), _raw),
        )
        return self._all_orders(spec, calls, limit, order_id, start, end)

    async def _all_orders(self, spec: MarketSpec, calls: tuple[Deferred, Deferred], limit: int,
                          order_id: int | None, start: int | None, end: int | None,
                          ) -> Response:  # fmt: skip
        orders = await _orders_of(calls)
        if isinstance(orders, Response):
            return orders
        orders.sort(key=lambda o: o.order_id)
        rows = [
            o for o in orders
            if (order_id is None or o.order_id >= order_id)
            and (start is None or o.created_ts // 1_000_000 >= start)
            and (end is None or o.created_ts // 1_000_000 <= end)
        ]  # fmt: skip
        rows = rows[:limit] if order_id is not None else rows[-limit:]
        return Gateway.json([self.state(spec, o) for o in rows])

    def my_trades(self, key: ApiKey, p: dict) -> Deferred:
        spec = self.spec(p.get("symbol"))
        limit = _int_param(p, "limit", 500, 1, 1000)
        from_id, order_id = _opt_int(p, "fromId"), _opt_int(p, "orderId")
        start, end = _opt_int(p, "startTime"), _opt_int(p, "endTime")
        sym = self.symbols.binance[spec.symbol]

        def ok(msg: M.FillsReply) -> Response:
            rows = []
            for r in msg.fills:
                ms = r.ts // 1_000_000
                if from_id is not None and r.trade_id < from_id:
                    continue
                if order_id is not None and r.order_id != order_id:
                    continue
                if (start is not None and ms < start) or (end is not None and ms > end):
                    continue
                rows.append(_my_trade(spec, sym, r))
            rows = rows[:limit] if from_id is not None else rows[-limit:]
            return Gateway.json(rows)

        return self.gw.call(self, M.FillsRequest(0, key.account_id, spec.symbol, 1000), ok)

    # ------------------------------------------------------- one-cancels-the-other
    # The engine's list (engine/core.py, NewOrderList): a LIMIT_MAKER and a STOP_LOSS (or
    # STOP_LOSS_LIMIT) of one side and quantity; its id is the limit order's, the stop order's
    # is the next. listClientOrderId is the gateway's: kept here while it runs.

    def new_oco_legacy(self, key: ApiKey, p: dict) -> Deferred:
        """POST /api/v3/order/oco: price (LIMIT_MAKER), stopPrice, stopLimitPrice."""
        spec = self.spec(p.get("symbol"))
        _refuse(p, ("limitIcebergQty", "stopIcebergQty", "trailingDelta", "limitStrategyId",
                    "limitStrategyType", "stopStrategyId", "stopStrategyType"))  # fmt: skip
        price = _price(spec, p, "price")
        stop = _price(spec, p, "stopPrice")
        stop_limit = 0
        if p.get("stopLimitPrice"):
            stop_limit = _price(spec, p, "stopLimitPrice")
            _gtc_only(p, "stopLimitTimeInForce")
        elif p.get("stopLimitTimeInForce"):
            raise BinanceReject(-1106, "Parameter 'stopLimitTimeInForce' sent when not required.")
        cids = (p.get("limitClientOrderId") or "", p.get("stopClientOrderId") or "")
        return self.place_list(key, spec, p, price, stop, stop_limit, cids)

    def new_oco(self, key: ApiKey, p: dict) -> Deferred:
        """POST /api/v3/orderList/oco: the above and below legs named by their types."""
        spec = self.spec(p.get("symbol"))
        side = _side(p)
        for leg in ("above", "below"):
            kind = p.get(f"{leg}Type")
            if not kind:
                raise BinanceReject(
                    -1102,
                    f"Mandatory parameter '{leg}Type' was not sent, was empty/null, or malformed.",
                )
            if kind not in ("LIMIT_MAKER", *STOP_TYPES):
                raise BinanceReject(-1116, "Invalid orderType.")
            _refuse(p, tuple(f"{leg}{k}" for k in LEG_EXTRAS))
        lim, stp = ("above", "below") if side == 2 else ("below", "above")
        if p[f"{lim}Type"] != "LIMIT_MAKER" or p[f"{stp}Type"] not in (
            "STOP_LOSS",
            "STOP_LOSS_LIMIT",
        ):
            raise BinanceReject(
                -1014,
                "Unsupported order combination: this exchange's OCO is a LIMIT_MAKER and a "
                "STOP_LOSS or STOP_LOSS_LIMIT: a SELL list aboveType=LIMIT_MAKER with belowType"
                "=STOP_LOSS(_LIMIT), a BUY list belowType=LIMIT_MAKER with aboveType="
                "STOP_LOSS(_LIMIT).",
            )
        for name in (f"{lim}StopPrice", f"{lim}TimeInForce"):
            if p.get(name):
                raise BinanceReject(-1106, f"Parameter '{name}' sent when not required.")
        price = _price(spec, p, f"{lim}Price")
        stop = _price(spec, p, f"{stp}StopPrice")
        stop_limit = 0
        if p[f"{stp}Type"] == "STOP_LOSS_LIMIT":
            stop_limit = _price(spec, p, f"{stp}Price")
            _gtc_only(p, f"{stp}TimeInForce")
        else:
            for name in (f"{stp}Price", f"{stp}TimeInForce"):
                if p.get(name):
                    raise BinanceReject(-1106, f"Parameter '{name}' sent when not required.")
        cids = (p.get(f"{lim}ClientOrderId") or "", p.get(f"{stp}ClientOrderId") or "")
        return self.place_list(key, spec, p, price, stop, stop_limit, cids)

    def place_list(self, key: ApiKey, spec: MarketSpec, p: dict, price: int, stop: int,
                   stop_limit: int, cids: tuple[str, str]) -> Deferred:  # fmt: skip
        side = _side(p)
        qty = _amount(spec.qty_to_lots, p.get("quantity"), "quantity", "LOT_SIZE", True)
        if not spec.min_qty <= qty <= spec.max_qty:
            raise BinanceReject(-1013, "Filter failure: LOT_SIZE")
        stp_text = p.get("selfTradePreventionMode") or "NONE"
        if stp_text not in STPS:
            raise BinanceReject(
                -1130, "Invalid data sent for a parameter: selfTradePreventionMode."
            )
        if (p.get("newOrderRespType") or "FULL") not in ("ACK", "RESULT", "FULL"):
            raise BinanceReject(-1130, "Invalid data sent for a parameter: newOrderRespType.")
        list_cid = p.get("listClientOrderId") or ""
        names = ("listClientOrderId", "limitClientOrderId", "stopClientOrderId")
        for name, cid in zip(names, (list_cid, *cids), strict=True):
            if len(cid) > 36 or not _CID.match(cid):
                raise BinanceReject(
                    -1100,
                    f"Illegal characters found in parameter '{name}'; "
                    "legal range is '^[a-zA-Z0-9-_]{1,36}$'.",
                )
        # generated as Binance does when none is sent: the limit order's client id is what an
        # in-doubt list is looked up by
        list_cid = list_cid or _new_cid()
        limit_cid, stop_cid = cids[0] or _new_cid(), cids[1] or _new_cid()
        acct = key.account_id
        cmd = M.NewOrderList(0, acct, spec.symbol, side, qty, price, stop, stop_limit, list_cid,
                             limit_cid, stop_cid, STPS[stp_text])  # fmt: skip
        self.gw.metrics.orders += 2

        def ok(msg: M.Executions) -> Response:
            limit, stop_r = msg.reports[0], msg.reports[1]
            list_id = limit.order_id
            self.remember_list(acct, list_id, list_cid)
            ms = limit.ts // 1_000_000
            views = {
                limit.order_id: self.order_view(
                    spec, limit, "NEW", "GTC", "LIMIT_MAKER", list_id, transactTime=ms,
                    workingTime=ms, selfTradePreventionMode=STP_NAMES[cmd.stp]),
                stop_r.order_id: self.order_view(
                    spec, stop_r, "NEW", _tif_name(0, stop_r.order_type),
                    _type_name(stop_r.order_type, False, stop_r.trigger), list_id,
                    transactTime=ms, stopPrice=spec.price_text(stop),
                    selfTradePreventionMode=STP_NAMES[cmd.stp]),
            }  # fmt: skip
            below = [limit, stop_r] if side == 1 else [stop_r, limit]
            return Gateway.json(
                self.list_view(spec, list_id, list_cid, True, ms, below,
                               [views[r.order_id] for r in below])
            )  # fmt: skip

        return self.gw.call(self, cmd, ok)

    def remember_list(self, acct: int, list_id: int, cid: str) -> None:
        self.list_cids[(acct, list_id)] = cid
        self.list_ids[(acct, cid)] = list_id
        while len(self.list_cids) > LIST_MEMORY:
            (a, lid), old = next(iter(self.list_cids.items()))
            del self.list_cids[(a, lid)]
            if self.list_ids.get((a, old)) == lid:
                del self.list_ids[(a, old)]

    def list_view(self, spec: MarketSpec, list_id: int, cid: str | None, working: bool,
                  ms: int, legs: list[Any], reports: list[BinanceOrder] | None = None,
                  ) -> BinanceOrderList:  # fmt: skip
        sym = self.symbols.binance[spec.symbol]
        status = ("EXEC_STARTED", "EXECUTING") if working else ("ALL_DONE", "ALL_DONE")
        return BinanceOrderList(
            list_id, "OCO", status[0], status[1], cid or "", ms, sym,
            [BinanceListOrder(sym, o.order_id, o.client_order_id) for o in legs], reports,
        )  # fmt: skip

    def list_ref(self, key: ApiKey, p: dict, cid_name: str) -> int:
        list_id = _opt_int(p, "orderListId")
        cid = p.get(cid_name) or ""
        if list_id is None and not cid:
            raise BinanceReject(
                -1102,
                f"Param '{cid_name}' or 'orderListId' must be sent, but both were empty/null!",
            )
        if list_id is None:
            found = self.list_ids.get((key.account_id, cid))
            if found is None:
                raise BinanceReject(-2011 if cid_name == "listClientOrderId" else -2013,
                                    "Order list does not exist.")  # fmt: skip
            list_id = found
        return list_id

    async def list_states(self, acct: int, market: str, list_id: int, code: int,
                          ) -> tuple[M.OrderState, M.OrderState] | Response:  # fmt: skip
        """The list's two orders (limit, stop) as the engine has them, or the answer that
        there is no such list (``code``: -2011 for a cancel, -2013 for a query)."""
        calls = [self.gw.call(self, M.OrderStatusRequest(0, acct, market, oid), _raw)
                 for oid in (list_id, list_id + 1)]  # fmt: skip
        got = [await _settle(c) for c in calls]
        for g in got:
            if isinstance(g, Response) and g.status >= 500:
                return g
        if any(isinstance(g, Response) or g.order.list_id != list_id for g in got):
            return self.fail(BinanceReject(code, "Order list does not exist."))
        return got[0].order, got[1].order

    def cancel_list(self, key: ApiKey, p: dict) -> Any:
        """DELETE /api/v3/orderList: cancels both orders (one cancel: the engine cancels the
        list's other order with it)."""
        spec = self.spec(p.get("symbol"))
        return self._cancel_list(key, spec, self.list_ref(key, p, "listClientOrderId"))

    async def _cancel_list(self, key: ApiKey, spec: MarketSpec, list_id: int) -> Response:
        acct = key.account_id
        states = await self.list_states(acct, spec.symbol, list_id, -2011)
        if isinstance(states, Response):
            return states
        target = next((o for o in states if o.status <= OrderStatus.PARTIALLY_FILLED), None)
        if target is None:  # both done: nothing to cancel
            return self.fail(BinanceReject(-2011, "Unknown order sent."))
        out = await _settle(
            self.gw.call(self, M.Cancel(0, acct, spec.symbol, target.order_id), _raw)
        )
        if isinstance(out, Response):
            return out
        reports = {r.order_id: r for r in out.reports if r.exec_type == ExecType.CANCELED}
        legs = _below_first(states)
        views = [
            self.cancelled(spec, reports[o.order_id], o) if o.order_id in reports
            else self.state(spec, o)
            for o in legs
        ]  # fmt: skip
        ms = out.reports[-1].ts // 1_000_000
        cid = self.list_cids.get((acct, list_id))
        return Gateway.json(self.list_view(spec, list_id, cid, False, ms, legs, views))

    def get_list(self, key: ApiKey, p: dict) -> Any:
        return self._get_list(key, self.list_ref(key, p, "origClientOrderId"))

    async def _get_list(self, key: ApiKey, list_id: int) -> Response:
        states = await self.list_states(key.account_id, "", list_id, -2013)
        if isinstance(states, Response):
            return states
        return Gateway.json(self.list_of(key.account_id, list(states)))

    def list_of(self, acct: int, legs: list[M.OrderState]) -> BinanceOrderList:
        """A list from its two orders' states: working while both are."""
        spec = self.ex.markets[legs[0].market]
        list_id = legs[0].list_id
        working = all(o.status <= OrderStatus.PARTIALLY_FILLED for o in legs)
        ms = max(o.updated_ts for o in legs) // 1_000_000
        return self.list_view(spec, list_id, self.list_cids.get((acct, list_id)), working, ms,
                              _below_first(legs))  # fmt: skip

    def open_lists(self, key: ApiKey, p: dict) -> Deferred:
        """GET /api/v3/openOrderList: the lists whose two orders both still work."""
        acct = key.account_id

        def ok(msg: M.OpenOrders) -> Response:
            groups = _lists(msg.orders)
            return Gateway.json([self.list_of(acct, legs) for legs in groups if len(legs) == 2])

        return self.gw.call(self, M.OpenOrdersRequest(0, acct), ok)

    def all_lists(self, key: ApiKey, p: dict) -> Any:
        """GET /api/v3/allOrderList: open and closed lists, oldest first (closed ones: from
        the newest 1000 orders the engine keeps for the account)."""
        limit = _int_param(p, "limit", 500, 1, 1000)
        from_id, start, end = (_opt_int(p, n) for n in ("fromId", "startTime", "endTime"))
        acct = key.account_id
        calls = (
            self.gw.call(self, M.OrderHistoryRequest(0, acct, "", 1000), _raw),
            self.gw.call(self, M.OpenOrdersRequest(0, acct), _raw),
        )
        return self._all_lists(acct, calls, limit, from_id, start, end)

    async def _all_lists(self, acct: int, calls: tuple[Deferred, Deferred], limit: int,
                         from_id: int | None, start: int | None, end: int | None,
                         ) -> Response:  # fmt: skip
        orders = await _orders_of(calls)
        if isinstance(orders, Response):
            return orders
        rows = [
            legs for legs in _lists(orders)
            if len(legs) == 2
            and (from_id is None or legs[0].list_id >= from_id)
            and (start is None or legs[0].created_ts // 1_000_000 >= start)
            and (end is None or legs[0].created_ts // 1_000_000 <= end)
        ]  # fmt: skip
        rows = rows[:limit] if from_id is not None else rows[-limit:]
        return Gateway.json([self.list_of(acct, legs) for legs in rows])

    def unsupported(self, req: Request) -> Response:
        return self.error(
            404, -1016, f"This service is not available on this exchange: {req.method} {req.path}"
        )


# ------------------------------------------------------------------------ helpers

_CID = re.compile(r"^[a-zA-Z0-9._\-~]*$")


def _raw(msg: Any) -> Any:
    return msg


async def _settle(d: Deferred) -> Any:
    """The reply of a deferred engine call, or the error Response it turned into."""
    try:
        await d.future
    except Exception:  # noqa: S110 - the outcome function turns it into a Response
        pass
    return d.then(d.future)


def _ms() -> int:
    return time.time_ns() // 1_000_000


def _zero(step_text: str) -> str:
    """Zero written with a step's decimals, as Binance writes "0.00000000"."""
    places = len(step_text.partition(".")[2])
    return "0." + "0" * places if places else "0"


def _side(p: dict) -> int:
    side = SIDES.get(p.get("side", ""))
    if side is None:
        raise BinanceReject(-1117, "Invalid side.")
    return side


def _price(spec: MarketSpec, p: dict, name: str) -> int:
    price = _amount(spec.price_to_ticks, p.get(name), name, "PRICE_FILTER", True)
    if price > spec.max_price:
        raise BinanceReject(-1013, "Filter failure: PRICE_FILTER")
    return price


def _refuse(p: dict, names: tuple[str, ...]) -> None:
    """Parameters of Binance's order lists the engine's lists do not have."""
    for name in names:
        if p.get(name):
            raise BinanceReject(
                -1014, f"Unsupported order combination: {name} is not supported in order lists."
            )


def _gtc_only(p: dict, name: str) -> None:
    tif = p.get(name)
    if not tif:
        raise BinanceReject(
            -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    if tif not in TIFS:
        raise BinanceReject(-1115, "Invalid timeInForce.")
    if tif != "GTC":
        raise BinanceReject(
            -1014, f"Unsupported order combination: {name} must be GTC (the engine's stop leg)."
        )


def _new_cid() -> str:
    return secrets.token_hex(11)  # 22 characters, as Binance's generated ids


def _lists(orders: list[M.OrderState]) -> list[list[M.OrderState]]:
    """Orders of lists grouped by list (limit order first), oldest list first."""
    groups: dict[int, list[M.OrderState]] = {}
    for o in orders:
        if o.list_id:
            groups.setdefault(o.list_id, []).append(o)
    return [sorted(g, key=lambda o: o.order_id) for _, g in sorted(groups.items())]


def _below_first(legs: Any) -> list[M.OrderState]:
    """A list's orders by price, as Binance lists them: a sell's stop then its limit, a
    buy's limit then its stop."""
    limit, stop = sorted(legs, key=lambda o: o.order_id)
    return [limit, stop] if limit.side == 1 else [stop, limit]


def _stop_text(spec: MarketSpec, stop: int) -> str:
    """A stop price; zero (written as Binance does) for a trailing stop without one."""
    return spec.price_text(stop) if stop else _zero(spec.tick.text)


def _trailing_time(o: M.OrderState) -> int | None:
    """When a trailing stop started following the price (ms), as far as the engine's state
    tells it: -1 not yet (its activation price not reached); its acceptance when it has no
    activation price; left out when it started at a trade the state does not date."""
    if not o.trailing_bps:
        return None
    if not o.trail_price:
        return -1
    return None if o.stop_price else o.created_ts // 1_000_000


def _status(status: int, reason: int) -> str:
    if status == OrderStatus.CANCELED and reason in EXPIRING:
        return "EXPIRED"
    if status == OrderStatus.CANCELED and reason == CancelReason.SELF_TRADE:
        return "EXPIRED_IN_MATCH"
    return STATUS.get(status, "NEW")  # type: ignore[call-overload]


def _tif_name(tif: int, kind: int) -> str:
    """An order's time in force; unset: GTC for a limit order, IOC for a market order."""
    return TIF_NAMES.get(tif, "GTC" if kind == OrderType.LIMIT else "IOC")


def _type_name(kind: int, post_only: bool, trigger: int = 0) -> str:
    if trigger:
        return STOP_NAMES.get((trigger, kind), "STOP_LOSS_LIMIT")
    if kind == OrderType.MARKET:
        return "MARKET"
    return "LIMIT_MAKER" if post_only else "LIMIT"


def _fill(spec: MarketSpec, r: M.ExecReport) -> BinanceOrderFill:
    buyer = r.side == 1
    return BinanceOrderFill(
        spec.price_text(r.last_px),
        spec.qty_text(r.last_qty),
        spec.base_text(r.fee) if buyer else spec.quote_text(r.fee),
        spec.base if buyer else spec.quote,
        r.trade_id,
    )


async def _orders_of(calls: tuple[Deferred, ...]) -> list[M.OrderState] | Response:
    """The orders of an order history and an open-orders reply sent in one frame, or the
    error answer of the first that failed."""
    orders: list[M.OrderState] = []
    for call in calls:
        got = await _settle(call)
        if isinstance(got, Response):
            return got
        orders += got.orders
    return orders


def _my_trade(spec: MarketSpec, sym: str, r: M.ExecReport) -> BinanceMyTrade:
    buyer = r.side == 1
    return BinanceMyTrade(
        sym,
        r.trade_id,
        r.order_id,
        -1,
        spec.price_text(r.last_px),
        spec.qty_text(r.last_qty),
        spec.quote_text(r.last_px * r.last_qty * spec.tick_lot_quote),
        spec.base_text(r.fee) if buyer else spec.quote_text(r.fee),
        spec.base if buyer else spec.quote,
        r.ts // 1_000_000,
        buyer,
        r.liquidity == 1,
        True,
    )


def _agg(spec: MarketSpec, t: M.Trade) -> BinanceAggTrade:
    return BinanceAggTrade(
        t.trade_id,
        spec.price_text(t.price),
        spec.qty_text(t.qty),
        t.trade_id,
        t.trade_id,
        t.ts // 1_000_000,
        t.taker_side == 2,
        True,
    )


def _public_trade(spec: MarketSpec, t: M.Trade) -> BinancePublicTrade:
    return BinancePublicTrade(
        t.trade_id,
        spec.price_text(t.price),
        spec.qty_text(t.qty),
        spec.quote_text(t.price * t.qty * spec.tick_lot_quote),
        t.ts // 1_000_000,
        t.taker_side == 2,
        True,
    )


def _order_kind(spec: MarketSpec, p: dict) -> tuple[str, int, int, int, int, int]:
    """(type, time in force, trigger, stop price ticks, expiry ns, trailing BIPS) of an
    order's parameters, as Binance requires them: stopPrice with the stop types only (and
    required there unless trailingDelta is sent: then it is the activation price),
    trailingDelta with the stop types only, timeInForce with the limit types only,
    goodTillDate with GTD only."""
    kind = p.get("type", "")
    if kind not in ORDER_TYPES:
        raise BinanceReject(-1116, "Invalid orderType.")
    trigger = int(STOP_TYPES[kind][0]) if kind in STOP_TYPES else 0
    trail = _trailing_delta(p) if trigger else 0
    if not trigger and p.get("trailingDelta"):
        raise BinanceReject(-1106, "Parameter 'trailingDelta' sent when not required.")
    stop = _stop_price(spec, p) if trigger and (p.get("stopPrice") or not trail) else 0
    if not trigger and p.get("stopPrice"):
        raise BinanceReject(-1106, "Parameter 'stopPrice' sent when not required.")
    tif = p.get("timeInForce")
    if kind not in LIMIT_TYPES:
        if tif:
            raise BinanceReject(-1106, "Parameter 'timeInForce' sent when not required.")
        return kind, 0, trigger, stop, _expiry(p, False), trail
    if not tif:
        raise BinanceReject(
            -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."
        )
    if tif not in TIFS:
        raise BinanceReject(-1115, "Invalid timeInForce.")
    gtd = TIFS[tif] == TimeInForce.GTD
    return kind, int(TIFS[tif]), trigger, stop, _expiry(p, gtd), trail


def _trailing_delta(p: dict) -> int:
    """trailingDelta (BIPS) within the TRAILING_DELTA filter; 0 if not sent."""
    delta = _opt_int(p, "trailingDelta")
    if delta is None:
        return 0
    if not TRAILING_DELTA[0] <= delta <= TRAILING_DELTA[1]:
        raise BinanceReject(-1013, "Filter failure: TRAILING_DELTA")
    return delta


def _iceberg_qty(spec: MarketSpec, kind: str, tif: int, qty: int, p: dict) -> int:
    """icebergQty (lots) within LOT_SIZE and the order's quantity; 0 if not sent. Binance
    takes it on the limit types with timeInForce GTC and on LIMIT_MAKER."""
    if not p.get("icebergQty"):
        return 0
    if kind not in ICEBERG_TYPES:
        raise BinanceReject(-1106, "Parameter 'icebergQty' sent when not required.")
    if tif not in (0, TimeInForce.GTC):
        raise BinanceReject(-2010, "Iceberg orders require timeInForce GTC.")
    display = _amount(spec.qty_to_lots, p.get("icebergQty"), "icebergQty", "LOT_SIZE", True)
    if display < spec.min_qty:
        raise BinanceReject(-1013, "Filter failure: LOT_SIZE")
    if display > qty:
        raise BinanceReject(-2010, "icebergQty cannot be larger than quantity.")
    return display


def _stop_price(spec: MarketSpec, p: dict) -> int:
    stop = _amount(spec.price_to_ticks, p.get("stopPrice"), "stopPrice", "PRICE_FILTER", True)
    if stop > spec.max_price:
        raise BinanceReject(-1013, "Filter failure: PRICE_FILTER")
    return stop


def _expiry(p: dict, gtd: bool) -> int:
    """A GTD order's expiry time (engine ns) from goodTillDate (ms); 0 for any other order,
    which must not send one. The engine rejects a time not in the future."""
    ms = _opt_int(p, "goodTillDate")
    if not gtd:
        if ms is not None:
            raise BinanceReject(-1106, "Parameter 'goodTillDate' sent when not required.")
        return 0
    if ms is None:
        raise BinanceReject(
            -1102, "Mandatory parameter 'goodTillDate' was not sent, was empty/null, or malformed."
        )
    if ms > MAX_GTD_MS:
        raise BinanceReject(
            -1130, f"Invalid data sent for a parameter: goodTillDate must be at most {MAX_GTD_MS}."
        )
    return ms * 1_000_000


def _order_amounts(spec: MarketSpec, kind: str, side: int, p: dict) -> tuple[int, int, int]:
    """(price ticks, qty lots, quote units) of an order's parameters, within the filters."""
    price = qty = quote_qty = 0
    if kind in PRICED_TYPES:
        price = _amount(spec.price_to_ticks, p.get("price"), "price", "PRICE_FILTER", True)
        if price > spec.max_price:
            raise BinanceReject(-1013, "Filter failure: PRICE_FILTER")
        qty = _amount(spec.qty_to_lots, p.get("quantity"), "quantity", "LOT_SIZE", True)
    elif p.get("price"):
        raise BinanceReject(-1106, "Parameter 'price' sent when not required.")
    elif kind != "MARKET" and p.get("quoteOrderQty"):  # a stop-market: by quantity only
        raise BinanceReject(-1106, "Parameter 'quoteOrderQty' sent when not required.")
    elif p.get("quantity") and p.get("quoteOrderQty"):
        raise BinanceReject(-1106, "Parameter 'quoteOrderQty' sent when not required.")
    elif p.get("quoteOrderQty"):
        if side != 1:
            raise BinanceReject(-1013, "quoteOrderQty is supported for market buys only.")
        quote_qty = _amount(
            spec.quote_to_units, p.get("quoteOrderQty"), "quoteOrderQty", "NOTIONAL", True
        )
    else:
        qty = _amount(spec.qty_to_lots, p.get("quantity"), "quantity", "LOT_SIZE", True)
    if qty and not spec.min_qty <= qty <= spec.max_qty:
        raise BinanceReject(-1013, "Filter failure: LOT_SIZE")
    return price, qty, quote_qty


def _amount(convert: Any, text: str | None, name: str, filt: str, required: bool) -> int:
    if not text:
        if required:
            raise BinanceReject(
                -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
            )
        return 0
    if not NUMBER.match(text):
        raise BinanceReject(
            -1100,
            f"Illegal characters found in parameter '{name}'; "
            "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        )
    try:
        value = int(convert(text))
    except AmountError:
        raise BinanceReject(-1013, f"Filter failure: {filt}") from None
    if value <= 0:
        raise BinanceReject(-1013, f"Filter failure: {filt}")
    return value


def _opt_int(p: dict, name: str) -> int | None:
    raw = p.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise BinanceReject(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,18}}$'.",
        )
    return int(raw)


def _int_param(p: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = _opt_int(p, name)
    if value is None:
        return default
    if not lo <= value <= hi:
        raise BinanceReject(-1130, f"Invalid data sent for a parameter: {name} must be {lo}..{hi}.")
    return value


def _symbols_param(p: dict) -> list[str]:
    raw = p.get("symbols")
    if not raw:
        return []
    try:
        out = msgspec.json.decode(raw, type=list[str])
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise BinanceReject(-1100, "Illegal characters found in parameter 'symbols'.") from None
    if not out or len(out) > 100:
        raise BinanceReject(-1130, "Invalid data sent for a parameter: symbols.")
    return out


# ------------------------------------------------------------------------- routes


def register(gw: Gateway) -> Binance:
    b = Binance(gw)
    read, trade = Permission.READ, Permission.TRADE
    public = [  # method, path, summary, query type, response type, handler(params)
        ("ping", "Test connectivity", None, dict, b.ping),
        ("time", "Server time (ms)", None, BinanceServerTime, b.time),
        ("exchangeInfo", "Markets, filters, order types", BinanceTickerQuery, BinanceExchangeInfo,
         b.exchange_info),
        ("depth", "Order book (lastUpdateId matches the depth stream)", BinanceDepthQuery,
         BinanceDepth, b.depth),
        ("trades", "Recent trades", BinanceTradesQuery, list[BinancePublicTrade],
         lambda p: b.trades(p, False)),
        ("aggTrades", "Recent trades (a = trade id)", BinanceTradesQuery, list[BinanceAggTrade],
         lambda p: b.trades(p, True)),
        ("klines", "Candles from ClickHouse (the recorder); the newest live", BinanceKlinesQuery,
         list[list[Any]], b.klines),
        ("ticker/24hr", "24h ticker: one symbol, some, or all", BinanceTickerQuery,
         BinanceTicker24 | list[BinanceTicker24], lambda p: b.ticker(p, "24hr")),
        ("ticker/price", "Last price: one symbol, some, or all", BinanceTickerQuery,
         BinancePriceTicker | list[BinancePriceTicker], lambda p: b.ticker(p, "price")),
        ("ticker/bookTicker", "Best bid and offer: one symbol, some, or all", BinanceTickerQuery,
         BinanceBookTicker | list[BinanceBookTicker], lambda p: b.ticker(p, "book")),
    ]  # fmt: skip
    for path, summary, query, response, fn in public:
        route = Route("GET", f"{V3}/{path}", summary, "v3", query=query, response=response)
        gw.add(route, b.public(fn))
    signed = [  # method, path, summary, permission, is an order write, params, response, fn
        ("GET", "account", "Balances", read, False, BinanceSigned, BinanceAccount, b.account),
        ("POST", "order", "Place an order (LIMIT, LIMIT_MAKER, MARKET, STOP_LOSS, "
         "STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT; timeInForce GTD with goodTillDate)",
         trade, True,
         BinanceNewOrderParams, BinanceOrder, b.new_order),
        ("POST", "order/test", "Validate an order without placing it", trade, False,
         BinanceNewOrderParams, dict, b.test_order),
        ("GET", "order", "Query an order", read, False, BinanceOrderRef, BinanceOrder,
         b.get_order),
        ("DELETE", "order", "Cancel an order", trade, True, BinanceOrderRef, BinanceOrder,
         b.cancel_order),
        ("POST", "orderList/oco", "Place an OCO list: LIMIT_MAKER and STOP_LOSS(_LIMIT) "
         "(aboveType/belowType)", trade, True, BinanceOrderListOcoParams, BinanceOrderList,
         b.new_oco),
        ("POST", "order/oco", "Place an OCO list (Binance's older route: price, stopPrice, "
         "stopLimitPrice)", trade, True, BinanceOcoParams, BinanceOrderList, b.new_oco_legacy),
        ("DELETE", "orderList", "Cancel an OCO list (both orders)", trade, True,
         BinanceOrderListRef, BinanceOrderList, b.cancel_list),
        ("GET", "orderList", "Query an OCO list", read, False, BinanceOrderListQuery,
         BinanceOrderList, b.get_list),
        ("GET", "openOrderList", "OCO lists whose two orders both work", read, False,
         BinanceSigned, list[BinanceOrderList], b.open_lists),
        ("GET", "allOrderList", "OCO lists, open and closed (closed: among the newest 1000 "
         "orders the engine keeps)", read, False, BinanceAllOrderListParams,
         list[BinanceOrderList], b.all_lists),
        ("GET", "openOrders", "Open orders (one symbol or all)", read, False,
         BinanceOpenOrdersParams, list[BinanceOrder], b.open_orders),
        ("DELETE", "openOrders", "Cancel every open order of a symbol", trade, True,
         BinanceOrderRef, list[BinanceOrder], b.cancel_open),
        ("GET", "allOrders", "Open and closed orders of a symbol (closed: the newest 1000 the "
         "engine keeps)", read, False, BinanceAllOrdersParams, list[BinanceOrder],
         b.all_orders),
        ("GET", "myTrades", "The account's fills (the newest 1000 the engine keeps)", read,
         False, BinanceMyTradesParams, list[BinanceMyTrade], b.my_trades),
    ]  # fmt: skip
    for method, path, summary, perm, orders, params, response, handler in signed:
        form = method == "POST"
        route = Route(
            method,
            f"{V3}/{path}",
            summary,
            "v3",
            auth=perm.value,
            query=None if form else params,
            body=params if form else None,
            response=response,
        )
        gw.add(route, b.guarded(perm, orders, handler))
    for prefix in ("/sapi", "/fapi", "/dapi", "/eapi", "/papi"):
        for depth in range(1, 6):
            path = prefix + "".join(f"/{{p{i}}}" for i in range(depth))
            for method in ("GET", "POST", "PUT", "DELETE"):
                gw.router.add(method, path, b.unsupported)
    return b

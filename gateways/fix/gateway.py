"""The FIX 4.4 gateway's asyncio side: FIX application messages <-> engine commands.

Orders placed through FIX carry the engine client order id ``<SenderCompID>|<ClOrdID>``. So
ClOrdIDs are unique per session (as FIX wants), and every execution report - including fills
of resting orders after a gateway restart - names the session it belongs to without any state
to lose. Reports for a session that is logged out are still sent: quickfix stores them and
resends them when the client logs on again and asks for the gap.

Prices and quantities are read as the strings on the wire (never quickfix's doubles) and
converted exactly with the market's tick and lot; anything off the tick/lot is rejected.
Market data (MarketDataRequest V -> W snapshot + X incremental) comes from the engine's PUB
feed through the feed library: MarketDepth 1 is top of book, any other depth the full book.

In doubt (docs/fix.md): a D, F, G or q the engine did not answer in time may still have
executed, so it never gets a reject. It gets a Pending report (ExecType A Pending New, 6
Pending Cancel, E Pending Replace; for q an OrderMassCancelReport saying so), and the truth
follows when the engine client learns it (``on_resolved``): the real reports, a reject that is
now provably true, or a status report saying the outcome is unknown. The context each reply
needs (session, kind, the request's identifying fields) is kept by engine request id from
submit until the final answer; the engine client bounds how long a request stays open.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

import quickfix as fix

from engine.client import WRITES, EngineClient, EngineTimeout
from feed.subscriber import Feed
from gateways.accounts import Permission
from gateways.fix.acceptor import Fields, Login, build_message, first
from gateways.ratelimit import AccountLimits
from protocol import messages as M
from protocol.amounts import AmountError, positive_field
from protocol.config import Exchange, MarketSpec
from protocol.enums import CancelReason, OrderStatus, RejectCode, TriggerKind

log = logging.getLogger("gateways.fix")

EXEC_TYPE = {1: "0", 2: "F", 3: "F", 4: "4", 5: "C", 6: "5", 7: "8", 8: "L"}  # L: triggered
ORD_STATUS = {1: "0", 2: "1", 3: "2", 4: "4", 5: "C", 6: "8"}
REASON_TEXT = {
    1: "cancelled by request",
    2: "IOC remainder expired",
    3: "FOK not fillable",
    4: "self-trade prevention",
    5: "market order out of funds",
    6: "cancel on disconnect",
    7: "good-till-date order expired",
}
TIF = {"1": 1, "3": 2, "4": 3, "6": 4}  # GTC, IOC, FOK, GTD (with ExpireTime(126))
# OrdType(40) by (engine order type, stop or not): 1 market, 2 limit, 3 stop, 4 stop limit
ORD_TYPE = {(1, False): "2", (1, True): "4", (2, False): "1", (2, True): "3"}
PENDING = {"D": "A", "F": "6", "G": "E"}  # the ExecType (= OrdStatus) of an in-doubt report
KEPT_TAGS = frozenset((11, 37, 38, 40, 41, 44, 54, 55, 99, 152, 530))  # what the late replies need
ORDERS_KEPT = 65_536  # open orders whose last report is remembered (quantities of Pending)
OPEN = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
IN_DOUBT = "in doubt: the engine did not answer in time and may have executed this; "
UNKNOWN = "outcome unknown (the engine did not answer); send OrderStatusRequest"
ORD_REJ: dict[int, str] = {
    RejectCode.UNKNOWN_MARKET: "1",
    RejectCode.DUPLICATE_CLIENT_ORDER_ID: "6",
    RejectCode.INSUFFICIENT_FUNDS: "3",
    RejectCode.QUANTITY_BELOW_MIN: "13",
    RejectCode.QUANTITY_ABOVE_MAX: "13",
    RejectCode.INVALID_QUANTITY: "13",
    RejectCode.UNKNOWN_ORDER: "5",
}


class FixReject(Exception):
    def __init__(self, text: str, ord_rej: str = "99") -> None:
        super().__init__(text)
        self.text = text
        self.ord_rej = ord_rej


@dataclass(slots=True)
class Ctx:
    """What a late answer to one engine request needs (kept by its request id)."""

    comp: str
    kind: str  # D F G q, or X: a cancel of the gateway's own (cancel on disconnect)
    f: Fields  # the request's fields that replies echo (KEPT_TAGS)
    account: int


@dataclass
class Session:
    comp: str
    sid: fix.SessionID
    login: Login
    md: dict[str, tuple[list[str], int, set[str]]] = field(default_factory=dict)  # by MDReqID


def utc(ts_ns: int) -> str:
    t = time.gmtime(ts_ns // 1_000_000_000)
    return time.strftime("%Y%m%d-%H:%M:%S", t) + f".{ts_ns // 1_000_000 % 1000:03d}"


def from_utc(text: str) -> int:
    """A FIX UTCTimestamp (YYYYMMDD-HH:MM:SS[.sss[sss]]) as ns since the epoch."""
    whole, _, frac = text.partition(".")
    try:
        t = time.strptime(whole, "%Y%m%d-%H:%M:%S")
    except ValueError:
        raise FixReject(f"ExpireTime(126) {text!r} is not YYYYMMDD-HH:MM:SS[.sss]") from None
    if frac and not (frac.isdigit() and len(frac) <= 9):
        raise FixReject(f"ExpireTime(126) {text!r}: bad fraction of a second")
    return calendar.timegm(t) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def order_fields(
    spec: MarketSpec,
    order_id: int,
    clordid: str,
    exec_id: str,
    exec_type: str,
    status: int,
    side: int,
    price: int,
    qty: int,
    leaves: int,
    cum: int,
    cum_quote: int,
    ts: int,
    order_type: int = 0,
    trigger: int = 0,
    stop_price: int = 0,
) -> Fields:
    """The fields every ExecutionReport of an order carries (trade and text fields aside)."""
    ord_type = ORD_TYPE.get((order_type, bool(trigger)), "2" if price else "1")
    if order_type == 2:
        price = 0  # a stop market buy's protection price is not a limit
    f: Fields = [
        (37, str(order_id)),
        (11, clordid),
        (17, exec_id),
        (150, exec_type),
        (39, ORD_STATUS.get(status, "0")),
        (55, spec.symbol),
        (54, str(side)),
        (40, ord_type),
        (151, spec.qty_text(leaves)),
        (14, spec.qty_text(cum)),
        (6, avg_px(spec, cum_quote, cum)),
        (60, utc(ts)),
    ]
    if qty:
        f.append((38, spec.qty_text(qty)))
    if price:
        f.append((44, spec.price_text(price)))
    if stop_price:
        f.append((99, spec.price_text(stop_price)))
    return f


def avg_px(spec: MarketSpec, cum_quote: int, cum_lots: int) -> str:
    if not cum_lots:
        return "0"
    # quote per base = (cum_quote / 10**quote_decimals) / (cum_lots * lot); display only
    value = Decimal(cum_quote) / (10**spec.quote_decimals) / (cum_lots * Decimal(spec.lot.text))
    return f"{value.quantize(Decimal(1).scaleb(-(spec.tick.places + 4))).normalize():f}"


class FixGateway:
    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.cfg = ex.fix_gateway
        self.engine = EngineClient.for_exchange(
            ex,
            self.cfg.identity,
            timeout=self.cfg.engine_timeout,
            on_event=self.on_event,
            on_resolved=self.on_resolved,
        )
        self.feed = Feed.for_exchange(
            ex,
            name=self.cfg.identity,
            kinds=("depth", "trades"),
            on_depth=self.on_depth,
            on_trades=self.on_trades,
        )
        self.sessions: dict[str, Session] = {}  # logged-on sessions by SenderCompID
        self.top: dict[str, tuple[int, int, int, int]] = {}  # last top of book sent, per market
        self.levels: dict[str, dict[tuple[str, int], int]] = {}  # (entry type, price) -> qty
        self.counts = {
            "orders": 0,
            "rejects": 0,
            "reports": 0,
            "md": 0,
            "rate_limited": 0,
            "in_doubt": 0,
            "resolved": 0,
        }
        self.inflight: dict[int, Ctx] = {}  # engine req -> context, until its final answer
        self.orders: OrderedDict[int, M.ExecReport] = OrderedDict()  # open: last report, by id
        self.order_of: dict[str, int] = {}  # engine client order id -> order id (of self.orders)
        self.limits = AccountLimits(self.cfg)
        self.senders: dict[str, Sender] = {}
        self.front: Any = None  # the front door, to cut a session that does not read

    # --------------------------------------------------------------------- sending
    def send(self, comp: str, msg_type: str, fields: Fields, groups: list | None = None) -> None:
        """Queue a message for ``comp``'s sender thread; never blocks the loop."""
        sender = self.senders.get(comp)
        if sender is None:
            sender = self.senders[comp] = Sender(comp, self.cfg.sender_comp_id, self.slow)
        sender.put((msg_type, fields, groups))

    def slow(self, comp: str) -> None:
        """A session's send queue is full: the client is not reading. Cut its connection."""
        log.warning("FIX session %s is not reading its messages: disconnecting it", comp)
        if self.front is not None:
            self.front.cut(comp)

    def exec_report(
        self,
        comp: str,
        r: M.ExecReport,
        clordid: str,
        orig: str | None = None,
        exec_type: str | None = None,
    ) -> None:
        spec = self.ex.markets[r.market]
        f = order_fields(
            spec,
            r.order_id,
            clordid,
            f"{r.order_id}-{r.seq}-{r.trade_id}-{r.exec_type}",
            exec_type or EXEC_TYPE.get(r.exec_type, "I"),
            r.status,
            r.side,
            r.price,
            r.qty,
            r.leaves_qty,
            r.cum_qty,
            r.cum_quote,
            r.ts,
            r.order_type,
            r.trigger,
            r.stop_price,
        )
        if r.quote_qty:
            f.append((152, spec.quote_text(r.quote_qty)))
        if orig:
            f.append((41, orig))
        if r.last_qty:
            buyer = r.side == 1
            f += [
                (31, spec.price_text(r.last_px)),
                (32, spec.qty_text(r.last_qty)),
                (12, spec.base_text(r.fee) if buyer else spec.quote_text(r.fee)),
                (13, "3"),
                (479, spec.base if buyer else spec.quote),
                (851, "1" if r.liquidity == 1 else "2"),
            ]
        if r.reason_code:
            f.append((58, REASON_TEXT.get(r.reason_code, "cancelled")))
        self.counts["reports"] += 1
        self.remember(r)
        self.send(comp, "8", f)

    def remember(self, r: M.ExecReport) -> None:
        """The last report of each open order (bounded), for the quantities of a Pending."""
        old = self.orders.pop(r.order_id, None)
        if old is not None and self.order_of.get(old.client_order_id) == r.order_id:
            del self.order_of[old.client_order_id]
        if r.status not in OPEN:
            return
        self.orders[r.order_id] = r
        self.order_of[r.client_order_id] = r.order_id
        if len(self.orders) > ORDERS_KEPT:
            _, gone = self.orders.popitem(last=False)
            if self.order_of.get(gone.client_order_id) == gone.order_id:
                del self.order_of[gone.client_order_id]

    def reject_order(self, comp: str, f: Fields, text: str, ord_rej: str = "99") -> None:
        self.counts["rejects"] += 1
        self.send(
            comp,
            "8",
            [
                (37, "NONE"),
                (11, first(f, 11) or "?"),
                (17, f"rej-{time.time_ns()}"),
                (150, "8"),
                (39, "8"),
                (55, first(f, 55) or "?"),
                (54, first(f, 54) or "1"),
                (151, "0"),
                (14, "0"),
                (6, "0"),
                (103, ord_rej),
                (58, text[:200]),
                (60, utc(time.time_ns())),
            ],
        )

    def cancel_reject(
        self,
        comp: str,
        f: Fields,
        text: str,
        response_to: str,
        reason: str = "1",
        order_id: int = 0,
        status: int = 0,
    ) -> None:
        """OrderCancelReject (9), with the order's id and current status when it is known."""
        self.counts["rejects"] += 1
        self.send(
            comp,
            "9",
            [
                (37, str(order_id) if order_id else first(f, 37) or "NONE"),
                (11, first(f, 11) or "?"),
                (41, first(f, 41) or "?"),
                (39, ORD_STATUS.get(status, "8")),
                (434, response_to),
                (102, reason),
                (58, text[:200]),
            ],
        )

    def business_reject(self, comp: str, f: Fields, text: str, reason: str = "0") -> None:
        self.counts["rejects"] += 1
        self.send(
            comp,
            "j",
            [
                (45, first(f, 34) or "0"),
                (372, first(f, 35) or "?"),
                (380, reason),
                (58, text[:200]),
            ],
        )

    # -------------------------------------------------------------------- sessions
    def on_logon(self, sid: fix.SessionID, login: Login) -> None:
        self.sessions[login.comp_id] = Session(login.comp_id, sid, login)
        log.info(
            "FIX logon %s -> account %d (%s%s)",
            login.comp_id,
            login.account,
            login.permission.value,
            ", cancel on disconnect" if login.cancel_on_disconnect else "",
        )

    def on_logout(self, sid: fix.SessionID) -> None:
        comp = sid.getTargetCompID().getValue()
        s = self.sessions.pop(comp, None)
        if s is None:
            return
        log.info("FIX logout %s", comp)
        if s.login.cancel_on_disconnect:
            asyncio.ensure_future(self.cancel_session_orders(s))

    async def cancel_session_orders(self, s: Session) -> None:
        """Cancel-on-disconnect: only the orders this session placed (the account may have more)."""
        try:
            reply = await self.engine.request(M.OpenOrdersRequest(0, s.login.account))
        except Exception as e:
            log.error("cancel on disconnect for %s failed: %s", s.comp, e)
            return
        mine = [o for o in reply.orders if o.client_order_id.startswith(s.comp + "|")]
        for o in mine:  # reports are stored by quickfix, resent when the session is back
            cancel = M.Cancel(0, s.login.account, o.market, o.order_id, "", CancelReason.DISCONNECT)
            clordid = o.client_order_id.partition("|")[2]
            self.submit(s, [(11, clordid), (41, clordid)], cancel, "X")
        log.info("cancel on disconnect: %d orders of %s", len(mine), s.comp)

    # ------------------------------------------------------------ application msgs
    def on_app(self, sid: fix.SessionID, f: Fields) -> None:
        comp = sid.getTargetCompID().getValue()
        s = self.sessions.get(comp)
        msg_type = first(f, 35) or "?"
        handler = {
            "D": self.new_order,
            "F": self.cancel,
            "G": self.replace,
            "H": self.status,
            "q": self.mass_cancel,
            "x": self.security_list,
            "V": self.market_data_request,
        }.get(msg_type)
        if s is None:
            return self.business_reject(comp, f, "not logged on", "0")
        if handler is None:
            return self.business_reject(comp, f, f"MsgType {msg_type} is not supported", "3")
        if msg_type in "DFGq" and not s.login.permission.allows(Permission.TRADE):
            return self.business_reject(comp, f, "this API key cannot trade", "6")
        try:
            self.check_rate(s.login.account, msg_type in "DFGq")
            handler(s, f)
        except FixReject as e:
            if msg_type == "D":
                self.reject_order(comp, f, e.text, e.ord_rej)
            elif msg_type in "FG":
                self.cancel_reject(comp, f, e.text, "1" if msg_type == "F" else "2", "2")
            else:
                self.business_reject(comp, f, e.text, "0")

    def check_rate(self, account: int, trading: bool) -> None:
        """Per-account token buckets, shared by all the account's sessions (as in the JSON
        gateway): every message takes a request token, trading messages an order token too."""
        wait = self.limits.take(account, trading, time.monotonic())
        if wait:
            self.counts["rate_limited"] += 1
            raise FixReject(f"rate limited; retry after {wait:.3f}s")

    def spec_of(self, f: Fields) -> MarketSpec:
        symbol = first(f, 55) or ""
        spec = self.ex.markets.get(symbol)
        if spec is None:
            raise FixReject(
                f"unknown Symbol {symbol!r}; markets: {', '.join(self.ex.markets)}", "1"
            )
        return spec

    @staticmethod
    def amount(convert: Any, text: str | None, what: str) -> int:
        try:
            return positive_field(convert, text, what)
        except AmountError as e:
            raise FixReject(f"{what}: {e}", "13" if what != "Price" else "99") from None

    def engine_cid(self, s: Session, clordid: str | None) -> str:
        if not clordid:
            raise FixReject("ClOrdID(11) is required")
        cid = f"{s.comp}|{clordid}"
        if len(cid) > 64:
            raise FixReject("ClOrdID too long (SenderCompID|ClOrdID must fit in 64 characters)")
        return cid

    def new_order(self, s: Session, f: Fields) -> None:
        spec = self.spec_of(f)
        clordid = first(f, 11)
        cid = self.engine_cid(s, clordid)
        side = {"1": 1, "2": 2}.get(first(f, 54) or "")
        if side is None:
            raise FixReject(f"Side(54) must be 1 or 2, was {first(f, 54)}")
        ord_type = first(f, 40)
        if ord_type not in ("1", "2", "3", "4"):
            raise FixReject(
                f"OrdType(40) must be 1 (market), 2 (limit), 3 (stop) or 4 (stop limit), "
                f"was {ord_type}"
            )
        tif_text = first(f, 59)
        if tif_text is not None and tif_text not in TIF:
            raise FixReject(
                f"TimeInForce(59) {tif_text} unsupported: use 1 GTC, 3 IOC, 4 FOK, 6 GTD"
            )
        qty = self.amount(spec.qty_to_lots, first(f, 38), "OrderQty")
        price = self.amount(spec.price_to_ticks, first(f, 44), "Price")
        cash = self.amount(spec.quote_to_units, first(f, 152), "CashOrderQty")
        stop = self.amount(spec.price_to_ticks, first(f, 99), "StopPx")
        display = self.amount(spec.qty_to_lots, first(f, 111), "MaxFloor")
        trail = self.bips(first(f, 25009))
        if ord_type in ("2", "4") and not (price and qty):
            raise FixReject("a limit order needs Price(44) and OrderQty(38)")
        if ord_type in ("1", "3") and (price or not (qty or cash)):
            raise FixReject("a market order takes OrderQty(38) or CashOrderQty(152), no Price")
        if (ord_type in ("3", "4")) != bool(stop or trail):
            raise FixReject(
                "StopPx(99) (or, trailing, TriggerTrailingDeltaBips(25009)) goes with OrdType 3 "
                "(stop) or 4 (stop limit), only"
            )
        trigger = self.trigger_kind(side, first(f, 1109)) if stop or trail else 0
        expire = 0
        if tif_text == "6":
            if not first(f, 126):
                raise FixReject("TimeInForce 6 (GTD) needs ExpireTime(126)")
            expire = from_utc(first(f, 126) or "")
        elif first(f, 126):
            raise FixReject("ExpireTime(126) goes with TimeInForce 6 (GTD) only")
        post_only = "6" in (first(f, 18) or "").split()
        cmd = M.NewOrder(
            0,
            s.login.account,
            spec.symbol,
            side,
            2 if ord_type in ("1", "3") else 1,
            TIF.get(tif_text or "", 0),
            price,
            qty,
            cash,
            cid,
            post_only,
            0,
            0,
            trigger,
            stop,
            expire,
            display,
            trail,
        )
        self.counts["orders"] += 1
        self.submit(s, f, cmd, "D")

    @staticmethod
    def bips(text: str | None) -> int:
        """TriggerTrailingDeltaBips(25009) (Binance's FIX): a trailing stop's distance."""
        if text is None:
            return 0
        if not text.isdigit() or len(text) > 6:
            raise FixReject(f"TriggerTrailingDeltaBips(25009) must be a whole number, was {text}")
        return int(text)

    @staticmethod
    def trigger_kind(side: int, direction: str | None) -> int:
        """FIX's stop is a stop-loss (a buy stop above the market, a sell stop below); with
        TriggerPriceDirection(1109), U triggers on a rise and D on a fall (Binance's FIX), so a
        sell with U or a buy with D is a take-profit."""
        if direction is None:
            return TriggerKind.STOP_LOSS
        if direction not in ("U", "D"):
            raise FixReject(f"TriggerPriceDirection(1109) must be U or D, was {direction}")
        rises = direction == "U"
        return TriggerKind.STOP_LOSS if rises == (side == 1) else TriggerKind.TAKE_PROFIT

    def cancel(self, s: Session, f: Fields) -> None:
        spec = self.spec_of(f)
        order_id = int(first(f, 37) or 0) if (first(f, 37) or "").isdigit() else 0
        orig = first(f, 41)
        if not order_id and not orig:
            raise FixReject("give OrigClOrdID(41) or OrderID(37)")
        self.engine_cid(s, first(f, 11))
        cid = self.engine_cid(s, orig) if orig and not order_id else ""
        self.submit(s, f, M.Cancel(0, s.login.account, spec.symbol, order_id, cid), "F")

    def replace(self, s: Session, f: Fields) -> None:
        spec = self.spec_of(f)
        orig = first(f, 41)
        new_cid = self.engine_cid(s, first(f, 11))
        order_id = int(first(f, 37) or 0) if (first(f, 37) or "").isdigit() else 0
        if not orig and not order_id:
            raise FixReject("give OrigClOrdID(41) or OrderID(37)")
        qty = self.amount(spec.qty_to_lots, first(f, 38), "OrderQty")
        price = self.amount(spec.price_to_ticks, first(f, 44), "Price")
        stop = self.amount(spec.price_to_ticks, first(f, 99), "StopPx")
        cid = self.engine_cid(s, orig) if orig and not order_id else ""
        cmd = M.Replace(
            0, s.login.account, spec.symbol, order_id, cid, new_cid, price, qty, 0, stop
        )
        self.submit(s, f, cmd, "G")

    def status(self, s: Session, f: Fields) -> None:
        spec = self.spec_of(f)
        order_id = int(first(f, 37) or 0) if (first(f, 37) or "").isdigit() else 0
        cid = "" if order_id else self.engine_cid(s, first(f, 11))
        self.submit(s, f, M.OrderStatusRequest(0, s.login.account, spec.symbol, order_id, cid), "H")

    def mass_cancel(self, s: Session, f: Fields) -> None:
        kind = first(f, 530)
        if kind == "1":
            market = self.spec_of(f).symbol
        elif kind == "7":
            market = ""
        else:
            raise FixReject(f"MassCancelRequestType(530) {kind} unsupported: use 1 or 7")
        self.submit(s, f, M.MassCancel(0, s.login.account, market), "q")

    def submit(self, s: Session, f: Fields, cmd: Any, kind: str) -> None:
        fut = self.engine.send(cmd)
        if type(cmd) in WRITES and not fut.done():
            kept = [(t, v) for t, v in f if t in KEPT_TAGS]
            self.inflight[cmd.req] = Ctx(s.comp, kind, kept, s.login.account)
        fut.add_done_callback(partial(self.on_reply, s.comp, f, kind, cmd))

    # -------------------------------------------------------------------- replies
    def on_reply(self, comp: str, f: Fields, kind: str, cmd: Any, fut: asyncio.Future) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if isinstance(exc, EngineTimeout) and cmd.req in self.inflight:
            return self.pending(self.inflight[cmd.req], cmd)  # in doubt: the truth follows
        ctx = self.inflight.pop(cmd.req, None)
        if fut.cancelled() or exc is not None:
            if kind == "X":
                return log.warning("cancel on disconnect of %s not sent: %s", comp, exc)
            text = (
                "engine did not answer in time; nothing changed, try again"
                if isinstance(exc, EngineTimeout)  # a read: nothing to be in doubt about
                else f"engine unavailable ({exc}); nothing was done, try again"
            )
            return self.reply_error(comp, f, kind, text, "0")
        msg = fut.result()
        if ctx is not None and type(msg) is M.OrderInfo:  # a lost reply, looked up in time
            return self.settle(ctx, cmd, msg)
        self.answer(comp, f, kind, msg)

    def answer(self, comp: str, f: Fields, kind: str, msg: Any) -> None:
        """The engine's reply to a request, as FIX."""
        if kind == "X":  # the gateway's own cancel: only what happened is reported
            if type(msg) is M.Executions:
                for r in msg.reports:
                    self.exec_report(comp, r, first(f, 11) or "")
            return
        if type(msg) is M.Rejected:
            return self.reply_error(
                comp,
                f,
                kind,
                msg.reason,
                ORD_REJ.get(msg.code, "99"),
                msg.code,
                msg.order_id,
                msg.status,
            )
        clordid = first(f, 11) or ""
        match msg:
            case M.Executions():
                orig = first(f, 41) if kind in "FG" else None
                for r in msg.reports:  # a cancel by OrderID alone: 41 is the order's ClOrdID
                    was = orig or (r.client_order_id.partition("|")[2] if kind == "F" else None)
                    self.exec_report(comp, r, clordid, was)
            case M.OrderInfo():
                self.status_report(comp, msg.order, clordid)
            case M.MassCancelReply():
                self.send(
                    comp,
                    "r",
                    [
                        (11, clordid),
                        (37, str(msg.seq)),
                        (530, first(f, 530) or "7"),
                        (531, first(f, 530) or "7"),
                        (533, str(msg.count)),
                    ],
                )

    def reply_error(
        self,
        comp: str,
        f: Fields,
        kind: str,
        text: str,
        ord_rej: str,
        code: int = 0,
        order_id: int = 0,
        status: int = 0,
    ) -> None:
        if kind == "D":
            self.reject_order(comp, f, text, ord_rej)
        elif kind in "FG":
            reason = "1" if code == RejectCode.UNKNOWN_ORDER else "2" if code else "2"
            self.cancel_reject(comp, f, text, "1" if kind == "F" else "2", reason, order_id, status)
        elif kind == "H" and not code and not order_id:  # the query itself failed
            self.business_reject(comp, f, text, "4")  # 4: application not available
        elif kind == "H":
            self.send(
                comp,
                "8",
                [
                    (37, first(f, 37) or "NONE"),
                    (11, first(f, 11) or "?"),
                    (17, f"st-{time.time_ns()}"),
                    (150, "I"),
                    (39, "8"),
                    (55, first(f, 55) or "?"),
                    (54, first(f, 54) or "1"),
                    (151, "0"),
                    (14, "0"),
                    (6, "0"),
                    (58, text[:200]),
                ],
            )
        else:
            self.send(
                comp,
                "r",
                [
                    (11, first(f, 11) or "?"),
                    (37, "NONE"),
                    (530, first(f, 530) or "7"),
                    (531, "0"),
                    (58, text[:200]),
                ],
            )

    def status_report(
        self,
        comp: str,
        o: M.OrderState,
        clordid: str,
        exec_type: str = "I",
        orig: str | None = None,
        text: str = "",
    ) -> None:
        """An ExecutionReport of the order as it is (ExecType I unless told otherwise); with
        ``orig``, the answer to a cancel/replace, named by that request's ClOrdID."""
        spec = self.ex.markets[o.market]
        f = order_fields(
            spec,
            o.order_id,
            clordid if orig else o.client_order_id.split("|", 1)[-1] or clordid,
            f"st-{o.order_id}-{o.updated_ts}",
            exec_type,
            o.status,
            o.side,
            o.price,
            o.qty,
            o.leaves_qty,
            o.cum_qty,
            o.cum_quote,
            o.updated_ts,
            o.type,
            o.trigger,
            o.stop_price,
        )
        if o.display_qty:
            f.append((111, spec.qty_text(o.display_qty)))
        if o.trailing_bps:
            f.append((25009, str(o.trailing_bps)))
        if orig:
            f.append((41, orig))
        if text:
            f.append((58, text[:200]))
        self.send(comp, "8", f)

    # ------------------------------------------------------------------- in doubt
    def pending(self, ctx: Ctx, cmd: Any) -> None:
        """A write timed out: it may have executed. Say so; never reject it."""
        self.counts["in_doubt"] += 1
        f = ctx.f
        text = IN_DOUBT + "its outcome follows"
        if ctx.kind == "D":
            self.pending_new(ctx, text)
        elif ctx.kind in "FG":
            self.pending_change(ctx, cmd, PENDING[ctx.kind], text)
        elif ctx.kind == "q":
            self.send(
                ctx.comp,
                "r",
                [(11, first(f, 11) or "?"), (37, "NONE"), (530, first(f, 530) or "7"),
                 (531, first(f, 530) or "7"), (58, text)],
            )  # fmt: skip

    def pending_new(self, ctx: Ctx, text: str, exec_type: str = "A") -> None:
        """An order whose acceptance is in doubt: Pending New, nothing filled as far as known."""
        f = ctx.f
        out = [
            (37, "NONE"),
            (11, first(f, 11) or "?"),
            (17, f"pend-{first(f, 11)}-{time.time_ns()}"),
            (150, exec_type),
            (39, "A"),
            (55, first(f, 55) or "?"),
            (54, first(f, 54) or "1"),
            (151, first(f, 38) or "0"),
            (14, "0"),
            (6, "0"),
            (58, text[:200]),
            (60, utc(time.time_ns())),
        ]
        out += [(t, v) for t, v in f if t in (38, 40, 44, 99, 152)]
        self.counts["reports"] += 1
        self.send(ctx.comp, "8", out)

    def pending_change(
        self, ctx: Ctx, cmd: Any, status: str, text: str, exec_type: str = ""
    ) -> None:
        """A cancel or replace in doubt: Pending Cancel (6) / Pending Replace (E) with the order's
        quantities as last reported. An order the gateway has not reported since it started
        gets none (its quantities are not known here); the outcome follows all the same."""
        order_id = cmd.order_id or self.order_of.get(cmd.client_order_id, 0)
        r = self.orders.get(order_id)
        if r is None:
            return
        spec = self.ex.markets[r.market]
        out = order_fields(
            spec, r.order_id, first(ctx.f, 11) or "?", f"pend-{r.order_id}-{cmd.req}",
            exec_type or status, r.status, r.side, r.price, r.qty, r.leaves_qty, r.cum_qty,
            r.cum_quote, time.time_ns(), r.order_type, r.trigger, r.stop_price,
        )  # fmt: skip
        out = [(39, status) if t == 39 else (t, v) for t, v in out]
        out += [(41, r.client_order_id.partition("|")[2]), (58, text[:200])]
        self.counts["reports"] += 1
        self.send(ctx.comp, "8", out)

    def on_resolved(self, cmd: Any, outcome: Any) -> None:
        """The engine client learned the truth about a write that was in doubt."""
        ctx = self.inflight.pop(cmd.req, None)
        if ctx is None:
            return
        self.counts["resolved"] += 1
        if outcome is None:
            return self.unknown(ctx, cmd)
        if type(outcome) is M.OrderInfo:
            return self.settle(ctx, cmd, outcome)
        if ctx.kind in "FG" and type(outcome) is M.Rejected and not outcome.status:
            return self.refused_change(ctx, cmd, outcome)
        self.answer(ctx.comp, ctx.f, ctx.kind, outcome)

    def unknown(self, ctx: Ctx, cmd: Any) -> None:
        if ctx.kind == "D":
            self.pending_new(ctx, UNKNOWN, "I")
        elif ctx.kind in "FG":
            self.pending_change(ctx, cmd, PENDING[ctx.kind], UNKNOWN, "I")
        elif ctx.kind == "q":
            f = ctx.f
            self.send(
                ctx.comp,
                "r",
                [(11, first(f, 11) or "?"), (37, "NONE"), (530, first(f, 530) or "7"),
                 (531, first(f, 530) or "7"),
                 (58, "outcome unknown (the engine did not answer); check your open orders")],
            )  # fmt: skip

    def settle(self, ctx: Ctx, cmd: Any, info: M.OrderInfo) -> None:
        """A lost reply, answered by the order as it is now: did the command take effect?"""
        o, f, comp = info.order, ctx.f, ctx.comp
        clordid = first(f, 11) or ""
        if ctx.kind == "D":  # it exists: New, or whatever became of it since
            return self.status_report(comp, o, clordid, "0" if o.status == OrderStatus.NEW else "I")
        orig = o.client_order_id.partition("|")[2]
        if ctx.kind in "FX" and o.status == OrderStatus.CANCELED:
            return self.status_report(comp, o, clordid, "4", orig)
        if ctx.kind == "G" and o.client_order_id == cmd.new_client_order_id:
            return self.status_report(comp, o, clordid, "5", first(f, 41) or None)
        if ctx.kind in "FG":
            self.cancel_reject(
                comp, f, "did not take effect: the order is as it was", "1" if ctx.kind == "F"
                else "2", "0", o.order_id, o.status,
            )  # fmt: skip

    def refused_change(self, ctx: Ctx, cmd: Any, rej: M.Rejected) -> None:
        """A cancel/replace provably not executed (deadline passed, or lost and unknown): its
        OrderCancelReject carries the order's OrdStatus, so look the order up first."""
        query = M.OrderStatusRequest(0, ctx.account, cmd.market, cmd.order_id, cmd.client_order_id)

        def done(fut: asyncio.Future) -> None:
            ok = not fut.cancelled() and fut.exception() is None
            o = fut.result().order if ok and type(fut.result()) is M.OrderInfo else None
            self.cancel_reject(
                ctx.comp, ctx.f, rej.reason, "1" if ctx.kind == "F" else "2", "2",
                o.order_id if o else rej.order_id, o.status if o else 0,
            )  # fmt: skip

        self.engine.send(query).add_done_callback(done)

    def on_event(self, msg: Any) -> None:
        """Unsolicited reports (fills of resting orders, system cancels): to the owning session,
        named by the client order id, logged on or not (quickfix stores and resends)."""
        if type(msg) is not M.ExecReport:
            return
        comp, sep, clordid = msg.client_order_id.partition("|")
        if sep:
            self.exec_report(comp, msg, clordid)

    # ------------------------------------------------------------------ references
    def security_list(self, s: Session, f: Fields) -> None:
        rows = [
            [
                (55, m.symbol),
                (15, m.quote),
                (561, m.lot.text),
                (562, m.qty_text(m.min_qty)),
                (969, m.tick.text),
            ]
            for m in self.ex.markets.values()
        ]
        self.send(
            s.comp,
            "y",
            [(320, first(f, 320) or "?"), (322, f"sl-{time.time_ns()}"), (560, "0")],
            [(146, 55, rows)],
        )

    def market_data_request(self, s: Session, f: Fields) -> None:
        req_id = first(f, 262) or ""
        sub_type = first(f, 263)
        if sub_type == "2":
            s.md.pop(req_id, None)
            return
        symbols = [v for t, v in f if t == 55]
        unknown = [x for x in symbols if x not in self.ex.markets]
        if not symbols or unknown:
            self.send(
                s.comp,
                "Y",
                [(262, req_id), (281, "0"), (58, f"unknown Symbol(s) {unknown or '(none given)'}")],
            )
            return
        types = {v for t, v in f if t == 269} or {"0", "1"}
        depth = int(first(f, 264) or 0)
        for sym in symbols:
            self.snapshot(s.comp, req_id, sym, depth, types)
        if sub_type == "1":
            s.md[req_id] = (symbols, depth, types)

    def snapshot(self, comp: str, req_id: str, sym: str, depth: int, types: set[str]) -> None:
        spec = self.ex.markets[sym]
        book = self.feed.books[sym]
        bids, asks = book.levels(1 if depth == 1 else 0)
        if depth == 1:
            self.top[sym] = (*book.best_bid(), *book.best_ask())
        rows = []
        if "0" in types:
            rows += [
                [(269, "0"), (270, spec.price_text(p)), (271, spec.qty_text(q))] for p, q in bids
            ]
        if "1" in types:
            rows += [
                [(269, "1"), (270, spec.price_text(p)), (271, spec.qty_text(q))] for p, q in asks
            ]
        ticker = self.feed.tickers[sym]
        if "2" in types and ticker.last:
            rows.append([(269, "2"), (270, spec.price_text(ticker.last)), (271, "0")])
        self.counts["md"] += 1
        header = [(262, req_id), (55, sym)] + ([] if rows else [(268, "0")])  # an empty book
        self.send(comp, "W", header, [(268, 269, rows)])

    def subscribers(self, sym: str) -> list[tuple[Session, str, int, set[str]]]:
        return [
            (s, rid, depth, types)
            for s in self.sessions.values()
            for rid, (syms, depth, types) in s.md.items()
            if sym in syms
        ]

    def on_depth(self, sym: str, d: M.Depth | None) -> None:
        levels = self.levels.setdefault(sym, {})
        if d is None:  # (re)synced: remember the whole book, send everyone a fresh snapshot
            bids, asks = self.feed.books[sym].levels()
            levels.clear()
            levels.update({("0", p): q for p, q in bids} | {("1", p): q for p, q in asks})
            for s, rid, depth, types in self.subscribers(sym):
                self.snapshot(s.comp, rid, sym, depth, types)
            return
        changes = []  # (MDUpdateAction 0 new / 1 change / 2 delete, entry type, price, qty)
        for e, side in (("0", d.bids), ("1", d.asks)):
            for p, q in side:
                changes.append(("2" if not q else "1" if (e, p) in levels else "0", e, p, q))
                if q:
                    levels[(e, p)] = q
                else:
                    levels.pop((e, p), None)
        subs = self.subscribers(sym)
        if not subs:
            return
        spec = self.ex.markets[sym]
        top_rows = self.top_changes(sym, spec)
        for s, rid, depth, types in subs:
            if depth == 1:
                rows = [r for r in top_rows if r[1][1] in types]
            else:
                rows = [
                    [
                        (279, act),
                        (269, e),
                        (55, sym),
                        (270, spec.price_text(p)),
                        (271, spec.qty_text(q)),
                    ]
                    for act, e, p, q in changes
                    if e in types
                ]
            if rows:
                self.counts["md"] += 1
                self.send(s.comp, "X", [(262, rid)], [(268, 279, rows)])

    def top_changes(self, sym: str, spec: MarketSpec) -> list[list[tuple[int, str]]]:
        book = self.feed.books[sym]
        (bp, bq), (ap, aq) = book.best_bid(), book.best_ask()
        old = self.top.get(sym, (0, 0, 0, 0))
        self.top[sym] = (bp, bq, ap, aq)
        rows = []
        for e, (op, oq), (np_, nq) in (("0", old[:2], (bp, bq)), ("1", old[2:], (ap, aq))):
            if (op, oq) == (np_, nq):
                continue
            if op and op != np_:
                rows.append(
                    [(279, "2"), (269, e), (55, sym), (270, spec.price_text(op)), (271, "0")]
                )
            if np_:
                rows.append(
                    [
                        (279, "0" if op != np_ else "1"),
                        (269, e),
                        (55, sym),
                        (270, spec.price_text(np_)),
                        (271, spec.qty_text(nq)),
                    ]
                )
        return rows

    def on_trades(self, sym: str, trades: list[M.Trade]) -> None:
        spec = self.ex.markets[sym]
        rows = [
            [
                (279, "0"),
                (269, "2"),
                (55, sym),
                (270, spec.price_text(t.price)),
                (271, spec.qty_text(t.qty)),
            ]
            for t in trades
        ]
        for s, rid, _depth, types in self.subscribers(sym):
            if "2" in types:
                self.counts["md"] += 1
                self.send(s.comp, "X", [(262, rid)], [(268, 279, rows)])


class Sender:
    """One thread per FIX session that builds and sends its messages.

    quickfix's send blocks when the client's socket is full; on its own thread that stalls
    only this session. A full queue (the client has stopped reading) calls ``on_slow``, which
    cuts the connection; messages still queued go on to quickfix, which stores them for the
    resend when the client logs on again.
    """

    def __init__(
        self, comp: str, sender_comp_id: str, on_slow: Any, capacity: int = 10_000
    ) -> None:
        self.comp = comp
        self.sid = fix.SessionID("FIX.4.4", sender_comp_id, comp)
        self.queue: queue.Queue = queue.Queue()  # unbounded: the loop never blocks on it
        self.capacity = capacity
        self.on_slow = on_slow
        self.thread = threading.Thread(target=self.run, name=f"fix-send-{comp}", daemon=True)
        self.thread.start()

    def put(self, item: tuple) -> None:
        self.queue.put_nowait(item)
        if self.queue.qsize() == self.capacity:  # once per episode; after the cut, sends
            self.on_slow(self.comp)  # only go to quickfix's store and the queue drains fast

    def run(self) -> None:
        while True:
            msg_type, fields, groups = self.queue.get()
            m = build_message(msg_type, fields, groups)
            try:
                fix.Session.sendToTarget(m, self.sid)
            except fix.SessionNotFound:
                log.warning("no FIX session %s for a %s message", self.comp, msg_type)

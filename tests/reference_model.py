"""A deliberately naive model of the exchange core, for the property tests to compare against.

Plain lists and dicts, no indexes, no caching: every question is answered by scanning or
sorting everything again. Scales come from the TOML config through ``Decimal``, not from
``protocol.config``. The rules are the ones in ``engine/core.py``'s module docstring:

- price-time priority, fills at the maker's price;
- GTC rests, IOC expires its remainder, FOK fills completely or does nothing; post-only is
  rejected when it would cross; market orders are IOC (or FOK) and buy by base quantity
  (locking exactly what the book walk costs, rejected if nothing is there) or by quote budget;
- a buy locks price x qty of quote, a sell qty of base; fills consume the lock; whatever is
  left is released when the order is done (filled, cancelled, expired);
- fees are charged on the asset received (buyer in base, seller in quote), rounded down,
  and credited to the fee account;
- self-trade prevention cancel-newest / cancel-oldest / cancel-both, applied when the taker
  would otherwise match its own resting order (protocol.enums.StpMode), so not when a market
  buy's remaining budget cannot pay for a lot at that order's price;
- replace: qty is the new total; same price and not larger keeps priority, otherwise the
  order goes to the back (and may trade); the lock becomes price x leaves (buy) or leaves
  (sell); a rejected replace changes nothing;
- client order ids are unique among an account's open orders; another account's order is
  unknown;
- stop orders (stop-loss / take-profit, limit or market) wait, locked, until the last trade
  price reaches the stop (a stop-loss buy and a take-profit sell on a rise, the others on a
  fall); one already reached is rejected; after a command that traded, due stops run one at a
  time as new orders: rising ones first, lowest stop first, then falling ones, highest first,
  older first at one stop; a stop market buy by quantity locks and trades up to its stop plus
  10% (rounded up, at most the max price);
- GTD orders expire, earliest expiry first (then older first), before the first write command
  whose timestamp is at or after their expiry time;
- an iceberg (limit, GTC/GTD) shows at most its display quantity; a taker gets at most what
  it shows, and when that is gone it shows the next part at the back of its price (a new
  time); a FOK or a market buy's walk counts what the matching would reach;
- a trailing stop without a stop price follows the last price from its acceptance; with one,
  from when the last price reaches it (the stop's usual direction; that does not trigger it);
  following, a sell keeps the highest last price seen after each taker and triggers when the
  last price falls to that less its distance (bps, rounded up to a tick), a buy the lowest and
  triggers on a rise to it plus its distance;
- a one-cancels-the-other list: a post-only limit and a stop-loss of one side and quantity,
  locked once (the larger need, held by the limit); a fill of the limit cancels the stop (a buy
  then holds only its own need), the stop's trigger cancels the limit (the stop takes its
  funds, keeping its own need), cancelling either cancels both; its orders cannot be replaced.

``apply(cmd)`` returns an ``Outcome``; the model never raises on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from protocol.messages import (
    Cancel,
    Deposit,
    MassCancel,
    NewOrder,
    NewOrderList,
    Replace,
    Tick,
    Withdraw,
)

BUY, SELL = 1, 2
LIMIT, MARKET = 1, 2
GTC, IOC, FOK, GTD = 1, 2, 3, 4
STOP_LOSS, TAKE_PROFIT = 1, 2
NEWEST, OLDEST, BOTH = 1, 2, 3
MAX_INT = 2**63 - 1

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
INVALID_FIELD = 1007
INSUFFICIENT_FUNDS = 2001
UNKNOWN_ASSET = 2002
INVALID_AMOUNT = 2003
INVALID_ACCOUNT = 2004
WOULD_TRIGGER_IMMEDIATELY = 3016
INVALID_STOP_PRICE = 3017
INVALID_EXPIRE_TIME = 3018
INVALID_DISPLAY_QTY = 3019
INVALID_TRAILING = 3020
INVALID_ORDER_LIST = 3021
ORDER_LIST_LEG = 3022


def _collar(m: Market, stop: int) -> int:
    """A stop market buy by quantity trades up to its stop + 10%, rounded up."""
    return min(m.max_price, stop + (stop * 1_000 + 9_999) // 10_000)


def _exact(value: Decimal) -> int:
    if value != value.to_integral_value():
        raise ValueError(f"{value} is not a whole number")
    return int(value)


@dataclass
class Market:
    symbol: str
    base: str
    quote: str
    lot_units: int  # base minor units in one lot
    tick_lot_quote: int  # quote minor units of one tick times one lot
    min_qty: int
    max_qty: int
    max_price: int
    maker_ppm: int
    taker_ppm: int

    @classmethod
    def from_toml(cls, symbol: str, m: dict, decimals: dict[str, int]) -> Market:
        tick, lot = Decimal(m["tick"]), Decimal(m["lot"])
        return cls(
            symbol,
            m["base"],
            m["quote"],
            _exact(lot.scaleb(decimals[m["base"]])),
            _exact((tick * lot).scaleb(decimals[m["quote"]])),
            _exact(Decimal(m["min_qty"]) / lot),
            _exact(Decimal(m["max_qty"]) / lot),
            _exact(Decimal(m["max_price"]) / tick),
            _exact(Decimal(m.get("maker_fee", "0")).scaleb(6)),
            _exact(Decimal(m.get("taker_fee", "0")).scaleb(6)),
        )


@dataclass
class Order:
    id: int
    account: int
    market: str
    side: int
    price: int
    qty: int
    leaves: int
    cum: int
    locked: int
    cid: str
    post_only: bool
    stp: int
    time: int  # priority: smaller is older
    type: int = LIMIT
    tif: int = GTC
    budget: int = 0  # a market buy by quote amount
    trigger: int = 0
    stop: int = 0
    expire: int = 0
    display: int = 0  # an iceberg's peak (0: not one)
    shown: int = 0  # what it shows now
    trail: int = 0  # a trailing stop's distance (bps)
    peak: int = 0  # the best last price it has seen (0: not following yet)
    link: int = 0  # the other order of its list

    def rises(self) -> bool:
        if self.peak:
            return self.side == BUY
        return (self.trigger == STOP_LOSS) == (self.side == BUY)

    def trigger_price(self) -> int:
        if not self.peak:
            return self.stop
        distance = (self.peak * self.trail + 9_999) // 10_000
        return self.peak + distance if self.side == BUY else self.peak - distance

    def visible(self) -> int:
        return self.shown if self.display else self.leaves


@dataclass
class Outcome:
    reject: int | None = None  # reject code, None if accepted
    order_id: int = 0
    taker_fills: list[tuple[int, int]] = field(default_factory=list)  # (price, qty)
    maker_fills: list[tuple[int, int, int]] = field(default_factory=list)  # (order id, px, qty)
    trades: list[tuple[str, int, int, int]] = field(default_factory=list)  # market, px, qty, side
    count: int = 0  # mass cancel
    expired: int = 0  # GTD orders that expired before the command ran


class Model:
    def __init__(self, toml: dict, fee_account: int = 0) -> None:
        decimals = {name: a["decimals"] for name, a in toml["assets"].items()}
        self.assets = list(decimals)
        self.markets = {s: Market.from_toml(s, m, decimals) for s, m in toml["markets"].items()}
        self.fee_account = fee_account
        self.available: dict[tuple[int, str], int] = {}
        self.locked: dict[tuple[int, str], int] = {}
        self.net: dict[str, int] = dict.fromkeys(self.assets, 0)  # deposits - withdrawals
        self.resting: list[Order] = []
        self.waiting: list[Order] = []  # stop orders not yet triggered
        self.last: dict[str, int] = {}  # market -> last trade price
        self.next_id = 1
        self.clock = 0

    # ------------------------------------------------------------------------ queries
    def balance(self, account: int, asset: str) -> tuple[int, int]:
        return self.available.get((account, asset), 0), self.locked.get((account, asset), 0)

    def side(self, market: str, side: int) -> list[Order]:
        """Resting orders of one side, best first, oldest first within a price."""
        orders = [o for o in self.resting if o.market == market and o.side == side]
        if side == BUY:
            return sorted(orders, key=lambda o: (-o.price, o.time))
        return sorted(orders, key=lambda o: (o.price, o.time))

    def open_orders(self, account: int) -> list[Order]:
        return [o for o in self.resting + self.waiting if o.account == account]

    def _find(self, account: int, order_id: int, cid: str) -> Order | None:
        for o in self.resting + self.waiting:
            if order_id and o.id == order_id:
                return o if o.account == account else None
        if order_id:
            return None
        for o in self.resting + self.waiting:
            if cid and o.account == account and o.cid == cid:
                return o
        return None

    def _crosses(self, market: str, side: int, price: int) -> bool:
        opposite = self.side(market, SELL if side == BUY else BUY)
        if not opposite:
            return False
        best = opposite[0].price
        return best <= price if side == BUY else best >= price

    def _cid_taken(self, account: int, cid: str) -> bool:
        return any(o.account == account and o.cid == cid for o in self.resting + self.waiting)

    # --------------------------------------------------------------------- money moves
    def _move(self, account: int, asset: str, amount: int) -> None:
        """available -> locked (negative amount: back)."""
        self.available[(account, asset)] = self.available.get((account, asset), 0) - amount
        self.locked[(account, asset)] = self.locked.get((account, asset), 0) + amount

    def _credit(self, account: int, asset: str, amount: int) -> None:
        self.available[(account, asset)] = self.available.get((account, asset), 0) + amount

    def _lock_asset(self, o: Order) -> str:
        m = self.markets[o.market]
        return m.quote if o.side == BUY else m.base

    def _release(self, o: Order) -> None:
        self._move(o.account, self._lock_asset(o), -o.locked)
        o.locked = 0

    def _cancel(self, o: Order) -> None:
        self._release(o)
        (self.waiting if o in self.waiting else self.resting).remove(o)

    def _partner(self, o: Order) -> Order | None:
        """The other order of ``o``'s list, if it is still open."""
        for p in self.resting + self.waiting:
            if o.link and p.id == o.link:
                return p
        return None

    def _cancel_partner(self, o: Order) -> None:
        p = self._partner(o)
        if p is not None:
            self._cancel(p)

    def _need(self, o: Order) -> int:
        m = self.markets[o.market]
        return o.price * o.leaves * m.tick_lot_quote if o.side == BUY else o.leaves * m.lot_units

    # --------------------------------------------------------------------------- apply
    def apply(self, cmd: object, ts: int = 0) -> Outcome:
        due = sorted(
            (o for o in self.resting + self.waiting if o.expire and o.expire <= ts),
            key=lambda o: (o.expire, o.id),
        )
        for o in due:
            self._cancel(o)
        out = self._apply(cmd, ts)
        out.expired = len(due)
        return out

    def _apply(self, cmd: object, ts: int) -> Outcome:
        if isinstance(cmd, NewOrder):
            out = self._new_order(cmd, ts)
        elif isinstance(cmd, Cancel):
            return self._cancel_cmd(cmd)
        elif isinstance(cmd, Replace):
            out = self._replace(cmd)
        elif isinstance(cmd, MassCancel):
            return self._mass_cancel(cmd)
        elif isinstance(cmd, Deposit | Withdraw):
            return self._ledger(cmd)
        elif isinstance(cmd, Tick):
            return Outcome()
        elif isinstance(cmd, NewOrderList):
            return self._new_list(cmd)
        else:
            raise TypeError(cmd)
        if out.reject is None:
            for market in self.markets:  # only the command's market can have a stop due
                self._trigger(market, out)
        return out

    # ------------------------------------------------------------------------- stops
    def _stop_check(
        self, market: str, side: int, trigger: int, stop: int, trail: int = 0
    ) -> int | None:
        m = self.markets[market]
        if trigger not in (STOP_LOSS, TAKE_PROFIT):
            return INVALID_ORDER_TYPE
        if trail:
            if not 10 <= trail <= 2_000:
                return INVALID_TRAILING
            if not stop:
                return None if self.last.get(market) else INVALID_TRAILING
        if not 0 < stop <= m.max_price:
            return INVALID_STOP_PRICE
        last = self.last.get(market, 0)
        rises = (trigger == STOP_LOSS) == (side == BUY)
        if last and (last >= stop if rises else last <= stop):
            return WOULD_TRIGGER_IMMEDIATELY
        return None

    def _due(self, market: str) -> Order | None:
        last = self.last.get(market, 0)
        if not last:
            return None
        here = [o for o in self.waiting if o.market == market]
        up = sorted(
            (o for o in here if o.rises() and o.trigger_price() <= last),
            key=lambda o: (o.trigger_price(), o.id),
        )
        if up:
            return up[0]
        down = sorted(
            (o for o in here if not o.rises() and o.trigger_price() >= last),
            key=lambda o: (-o.trigger_price(), o.id),
        )
        return down[0] if down else None

    def _follow(self, market: str) -> None:
        """Trailing stops following the price take the last price when it is better for them."""
        last = self.last.get(market, 0)
        for o in self.waiting:
            if o.market == market and o.peak:
                o.peak = min(o.peak, last) if o.side == BUY else max(o.peak, last)

    def _trigger(self, market: str, out: Outcome) -> None:
        """Run the due stops; their makers' fills and trades count, their own fills are
        reported to their owners, not in this command's reply."""
        if not market:
            return
        self._follow(market)
        o = self._due(market)
        while o is not None:
            if o.trail and not o.peak:
                o.peak = self.last[market]  # it starts following the price
            else:
                self.waiting.remove(o)
                p = self._partner(o)
                if p is not None:  # the list's limit order goes; its funds pass to the stop
                    o.locked, p.locked = p.locked, 0
                    self.resting.remove(p)
                    surplus = o.locked - self._need(o)
                    self._move(o.account, self._lock_asset(o), -surplus)
                    o.locked -= surplus
                side_out = Outcome()
                self._run(o, side_out)
                out.maker_fills += side_out.maker_fills
                out.trades += side_out.trades
                self._follow(market)
            o = self._due(market)

    def _run(self, o: Order, out: Outcome) -> None:
        """Execute an accepted order (validated, locked) as a new taker."""
        if o.type == LIMIT:
            if o.tif == FOK and self._fillable(o, o.price) < o.qty:
                self._release(o)
                return
            stopped = self._match(o, o.price, 0, out)
            if o.leaves and not stopped and o.tif in (GTC, GTD):
                self._rest(o)
            else:
                self._release(o)
            return
        limit = o.price or None  # a stop market buy by quantity: its protection price
        if o.tif == FOK and self._fillable(o, limit) < o.qty:
            self._release(o)
            return
        self._match(o, limit, o.budget, out)
        self._release(o)

    def _ledger(self, c: Deposit | Withdraw) -> Outcome:
        if c.asset not in self.net:
            return Outcome(UNKNOWN_ASSET)
        if not 0 < c.amount <= MAX_INT:
            return Outcome(INVALID_AMOUNT)
        if c.account < 0:
            return Outcome(INVALID_ACCOUNT)
        amount = c.amount
        if isinstance(c, Withdraw):
            if self.balance(c.account, c.asset)[0] < amount:
                return Outcome(INSUFFICIENT_FUNDS)
            amount = -amount
        self._credit(c.account, c.asset, amount)
        self.net[c.asset] += amount
        return Outcome()

    def _cancel_cmd(self, c: Cancel) -> Outcome:
        o = self._find(c.account, c.order_id, c.client_order_id)
        if o is None or (c.market and c.market != o.market):
            return Outcome(UNKNOWN_ORDER)
        self._cancel(o)
        self._cancel_partner(o)
        return Outcome(order_id=o.id)

    def _mass_cancel(self, c: MassCancel) -> Outcome:
        if c.market and c.market not in self.markets:
            return Outcome(UNKNOWN_MARKET)
        victims = [o for o in self.open_orders(c.account) if not c.market or o.market == c.market]
        for o in victims:
            self._cancel(o)
        return Outcome(count=len(victims))

    # ---------------------------------------------------------------------- new orders
    def _check_new(self, c: NewOrder) -> int | None:
        """Reject code of the checks every new order passes first, in the engine's order."""
        m = self.markets.get(c.market)
        if m is None:
            return UNKNOWN_MARKET
        if c.account <= 0 or c.account == self.fee_account:
            return INVALID_ACCOUNT
        if c.side not in (BUY, SELL):
            return INVALID_SIDE
        if c.client_order_id and len(c.client_order_id) > 64:
            return INVALID_CLIENT_ORDER_ID
        if c.client_order_id and self._cid_taken(c.account, c.client_order_id):
            return DUPLICATE_CLIENT_ORDER_ID
        if not 0 <= c.stp <= BOTH:
            return INVALID_FIELD
        return None

    def _check_qty(self, m: Market, qty: int) -> int | None:
        if qty < m.min_qty:
            return QUANTITY_BELOW_MIN
        if qty > m.max_qty:
            return QUANTITY_ABOVE_MAX
        return None

    def _new_order(self, c: NewOrder, ts: int) -> Outcome:
        code = self._check_new(c)
        if code is not None:
            return Outcome(code)
        if c.type == LIMIT:
            return self._new_limit(c, ts)
        if c.type == MARKET:
            return self._new_market(c)
        return Outcome(INVALID_ORDER_TYPE)

    def _new_limit(self, c: NewOrder, ts: int) -> Outcome:
        m = self.markets[c.market]
        tif = c.tif or GTC
        if not 0 < c.price <= m.max_price:
            return Outcome(INVALID_PRICE)
        code = self._check_qty(m, c.qty)
        if code is not None:
            return Outcome(code)
        if tif not in (GTC, IOC, FOK, GTD):
            return Outcome(INVALID_TIME_IN_FORCE)
        if (tif == GTD and c.expire_ts <= ts) or (tif != GTD and c.expire_ts):
            return Outcome(INVALID_EXPIRE_TIME)
        if c.quote_qty:
            return Outcome(INVALID_QUANTITY)
        if c.display_qty:
            if tif not in (GTC, GTD):
                return Outcome(INVALID_TIME_IN_FORCE)
            if not m.min_qty <= c.display_qty <= c.qty:
                return Outcome(INVALID_DISPLAY_QTY)
        if c.trigger:
            if c.post_only:
                return Outcome(INVALID_ORDER_TYPE)
            code = self._stop_check(c.market, c.side, c.trigger, c.stop_price, c.trailing_bps)
            if code is not None:
                return Outcome(code)
        elif c.stop_price:
            return Outcome(INVALID_STOP_PRICE)
        elif c.trailing_bps:
            return Outcome(INVALID_TRAILING)
        if c.post_only and tif not in (GTC, GTD):
            return Outcome(INVALID_TIME_IN_FORCE)
        if c.post_only and self._crosses(c.market, c.side, c.price):
            return Outcome(POST_ONLY_WOULD_CROSS)
        if c.side == BUY:
            need, asset = c.price * c.qty * m.tick_lot_quote, m.quote
        else:
            need, asset = c.qty * m.lot_units, m.base
        if self.balance(c.account, asset)[0] < need:
            return Outcome(INSUFFICIENT_FUNDS)
        o = self._create(c, c.price, c.qty, need)
        o.tif, o.expire, o.display = tif, c.expire_ts, c.display_qty
        return self._place(o, c)

    def _place(self, o: Order, c: NewOrder) -> Outcome:
        """An accepted new order waits (a stop) or runs."""
        out = Outcome(order_id=o.id)
        if c.trigger:
            o.trigger, o.stop, o.trail = c.trigger, c.stop_price, c.trailing_bps
            if o.trail and not o.stop:
                o.peak = self.last[o.market]
            self.waiting.append(o)
            return out
        self._run(o, out)
        return out

    def _new_market(self, c: NewOrder) -> Outcome:
        m = self.markets[c.market]
        if c.display_qty:
            return Outcome(INVALID_DISPLAY_QTY)
        tif = c.tif or IOC
        if tif not in (IOC, FOK):
            return Outcome(INVALID_TIME_IN_FORCE)
        if c.post_only or c.price:
            return Outcome(INVALID_PRICE)
        if c.expire_ts:
            return Outcome(INVALID_EXPIRE_TIME)
        if c.trigger:
            code = self._stop_check(c.market, c.side, c.trigger, c.stop_price, c.trailing_bps)
            if code is not None:
                return Outcome(code)
        elif c.stop_price:
            return Outcome(INVALID_STOP_PRICE)
        elif c.trailing_bps:
            return Outcome(INVALID_TRAILING)
        budget = price = 0
        if c.side == BUY and c.quote_qty and not c.qty:
            if not 0 < c.quote_qty <= m.max_price * m.max_qty * m.tick_lot_quote:
                return Outcome(INVALID_QUANTITY)
            if tif == FOK:
                return Outcome(INVALID_TIME_IN_FORCE)
            budget = need = c.quote_qty
            asset, qty = m.quote, m.max_qty
        elif c.quote_qty:
            return Outcome(INVALID_QUANTITY)
        else:
            code = self._check_qty(m, c.qty)
            if code is not None:
                return Outcome(code)
            qty = c.qty
            if c.side == SELL:
                need, asset = qty * m.lot_units, m.base
            elif c.trigger:
                stop = c.stop_price  # a trailing stop without one: where it would trigger first
                if not stop:
                    last = self.last[c.market]
                    stop = last + (last * c.trailing_bps + 9_999) // 10_000
                price = _collar(m, stop)
                need, asset = price * qty * m.tick_lot_quote, m.quote
            else:
                lots, need = self._walk_cost(c.market, c.account, c.stp or NEWEST, qty)
                if not lots:
                    return Outcome(NO_LIQUIDITY)
                asset = m.quote
        if self.balance(c.account, asset)[0] < need:
            return Outcome(INSUFFICIENT_FUNDS)
        o = self._create(c, price, qty, need)
        o.type, o.tif, o.budget = MARKET, tif, budget
        return self._place(o, c)

    def _new_list(self, c: NewOrderList) -> Outcome:
        """A one-cancels-the-other list, checked in the engine's order: the two client ids,
        the prices against each other and the last price, the limit order as a post-only GTC
        order, the stop-loss as a stop order (against the same funds), then locked once."""
        m = self.markets.get(c.market)
        if m is None:
            return Outcome(UNKNOWN_MARKET)
        if c.limit_client_order_id and c.limit_client_order_id == c.stop_client_order_id:
            return Outcome(DUPLICATE_CLIENT_ORDER_ID)
        last = self.last.get(c.market, 0)
        if c.side == SELL and not (
            c.price > c.stop_price and (not last or c.price > last > c.stop_price)
        ):
            return Outcome(INVALID_ORDER_LIST)
        if c.side == BUY and not (
            c.price < c.stop_price and (not last or c.price < last < c.stop_price)
        ):
            return Outcome(INVALID_ORDER_LIST)
        limit = NewOrder(
            0,
            c.account,
            c.market,
            c.side,
            LIMIT,
            GTC,
            c.price,
            c.qty,
            0,
            c.limit_client_order_id,
            True,
            c.stp,
        )
        stop_type = LIMIT if c.stop_limit_price else MARKET
        stop = NewOrder(
            0,
            c.account,
            c.market,
            c.side,
            stop_type,
            GTC if c.stop_limit_price else IOC,
            c.stop_limit_price,
            c.qty,
            0,
            c.stop_client_order_id,
            False,
            c.stp,
            trigger=STOP_LOSS,
            stop_price=c.stop_price,
        )
        first = self.next_id
        a = self._new_order(limit, 0)
        if a.reject is not None:
            return a
        held = self.resting[-1]  # the limit order just rested (post-only: it did not trade)
        self.resting.remove(held)
        self._release(held)
        b = self._new_order(stop, 0)
        if b.reject is not None:
            self.next_id = first
            return b
        waits = self.waiting[-1]
        self._release(waits)
        need = max(self._need(held), self._need(waits))
        asset = self._lock_asset(held)
        self._move(c.account, asset, need)
        held.locked, waits.locked = need, 0
        held.link, waits.link = waits.id, held.id
        self.resting.append(held)
        return Outcome(order_id=held.id)

    def _create(self, c: NewOrder, price: int, qty: int, need: int) -> Order:
        o = Order(
            self.next_id,
            c.account,
            c.market,
            c.side,
            price,
            qty,
            qty,
            0,
            need,
            c.client_order_id,
            c.post_only,
            c.stp or NEWEST,
            0,
        )
        self.next_id += 1
        self._move(o.account, self._lock_asset(o), need)
        return o

    def _rest(self, o: Order) -> None:
        self.clock += 1
        o.time = self.clock
        o.shown = min(o.display, o.leaves)
        self.resting.append(o)

    # ------------------------------------------------------------------------ matching
    def _candidates(self, t: Order, limit: int | None) -> list[Order]:
        """Opposite orders the taker may meet, in priority order, within its limit price."""
        out = []
        for o in self.side(t.market, SELL if t.side == BUY else BUY):
            if limit is not None and (o.price > limit if t.side == BUY else o.price < limit):
                break
            out.append(o)
        return out

    def _dry_run(
        self, market: str, side: int, account: int, stp: int, qty: int, limit: int | None
    ) -> list[tuple[int, int]]:
        """The fills (price, lots) a taker would get now, found by matching copies of the
        opposite orders as ``_match`` would (icebergs showing more at the back), the book
        untouched."""
        book = [
            [o.price, o.time, o.leaves, o.visible(), o.display, o.account]
            for o in self.side(market, SELL if side == BUY else BUY)
            if limit is None or (o.price <= limit if side == BUY else o.price >= limit)
        ]
        clock, fills, left = self.clock, [], qty
        while left and book:
            book.sort(key=lambda e: ((e[0] if side == BUY else -e[0]), e[1]))
            e = book[0]
            if e[5] == account:
                if stp != OLDEST:
                    break
                book.pop(0)
                continue
            take = min(left, e[3])
            fills.append((e[0], take))
            left -= take
            e[2] -= take
            e[3] -= take
            if not e[2]:
                book.pop(0)
            elif not e[3]:
                clock += 1
                e[1], e[3] = clock, min(e[4], e[2])
        return fills

    def _fillable(self, t: Order, limit: int | None) -> int:
        """How much a FOK taker could fill now, as self-trade prevention would let it."""
        return sum(q for _, q in self._dry_run(t.market, t.side, t.account, t.stp, t.qty, limit))

    def _walk_cost(self, market: str, account: int, stp: int, qty: int) -> tuple[int, int]:
        m = self.markets[market]
        fills = self._dry_run(market, BUY, account, stp, qty, None)
        return sum(q for _, q in fills), sum(p * q * m.tick_lot_quote for p, q in fills)

    def _match(self, t: Order, limit: int | None, budget: int, out: Outcome) -> bool:
        """Trade taker ``t`` against the book; True if it was stopped (STP, out of budget)."""
        m = self.markets[t.market]
        while t.leaves:
            candidates = self._candidates(t, limit)
            if not candidates:
                return False
            maker = candidates[0]
            lot_cost = maker.price * m.tick_lot_quote
            if budget and t.locked < lot_cost:
                return True  # the rest of the budget cannot buy a lot here: it would not match
            if maker.account == t.account:
                if t.stp == NEWEST:
                    return True
                self._cancel(maker)
                self._cancel_partner(maker)
                if t.stp == BOTH:
                    return True
                continue
            take = min(t.leaves, maker.visible())
            if budget:
                take = min(take, t.locked // lot_cost)
            self._fill(m, t, maker, take, out)
        return False

    def _fill(self, m: Market, t: Order, maker: Order, take: int, out: Outcome) -> None:
        price = maker.price
        notional = price * take * m.tick_lot_quote
        base = take * m.lot_units
        buyer, seller = (t, maker) if t.side == BUY else (maker, t)
        buyer_ppm = m.taker_ppm if buyer is t else m.maker_ppm
        seller_ppm = m.taker_ppm if seller is t else m.maker_ppm
        fee_base = base * buyer_ppm // 1_000_000
        fee_quote = notional * seller_ppm // 1_000_000
        self.locked[(buyer.account, m.quote)] -= notional
        buyer.locked -= notional
        self._credit(buyer.account, m.base, base - fee_base)
        self.last[m.symbol] = price
        self.locked[(seller.account, m.base)] -= base
        seller.locked -= base
        self._credit(seller.account, m.quote, notional - fee_quote)
        self._credit(self.fee_account, m.base, fee_base)
        self._credit(self.fee_account, m.quote, fee_quote)
        for o in (t, maker):
            o.leaves -= take
            o.cum += take
        if not maker.leaves:
            self._release(maker)
            self.resting.remove(maker)
        elif maker.display:
            maker.shown -= take
            if not maker.shown:  # it shows its next part, at the back of its price
                self.clock += 1
                maker.time, maker.shown = self.clock, min(maker.display, maker.leaves)
        if maker.link and self._partner(maker) is not None:
            self._cancel_partner(maker)  # the list's stop goes (it holds none of the funds)
            if maker.leaves and maker.side == BUY:
                surplus = maker.locked - self._need(maker)
                self._move(maker.account, m.quote, -surplus)
                maker.locked -= surplus
        out.taker_fills.append((price, take))
        out.maker_fills.append((maker.id, price, take))
        out.trades.append((m.symbol, price, take, t.side))

    # ------------------------------------------------------------------------- replace
    def _replace(self, c: Replace) -> Outcome:
        o = self._find(c.account, c.order_id, c.client_order_id)
        if o is None or (c.market and c.market != o.market):
            return Outcome(UNKNOWN_ORDER)
        waits = o in self.waiting
        if c.stop_price and not waits:
            return Outcome(INVALID_STOP_PRICE)
        if o.link:
            return Outcome(ORDER_LIST_LEG)
        if c.stop_price and o.peak:
            return Outcome(INVALID_STOP_PRICE)
        m = self.markets[o.market]
        price = c.price or o.price
        qty = c.qty or o.qty
        cid = c.new_client_order_id or o.cid
        if o.type == MARKET:
            if c.price:
                return Outcome(INVALID_PRICE)
            if o.budget and c.qty:
                return Outcome(INVALID_QUANTITY)
        elif not 0 < price <= m.max_price:
            return Outcome(INVALID_PRICE)
        if not o.budget:
            code = self._check_qty(m, qty)
            if code is not None:
                return Outcome(code)
            if qty <= o.cum:
                return Outcome(REPLACE_INVALID)
        if len(cid) > 64:
            return Outcome(INVALID_CLIENT_ORDER_ID)
        if cid != o.cid and self._cid_taken(o.account, cid):
            return Outcome(DUPLICATE_CLIENT_ORDER_ID)
        stop = c.stop_price or o.stop
        if waits and not o.peak:
            code = self._stop_check(o.market, o.side, o.trigger, stop, o.trail)
            if code is not None:
                return Outcome(code)
            if o.type == MARKET and o.side == BUY and not o.budget:
                price = _collar(m, stop)
        if o.post_only and price != o.price and self._crosses(o.market, o.side, price):
            return Outcome(POST_ONLY_WOULD_CROSS)
        leaves = o.leaves if o.budget else qty - o.cum
        if o.budget:
            need = o.locked
        else:
            need = price * leaves * m.tick_lot_quote if o.side == BUY else leaves * m.lot_units
        asset = self._lock_asset(o)
        if need - o.locked > self.balance(o.account, asset)[0]:
            return Outcome(INSUFFICIENT_FUNDS)
        self._move(o.account, asset, need - o.locked)
        o.locked = need
        o.cid = cid
        out = Outcome(order_id=o.id)
        if waits:
            o.price, o.qty, o.leaves, o.stop = price, qty, leaves, stop
            return out
        keeps_place = price == o.price and qty <= o.qty
        o.price, o.qty, o.leaves = price, qty, leaves
        if keeps_place:
            o.shown = min(o.shown, o.leaves)
            return out
        self.resting.remove(o)
        stopped = self._match(o, price, 0, out)
        if o.leaves and not stopped:  # it was resting: GTC or GTD
            self._rest(o)
        else:
            self._release(o)
        return out

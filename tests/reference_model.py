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
  unknown.

``apply(cmd)`` returns an ``Outcome``; the model never raises on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from protocol.messages import Cancel, Deposit, MassCancel, NewOrder, Replace, Withdraw

BUY, SELL = 1, 2
LIMIT, MARKET = 1, 2
GTC, IOC, FOK = 1, 2, 3
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


@dataclass
class Outcome:
    reject: int | None = None  # reject code, None if accepted
    order_id: int = 0
    taker_fills: list[tuple[int, int]] = field(default_factory=list)  # (price, qty)
    maker_fills: list[tuple[int, int, int]] = field(default_factory=list)  # (order id, px, qty)
    trades: list[tuple[str, int, int, int]] = field(default_factory=list)  # market, px, qty, side
    count: int = 0  # mass cancel


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
        return [o for o in self.resting if o.account == account]

    def _find(self, account: int, order_id: int, cid: str) -> Order | None:
        for o in self.resting:
            if order_id and o.id == order_id:
                return o if o.account == account else None
        if order_id:
            return None
        for o in self.resting:
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
        return any(o.account == account and o.cid == cid for o in self.resting)

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
        self.resting.remove(o)

    # --------------------------------------------------------------------------- apply
    def apply(self, cmd: object) -> Outcome:
        if isinstance(cmd, NewOrder):
            return self._new_order(cmd)
        if isinstance(cmd, Cancel):
            return self._cancel_cmd(cmd)
        if isinstance(cmd, Replace):
            return self._replace(cmd)
        if isinstance(cmd, MassCancel):
            return self._mass_cancel(cmd)
        if isinstance(cmd, Deposit | Withdraw):
            return self._ledger(cmd)
        raise TypeError(cmd)

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

    def _new_order(self, c: NewOrder) -> Outcome:
        code = self._check_new(c)
        if code is not None:
            return Outcome(code)
        if c.type == LIMIT:
            return self._new_limit(c)
        if c.type == MARKET:
            return self._new_market(c)
        return Outcome(INVALID_ORDER_TYPE)

    def _new_limit(self, c: NewOrder) -> Outcome:
        m = self.markets[c.market]
        tif = c.tif or GTC
        if not 0 < c.price <= m.max_price:
            return Outcome(INVALID_PRICE)
        code = self._check_qty(m, c.qty)
        if code is not None:
            return Outcome(code)
        if tif not in (GTC, IOC, FOK):
            return Outcome(INVALID_TIME_IN_FORCE)
        if c.quote_qty:
            return Outcome(INVALID_QUANTITY)
        if c.post_only and tif != GTC:
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
        out = Outcome(order_id=o.id)
        if tif == FOK and self._fillable(o, c.price) < o.qty:
            self._release(o)
            return out
        stopped = self._match(o, c.price, 0, out)
        if o.leaves and not stopped and tif == GTC:
            self._rest(o)
        else:
            self._release(o)
        return out

    def _new_market(self, c: NewOrder) -> Outcome:
        m = self.markets[c.market]
        tif = c.tif or IOC
        if tif not in (IOC, FOK):
            return Outcome(INVALID_TIME_IN_FORCE)
        if c.post_only or c.price:
            return Outcome(INVALID_PRICE)
        budget = 0
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
            else:
                lots, need = self._walk_cost(c.market, c.account, c.stp or NEWEST, qty)
                if not lots:
                    return Outcome(NO_LIQUIDITY)
                asset = m.quote
        if self.balance(c.account, asset)[0] < need:
            return Outcome(INSUFFICIENT_FUNDS)
        o = self._create(c, 0, qty, need)
        out = Outcome(order_id=o.id)
        if tif == FOK and self._fillable(o, None) < o.qty:
            self._release(o)
            return out
        self._match(o, None, budget, out)
        self._release(o)
        return out

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

    def _fillable(self, t: Order, limit: int | None) -> int:
        """How much a FOK taker could fill now, as self-trade prevention would let it."""
        total = 0
        for o in self._candidates(t, limit):
            if o.account == t.account:
                if t.stp == OLDEST:
                    continue
                break
            total += o.leaves
        return total

    def _walk_cost(self, market: str, account: int, stp: int, qty: int) -> tuple[int, int]:
        m = self.markets[market]
        lots = cost = 0
        for o in self.side(market, SELL):
            if lots == qty:
                break
            if o.account == account:
                if stp == OLDEST:
                    continue
                break
            take = min(qty - lots, o.leaves)
            lots += take
            cost += o.price * take * m.tick_lot_quote
        return lots, cost

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
                if t.stp == BOTH:
                    return True
                continue
            take = min(t.leaves, maker.leaves)
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
        out.taker_fills.append((price, take))
        out.maker_fills.append((maker.id, price, take))
        out.trades.append((m.symbol, price, take, t.side))

    # ------------------------------------------------------------------------- replace
    def _replace(self, c: Replace) -> Outcome:
        o = self._find(c.account, c.order_id, c.client_order_id)
        if o is None or (c.market and c.market != o.market):
            return Outcome(UNKNOWN_ORDER)
        m = self.markets[o.market]
        price = c.price or o.price
        qty = c.qty or o.qty
        cid = c.new_client_order_id or o.cid
        if not 0 < price <= m.max_price:
            return Outcome(INVALID_PRICE)
        code = self._check_qty(m, qty)
        if code is not None:
            return Outcome(code)
        if qty <= o.cum:
            return Outcome(REPLACE_INVALID)
        if len(cid) > 64:
            return Outcome(INVALID_CLIENT_ORDER_ID)
        if cid != o.cid and self._cid_taken(o.account, cid):
            return Outcome(DUPLICATE_CLIENT_ORDER_ID)
        if o.post_only and price != o.price and self._crosses(o.market, o.side, price):
            return Outcome(POST_ONLY_WOULD_CROSS)
        leaves = qty - o.cum
        need = price * leaves * m.tick_lot_quote if o.side == BUY else leaves * m.lot_units
        asset = self._lock_asset(o)
        if need - o.locked > self.balance(o.account, asset)[0]:
            return Outcome(INSUFFICIENT_FUNDS)
        self._move(o.account, asset, need - o.locked)
        o.locked = need
        o.cid = cid
        out = Outcome(order_id=o.id)
        keeps_place = price == o.price and qty <= o.qty
        o.price, o.qty, o.leaves = price, qty, leaves
        if keeps_place:
            return out
        self.resting.remove(o)
        stopped = self._match(o, price, 0, out)
        if o.leaves and not stopped:
            self._rest(o)
        else:
            self._release(o)
        return out

"""One market's order book: a price ladder of FIFO levels, plus the order record itself.

Rules:
- Price-time priority. Bids best = highest price, asks best = lowest; within a level, first in
  first out.
- A level is a deque of orders with a running total of lots and a count of live orders.
  Cancels are O(1): the order is marked dead (``resting = False``) and the level's total and
  count drop at once; dead entries are skipped and dropped when they reach the front, and the
  deque is compacted when dead entries outnumber live ones. A level whose count reaches zero
  leaves the ladder immediately, so the ladder only ever holds prices with live orders.
- The ladder is a ``sortedcontainers.SortedList`` of prices (bids stored negated, so index 0 is
  always the best price on both sides) next to a dict ``price -> Level``.
- An order that loses its priority (cancel-replace to a new price or a larger size) is a new
  ``Order`` object with the same id, appended at the back; the old object stays dead.
- The book never matches; the engine core does (engine.core) because matching touches the
  ledger on every fill. But the book alone changes levels, the ladder and the changed-price
  sets: the core says what happened (``rest``, ``fill``, ``take_front``, ``remove``,
  ``reduce``) and never edits a level itself. The book keeps the per-batch market-data
  bookkeeping (which prices changed, which trades printed) that the engine turns into
  Depth/Trades/Bbo messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import cython
import msgspec
from sortedcontainers import SortedList

from engine.codes import BUY, SELL, STOP_LOSS
from protocol.config import MarketSpec


class OrderRecord(msgspec.Struct, array_like=True, gc=False):
    """A resting order as a snapshot stores it: the format the engine has always written. The
    order fields appended since (``LiveOrder``) are stored beside it (``EngineState``), so a
    snapshot of orders without them is the same bytes as before they existed."""

    id: int
    account: int
    market: str
    side: int
    type: int
    tif: int
    price: int
    qty: int  # total order quantity (0 for a market buy by quote amount)
    leaves: int
    cum: int
    cum_quote: int  # quote minor units traded
    quote_qty: int  # market buy by amount: budget in quote minor units
    locked: int  # funds still locked for this order (quote units if buy, base units if sell)
    client_id: str
    post_only: bool
    stp: int
    origin: bytes  # routing id of the gateway that placed it
    created: int
    updated: int
    status: int = 0
    resting: bool = False


class LiveOrder(OrderRecord, gc=False):
    """Every field of an order: the record's, then those appended since (the interpreted
    build's ``Order`` itself, below)."""

    trigger: int = 0  # TriggerKind of a stop order (kept once triggered)
    stop_price: int = 0
    expire: int = 0  # GTD expiry, engine time (ns)
    waiting: bool = False  # a stop order whose stop price has not been reached
    display: int = 0  # an iceberg: the most it shows in its level at a time (0 = all of it)
    shown: int = 0  # an iceberg resting: what its level shows of it now (1..display)
    trail: int = 0  # a trailing stop: its distance from the best last price, in bps
    peak: int = 0  # a trailing stop following the price: the best last price since (0: not yet)
    link: int = 0  # an order of a one-cancels-the-other list: the other order's id


RECORD_FIELDS = OrderRecord.__struct_fields__
ORDER_FIELDS = LiveOrder.__struct_fields__


class Order:
    """A live or recently closed order. All quantities in lots, prices in ticks.

    A plain class with slots (``LiveOrder``'s fields, annotated again for mypy), which the
    compiled build makes a C struct of 64-bit integers (engine/book.pxd); the interpreted build
    uses ``LiveOrder`` itself (below). Every integer field is bounded by the config's limits
    (price x qty x tick-lot value <= 2**63-1), so none can overflow; a value out of range would
    be an OverflowError, never a wrapped number. Made by ``new_order``.
    """

    __slots__ = ORDER_FIELDS

    id: int
    account: int
    market: str
    side: int
    type: int
    tif: int
    price: int
    qty: int
    leaves: int
    cum: int
    cum_quote: int
    quote_qty: int
    locked: int
    client_id: str
    post_only: bool
    stp: int
    origin: bytes
    created: int
    updated: int
    status: int
    resting: bool
    trigger: int
    stop_price: int
    expire: int
    waiting: bool
    display: int
    shown: int
    trail: int
    peak: int
    link: int

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in ORDER_FIELDS)
        return f"Order({fields})"


@cython.locals(o=Order)  # (in book.pxd it is not applied to a module-level function)
def new_order(
    id: int, account: int, market: str, side: int, type: int, tif: int, price: int, qty: int,
    leaves: int, cum: int, cum_quote: int, quote_qty: int, locked: int, client_id: str,
    post_only: bool, stp: int, origin: bytes, created: int, updated: int, status: int = 0,
    resting: bool = False, trigger: int = 0, stop_price: int = 0, expire: int = 0,
    waiting: bool = False, display: int = 0, shown: int = 0, trail: int = 0, peak: int = 0,
    link: int = 0,
) -> Order:  # fmt: skip
    """A new ``Order`` (its constructor: a plain function the compiled core calls in C, where
    a class call would parse 21 arguments by keyword)."""
    o = Order.__new__(Order)
    o.id = id
    o.account = account
    o.market = market
    o.side = side
    o.type = type
    o.tif = tif
    o.price = price
    o.qty = qty
    o.leaves = leaves
    o.cum = cum
    o.cum_quote = cum_quote
    o.quote_qty = quote_qty
    o.locked = locked
    o.client_id = client_id
    o.post_only = post_only
    o.stp = stp
    o.origin = origin
    o.created = created
    o.updated = updated
    o.status = status
    o.resting = resting
    o.trigger = trigger
    o.stop_price = stop_price
    o.expire = expire
    o.waiting = waiting
    o.display = display
    o.shown = shown
    o.trail = trail
    o.peak = peak
    o.link = link
    return o


def rises(o: Order) -> bool:
    """A stop order that triggers when the last price rises to its stop (a stop-loss buy, a
    take-profit sell); the others trigger when it falls to it. A trailing stop that follows
    the price (``peak`` set) triggers on the way back: a buy on a rise, a sell on a fall."""
    if o.peak:
        return o.side == BUY
    return (o.trigger == STOP_LOSS) == (o.side == BUY)


def stop_of(o: Order) -> int:
    """The price at which a waiting stop triggers (or, a trailing stop not yet following the
    price, starts to): its stop price, or for a trailing stop following the price its best
    last price ``peak`` less (a sell) or plus (a buy) ``trail`` bps of it, rounded up to a
    tick away from the peak (at least one)."""
    if not o.peak:
        return o.stop_price
    return trailed(o.peak, o.trail, o.side == BUY)


def trailed(peak: int, trail: int, buy: bool) -> int:
    """Where a trailing stop following the best last price ``peak`` triggers: ``trail`` bps
    of it (rounded up to a tick, at least one) above it for a buy, below for a sell."""
    distance = -(-peak * trail // 10_000)
    return peak + distance if buy else peak - distance


if not cython.compiled:
    # Interpreted, an order is the msgspec struct itself: made by one C call and never
    # tracked by the cyclic GC (a slotted class is both slower to make and tracked, which
    # costs a growing book every full collection). Cython drops this block from the compiled
    # build, whose Order is book.pxd's C struct.
    Order = LiveOrder  # type: ignore[misc, assignment]
    new_order = LiveOrder  # type: ignore[assignment]


class Level:
    __slots__ = ("price", "orders", "total", "count")

    def __init__(self, price: int) -> None:
        self.price = price
        self.orders: deque[Order] = deque()
        self.total = 0
        self.count = 0

    def live(self) -> list[Order]:
        return [o for o in self.orders if o.resting]

    def compact(self) -> None:
        self.orders = deque(self.live())


class Book:
    __slots__ = (
        "spec",
        "symbol",
        "max_price",
        "min_qty",
        "max_qty",
        "tlq",
        "lu",
        "maker_ppm",
        "taker_ppm",
        "bids",
        "asks",
        "bid_levels",
        "ask_levels",
        "next_trade_id",
        "dirty_bids",
        "dirty_asks",
        "trades",
        "trade_seq",
        "depth_seq",
        "bbo_seq",
        "last_bbo",
        "base_a",
        "quote_a",
        "recent",
        "bid",
        "ask",
        "last",
        "stops_up",
        "stops_down",
        "stop_orders",
        "trail_up",
        "trail_down",
    )

    def __init__(self, spec: MarketSpec, recent_kept: int = 200_000) -> None:
        self.spec = spec
        self.symbol = spec.symbol
        # the spec's numbers the hot path reads, held here (C integers in the compiled build)
        self.max_price = spec.max_price
        self.min_qty = spec.min_qty
        self.max_qty = spec.max_qty
        self.tlq = spec.tick_lot_quote  # quote minor units per tick x lot
        self.lu = spec.lot_units  # base minor units per lot
        self.maker_ppm = spec.maker_ppm
        self.taker_ppm = spec.taker_ppm
        self.bids: SortedList = SortedList()  # negated prices
        self.asks: SortedList = SortedList()
        self.bid_levels: dict[int, Level] = {}
        self.ask_levels: dict[int, Level] = {}
        self.next_trade_id = 1
        self.bid = 0  # best bid price, 0 if none (cached ladder[0])
        self.ask = 0  # best ask price, 0 if none
        # market-data bookkeeping for the current batch (not part of the state)
        self.dirty_bids: set[int] = set()
        self.dirty_asks: set[int] = set()
        self.trades: list = []
        # the newest (trade, maker account, taker account), for the recorder (not the state)
        self.recent: deque = deque(maxlen=recent_kept)
        self.trade_seq = 0
        self.depth_seq = 0
        self.bbo_seq = 0
        self.last_bbo = (0, 0, 0, 0)
        # offsets of the base and quote "available" columns in a ledger row (locked = +1)
        self.base_a = 0
        self.quote_a = 0
        self.last = 0  # the last trade's price (state: stops trigger on it), 0 before any
        # waiting stop orders, by when the last price reaches them: those that trigger on a
        # rise by (stop, id), those on a fall by (-stop, id); and by id
        self.stops_up: SortedList = SortedList()
        self.stops_down: SortedList = SortedList()
        self.stop_orders: dict[int, Order] = {}
        # trailing stops following the price, by (peak, id): buys (their peak is the lowest
        # last price since they started; they trigger on a rise) and sells (the highest)
        self.trail_up: SortedList = SortedList()
        self.trail_down: SortedList = SortedList()

    # ------------------------------------------------------------------ resting orders
    # Every change to a level (its orders, total and count), to the ladder and to the batch's
    # changed-price sets happens here; the engine core says what happened to an order, the
    # book keeps its own arithmetic.
    def rest(self, o: Order) -> None:
        """Put ``o`` at the back of its price level (the level joins the ladder if new)."""
        price = o.price
        if o.side == BUY:
            level = self.bid_levels.get(price)
            if level is None:
                level = self.bid_levels[price] = Level(price)
                self.bids.add(-price)
                if price > self.bid:
                    self.bid = price
            self.dirty_bids.add(price)
        else:
            level = self.ask_levels.get(price)
            if level is None:
                level = self.ask_levels[price] = Level(price)
                self.asks.add(price)
                if not self.ask or price < self.ask:
                    self.ask = price
            self.dirty_asks.add(price)
        level.orders.append(o)
        if o.display:
            o.shown = o.display if o.display < o.leaves else o.leaves
            level.total += o.shown
        else:
            level.total += o.leaves
        level.count += 1
        o.resting = True

    def best(self, side: int) -> Level | None:
        """The best level of ``side``, or None if that side is empty."""
        if side == BUY:
            return self.bid_levels[self.bid] if self.bid else None
        return self.ask_levels[self.ask] if self.ask else None

    def mark(self, side: int, price: int) -> None:
        """A price whose level a taker reached: it goes out in the batch's depth update."""
        if side == BUY:
            self.dirty_bids.add(price)
        else:
            self.dirty_asks.add(price)

    def changes(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids best first, asks best first) as (price, total now; 0 = gone) for every price
        changed since the last call; the changed sets are empty afterwards."""
        bids = [(p, self.level_total(BUY, p)) for p in sorted(self.dirty_bids, reverse=True)]
        asks = [(p, self.level_total(SELL, p)) for p in sorted(self.dirty_asks)]
        self.dirty_bids.clear()
        self.dirty_asks.clear()
        return bids, asks

    def forget_changes(self) -> None:
        """Drop the batch's market-data bookkeeping (a replay or a restore has no audience)."""
        self.trades.clear()
        self.dirty_bids.clear()
        self.dirty_asks.clear()

    def front(self, level: Level) -> Order:
        """The oldest live order of a level that has one (dead entries before it go)."""
        q = level.orders
        m = q[0]
        while not m.resting:
            q.popleft()
            m = q[0]
        return m

    # fill and take_front act on a level a taker reached, which ``mark`` has already put in
    # the batch's changed prices: they do not mark it again on every fill.
    def fill(self, level: Level, m: Order, lots: int) -> bool:
        """The front order ``m`` of ``level`` trades ``lots``; True if that fills it (it leaves
        the book, and the level the ladder if it was the last)."""
        m.leaves -= lots
        level.total -= lots
        if m.leaves:
            if m.display:
                m.shown -= lots
                if not m.shown:  # an iceberg's visible part is gone: it shows more, at the back
                    level.orders.popleft()
                    m.shown = m.display if m.display < m.leaves else m.leaves
                    level.total += m.shown
                    level.orders.append(m)
            return False
        self._pop_front(level, m)
        return True

    def take_front(self, level: Level, m: Order) -> None:
        """The front order ``m`` of ``level`` leaves untraded (self-trade prevention)."""
        level.total -= m.shown if m.display else m.leaves
        self._pop_front(level, m)

    def _pop_front(self, level: Level, m: Order) -> None:
        level.orders.popleft()
        level.count -= 1
        m.resting = False
        if not level.count:
            self.drop_level(m.side, level.price)

    def remove(self, o: Order) -> None:
        """Take a resting order out of the book (O(1) apart from a level leaving the ladder)."""
        price = o.price
        o.resting = False
        if o.side == BUY:
            level = self.bid_levels[price]
            self.dirty_bids.add(price)
        else:
            level = self.ask_levels[price]
            self.dirty_asks.add(price)
        level.total -= o.shown if o.display else o.leaves
        level.count -= 1
        if level.count == 0:
            self.drop_level(o.side, price)
        elif len(level.orders) > 2 * level.count + 32:
            level.compact()

    def drop_level(self, side: int, price: int) -> None:
        """Remove an emptied level from the ladder and refresh the cached best price."""
        if side == BUY:
            del self.bid_levels[price]
            if price == self.bid:
                self.bids.pop(0)
                self.bid = -self.bids[0] if self.bids else 0
            else:
                self.bids.remove(-price)
        else:
            del self.ask_levels[price]
            if price == self.ask:
                self.asks.pop(0)
                self.ask = self.asks[0] if self.asks else 0
            else:
                self.asks.remove(price)

    def reduce(self, o: Order, lots: int) -> None:
        """A resting order shrinks in place (keeps its queue position); an iceberg shows at
        most what is left."""
        o.leaves -= lots
        if o.display:
            lots = o.shown - o.leaves if o.shown > o.leaves else 0
            o.shown -= lots
        if o.side == BUY:
            self.bid_levels[o.price].total -= lots
            self.dirty_bids.add(o.price)
        else:
            self.ask_levels[o.price].total -= lots
            self.dirty_asks.add(o.price)

    def show(self, o: Order, shown: int) -> None:
        """A resting iceberg shows ``shown`` lots (a restore: what it showed when saved)."""
        level = (self.bid_levels if o.side == BUY else self.ask_levels)[o.price]
        level.total += shown - o.shown
        o.shown = shown

    # ------------------------------------------------------------ waiting stop orders
    def pend(self, o: Order) -> None:
        """A stop order waits for the last price (it is not in the ladder)."""
        if rises(o):
            self.stops_up.add((stop_of(o), o.id))
        else:
            self.stops_down.add((-stop_of(o), o.id))
        if o.peak:
            (self.trail_up if o.side == BUY else self.trail_down).add((o.peak, o.id))
        self.stop_orders[o.id] = o

    def unpend(self, o: Order) -> None:
        if rises(o):
            self.stops_up.remove((stop_of(o), o.id))
        else:
            self.stops_down.remove((-stop_of(o), o.id))
        if o.peak:
            (self.trail_up if o.side == BUY else self.trail_down).remove((o.peak, o.id))
        del self.stop_orders[o.id]

    def follow(self, o: Order, price: int) -> None:
        """A trailing stop's best last price is now ``price`` (it starts following the price,
        or the price went its way): its trigger price moves with it."""
        self.unpend(o)
        o.peak = price
        self.pend(o)

    def follow_last(self) -> None:
        """Every trailing stop following the price takes the last price if it is better for
        it: sells a higher one, buys a lower one."""
        last = self.last
        down = self.trail_down
        while down and down[0][0] < last:
            self.follow(self.stop_orders[down[0][1]], last)
        up = self.trail_up
        while up and up[-1][0] > last:
            self.follow(self.stop_orders[up[-1][1]], last)

    def due_stop(self) -> Order | None:
        """The next waiting stop order the last price has reached, or None. Stops that trigger
        on a rise go first, lowest stop first; then those on a fall, highest stop first; the
        oldest first at one stop price (the order they would have been reached in)."""
        last = self.last
        if not last:
            return None  # no trade yet, no last price
        if self.stops_up and self.stops_up[0][0] <= last:
            return self.stop_orders[self.stops_up[0][1]]
        if self.stops_down and -self.stops_down[0][0] >= last:
            return self.stop_orders[self.stops_down[0][1]]
        return None

    # ---------------------------------------------------------------------- queries
    def levels(self, side: int, depth: int = 0) -> list[Level]:
        """Levels best first; ``depth`` 0 means all of them."""
        if side == BUY:
            prices = [-p for p in (self.bids.islice(0, depth) if depth else self.bids)]
            return [self.bid_levels[p] for p in prices]
        prices = list(self.asks.islice(0, depth) if depth else self.asks)
        return [self.ask_levels[p] for p in prices]

    def iter_levels(self, side: int) -> Iterator[Level]:
        """Levels best first, lazily: a walk that stops early touches only what it reads."""
        if side == BUY:
            bid_levels = self.bid_levels
            return (bid_levels[-p] for p in self.bids)
        ask_levels = self.ask_levels
        return (ask_levels[p] for p in self.asks)

    def level_total(self, side: int, price: int) -> int:
        level = (self.bid_levels if side == BUY else self.ask_levels).get(price)
        return level.total if level else 0

    def orders_in_priority(self) -> list[Order]:
        """Every live order, bids then asks, each side best price first and FIFO within."""
        out: list[Order] = []
        for side in (BUY, SELL):
            for level in self.iter_levels(side):
                out.extend(level.live())
        return out

    # ------------------------------------------------------------------- invariants
    def validate(self) -> None:
        """Raise AssertionError if any book invariant is broken."""
        for side, ladder, levels, sign in (
            (BUY, self.bids, self.bid_levels, -1),
            (SELL, self.asks, self.ask_levels, 1),
        ):
            prices = {sign * p for p in ladder}
            _check(prices == set(levels), f"{self.symbol}: ladder and levels disagree")
            _check(len(prices) == len(ladder), f"{self.symbol}: duplicate ladder price")
            for price, level in levels.items():
                live = level.live()
                _check(level.count == len(live) > 0, f"{self.symbol} {price}: count {level.count}")
                _check(
                    level.total == sum(o.shown if o.display else o.leaves for o in live),
                    f"{self.symbol} {price}: total {level.total} != sum of visible leaves",
                )
                for o in live:
                    _check(o.side == side and o.price == price, f"order {o.id} on wrong level")
                    _check(o.leaves > 0, f"order {o.id} rests with no quantity")
                    _check(
                        not o.display or 0 < o.shown <= min(o.display, o.leaves),
                        f"iceberg {o.id} shows {o.shown}",
                    )
        bid, ask = self.bid, self.ask
        _check(bid == (-self.bids[0] if self.bids else 0), f"{self.symbol}: stale best bid")
        _check(ask == (self.asks[0] if self.asks else 0), f"{self.symbol}: stale best ask")
        _check(not (bid and ask and bid >= ask), f"{self.symbol}: crossed book {bid} >= {ask}")
        stops = self.stop_orders.values()
        keys = sorted([(stop_of(o), o.id) for o in stops if rises(o)]) + sorted(
            [(-stop_of(o), o.id) for o in stops if not rises(o)]
        )
        _check(keys == list(self.stops_up) + list(self.stops_down), f"{self.symbol}: stops")
        trails = sorted([(o.peak, o.id) for o in stops if o.peak and o.side == BUY]) + sorted(
            [(o.peak, o.id) for o in stops if o.peak and o.side == SELL]
        )
        _check(trails == list(self.trail_up) + list(self.trail_down), f"{self.symbol}: trails")
        for o in stops:
            _check(o.waiting and not o.resting, f"stop order {o.id} not waiting")
            _check(not o.peak or o.trail > 0, f"stop order {o.id} follows with no distance")
            _check(
                not o.peak or (o.peak <= self.last if o.side == BUY else o.peak >= self.last),
                f"trailing stop {o.id} lags the last price",
            )
        _check(self.due_stop() is None, f"{self.symbol}: a stop the last price reached waits")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(message)

"""The leanest engine we could write in Python: the ceiling of the engine-core benchmark.

It runs the mixed workload's commands (limit GTC/IOC orders, cancels by order id, deposits)
with the engine's rules and the same work per command that cannot be left out of a real
exchange: price-time priority on a sortedcontainers ladder, funds locked on acceptance and
settled on every fill with maker/taker fees, an execution report per order event, an index of
open orders by id and by account, and the per-batch market data (trades, changed levels).

Everything that can be cut for speed is cut: orders are plain lists and reports plain tuples
(shaped like the wire's tagged arrays), there is no validation beyond what the stream needs, no
reject reasons, no closed-order or fill history, no recent-trade memory for the recorder, and
self-trade prevention is cancel-newest only. It is not an engine to run; it answers "how fast
can Python do this work at all on this machine", measured on the same stream in the same
process as ``engine.core`` (``python -m bench engine`` prints both and their ratio).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from sortedcontainers import SortedList

from protocol.config import Exchange, MarketSpec
from protocol.messages import Cancel, Deposit, NewOrder

BUY, GTC = 1, 1
# fields of an order list
ID, ACCT, SIDE, PRICE, QTY, LEAVES, CUM, LOCKED, LIVE, ORIGIN = range(10)
# fields of a level list
ORDERS, TOTAL, COUNT = range(3)
REPORT, REPORTS, REJECTED = 100, 101, 102  # the wire tags of ExecReport, Executions, Rejected


class LeanBook:
    __slots__ = ("spec", "ba", "qa", "bids", "asks", "bid_levels", "ask_levels", "bid", "ask",
                 "dirty_bids", "dirty_asks", "trades", "next_trade_id")  # fmt: skip

    def __init__(self, spec: MarketSpec, base_col: int, quote_col: int) -> None:
        self.spec, self.ba, self.qa = spec, base_col, quote_col
        self.bids: SortedList = SortedList()  # negated prices
        self.asks: SortedList = SortedList()
        self.bid_levels: dict[int, list] = {}
        self.ask_levels: dict[int, list] = {}
        self.bid = self.ask = 0
        self.dirty_bids: set[int] = set()
        self.dirty_asks: set[int] = set()
        self.trades: list[tuple] = []
        self.next_trade_id = 1

    def drop(self, side: int, price: int) -> None:
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


class LeanEngine:
    def __init__(self, exchange: Exchange) -> None:
        self.index = {a: i for i, a in enumerate(exchange.assets)}
        self.width = 2 * len(self.index)
        self.fee_account = exchange.engine.fee_account
        self.accounts: dict[int, list[int]] = {self.fee_account: [0] * self.width}
        self.books = {
            s: LeanBook(m, 2 * self.index[m.base], 2 * self.index[m.quote])
            for s, m in exchange.markets.items()
        }
        self.orders: dict[int, list] = {}
        self.by_account: dict[int, dict[int, list]] = {}
        self.seq = 0
        self.next_order_id = 1
        self.outbox: dict[bytes, list] = {}
        self.dirty: set[LeanBook] = set()
        self.handlers: dict[type, Any] = {
            NewOrder: self.new_order,
            Cancel: self.cancel,
            Deposit: self.deposit,
        }

    def deposit(self, c: Deposit, ts: int, origin: bytes) -> int:
        self.seq += 1
        row = self.accounts.get(c.account)
        if row is None:
            row = self.accounts[c.account] = [0] * self.width
        row[2 * self.index[c.asset]] += c.amount
        return self.seq

    # fmt: off
    def new_order(self, c: NewOrder, ts: int, origin: bytes) -> int:
        self.seq = seq = self.seq + 1
        book = self.books[c.market]
        spec = book.spec
        side, price, qty, acct = c.side, c.price, c.qty, c.account
        if side == BUY:
            need, col = price * qty * spec.tick_lot_quote, book.qa
        else:
            need, col = qty * spec.lot_units, book.ba
        row = self.accounts[acct]
        if row[col] < need:
            self.outbox.setdefault(origin, []).append((REJECTED, c.req, 2001, "funds"))
            return seq
        row[col] -= need
        row[col + 1] += need
        self.next_order_id = (oid := self.next_order_id) + 1
        o = [oid, acct, side, price, qty, qty, 0, need, False, origin]
        reports: list[tuple] = [(REPORT, c.req, acct, oid, "", c.market, side, 1, 1, price, qty,
                                 0, 0, 0, qty, 0, 0, 0, 0, 0, seq, ts, 0)]
        if (book.ask and book.ask <= price) if side == BUY else book.bid >= price:
            self._match(book, o, reports, seq, ts, c)
        if o[LEAVES] and c.tif == GTC:
            self._rest(book, o)
        else:
            if o[LEAVES]:
                reports.append((REPORT, c.req, acct, oid, "", c.market, side, 5, 5, price, qty, 0,
                                0, o[CUM], 0, 0, 0, 0, 0, 2, seq, ts, 0))
            if o[LOCKED]:
                self._release(book, o)
        self.outbox.setdefault(origin, []).append((REPORTS, c.req, reports))
        return seq

    def _release(self, book: LeanBook, o: list) -> None:
        col = book.qa if o[SIDE] == BUY else book.ba
        row = self.accounts[o[ACCT]]
        row[col + 1] -= o[LOCKED]
        row[col] += o[LOCKED]
        o[LOCKED] = 0

    def _rest(self, book: LeanBook, o: list) -> None:
        price = o[PRICE]
        if o[SIDE] == BUY:
            level = book.bid_levels.get(price)
            if level is None:
                level = book.bid_levels[price] = [deque(), 0, 0]
                book.bids.add(-price)
                book.bid = max(book.bid, price)
            book.dirty_bids.add(price)
        else:
            level = book.ask_levels.get(price)
            if level is None:
                level = book.ask_levels[price] = [deque(), 0, 0]
                book.asks.add(price)
                book.ask = min(book.ask, price) if book.ask else price
            book.dirty_asks.add(price)
        level[ORDERS].append(o)
        level[TOTAL] += o[LEAVES]
        level[COUNT] += 1
        o[LIVE] = True
        self.dirty.add(book)
        oid = o[ID]
        self.orders[oid] = o
        mine = self.by_account.get(o[ACCT])
        if mine is None:
            mine = self.by_account[o[ACCT]] = {}
        mine[oid] = o

    def _match(self, book: LeanBook, t: list, reports: list, seq: int, ts: int,
               c: NewOrder) -> None:
        spec = book.spec
        tlq, lu, ba, qa = spec.tick_lot_quote, spec.lot_units, book.ba, book.qa
        accounts, outbox, trades, symbol = self.accounts, self.outbox, book.trades, c.market
        fees, t_row = accounts[self.fee_account], accounts[t[ACCT]]
        buys = t[SIDE] == BUY
        if buys:
            levels, dirty = book.ask_levels, book.dirty_asks
            b_ppm, s_ppm = spec.taker_ppm, spec.maker_ppm
        else:
            levels, dirty = book.bid_levels, book.dirty_bids
            b_ppm, s_ppm = spec.maker_ppm, spec.taker_ppm
        limit = t[PRICE]
        self.dirty.add(book)
        while t[LEAVES]:
            px = book.ask if buys else book.bid
            if not px or (px > limit if buys else px < limit):
                break
            level = levels[px]
            dirty.add(px)
            q = level[ORDERS]
            while t[LEAVES] and level[COUNT]:
                m = q[0]
                if not m[LIVE]:
                    q.popleft()
                    continue
                if m[ACCT] == t[ACCT]:  # self-trade prevention, cancel-newest: stop here
                    t[LEAVES] = 0
                    break
                take = t[LEAVES] if t[LEAVES] < m[LEAVES] else m[LEAVES]
                notional, base = px * take * tlq, take * lu
                if buys:
                    b_row, s_row, buyer, seller = t_row, accounts[m[ACCT]], t, m
                else:
                    b_row, s_row, buyer, seller = accounts[m[ACCT]], t_row, m, t
                fee_b, fee_q = base * b_ppm // 1_000_000, notional * s_ppm // 1_000_000
                b_row[qa + 1] -= notional
                b_row[ba] += base - fee_b
                s_row[ba + 1] -= base
                s_row[qa] += notional - fee_q
                fees[ba] += fee_b
                fees[qa] += fee_q
                buyer[LOCKED] -= notional
                seller[LOCKED] -= base
                book.next_trade_id = (tid := book.next_trade_id) + 1
                trades.append((tid, px, take, t[SIDE], ts, seq))
                level[TOTAL] -= take
                m[LEAVES] -= take
                m[CUM] += take
                t[LEAVES] -= take
                t[CUM] += take
                if not m[LEAVES]:
                    q.popleft()
                    level[COUNT] -= 1
                    m[LIVE] = False
                    if m[LOCKED]:
                        self._release(book, m)
                    del self.orders[m[ID]]
                    del self.by_account[m[ACCT]][m[ID]]
                outbox.setdefault(m[ORIGIN], []).append((
                    REPORT, 0, m[ACCT], m[ID], "", symbol, m[SIDE], 2 if m[LEAVES] else 3,
                    2 if m[LEAVES] else 3, m[PRICE], m[QTY], px, take, m[CUM], m[LEAVES], 0,
                    fee_q if buys else fee_b, 1, tid, 0, seq, ts, 0))
                reports.append((
                    REPORT, c.req, t[ACCT], t[ID], "", symbol, t[SIDE], 2 if t[LEAVES] else 3,
                    2 if t[LEAVES] else 3, t[PRICE], t[QTY], px, take, t[CUM], t[LEAVES], 0,
                    fee_b if buys else fee_q, 2, tid, 0, seq, ts, 0))
            if not level[COUNT]:
                book.drop(2 if buys else BUY, px)

    def cancel(self, c: Cancel, ts: int, origin: bytes) -> int:
        self.seq = seq = self.seq + 1
        o = self.orders.get(c.order_id)
        if o is None or o[ACCT] != c.account:
            self.outbox.setdefault(origin, []).append((REJECTED, c.req, 3001, "unknown order"))
            return seq
        book = self.books[c.market]
        price = o[PRICE]
        o[LIVE] = False
        if o[SIDE] == BUY:
            level = book.bid_levels[price]
            book.dirty_bids.add(price)
        else:
            level = book.ask_levels[price]
            book.dirty_asks.add(price)
        level[TOTAL] -= o[LEAVES]
        level[COUNT] -= 1
        if not level[COUNT]:
            book.drop(o[SIDE], price)
        elif len(level[ORDERS]) > 2 * level[COUNT] + 32:
            level[ORDERS] = deque(x for x in level[ORDERS] if x[LIVE])
        self.dirty.add(book)
        self._release(book, o)
        oid = o[ID]
        del self.orders[oid]
        del self.by_account[o[ACCT]][oid]
        self.outbox.setdefault(origin, []).append((REPORTS, c.req, [(
            REPORT, c.req, o[ACCT], oid, "", c.market, o[SIDE], 4, 4, price, o[QTY], 0, 0,
            o[CUM], 0, 0, 0, 0, 0, 1, seq, ts, 0)]))
        return seq
    # fmt: on

    def market_data(self, ts: int) -> list[tuple]:
        """Trades and changed levels (price, total) per dirty book since the last call."""
        msgs: list[tuple] = []
        for b in self.dirty:
            bids = [(p, b.bid_levels[p][TOTAL] if p in b.bid_levels else 0)
                    for p in sorted(b.dirty_bids, reverse=True)]  # fmt: skip
            asks = [(p, b.ask_levels[p][TOTAL] if p in b.ask_levels else 0)
                    for p in sorted(b.dirty_asks)]  # fmt: skip
            msgs.append((b.trades, bids, asks, ts))
            b.trades = []
            b.dirty_bids.clear()
            b.dirty_asks.clear()
        self.dirty.clear()
        return msgs

    def resting(self) -> dict[int, int]:
        """Open order id -> leaves, for the benchmark's cross-check against the engine."""
        return {oid: o[LEAVES] for oid, o in self.orders.items()}

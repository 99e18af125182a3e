"""Everything about the engine that only reads: queries, market data, state, invariants.

A mixin of ``engine.core.Engine``, kept apart so the order-handling hot path stays short.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import TYPE_CHECKING

import msgspec

from engine.book import RECORD_FIELDS, Book, Order, OrderRecord, new_order
from engine.codes import BUY, NEWEST, S_PART, SELL
from protocol.config import MAX_INT
from protocol.enums import RejectCode as R
from protocol.messages import (
    AssetAudit,
    AuditReply,
    AuditRequest,
    Balance,
    Balances,
    BalancesRequest,
    Bbo,
    BookSnapshot,
    Depth,
    ExecReport,
    FillsReply,
    FillsRequest,
    OpenOrders,
    OpenOrdersRequest,
    OrderHistory,
    OrderHistoryRequest,
    OrderInfo,
    OrderState,
    OrderStatusRequest,
    Ping,
    Pong,
    QuoteReply,
    QuoteRequest,
    SnapshotRequest,
    Trades,
    TradesReply,
    TradesRequest,
)

if TYPE_CHECKING:
    from collections import defaultdict, deque

    from engine.ledger import Ledger
    from protocol.config import Exchange


class EngineState(msgspec.Struct, array_like=True):
    """Everything that defines the engine, in a canonical order (snapshots and state_hash).

    Fields are only appended, with defaults, so a snapshot written before a field existed
    loads (as that default)."""

    seq: int
    next_order_id: int
    fee_account: int
    assets: list[str]
    totals: list[int]
    accounts: list[tuple[int, list[int]]]
    books: list[tuple[str, int, list[OrderRecord]]]
    last_prices: list[int] = []  # per market, in books' order: its last trade price (0: none)
    # (order id, trigger, stop price, expiry) of the resting orders above that have any
    order_extras: list[tuple[int, int, int, int]] = []
    # stop orders waiting for their stop, by order id: (record, trigger, stop price, expiry)
    waiting: list[tuple[OrderRecord, int, int, int]] = []
    # (order id, iceberg display, shown, trailing bps, peak, list link) of the open orders
    # above (resting and waiting) that have any
    order_more: list[tuple[int, int, int, int, int, int]] = []


class EngineViews:
    """Read-only handlers and state access, mixed into Engine."""

    if TYPE_CHECKING:  # what Engine provides; declared for the type checker only
        exchange: Exchange
        epoch: int
        fee_account: int
        ledger: Ledger
        books: dict[str, Book]
        orders: dict[int, Order]
        cids: dict[tuple[int, str], Order]
        by_account: dict[int, dict[int, Order]]
        closed: dict[int, Order]
        closed_ids: deque[int]
        closed_cids: dict[tuple[int, str], Order]
        history: dict[int, deque[int]]
        fills: dict[int, deque[ExecReport]]
        seq: int
        next_order_id: int
        outbox: defaultdict[bytes, list]
        dirty: set[Book]

        def _reject(self, origin: bytes, req: int, code: int, reason: str, seq: int = 0,
                    order_id: int = 0, cid: str = "") -> int: ...  # fmt: skip
        def _find(self, acct: int, order_id: int, cid: str) -> Order | None: ...
        def _rest(self, book: Book, o: Order) -> None: ...
        def _pend(self, book: Book, o: Order) -> None: ...
        def _walk(self, book: Book, side: int, acct: int, stp: int, qty: int, budget: int,
                  limit: int) -> tuple[int, int, int]: ...  # fmt: skip

    # -------------------------------------------------------------------------- reads
    def _on_status(self, c: OrderStatusRequest, ts: int, origin: bytes) -> int:
        o = self._find(c.account, c.order_id, c.client_order_id)
        if o is None and c.order_id:
            o = self.closed.get(c.order_id)
            o = o if o is not None and o.account == c.account else None
        if o is None and c.client_order_id:
            o = self.closed_cids.get((c.account, c.client_order_id))
        if o is None or (c.market and c.market != o.market):
            return self._reject(
                origin,
                c.req,
                R.UNKNOWN_ORDER,
                "order is unknown to this account",
                0,
                c.order_id,
                c.client_order_id,
            )
        self.outbox[origin].append(OrderInfo(c.req, _state(o)))
        return 0

    def _on_open_orders(self, c: OpenOrdersRequest, ts: int, origin: bytes) -> int:
        if c.market and c.market not in self.books:
            return self._reject(origin, c.req, R.UNKNOWN_MARKET, f"unknown market {c.market!r}")
        mine = self.by_account.get(c.account, {})
        orders = [_state(o) for o in mine.values() if not c.market or o.market == c.market]
        self.outbox[origin].append(OpenOrders(c.req, orders))
        return 0

    def _on_balances(self, c: BalancesRequest, ts: int, origin: bytes) -> int:
        row = self.ledger.accounts.get(c.account) or [0] * (2 * len(self.ledger.assets))
        balances = [
            Balance(a, row[2 * i], row[2 * i + 1]) for i, a in enumerate(self.ledger.assets)
        ]
        self.outbox[origin].append(Balances(c.req, c.account, balances))
        return 0

    def _on_quote(self, c: QuoteRequest, ts: int, origin: bytes) -> int:
        book = self.books.get(c.market)
        if book is None:
            return self._reject(origin, c.req, R.UNKNOWN_MARKET, f"unknown market {c.market!r}")
        if (
            c.side not in (BUY, SELL)
            or c.qty < 0
            or c.quote_qty < 0
            or bool(c.qty) == bool(c.quote_qty)
            or (c.quote_qty and c.side != BUY)
        ):
            return self._reject(
                origin,
                c.req,
                R.INVALID_QUANTITY,
                "give side and either qty, or quote_qty for a buy",
            )
        limit = MAX_INT if c.side == BUY else 0
        lots, cost, worst = self._walk(book, c.side, c.account, NEWEST, c.qty, c.quote_qty, limit)
        if c.qty:
            complete = lots == c.qty
        else:  # a budget is complete when it, not the book, is what ran out
            available, _, _ = self._walk(book, c.side, c.account, NEWEST, 0, 0, limit)
            complete = 0 < lots < available
        self.outbox[origin].append(QuoteReply(c.req, c.market, c.side, lots, cost, worst, complete))
        return 0

    def _on_snapshot(self, c: SnapshotRequest, ts: int, origin: bytes) -> int:
        book = self.books.get(c.market)
        if book is None:
            return self._reject(origin, c.req, R.UNKNOWN_MARKET, f"unknown market {c.market!r}")
        self.outbox[origin].append(self.book_snapshot(book, c.req, max(c.depth, 0)))
        return 0

    def book_snapshot(self, book: Book, req: int = 0, depth: int = 0) -> BookSnapshot:
        bids = [(lv.price, lv.total, lv.count) for lv in book.levels(BUY, depth)]
        asks = [(lv.price, lv.total, lv.count) for lv in book.levels(SELL, depth)]
        return BookSnapshot(
            req, book.symbol, self.epoch, book.depth_seq, bids, asks, book.next_trade_id - 1
        )

    def _on_fills(self, c: FillsRequest, ts: int, origin: bytes) -> int:
        mine = self.fills.get(c.account, ())
        fills = [r for r in mine if not c.market or r.market == c.market]
        self.outbox[origin].append(FillsReply(c.req, fills[-max(1, min(c.limit, 1000)) :]))
        return 0

    def _on_history(self, c: OrderHistoryRequest, ts: int, origin: bytes) -> int:
        if c.market and c.market not in self.books:
            return self._reject(origin, c.req, R.UNKNOWN_MARKET, f"unknown market {c.market!r}")
        closed, limit = self.closed, max(1, min(c.limit, 1000))
        found: list[OrderState] = []
        for oid in reversed(self.history.get(c.account, ())):  # newest first, then reversed
            o = closed.get(oid)  # None once the global bound has forgotten it
            if o is not None and (not c.market or o.market == c.market):
                found.append(_state(o))
                if len(found) == limit:
                    break
        found.reverse()
        self.outbox[origin].append(OrderHistory(c.req, found))
        return 0

    def _on_trades(self, c: TradesRequest, ts: int, origin: bytes) -> int:
        book = self.books.get(c.market)
        if book is None:
            return self._reject(origin, c.req, R.UNKNOWN_MARKET, f"unknown market {c.market!r}")
        recent = book.recent  # (trade, maker account, taker account), oldest first
        oldest = recent[0][0].trade_id if recent else 0
        limit = max(1, min(c.limit, 100_000))
        start = max(0, c.from_id - oldest) if recent else 0
        rows = _window(recent, start, limit)
        self.outbox[origin].append(
            TradesReply(c.req, c.market, [r[0] for r in rows], oldest, [(r[1], r[2]) for r in rows])
        )
        return 0

    def _on_audit(self, c: AuditRequest, ts: int, origin: bytes) -> int:
        """Rule 3 checked live: every account's balances summed now against the running
        deposits-minus-withdrawals, and the fee account. O(accounts): an operator's command."""
        ledger = self.ledger
        available, locked = ledger.sums()
        fees = ledger.accounts.get(self.fee_account) or [0] * (2 * len(ledger.assets))
        assets = [
            AssetAudit(a, available[i], locked[i], ledger.totals[i], fees[2 * i], fees[2 * i + 1])
            for i, a in enumerate(ledger.assets)
        ]
        self.outbox[origin].append(
            AuditReply(c.req, self.seq, self.fee_account, len(ledger.accounts), assets)
        )
        return 0

    def _on_ping(self, c: Ping, ts: int, origin: bytes) -> int:
        self.outbox[origin].append(Pong(c.req, self.seq, self.epoch, c.mark))
        return 0

    # -------------------------------------------------------------------- market data
    def market_data(self, ts: int) -> list[tuple[bytes, object]]:
        """Per-market Trades, Depth and Bbo messages for everything since the last call."""
        msgs: list[tuple[bytes, object]] = []
        for book in self.dirty:
            sym = book.symbol
            topic = sym.encode()
            if book.trades:
                book.trade_seq += 1
                msgs.append((b"T." + topic, Trades(sym, self.epoch, book.trade_seq, book.trades)))
                book.trades = []
            if book.dirty_bids or book.dirty_asks:
                book.depth_seq += 1
                bids, asks = book.changes()
                msgs.append((b"D." + topic, Depth(sym, self.epoch, book.depth_seq, bids, asks, ts)))
            bid, ask = book.bid, book.ask
            bbo = (bid, book.level_total(BUY, bid), ask, book.level_total(SELL, ask))
            if bbo != book.last_bbo:
                book.last_bbo = bbo
                book.bbo_seq += 1
                msgs.append((b"B." + topic, Bbo(sym, self.epoch, book.bbo_seq, *bbo, ts)))
        self.dirty.clear()
        return msgs

    def discard_output(self) -> None:
        """Drop pending replies and market-data bookkeeping (journal replay has no audience)."""
        self.outbox.clear()
        for book in self.dirty:
            book.forget_changes()
        self.dirty.clear()

    # ------------------------------------------------------------ state and invariants
    def state(self) -> EngineState:
        accounts = sorted((a, list(r)) for a, r in self.ledger.accounts.items())
        books = [
            (b.symbol, b.next_trade_id, [_record(o) for o in b.orders_in_priority()])
            for b in self.books.values()
        ]
        lasts = [b.last for b in self.books.values()]
        extras = [
            (o.id, o.trigger, o.stop_price, o.expire)
            for b in self.books.values()
            for o in b.orders_in_priority()
            if o.trigger or o.stop_price or o.expire
        ]
        waiting = sorted(
            [
                (_record(o), o.trigger, o.stop_price, o.expire)
                for b in self.books.values()
                for o in b.stop_orders.values()
            ],
            key=lambda w: w[0].id,
        )
        more = sorted(
            (o.id, o.display, o.shown, o.trail, o.peak, o.link)
            for o in self.orders.values()
            if o.display or o.trail or o.link
        )
        return EngineState(
            self.seq,
            self.next_order_id,
            self.fee_account,
            self.ledger.assets,
            list(self.ledger.totals),
            accounts,
            books,
            lasts,
            extras,
            waiting,
            more,
        )

    def state_hash(self) -> str:
        return hashlib.blake2b(msgspec.msgpack.encode(self.state()), digest_size=16).hexdigest()

    def restore(self, st: EngineState) -> None:
        """Load a state produced by ``state()`` into this (fresh) engine."""
        if st.assets != self.ledger.assets or st.fee_account != self.fee_account:
            raise ValueError("snapshot was taken with a different asset list or fee account")
        self.seq, self.next_order_id = st.seq, st.next_order_id
        self.ledger.totals = list(st.totals)
        self.ledger.accounts = {a: list(r) for a, r in st.accounts}
        extras = {oid: rest for oid, *rest in st.order_extras}
        more = {oid: rest for oid, *rest in st.order_more}
        for symbol, next_trade_id, orders in st.books:
            book = self._book_of(symbol)
            book.next_trade_id = next_trade_id
            for rec in orders:
                o = new_order(*msgspec.structs.astuple(rec))
                if o.id in extras:
                    o.trigger, o.stop_price, o.expire = extras[o.id]
                shown = _more(o, more)
                self._rest(book, o)
                if o.display:
                    book.show(o, shown)  # rest() showed a whole peak; it had shown this
            book.forget_changes()
        for book, last in zip(self.books.values(), st.last_prices, strict=False):
            book.last = last
        for rec, trigger, stop_price, expire in st.waiting:
            book = self._book_of(rec.market)
            o = new_order(*msgspec.structs.astuple(rec))
            o.trigger, o.stop_price, o.expire, o.waiting = trigger, stop_price, expire, True
            o.shown = _more(o, more)
            self._pend(book, o)
        self.dirty.clear()

    def _book_of(self, symbol: str) -> Book:
        book = self.books.get(symbol)
        if book is None:
            raise ValueError(f"snapshot has market {symbol!r}, config does not")
        return book

    def validate(self) -> None:
        """Raise AssertionError if any invariant of any book or the ledger is broken."""
        locked: dict[tuple[int, int], int] = {}
        resting = 0
        for book in self.books.values():
            book.validate()
            for o in book.orders_in_priority():
                resting += 1
                _ensure(self.orders.get(o.id) is o, f"resting order {o.id} not indexed")
                col = (book.quote_a if o.side == BUY else book.base_a) // 2
                locked[(o.account, col)] = locked.get((o.account, col), 0) + o.locked
                spec = book.spec
                if o.side == BUY:
                    _ensure(
                        o.locked >= o.leaves * o.price * spec.tick_lot_quote,
                        f"order {o.id} holds too little quote",
                    )
                else:
                    _ensure(o.locked == o.leaves * spec.lot_units, f"order {o.id} base lock")
            for o in book.stop_orders.values():
                resting += 1
                _ensure(self.orders.get(o.id) is o, f"waiting stop order {o.id} not indexed")
                col = (book.quote_a if o.side == BUY else book.base_a) // 2
                locked[(o.account, col)] = locked.get((o.account, col), 0) + o.locked
                _ensure(o.leaves > 0, f"stop order {o.id} has no quantity")
                _ensure(
                    o.locked > 0 or (o.link in self.orders and self.orders[o.link].resting),
                    f"stop order {o.id} holds nothing (and is not a list's)",
                )
        _ensure(resting == len(self.orders), "order index holds orders not in any book")
        _ensure(sum(len(d) for d in self.by_account.values()) == resting, "account index")
        _ensure(len(self.cids) == sum(1 for o in self.orders.values() if o.client_id), "cids")
        _ensure(all(self.closed.get(o.id) is o for o in self.closed_cids.values()), "closed cids")
        self.ledger.validate(locked)


def _ensure(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(message)


def _more(o: Order, more: dict[int, list[int]]) -> int:
    """Set an order's fields appended with icebergs, trailing stops and lists from a snapshot's
    ``order_more``; returns what an iceberg showed."""
    if o.id not in more:
        return 0
    o.display, shown, o.trail, o.peak, o.link = more[o.id]
    return shown


def _record(o: Order) -> OrderRecord:
    return OrderRecord(*[getattr(o, f) for f in RECORD_FIELDS])


def _state(o: Order) -> OrderState:
    leaves = o.leaves if o.status <= S_PART and not o.quote_qty else 0  # as in reports
    return OrderState(
        o.id,
        o.client_id,
        o.account,
        o.market,
        o.side,
        o.type,
        o.tif,
        o.status,
        o.price,
        o.qty,
        o.cum,
        leaves,
        o.cum_quote,
        o.quote_qty,
        o.post_only,
        o.created,
        o.updated,
        o.trigger,
        o.stop_price,
        o.waiting,
        o.expire,
        o.display,
        o.trail,
        o.peak,
        min(o.id, o.link) if o.link else 0,
    )


def _window(recent: deque, start: int, limit: int) -> list:
    """``recent[start:start + limit]``, reached from whichever end is nearer (a deque cannot
    jump to an index: a request for the newest trades must not walk 200,000 old ones)."""
    n = len(recent)
    if start >= n:
        return []
    if n - start > start:
        return list(itertools.islice(recent, start, start + limit))
    tail = list(itertools.islice(reversed(recent), n - start))
    tail.reverse()
    return tail[:limit]

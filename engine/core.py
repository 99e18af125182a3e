"""The matching and ledger state machine: pure, deterministic, no I/O.

``Engine.apply(cmd, ts, origin)`` is the only way state changes. Write commands (NewOrder,
Cancel, Replace, MassCancel, Deposit, Withdraw) take the next global sequence number - also when
they are rejected, since the journal records inputs, not outcomes - and return it; read
commands return 0. Replies and events are appended to ``self.outbox[origin]``; the process
shell sends them only after the batch is journaled. The core never reads the clock:
``ts`` comes with the command, so replaying the journal rebuilds exactly the same state
(``state_hash()``).

Matching rules:
- Price-time priority; a fill prints at the resting (maker) order's price.
- Limit orders: GTC rests, IOC expires its remainder, FOK fills completely or expires without
  touching the book. Post-only (GTC only) is rejected if it would take liquidity.
- Market orders are IOC: sells and buys by base quantity, or buys spending a quote amount. A
  market buy by quantity locks exactly what the book says it will cost (the engine is single
  threaded, so the walk and the execution see the same book).
- Funds are locked on acceptance (buy: price x qty in quote; sell: qty in base), consumed by
  fills, released on cancel/expiry/completion. Fees are charged on the asset received (buyer in
  base, seller in quote), rounded down, and credited to the fee account.
- Self-trade prevention (default cancel-newest): the incoming order's remainder is cancelled;
  cancel-oldest cancels the resting order and goes on; cancel-both does both.
- Cancel-replace: ``qty`` is the new total. Same price and a smaller size keeps queue position;
  a new price or a larger size loses it (the order may then trade at once, like a new order).
  The order id stays; the client order id may change. A rejected replace leaves the order as
  it was.
- Client order ids are unique among an account's open orders.
- Accounts only ever see their own orders: another account's order id is "unknown order".
- A write command with a ``deadline`` (engine time, ns) that its batch timestamp has passed is
  rejected (DEADLINE_PASSED) without effect: a gateway that gave up waiting and the engine agree.

Advanced orders (protocol.enums.TriggerKind, TimeInForce.GTD):
- A stop order (``trigger`` STOP_LOSS or TAKE_PROFIT, ``stop_price``) carries a limit or market
  order. It waits outside the book (not in depth or market data; in its owner's open orders,
  ``waiting``) until the market's last trade price reaches its stop: a stop-loss buy and a
  take-profit sell when the last price rises to the stop or above, a stop-loss sell and a
  take-profit buy when it falls to it or below. One whose stop the last price has already
  reached is rejected (WOULD_TRIGGER_IMMEDIATELY, as Binance); before a market's first trade
  there is no last price and any stop is accepted.
- Its funds are locked when it is accepted, as its order would lock them: a limit at its price,
  a sell its quantity, a market buy by amount its amount. A market buy by quantity carries a
  protection price ``STOP_COLLAR_BPS`` (10%) through its stop and locks quantity x that price;
  once triggered it trades like a market order up to that price and the rest expires. Cancel,
  replace (price, quantity, stop price) and mass cancel work on a waiting stop; its funds are
  released when it is cancelled or expires.
- Triggering happens inside the command whose trade moved the last price, after that command's
  own order is done: each due stop is reported TRIGGERED (to its owner, unsolicited) and runs as
  a new taker, one at a time, until none is due. Order: those that trigger on a rise first,
  lowest stop first, then those on a fall, highest stop first, oldest first at one stop price
  (the order a price path reaches them in). Each stop triggers once, so a cascade ends; its cost
  is at most the number of waiting stops in that market.
- Good-till-date (``tif`` GTD, ``expire_ts`` engine ns): a GTC order that expires (EXPIRED,
  reason EXPIRE_TIME, to its owner, unsolicited) at the first write command whose batch
  timestamp is at or after its expiry time, before that command runs. The journal holds those
  timestamps, so replay expires the same orders at the same place; the engine process sends
  itself a ``Tick`` (a write that does nothing else) when an expiry time has passed and no
  command came. A stop order may be GTD too: the expiry counts while it waits.
- Iceberg (``display_qty``, a limit GTC/GTD order, 1 lot .. its quantity): its level shows
  (depth, BBO, snapshots) at most ``display_qty`` of it. A taker trades at most what it shows;
  when that is gone it shows the next part (``display_qty`` or what is left) at the back of its
  level, behind everything there, and the same taker may go on to it. It locks its whole size.
  A FOK's or a market buy's walk counts what the matching would reach: behind a taker's own
  order in that level (where self-trade prevention stops it) only the part an iceberg shows.
- Trailing stop (``trailing_bps``, 10..2000, on a stop order): without a stop price it follows
  the last price from its acceptance (which needs one); with one it starts following when the
  last price reaches that (in the stop's usual direction; that does not trigger it). Following,
  a sell keeps the highest last price seen (``peak``) and triggers when the last price falls to
  the peak less ``trailing_bps`` of it (rounded up to a whole tick, at least one); a buy keeps
  the lowest and triggers on a rise to it plus that. The last price is sampled after each taker
  order (the command's own, each triggered stop), as stops are triggered; a stop market buy by
  quantity keeps the protection price of its first trigger price (its activation price, or the
  last price plus the distance). A following stop's size can be replaced, its stop cannot.
- One-cancels-the-other (``NewOrderList``): a post-only GTC limit order and a stop-loss (limit
  or market) of one side and quantity. A sell has limit > last price > stop (a buy the reverse;
  before a market's first trade only limit > stop, or <). The funds are locked once, the larger
  need of the two, held by the limit order; the stop holds none while it waits. A trade of the
  limit order (even partial) cancels the stop (reason LINKED) and a buy then releases what it
  held beyond its own need; the stop's trigger cancels the limit order, and its funds pass to the
  stop, which keeps its need and releases the rest; cancelling either (a user cancel, or
  self-trade prevention's) cancels both; mass cancel cancels both as any two orders; its orders
  cannot be replaced. The list's id is its limit order's id (``OrderState.list_id``).
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import msgspec

from engine.book import Book, Level, Order, new_order, trailed
from engine.codes import (
    BOTH,
    BUY,
    C_DISCONNECT,
    C_FOK,
    C_FUNDS,
    C_IOC,
    C_LINKED,
    C_STP,
    C_TIME,
    C_USER,
    E_CXL,
    E_EXP,
    E_FILL,
    E_NEW,
    E_PART,
    E_REPL,
    E_TRIG,
    FOK,
    GTC,
    GTD,
    IOC,
    LIMIT,
    MAKER,
    MARKET,
    NEWEST,
    OLDEST,
    S_CXL,
    S_EXP,
    S_FILLED,
    S_NEW,
    S_PART,
    SELL,
    STOP_LOSS,
    TAKE_PROFIT,
    TAKER,
)
from engine.ledger import Ledger
from engine.money import fee, lock, release, settle
from engine.views import EngineViews
from protocol.config import MAX_INT, Exchange
from protocol.enums import RejectCode
from protocol.messages import (
    WRITE_COMMANDS,
    AuditRequest,
    BalancesRequest,
    Cancel,
    Deposit,
    ExecReport,
    Executions,
    FillsRequest,
    LedgerReply,
    MassCancel,
    MassCancelReply,
    NewOrder,
    NewOrderList,
    OpenOrdersRequest,
    OrderHistoryRequest,
    OrderStatusRequest,
    Ping,
    Pong,
    QuoteRequest,
    Rejected,
    Replace,
    SnapshotRequest,
    Tick,
    Trade,
    TradesRequest,
    Watch,
    Watching,
    Withdraw,
)

MAX_CLIENT_ID = 64
# The fields _on_new_order and _on_cancel read with one astuple(), in the order NewOrder and
# Cancel declare them.
NEW_ORDER_FIELDS = (
    "req", "account", "market", "side", "type", "tif", "price", "qty", "quote_qty",
    "client_order_id", "post_only", "stp", "deadline", "trigger", "stop_price", "expire_ts",
    "display_qty", "trailing_bps",
)  # fmt: skip
CANCEL_FIELDS = ("req", "account", "market", "order_id", "client_order_id", "reason", "deadline")
astuple = msgspec.structs.astuple
STOP_COLLAR_BPS = 1_000  # a stop market buy by quantity trades up to 10% through its stop
TRAILING_BPS = (10, 2_000)  # a trailing stop's distance, as Binance's TRAILING_DELTA filter
WRITES = frozenset(WRITE_COMMANDS)

R = RejectCode


class Reject(Exception):
    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Engine(EngineViews):
    def __init__(self, exchange: Exchange, epoch: int = 0) -> None:
        self.exchange = exchange
        self.epoch = epoch
        self.fee_account = exchange.engine.fee_account
        self.ledger = Ledger(exchange.assets, self.fee_account)
        self.books: dict[str, Book] = {}
        for symbol, spec in exchange.markets.items():
            book = Book(spec, exchange.engine.recent_trades_kept)
            book.base_a = 2 * self.ledger.index[spec.base]
            book.quote_a = 2 * self.ledger.index[spec.quote]
            self.books[symbol] = book
        self.orders: dict[int, Order] = {}  # open (resting) orders
        self.cids: dict[tuple[int, str], Order] = {}  # (account, client id) -> open order
        self.by_account: dict[int, dict[int, Order]] = {}
        # the newest closed orders, for status queries (not state), oldest first
        self.closed: dict[int, Order] = {}
        self.closed_ids: deque[int] = deque()
        self.closed_cids: dict[tuple[int, str], Order] = {}  # the newest closed one per client id
        self.closed_kept = exchange.engine.closed_orders_kept
        self.history_kept = exchange.engine.history_kept
        self.history: dict[int, deque[int]] = {}  # per account, ids of its newest closed orders
        self.watchers: dict[int, set[bytes]] = {}  # account -> origins that get copies (Watch)
        self.fills_kept = exchange.engine.fills_kept
        self.fills: dict[int, deque[ExecReport]] = {}  # per account, the fill reports themselves
        self.seq = 0
        self.next_order_id = 1
        # replies and events per destination (gateway routing id), sent after the journal write
        self.outbox: defaultdict[bytes, list] = defaultdict(list)
        self.dirty: set[Book] = set()
        # (expiry time, order id) of open GTD orders, earliest first; entries of orders that
        # closed or changed stay until their time comes and are skipped then
        self.expiries: list[tuple[int, int]] = []
        self.handlers: dict[type, Callable[..., int]] = {
            NewOrder: self._on_new_order,
            Cancel: self._on_cancel,
            Replace: self._on_replace,
            MassCancel: self._on_mass_cancel,
            Deposit: self._on_deposit,
            Withdraw: self._on_withdraw,
            OrderStatusRequest: self._on_status,
            OpenOrdersRequest: self._on_open_orders,
            BalancesRequest: self._on_balances,
            QuoteRequest: self._on_quote,
            SnapshotRequest: self._on_snapshot,
            Ping: self._on_ping,
            FillsRequest: self._on_fills,
            TradesRequest: self._on_trades,
            AuditRequest: self._on_audit,
            OrderHistoryRequest: self._on_history,
            Watch: self._on_watch,
            Tick: self._on_tick,
            NewOrderList: self._on_new_list,
        }

    # -------------------------------------------------------------- the surface
    # What the process shell and the journal replay use, and nothing else: apply a command,
    # refuse what never became one, drain what is to be sent.
    def apply(self, cmd: object, ts: int, origin: bytes) -> int:
        """Apply one command; returns its sequence number (0 for reads). While someone
        watches an account (``Watch``), the command's events of watched accounts are copied to
        their watchers right after it, so each watcher sees them in the engine's order."""
        marks = {o: len(msgs) for o, msgs in self.outbox.items()} if self.watchers else None
        if self.expiries and self.expiries[0][0] <= ts and type(cmd) in WRITES:
            self._expire_due(ts)  # GTD orders whose time came go first (reports copied too)
        seq = self.handlers[type(cmd)](cmd, ts, origin)
        if marks is not None and self.watchers:
            self.copy_to_watchers(marks)
        return seq

    def next_expiry(self) -> int:
        """When the earliest open GTD order expires (engine ns), 0 if none: the process sends a
        Tick once that time has passed."""
        return self.expiries[0][0] if self.expiries else 0

    def _on_tick(self, c: Tick, ts: int, origin: bytes) -> int:
        self.seq = seq = self.seq + 1  # apply() expired what was due before this ran
        self.outbox[origin].append(Pong(c.req, seq, self.epoch))
        return seq

    def _expire_due(self, ts: int) -> None:
        """Expire every GTD order whose time has come by ``ts``, earliest first (before the
        write command at ``ts`` runs: its reports carry that command's sequence number)."""
        seq = self.seq + 1
        heap = self.expiries
        while heap and heap[0][0] <= ts:
            at, oid = heapq.heappop(heap)
            o = self.orders.get(oid)
            if o is None or o.expire != at:
                continue  # closed, or replaced into a new object with its own entry
            self._cancel(o, ts, S_EXP)
            self.outbox[o.origin].append(self._report(o, 0, E_EXP, S_EXP, seq, ts, C_TIME))

    def _on_watch(self, c: Watch, ts: int, origin: bytes) -> int:
        if not 0 < c.account <= MAX_INT:
            return self._reject(origin, c.req, R.INVALID_ACCOUNT, "account must be 1..2**63-1")
        mine = self.watchers.get(c.account)
        if c.on:
            if mine is None:
                mine = self.watchers[c.account] = set()
            mine.add(origin)
        elif mine is not None:
            mine.discard(origin)
            if not mine:
                del self.watchers[c.account]
        self.outbox[origin].append(Watching(c.req, c.account, c.on, len(mine or ())))
        return 0

    def unwatch(self, origin: bytes) -> None:
        """``origin`` is gone (the engine could not send to it): it watches nothing now."""
        for account in [a for a, w in self.watchers.items() if origin in w]:
            w = self.watchers[account]
            w.discard(origin)
            if not w:
                del self.watchers[account]

    def copy_to_watchers(self, marks: dict[bytes, int]) -> None:
        """Append, for each watched account, copies of the reports and ledger changes one
        command made (what the outbox got past ``marks``, its lengths before the command) that
        go elsewhere, to its watchers, as unsolicited messages (``req = 0``). Called after each
        command while someone watches, so a watcher sees every order's events in order."""
        watchers = self.watchers
        copies: list[tuple[bytes, Any]] = []
        # Destinations in a fixed order (sorted), not the outbox's insertion order, which
        # earlier copies decide by iterating a set: the same commands must give the same
        # output in every process (replay, the other build, the differential test).
        for origin, msgs in sorted(self.outbox.items()):
            start = marks.get(origin, 0)
            for m in msgs[start:] if start else msgs:
                t = type(m)
                if t is Executions:
                    for r in m.reports:
                        w = watchers.get(r.account)
                        if w:
                            copies += [(o, r) for o in w if o != origin]
                elif t is ExecReport or t is LedgerReply:
                    w = watchers.get(m.account)
                    if w:
                        copies += [(o, m) for o in w if o != origin]
        outbox = self.outbox
        for o, m in copies:
            outbox[o].append(msgspec.structs.replace(m, req=0) if m.req else m)

    def refuse(self, origin: bytes, req: int, code: int, reason: str) -> None:
        """A reply to something that never became a command (a bad frame, an internal error)."""
        self.outbox[origin].append(Rejected(req, code, reason))

    def drain(self) -> list[tuple[bytes, list]]:
        """Everything to send since the last drain, per destination, in order; the outbox is
        empty afterwards."""
        out = list(self.outbox.items())
        self.outbox.clear()
        return out

    def _reject(
        self,
        origin: bytes,
        req: int,
        code: int,
        reason: str,
        seq: int = 0,
        order_id: int = 0,
        cid: str = "",
    ) -> int:
        self.outbox[origin].append(Rejected(req, code, reason, order_id, cid, seq))
        return seq

    def _late(self, origin: bytes, req: int, seq: int, order_id: int = 0, cid: str = "") -> int:
        """A write that reached the engine after its deadline: refused, nothing changed. Decided
        on the batch timestamp, which is journaled, so a replay decides the same."""
        return self._reject(
            origin, req, R.DEADLINE_PASSED, "reached the engine after its deadline; not executed",
            seq, order_id, cid,
        )  # fmt: skip

    # ------------------------------------------------------------------- new orders
    # The hot path. Calls are kept few and messages are built positionally (measured: keyword
    # construction of a 22-field struct costs several times more); formatting is off so each
    # message stays on a couple of lines.
    # fmt: off
    def _on_new_order(self, c: NewOrder, ts: int, origin: bytes) -> int:
        self.seq = seq = self.seq + 1
        # NewOrder's fields in one call (each attribute read costs as much as the tuple);
        # NEW_ORDER_FIELDS names them and a test holds it to the message's declaration.
        (req, acct, market, side, otype, tif, price, qty, quote_qty, cid, post_only, stp,
         deadline, trigger, stop_price, expire, display, trail) = astuple(c)[:18]
        if deadline and ts > deadline:
            return self._late(origin, req, seq, 0, cid)
        book = self.books.get(market)
        try:
            if book is None:
                raise Reject(R.UNKNOWN_MARKET, f"unknown market {market!r}")
            o = self._accept(book, acct, side, otype, tif, price, qty, quote_qty, cid, post_only,
                             stp, ts, origin, trigger, stop_price, expire, display, trail)
        except Reject as r:
            return self._reject(origin, req, r.code, r.reason, seq, 0, cid)
        reports = [ExecReport(req, o.account, o.id, o.client_id, o.market, o.side, E_NEW, S_NEW,
                              o.price, o.qty, 0, 0, 0, 0 if o.quote_qty else o.leaves, 0, 0, 0,
                              0, 0, seq, ts, o.quote_qty, o.type, o.trigger, o.stop_price)]
        executed = False
        if o.waiting:
            self._pend(book, o)
        elif o.type == LIMIT and o.tif != IOC and o.tif != FOK and not _crosses(book, o.side,
                                                                                 o.price):
            self._rest(book, o)  # the common case: a limit order that does not cross
        else:
            self._execute(book, o, reports, seq, ts, req)
            executed = True
        self.outbox[origin].append(Executions(req, reports))
        if executed and book.stop_orders:
            self._trigger(book, seq, ts)  # its trades may have reached waiting stops
        return seq

    def _trigger(self, book: Book, seq: int, ts: int) -> None:
        """Run every stop order the last price has reached, one at a time, in the book's
        order (``Book.due_stop``), each as a new taker; their reports go to their owners.
        Before each, trailing stops follow the last price; a trailing stop whose activation
        price is reached starts following it (it does not trigger then)."""
        book.follow_last()
        o = book.due_stop()
        while o is not None:
            if o.trail and not o.peak:
                book.follow(o, book.last)
            else:
                book.unpend(o)
                self._unindex(o)
                o.waiting = False
                o.updated = ts
                reports = [self._report(o, 0, E_TRIG, S_NEW, seq, ts)]
                if o.link:
                    self._cancel_partner(o, seq, ts, take_funds=True)
                self._execute(book, o, reports, seq, ts, 0)
                self.outbox[o.origin].extend(reports)
                book.follow_last()
            o = book.due_stop()

    def _cancel_partner(self, o: Order, seq: int, ts: int, take_funds: bool = False) -> None:
        """The other order of ``o``'s list, if still open, is cancelled (reason LINKED):
        after a trade of the limit order, or (``take_funds``: its funds pass to ``o`` first)
        when the stop triggers. ``o`` then keeps only what it needs itself."""
        p = self.orders.get(o.link)
        if p is None:
            return
        if take_funds:
            o.locked, p.locked = p.locked, 0
        self._cancel(p, ts)
        self.outbox[p.origin].append(self._report(p, 0, E_CXL, S_CXL, seq, ts, C_LINKED))
        if o.side == BUY:  # (a sell's lock is its quantity, its need, already)
            book = self.books[o.market]
            need = o.price * o.leaves * book.tlq
            if o.locked > need:
                release(self.ledger.accounts[o.account], book.quote_a, o.locked - need)
                o.locked = need

    def _on_new_list(self, c: NewOrderList, ts: int, origin: bytes) -> int:
        """A one-cancels-the-other list: its limit order rests (post-only), its stop-loss
        waits; both lock the list's funds once, held by the limit order (the larger need of
        the two). The reply has both orders' NEW reports; the list's id is the limit order's."""
        self.seq = seq = self.seq + 1
        req = c.req
        if c.deadline and ts > c.deadline:
            return self._late(origin, req, seq, 0, c.limit_client_order_id)
        book = self.books.get(c.market)
        try:
            if book is None:
                raise Reject(R.UNKNOWN_MARKET, f"unknown market {c.market!r}")
            a, b = self._accept_list(book, c, ts, origin)
        except Reject as r:
            return self._reject(origin, req, r.code, r.reason, seq, 0, c.limit_client_order_id)
        self._rest(book, a)
        self._pend(book, b)
        self.outbox[origin].append(Executions(req, [
            self._report(a, req, E_NEW, S_NEW, seq, ts),
            self._report(b, req, E_NEW, S_NEW, seq, ts)]))
        return seq

    def _accept_list(self, book: Book, c: NewOrderList, ts: int, origin: bytes
                     ) -> tuple[Order, Order]:
        """Both orders of a list, checked as new orders are, then against each other; the
        funds are locked once. Nothing changes unless both are accepted."""
        side, last = c.side, book.last
        if c.limit_client_order_id and c.limit_client_order_id == c.stop_client_order_id:
            raise Reject(R.DUPLICATE_CLIENT_ORDER_ID, "the list's two orders need different "
                         "client order ids")
        if side == SELL and not (c.price > c.stop_price and (not last or
                                                            c.price > last > c.stop_price)):
            raise Reject(R.INVALID_ORDER_LIST, "a sell list needs limit price > last price > "
                         "stop price")
        if side == BUY and not (c.price < c.stop_price and (not last or
                                                           c.price < last < c.stop_price)):
            raise Reject(R.INVALID_ORDER_LIST, "a buy list needs limit price < last price < "
                         "stop price")
        first = self.next_order_id
        a = self._accept(book, c.account, side, LIMIT, GTC, c.price, c.qty, 0,
                         c.limit_client_order_id, True, c.stp, ts, origin)
        row = self.ledger.accounts[c.account]  # (the limit order was accepted: it exists)
        col = book.quote_a if side == BUY else book.base_a
        release(row, col, a.locked)  # the stop order is checked against the same funds
        try:
            b = self._accept(book, c.account, side, LIMIT if c.stop_limit_price else MARKET,
                             GTC if c.stop_limit_price else IOC, c.stop_limit_price, c.qty, 0,
                             c.stop_client_order_id, False, c.stp, ts, origin, STOP_LOSS,
                             c.stop_price)
        except Reject:
            self.next_order_id = first  # as if neither had been accepted
            raise
        extra = a.locked - b.locked
        if extra > 0:
            lock(row, col, extra)  # available: the limit order alone was accepted
        else:
            a.locked = b.locked
        b.locked = 0
        a.link, b.link = b.id, a.id
        return a, b

    def _check_stop(self, book: Book, side: int, trigger: int, stop_price: int,
                    trail: int = 0) -> None:
        if not STOP_LOSS <= trigger <= TAKE_PROFIT:
            raise Reject(R.INVALID_ORDER_TYPE, f"trigger must be 0 (none), 1 (stop loss) or 2 "
                         f"(take profit), was {trigger}")
        spec = book.spec
        if trail:
            if not TRAILING_BPS[0] <= trail <= TRAILING_BPS[1]:
                raise Reject(R.INVALID_TRAILING, f"trailing_bps must be {TRAILING_BPS[0]}.."
                             f"{TRAILING_BPS[1]}, was {trail}")
            if not stop_price:
                if not book.last:
                    raise Reject(R.INVALID_TRAILING, "a trailing stop without an activation "
                                 "price follows the last price: the market has none yet")
                return
        if not 0 < stop_price <= book.max_price:
            raise Reject(R.INVALID_STOP_PRICE, f"stop price must be {spec.tick.text}.."
                         f"{spec.price_text(spec.max_price)}, was {_ticks(spec, stop_price)}")
        last = book.last
        if last and ((last >= stop_price) if (trigger == STOP_LOSS) == (side == BUY)
                     else (last <= stop_price)):
            raise Reject(R.WOULD_TRIGGER_IMMEDIATELY, f"order would trigger immediately: last "
                         f"price {spec.price_text(last)}, stop {spec.price_text(stop_price)}")

    def _accept(self, book: Book, acct: int, side: int, otype: int, tif: int, price: int,
                qty: int, quote_qty: int, cid: str, post_only: bool, stp: int, ts: int,
                origin: bytes, trigger: int = 0, stop_price: int = 0, expire: int = 0,
                display: int = 0, trail: int = 0) -> Order:
        """Validate a new order, lock its funds and create it (not yet matched or resting).
        The fields are the command's, unchecked: each rule below checks one, in order, and the
        first that fails names the reject."""
        if not 0 < acct <= MAX_INT or acct == self.fee_account:
            raise Reject(R.INVALID_ACCOUNT, f"account {acct} cannot trade")
        if side != BUY and side != SELL:
            raise Reject(R.INVALID_SIDE, f"side must be 1 (buy) or 2 (sell), was {side}")
        if cid:
            if len(cid) > MAX_CLIENT_ID:
                raise Reject(R.INVALID_CLIENT_ORDER_ID, "client order id longer than 64")
            if (acct, cid) in self.cids:
                raise Reject(R.DUPLICATE_CLIENT_ORDER_ID, f"client order id {cid!r} is open")
        given, stp = stp, stp or NEWEST
        if not NEWEST <= stp <= BOTH:
            raise Reject(R.INVALID_FIELD, f"stp must be 0..3, was {given}")
        if otype != LIMIT:
            if display:
                raise Reject(R.INVALID_DISPLAY_QTY, "only a limit order can be an iceberg")
            return self._accept_market(book, acct, side, otype, tif, price, qty, quote_qty, cid,
                                       post_only, stp, ts, origin, trigger, stop_price, expire,
                                       trail)
        spec = book.spec
        tif = tif or GTC
        if not 0 < price <= book.max_price:
            raise Reject(R.INVALID_PRICE, f"price must be {spec.tick.text}.."
                         f"{spec.price_text(spec.max_price)}, was {_ticks(spec, price)}")
        if not book.min_qty <= qty <= book.max_qty:
            _check_qty(spec, qty)
        if not GTC <= tif <= GTD:
            raise Reject(R.INVALID_TIME_IN_FORCE, f"tif must be 1..4, was {tif}")
        if tif == GTD:
            if expire <= ts:
                raise Reject(R.INVALID_EXPIRE_TIME, "expire_ts must be in the future")
        elif expire:
            raise Reject(R.INVALID_EXPIRE_TIME, "expire_ts is only for GTD orders")
        if quote_qty:
            raise Reject(R.INVALID_QUANTITY, "quote_qty is only for market buys")
        if display:
            if tif != GTC and tif != GTD:
                raise Reject(R.INVALID_TIME_IN_FORCE, "an iceberg must be GTC or GTD")
            if not book.min_qty <= display <= qty:
                raise Reject(R.INVALID_DISPLAY_QTY, f"display_qty must be "
                             f"{spec.qty_text(spec.min_qty)}..{spec.qty_text(qty)} (the order's "
                             f"quantity), was {_lots(spec, display)}")
        if trigger:
            if post_only:
                raise Reject(R.INVALID_ORDER_TYPE, "a stop order cannot be post-only")
            self._check_stop(book, side, trigger, stop_price, trail)
        elif stop_price or trail:
            raise _not_a_stop(stop_price)
        if post_only:
            if tif != GTC and tif != GTD:
                raise Reject(R.INVALID_TIME_IN_FORCE, "post-only orders must be GTC or GTD")
            if _crosses(book, side, price):
                raise Reject(R.POST_ONLY_WOULD_CROSS, "post-only order would take liquidity")
        if side == BUY:
            need, col = price * qty * book.tlq, book.quote_a
        else:
            need, col = qty * book.lu, book.base_a
        row = self.ledger.accounts.get(acct)
        if row is None or row[col] < need:
            raise _no_funds(row, col, need, spec, side == BUY)
        lock(row, col, need)
        oid = self.next_order_id
        self.next_order_id = oid + 1
        return new_order(oid, acct, book.symbol, side, LIMIT, tif, price, qty, qty, 0, 0, 0, need,
                         cid, post_only, stp, origin, ts, ts, S_NEW, False, trigger, stop_price,
                         expire, trigger != 0, display, 0, trail,
                         book.last if trail and not stop_price else 0)

    def _accept_market(self, book: Book, acct: int, side: int, otype: int, tif: int, price: int,
                       qty: int, quote_qty: int, cid: str, post_only: bool, stp: int, ts: int,
                       origin: bytes, trigger: int, stop_price: int, expire: int,
                       trail: int = 0) -> Order:
        spec = book.spec
        tif = tif or IOC
        if otype != MARKET:
            raise Reject(R.INVALID_ORDER_TYPE, f"type must be 1 (limit) or 2 (market), "
                         f"was {otype}")
        if tif != IOC and tif != FOK:
            raise Reject(R.INVALID_TIME_IN_FORCE, "market orders are IOC or FOK")
        if post_only or price:
            raise Reject(R.INVALID_PRICE, "market orders take no price and cannot be post-only")
        if expire:
            raise Reject(R.INVALID_EXPIRE_TIME, "expire_ts is only for GTD orders")
        if trigger:
            self._check_stop(book, side, trigger, stop_price, trail)
        elif stop_price or trail:
            raise _not_a_stop(stop_price)
        budget = 0
        if side == BUY and quote_qty and not qty:
            budget = need = quote_qty
            if not 0 < budget <= spec.max_price * spec.max_qty * spec.tick_lot_quote:
                raise Reject(R.INVALID_QUANTITY, f"quote_qty out of range: {budget}")
            if tif == FOK:
                raise Reject(R.INVALID_TIME_IN_FORCE, "a buy by quote amount cannot be FOK")
            col = book.quote_a
        elif quote_qty:
            raise Reject(R.INVALID_QUANTITY, "give qty, or quote_qty for a market buy, not both")
        else:
            _check_qty(spec, qty)
            if side == SELL:
                need, col = qty * spec.lot_units, book.base_a
            elif trigger:  # the book when it triggers is unknown: lock up to its protection price
                price = _collar(book, stop_price or trailed(book.last, trail, True))
                need, col = price * qty * book.tlq, book.quote_a
            else:
                lots, need, _ = self._walk(book, BUY, acct, stp, qty, 0, MAX_INT)
                if not lots:
                    raise Reject(R.NO_LIQUIDITY, f"no asks in {spec.symbol} for a market buy")
                col = book.quote_a
        row = self.ledger.accounts.get(acct)
        if row is None or row[col] < need:
            raise _no_funds(row, col, need, spec, col == book.quote_a)
        lock(row, col, need)
        oid = self.next_order_id
        self.next_order_id = oid + 1
        leaves = qty or spec.max_qty  # a buy by amount is bounded by its budget, not a size
        return new_order(oid, acct, book.symbol, side, MARKET, tif, price, qty, leaves, 0, 0,
                         budget, need, cid, False, stp, origin, ts, ts, S_NEW, False, trigger,
                         stop_price, 0, trigger != 0, 0, 0, trail,
                         book.last if trail and not stop_price else 0)

    def _execute(self, book: Book, o: Order, reports: list, seq: int, ts: int, req: int) -> None:
        """Run an accepted order: FOK check, match, then rest or expire the remainder."""
        side = o.side
        if o.type == LIMIT or o.price:  # a market order with a price: a stop's protection
            limit = o.price
            crosses: int = (book.ask and book.ask <= limit) if side == BUY else book.bid >= limit
        else:
            limit = MAX_INT if side == BUY else 0
            crosses = book.ask if side == BUY else book.bid
        if o.tif == FOK:
            lots, _, _ = self._walk(book, side, o.account, o.stp, o.leaves, 0, limit)
            if lots < o.leaves:
                self._finish(o, reports, E_EXP, S_EXP, C_FOK, seq, ts, req)
                return
        stopped = 0
        if crosses:
            stopped = self._match(book, o, reports, seq, ts, req)
            self.dirty.add(book)
        if not o.leaves:
            if o.locked:
                self._release(o)  # a buy that filled below its limit keeps no surplus locked
            self._remember(o)
        elif stopped == C_FUNDS:  # a market buy that spent what it could of its budget
            self._finish(o, reports, E_EXP, S_EXP, stopped, seq, ts, req)
        elif stopped:
            self._finish(o, reports, E_CXL, S_CXL, stopped, seq, ts, req)
        elif o.tif == GTC or o.tif == GTD:
            self._rest(book, o)
        else:
            self._finish(o, reports, E_EXP, S_EXP, C_IOC, seq, ts, req)

    def _rest(self, book: Book, o: Order) -> None:
        """Put an order at the back of its price level and in the indexes."""
        book.rest(o)
        self.dirty.add(book)
        self._index(o)

    def _index(self, o: Order) -> None:
        """An open order (resting or waiting) joins the indexes and, if GTD, the expiries."""
        oid, acct = o.id, o.account
        self.orders[oid] = o
        if o.client_id:
            self.cids[(acct, o.client_id)] = o
        mine = self.by_account.get(acct)
        if mine is None:
            mine = self.by_account[acct] = {}
        mine[oid] = o
        if o.expire:
            heapq.heappush(self.expiries, (o.expire, oid))

    def _pend(self, book: Book, o: Order) -> None:
        """A stop order waits in its book's stop lists, and in the indexes like a resting
        order (found by cancel, replace, status and open-order queries)."""
        book.pend(o)
        self._index(o)

    def _match(self, book: Book, t: Order, reports: list, seq: int, ts: int, req: int) -> int:
        """Match taker ``t`` against the opposite side; returns a CancelReason if it must stop."""
        tlq, lu, ba, qa = book.tlq, book.lu, book.base_a, book.quote_a
        accounts = self.ledger.accounts
        fee_row = accounts[self.fee_account]
        outbox, trades, symbol, recent = self.outbox, book.trades, book.symbol, book.recent.append
        t_row = accounts[t.account]
        fills = self.fills
        t_fills = fills.get(t.account)
        if t_fills is None:
            t_fills = fills[t.account] = deque(maxlen=self.fills_kept)
        budget = t.quote_qty
        taker_buys = t.side == BUY
        if taker_buys:
            b_ppm, s_ppm, maker_side = book.taker_ppm, book.maker_ppm, SELL
        else:
            b_ppm, s_ppm, maker_side = book.maker_ppm, book.taker_ppm, BUY
        limit = t.price if t.price else (MAX_INT if taker_buys else 1)
        stopped = 0
        while t.leaves and not stopped:
            level = book.best(maker_side)
            if level is None:
                break
            px = level.price
            if px > limit if taker_buys else px < limit:
                break
            if budget and t.locked < px * tlq:
                stopped = C_FUNDS  # the rest of the budget buys no lot here: it would not match
                break
            book.mark(maker_side, px)
            while t.leaves and level.count:
                m = book.front(level)
                if m.account == t.account:
                    stopped = self._self_trade(book, level, m, t, seq, ts)
                    if stopped:
                        break
                    continue
                take = t.leaves if t.leaves < m.leaves else m.leaves
                if m.display and take > m.shown:
                    take = m.shown  # an iceberg trades what it shows, then shows more
                if budget:
                    affordable = t.locked // (px * tlq)
                    if affordable < take:
                        take = affordable
                        if not take:
                            stopped = C_FUNDS
                            break
                notional = px * take * tlq
                base = take * lu
                fee_b = fee(base, b_ppm)
                fee_q = fee(notional, s_ppm)
                if taker_buys:
                    settle(t_row, accounts[m.account], fee_row, ba, qa, base, notional, fee_b,
                           fee_q)
                    t.locked -= notional
                    m.locked -= base
                else:
                    settle(accounts[m.account], t_row, fee_row, ba, qa, base, notional, fee_b,
                           fee_q)
                    m.locked -= notional
                    t.locked -= base
                tid = book.next_trade_id
                book.next_trade_id = tid + 1
                book.last = px
                trade = Trade(tid, px, take, t.side, ts, seq)
                trades.append(trade)
                recent((trade, m.account, t.account))
                m.cum += take
                m.cum_quote += notional
                m.updated = ts
                t.leaves -= take
                t.cum += take
                t.cum_quote += notional
                if budget and t.locked < px * tlq:
                    t.leaves = 0  # the budget cannot buy another lot at this or a worse price
                if book.fill(level, m, take):
                    m.status = S_FILLED
                    e_m = E_FILL
                    self._close(m)
                else:
                    m.status = S_PART
                    e_m = E_PART
                t.status = S_PART if t.leaves else S_FILLED
                r_m = ExecReport(
                    0, m.account, m.id, m.client_id, symbol, m.side, e_m, m.status, m.price, m.qty,
                    px, take, m.cum, m.leaves, m.cum_quote, fee_q if taker_buys else fee_b, MAKER,
                    tid, 0, seq, ts, 0, m.type, m.trigger, m.stop_price)
                r_t = ExecReport(
                    req, t.account, t.id, t.client_id, symbol, t.side,
                    E_PART if t.leaves else E_FILL, t.status, t.price, t.qty, px, take, t.cum,
                    0 if budget else t.leaves, t.cum_quote, fee_b if taker_buys else fee_q, TAKER,
                    tid, 0, seq, ts, t.quote_qty, t.type, t.trigger, t.stop_price)
                outbox[m.origin].append(r_m)
                reports.append(r_t)
                f = fills.get(m.account)
                if f is None:
                    f = fills[m.account] = deque(maxlen=self.fills_kept)
                f.append(r_m)
                t_fills.append(r_t)
                if m.link:
                    self._cancel_partner(m, seq, ts)
        t.updated = ts
        return stopped
    # fmt: on

    def _self_trade(self, book: Book, level: Level, m: Order, t: Order, seq: int, ts: int) -> int:
        """Apply self-trade prevention when taker ``t`` meets its own resting order ``m``."""
        if t.stp == NEWEST:
            return C_STP
        book.take_front(level, m)
        m.status = S_CXL
        m.updated = ts
        self._close(m)
        self.outbox[m.origin].append(self._report(m, 0, E_CXL, S_CXL, seq, ts, C_STP))
        if m.link:
            self._cancel_partner(m, seq, ts)
        return C_STP if t.stp == BOTH else 0

    def _walk(
        self, book: Book, side: int, acct: int, stp: int, qty: int, budget: int, limit: int
    ) -> tuple[int, int, int]:
        """What a taker of ``side`` would get now: (lots, quote units, worst price).

        Walks the opposite side up to ``qty`` lots (or spending ``budget`` quote units), within
        ``limit``, treating ``acct``'s own orders as self-trade prevention would.
        """
        tlq = book.tlq
        lots = cost = worst = 0
        for level in book.iter_levels(SELL if side == BUY else BUY):
            px = level.price
            if (side == BUY and px > limit) or (side == SELL and px < limit):
                break
            before = (lots, cost, worst)  # where this level starts
            checked = not acct or stp == OLDEST  # (no own order can stop the taker)
            for m in level.orders:
                if not m.resting:
                    continue
                if m.account == acct and acct:
                    if stp == OLDEST:
                        continue
                    return lots, cost, worst
                if m.display and not checked:
                    # An iceberg shows more at the back of its level: behind an own order
                    # there, where self-trade prevention stops the taker, that is not reached.
                    checked = True
                    own = _own_order(level, acct)
                    if own is not None:
                        return self._walk_shown(level, own, qty, budget, tlq, *before)
                take = min(qty - lots, m.leaves) if qty else m.leaves
                if budget:
                    take = min(take, (budget - cost) // (px * tlq))
                    if not take:
                        return lots, cost, worst
                lots += take
                cost += px * take * tlq
                worst = px
                if qty and lots >= qty:
                    return lots, cost, worst
        return lots, cost, worst

    def _walk_shown(
        self,
        level: Level,
        own: Order,
        qty: int,
        budget: int,
        tlq: int,
        lots: int,
        cost: int,
        worst: int,
    ) -> tuple[int, int, int]:
        """``_walk`` within the level where the taker meets its own order ``own`` and stops:
        the orders before it give all they have, icebergs only what they show."""
        px = level.price
        for m in level.orders:
            if m is own:
                break
            if not m.resting:
                continue
            have = m.shown if m.display else m.leaves
            take = min(qty - lots, have) if qty else have
            if budget:
                take = min(take, (budget - cost) // (px * tlq))
                if not take:
                    break
            lots += take
            cost += px * take * tlq
            worst = px
            if qty and lots >= qty:
                break
        return lots, cost, worst

    # --------------------------------------------------------------- order lifecycle
    def _finish(
        self,
        o: Order,
        reports: list,
        exec_type: int,
        status: int,
        reason: int,
        seq: int,
        ts: int,
        req: int,
    ) -> None:
        """Close an order that did not (or no longer does) rest: report and release funds."""
        o.status = status
        o.updated = ts
        reports.append(self._report(o, req, exec_type, status, seq, ts, reason))
        self._release(o)
        self._remember(o)

    def _release(self, o: Order) -> None:
        if o.locked:
            book = self.books[o.market]
            col = book.quote_a if o.side == BUY else book.base_a
            release(self.ledger.accounts[o.account], col, o.locked)
            o.locked = 0

    def _close(self, o: Order) -> None:
        """A resting order is done: unlock what it still holds, drop it from the indexes and
        remember it for status queries (it runs for every filled maker and every cancel)."""
        if o.locked:
            self._release(o)
        oid = o.id
        del self.orders[oid]
        del self.by_account[o.account][oid]
        if o.client_id:
            del self.cids[(o.account, o.client_id)]
        self._remember(o)

    def _unindex(self, o: Order) -> None:
        oid = o.id
        del self.orders[oid]
        del self.by_account[o.account][oid]
        if o.client_id:
            del self.cids[(o.account, o.client_id)]

    def _remember(self, o: Order) -> None:
        """Keep a closed order for status queries: the newest ``closed_kept``, the oldest
        forgotten one at a time (no pause to free a whole generation)."""
        self.closed[o.id] = o
        mine = self.history.get(o.account)
        if mine is None:
            mine = self.history[o.account] = deque(maxlen=self.history_kept)
        mine.append(o.id)
        if o.client_id:
            self.closed_cids[(o.account, o.client_id)] = o
        fifo = self.closed_ids
        fifo.append(o.id)
        if len(fifo) > self.closed_kept:
            gone = self.closed.pop(fifo.popleft(), None)
            if gone is not None and gone.client_id:
                key = (gone.account, gone.client_id)
                if self.closed_cids.get(key) is gone:
                    del self.closed_cids[key]

    # fmt: off
    def _report(self, o: Order, req: int, exec_type: int, status: int, seq: int, ts: int,
                reason: int = 0) -> ExecReport:
        leaves = o.leaves if status <= S_PART and not o.quote_qty else 0
        return ExecReport(req, o.account, o.id, o.client_id, o.market, o.side, exec_type, status,
                          o.price, o.qty, 0, 0, o.cum, leaves, o.cum_quote, 0, 0, 0, reason, seq,
                          ts, o.quote_qty, o.type, o.trigger, o.stop_price)
    # fmt: on

    def _find(self, acct: int, order_id: int, cid: str) -> Order | None:
        """An open order of ``acct`` by id or client id; None for anyone else's."""
        if order_id:
            o = self.orders.get(order_id)
            return o if o is not None and o.account == acct else None
        if cid:
            return self.cids.get((acct, cid))
        return None

    # ---------------------------------------------------------------------- cancels
    # fmt: off
    def _on_cancel(self, c: Cancel, ts: int, origin: bytes) -> int:
        self.seq = seq = self.seq + 1
        req, acct, market, order_id, cid, reason, deadline = astuple(c)[:7]  # CANCEL_FIELDS
        if deadline and ts > deadline:
            return self._late(origin, req, seq, order_id, cid)
        if order_id:
            o = self.orders.get(order_id)
        else:
            o = self.cids.get((acct, cid)) if cid else None
        if o is None or o.account != acct or (market and market != o.market):
            return self._reject(origin, req, R.UNKNOWN_ORDER, _unknown(c), seq, order_id, cid)
        self._cancel(o, ts)
        reports = [ExecReport(
            req, acct, o.id, o.client_id, o.market, o.side, E_CXL, S_CXL, o.price, o.qty, 0, 0,
            o.cum, 0, o.cum_quote, 0, 0, 0, C_DISCONNECT if reason == C_DISCONNECT else C_USER,
            seq, ts, o.quote_qty, o.type, o.trigger, o.stop_price)]
        if o.link:  # the other order of its list goes too, in the same reply
            p = self.orders.get(o.link)
            if p is not None:
                self._cancel(p, ts)
                reports.append(self._report(p, req, E_CXL, S_CXL, seq, ts, C_LINKED))
        self.outbox[origin].append(Executions(req, reports))
        return seq
    # fmt: on

    def _cancel(self, o: Order, ts: int, status: int = S_CXL) -> None:
        """Take a resting (or waiting) order off its book, unlock what it still holds and
        close it."""
        book = self.books[o.market]
        if o.waiting:
            book.unpend(o)
        else:
            book.remove(o)
            self.dirty.add(book)
        o.status = status
        o.updated = ts
        self._close(o)

    def _on_mass_cancel(self, c: MassCancel, ts: int, origin: bytes) -> int:
        self.seq = seq = self.seq + 1
        if c.deadline and ts > c.deadline:
            return self._late(origin, c.req, seq)
        if c.market and c.market not in self.books:
            return self._reject(
                origin, c.req, R.UNKNOWN_MARKET, f"unknown market {c.market!r}", seq
            )
        reason = C_DISCONNECT if c.reason == C_DISCONNECT else C_USER
        mine = self.by_account.get(c.account, {})
        victims = [o for o in mine.values() if not c.market or o.market == c.market]
        for o in victims:
            self._cancel(o, ts)
            self.outbox[o.origin].append(self._report(o, 0, E_CXL, S_CXL, seq, ts, reason))
        self.outbox[origin].append(MassCancelReply(c.req, len(victims), seq))
        return seq

    # ---------------------------------------------------------------------- replaces
    def _on_replace(self, c: Replace, ts: int, origin: bytes) -> int:
        self.seq = seq = self.seq + 1
        if c.deadline and ts > c.deadline:
            return self._late(origin, c.req, seq, c.order_id, c.client_order_id)
        o = self._find(c.account, c.order_id, c.client_order_id)
        try:
            if o is None or (c.market and c.market != o.market):
                raise Reject(R.UNKNOWN_ORDER, _unknown(c))
            if c.stop_price and (o is None or not o.waiting):
                raise Reject(R.INVALID_STOP_PRICE, "only a waiting stop order's stop can change")
            if o.link:
                raise Reject(
                    R.ORDER_LIST_LEG,
                    "an order of a one-cancels-the-other list cannot "
                    "be replaced: cancel the list and place a new one",
                )
            if c.stop_price and o.peak:
                raise Reject(
                    R.INVALID_STOP_PRICE,
                    "a trailing stop following the price has no stop price to change",
                )
            reports = self._replace(o, c, seq, ts, origin)
        except Reject as r:
            self.outbox[origin].append(
                Rejected(
                    c.req,
                    r.code,
                    r.reason,
                    o.id if o else c.order_id,
                    c.client_order_id,
                    seq,
                    o.status if o else 0,
                )
            )  # the order, as it still is
            return seq
        self.outbox[origin].append(Executions(c.req, reports))
        book = self.books[o.market]
        if book.stop_orders:
            self._trigger(book, seq, ts)
        return seq

    def _replace(self, o: Order, c: Replace, seq: int, ts: int, origin: bytes) -> list:
        book = self.books[o.market]
        spec = book.spec
        price, qty = c.price or o.price, c.qty or o.qty
        new_cid = c.new_client_order_id or o.client_id
        if o.type != LIMIT:  # a waiting stop market order (no other market order stays open)
            if c.price:
                raise Reject(R.INVALID_PRICE, "a stop market order takes no price")
            if o.quote_qty and c.qty:
                raise Reject(R.INVALID_QUANTITY, "a market buy by amount has no quantity")
        elif not 0 < price <= spec.max_price:
            raise Reject(
                R.INVALID_PRICE,
                f"price must be {spec.tick.text}.."
                f"{spec.price_text(spec.max_price)}, was {_ticks(spec, price)}",
            )
        if not o.quote_qty:
            _check_qty(spec, qty)
            if qty <= o.cum:
                raise Reject(
                    R.REPLACE_INVALID,
                    f"new qty {spec.qty_text(qty)} must exceed the filled {spec.qty_text(o.cum)}",
                )
        if len(new_cid) > MAX_CLIENT_ID:
            raise Reject(R.INVALID_CLIENT_ORDER_ID, "client order id longer than 64")
        if new_cid != o.client_id and (o.account, new_cid) in self.cids:
            raise Reject(
                R.DUPLICATE_CLIENT_ORDER_ID,
                f"client order id {new_cid!r} is invalid or already open",
            )
        stop = c.stop_price or o.stop_price
        if o.waiting and not o.peak:  # (one following the price keeps its protection price)
            self._check_stop(book, o.side, o.trigger, stop, o.trail)
            if o.type != LIMIT and o.side == BUY and not o.quote_qty:
                price = _collar(book, stop)
        if o.post_only and price != o.price and _crosses(book, o.side, price):
            raise Reject(R.POST_ONLY_WOULD_CROSS, "post-only order would take liquidity")
        leaves = o.leaves if o.quote_qty else qty - o.cum
        if o.quote_qty:  # a waiting stop market buy by amount: its amount stays the lock
            need, col = o.locked, book.quote_a
        elif o.side == BUY:
            need, col = price * leaves * spec.tick_lot_quote, book.quote_a
        else:
            need, col = leaves * spec.lot_units, book.base_a
        row = self.ledger.accounts[o.account]
        if need - o.locked > row[col]:
            raise _no_funds(row, col, need - o.locked, spec, o.side == BUY)
        self._rename(o, new_cid)
        o.updated = ts
        self.dirty.add(book)
        if need >= o.locked:
            lock(row, col, need - o.locked)
        else:
            release(row, col, o.locked - need)
        if o.waiting:  # still waiting, at its new stop (oldest first there, by order id)
            if stop != o.stop_price:
                book.unpend(o)
                o.stop_price = stop
                book.pend(o)
            o.price, o.qty, o.leaves, o.locked = price, qty, leaves, need
            return [self._report(o, c.req, E_REPL, o.status, seq, ts)]
        if price == o.price and qty <= o.qty:  # keeps its place in the queue
            book.reduce(o, o.qty - qty)
            o.qty = qty
            o.locked = need
            return [self._report(o, c.req, E_REPL, o.status, seq, ts)]
        book.remove(o)
        self._unindex(o)
        n = new_order(
            o.id,
            o.account,
            o.market,
            o.side,
            o.type,
            o.tif,
            price,
            qty,
            leaves,
            o.cum,
            o.cum_quote,
            0,
            need,
            new_cid,
            o.post_only,
            o.stp,
            origin,
            o.created,
            ts,
            o.status,
            False,
            o.trigger,
            o.stop_price,
            o.expire,
            False,
            o.display,
            0,
            o.trail,
            o.peak,
        )
        reports = [self._report(n, c.req, E_REPL, n.status, seq, ts)]
        self._execute(book, n, reports, seq, ts, c.req)
        return reports

    def _rename(self, o: Order, new_cid: str) -> None:
        if new_cid != o.client_id:
            if o.client_id:
                del self.cids[(o.account, o.client_id)]
            o.client_id = new_cid
            if new_cid:
                self.cids[(o.account, new_cid)] = o

    # ------------------------------------------------------------------------ ledger
    def _ledger_args(self, c: Deposit | Withdraw) -> int:
        asset = self.ledger.index.get(c.asset)
        if asset is None:
            raise Reject(R.UNKNOWN_ASSET, f"unknown asset {c.asset!r}")
        if not 0 < c.amount <= MAX_INT:
            raise Reject(R.INVALID_AMOUNT, f"amount must be 1..2**63-1 units, was {c.amount}")
        if not 0 <= c.account <= MAX_INT:
            raise Reject(R.INVALID_ACCOUNT, f"invalid account {c.account}")
        return asset

    def _on_deposit(self, c: Deposit, ts: int, origin: bytes) -> int:
        self.seq = seq = self.seq + 1
        if c.deadline and ts > c.deadline:
            return self._late(origin, c.req, seq)
        try:
            asset = self._ledger_args(c)
            if self.ledger.totals[asset] + c.amount > MAX_INT:
                # Every balance, and so every fill, stays a signed 64-bit integer on the wire.
                raise Reject(R.INVALID_AMOUNT, f"deposit would take total {c.asset} past 2**63-1")
        except Reject as r:
            return self._reject(origin, c.req, r.code, r.reason, seq)
        row = self.ledger.deposit(c.account, asset, c.amount)
        self.outbox[origin].append(
            LedgerReply(c.req, c.account, c.asset, row[2 * asset], row[2 * asset + 1], seq)
        )
        return seq

    def _on_withdraw(self, c: Withdraw, ts: int, origin: bytes) -> int:
        self.seq = seq = self.seq + 1
        if c.deadline and ts > c.deadline:
            return self._late(origin, c.req, seq)
        try:
            asset = self._ledger_args(c)
            row = self.ledger.withdraw(c.account, asset, c.amount)
            if row is None:
                raise Reject(R.INSUFFICIENT_FUNDS, f"withdrawal of {c.amount} exceeds available")
        except Reject as r:
            return self._reject(origin, c.req, r.code, r.reason, seq)
        self.outbox[origin].append(
            LedgerReply(c.req, c.account, c.asset, row[2 * asset], row[2 * asset + 1], seq)
        )
        return seq


def _own_order(level: Level, acct: int) -> Order | None:
    """The first resting order of ``acct`` in ``level``, if any."""
    for m in level.orders:
        if m.resting and m.account == acct:
            return m
    return None


def _not_a_stop(stop_price: int) -> Reject:
    if stop_price:
        return Reject(R.INVALID_STOP_PRICE, "stop_price is only for stop orders")
    return Reject(R.INVALID_TRAILING, "trailing_bps is only for stop orders")


def _collar(book: Book, stop: int) -> int:
    """The protection price of a stop market buy by quantity: ``STOP_COLLAR_BPS`` through
    its stop, rounded up, at most the market's maximum price."""
    return min(book.max_price, stop + -(-stop * STOP_COLLAR_BPS // 10_000))


def _check_qty(spec, qty: int) -> None:
    if qty < spec.min_qty:
        raise Reject(
            R.QUANTITY_BELOW_MIN,
            f"qty must be at least {spec.qty_text(spec.min_qty)}, was {_lots(spec, qty)}",
        )
    if qty > spec.max_qty:
        raise Reject(
            R.QUANTITY_ABOVE_MAX,
            f"qty must be at most {spec.qty_text(spec.max_qty)}, was {_lots(spec, qty)}",
        )


def _ticks(spec, ticks: int) -> str:
    return spec.price_text(ticks) if isinstance(ticks, int) else repr(ticks)


def _lots(spec, lots: int) -> str:
    return spec.qty_text(lots) if isinstance(lots, int) else repr(lots)


def _no_funds(row: list[int] | None, col: int, need: int, spec, in_quote: bool) -> Reject:
    have = row[col] if row else 0
    text, asset = (spec.quote_text, spec.quote) if in_quote else (spec.base_text, spec.base)
    return Reject(R.INSUFFICIENT_FUNDS, f"needs {text(need)} {asset}, {text(have)} available")


def _crosses(book: Book, side: int, price: int) -> bool:
    if side == BUY:
        return bool(book.ask) and book.ask <= price
    return book.bid >= price


def _unknown(c: Cancel | Replace | OrderStatusRequest) -> str:
    ref = f"order {c.order_id}" if c.order_id else f"client order id {c.client_order_id!r}"
    return f"{ref} is not an open order of account {c.account}"

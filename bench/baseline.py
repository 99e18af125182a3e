"""A deliberately naive reference matcher: the yardstick for the engine-core benchmark.

It matches the same command stream as ``engine.core.Engine`` with the same rules for the
commands the mixed workload uses (limit GTC/IOC orders, cancels by order id, deposits):
price-time priority, fills at the resting price, self-trade prevention cancel-newest, order ids
numbered from 1 in acceptance order. What it leaves out is the point of the comparison:

- no ledger: no funds are locked, settled or charged fees; deposits only take a sequence number;
- no execution reports, order records or market data: a fill is a tuple appended to a list;
- no validation beyond "known market, positive price and quantity".

Each side of a book is one plain Python list of ``[price key, arrival, order id, account,
leaves]`` kept sorted with ``bisect.insort`` (bids keyed by the negated price, so index 0 is
the best price on both sides); a fill at the front is ``list.pop(0)``, a cancel finds its
entry with ``bisect`` and deletes it. Simple and obviously right, not fast.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from protocol.config import Exchange
from protocol.messages import Cancel, Deposit, NewOrder

BUY, SELL = 1, 2
LIMIT, GTC, IOC = 1, 1, 2


class NaiveBook:
    __slots__ = ("bids", "asks")

    def __init__(self) -> None:
        self.bids: list[list[int]] = []  # [-price, arrival, order id, account, leaves]
        self.asks: list[list[int]] = []  # [price, arrival, order id, account, leaves]


class NaiveEngine:
    """Matching without a ledger, on sorted lists. ``apply`` mirrors ``Engine.apply``."""

    def __init__(self, exchange: Exchange) -> None:
        self.books = {symbol: NaiveBook() for symbol in exchange.markets}
        self.orders: dict[int, tuple[list[list[int]], list[int]]] = {}  # id -> (side list, entry)
        self.next_order_id = 1
        self.arrival = 0
        self.seq = 0
        self.out: list[tuple] = []  # fills (taker id, maker id, price, qty) and acks

    def apply(self, cmd: object, ts: int, origin: bytes) -> int:
        kind = type(cmd)
        if kind is NewOrder:
            return self._new_order(cmd)  # type: ignore[arg-type]
        if kind is Cancel:
            return self._cancel(cmd)  # type: ignore[arg-type]
        if kind is Deposit:
            self.seq += 1
            return self.seq
        raise NotImplementedError(f"the baseline does not handle {kind.__name__}")

    def _new_order(self, c: NewOrder) -> int:
        self.seq += 1
        book = self.books.get(c.market)
        if book is None or c.type != LIMIT or c.price <= 0 or c.qty <= 0:
            self.out.append(("rejected", c.req))
            return self.seq
        oid = self.next_order_id
        self.next_order_id = oid + 1
        leaves = c.qty
        price = c.price
        buy = c.side == BUY
        opposite = book.asks if buy else book.bids
        stopped = False
        while leaves and opposite:
            best = opposite[0]
            best_price = best[0] if buy else -best[0]
            if (best_price > price) if buy else (best_price < price):
                break
            if best[3] == c.account:  # self-trade prevention: cancel the newest (this order)
                stopped = True
                break
            take = leaves if leaves < best[4] else best[4]
            best[4] -= take
            leaves -= take
            self.out.append((oid, best[2], best_price, take))
            if not best[4]:
                opposite.pop(0)
                del self.orders[best[2]]
        if leaves and not stopped and (c.tif or GTC) == GTC:
            self.arrival += 1
            own = book.bids if buy else book.asks
            entry = [-price if buy else price, self.arrival, oid, c.account, leaves]
            insort(own, entry)
            self.orders[oid] = (own, entry)
        self.out.append(("ack", c.req, oid))
        return self.seq

    def _cancel(self, c: Cancel) -> int:
        self.seq += 1
        found = self.orders.get(c.order_id)
        if found is None or found[1][3] != c.account:
            self.out.append(("rejected", c.req))
            return self.seq
        side, entry = found
        del side[bisect_left(side, entry)]
        del self.orders[c.order_id]
        self.out.append(("cancelled", c.req, c.order_id))
        return self.seq

    def resting(self) -> dict[int, int]:
        """Open order id -> leaves, for cross-checking against the engine."""
        return {oid: entry[4] for oid, (_, entry) in self.orders.items()}

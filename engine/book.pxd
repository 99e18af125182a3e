# C types for engine/book.py in the compiled build (Cython reads this beside the .py; the
# interpreted build never sees it). Orders and levels hold no reference cycles (an order holds
# numbers and strings, a level a deque of orders), so the cyclic GC never tracks them. Every integer here is bounded by the config's limits or by
# conservation (a level's total is at most the asset's total, <= 2**63-1): see money.py.
import cython


@cython.no_gc
cdef class Order:
    cdef public long long id, account, side, type, tif, price, qty, leaves, cum, cum_quote
    cdef public long long quote_qty, locked, stp, created, updated, status
    cdef public str market, client_id
    cdef public bytes origin
    cdef public bint post_only, resting
    cdef public long long trigger, stop_price, expire
    cdef public bint waiting
    cdef public long long display, shown, trail, peak, link


cpdef Order new_order(long long id, long long account, str market, long long side,
                      long long type, long long tif, long long price, long long qty,
                      long long leaves, long long cum, long long cum_quote, long long quote_qty,
                      long long locked, str client_id, bint post_only, long long stp,
                      bytes origin, long long created, long long updated, long long status=*,
                      bint resting=*, long long trigger=*, long long stop_price=*,
                      long long expire=*, bint waiting=*, long long display=*,
                      long long shown=*, long long trail=*, long long peak=*, long long link=*)
cpdef bint rises(Order o)
cpdef long long stop_of(Order o)
cpdef long long trailed(long long peak, long long trail, bint buy)


@cython.final
@cython.no_gc
cdef class Level:
    cdef public long long price, total, count
    cdef public object orders


@cython.final
cdef class Book:
    cdef public object spec, bids, asks, recent
    cdef public str symbol
    cdef public dict bid_levels, ask_levels
    cdef public set dirty_bids, dirty_asks
    cdef public list trades
    cdef public long long next_trade_id, trade_seq, depth_seq, bbo_seq, base_a, quote_a, bid, ask
    cdef public tuple last_bbo
    cdef public long long max_price, min_qty, max_qty, tlq, lu, maker_ppm, taker_ppm
    cdef public long long last
    cdef public object stops_up, stops_down, trail_up, trail_down
    cdef public dict stop_orders

    @cython.locals(level=Level, price="long long")
    cpdef rest(self, Order o)
    cpdef Level best(self, long long side)
    cpdef mark(self, long long side, long long price)
    @cython.locals(m=Order)
    cpdef Order front(self, Level level)
    cpdef bint fill(self, Level level, Order m, long long lots)
    cpdef take_front(self, Level level, Order m)
    cdef _pop_front(self, Level level, Order m)
    @cython.locals(level=Level, price="long long")
    cpdef remove(self, Order o)
    cpdef drop_level(self, long long side, long long price)
    cpdef reduce(self, Order o, long long lots)
    @cython.locals(level=Level)
    cpdef long long level_total(self, long long side, long long price)
    @cython.locals(level=Level)
    cpdef show(self, Order o, long long shown)
    cpdef pend(self, Order o)
    cpdef unpend(self, Order o)
    cpdef Order due_stop(self)
    cpdef follow(self, Order o, long long price)
    cpdef follow_last(self)

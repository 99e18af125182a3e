# C types for engine/core.py in the compiled build. Only values the engine has validated or
# derived from validated state are C integers; a command's own fields stay Python objects
# until checked (a client may send any 64-bit unsigned number). Products: px x lots x
# tick-lot value <= max price x max qty x tick-lot value <= 2**63-1 (the config refuses a
# market past that), lots x lot units <= what the order locked <= 2**63-1.
import cython

from engine.book cimport Book, Level, Order, new_order, trailed
from engine.money cimport fee, lock, release, settle
from engine.views cimport EngineViews


# The integer codes (engine/codes.py) as C constants of this module: set once from codes.py when
# the module loads, compared in C wherever the core uses them.
cdef long long BOTH, BUY, C_DISCONNECT, C_FOK, C_FUNDS, C_IOC, C_LINKED, C_STP, C_TIME, C_USER
cdef long long E_CXL, E_EXP, E_FILL, E_NEW, E_PART, E_REPL, E_TRIG, FOK, GTC, GTD, IOC, LIMIT
cdef long long MAKER, MARKET, NEWEST, OLDEST, S_CXL, S_EXP, S_FILLED, S_NEW, S_PART, SELL
cdef long long STOP_LOSS, TAKE_PROFIT, TAKER


cdef class Engine(EngineViews):
    @cython.locals(book=Book, o=Order, seq="long long", executed=bint)
    cpdef _on_new_order(self, c, long long ts, bytes origin)
    cpdef Order _accept(self, Book book, acct, side, otype, tif, price, qty, quote_qty, cid,
                        post_only, stp, long long ts, bytes origin, trigger=*, stop_price=*,
                        expire=*, display=*, trail=*)
    cpdef Order _accept_market(self, Book book, acct, side, otype, tif, price, qty, quote_qty,
                               cid, post_only, stp, long long ts, bytes origin, trigger,
                               stop_price, expire, trail=*)
    cpdef _execute(self, Book book, Order o, list reports, long long seq, long long ts, req)
    cpdef _rest(self, Book book, Order o)
    cpdef _pend(self, Book book, Order o)
    @cython.locals(mine=dict)
    cdef _index(self, Order o)  # cdef: no check for a Python override on every resting order
    @cython.locals(o=Order)
    cpdef _trigger(self, Book book, long long seq, long long ts)
    @cython.locals(
        tlq="long long", lu="long long", ba=Py_ssize_t, qa=Py_ssize_t, accounts=dict,
        fee_row=list, t_row=list, trades=list, fills=dict, budget="long long",
        taker_buys=bint, b_ppm="long long", s_ppm="long long", maker_side="long long",
        limit="long long", stopped="long long", level=Level, px="long long", m=Order,
        take="long long", affordable="long long", notional="long long", base="long long",
        fee_b="long long", fee_q="long long", tid="long long", e_m="long long",
    )
    cpdef long long _match(self, Book book, Order t, list reports, long long seq, long long ts,
                           req)
    cpdef long long _self_trade(self, Book book, Level level, Order m, Order t, long long seq,
                                long long ts)
    cpdef _finish(self, Order o, list reports, long long exec_type, long long status,
                  long long reason, long long seq, long long ts, req)
    @cython.locals(book=Book)
    cpdef _release(self, Order o)
    cpdef _close(self, Order o)
    cpdef _unindex(self, Order o)
    cpdef _remember(self, Order o)
    @cython.locals(leaves="long long")
    cpdef _report(self, Order o, req, long long exec_type, long long status, long long seq,
                  long long ts, long long reason=*)
    @cython.locals(o=Order)
    cpdef _on_cancel(self, c, long long ts, bytes origin)
    @cython.locals(book=Book)
    cpdef _cancel(self, Order o, long long ts, long long status=*)


cpdef bint _crosses(Book book, long long side, long long price)
cpdef long long _collar(Book book, long long stop)

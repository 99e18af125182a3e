# C types for engine/views.py in the compiled build: the engine's state lives here, in the
# base class both halves of the engine (views.py reads, core.py writes) share.
from engine.ledger cimport Ledger


cdef class EngineViews:
    cdef public object exchange, outbox, closed, closed_ids
    cdef public long long epoch, fee_account, seq, next_order_id
    cdef public long long closed_kept, history_kept, fills_kept
    cdef public Ledger ledger
    cdef public dict books, orders, cids, by_account, closed_cids, history, watchers, fills
    cdef public dict handlers
    cdef public set dirty
    cdef public list expiries

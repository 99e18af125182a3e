import cython

# C types for engine/ledger.py in the compiled build. Balances stay Python ints in lists.
@cython.final
cdef class Ledger:
    cdef public list assets, totals
    cdef public dict index, accounts
    cdef public long long fee_account

    cpdef list row(self, long long account)

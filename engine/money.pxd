# C types for engine/money.py in the compiled build. ``fee`` takes amounts <= 2**63-1 and
# rates < 10**6 and forms no product past 2**63 (see its docstring); the rows hold Python ints.
cpdef long long fee(long long amount, long long ppm)
cpdef lock(list row, Py_ssize_t col, object amount)
cpdef release(list row, Py_ssize_t col, object amount)
cpdef settle(list buyer, list seller, list fees, Py_ssize_t base_col, Py_ssize_t quote_col,
             long long base, long long notional, long long fee_base, long long fee_quote)

"""``python -m bench.repl_engine ...``: ``python -m engine ...`` with one fix the replication
benchmark needs, applied from outside (engine/ is not this benchmark's to change).

The bug: a replicated primary sends a batch's replies from the log's acknowledgement
(``EngineServer._flush_held``, on the NATS client's task), outside ``_on_readable``. A ZeroMQ
socket's FD is edge-triggered and a send processes the socket's pending commands, which can
swallow the "readable" edge of frames that arrived meanwhile; nothing checks ``zmq.EVENTS``
afterwards (only when the backlog is over ``max_pending``), so those frames wait until another
event on the socket (a client disconnecting, 30 s later in the pipelined run). Any client that
pipelines (more than one command in flight) stalls. The fix, for engine/server.py: after
``_flush_held`` has sent replies, ``call_soon(self._on_readable)`` unconditionally.

``bench engine --only replication --repl-unpatched`` runs the stock ``python -m engine``
instead (the pipelined replicated runs then stall and fail).
"""

from __future__ import annotations

import asyncio
import sys

from engine import server


def patch() -> None:
    flush = server.EngineServer._flush_held
    if getattr(flush, "bench_patched", False):
        return

    def _flush_held(self: server.EngineServer) -> None:
        flush(self)
        if self.router is not None and not self._stopping:
            asyncio.get_running_loop().call_soon(self._on_readable)  # the edge a send may eat

    _flush_held.bench_patched = True  # type: ignore[attr-defined]
    server.EngineServer._flush_held = _flush_held  # type: ignore[method-assign]


if __name__ == "__main__":
    patch()
    server.log.info("bench.repl_engine: _flush_held re-checks the command socket after sending")
    sys.exit(server.main())

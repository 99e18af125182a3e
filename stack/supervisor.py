"""Child processes of the stack: start, stop, and restart with backoff when one dies.

The backoff is a small pure policy (``Backoff``) fed with explicit timestamps, so tests drive
it without waiting: the pause doubles with every crash in a row (``FIRST_PAUSE`` up to
``MAX_PAUSE``), and a part that ran for ``HEALTHY_AFTER`` seconds before it died counts as
having been healthy, so its next restart is quick again: a crash weeks after the last one does
not wait the full ``MAX_PAUSE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("stack")

FIRST_PAUSE = 0.5  # seconds before the first restart after a healthy run
MAX_PAUSE = 30.0
HEALTHY_AFTER = 60.0  # a run at least this long resets the backoff


@dataclass
class Backoff:
    first: float = FIRST_PAUSE
    cap: float = MAX_PAUSE
    healthy_after: float = HEALTHY_AFTER
    crashes: int = 0  # in a row, each after a run shorter than ``healthy_after``
    started_at: float = 0.0

    def started(self, now: float) -> None:
        self.started_at = now

    def exited(self, now: float) -> float:
        """The pause before the next start, for a run that ended at ``now``."""
        if now - self.started_at >= self.healthy_after:
            self.crashes = 0
        self.crashes += 1
        return min(self.cap, self.first * 2 ** min(self.crashes - 1, 16))


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    backoff: Backoff = field(default_factory=Backoff)
    tasks: list[asyncio.Task] = field(default_factory=list)


async def _pump(name: str, stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        sys.stderr.write(f"[{name}] {line.decode(errors='replace')}")


async def start(child: Child, clock: Callable[[], float] = time.monotonic) -> None:
    child.proc = await asyncio.create_subprocess_exec(
        *child.argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches only us; we stop the parts in order
    )
    child.backoff.started(clock())
    assert child.proc.stdout is not None
    child.tasks = [asyncio.ensure_future(_pump(child.name, child.proc.stdout))]


async def stop(child: Child, grace: float = 15.0) -> None:
    proc = child.proc
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        log.warning("%s did not stop in %.0fs: killing it", child.name, grace)
        proc.kill()
        await proc.wait()
    for t in child.tasks:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(t, 2)


async def supervise(
    child: Child,
    stopping: asyncio.Event,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] | None = None,
) -> None:
    """Restart ``child`` whenever it exits on its own, after ``child.backoff``'s pause.

    ``sleep(pause)`` waits out a pause (default: until the pause passes or ``stopping`` is
    set); tests pass their own clock and sleep to drive it without waiting.
    """

    async def pause_for(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)

    wait = sleep or pause_for
    while not stopping.is_set():
        assert child.proc is not None
        code = await child.proc.wait()
        if stopping.is_set():
            return
        child.restarts += 1
        pause = child.backoff.exited(clock())
        log.error(
            "%s exited with %s; restart #%d in %.1fs", child.name, code, child.restarts, pause
        )
        await wait(pause)
        if not stopping.is_set():
            await start(child, clock)

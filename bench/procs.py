"""Child processes, CPU accounting and latency percentiles shared by the benchmarks.

- ``Child``: a ``python -m`` child of the benchmark with its output in a log file, pinned to
  its cores, dying with the benchmark (PR_SET_PDEATHSIG), stopped with SIGTERM then SIGKILL;
- ``cpu_seconds`` / ``machine_busy``: /proc accounting, to report what each process used and
  what other processes took meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child_setup(cpus: Iterable[int], many_files: bool = False) -> Callable[[], None]:
    """What a child runs between fork and exec: die with us, raise its open-file limit to the
    hard limit if ``many_files`` (1,000+ sockets), then pin to ``cpus`` (if any)."""
    wanted = {c for c in cpus if c >= 0}

    def setup() -> None:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if many_files:
            _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if wanted:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, wanted)

    return setup


def child_env() -> dict[str, str]:
    """Our environment for a child: unbuffered, this checkout first on the path."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("EXCHANGE_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class Child:
    """A ``python -m`` child pinned to one core, its output in a log file."""

    def __init__(self, argv: list[str], log: Path, cpu: int) -> None:
        self.log = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(  # noqa: PLW1509 - no threads in this process yet
                [sys.executable, "-m", *argv],
                cwd=REPO,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=child_setup([cpu]),
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def wait_log(self, *needles: str, timeout: float = 60.0) -> None:
        """Return once the log holds every needle; fail if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if all(n in text for n in needles):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.log.stem} exited:\n{self.tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.log.stem} not ready in {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (all threads) or one thread; 0.0 once gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (steal counts as busy)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback TCP ports (free when asked; a race is still possible)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def percentiles(samples: Sequence[int]) -> dict[str, float]:
    """Nearest-rank p50/p99/p99.9/max (and mean) of nanosecond samples, in microseconds."""
    if not samples:
        return {"n": 0, "p50_us": 0.0, "p99_us": 0.0, "p999_us": 0.0, "max_us": 0.0}
    s = sorted(samples)
    n = len(s)

    def at(q: float) -> float:
        return s[min(n - 1, int(q * n))] / 1000.0

    return {
        "n": n,
        "p50_us": at(0.50),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": s[-1] / 1000.0,
        "mean_us": sum(s) / n / 1000.0,
    }

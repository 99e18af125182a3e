"""Child processes, CPU accounting and latency percentiles shared by the benchmarks.

One launcher for every child a benchmark (or ``tests/procs.py``) starts:

- ``popen_options`` / ``launch``: ``python -m MODULE ...`` from this checkout, unbuffered, its
  output in a log file; optionally pinned to cores, with the open-file limit raised, dying with
  its parent (PR_SET_PDEATHSIG) and in its own session (Ctrl-C reaches only the benchmark, which
  stops its children in order);
- ``Child``: one such child with its log: ``wait_log`` for a readiness line, ``stop`` with a
  signal, then SIGKILL after a timeout; ``Children``: a benchmark's children, stopped together;
- ``cpu_seconds`` / ``machine_cpu`` / ``LoadMeter``: the one reader of /proc CPU accounting, to
  report what each process used and what other processes took meanwhile.
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
from typing import Any

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ launching
def child_setup(
    cpus: Iterable[int] = (), many_files: bool = False, die_with_parent: bool = True
) -> Callable[[], None]:
    """What a child runs between fork and exec: die with us (if ``die_with_parent``), raise its
    open-file limit to the hard limit if ``many_files`` (1,000+ sockets), then pin to ``cpus``
    (those >= 0, if any)."""
    wanted = {c for c in cpus if c >= 0}

    def setup() -> None:
        if die_with_parent:
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


def child_env(inherit_config: bool = False) -> dict[str, str]:
    """Our environment for a child: unbuffered, this checkout first on the path, and without
    ``EXCHANGE_CONFIG`` unless ``inherit_config`` (a child that must load the config its parent
    loaded without ``--config``)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not inherit_config:
        env.pop("EXCHANGE_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def popen_options(
    cpus: Iterable[int] = (),
    *,
    many_files: bool = False,
    die_with_parent: bool = True,
    own_session: bool = True,
    inherit_config: bool = False,
) -> dict[str, Any]:
    """``subprocess.Popen`` / ``asyncio.create_subprocess_exec`` keywords for a child of this
    checkout (cwd, env, session, setup); the caller adds the command and its stdio.

    The setup runs between fork and exec (``preexec_fn``): only for callers with no threads
    yet, as the benchmarks are when they start children. Without pinning, file limit or
    death signal there is none (``tests/procs.py``: pytest runs threads)."""
    cpus = list(cpus)
    setup = die_with_parent or many_files or any(c >= 0 for c in cpus)
    return {
        "cwd": REPO,
        "env": child_env(inherit_config),
        "start_new_session": own_session,
        "preexec_fn": child_setup(cpus, many_files, die_with_parent) if setup else None,
    }


def launch(
    argv: Sequence[str],
    log: Path,
    *,
    stdout: int | None = None,
    prefix: Sequence[str] = (),
    **options: Any,
) -> subprocess.Popen:
    """Start ``python -m *argv`` with stdin from /dev/null and its output (stderr, and stdout
    unless ``stdout`` is given, e.g. ``subprocess.PIPE``) in a new file ``log``. ``prefix``: a
    command that runs it (``ip netns exec NS``). ``options``: those of ``popen_options``."""
    with open(log, "wb") as f:
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", *argv],
            stdin=subprocess.DEVNULL,
            stdout=f if stdout is None else stdout,
            stderr=f,
            **popen_options(**options),
        )


def tail(path: Path, n: int = 20) -> str:
    """The last ``n`` lines of a log ("" if it cannot be read)."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


class Child:
    """A ``python -m`` child of a benchmark with its output in a log file (see ``launch``),
    stopped by ``stop_signal``, then SIGKILL after ``stop_timeout`` seconds."""

    def __init__(
        self,
        argv: Sequence[str],
        log: Path,
        cpus: Iterable[int] = (),
        *,
        stdout: int | None = None,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 15.0,
        **options: Any,
    ) -> None:
        self.log = log
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.proc = launch(argv, log, stdout=stdout, cpus=cpus, **options)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def tail(self, n: int = 20) -> str:
        return tail(self.log, n)

    def wait_log(self, *needles: str, timeout: float = 60.0) -> None:
        """Return once the log holds every needle; fail if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if all(n in text for n in needles):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.log.stem} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            time.sleep(0.05)
        raise RuntimeError(f"{self.log.stem} not ready in {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float | None = None) -> int | None:
        """Send the stop signal, wait (then SIGKILL); the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Children:
    """A benchmark's children, each started with ``defaults`` (``Child``'s keywords) unless
    ``spawn`` says otherwise, and all stopped, newest first, by ``close``."""

    def __init__(self, **defaults: Any) -> None:
        self.defaults = defaults
        self.kids: list[Child] = []

    def spawn(self, argv: Sequence[str], log: Path, **options: Any) -> Child:
        child = Child(argv, log, **{**self.defaults, **options})
        self.kids.append(child)
        return child

    def close(self, timeout: float | None = None) -> None:
        for kid in reversed(self.kids):
            kid.stop(timeout)
        self.kids.clear()


def pin_self_off(cpus: Iterable[int]) -> list[int]:
    """Move this process off ``cpus`` (its children's) if any core is left; the cores it runs
    on now."""
    usable = os.sched_getaffinity(0)
    rest = usable - set(cpus)
    if rest:
        os.sched_setaffinity(0, rest)
    return sorted(rest or usable)


def interrupt_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so children are stopped on the way out."""

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


# -------------------------------------------------------------------------- CPU accounting
def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (all threads) or one thread; 0.0 once gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat; steal counts as
    busy, total adds idle and iowait); (0.0, 0.0) if it cannot be read."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0, 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = v
    busy = user + nice + system + irq + softirq + steal
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, (busy + idle + iowait) / tick


class LoadMeter:
    """How much CPU *other* processes (and the hypervisor's steal) took during a phase.

    Busy time of the whole machine minus this benchmark's own: this process, its waited-for
    children (``os.times``) and the live children named in ``pids``.
    """

    def __init__(self) -> None:
        self.pids: list[int] = []
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float, dict[int, float]]:
        busy, total = machine_cpu()
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return busy, total, own, {pid: cpu_seconds(pid) for pid in self.pids}

    def watch(self, pid: int) -> None:
        self.pids.append(pid)
        self._start[3][pid] = cpu_seconds(pid)

    def foreign_cores(self) -> float:
        """Average number of cores busy with work that is not ours, since the start."""
        b0, t0, own0, live0 = self._start
        b1, t1, own1, live1 = self._sample()
        ncpu = os.cpu_count() or 1
        if t1 <= t0:
            return 0.0
        own = (own1 - own0) + sum(live1[p] - live0.get(p, 0.0) for p in live1)
        wall = (t1 - t0) / ncpu
        return max(0.0, ((b1 - b0) - own) / wall)


# ----------------------------------------------------------------------------- config
def shipped_config(path: Path, changes: dict[str, dict[str, Any]]) -> Path:
    """Write protocol/default.toml to ``path`` with ``changes`` ({section: {key: value}}, each
    key must exist there; values written as Python literals) and no engine snapshot inside a
    timed run."""
    left = {
        (f"[{sec}]", key): value for sec, keys in changes.items() for key, value in keys.items()
    }
    left.setdefault(("[engine]", "snapshot_every"), 1_000_000_000)
    out, section = [], ""
    for line in (REPO / "protocol" / "default.toml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
        if (section, key) in left:
            line = f"{key} = {left.pop((section, key))!r}"
        out.append(line)
    if left:
        raise KeyError(f"not keys of protocol/default.toml: {sorted(left)}")
    path.write_text("\n".join(out) + "\n")
    return path


# ---------------------------------------------------------------------------------- misc
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
